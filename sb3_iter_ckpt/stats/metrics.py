"""Trading metrics over a per-period return series (or an equity curve).

Pure numpy code, no pandas import: lists, numpy arrays and pandas Series are all accepted because they all go
through ``numpy.asarray``.

Conventions, chosen so the results can go straight into a JSON metrics record:

* A *return* is a simple (arithmetic) return per period: ``equity[t] / equity[t - 1] - 1``.
* ``periods_per_year`` is always an explicit argument (never inferred from timestamps) and
  ``trading_metrics`` records it in its output, so two records are only compared when they were annualised
  the same way.
* Every metric is a Python ``float`` (counts are ``int``) or ``None``. ``None`` means "undefined for this
  input": empty input, fewer than two periods for a dispersion statistic, zero variance, no downside, no
  drawdown for Calmar, or an overflow. No function ever returns NaN or +/-inf, and no numpy warning escapes.
* Non-finite input values (NaN, inf) are rejected with ``ValueError`` rather than silently propagated:
  a metric computed over corrupt data is worse than no metric.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "returns_from_equity",
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "n_trades",
    "win_rate",
    "exposure",
    "trading_metrics",
    "METRIC_KEYS",
]

#: Keys of the dictionary returned by :func:`trading_metrics`, in order.
METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "n_trades",
    "win_rate",
    "exposure",
    "periods_per_year",
    "n_periods",
)

# A series whose spread is below this fraction of its largest magnitude is treated as constant: float
# round-off (e.g. returns recomputed from a geometric equity curve) must not turn "zero variance" into a
# Sharpe ratio of 1e15.
_CONSTANT_RTOL = 1e-12

#: A list, tuple, numpy array or pandas Series of numbers (typed loosely: pandas is never imported here).
ArrayLike = Any


def _as_1d(values: ArrayLike | None, name: str) -> np.ndarray:
    """Convert ``values`` to a finite 1-D float64 array (``None`` -> empty)."""
    if values is None:
        return np.empty(0, dtype=np.float64)
    try:
        # pandas objects expose to_numpy; going through it avoids object arrays for nullable dtypes.
        if hasattr(values, "to_numpy"):
            values = values.to_numpy(dtype=np.float64)
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from exc
    if arr.ndim == 2 and 1 in arr.shape:
        # A single-column DataFrame or an (n, 1) array is unambiguous.
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not math.isfinite(ppy) or ppy <= 0:
        raise ValueError(f"periods_per_year must be a positive finite number, got {periods_per_year!r}")
    return ppy


def _check_rf(risk_free: float) -> float:
    rf = float(risk_free)
    if not math.isfinite(rf):
        raise ValueError(f"risk_free must be finite, got {risk_free!r}")
    return rf


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _is_constant(arr: np.ndarray) -> bool:
    scale = float(np.max(np.abs(arr)))
    return float(np.ptp(arr)) <= _CONSTANT_RTOL * scale


#: The series check and the zero-variance rule, shared with ``overfitting`` so both modules agree on
#: what a valid return series is and when its Sharpe ratio is undefined.
CONSTANT_RTOL = _CONSTANT_RTOL
as_1d = _as_1d
is_constant = _is_constant


def _equity_curve(returns: np.ndarray) -> np.ndarray:
    """Equity starting at 1.0 before the first period; ``len(returns) + 1`` points."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.concatenate(([1.0], np.cumprod(1.0 + returns)))


def returns_from_equity(equity: ArrayLike) -> np.ndarray:
    """Simple per-period returns of an equity curve.

    :param equity: equity values (strictly positive), one per period boundary.
    :return: float64 array of ``len(equity) - 1`` returns ``equity[t] / equity[t - 1] - 1``
        (empty when fewer than two points).
    :raises ValueError: when the curve contains non-positive or non-finite values.
    """
    eq = _as_1d(equity, "equity")
    if eq.size and np.any(eq <= 0):
        raise ValueError("equity must be strictly positive to derive returns")
    if eq.size < 2:
        return np.empty(0, dtype=np.float64)
    return eq[1:] / eq[:-1] - 1.0


def total_return(returns: ArrayLike) -> float | None:
    """Compounded return over the whole series.

    :param returns: simple per-period returns.
    :return: ``prod(1 + r) - 1``, or None for an empty series or on overflow.
    """
    r = _as_1d(returns, "returns")
    if r.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        return _finite_or_none(np.prod(1.0 + r) - 1.0)


def cagr(returns: ArrayLike, periods_per_year: float = 252) -> float | None:
    """Compound annual growth rate.

    :param returns: simple per-period returns.
    :param periods_per_year: number of periods in a year (252 for daily bars on trading days).
    :return: ``growth ** (periods_per_year / n) - 1``; ``-1.0`` when the equity went to zero; None for an
        empty series, a negative final equity (undefined) or on overflow (very short, very profitable series).
    """
    ppy = _check_ppy(periods_per_year)
    r = _as_1d(returns, "returns")
    if r.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        growth = float(np.prod(1.0 + r))
        if not math.isfinite(growth) or growth < 0:
            return None
        if growth == 0:
            return -1.0
        # exp/log instead of ** so that an overflow becomes inf (-> None) instead of an OverflowError.
        value = np.expm1(np.log(growth) * ppy / r.size)
    return _finite_or_none(value)


def volatility(returns: ArrayLike, periods_per_year: float = 252) -> float | None:
    """Annualised standard deviation of returns (sample, ``ddof=1``).

    :param returns: simple per-period returns.
    :param periods_per_year: number of periods in a year.
    :return: ``std(r) * sqrt(periods_per_year)``; ``0.0`` for a constant series; None for fewer than
        2 periods.
    """
    ppy = _check_ppy(periods_per_year)
    r = _as_1d(returns, "returns")
    if r.size < 2:
        return None
    if _is_constant(r):
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        return _finite_or_none(np.std(r, ddof=1) * math.sqrt(ppy))


def sharpe(returns: ArrayLike, periods_per_year: float = 252, risk_free: float = 0.0) -> float | None:
    """Annualised Sharpe ratio.

    :param returns: simple per-period returns.
    :param periods_per_year: number of periods in a year.
    :param risk_free: risk-free return *per period* (not per year), subtracted from every return.
    :return: ``mean(excess) / std(excess, ddof=1) * sqrt(periods_per_year)``; None for fewer than
        2 periods or zero variance.
    """
    ppy = _check_ppy(periods_per_year)
    rf = _check_rf(risk_free)
    excess = _as_1d(returns, "returns") - rf
    if excess.size < 2 or _is_constant(excess):
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        std = np.std(excess, ddof=1)
        if not std > 0:
            return None
        return _finite_or_none(np.mean(excess) / std * math.sqrt(ppy))


def sortino(returns: ArrayLike, periods_per_year: float = 252, risk_free: float = 0.0) -> float | None:
    """Annualised Sortino ratio.

    The downside deviation is ``sqrt(mean(min(excess, 0) ** 2))`` over *all* periods (periods above the
    target count as zero downside), the usual definition.

    :param returns: simple per-period returns.
    :param periods_per_year: number of periods in a year.
    :param risk_free: target / risk-free return per period.
    :return: ``mean(excess) / downside_deviation * sqrt(periods_per_year)``; None for fewer than 2 periods,
        zero variance, or no period below the target (no downside).
    """
    ppy = _check_ppy(periods_per_year)
    rf = _check_rf(risk_free)
    excess = _as_1d(returns, "returns") - rf
    if excess.size < 2 or _is_constant(excess):
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        downside = np.minimum(excess, 0.0)
        dd = math.sqrt(float(np.mean(downside * downside)))
        if not dd > 0:
            return None
        return _finite_or_none(np.mean(excess) / dd * math.sqrt(ppy))


def max_drawdown(returns: ArrayLike | None = None, *, equity: ArrayLike | None = None) -> float | None:
    """Largest peak-to-trough loss, as a positive fraction of the peak.

    Give exactly one of ``returns`` (the curve then starts at 1.0 before the first period, so an
    immediate loss counts) or ``equity``.

    :param returns: simple per-period returns.
    :param equity: equity curve, strictly positive.
    :return: a value in ``[0, 1]``: ``0.0`` when the curve never falls below a previous peak, ``1.0`` for a
        total (or worse, with leverage/shorting) loss; None for empty input (no returns or fewer than two
        equity points).
    """
    if (returns is None) == (equity is None):
        raise ValueError("give exactly one of returns or equity")
    if equity is not None:
        eq = _as_1d(equity, "equity")
        if eq.size and np.any(eq <= 0):
            raise ValueError("equity must be strictly positive")
        if eq.size < 2:
            return None
    else:
        r = _as_1d(returns, "returns")
        if r.size == 0:
            return None
        eq = _equity_curve(r)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        peak = np.maximum.accumulate(eq)
        dd = 1.0 - eq / peak
        # Shorting can push equity to or below zero (dd >= 1); the loss is then total, not "more than total".
        # An overflowed (inf) curve gives nan here; treat as no drawdown information.
        dd = dd[np.isfinite(dd)]
    if dd.size == 0:
        return None
    return float(min(max(float(np.max(dd)), 0.0), 1.0))


def calmar(returns: ArrayLike, periods_per_year: float = 252) -> float | None:
    """Calmar ratio: CAGR divided by maximum drawdown.

    :param returns: simple per-period returns.
    :param periods_per_year: number of periods in a year.
    :return: ``cagr / max_drawdown``; None when either is undefined or there is no drawdown.
    """
    growth = cagr(returns, periods_per_year)
    mdd = max_drawdown(returns)
    if growth is None or mdd is None or mdd <= 0:
        return None
    return _finite_or_none(growth / mdd)


def n_trades(positions: ArrayLike, initial_position: float = 0.0) -> int | None:
    """Number of position changes.

    :param positions: the position held over each period (e.g. -1, 0, +1).
    :param initial_position: the position before the first period. With the default (flat), opening a
        position in the first period counts as a trade. A reversal (long -> short) counts as one change.
    :return: the count, or None for an empty series.
    """
    p = _as_1d(positions, "positions")
    if p.size == 0:
        return None
    prev = np.concatenate(([float(initial_position)], p[:-1]))
    return int(np.count_nonzero(p != prev))


def win_rate(returns: ArrayLike, positions: ArrayLike | None = None) -> float | None:
    """Fraction of winning periods among the periods spent in the market.

    :param returns: per-period returns (aligned with ``positions``: ``returns[t]`` was earned while
        holding ``positions[t]``).
    :param positions: position per period. When None, periods with a nonzero return stand in for
        "in the market".
    :return: ``count(r > 0) / count(in market)``, or None when no period was in the market.
    """
    r = _as_1d(returns, "returns")
    if positions is None:
        active = r != 0
    else:
        p = _as_1d(positions, "positions")
        if p.size != r.size:
            raise ValueError(f"positions has {p.size} values but returns has {r.size}")
        active = p != 0
    n_active = int(np.count_nonzero(active))
    if n_active == 0:
        return None
    return float(np.count_nonzero(r[active] > 0)) / n_active


def exposure(positions: ArrayLike) -> float | None:
    """Fraction of periods with a nonzero position.

    :param positions: position per period.
    :return: a value in ``[0, 1]``, or None for an empty series.
    """
    p = _as_1d(positions, "positions")
    if p.size == 0:
        return None
    return float(np.count_nonzero(p)) / p.size


def trading_metrics(
    returns: ArrayLike | None = None,
    *,
    equity: ArrayLike | None = None,
    positions: ArrayLike | None = None,
    periods_per_year: float = 252,
    risk_free: float = 0.0,
) -> dict[str, float | None]:
    """All trading metrics of one series, as a JSON-friendly dictionary.

    :param returns: simple per-period returns. Give this or ``equity``, not both.
    :param equity: equity curve (strictly positive); its returns are ``returns_from_equity(equity)``.
    :param positions: optional position per *return* period (same length as the returns); without it
        ``n_trades`` and ``exposure`` are None and ``win_rate`` counts periods with a nonzero return.
    :param periods_per_year: annualisation factor, recorded in the output.
    :param risk_free: risk-free return per period for Sharpe and Sortino.
    :return: a dict with the keys of :data:`METRIC_KEYS`; values are floats/ints or None (never NaN/inf).
    :raises ValueError: on bad arguments (both or neither series given, mismatched lengths, non-finite
        values, non-positive equity or ``periods_per_year``).
    """
    ppy = _check_ppy(periods_per_year)
    _check_rf(risk_free)
    if returns is not None and equity is not None:
        raise ValueError("give returns or equity, not both")
    if returns is None and equity is None:
        raise ValueError("give returns or equity")
    r = returns_from_equity(equity) if equity is not None else _as_1d(returns, "returns")
    pos = None
    if positions is not None:
        pos = _as_1d(positions, "positions")
        if pos.size != r.size:
            raise ValueError(f"positions has {pos.size} values but there are {r.size} return periods")
    # Keep the caller's int (e.g. 252) as an int in the record; floats stay floats.
    recorded_ppy: float = periods_per_year if isinstance(periods_per_year, int) else ppy
    return {
        "total_return": total_return(r),
        "cagr": cagr(r, ppy),
        "volatility": volatility(r, ppy),
        "sharpe": sharpe(r, ppy, risk_free),
        "sortino": sortino(r, ppy, risk_free),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar(r, ppy),
        "n_trades": n_trades(pos) if pos is not None else None,
        "win_rate": win_rate(r, pos),
        "exposure": exposure(pos) if pos is not None else None,
        "periods_per_year": recorded_ppy,
        "n_periods": int(r.size),
    }
