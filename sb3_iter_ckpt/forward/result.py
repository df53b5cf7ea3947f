"""The forward result of one iteration (:class:`ForwardResult`) and its JSON file format: written as strict
JSON, read back with every field checked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_iter_ckpt.common import record
from sb3_iter_ckpt.errors import RecordError

#: ``format`` of a forward result's JSON; readers refuse any other.
FORMAT = "sb3-iter-ckpt/forward"
#: Layout version of that JSON; readers refuse newer ones. Version 2 adds ``asset_returns`` (the asset's
#: return over each period: buy-and-hold, so that the stitched curve is derived from signed files alone);
#: version 1 files (an earlier version's) are read without it. Version 3 (written only when it applies) adds
#: ``asset_returns_reason``: the result of an env that gave no prices, whose ``asset_returns`` is null.
#: Version 4 (written only when it applies) adds ``assets`` and ``weights``: a portfolio env's weight of each
#: asset over each period; its ``asset_returns_reason`` is null when ``asset_returns`` are known.
FORMAT_VERSION = 4
_FIELDS_V1 = (
    "format",
    "version",
    "iteration",
    "candidate",
    "test_start",
    "test_stop",
    "placeholder",
    "rows",
    "dates",
    "returns",
    "positions",
    "equity",
    "metrics",
    "periods_per_year",
)
_FIELDS_V2 = (*_FIELDS_V1, "asset_returns")
_FIELDS_V3 = (*_FIELDS_V2, "asset_returns_reason")
_FIELDS = (*_FIELDS_V3, "assets", "weights")


@dataclass(frozen=True)
class ForwardResult:
    """One iteration's model trading its test part: per-period returns, positions, equity and metrics.

    :param iteration: the iteration (window) number.
    :param candidate: the candidate's name, or None in a run without candidates.
    :param test_start: first row of the test part (the first decision is taken there).
    :param test_stop: one past the last row of the test part.
    :param placeholder: True for an iteration without a model (it stayed flat).
    :param rows: the row each return is dated on (``t + 1`` for the decision at ``t``).
    :param dates: ISO timestamps of ``rows`` when the prices have a DatetimeIndex, else None.
    :param returns: net return of every period (costs included).
    :param positions: position held over every period (-1, 0 or 1; between them in the built-in env's continuous mode).
    :param equity: equity after every period, starting from 1.0 before the first.
    :param metrics: :func:`~sb3_iter_ckpt.stats.metrics.trading_metrics` of ``returns`` with ``positions``.
    :param periods_per_year: the annualization of ``metrics``.
    :param asset_returns: the asset's own return over each period (``p[t] / p[t - 1] - 1`` for row ``t``):
        buy-and-hold's; None in a result read from a version-1 file, or with ``asset_returns_reason``.
    :param asset_returns_reason: why the asset's returns are not known (a test env that gave no prices:
        buy-and-hold is not available); None when they are, or in a version-1 result.
    :param assets: a portfolio env's assets, as its ``StepReader.weights_key`` names them; None: not read.
    :param weights: each period's weight of each of ``assets`` (one tuple per row); None with ``assets``.
    """

    iteration: int
    candidate: str | None
    test_start: int
    test_stop: int
    placeholder: bool
    rows: tuple[int, ...]
    dates: tuple[str, ...] | None
    returns: tuple[float, ...]
    positions: tuple[float, ...]
    equity: tuple[float, ...]
    metrics: dict[str, Any]
    periods_per_year: float
    asset_returns: tuple[float, ...] | None = None
    asset_returns_reason: str | None = None
    assets: tuple[str, ...] | None = None
    weights: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.asset_returns_reason is not None and (self.asset_returns is not None or not self.asset_returns_reason):
            raise RecordError("asset_returns_reason is a non-empty reason, given only without asset_returns")
        if (self.assets is None) != (self.weights is None):
            raise RecordError("assets and weights are given together")

    @property
    def version(self) -> int:
        """The layout this result is written in: the lowest that holds it (1: no asset returns, from an
        earlier version; 3: asset returns not available, with the reason; else 2)."""
        if self.assets is not None:
            return 4
        if self.asset_returns_reason is not None:
            return 3
        return 1 if self.asset_returns is None else 2

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values, with ``format`` and ``version``."""
        out = {
            "format": FORMAT,
            "version": self.version,
            "iteration": self.iteration,
            "candidate": self.candidate,
            "test_start": self.test_start,
            "test_stop": self.test_stop,
            "placeholder": self.placeholder,
            "rows": list(self.rows),
            "dates": None if self.dates is None else list(self.dates),
            "returns": list(self.returns),
            "positions": list(self.positions),
            "equity": list(self.equity),
            "metrics": dict(self.metrics),
            "periods_per_year": self.periods_per_year,
        }
        if self.version > 1:  # else exactly the version-1 layout an earlier version wrote
            out["asset_returns"] = None if self.asset_returns is None else list(self.asset_returns)
        if self.version > 2:
            out["asset_returns_reason"] = self.asset_returns_reason
        if self.version > 3:
            out["assets"] = None if self.assets is None else list(self.assets)
            out["weights"] = None if self.weights is None else [list(w) for w in self.weights]
        return out

    def to_json_bytes(self) -> bytes:
        """Strict JSON (sorted keys, floats as ``repr``, no NaN): the same bytes for the same result."""
        return record.dumps(self.to_dict())

    @classmethod
    def from_json_bytes(cls, data: bytes, what: str = "forward result") -> ForwardResult:
        """Read :meth:`to_json_bytes`'s output back, checking every field.

        :param data: the file's bytes.
        :param what: how to name the file in error messages.
        :raises RecordError: for anything that is not such a result (bad JSON, a missing, unknown or
            wrongly typed field, inconsistent lengths, rows or equity).
        """
        return cls.from_dict(record.loads(data, what), what)

    @classmethod
    def from_dict(cls, raw: Any, what: str = "forward result") -> ForwardResult:
        """Read :meth:`to_dict`'s output back (strict JSON already parsed), checking every field.

        :param raw: the parsed JSON.
        :param what: how to name its file in error messages.
        :raises RecordError: as :meth:`from_json_bytes`.
        """
        return _parse_result(raw, what)


# -- reading a result back ------------------------------------------------------------------------------------
def _fail(what: str, message: str) -> RecordError:
    return RecordError(f"{what}: {message}; delete it and run the forward evaluation again (it is deterministic)")


def _int(raw: Mapping[str, Any], key: str, what: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(what, f"{key} must be an integer >= 0, got {value!r}")
    return value


def _numbers(raw: Mapping[str, Any], key: str, what: str) -> tuple[float, ...]:
    values = raw[key]
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise _fail(what, f"{key} must be a list of finite numbers")
    return tuple(float(v) for v in values)


def _is_text(value: Any) -> bool:
    """A str that UTF-8 can hold: JSON's ``\\ud800`` escape gives a lone surrogate, which crashes every output."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_metrics(metrics: Any, what: str) -> dict[str, Any]:
    ok = isinstance(metrics, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in metrics.values()
    )
    if not ok:
        raise _fail(what, "metrics must be an object of numbers or nulls")
    return dict(metrics)


def _parse_result(raw: Any, what: str) -> ForwardResult:
    version = raw.get("version") if isinstance(raw, dict) else None
    fields = {1: _FIELDS_V1, 2: _FIELDS_V2, 3: _FIELDS_V3}.get(version, _FIELDS) if type(version) is int else _FIELDS
    if not isinstance(raw, dict) or set(raw) != set(fields):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise _fail(what, f"expected the fields {sorted(fields)}, found {found}")
    if raw["format"] != FORMAT or version not in (1, 2, 3, FORMAT_VERSION) or isinstance(version, bool):
        raise _fail(what, f"format {raw['format']!r} version {version!r} is not {FORMAT!r} 1..{FORMAT_VERSION}")
    iteration, start, stop = (_int(raw, k, what) for k in ("iteration", "test_start", "test_stop"))
    candidate, placeholder, dates = raw["candidate"], raw["placeholder"], raw["dates"]
    if candidate is not None and (not _is_text(candidate) or not candidate):
        raise _fail(what, f"candidate must be a non-empty string or null, got {candidate!r}")
    if not isinstance(placeholder, bool):
        raise _fail(what, f"placeholder must be true or false, got {placeholder!r}")
    rows = raw["rows"]
    n = len(rows) if isinstance(rows, list) and all(type(r) is int for r in rows) else -1
    if n < 0 or rows != list(range(start + 1, start + 1 + n)) or not start < stop or start + n > stop:
        raise _fail(what, f"rows must be the consecutive rows after test_start {start} inside the test part")
    if dates is not None and (not isinstance(dates, list) or len(dates) != n or not all(_is_text(d) for d in dates)):
        raise _fail(what, "dates must be null or one string per row")
    returns, positions, equity = (_numbers(raw, k, what) for k in ("returns", "positions", "equity"))
    if not len(returns) == len(positions) == len(equity) == n:
        raise _fail(what, f"rows, returns, positions and equity must have the same length ({n})")
    if not np.allclose(equity, np.cumprod(1.0 + np.asarray(returns)), rtol=1e-12, atol=0.0):
        raise _fail(what, "equity is not the compounded returns")
    if placeholder and any(returns + positions):
        raise _fail(what, "a placeholder must be flat (zero returns and positions)")
    ppy = raw["periods_per_year"]
    if isinstance(ppy, bool) or not isinstance(ppy, (int, float)) or not ppy > 0:
        raise _fail(what, f"periods_per_year must be a positive number, got {ppy!r}")
    metrics = _check_metrics(raw["metrics"], what)
    reason, assets = _asset_returns(raw, version, n, what)
    names, weights = _weights(raw, n, what) if version == 4 else (None, None)
    return ForwardResult(
        iteration, candidate, start, stop, placeholder, tuple(rows), None if dates is None else tuple(dates),
        returns, positions, equity, metrics, ppy, assets, reason, names, weights,
    )  # fmt: skip


def _asset_returns(raw: Mapping[str, Any], version: int, n: int, what: str) -> tuple[Any, Any]:
    """``(asset_returns_reason, asset_returns)``: version 3 has the reason, version 4 either, 2 the returns."""
    reason = raw["asset_returns_reason"] if version >= 3 else None
    if version == 4 and reason is None:
        version = 2  # the returns are known
    if version >= 3 and (not isinstance(reason, str) or not reason or raw["asset_returns"] is not None):
        raise _fail(what, "a result without asset_returns has asset_returns null and a non-empty asset_returns_reason")
    assets = _numbers(raw, "asset_returns", what) if version == 2 else None
    if assets is not None and (len(assets) != n or any(a <= -1.0 for a in assets)):
        raise _fail(what, f"asset_returns must be {n} returns above -1 (prices stay positive)")
    return reason, assets


def _weights(raw: Mapping[str, Any], n: int, what: str) -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]:
    names, rows = raw["assets"], raw["weights"]
    if (
        not isinstance(names, list)
        or not names
        or not all(_is_text(a) and a for a in names)
        or len(set(names)) < len(names)
    ):
        raise _fail(what, "assets must be a list of distinct non-empty names")
    ok = isinstance(rows, list) and len(rows) == n and all(isinstance(r, list) and len(r) == len(names) for r in rows)
    if not ok or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for r in rows for w in r
    ):
        raise _fail(what, f"weights must be {n} rows of {len(names)} finite numbers, one per asset")
    return tuple(names), tuple(tuple(float(w) for w in r) for r in rows)
