"""The page's data model, plain values and no HTML: what ``collect_report`` reads from a repository.

``ReportData`` is everything the page shows; ``ForwardData`` its forward (out-of-sample) part, built by
``forward_data`` (what a repository keeps) or ``forward_data_from_results`` (the forward results themselves).
``forward_metric`` names the forward metric a selection score is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward import ForwardResult, StitchedForward, forward_report, stitch

#: What every section that needs issue 15's forward evaluation shows until the repository has it.
FORWARD_MISSING = "not available: this run has no forward (out-of-sample) data"


@dataclass(frozen=True)
class IterationRow:
    """One line of the checkpoint table (and one point of the per-iteration charts).

    :param iteration: The walk-forward iteration.
    :param status: ``"model"``, ``"placeholder"``, ``"pruned"`` (model removed, record kept) or ``"unreadable"``.
    :param reason: Why there is no model, or what is wrong with an unreadable record.
    :param score: The selection score (the recorded monitor), or None.
    :param forward_score: The forward (out-of-sample) score: None until issue 15's evaluation exists.
    :param validation: The validation period as ``first..last`` date (empty when not recorded).
    :param timesteps: ``num_timesteps`` of the kept snapshot.
    :param size_bytes: Bytes of the iteration's model files on disk (0 for placeholders and pruned models).
    :param sha256: sha256 of the model zip (of the removed one for a pruned iteration).
    :param created_at: When the iteration was committed.
    :param best: Whether this is the best iteration by the recorded selection.
    """

    iteration: int
    status: str
    reason: str | None = None
    score: float | None = None
    forward_score: float | None = None
    validation: str = ""
    timesteps: int | None = None
    size_bytes: int = 0
    sha256: str | None = None
    created_at: str | None = None
    best: bool = False


@dataclass
class ReportData:
    """Everything the page shows, as plain values; ``render_report`` is its only reader.

    :param experiment: The experiment's name (the root folder's name).
    :param location: The repository root (a path or a URL).
    :param generated_at: When the report was collected (UTC, ISO-8601).
    :param header: ``(label, value)`` lines of the header, in order.
    :param monitor: The selection metric (e.g. ``validation.sharpe``).
    :param mode: ``"max"`` or ``"min"``.
    :param rows: One ``IterationRow`` per iteration, readable or not, in iteration order.
    :param analysis: ``CheckpointRepository.analyze()``'s report, or None when it could not run.
    :param problems: What ``verify()`` found (shown in red); empty when healthy.
    :param notes: What is wrong or missing in the input (no iterations, only placeholders...).
    :param forward: The forward (out-of-sample) results: ``forward_report``'s numbers, the stitched curve per
        period, the candidates' scores; None (or a ``ForwardData`` with only a ``reason``) when there are none.
    :param caveat: What the returns are, said next to every number and curve built from them, when they are
        not what a reader assumes (e.g. realized profit only); None: nothing to say.
    """

    experiment: str
    location: str
    generated_at: str
    header: list[tuple[str, str]]
    monitor: str
    mode: str
    rows: list[IterationRow]
    analysis: dict[str, Any] | None
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    forward: ForwardData | None = None
    caveat: str | None = None


@dataclass(frozen=True)
class ForwardWindow:
    """One test part of the stitched curve: who traded it and where it lies in the curve.

    :param iteration: The walk-forward iteration (window).
    :param candidate: The candidate that traded it (None in a run without candidates).
    :param placeholder: True when the iteration kept no model (it stayed flat).
    :param first: Index in the curve of its first period.
    :param last: Index in the curve of its last period (inclusive).
    """

    iteration: int
    candidate: str | None
    placeholder: bool
    first: int
    last: int


@dataclass(frozen=True)
class ForwardCurve:
    """The stitched forward curve per period, as the page draws it.

    :param x: The date of every period (ISO) when the prices have dates, else its row.
    :param equity: The strategy's equity after every period (1.0 before the first).
    :param drawdown: ``equity / running peak - 1`` (0 or negative), the peak starting at 1.0.
    :param buy_and_hold: Buy-and-hold's equity over the same periods; None when the asset's prices are not known.
    :param windows: The test parts in time order.
    :param buy_and_hold_reason: Why buy-and-hold is not available (when ``buy_and_hold`` is None).
    """

    x: list[Any]
    equity: list[float]
    drawdown: list[float]
    buy_and_hold: list[float] | None
    windows: list[ForwardWindow]
    buy_and_hold_reason: str | None = None

    @property
    def dated(self) -> bool:
        """Whether ``x`` holds dates (else rows)."""
        return bool(self.x) and isinstance(self.x[0], str)


@dataclass(frozen=True)
class ForwardData:
    """What the forward sections of the page show; built by ``forward_data`` or ``forward_data_from_results``.

    :param report: :func:`~sb3_iter_ckpt.forward.forward_report`'s dict (the ``forward --json`` shape), or None.
    :param curve: The stitched curve per period, or None when not given.
    :param candidates: candidate -> iteration -> ``{"placeholder": bool, "metrics": {...}}``: every candidate's
        forward result per window (empty in a run without candidates).
    :param candidate_selection: candidate -> iteration -> its selection score on that window (optional).
    :param reason: Why there is no forward data (when ``report`` is None), shown on the page.
    """

    report: dict[str, Any] | None = None
    curve: ForwardCurve | None = None
    candidates: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    candidate_selection: dict[str, dict[int, float | None]] = field(default_factory=dict)
    reason: str | None = None


def forward_curve(stitched: StitchedForward) -> ForwardCurve:
    """The chart data of a stitched forward curve: equity, drawdown, buy-and-hold and the windows.

    :param stitched: The :class:`~sb3_iter_ckpt.forward.StitchedForward` (from ``stitch`` or read back from
        ``forward_returns.csv``).
    :return: The ``ForwardCurve``.
    """
    equity = np.asarray(stitched.equity, dtype=np.float64)
    assets = stitched.asset_returns
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    windows: list[ForwardWindow] = []
    for k, it in enumerate(stitched.iterations):
        if windows and windows[-1].iteration == it:
            w = windows[-1]
            windows[-1] = ForwardWindow(w.iteration, w.candidate, w.placeholder, w.first, k)
        else:
            windows.append(ForwardWindow(it, stitched.candidates[k], stitched.placeholders[k], k, k))
    return ForwardCurve(
        x=list(stitched.dates) if stitched.dates is not None else list(stitched.rows),
        equity=[float(v) for v in equity],
        drawdown=[float(v) for v in equity / peak - 1.0] if equity.size else [],
        buy_and_hold=None if assets is None else [float(v) for v in np.cumprod(1.0 + np.asarray(assets))],
        windows=windows,
        buy_and_hold_reason=stitched.asset_returns_reason if assets is None else None,
    )


def _candidate_summaries(
    candidate_results: Mapping[str, Sequence[ForwardResult]] | None,
) -> dict[str, dict[int, dict[str, Any]]]:
    return {
        name: {r.iteration: {"placeholder": r.placeholder, "metrics": dict(r.metrics)} for r in results}
        for name, results in (candidate_results or {}).items()
    }


def forward_data(
    report: Mapping[str, Any] | None,
    *,
    stitched: StitchedForward | None = None,
    candidate_results: Mapping[str, Sequence[ForwardResult]] | None = None,
    candidate_selection: Mapping[str, Mapping[int, float | None]] | None = None,
    reason: str | None = None,
) -> ForwardData:
    """The page's forward data from what a repository keeps: the ``forward --json`` dict and the stitched curve.

    :param report: :func:`~sb3_iter_ckpt.forward.forward_report`'s dict, or None when the run has none.
    :param stitched: The stitched curve (``forward_returns.csv`` read back), for the equity and drawdown charts.
    :param candidate_results: candidate -> its forward result of every window (for the candidates' chart).
    :param candidate_selection: candidate -> iteration -> its selection score on that window.
    :param reason: Why there is no forward data (shown on the page when ``report`` is None).
    :return: The ``ForwardData``.
    """
    if report is None:
        return ForwardData(reason=reason or FORWARD_MISSING)
    return ForwardData(
        report=dict(report),
        curve=forward_curve(stitched) if stitched is not None and stitched.rows else None,
        candidates=_candidate_summaries(candidate_results),
        candidate_selection={k: dict(v) for k, v in (candidate_selection or {}).items()},
    )


def forward_data_from_results(
    results: Sequence[ForwardResult],
    prices: Any,
    *,
    selection_scores: Mapping[int, float | None] | None = None,
    selection_returns: Mapping[int, float | None] | None = None,
    candidate_results: Mapping[str, Sequence[ForwardResult]] | None = None,
    candidate_selection: Mapping[str, Mapping[int, float | None]] | None = None,
) -> ForwardData:
    """The page's forward data from the forward results themselves: stitched, then ``forward_report``.

    Never raises for results that do not fit together (a hole, an overlap, other prices): the page then
    says why the forward sections are empty.

    :param results: The chosen model's forward result of every iteration.
    :param prices: The close prices they were evaluated on.
    :param selection_scores: iteration -> the score it was selected on.
    :param selection_returns: iteration -> its annualized selection return (for walk-forward efficiency).
    :param candidate_results: candidate -> its forward result of every iteration (DSR trials, PBO, the
        candidates' chart); None in a run without candidates.
    :param candidate_selection: candidate -> iteration -> its selection score on that window.
    :return: The ``ForwardData``.
    """
    if not results:
        return ForwardData(reason="no forward results: no iteration traded a test part (split with test_size > 0)")
    try:
        curve = stitch(results, prices)
        report = forward_report(
            results,
            prices,
            selection_scores=selection_scores,
            selection_returns=selection_returns,
            candidate_results=candidate_results,
            stitched=curve,
        )
    except CheckpointError as exc:
        return ForwardData(reason=f"the forward results could not be combined: {exc}")
    return forward_data(
        report, stitched=curve, candidate_results=candidate_results, candidate_selection=candidate_selection
    )


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def forward_metric(monitor: str) -> str:
    """The forward metric compared with the selection score: the monitor's own metric when the forward
    results have it (``validation.sharpe`` -> ``sharpe``), else the Sharpe ratio."""
    name = monitor.rsplit(".", 1)[-1]
    return name if name in _FORWARD_METRICS else "sharpe"


_FORWARD_METRICS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate")


def _forward_value(it: Mapping[str, Any], metric: str) -> float | None:
    return _finite((it.get("forward") or {}).get(metric))
