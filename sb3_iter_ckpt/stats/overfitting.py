"""How far to believe a backtest: the probabilistic and deflated Sharpe ratios and the probability of
backtest overfitting.

Pure code (numpy and the standard library's :class:`statistics.NormalDist`; no scipy at runtime).
Every Sharpe ratio here is **per period** (``mean / std`` of the returns, ``ddof=1``), never annualised:
the statistics below are stated in per-period units in the papers.

* :func:`probabilistic_sharpe_ratio` -- Bailey, D. H. and López de Prado, M. (2012), "The Sharpe Ratio
  Efficient Frontier", *Journal of Risk* 15(2). The probability that the true Sharpe ratio exceeds a
  benchmark, given the sample's length, skewness and kurtosis.
* :func:`deflated_sharpe_ratio` -- Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe
  Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality", *Journal of Portfolio
  Management* 40(5). The PSR against the Sharpe ratio the best of ``N`` unskilled trials is expected to
  reach by luck.
* :func:`probability_of_backtest_overfitting` -- Bailey, D. H., Borwein, J., López de Prado, M. and
  Zhu, Q. J. (2017), "The Probability of Backtest Overfitting", *Journal of Computational Finance*
  20(4). Combinatorially symmetric cross-validation (CSCV): how often the strategy that is best
  in-sample ranks at or below the median out-of-sample.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.stats.metrics import CONSTANT_RTOL as _CONSTANT_RTOL
from sb3_iter_ckpt.stats.metrics import as_1d, is_constant

__all__ = [
    "EULER_GAMMA",
    "LOGIT_HISTOGRAM_BINS",
    "LOGIT_QUANTILES",
    "BacktestOverfitting",
    "deflated_sharpe_ratio",
    "expected_max_sharpe_ratio",
    "logit_histogram",
    "logit_summary",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "sharpe_ratio",
    "walk_forward_efficiency",
]

#: The Euler–Mascheroni constant γ used by the expected maximum Sharpe ratio of the DSR.
EULER_GAMMA = 0.5772156649015329

#: Combinations above this many are refused: CSCV would run for minutes and hold gigabytes
#: (16 partitions give 12,870; 22 give 705,432; 24 would give 2,704,156).
MAX_COMBINATIONS = 1_000_000

#: Bins of the CSCV logit histogram at most (:func:`logit_histogram`; 16 partitions give 12,870 logits).
LOGIT_HISTOGRAM_BINS = 40

#: The quantiles of the CSCV logits a summary gives (:func:`logit_summary`).
LOGIT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

# Same rule as sb3_iter_ckpt.stats.metrics: a series whose spread is within 1e-12 of its magnitude is constant
# (rounding would otherwise turn a flat series into a Sharpe ratio of 1e15).
_NORMAL = NormalDist()


def _returns(returns: Any, name: str = "returns") -> np.ndarray:
    """``returns`` as a finite 1-D float64 array of at least 2 values, or a CheckpointError."""
    try:
        arr = as_1d(returns, name)  # the same check as every trading metric
    except ValueError as exc:
        raise CheckpointError(f"{exc}; pass one finite series") from exc
    if arr.size < 2:
        raise CheckpointError(f"{name} needs at least 2 values to estimate a Sharpe ratio, got {arr.size}")
    return arr


def _finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CheckpointError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _moments(arr: np.ndarray) -> tuple[float, float, float] | None:
    """(Sharpe with ``ddof=1``, population skewness, population non-excess kurtosis); None if constant."""
    if is_constant(arr):
        return None
    dev = arr - arr.mean()
    m2 = float(np.mean(dev**2))
    if not m2 > 0:
        return None
    std = math.sqrt(m2 * arr.size / (arr.size - 1))
    skew = float(np.mean(dev**3)) / m2**1.5
    kurt = float(np.mean(dev**4)) / m2**2
    return float(arr.mean()) / std, skew, kurt


def sharpe_ratio(returns: Any) -> float | None:
    """Per-period Sharpe ratio: ``mean(returns) / std(returns, ddof=1)`` (no annualisation, no risk-free).

    :param returns: simple per-period returns (list, array or pandas Series), at least 2 finite values.
    :return: the ratio; None when the returns are constant (zero variance).
    :raises CheckpointError: for fewer than 2 values or NaN/infinite values.
    """
    moments = _moments(_returns(returns))
    return None if moments is None else moments[0]


def _psr(sr: float, skew: float, kurt: float, n: int, benchmark: float) -> float | None:
    denominator = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not denominator > 0:
        return None
    z = (sr - benchmark) * math.sqrt(n - 1) / math.sqrt(denominator)
    if not math.isfinite(z):
        return None
    return min(1.0, max(0.0, _NORMAL.cdf(z)))


def probabilistic_sharpe_ratio(returns: Any, benchmark: float = 0.0) -> float | None:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient Frontier").

    The probability that the true per-period Sharpe ratio exceeds ``benchmark``, given the estimate
    ``ŜR`` from ``T`` returns with population skewness ``γ₃`` and (non-excess) kurtosis ``γ₄``::

        PSR(SR*) = Φ( (ŜR − SR*) · √(T − 1) / √(1 − γ₃·ŜR + (γ₄ − 1)/4 · ŜR²) )

    ``ŜR = mean / std`` (``ddof=1``); ``γ₃`` and ``γ₄`` are the biased sample moments, as
    ``scipy.stats.skew(r)`` and ``scipy.stats.kurtosis(r, fisher=False)``.

    :param returns: simple per-period returns, at least 2 finite values.
    :param benchmark: the Sharpe ratio to beat, per period (not annualised).
    :return: a probability in [0, 1]; None when the returns are constant or the denominator is not
        positive (a degenerate two-valued sample can make it zero).
    :raises CheckpointError: for fewer than 2 returns, NaN/infinite returns or a non-finite benchmark.
    """
    arr = _returns(returns)
    benchmark = _finite_number("benchmark", benchmark)
    moments = _moments(arr)
    if moments is None:
        return None
    return _psr(*moments, arr.size, benchmark)


def expected_max_sharpe_ratio(n_trials: int, trials_variance: float) -> float:
    """The Sharpe ratio the best of ``n_trials`` unskilled trials is expected to reach by luck (the DSR's ``SR₀``).

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", equation for ``SR₀``::

        SR₀ = √V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

    with ``V`` the variance of the trials' Sharpe ratios, ``N`` the number of trials and ``γ`` the
    Euler–Mascheroni constant. ``N = 1`` gives 0 (one trial is not a selection; ``Φ⁻¹(0)`` is −∞).

    :param n_trials: number of independent trials the result was selected from (>= 1).
    :param trials_variance: variance of the trials' per-period Sharpe ratios (>= 0).
    :return: ``SR₀``, per period.
    :raises CheckpointError: for ``n_trials < 1`` or a negative or non-finite variance.
    """
    if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 1:
        raise CheckpointError(f"n_trials must be an integer >= 1 (the number of trials compared), got {n_trials!r}")
    variance = _finite_number("trials_variance", trials_variance)
    if variance < 0:
        raise CheckpointError(f"trials_variance must be >= 0 (a variance of Sharpe ratios), got {trials_variance!r}")
    n = int(n_trials)
    if n == 1 or variance == 0:
        return 0.0
    p1, p2 = 1.0 / n, 1.0 / (n * math.e)
    if not p2 > 0:
        raise CheckpointError(f"n_trials={n} is too large to evaluate; pass at most 10**300")
    # Φ⁻¹(1 − p) = −Φ⁻¹(p): exact for tiny p, where 1 − p would round to 1.
    quantile = (1.0 - EULER_GAMMA) * -_NORMAL.inv_cdf(p1) + EULER_GAMMA * -_NORMAL.inv_cdf(p2)
    return math.sqrt(variance) * quantile


def deflated_sharpe_ratio(returns: Any, n_trials: int, trials_variance: float) -> float | None:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio").

    ``DSR = PSR(SR₀)``, the :func:`probabilistic_sharpe_ratio` of ``returns`` against
    :func:`expected_max_sharpe_ratio` ``(n_trials, trials_variance)``: the probability that the selected
    strategy's true Sharpe ratio beats what the best of ``n_trials`` unskilled trials would show. With
    ``n_trials=1`` (or a zero variance) it is the PSR against 0.

    The formula assumes independent trials; candidates that differ only by seed are correlated, so
    their DSR is a conservative haircut rather than an exact probability.

    :param returns: the selected strategy's per-period returns, at least 2 finite values.
    :param n_trials: number of trials (candidates) the strategy was chosen from, >= 1.
    :param trials_variance: variance (``ddof=1``) of the trials' per-period Sharpe ratios, >= 0.
    :return: a probability in [0, 1]; None when the returns are constant or the PSR's denominator is not
        positive.
    :raises CheckpointError: for bad returns, ``n_trials < 1`` or a negative or non-finite variance.
    """
    arr = _returns(returns)
    sr0 = expected_max_sharpe_ratio(n_trials, trials_variance)
    moments = _moments(arr)
    if moments is None:
        return None
    return _psr(*moments, arr.size, sr0)


def walk_forward_efficiency(forward_return: float | None, selection_return: float | None) -> float | None:
    """Walk-forward efficiency: annualised forward return over annualised selection return.

    Around 1 when the forward period kept what selection promised, near 0 or negative when it did not.

    :param forward_return: annualised return on the unseen (test) period.
    :param selection_return: annualised return on the period the model was chosen on.
    :return: the ratio; None when either is None or the selection return is not positive (the ratio
        would have no meaning).
    :raises CheckpointError: for a non-finite return.
    """
    if forward_return is None or selection_return is None:
        return None
    forward = _finite_number("forward_return", forward_return)
    selection = _finite_number("selection_return", selection_return)
    if not selection > 0:
        return None
    return forward / selection


@dataclass(frozen=True)
class BacktestOverfitting:
    """The outcome of CSCV (:func:`probability_of_backtest_overfitting`).

    :param pbo: share of the combinations whose in-sample best strategy has a logit ``λ ≤ 0``
        out-of-sample (ranks at or below the median), in [0, 1].
    :param logits: ``λ`` of every combination, in the order of ``itertools.combinations``.
    :param n_combinations: number of in-sample/out-of-sample splits, ``C(n_partitions, n_partitions/2)``.
    :param n_partitions: number of blocks the rows were split into.
    :param n_strategies: number of strategies (columns).
    :param rows_used: rows used, ``n_partitions * (T // n_partitions)``; the last ``T % n_partitions``
        rows are dropped.
    """

    pbo: float
    logits: tuple[float, ...]
    n_combinations: int
    n_partitions: int
    n_strategies: int
    rows_used: int

    def to_dict(self, logits: bool = False) -> dict[str, Any]:
        """JSON-friendly: ``pbo``, the sizes and ``logit_summary`` (:func:`logit_summary`: what a reader of the
        logits looks at, a few hundred bytes where the logits themselves are 12,870 numbers with 16 partitions).

        :param logits: add ``logits``, the list of every combination's logit, too.
        """
        out: dict[str, Any] = {
            "pbo": self.pbo,
            "n_combinations": self.n_combinations,
            "n_partitions": self.n_partitions,
            "n_strategies": self.n_strategies,
            "rows_used": self.rows_used,
            "logit_summary": logit_summary(self.logits),
        }
        if logits:
            out["logits"] = list(self.logits)
        return out


def logit_histogram(logits: Any, max_bins: int = LOGIT_HISTOGRAM_BINS) -> list[tuple[float, float, int]]:
    """The CSCV logits counted into bins: ``(left, right, count)`` per bin, bins ``(left, right]``.

    Up to ``max_bins`` distinct values get a bin each (``left == right``: exactly that value; with ``N``
    strategies the logits take at most ``2N - 1`` values, so this is the usual case); more are counted in
    ``max_bins`` equal bins symmetric around 0, so 0 is an edge and a bin lies wholly on the overfit side
    (``λ ≤ 0``) or wholly on the other. Values that are not finite are left out.

    :param logits: The logits (up to 12,870 with 16 partitions).
    :param max_bins: The most bins (even).
    :return: The bins in increasing order; empty for no logits.
    """
    values = np.asarray(logits, dtype=np.float64)
    values = values[np.isfinite(values)]
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size <= max_bins:
        return [(float(v), float(v), int(c)) for v, c in zip(distinct, counts, strict=True)]
    half = max_bins // 2
    top = float(np.max(np.abs(values)))
    edges = np.linspace(-top, top, 2 * half + 1)
    index = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, 2 * half - 1)
    binned = np.bincount(index, minlength=2 * half)
    return [(float(edges[k]), float(edges[k + 1]), int(binned[k])) for k in range(2 * half)]


def logit_summary(logits: Any) -> dict[str, Any]:
    """What a summary keeps of the CSCV logits instead of the logits themselves.

    :param logits: The logits.
    :return: ``count`` (the logits), ``quantiles`` (``p05``, ``p25``, ``p50``, ``p75``, ``p95``: the percentiles
        of :data:`LOGIT_QUANTILES`, numpy's linear interpolation; None without logits) and ``histogram``:
        ``edges`` (``[left, right]`` per bin) and ``counts``, the bins of :func:`logit_histogram`.
    """
    values = np.asarray(logits, dtype=np.float64)
    bins = logit_histogram(values)
    points = np.quantile(values, LOGIT_QUANTILES) if values.size else [None] * len(LOGIT_QUANTILES)
    return {
        "count": int(values.size),
        "quantiles": {
            f"p{round(q * 100):02d}": None if x is None else float(x)
            for q, x in zip(LOGIT_QUANTILES, points, strict=True)
        },
        "histogram": {"edges": [[lo, hi] for lo, hi, _ in bins], "counts": [n for _, _, n in bins]},
    }


def _matrix(matrix: Any) -> np.ndarray:
    try:
        if hasattr(matrix, "to_numpy"):
            matrix = matrix.to_numpy(dtype=np.float64)
        arr = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"matrix must be a 2-D table of numbers (periods x strategies): {exc}") from exc
    if arr.ndim != 2:
        raise CheckpointError(f"matrix must be 2-D (periods x strategies), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CheckpointError("matrix contains NaN or infinite returns; align the strategies on common periods first")
    return arr


def _half_sharpe(
    ind: np.ndarray,
    sums: np.ndarray,
    squares: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    shift: np.ndarray,
    rows: int,
) -> np.ndarray:
    """Per-period Sharpe of every strategy over the blocks selected by each row of ``ind``; −inf if undefined."""
    s1 = ind @ sums  # combinations x strategies: sum of the shifted returns over the selected blocks
    s2 = ind @ squares
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (s2 - s1 * s1 / rows) / (rows - 1)
        sharpe = (shift + s1 / rows) / np.sqrt(variance)
    undefined = ~(variance > 0) | ~np.isfinite(sharpe)
    # A half can be flat only where one of its blocks is nearly flat (twice the tolerance covers a block
    # whose own magnitude is below the half's): test just those strategies, by the half's exact range.
    spread, magnitude = highs - lows, np.maximum(np.abs(highs), np.abs(lows))
    suspects = np.flatnonzero(np.any(spread <= 2 * _CONSTANT_RTOL * magnitude, axis=0))
    if suspects.size:
        lo = np.full((len(ind), suspects.size), np.inf)
        hi = np.full((len(ind), suspects.size), -np.inf)
        for block in range(ind.shape[1]):
            chosen = ind[:, block, None] > 0
            lo = np.where(chosen, np.minimum(lo, lows[block, suspects]), lo)
            hi = np.where(chosen, np.maximum(hi, highs[block, suspects]), hi)
        undefined[:, suspects] |= (hi - lo) <= _CONSTANT_RTOL * np.maximum(np.abs(hi), np.abs(lo))
    return np.where(undefined, -np.inf, sharpe)


def _partition(arr: np.ndarray, n_partitions: Any) -> tuple[int, int]:
    """Check the CSCV arguments; return (number of blocks, rows per block)."""
    if (
        isinstance(n_partitions, bool)
        or not isinstance(n_partitions, numbers.Integral)
        or n_partitions < 2
        or n_partitions % 2
    ):
        raise CheckpointError(f"n_partitions must be an even integer >= 2 (16 in the paper), got {n_partitions!r}")
    n_blocks = int(n_partitions)
    half = n_blocks // 2
    n_combinations = math.comb(n_blocks, half)
    if n_combinations > MAX_COMBINATIONS:
        raise CheckpointError(
            f"n_partitions={n_blocks} gives {n_combinations:,} combinations; use at most 22 partitions (16 is usual)"
        )
    periods, n_strategies = arr.shape
    if n_strategies < 2:
        raise CheckpointError(f"PBO compares strategies: the matrix needs at least 2 columns, got {n_strategies}")
    if periods < n_blocks:
        raise CheckpointError(
            f"the matrix has {periods} rows but n_partitions={n_blocks} needs at least one row per block; "
            "use fewer partitions or a longer period"
        )
    block_rows = periods // n_blocks
    rows = half * block_rows
    if rows < 2:
        raise CheckpointError(
            f"the matrix has {periods} rows: each half of n_partitions={n_blocks} blocks would hold {rows} row, "
            "too few for a Sharpe ratio; pass at least 4 rows"
        )
    return n_blocks, block_rows


def _cscv_logits(arr: np.ndarray, n_blocks: int, block_rows: int) -> np.ndarray:
    """The logit of the in-sample winner's out-of-sample rank, for every half/half split of the blocks."""
    n_strategies = arr.shape[1]
    half = n_blocks // 2
    rows = half * block_rows
    n_combinations = math.comb(n_blocks, half)
    used = arr[: n_blocks * block_rows].reshape(n_blocks, block_rows, n_strategies)
    # Shift each column by one of its own values: sums of squares then lose no precision to a large mean,
    # and a constant column stays exactly constant.
    shift = used[0, 0].copy()
    shifted = used - shift
    sums, squares = shifted.sum(axis=1), (shifted * shifted).sum(axis=1)
    lows, highs = used.min(axis=1), used.max(axis=1)
    # In-sample indicator rows, in itertools.combinations order.
    combos = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n_blocks), half)), dtype=np.intp)
    ind = np.zeros((n_combinations, n_blocks))
    ind[np.repeat(np.arange(n_combinations), half), combos] = 1.0
    logits = np.empty(n_combinations)
    # Chunks of combinations keep the (combinations x strategies) work arrays near 16 MB each.
    chunk = max(1, 2_000_000 // n_strategies)
    for start in range(0, n_combinations, chunk):
        part = ind[start : start + chunk]
        is_sharpe = _half_sharpe(part, sums, squares, lows, highs, shift, rows)
        oos_sharpe = _half_sharpe(1.0 - part, sums, squares, lows, highs, shift, rows)
        best = np.argmax(is_sharpe, axis=1)  # the first index on ties, and when every value is -inf
        chosen = oos_sharpe[np.arange(len(part)), best][:, None]
        rank = np.sum(oos_sharpe < chosen, axis=1) + (np.sum(oos_sharpe == chosen, axis=1) + 1) / 2.0
        omega = rank / (n_strategies + 1)
        logits[start : start + chunk] = np.log(omega / (1.0 - omega))
    return logits


def probability_of_backtest_overfitting(matrix: Any, n_partitions: int = 16) -> BacktestOverfitting:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017).

    ``matrix`` holds the per-period returns of ``N`` strategies (columns) over the same ``T`` periods
    (rows). The rows are cut into ``S = n_partitions`` contiguous blocks of ``T // S`` rows (the last
    ``T % S`` rows are dropped). For each of the ``C(S, S/2)`` ways to pick ``S/2`` blocks as the
    in-sample set (the other blocks, in time order, are the out-of-sample set):

    1. the in-sample best strategy ``n*`` is the one with the highest per-period Sharpe ratio
       (``mean / std``, ``ddof=1``) over the in-sample rows;
    2. its out-of-sample relative rank is ``ω = rank / (N + 1)``, with ranks ``1..N`` in ascending order
       of the out-of-sample Sharpe ratios (``N`` = best; tied values get the average of their ranks);
    3. its logit is ``λ = ln(ω / (1 − ω))``.

    ``pbo`` is the share of combinations with ``λ ≤ 0``: how often the in-sample winner is at or below
    the median out of sample. Near 0: selection carries over; about 0.5: selection is a coin toss;
    above 0.5: the in-sample winner tends to lose.

    Ties and undefined values (decided here; the paper does not cover them): the first strategy (lowest
    column) wins an in-sample tie. A strategy whose returns are constant over a half (zero variance,
    same rule as :func:`sharpe_ratio`) has no Sharpe ratio there: it never wins in-sample unless every
    strategy is undefined (then the first one is taken), and it ranks lowest out-of-sample (tied with the
    other undefined ones, average rank).

    :param matrix: periods x strategies of per-period returns (2-D array, nested lists or a DataFrame).
    :param n_partitions: even number of blocks ``S`` (>= 2); 16 in the paper. At most
        ``MAX_COMBINATIONS`` combinations are allowed (``S <= 22``).
    :return: a :class:`BacktestOverfitting`.
    :raises CheckpointError: for fewer than 2 strategies, an odd or too large ``n_partitions``, fewer
        rows than partitions, or NaN/infinite returns.
    """
    arr = _matrix(matrix)
    n_blocks, block_rows = _partition(arr, n_partitions)
    logits = _cscv_logits(arr, n_blocks, block_rows)
    n_combinations, n_strategies = len(logits), arr.shape[1]
    return BacktestOverfitting(
        pbo=float(np.mean(logits <= 0)),
        logits=tuple(float(x) for x in logits),
        n_combinations=n_combinations,
        n_partitions=n_blocks,
        n_strategies=n_strategies,
        rows_used=n_blocks * block_rows,
    )
