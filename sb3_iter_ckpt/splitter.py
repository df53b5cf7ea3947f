"""Walk-forward train/validation(/test) windows over a time-ordered data set.

Pure code; pandas is never imported (pandas objects are recognised by duck typing), so the splitter works
with a plain length as well.

Every window is expressed in integer *positions* with exclusive stops, like Python slices::

    train = data[w.train_start:w.train_stop]
    val = data[w.val_start:w.val_stop]

Layout of iteration ``i`` (``g`` = purge gap, ``s`` = step, ``T`` = train size, ``V`` = validation size)::

    rolling:   train = [i*s, i*s + T)        val = [i*s + T + g, i*s + T + g + V)
    anchored:  train = [0,   i*s + T)        val = same as rolling

so the validation blocks of both modes are identical and the anchored (expanding) train set simply keeps all
the history. The gap leaves ``g`` observations unused between train and validation, so that labels or
features that look a few bars ahead cannot leak from the validation period into training.

With a test (trade) part of ``M = test_size`` rows after a gap of ``h = test_gap`` rows::

    test = [val_stop + h, val_stop + h + M)

and ``step`` defaults to ``M``, so the test parts of consecutive windows tile one continuous out-of-sample
period, with no overlap and no hole. ``test_size=0`` (the default) means no test part, exactly as before.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["SplitError", "Window", "WalkForwardSplitter"]

Mode = Literal["rolling", "anchored"]
_MODES = ("rolling", "anchored")


class SplitError(CheckpointError, ValueError):
    """The data is too short for one window (a ``ValueError`` too, as the splitter raised before)."""


@dataclass(frozen=True)
class Window:
    """One walk-forward iteration: positions (stop exclusive) and, for a DatetimeIndex, ISO timestamps.

    :param iteration: 0-based iteration number.
    :param train_start: first training position.
    :param train_stop: one past the last training position.
    :param val_start: first validation position (``train_stop + gap``).
    :param val_stop: one past the last validation position.
    :param train_start_time: ISO timestamp of ``train_start`` (DatetimeIndex only, else None).
    :param train_end_time: ISO timestamp of the last training row, ``train_stop - 1`` (inclusive).
    :param val_start_time: ISO timestamp of ``val_start``.
    :param val_end_time: ISO timestamp of the last validation row, ``val_stop - 1`` (inclusive).
    :param test_start: first test (trade) position, ``val_stop + test_gap``; None without a test part.
    :param test_stop: one past the last test position; None without a test part.
    :param test_start_time: ISO timestamp of ``test_start`` (DatetimeIndex and test part only, else None).
    :param test_end_time: ISO timestamp of the last test row, ``test_stop - 1`` (inclusive).
    """

    iteration: int
    train_start: int
    train_stop: int
    val_start: int
    val_stop: int
    train_start_time: str | None = None
    train_end_time: str | None = None
    val_start_time: str | None = None
    val_end_time: str | None = None
    test_start: int | None = None
    test_stop: int | None = None
    test_start_time: str | None = None
    test_end_time: str | None = None

    @property
    def train_slice(self) -> slice:
        """``slice(train_start, train_stop)``."""
        return slice(self.train_start, self.train_stop)

    @property
    def val_slice(self) -> slice:
        """``slice(val_start, val_stop)``."""
        return slice(self.val_start, self.val_stop)

    @property
    def test_slice(self) -> slice | None:
        """``slice(test_start, test_stop)``, or None without a test part."""
        if self.test_start is None or self.test_stop is None:
            return None
        return slice(self.test_start, self.test_stop)

    @property
    def train_size(self) -> int:
        return self.train_stop - self.train_start

    @property
    def val_size(self) -> int:
        return self.val_stop - self.val_start

    @property
    def test_size(self) -> int:
        """Rows in the test part (0 without one)."""
        return 0 if self.test_start is None or self.test_stop is None else self.test_stop - self.test_start

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dictionary of the fields; the ``test_*`` keys only when there is a test part.

        Without a test part the dictionary is the one of windows made before test parts existed, so records
        that store it keep their bytes.
        """
        fields = asdict(self)
        if self.test_start is None and self.test_stop is None:
            for key in ("test_start", "test_stop", "test_start_time", "test_end_time"):
                del fields[key]
        return fields


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an Integral too, but True as a size is almost certainly a bug; numpy integers are fine.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _pandas() -> Any:
    # If pandas was never imported, the object cannot be a pandas object: no need to import it ourselves.
    return sys.modules.get("pandas")


def _length_and_index(data_or_length: Any) -> tuple[int, Any]:
    """Return the number of rows and the pandas index (or None) of ``data_or_length``."""
    if isinstance(data_or_length, bool):
        raise ValueError("data_or_length must be an int length or a sized data object, got a bool")
    if isinstance(data_or_length, numbers.Integral):
        length = int(data_or_length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        return length, None
    index = None
    pd = _pandas()
    if pd is not None:
        if isinstance(data_or_length, pd.Index):
            index = data_or_length
        elif isinstance(data_or_length, (pd.Series, pd.DataFrame)):
            index = data_or_length.index
    try:
        length = len(data_or_length)
    except TypeError as exc:
        raise ValueError(
            "data_or_length must be an int or a sized object (sequence, array, pandas object), "
            f"got {type(data_or_length).__name__}"
        ) from exc
    return length, index


def _is_datetime_index(index: Any) -> bool:
    pd = _pandas()
    return index is not None and pd is not None and isinstance(index, pd.DatetimeIndex)


def _iso(index: Any, pos: int) -> str:
    return index[pos].isoformat()


class WalkForwardSplitter:
    """Generate walk-forward (rolling or anchored) train/validation windows, optionally with a test part.

    :param train_size: number of training rows of the first window (of every window in rolling mode).
    :param val_size: number of validation rows per window.
    :param step: how far each window moves forward; defaults to ``test_size`` with a test part (the test
        parts then tile one continuous out-of-sample period), else to ``val_size`` (the validation blocks
        tile the data).
    :param gap: purge gap, rows skipped between the end of training and the start of validation.
    :param mode: ``"rolling"`` (fixed-length train window that slides) or ``"anchored"`` (train always starts
        at 0 and expands).
    :param max_windows: stop after this many windows (None: as many as fit in the data).
    :param test_size: rows of the test (trade) part after each validation part; 0 (default): no test part.
    :param test_gap: rows skipped between the validation part and the test part (needs ``test_size > 0``).
    """

    def __init__(
        self,
        train_size: int,
        val_size: int,
        step: int | None = None,
        gap: int = 0,
        mode: Mode = "rolling",
        max_windows: int | None = None,
        test_size: int = 0,
        test_gap: int = 0,
    ) -> None:
        self.train_size = _check_int("train_size", train_size, 1)
        self.val_size = _check_int("val_size", val_size, 1)
        self.test_size = _check_int("test_size", test_size, 0)
        self.test_gap = _check_int("test_gap", test_gap, 0)
        if self.test_gap and not self.test_size:
            raise ValueError(f"test_gap={self.test_gap} needs a test part: set test_size > 0 or test_gap=0")
        default_step = self.test_size or self.val_size
        self.step = default_step if step is None else _check_int("step", step, 1)
        self.gap = _check_int("gap", gap, 0)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode: Mode = mode
        self.max_windows = None if max_windows is None else _check_int("max_windows", max_windows, 1)

    @property
    def min_length(self) -> int:
        """Smallest data length that holds one window (its test part included)."""
        test = self.test_gap + self.test_size if self.test_size else 0
        return self.train_size + self.gap + self.val_size + test

    def n_windows(self, length: Any) -> int:
        """Number of windows :meth:`split` yields for data of this length (or this data object).

        :param length: an int length or anything :meth:`split` accepts.
        :return: the count (0 when the data is too short; :meth:`split` raises in that case).
        """
        n, _ = _length_and_index(length)
        if n < self.min_length:
            return 0
        count = (n - self.min_length) // self.step + 1
        if self.max_windows is not None:
            count = min(count, self.max_windows)
        return count

    def split(self, data_or_length: Any) -> Iterator[Window]:
        """Yield the windows in order, iterations numbered 0, 1, 2, ...

        :param data_or_length: an int length, a sequence, a numpy array, a pandas Series/DataFrame or a
            pandas Index. Timestamps are filled in when the (row) index is a DatetimeIndex.
        :raises ValueError: when the data is too short for a single window (checked eagerly, before the
            first window is requested).
        """
        length, index = _length_and_index(data_or_length)
        count = self.n_windows(length)
        if count == 0:
            if self.test_size:
                raise SplitError(
                    f"data has {length} rows but one window needs train_size + gap + val_size + test_gap + "
                    f"test_size = {self.train_size} + {self.gap} + {self.val_size} + {self.test_gap} + "
                    f"{self.test_size} = {self.min_length}; use a shorter test part (test_size) or more data"
                )
            raise SplitError(
                f"data has {length} rows but one window needs train_size + gap + val_size = "
                f"{self.train_size} + {self.gap} + {self.val_size} = {self.min_length}"
            )
        # Validation of arguments happens above, generation lazily below.
        return self._generate(count, index)

    def _generate(self, count: int, index: Any) -> Iterator[Window]:
        with_times = _is_datetime_index(index)
        for i in range(count):
            offset = i * self.step
            train_start = 0 if self.mode == "anchored" else offset
            train_stop = offset + self.train_size
            val_start = train_stop + self.gap
            val_stop = val_start + self.val_size
            extra: dict[str, Any] = {}
            if with_times:
                extra = {
                    "train_start_time": _iso(index, train_start),
                    "train_end_time": _iso(index, train_stop - 1),
                    "val_start_time": _iso(index, val_start),
                    "val_end_time": _iso(index, val_stop - 1),
                }
            if self.test_size:
                test_start = val_stop + self.test_gap
                test_stop = test_start + self.test_size
                extra.update(test_start=test_start, test_stop=test_stop)
                if with_times:
                    extra.update(test_start_time=_iso(index, test_start), test_end_time=_iso(index, test_stop - 1))
            yield Window(i, train_start, train_stop, val_start, val_stop, **extra)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-friendly dict (for a run's configuration fingerprint).

        The ``test_size``/``test_gap`` keys appear only with a test part, so a splitter without one describes
        itself (and fingerprints a run) exactly as before test parts existed: old runs resume.
        """
        config: dict[str, Any] = {
            "train_size": self.train_size,
            "val_size": self.val_size,
            "step": self.step,
            "gap": self.gap,
            "mode": self.mode,
            "max_windows": self.max_windows,
        }
        if self.test_size:
            config.update(test_size=self.test_size, test_gap=self.test_gap)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WalkForwardSplitter):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))
