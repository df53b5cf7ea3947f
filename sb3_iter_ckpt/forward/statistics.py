"""The statistics of a run: selection against forward (walk-forward efficiency), the deflated Sharpe ratio
of the stitched curve and the PBO of the candidates, and :func:`forward_report`, everything the ``forward``
command shows."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.forward.stitching import StitchedForward, stitch
from sb3_iter_ckpt.stats.metrics import cagr
from sb3_iter_ckpt.stats.overfitting import (
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
    walk_forward_efficiency,
)

#: Rows each CSCV block must hold at least (a half then has a Sharpe ratio to rank).
MIN_BLOCK_ROWS = 2


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
    n_trials: int | None = None,
    trials_variance: float | None = None,
    logits: bool = False,
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
    :param n_trials: the trials you compared to find this strategy, when they were more than the candidates
        given (a hand-written loop's configurations tried by hand, say): the DSR deflates by them. None: the
        candidates given (at least 1).
    :param trials_variance: the variance of those trials' per-period (not annualized) Sharpe ratios, which
        the DSR's expected maximum scales with (Bailey & López de Prado 2014); None: the candidates'. Naming
        more trials than two candidates with a Sharpe ratio needs it: without it the DSR is not computed.
    :param logits: ``pbo`` with every CSCV logit too (``logits``: 12,870 with 16 blocks), not only ``logit_summary``.
    :return: JSON-ready: ``deflated_sharpe`` (a probability or None) with ``deflated_sharpe_reason`` (None
        when computed), ``n_trials``, ``trials_named`` (True when ``n_trials`` was given), ``trials_variance``,
        ``candidate_sharpes``, ``pbo`` (:meth:`~sb3_iter_ckpt.stats.overfitting.BacktestOverfitting.to_dict`:
        ``pbo``, ``n_partitions``, ``logit_summary``...; or None) with ``pbo_reason``.
    :raises CheckpointError: when the candidates' series differ in length (they must cover the same periods).
    """
    series = {name: np.asarray(r, dtype=np.float64) for name, r in candidate_returns.items()}
    if len({len(r) for r in series.values()}) > 1:
        raise CheckpointError("the candidates' forward returns cover different periods; stitch them over the same rows")
    sharpes = {name: _sharpe_or_none(r) for name, r in series.items()}
    defined = [s for s in sharpes.values() if s is not None]
    trials_named = n_trials is not None
    n_trials = max(1, len(series)) if n_trials is None else _named_trials(n_trials, len(series))
    variance = float(np.var(defined, ddof=1)) if len(defined) >= 2 else 0.0
    if trials_variance is not None:
        variance = _named_variance(trials_variance)
    missing = trials_named and trials_variance is None and n_trials > 1 and len(defined) < 2
    dsr, dsr_reason = _dsr(chosen_returns, n_trials, variance, len(defined) if missing else None)
    pbo, pbo_reason = _pbo(series, n_partitions, logits)
    return {
        "deflated_sharpe": dsr,
        "deflated_sharpe_reason": dsr_reason,
        "n_trials": n_trials,
        "trials_named": trials_named,
        "trials_variance": variance,
        "candidate_sharpes": sharpes,
        "pbo": pbo,
        "pbo_reason": pbo_reason,
    }


def _dsr(
    chosen_returns: Any, n_trials: int, variance: float, no_variance_from: int | None
) -> tuple[float | None, str | None]:
    """The DSR or why not; ``no_variance_from``: the candidates that could not estimate the named trials' variance."""
    if no_variance_from is not None:
        return None, (
            f"{n_trials} trials were named, but not the variance of their Sharpe ratios (trials_variance), which "
            f"the deflation scales with; {no_variance_from} candidate(s) with a Sharpe ratio cannot estimate it"
        )
    try:
        dsr = deflated_sharpe_ratio(np.asarray(chosen_returns, dtype=np.float64), n_trials, variance)
    except CheckpointError as exc:
        return None, str(exc)
    if dsr is None:
        return None, "the forward returns have zero variance (always flat?): no Sharpe ratio to deflate"
    return dsr, None


def _named_variance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise CheckpointError(
            f"trials_variance must be a finite number >= 0 (a variance of Sharpe ratios), got {value!r}"
        )
    return float(value)


def _named_trials(n_trials: Any, n_candidates: int) -> int:
    if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < max(1, n_candidates):
        raise CheckpointError(
            f"n_trials must be an integer >= {max(1, n_candidates)} (the trials compared, the {n_candidates} "
            f"candidate(s) here among them), got {n_trials!r}"
        )
    return int(n_trials)


def _sharpe_or_none(returns: np.ndarray) -> float | None:
    try:
        return sharpe_ratio(returns)
    except CheckpointError:  # fewer than 2 periods
        return None


def _pbo(series: Mapping[str, np.ndarray], n_partitions: int, logits: bool) -> tuple[dict[str, Any] | None, str | None]:
    if len(series) < 2:
        return None, f"PBO compares candidates: it needs at least 2, this run has {len(series)}"
    n_rows = len(next(iter(series.values())))
    blocks = pbo_partitions(n_rows, n_partitions)
    if blocks == 0:
        return None, f"{n_rows} forward periods are too few for PBO: it needs at least {2 * MIN_BLOCK_ROWS}"
    matrix = np.column_stack(list(series.values()))
    return probability_of_backtest_overfitting(matrix, blocks).to_dict(logits), None


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
    n_trials: int | None = None,
    trials_variance: float | None = None,
    logits: bool = False,
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
    :param n_trials: the trials compared, when more than the candidates (see :func:`forward_statistics`).
    :param trials_variance: the variance of those trials' per-period Sharpe ratios (idem).
    :param logits: keep every CSCV logit in ``pbo`` (see :func:`forward_statistics`).
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
    statistics = forward_statistics(
        curve.returns,
        candidates or {"chosen": curve.returns},
        n_partitions=n_partitions,
        n_trials=n_trials,
        trials_variance=trials_variance,
        logits=logits,
    )
    summary = curve.to_dict()
    baseline = summary.pop("baseline")
    return {**comparison, "stitched": summary, "baseline": baseline, **statistics}
