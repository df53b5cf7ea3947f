"""Forward (out-of-sample) evaluation: every kept model trades the unseen test part after its window.

Selection on validation picks the best of several noisy evaluations of the same data, so its scores are
optimistic by construction. Here each iteration's kept model trades its window's *test* part once,
deterministically, and the test parts are stitched into one out-of-sample account curve, compared with
buy-and-hold and flat over exactly the same periods, and judged with the deflated Sharpe ratio and the
probability of backtest overfitting (:mod:`sb3_iter_ckpt.stats.overfitting`).

Timing, the same as :class:`~sb3_iter_ckpt.envs.trading.TradingEnv`'s: the model trades the built-in env
over ``prices[test_start - window_size : test_stop + 1]``. A decision at row ``t`` (``test_start <= t <
test_stop``) sees closes up to row ``t`` only and earns the move from ``t`` to ``t + 1``; that return is
dated on row ``t + 1``, when it is realized. The last window of the data earns what the data allows (its
last decision is at the last row but one). With the splitter's default ``step == test_size`` the test parts
tile the data, so the stitched returns are dated on every row from ``test_start + 1`` of the first window
to ``test_stop`` of the last (or the last row of the data), each row traded by the model of its window.

Each test part starts flat: a model that holds a position across a boundary pays the entry cost again.
That is conservative, and it makes each window's result depend on nothing but its own model and prices,
so re-evaluating one window gives the same bytes.

Nothing here reads or writes files: :meth:`ForwardResult.to_json_bytes` and
:meth:`StitchedForward.to_csv_bytes` give the bytes, the repository stores them.
"""

from __future__ import annotations

import copy
import csv
import inspect
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.common import record
from sb3_iter_ckpt.envs.trading import TradingEnv, price_array
from sb3_iter_ckpt.errors import CheckpointError, RecordError
from sb3_iter_ckpt.splitter import Window
from sb3_iter_ckpt.stats.metrics import cagr, trading_metrics
from sb3_iter_ckpt.stats.overfitting import (
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
    walk_forward_efficiency,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ForwardResult",
    "StitchedForward",
    "evaluate_forward",
    "placeholder_forward",
    "stitch",
    "selection_vs_forward",
    "forward_statistics",
    "pbo_partitions",
    "forward_report",
]

#: ``format`` of a forward result's JSON; readers refuse any other.
FORMAT = "sb3-iter-ckpt/forward"
#: Layout version of that JSON; readers refuse newer ones.
FORMAT_VERSION = 1
#: Rows each CSCV block must hold at least (a half then has a Sharpe ratio to rank).
MIN_BLOCK_ROWS = 2

_DEFAULT_WINDOW_SIZE = int(inspect.signature(TradingEnv.__init__).parameters["window_size"].default)
_FIELDS = (
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


# -- inputs ---------------------------------------------------------------------------------------------------
def _as_prices(prices: Any) -> tuple[np.ndarray, pd.DatetimeIndex | None]:
    """The prices as finite positive float64 values, and their DatetimeIndex (None for any other index)."""
    index = prices.index if isinstance(prices, pd.Series) else None
    try:
        values = price_array(prices)
    except ValueError as exc:
        raise CheckpointError(f"{exc}; pass one series of close prices, cleaned first") from exc
    return values, index if isinstance(index, pd.DatetimeIndex) else None


def _test_part(window: Window, n: int) -> tuple[int, int]:
    start, stop = getattr(window, "test_start", None), getattr(window, "test_stop", None)
    if start is None or stop is None:
        raise CheckpointError(f"window {getattr(window, 'iteration', '?')} has no test part; split with test_size > 0")
    if not 0 <= start < stop <= n:
        raise CheckpointError(
            f"test part [{start}, {stop}) lies outside the {n} prices; pass the prices the splitter split"
        )
    return int(start), int(stop)


def _dated_rows(start: int, stop: int, n: int) -> np.ndarray:
    """Rows the returns of decisions at ``start .. stop - 1`` are dated on (the last row of the data at most)."""
    return np.arange(start + 1, min(stop, n - 1) + 1, dtype=np.int64)


def _ppy(periods_per_year: Any) -> float:
    ok = isinstance(periods_per_year, numbers.Real) and not isinstance(periods_per_year, bool)
    if not ok or not (math.isfinite(float(periods_per_year)) and periods_per_year > 0):
        raise CheckpointError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return periods_per_year  # an int stays an int, as trading_metrics records it


def _candidate(candidate: Any) -> str | None:
    if candidate is not None and (not isinstance(candidate, str) or not candidate):
        raise CheckpointError(f"candidate must be a non-empty name or None, got {candidate!r}")
    return candidate


# -- one test part --------------------------------------------------------------------------------------------
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
    :param positions: position held over every period (-1, 0 or 1).
    :param equity: equity after every period, starting from 1.0 before the first.
    :param metrics: :func:`~sb3_iter_ckpt.stats.metrics.trading_metrics` of ``returns`` with ``positions``.
    :param periods_per_year: the annualization of ``metrics``.
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

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values, with ``format`` and ``version``."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
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
        return _parse_result(record.loads(data, what), what)


def _make_result(
    iteration: Any,
    candidate: Any,
    start: int,
    stop: int,
    placeholder: bool,
    rows: np.ndarray,
    index: pd.DatetimeIndex | None,
    returns: Sequence[float],
    positions: Sequence[float],
    periods_per_year: float,
) -> ForwardResult:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise CheckpointError(f"iteration must be an integer >= 0, got {iteration!r}")
    ppy = _ppy(periods_per_year)
    r = np.asarray(returns, dtype=np.float64)
    return ForwardResult(
        iteration=int(iteration),
        candidate=_candidate(candidate),
        test_start=start,
        test_stop=stop,
        placeholder=placeholder,
        rows=tuple(int(x) for x in rows),
        dates=None if index is None else tuple(index[int(x)].isoformat() for x in rows),
        returns=tuple(float(x) for x in r),
        positions=tuple(float(x) for x in positions),
        equity=tuple(float(x) for x in np.cumprod(1.0 + r)),
        metrics=trading_metrics(r, positions=list(positions), periods_per_year=ppy),
        periods_per_year=ppy,
    )


def _normalizer(vecnormalize: Any, venv: Any) -> Any:
    """``vecnormalize`` around ``venv`` in evaluation mode, leaving the caller's object untouched."""
    from stable_baselines3.common.vec_env import VecNormalize

    if isinstance(vecnormalize, VecNormalize):
        vn = copy.deepcopy(vecnormalize)  # VecNormalize's __getstate__ leaves its venv out of the copy
        vn.set_venv(venv)
    elif callable(vecnormalize):
        vn = vecnormalize(venv)  # e.g. functools.partial(repository.load_vecnormalize, i)
        if not isinstance(vn, VecNormalize):
            raise CheckpointError(f"vecnormalize(venv) returned a {type(vn).__name__}, not a VecNormalize")
    else:
        raise CheckpointError(
            f"vecnormalize must be a VecNormalize or a callable(venv), got {type(vecnormalize).__name__}"
        )
    vn.training = False
    vn.norm_reward = False
    return vn


def _trade(model: Any, env: TradingEnv, vecnormalize: Any) -> tuple[list[float], list[float]]:
    """Run ``model`` deterministically over the whole env once; the net return and position of every step."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv: Any = DummyVecEnv([lambda: env])
    if vecnormalize is not None:
        venv = _normalizer(vecnormalize, venv)
    returns: list[float] = []
    positions: list[float] = []
    try:
        obs = venv.reset()
        done = False
        while not done:
            try:
                action, _ = model.predict(obs, deterministic=True)
                action = np.asarray(action).reshape(1)
            except ValueError as exc:
                raise CheckpointError(
                    f"the model cannot act on the forward env ({exc}); pass the env_kwargs it was trained with"
                ) from exc
            # The info of the last step is read before DummyVecEnv's automatic reset can matter.
            obs, _, dones, infos = venv.step(action)
            returns.append(float(infos[0]["return"]))
            positions.append(float(infos[0]["position"]))
            done = bool(dones[0])
    finally:
        venv.close()
    return returns, positions


def evaluate_forward(
    model: Any,
    prices: Any,
    window: Window,
    *,
    iteration: int,
    candidate: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    vecnormalize: Any = None,
    periods_per_year: float = 252,
) -> ForwardResult:
    """Trade ``window``'s test part once with ``model``, deterministically, on the built-in ``TradingEnv``.

    The env runs over ``prices[test_start - window_size : test_stop + 1]`` (shorter at the end of the
    data), starting flat: the decision at row ``t`` sees closes up to ``t`` and its return is dated ``t + 1``.

    :param model: the kept model: anything with SB3's ``predict(obs, deterministic=True) -> (action, state)``.
    :param prices: all close prices (pandas Series with a DatetimeIndex or RangeIndex, or an array): the
        series the splitter split, so that the window's rows point into it.
    :param window: a :class:`~sb3_iter_ckpt.splitter.Window` with a test part.
    :param iteration: the iteration number recorded in the result.
    :param candidate: the candidate's name (None without candidates).
    :param env_kwargs: ``TradingEnv`` arguments the model was trained with (``window_size``,
        ``transaction_cost``, ``allow_short``...); ``random_start`` and ``max_steps`` are ignored (the whole
        test part is traded from its first row).
    :param vecnormalize: the model's ``VecNormalize`` statistics: a loaded ``VecNormalize`` (copied, not
        changed) or a ``callable(venv) -> VecNormalize`` such as
        ``functools.partial(repository.load_vecnormalize, i)``; used in evaluation mode
        (``training=False``, ``norm_reward=False``). None: observations are not normalized.
    :param periods_per_year: annualization of the result's metrics.
    :return: the :class:`ForwardResult`.
    :raises CheckpointError: for a window without a test part or outside the prices, a test part that starts
        before ``window_size`` rows of history, bad ``env_kwargs`` or a model that does not fit the env.
    """
    values, index = _as_prices(prices)
    start, stop = _test_part(window, len(values))
    kwargs = {**(env_kwargs or {}), "random_start": False, "max_steps": None}
    raw_size = kwargs.get("window_size", _DEFAULT_WINDOW_SIZE)
    if isinstance(raw_size, bool) or not isinstance(raw_size, numbers.Integral) or int(raw_size) < 1:
        raise CheckpointError(f"env_kwargs window_size must be an integer >= 1, got {raw_size!r}")
    window_size = int(raw_size)
    if start < window_size:
        raise CheckpointError(
            f"test part starts at row {start}, before the {window_size} rows of history its first observation "
            "needs; put train and validation parts before it"
        )
    rows = _dated_rows(start, stop, len(values))
    returns: list[float] = []
    positions: list[float] = []
    if rows.size:
        try:
            env = TradingEnv(values[start - window_size : stop + 1], **kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot build the forward TradingEnv from env_kwargs: {exc}") from exc
        returns, positions = _trade(model, env, vecnormalize)
        if len(returns) != rows.size:  # the env and _dated_rows disagree: a bug here, not the user's
            raise CheckpointError(f"forward evaluation made {len(returns)} steps for {rows.size} rows; report this")
    return _make_result(iteration, candidate, start, stop, False, rows, index, returns, positions, periods_per_year)


def placeholder_forward(
    prices: Any,
    window: Window,
    *,
    iteration: int,
    candidate: str | None = None,
    periods_per_year: float = 252,
) -> ForwardResult:
    """The forward result of an iteration without a model: flat over its test part, zero return every period.

    It has the same rows (and dates) :func:`evaluate_forward` would give, so the stitched curve has no hole.

    :param prices: all close prices, as for :func:`evaluate_forward`.
    :param window: a window with a test part.
    :param iteration: the iteration number.
    :param candidate: the candidate's name (None without candidates).
    :param periods_per_year: annualization of the metrics.
    :return: a :class:`ForwardResult` with ``placeholder=True``.
    """
    values, index = _as_prices(prices)
    start, stop = _test_part(window, len(values))
    rows = _dated_rows(start, stop, len(values))
    zeros = [0.0] * rows.size
    return _make_result(iteration, candidate, start, stop, True, rows, index, zeros, zeros, periods_per_year)


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


def _check_metrics(metrics: Any, what: str) -> dict[str, Any]:
    ok = isinstance(metrics, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in metrics.values()
    )
    if not ok:
        raise _fail(what, "metrics must be an object of numbers or nulls")
    return dict(metrics)


def _parse_result(raw: Any, what: str) -> ForwardResult:
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise _fail(what, f"expected the fields {sorted(_FIELDS)}, found {found}")
    if raw["format"] != FORMAT or raw["version"] != FORMAT_VERSION:
        raise _fail(what, f"format {raw['format']!r} version {raw['version']!r} is not {FORMAT!r} {FORMAT_VERSION}")
    iteration, start, stop = (_int(raw, k, what) for k in ("iteration", "test_start", "test_stop"))
    candidate, placeholder, dates = raw["candidate"], raw["placeholder"], raw["dates"]
    if candidate is not None and (not isinstance(candidate, str) or not candidate):
        raise _fail(what, f"candidate must be a non-empty string or null, got {candidate!r}")
    if not isinstance(placeholder, bool):
        raise _fail(what, f"placeholder must be true or false, got {placeholder!r}")
    rows = raw["rows"]
    n = len(rows) if isinstance(rows, list) and all(type(r) is int for r in rows) else -1
    if n < 0 or rows != list(range(start + 1, start + 1 + n)) or not start < stop or start + n > stop:
        raise _fail(what, f"rows must be the consecutive rows after test_start {start} inside the test part")
    if dates is not None and (
        not isinstance(dates, list) or len(dates) != n or not all(isinstance(d, str) for d in dates)
    ):
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
    return ForwardResult(
        iteration, candidate, start, stop, placeholder, tuple(rows), None if dates is None else tuple(dates),
        returns, positions, equity, metrics, ppy,
    )  # fmt: skip


# -- the stitched curve ---------------------------------------------------------------------------------------
_CSV_COLUMNS = ("row", "date", "iteration", "candidate", "placeholder", "position", "return", "equity", "asset_return")


@dataclass(frozen=True)
class StitchedForward:
    """The test parts' returns in time order, one entry per period, and the asset's own return over each.

    :param rows: the row every return is dated on, consecutive.
    :param dates: their ISO timestamps when the prices have dates, else None.
    :param iterations: the iteration whose model traded each period.
    :param candidates: that iteration's candidate (None without candidates).
    :param placeholders: True where the iteration had no model (flat).
    :param positions: position held over each period.
    :param returns: net return of each period.
    :param equity: equity after each period, compounding across test parts from 1.0.
    :param asset_returns: the asset's return over each period, ``p[t] / p[t - 1] - 1`` for row ``t``
        (buy-and-hold's return).
    :param periods_per_year: annualization of the metrics.
    """

    rows: tuple[int, ...]
    dates: tuple[str, ...] | None
    iterations: tuple[int, ...]
    candidates: tuple[str | None, ...]
    placeholders: tuple[bool, ...]
    positions: tuple[float, ...]
    returns: tuple[float, ...]
    equity: tuple[float, ...]
    asset_returns: tuple[float, ...]
    periods_per_year: float

    @property
    def metrics(self) -> dict[str, Any]:
        """:func:`~sb3_iter_ckpt.stats.metrics.trading_metrics` of the stitched returns with their positions."""
        return trading_metrics(
            list(self.returns), positions=list(self.positions), periods_per_year=self.periods_per_year
        )

    def baseline(self) -> dict[str, dict[str, Any]]:
        """Buy-and-hold and flat over exactly the stitched periods, each with the strategy's excess over it.

        Buy-and-hold holds the asset (position 1) over every period and pays no cost: it is what the market
        paid over those periods, independent of the env's costs (one entry at the default cost would lower its
        total return by 0.05 %). Flat earns zero every period.

        :return: ``{"buy_and_hold": {...}, "flat": {...}}``: each the baseline's trading metrics plus
            ``excess_return`` (the strategy's total return minus the baseline's) and ``sharpe_difference``
            (the strategy's annualized Sharpe minus the baseline's; None where either is undefined, always for
            flat, whose Sharpe is undefined).
        """
        mine = self.metrics
        ppy, n = self.periods_per_year, len(self.returns)
        out = {}
        for name, returns, position in (("buy_and_hold", self.asset_returns, 1.0), ("flat", (0.0,) * n, 0.0)):
            metrics = trading_metrics(list(returns), positions=[position] * n, periods_per_year=ppy)
            metrics["excess_return"] = _difference(mine["total_return"], metrics["total_return"])
            metrics["sharpe_difference"] = _difference(mine["sharpe"], metrics["sharpe"])
            out[name] = metrics
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: first and last row (and date), the metrics, and the baselines."""
        return {
            "first_row": self.rows[0] if self.rows else None,
            "last_row": self.rows[-1] if self.rows else None,
            "first_date": self.dates[0] if self.dates else None,
            "last_date": self.dates[-1] if self.dates else None,
            "metrics": self.metrics,
            "baseline": self.baseline(),
        }

    def to_csv_bytes(self) -> bytes:
        """The curve as CSV, one line per period (``date`` column only when there are dates); floats as
        ``repr``, ``\\n`` line ends: the same bytes for the same curve."""
        columns = [c for c in _CSV_COLUMNS if c != "date" or self.dates is not None]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for k, row in enumerate(self.rows):
            line = [str(row)] + ([self.dates[k]] if self.dates is not None else [])
            line += [str(self.iterations[k]), self.candidates[k] or "", "true" if self.placeholders[k] else "false"]
            line += [repr(self.positions[k]), repr(self.returns[k]), repr(self.equity[k]), repr(self.asset_returns[k])]
            writer.writerow(line)
        return buffer.getvalue().encode("utf-8")

    @classmethod
    def from_csv_bytes(cls, data: bytes, periods_per_year: float, what: str = "forward_returns.csv") -> StitchedForward:
        """Read :meth:`to_csv_bytes`'s output back (the CSV does not hold the annualization: pass it).

        :raises RecordError: for anything that is not such a file.
        """
        return _parse_csv(data, _ppy(periods_per_year), what)


def _difference(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _csv_fields(line: list[str], columns: list[str], what: str, k: int) -> tuple[Any, ...]:
    cells = dict(zip(columns, line, strict=True))
    try:
        floats = tuple(float(cells[c]) for c in ("position", "return", "equity", "asset_return"))
        ints = (int(cells["row"]), int(cells["iteration"]))
    except ValueError as exc:
        raise RecordError(f"{what}: line {k + 2} has a bad number ({exc}); write the file again") from exc
    if not all(math.isfinite(x) for x in floats) or cells["placeholder"] not in ("true", "false"):
        raise RecordError(f"{what}: line {k + 2} has a non-finite number or a bad placeholder flag; write it again")
    return (*ints, cells.get("date"), cells["candidate"] or None, cells["placeholder"] == "true", *floats)


def _parse_csv(data: bytes, ppy: float, what: str) -> StitchedForward:
    try:
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordError(f"{what} is not a CSV file ({exc}); write it again") from exc
    if not lines or lines[0] not in (list(_CSV_COLUMNS), [c for c in _CSV_COLUMNS if c != "date"]):
        raise RecordError(f"{what}: the header must be {','.join(_CSV_COLUMNS)} (date optional); write it again")
    columns = lines[0]
    body = lines[1:]
    if any(len(line) != len(columns) for line in body):
        raise RecordError(f"{what}: every line must have {len(columns)} cells; write the file again")
    parsed = [_csv_fields(line, columns, what, k) for k, line in enumerate(body)]
    rows, iterations, dates, candidates, placeholders, positions, returns, equity, assets = (
        tuple(field[j] for field in parsed) for j in range(9)
    )
    if rows and list(rows) != list(range(rows[0], rows[0] + len(rows))):
        raise RecordError(f"{what}: rows are not consecutive; write the file again")
    return StitchedForward(
        rows, dates if "date" in columns else None, iterations, candidates, placeholders, positions, returns,
        equity, assets, ppy,
    )  # fmt: skip


def _check_tiling(ordered: Sequence[ForwardResult]) -> None:
    seen: set[int] = set()
    for result in ordered:
        if result.iteration in seen:
            raise CheckpointError(f"iteration {result.iteration} is given twice; pass one forward result per iteration")
        seen.add(result.iteration)
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        if b.test_start < a.test_stop:
            raise CheckpointError(
                f"test parts overlap: iteration {b.iteration}'s [{b.test_start}, {b.test_stop}) starts before "
                f"iteration {a.iteration}'s [{a.test_start}, {a.test_stop}) ends; split with step == test_size"
            )
        if b.test_start > a.test_stop:
            raise CheckpointError(
                f"rows {a.test_stop}..{b.test_start - 1} between iteration {a.iteration} and {b.iteration} are "
                "traded by no model; the stitched curve needs contiguous test parts: split with step == test_size"
            )


def stitch(results: Sequence[ForwardResult], prices: Any) -> StitchedForward:
    """Join the test parts' returns in time order into one out-of-sample curve.

    :param results: one :class:`ForwardResult` per iteration (any order), all with the same
        ``periods_per_year``, computed on ``prices``.
    :param prices: the close prices the results were computed on (for the asset's returns and a check
        that rows and dates match).
    :return: the :class:`StitchedForward`.
    :raises CheckpointError: for no results, an iteration given twice, overlapping test parts, a hole
        between two test parts (every row of the out-of-sample period must be traded by one model), mixed
        ``periods_per_year``, or results that do not belong to these prices.
    """
    if not results:
        raise CheckpointError("no forward results to stitch; evaluate at least one window with a test part")
    values, index = _as_prices(prices)
    ordered = sorted(results, key=lambda r: r.test_start)
    _check_tiling(ordered)
    ppys = {r.periods_per_year for r in ordered}
    if len(ppys) != 1:
        raise CheckpointError(f"the results use different periods_per_year {sorted(ppys)}; evaluate them alike")
    for r in ordered:
        expected = _dated_rows(r.test_start, r.test_stop, len(values))
        dates = None if index is None else tuple(index[int(x)].isoformat() for x in expected)
        if r.rows != tuple(int(x) for x in expected) or r.dates != dates:
            raise CheckpointError(
                f"iteration {r.iteration}'s forward result does not match these prices (rows or dates differ); "
                "stitch it with the prices it was evaluated on"
            )
    rows = np.asarray([x for r in ordered for x in r.rows], dtype=np.int64)
    returns = np.asarray([x for r in ordered for x in r.returns], dtype=np.float64)
    return StitchedForward(
        rows=tuple(int(x) for x in rows),
        dates=None if index is None else tuple(d for r in ordered for d in (r.dates or ())),
        iterations=tuple(r.iteration for r in ordered for _ in r.rows),
        candidates=tuple(r.candidate for r in ordered for _ in r.rows),
        placeholders=tuple(r.placeholder for r in ordered for _ in r.rows),
        positions=tuple(x for r in ordered for x in r.positions),
        returns=tuple(float(x) for x in returns),
        equity=tuple(float(x) for x in np.cumprod(1.0 + returns)),
        asset_returns=tuple(float(x) for x in values[rows] / values[rows - 1] - 1.0),
        periods_per_year=ppys.pop(),
    )


# -- selection against forward, and the statistics ------------------------------------------------------------
def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(float(value)) else None


def selection_vs_forward(
    results: Sequence[ForwardResult],
    selection_scores: Mapping[int, float | None],
    selection_returns: Mapping[int, float | None],
    *,
    overall_selection_return: float | None = None,
    forward_score: str = "sharpe",
) -> dict[str, Any]:
    """Per iteration, the selection score next to the forward score, and walk-forward efficiency.

    Walk-forward efficiency (:func:`~sb3_iter_ckpt.stats.overfitting.walk_forward_efficiency`) is the annualized
    forward return (the test part's CAGR) over the annualized selection return; None where the selection
    return is missing or not positive.

    :param results: the forward results of the chosen models, one per iteration.
    :param selection_scores: iteration -> the score it was selected on (e.g. its record's
        ``validation.sharpe``); missing iterations give None.
    :param selection_returns: iteration -> the annualized return on the selection (validation) part
        (e.g. ``validation.cagr``).
    :param overall_selection_return: the annualized selection return of the whole run; default: the mean of
        the iterations' selection returns that are numbers (None when there are none).
    :param forward_score: the forward metric shown next to the selection score.
    :return: ``{"iterations": [...], "overall": {...}}``; each iteration has ``iteration``, ``candidate``,
        ``placeholder``, ``selection_score``, ``selection_return``, ``forward`` (its metrics),
        ``forward_score``, ``forward_return`` and ``efficiency``; ``overall`` has ``forward_return`` (the
        annualized return of all test parts together), ``selection_return`` and ``efficiency``.
    """
    ordered = sorted(results, key=lambda r: r.test_start)
    rows = []
    for r in ordered:
        selection = _number(selection_returns.get(r.iteration))
        forward = _number(r.metrics.get("cagr"))
        rows.append(
            {
                "iteration": r.iteration,
                "candidate": r.candidate,
                "placeholder": r.placeholder,
                "selection_score": _number(selection_scores.get(r.iteration)),
                "selection_return": selection,
                "forward": dict(r.metrics),
                "forward_score": _number(r.metrics.get(forward_score)),
                "forward_return": forward,
                "efficiency": walk_forward_efficiency(forward, selection),
            }
        )
    if overall_selection_return is None:
        known = [x for x in (_number(selection_returns.get(r.iteration)) for r in ordered) if x is not None]
        overall_selection_return = float(np.mean(known)) if known else None
    all_returns = [x for r in ordered for x in r.returns]
    ppy = ordered[0].periods_per_year if ordered else 252
    overall_forward = cagr(all_returns, ppy) if all_returns else None
    overall = {
        "forward_return": overall_forward,
        "selection_return": overall_selection_return,
        "efficiency": walk_forward_efficiency(overall_forward, overall_selection_return),
    }
    return {"iterations": rows, "overall": overall}


def pbo_partitions(n_rows: int, n_partitions: int = 16) -> int:
    """The number of CSCV blocks for ``n_rows`` periods: ``n_partitions`` when every block gets at least
    ``MIN_BLOCK_ROWS`` rows, else the largest even number that does; 0 when not even 2 blocks fit.

    :param n_rows: periods in the returns matrix.
    :param n_partitions: the most blocks wanted (16 in the paper).
    """
    most = min(int(n_partitions), n_rows // MIN_BLOCK_ROWS)
    most -= most % 2
    return most if most >= 2 else 0


def forward_statistics(
    chosen_returns: Sequence[float] | np.ndarray,
    candidate_returns: Mapping[str, Sequence[float] | np.ndarray],
    *,
    n_partitions: int = 16,
) -> dict[str, Any]:
    """The deflated Sharpe ratio of the stitched forward curve and the PBO of the candidates.

    DSR (:func:`~sb3_iter_ckpt.stats.overfitting.deflated_sharpe_ratio`): ``n_trials`` = the number of candidates
    compared (at least 1), ``trials_variance`` = the variance (``ddof=1``) of their per-period forward Sharpe
    ratios (candidates whose Sharpe ratio is undefined, e.g. always flat, count as trials but not in the
    variance; 0 with fewer than two defined). With one candidate it is the PSR against 0. Candidates that
    differ only by seed are correlated trials: read it as a conservative haircut, not an exact probability.

    PBO (:func:`~sb3_iter_ckpt.stats.overfitting.probability_of_backtest_overfitting`) over the matrix periods x
    candidates of their stitched forward returns, with :func:`pbo_partitions` blocks (16 when the run is
    long enough).

    :param chosen_returns: the stitched forward returns of the chosen models.
    :param candidate_returns: candidate name -> its stitched forward returns over the same periods.
    :param n_partitions: the most CSCV blocks.
    :return: JSON-ready: ``deflated_sharpe`` (a probability or None) with ``deflated_sharpe_reason`` (None
        when computed), ``n_trials``, ``trials_variance``, ``candidate_sharpes``, ``pbo`` (the
        :class:`~sb3_iter_ckpt.stats.overfitting.BacktestOverfitting` as a dict: ``pbo``, ``logits``,
        ``n_partitions``...; or None) with ``pbo_reason``.
    :raises CheckpointError: when the candidates' series differ in length (they must cover the same periods).
    """
    series = {name: np.asarray(r, dtype=np.float64) for name, r in candidate_returns.items()}
    if len({len(r) for r in series.values()}) > 1:
        raise CheckpointError("the candidates' forward returns cover different periods; stitch them over the same rows")
    sharpes = {name: _sharpe_or_none(r) for name, r in series.items()}
    defined = [s for s in sharpes.values() if s is not None]
    n_trials = max(1, len(series))
    variance = float(np.var(defined, ddof=1)) if len(defined) >= 2 else 0.0
    dsr, dsr_reason = None, None
    try:
        dsr = deflated_sharpe_ratio(np.asarray(chosen_returns, dtype=np.float64), n_trials, variance)
        if dsr is None:
            dsr_reason = "the forward returns have zero variance (always flat?): no Sharpe ratio to deflate"
    except CheckpointError as exc:
        dsr_reason = str(exc)
    pbo, pbo_reason = _pbo(series, n_partitions)
    return {
        "deflated_sharpe": dsr,
        "deflated_sharpe_reason": dsr_reason,
        "n_trials": n_trials,
        "trials_variance": variance,
        "candidate_sharpes": sharpes,
        "pbo": pbo,
        "pbo_reason": pbo_reason,
    }


def _sharpe_or_none(returns: np.ndarray) -> float | None:
    try:
        return sharpe_ratio(returns)
    except CheckpointError:  # fewer than 2 periods
        return None


def _pbo(series: Mapping[str, np.ndarray], n_partitions: int) -> tuple[dict[str, Any] | None, str | None]:
    if len(series) < 2:
        return None, f"PBO compares candidates: it needs at least 2, this run has {len(series)}"
    n_rows = len(next(iter(series.values())))
    blocks = pbo_partitions(n_rows, n_partitions)
    if blocks == 0:
        return None, f"{n_rows} forward periods are too few for PBO: it needs at least {2 * MIN_BLOCK_ROWS}"
    matrix = np.column_stack(list(series.values()))
    return probability_of_backtest_overfitting(matrix, blocks).to_dict(), None


def _joined(parts: Sequence[ForwardResult], prices: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A candidate's rows and returns in time order: stitched (and checked) on ``prices``, or, without them
    (a repository's report, whose prices are not kept), its test parts joined as they are."""
    if prices is not None:
        theirs = stitch(parts, prices)
        return theirs.rows, theirs.returns
    ordered = sorted(parts, key=lambda r: r.test_start)
    return tuple(x for r in ordered for x in r.rows), tuple(float(x) for r in ordered for x in r.returns)


def forward_report(
    results: Sequence[ForwardResult],
    prices: Any,
    *,
    selection_scores: Mapping[int, float | None] | None = None,
    selection_returns: Mapping[int, float | None] | None = None,
    candidate_results: Mapping[str, Sequence[ForwardResult]] | None = None,
    stitched: StitchedForward | None = None,
    n_partitions: int = 16,
) -> dict[str, Any]:
    """Everything the ``forward`` command shows, as JSON-ready values.

    :param results: the chosen model's forward result of every iteration.
    :param prices: the close prices they were evaluated on.
    :param selection_scores: iteration -> selection score (see :func:`selection_vs_forward`).
    :param selection_returns: iteration -> annualized selection return.
    :param candidate_results: candidate name -> its forward results of every iteration (for the DSR's
        trials and PBO); None: the chosen curve is the only trial.
    :param stitched: the already stitched ``results`` (saves stitching them again).
    :param n_partitions: the most CSCV blocks for PBO.
    :return: ``iterations``, ``overall`` (walk-forward efficiency), ``stitched`` (its summary),
        ``baseline`` (``buy_and_hold`` and ``flat``), ``deflated_sharpe``, ``pbo`` and the rest of
        :func:`forward_statistics`'s keys.
    :raises CheckpointError: as :func:`stitch`, and when a candidate's periods are not the chosen curve's.
    """
    curve = stitched if stitched is not None else stitch(results, prices)
    comparison = selection_vs_forward(results, selection_scores or {}, selection_returns or {})
    candidates: dict[str, Sequence[float]] = {}
    for name, parts in (candidate_results or {}).items():
        rows, returns = _joined(parts, prices)
        if rows != curve.rows:
            raise CheckpointError(
                f"candidate {name!r}'s forward periods differ from the chosen curve's; evaluate it on every window"
            )
        candidates[name] = returns
    statistics = forward_statistics(curve.returns, candidates or {"chosen": curve.returns}, n_partitions=n_partitions)
    summary = curve.to_dict()
    baseline = summary.pop("baseline")
    return {**comparison, "stitched": summary, "baseline": baseline, **statistics}
