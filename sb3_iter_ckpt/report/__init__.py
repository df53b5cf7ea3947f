"""One self-contained HTML page per experiment: what ran, how each iteration scored, every checkpoint.

The page is built in two steps so that new data adds sections without rewriting either:
``collect_report`` reads the repository into a ``ReportData`` (plain values, no HTML), and
``render_report`` turns a ``ReportData`` into the page. ``write_report`` does both and writes the file.

The page works offline and alone: styles, scripts (a partial plotly.js bundle, vendored in
``sb3_iter_ckpt/report/_vendor``), data and images are inline, so it makes no request when opened. Charts
are Plotly figures built with the ``plotly`` package (the ``report`` extra); with JavaScript off each
chart shows its values as a table and the checkpoint table stays a plain HTML table.
"""

from __future__ import annotations

import contextlib
import html
import importlib.resources
import json
import math
import os
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sb3_iter_ckpt.common.candidates import candidate_scores
from sb3_iter_ckpt.common.record import Checkpoint, parse_record_name, utc_now
from sb3_iter_ckpt.common.version import __version__
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.forward.statistics import forward_report
from sb3_iter_ckpt.forward.stitching import StitchedForward, stitch
from sb3_iter_ckpt.repository import CheckpointRepository, Problem, candidate_forwards
from sb3_iter_ckpt.retention import is_pruned

#: What every section that needs issue 15's forward evaluation shows until the repository has it.
FORWARD_MISSING = "not available: this run has no forward (out-of-sample) data"
#: The walk-forward runner's configuration file at the repository root.
RUN_FILE = "walk_forward.json"
#: A line chart keeps at most this many points; longer series are pre-binned (min and max per bin).
MAX_LINE_POINTS = 4000
#: Bars of the CSCV logit histogram at most (the logits are pre-binned: up to 12,870 values).
MAX_HISTOGRAM_BINS = 40
#: Rows of a chart's no-JavaScript fallback table.
MAX_FALLBACK_ROWS = 500
_BUNDLE = "plotly-cartesian.min.js"
_INSTALL = 'the report needs plotly: pip install "sb3-iter-ckpt[report]"'


# -- the data model ------------------------------------------------------------------------------------------
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
    :param buy_and_hold: Buy-and-hold's equity over the same periods.
    :param windows: The test parts in time order.
    """

    x: list[Any]
    equity: list[float]
    drawdown: list[float]
    buy_and_hold: list[float]
    windows: list[ForwardWindow]

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
        buy_and_hold=[float(v) for v in np.cumprod(1.0 + np.asarray(stitched.asset_returns, dtype=np.float64))],
        windows=windows,
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


# -- collecting -------------------------------------------------------------------------------------------------
def _open(repository: CheckpointRepository | str | os.PathLike[str]) -> CheckpointRepository:
    if isinstance(repository, CheckpointRepository):
        return repository
    return CheckpointRepository(repository if isinstance(repository, str) else Path(repository), sweep=False)


def _verify(repo: CheckpointRepository) -> tuple[list[Problem], list[str]]:
    try:
        problems = repo.verify()
    except (CheckpointError, OSError) as exc:  # e.g. object storage unreachable: say so, never hide it
        return [], [f"verify could not run: {exc}"]
    return problems, [str(p) for p in problems]


def _run_config(repo: CheckpointRepository, notes: list[str]) -> dict[str, Any] | None:
    try:
        run = repo.read_metadata(RUN_FILE)
    except (CheckpointError, OSError) as exc:
        notes.append(f"{RUN_FILE} could not be read ({exc}): the run's configuration is not shown")
        return None
    if run is None:
        notes.append(
            f"no {RUN_FILE}: the data, splitter, algorithm and seed were not recorded "
            "(a repository written by the callback or another training loop)"
        )
        return None
    config = run.get("config")
    return config if isinstance(config, dict) else {}


def _window(ck: Checkpoint) -> dict[str, Any]:
    window = (ck.record.get("metadata") or {}).get("window")
    return window if isinstance(window, dict) else {}


def _row(ck: Checkpoint, monitor: str, best: int | None) -> IterationRow:
    window = _window(ck)
    validation = ""
    if window.get("val_start_time") or window.get("val_end_time"):
        validation = f"{str(window.get('val_start_time', ''))[:10]}..{str(window.get('val_end_time', ''))[:10]}"
    if is_pruned(ck):  # the record keeps the removed model's hash
        model = ((ck.record.get("pruned") or {}).get("artifacts") or {}).get("model")
        status, sha = "pruned", model.get("sha256") if isinstance(model, dict) else None
    else:
        status, sha = ("model" if ck.has_model else "placeholder"), ck.sha256
    return IterationRow(
        iteration=ck.iteration,
        status=status,
        reason=None if status == "model" else ck.reason,
        score=ck.score(monitor) if status != "placeholder" else None,
        validation=validation,
        timesteps=ck.timesteps,
        size_bytes=ck.size_bytes if ck.has_model else 0,
        sha256=sha,
        created_at=ck.created_at,
        best=ck.iteration == best,
    )


def _rows(cks: Sequence[Checkpoint], problems: Sequence[Problem], monitor: str, best: int | None) -> list[IterationRow]:
    rows = {ck.iteration: _row(ck, monitor, best) for ck in cks}
    for p in problems:  # a record list() could not read: still one row, saying why
        parsed = parse_record_name(p.file)
        if parsed is not None and parsed[0] not in rows:
            rows[parsed[0]] = IterationRow(iteration=parsed[0], status="unreadable", reason=p.message)
    return [rows[i] for i in sorted(rows)]


def _span(values: Sequence[Any], width: int = 100) -> str:
    found = sorted(str(v)[:width] for v in values if v)
    return f"{found[0]} … {found[-1]}" if found else "not recorded"


def _header(
    repo: CheckpointRepository,
    config: dict[str, Any] | None,
    cks: Sequence[Checkpoint],
    monitor: str,
    mode: str,
    forward: ForwardData | None = None,
) -> list[tuple[str, str]]:
    missing = "not recorded"
    c = config or {}
    data = f"{c['n_prices']} rows" if c.get("n_prices") is not None else missing
    if c.get("data_sha256"):
        data += f", sha256 {str(c['data_sha256'])[:12]}…"
    bounds = [_window(ck).get(k) for ck in cks for k in ("train_start_time", "val_end_time")]
    split = c.get("splitter")
    splitter = ", ".join(f"{k} {v}" for k, v in split.items() if v is not None) if isinstance(split, dict) else missing
    algos = sorted({str(ck.record["algorithm"]) for ck in cks if ck.record.get("algorithm")})
    algo = ", ".join(x for x in [str(c.get("algo") or ""), *algos] if x) or missing
    latest = next((v for ck in reversed(cks) if isinstance(v := ck.record.get("versions"), dict)), {})
    seed = f"{c['seed']} (iteration i trains with seed + i)" if c.get("seed") is not None else missing
    budget = f"{c['total_timesteps']} timesteps per iteration" if c.get("total_timesteps") else missing
    return [
        ("experiment", str(repo.root.name)),
        ("repository", str(repo.root)),
        ("data", data),
        ("dates used by the windows", _span(bounds, 10)),
        ("splitter", splitter),
        ("algorithm(s)", algo),
        ("candidates", _candidates_line(forward)),
        ("seed", seed),
        ("training budget", budget),
        ("selection", f"{monitor} ({mode})"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(latest.items())) or missing),
        ("ran (first … last commit)", _span([ck.created_at for ck in cks], 19)),
    ]


def _input_notes(rows: Sequence[IterationRow]) -> list[str]:
    if not rows:
        return ["this repository has no committed iteration (no record under checkpoints/): nothing to show yet"]
    notes = []
    unreadable = [r.iteration for r in rows if r.status == "unreadable"]
    if unreadable:
        notes.append(f"record(s) of iteration(s) {unreadable} could not be read: see the problems above")
    if not any(r.status in ("model", "pruned") for r in rows):
        reasons = Counter(r.reason or "unknown" for r in rows if r.status == "placeholder")
        notes.append(
            "no iteration kept a model: every iteration is a placeholder or unreadable"
            + (f" ({', '.join(f'{k} ×{n}' for k, n in sorted(reasons.items()))})" if reasons else "")
        )
    return notes


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def forward_metric(monitor: str) -> str:
    """The forward metric compared with the selection score: the monitor's own metric when the forward
    results have it (``validation.sharpe`` -> ``sharpe``), else the Sharpe ratio."""
    name = monitor.rsplit(".", 1)[-1]
    return name if name in _FORWARD_METRICS else "sharpe"


_FORWARD_METRICS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate")


def _forward_scores(forward: ForwardData | None, monitor: str) -> dict[int, float | None]:
    if forward is None or forward.report is None:
        return {}
    metric = forward_metric(monitor)
    return {
        int(it["iteration"]): _finite((it.get("forward") or {}).get(metric))
        for it in forward.report.get("iterations") or []
    }


def _candidates_line(forward: ForwardData | None) -> str:
    if forward is None or forward.report is None:
        return FORWARD_MISSING if forward is None or not forward.reason else f"not available: {forward.reason}"
    names = list(forward.candidates) or sorted(
        {str(it["candidate"]) for it in forward.report.get("iterations") or [] if it.get("candidate")}
    )
    if not names:
        return "one model per window (no candidates compared)"
    return f"{', '.join(names)}: the best by selection on each window trades its test part"


def _kept_forward(repo: CheckpointRepository) -> ForwardData:
    """The forward data a walk-forward run left in the repository, or the reason there is none."""
    try:
        report, reason = repo.forward_status()
        stitched = repo.stitched_forward() if report is not None else None
    except CheckpointError as exc:  # a damaged forward file: verify reports it, the page says why
        return forward_data(None, reason=f"the forward data cannot be read: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable records are reported through verify's problems
        selection = candidate_scores(repo.list()) if report is not None else {}
        try:  # only the candidates' chart needs them: the report's DSR and PBO say why they are missing
            candidates = candidate_forwards(repo) if report is not None else {}
        except CheckpointError:
            candidates = {}
    return forward_data(
        report, stitched=stitched, candidate_results=candidates, candidate_selection=selection, reason=reason
    )


def collect_report(
    repository: CheckpointRepository | str | os.PathLike[str], forward: ForwardData | None = None
) -> ReportData:
    """Read a repository into the page's data model, running ``verify()`` on the way.

    Never raises for bad content: an unreadable record, a missing configuration or a repository
    without iterations become ``notes``/``problems`` that the page shows.

    :param repository: A ``CheckpointRepository``, or the root of one (a path or an ``s3://`` URL).
    :param forward: The run's forward (out-of-sample) data (``forward_data`` or ``forward_data_from_results``);
        None: what the repository keeps (its forward results and ``forward_returns.csv``), or the reason
        it has none.
    :return: The ``ReportData``.
    """
    repo = _open(repository)
    problems, problem_lines = _verify(repo)
    if forward is None:
        forward = _kept_forward(repo)
    notes: list[str] = []
    config = _run_config(repo, notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable records are reported through verify's problems
        cks = repo.list()
        monitor, mode = repo.default_selection()
        best = repo.best()
        analysis = None
        if cks:
            try:
                analysis = repo.analyze()
            except (CheckpointError, OSError) as exc:
                notes.append(f"the analysis could not run: {exc}")
    rows = _rows(cks, problems, monitor, best.iteration if best else None)
    scores = _forward_scores(forward, monitor)
    rows = [replace(r, forward_score=scores.get(r.iteration)) for r in rows]
    header = _header(repo, config, cks, monitor, mode, forward)
    return ReportData(
        experiment=str(repo.root.name),
        location=str(repo.root),
        generated_at=utc_now(),
        header=header,
        monitor=monitor,
        mode=mode,
        rows=rows,
        analysis=analysis,
        problems=problem_lines,
        notes=_input_notes(rows) + notes,
        forward=forward,
    )


# -- charts ------------------------------------------------------------------------------------------------------
def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise CheckpointError(_INSTALL) from exc
    return go


def _kept_indices(y: Sequence[float | None], max_points: int) -> list[int]:
    """Indices of the points a binned series keeps: per bin of consecutive points its lowest and highest."""
    if len(y) <= max_points:
        return list(range(len(y)))
    pts = [(k, v) for k, v in enumerate(y) if v is not None]
    n_bins = max(1, max_points // 2)
    size = -(-len(pts) // n_bins)
    out: list[int] = []
    for start in range(0, len(pts), size):
        chunk = pts[start : start + size]
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        out += sorted({lo[0], hi[0]})
    return out


def decimate_line(
    x: Sequence[float], y: Sequence[float | None], max_points: int = MAX_LINE_POINTS
) -> tuple[list, list]:
    """Pre-bin a long line series: per bin of consecutive points keep its lowest and its highest point.

    Every extreme the eye would see survives (the series' own minimum and maximum included); gaps
    (None) are dropped from a binned series. Series up to ``max_points`` come back unchanged.

    :param x: The x values, increasing.
    :param y: The y values (None for a gap).
    :param max_points: The most points returned.
    :return: ``(x, y)`` lists.
    """
    if len(x) <= max_points:
        return list(x), list(y)
    kept = _kept_indices(y, max_points)
    return [x[k] for k in kept], [y[k] for k in kept]


def _score_figure(data: ReportData) -> Any:
    go = _plotly()
    fig = go.Figure()
    shown = [r for r in data.rows if r.status != "unreadable"]
    # None where an iteration has no score, so the line breaks there instead of bridging a placeholder
    x, y = decimate_line([r.iteration for r in shown], [r.score for r in shown])
    pruned = {r.iteration for r in shown if r.status == "pruned"}
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=f"selection score ({data.monitor})",
        marker={"symbol": ["circle-open" if i in pruned else "circle" for i in x], "size": 8},
        hovertemplate="iteration %{x}<br>" + data.monitor + " %{y:.4g}<extra></extra>",
    )
    for r in data.rows:
        if r.best and r.score is not None:
            fig.add_scatter(
                x=[r.iteration],
                y=[r.score],
                mode="markers",
                name=f"best (iteration {r.iteration})",
                marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"color": "#2ca02c", "width": 3}},
            )
    holes = [r for r in data.rows if r.status in ("placeholder", "unreadable")]
    if holes:
        scores = [r.score for r in shown if r.score is not None]
        fig.add_scatter(
            x=[r.iteration for r in holes],
            y=[min(scores) if scores else 0.0] * len(holes),
            mode="markers",
            name="no model (placeholder or unreadable)",
            text=[f"{r.status}: {r.reason}" for r in holes],
            marker={"symbol": "x", "size": 11, "color": "#d62728"},
            hovertemplate="iteration %{x}<br>%{text}<extra></extra>",
        )
    fig.update_layout(
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": {"text": "walk-forward iteration"}, "dtick": 1 if len(data.rows) <= 30 else None},
        yaxis={"title": {"text": data.monitor}},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


_STRATEGY, _BENCHMARK, _FLAT, _LOSS, _GAIN = "#1f77b4", "#ff7f0e", "#8a929c", "#d62728", "#2ca02c"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _traded_by(w: ForwardWindow) -> str:
    return "placeholder (flat)" if w.placeholder else (w.candidate or "model")


def _window_label(w: ForwardWindow) -> str:
    return f"#{w.iteration} {_traded_by(w)}"


def _rounded(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 7) for v in values]  # 7 digits: the page stays small


def _window_marks(curve: ForwardCurve, rotate: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shapes and annotations: a dotted line where each window starts, its label (who traded it) above it,
    placeholder windows shaded."""
    shapes: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for w in curve.windows:
        x0, x1 = curve.x[w.first], curve.x[w.last]
        if w.placeholder:
            shapes.append(
                {"type": "rect", "x0": x0, "x1": x1, "y0": 0, "y1": 1, "xref": "x", "yref": "paper", "layer": "below",
                 "fillcolor": "rgba(214,39,40,0.08)", "line": {"width": 0}, "name": f"placeholder {w.iteration}"}
            )  # fmt: skip
        shapes.append(
            {"type": "line", "x0": x0, "x1": x0, "y0": 0, "y1": 1, "xref": "x", "yref": "paper",
             "line": {"color": "#5b6572", "width": 1, "dash": "dot"}, "name": f"window {w.iteration}"}
        )  # fmt: skip
        labels.append(
            {"x": curve.x[(w.first + w.last) // 2], "y": 1.0, "xref": "x", "yref": "paper", "yanchor": "bottom",
             "text": _e(_window_label(w)), "showarrow": False, "textangle": -90 if rotate else 0,
             "font": {"size": 10 if rotate else 12, "color": _LOSS if w.placeholder else "#33404d"},
             "name": f"window {w.iteration}"}
        )  # fmt: skip
    return shapes, labels


def _forward_curve_figure(curve: ForwardCurve) -> Any:
    go = _plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04)
    label = [""] * len(curve.x)
    for w in curve.windows:
        label[w.first : w.last + 1] = [_window_label(w)] * (w.last - w.first + 1)
    for name, y, color, row in (
        ("forward equity (stitched test parts)", curve.equity, _STRATEGY, 1),
        ("buy-and-hold (same periods)", curve.buy_and_hold, _BENCHMARK, 1),
        ("drawdown of the forward equity", curve.drawdown, _LOSS, 2),
    ):
        kept = _kept_indices(y, MAX_LINE_POINTS)
        fig.add_trace(
            go.Scatter(
                x=[curve.x[k] for k in kept],
                y=_rounded([y[k] for k in kept]),
                text=[label[k] for k in kept],
                mode="lines",
                name=name,
                line={"color": color, "width": 1.6},
                fill="tozeroy" if row == 2 else None,
                hovertemplate="%{x}<br>%{y:" + (".2%" if row == 2 else ".4f") + "}<br>%{text}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=[curve.x[0], curve.x[-1]],
            y=[1.0, 1.0],
            mode="lines",
            name="flat (no position)",
            line={"color": _FLAT, "dash": "dash", "width": 1.2},
            hoverinfo="skip",
        ),
        row=1,
        col=1,
    )
    rotate = len(curve.windows) > 8
    shapes, labels = _window_marks(curve, rotate)
    fig.update_layout(
        shapes=shapes,
        annotations=[*fig.layout.annotations, *labels],
        template="plotly_white",
        height=600,
        margin={"l": 70, "r": 20, "t": 110 if rotate else 40, "b": 50},
        legend={"orientation": "h", "y": -0.1},
        hovermode="x",
    )
    low, high = min(curve.equity + curve.buy_and_hold), max(curve.equity + curve.buy_and_hold)
    log = low > 0 and high / low > 20  # a long run that compounds far: ratios read right on a log scale
    fig.update_yaxes(title_text="equity (1 = start" + (", log scale)" if log else ")"), row=1, col=1)
    if log:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="date" if curve.dated else "row of the prices", row=2, col=1)
    return fig


def _forward_value(it: Mapping[str, Any], metric: str) -> float | None:
    return _finite((it.get("forward") or {}).get(metric))


def _selection_forward_figure(data: ReportData, report: Mapping[str, Any]) -> Any:
    go = _plotly()
    metric = forward_metric(data.monitor)
    its = list(report.get("iterations") or [])
    text = [f"{it.get('candidate') or ''}{' placeholder (flat)' if it.get('placeholder') else ''}" for it in its]
    fig = go.Figure()
    fig.add_bar(
        x=[it["iteration"] for it in its],
        y=[_finite(it.get("selection_score")) for it in its],
        name=f"selection score ({data.monitor}, validation)",
        marker={"color": "#9467bd"},
        text=text,
        textposition="none",
        hovertemplate="selection %{y:.4g}<br>%{text}<extra></extra>",
    )
    fig.add_bar(
        x=[it["iteration"] for it in its],
        y=[_forward_value(it, metric) for it in its],
        name=f"forward {metric} (test part, unseen)",
        marker={"color": _STRATEGY},
        hovertemplate="forward %{y:.4g}<extra></extra>",
    )
    flat = [it for it in its if it.get("placeholder")]
    if flat:
        fig.add_scatter(
            x=[it["iteration"] for it in flat],
            y=[0.0] * len(flat),
            mode="markers",
            name="placeholder: no model, flat on its test part",
            marker={"symbol": "x", "size": 11, "color": _LOSS},
            hovertemplate="no model: flat<extra></extra>",
        )
    fig.update_layout(
        template="plotly_white",
        height=380,
        barmode="group",
        hovermode="x unified",
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": {"text": "walk-forward iteration"}, "dtick": 1 if len(its) <= 30 else None},
        yaxis={"title": {"text": metric}},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _candidates_figure(data: ReportData, forward: ForwardData) -> Any:
    go = _plotly()
    metric = forward_metric(data.monitor)
    fig = go.Figure()
    for k, (name, by_iteration) in enumerate(forward.candidates.items()):
        color = _PALETTE[k % len(_PALETTE)]
        xs = sorted(by_iteration)
        fig.add_scatter(
            x=xs,
            y=[_finite(by_iteration[i]["metrics"].get(metric)) for i in xs],
            mode="lines+markers",
            name=f"{name}: forward {metric}",
            line={"color": color},
            hovertemplate=f"{_e(name)}<br>iteration %{{x}}<br>forward %{{y:.4g}}<extra></extra>",
        )
        selection = forward.candidate_selection.get(name)
        if selection:
            sx = sorted(selection)
            fig.add_scatter(
                x=sx,
                y=[_finite(selection[i]) for i in sx],
                mode="lines+markers",
                name=f"{name}: selection score",
                line={"color": color, "dash": "dot"},
                marker={"symbol": "diamond-open"},
                hovertemplate=f"{_e(name)}<br>iteration %{{x}}<br>selection %{{y:.4g}}<extra></extra>",
            )
    chosen = [it for it in (forward.report or {}).get("iterations") or [] if it.get("candidate") in forward.candidates]
    fig.add_scatter(
        x=[it["iteration"] for it in chosen],
        y=[_forward_value(it, metric) for it in chosen],
        text=[str(it["candidate"]) for it in chosen],
        mode="markers",
        name="chosen: traded the stitched curve",
        marker={"size": 17, "color": "rgba(0,0,0,0)", "line": {"color": "#1d2430", "width": 2}},
        hovertemplate="chosen on iteration %{x}: %{text}<extra></extra>",
    )
    fig.update_layout(
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": {"text": "walk-forward iteration"}, "dtick": 1 if len(chosen) <= 30 else None},
        yaxis={"title": {"text": metric}},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def bin_logits(logits: Sequence[float], max_bins: int = MAX_HISTOGRAM_BINS) -> list[tuple[float, float, int]]:
    """Pre-bin the CSCV logits for the histogram: ``(left, right, count)`` per bin, bins ``(left, right]``.

    Up to ``max_bins`` distinct values get a bin each (``left == right``, the exact value); more are
    counted in ``max_bins`` equal bins symmetric around 0, so 0 is an edge and a bin lies wholly on the
    overfit side (``λ ≤ 0``) or wholly on the other.

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


def _logit_figure(pbo: Mapping[str, Any]) -> Any:
    go = _plotly()
    bins = bin_logits(pbo.get("logits") or [])
    exact = all(lo == hi for lo, hi, _ in bins)
    gaps = [b[0] - a[0] for a, b in zip(bins[:-1], bins[1:], strict=True)]
    span = max(1.0, bins[-1][0] - bins[0][0]) if bins else 1.0
    width = min([0.8 * g for g in gaps] + [0.15 * span]) if exact else bins[0][1] - bins[0][0]
    fig = go.Figure()
    for name, side, color in (
        ("λ ≤ 0: the in-sample best ranked at or below the median out of sample", True, _LOSS),
        ("λ > 0: it stayed above the median", False, _GAIN),
    ):
        chosen = [b for b in bins if (b[1] <= 0) == side]
        fig.add_bar(
            x=[(lo + hi) / 2 for lo, hi, _ in chosen],
            y=[n for _, _, n in chosen],
            width=[width] * len(chosen),
            name=name,
            marker={"color": color},
            customdata=[[lo, hi] for lo, hi, _ in chosen],
            hovertemplate=("λ = %{x:.3f}" if exact else "λ in (%{customdata[0]:.2f}, %{customdata[1]:.2f}]")
            + "<br>%{y} combination(s)<extra></extra>",
        )
    fig.add_vline(x=0, line={"color": "#1d2430", "width": 1, "dash": "dot"})
    fig.update_layout(
        template="plotly_white",
        height=340,
        bargap=0.05,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": {"text": "logit λ of the in-sample best's out-of-sample rank"}},
        yaxis={"title": {"text": "combinations"}},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


# -- rendering ---------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _pct(value: Any) -> str:
    v = _finite(value)
    return "–" if v is None else f"{v:.2%}"


def _count(value: Any) -> str:
    v = _finite(value)
    return "–" if v is None else f"{v:,.0f}"


def _when(value: Any) -> str:
    """A date or row for the text: ISO timestamps at midnight without their time."""
    text = str(value)
    return text[:10] if re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00", text) else text


def _missing_reason(data: ReportData) -> str:
    fwd = data.forward
    return FORWARD_MISSING if fwd is None or not fwd.reason else f"not available: {fwd.reason}"


def _unavailable(what: str = "", text: str = FORWARD_MISSING) -> str:
    return f'<p class="unavailable">{_e(what + ": " if what else "")}{_e(text)}</p>'


def _how(text: str) -> str:
    return f'<p class="how"><strong>How to read it:</strong> {_e(text)}</p>'


def _fallback_table(fig: Mapping[str, Any]) -> str:
    """The values of a figure's traces as a table, shown instead of the chart when JavaScript is off."""
    traces = [t for t in fig.get("data", []) if isinstance(t.get("x"), list)]
    xs = sorted({x for t in traces for x in t["x"]})
    values = [dict(zip(t["x"], t.get("y") or [], strict=False)) for t in traces]
    head = "".join(f"<th>{_e(t.get('name', ''))}</th>" for t in traces)
    body = "".join(
        f"<tr><td>{_e(x)}</td>" + "".join(f"<td>{_e(_num(v.get(x)))}</td>" for v in values) + "</tr>"
        for x in xs[:MAX_FALLBACK_ROWS]
    )
    more = f"<p>… {len(xs) - MAX_FALLBACK_ROWS} more rows.</p>" if len(xs) > MAX_FALLBACK_ROWS else ""
    return f'<table class="fallback"><thead><tr><th>x</th>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def _chart(chart_id: str, fig: Any, fallback: str | None = None) -> str:
    """A Plotly figure drawn by the page's script; ``fallback`` (default: its values) when JavaScript is off."""
    spec = json.loads(fig.to_json())
    payload = json.dumps({"data": spec["data"], "layout": spec["layout"]}, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # JSON inside <script>: "</script>" must not end it
    return (
        f'<div class="chart" id="{chart_id}"></div>'
        f'<script type="application/json" class="figure" data-target="{chart_id}">{payload}</script>'
        f"<noscript><p>JavaScript is off: the chart's values.</p>{fallback or _fallback_table(spec)}</noscript>"
    )


def _header_section(data: ReportData) -> str:
    lines = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in data.header)
    if data.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in data.problems)
        verify = (
            f'<div class="problem" id="verify"><strong>verify found {len(data.problems)} problem(s)</strong>'
            f"<ul>{items}</ul></div>"
        )
    else:
        verify = (
            '<p class="ok" id="verify">verify: ok, every recorded file matches its sha256 '
            f"({len(data.rows)} iteration(s))</p>"
        )
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in data.notes)
    return (
        f'<header><h1>{_e(data.experiment)}</h1><p class="sub">walk-forward report, written {_e(data.generated_at)} '
        f"by sb3-iter-ckpt {_e(__version__)}</p>{verify}{notes}"
        f'<table class="meta"><tbody>{lines}</tbody></table></header>'
    )


def _windows_table(curve: ForwardCurve) -> str:
    """Per window: who traded it and how the curve and buy-and-hold ended it (the curve's no-JavaScript view)."""
    body = ""
    for w in curve.windows:
        start = curve.equity[w.first - 1] if w.first else 1.0
        bh_start = curve.buy_and_hold[w.first - 1] if w.first else 1.0
        body += (
            f"<tr><td>{w.iteration}</td><td>{_e(_traded_by(w))}</td>"
            f"<td>{_e(_when(curve.x[w.first]))} … {_e(_when(curve.x[w.last]))}</td><td>{w.last - w.first + 1}</td>"
            f"<td>{_pct(curve.equity[w.last] / start - 1)}</td>"
            f"<td>{_pct(curve.buy_and_hold[w.last] / bh_start - 1)}</td>"
            f"<td>{_num(curve.equity[w.last])}</td><td>{_pct(min(curve.drawdown[w.first : w.last + 1]))}</td></tr>"
        )
    head = "".join(
        f"<th>{c}</th>"
        for c in (
            "iteration", "traded by", "periods", "n", "forward return", "buy-and-hold return",
            "forward equity at its end", "deepest drawdown",
        )
    )  # fmt: skip
    return f'<table class="fallback windows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _forward_curve_section(data: ReportData) -> str:
    fwd = data.forward
    title = '<section id="forward-curve"><h2>Stitched forward equity curve</h2>'
    if fwd is None or fwd.report is None:
        return f"{title}{_unavailable(text=_missing_reason(data))}</section>"
    if fwd.curve is None:
        return f"{title}{_unavailable(text='not available: the per-period forward returns were not given')}</section>"
    curve = fwd.curve
    placeholders = [w.iteration for w in curve.windows if w.placeholder]
    flat = (
        f'<p class="note">iteration(s) {placeholders} kept no model: their test parts stayed flat (shaded)</p>'
        if placeholders
        else ""
    )
    return (
        f"{title}<p>Every kept model traded the test part after its window once, on data it had not seen; the "
        f"test parts joined in time order ({len(curve.x):,} periods, {len(curve.windows)} windows, each labelled "
        "with the candidate that traded it; dotted lines mark where a window starts) against buy-and-hold and "
        f"flat over exactly the same periods. The drawdown of the forward equity is under it.</p>{flat}"
        f"{_chart('chart-forward', _forward_curve_figure(curve), _windows_table(curve))}</section>"
    )


def _scores_section(data: ReportData) -> str:
    if not data.rows:
        chart = '<p class="note">no iteration to chart</p>'
    else:
        chart = _chart("chart-scores", _score_figure(data))
    fwd = data.forward
    if fwd is None or fwd.report is None:
        forward = _unavailable("forward score per iteration", _missing_reason(data))
        forward += _unavailable("candidates per window", _missing_reason(data))
    else:
        metric = forward_metric(data.monitor)
        its = fwd.report.get("iterations") or []
        pairs = [
            (s, f) for it in its if (s := _finite(it.get("selection_score"))) is not None
            and (f := _forward_value(it, metric)) is not None
        ]  # fmt: skip
        gap = (
            f" Over the {len(pairs)} iteration(s) with both, the selection score averages "
            f"{_num(float(np.mean([p[0] for p in pairs])))} and the forward {metric} "
            f"{_num(float(np.mean([p[1] for p in pairs])))}: the gap is the selection's optimism."
            if pairs
            else " No iteration has both a selection score and a forward score to compare."
        )
        forward = (
            f"<h3>Selection score next to forward score</h3><p>For each iteration, the score its model was "
            f"chosen by (on validation) beside the same model's {_e(metric)} on its unseen test part.{_e(gap)}</p>"
            f"{_chart('chart-selection-forward', _selection_forward_figure(data, fwd.report))}"
        )
        if fwd.candidates:
            forward += (
                f"<h3>Candidates per window</h3><p>Every candidate's forward {_e(metric)} on each window "
                f"({len(fwd.candidates)} candidates), dotted its selection score; the ringed one was chosen by "
                "its selection score and traded the stitched curve. A missing point is an undefined score: a "
                "candidate that kept no model on that window, or that stayed flat (a Sharpe ratio without "
                f"variance).</p>{_chart('chart-candidates', _candidates_figure(data, fwd))}"
            )
        else:
            forward += _unavailable(
                "candidates per window",
                "one model per window: this run compared no candidates (--algo a,b or --seeds N)",
            )
    return (
        f'<section id="scores"><h2>Per iteration: selection score and forward score</h2>'
        f"<p>The score each iteration's kept model was chosen by ({_e(data.monitor)}, {_e(data.mode)}), "
        "on its window's validation part: the best of several evaluations on the same data, so optimistic.</p>"
        f"{chart}{forward}</section>"
    )


def _stats_table(stats: Mapping[str, Any], keys: Sequence[str]) -> str:
    cols = ("count", "mean", "std", "median", "min", "max")
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        f"<tr><th>{_e(k)}</th>" + "".join(f"<td>{_e(_num(stats[k].get(c)))}</td>" for c in cols) + "</tr>" for k in keys
    )
    return f'<table class="stats"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _reasons(by_reason: Mapping[str, int]) -> str:
    return f"; reasons: {', '.join(f'{k} {n}' for k, n in sorted(by_reason.items()))}" if by_reason else ""


def _numbers_section(data: ReportData) -> str:
    a = data.analysis
    if a is None:
        body = '<p class="note">no analysis: the repository has no readable iteration</p>'
    else:
        c, trend, run = a["counts"], a.get("trend") or {}, a.get("longest_placeholder_run") or {}
        best = ", ".join(f"#{b['iteration']} = {_num(b['score'])}" for b in a["best"]) or "none"
        stats = a.get("stats") or {}
        group = data.monitor.split(".")[0] + "."
        main = [k for k in sorted(stats) if k.startswith(group) or k == data.monitor]
        body = (
            f"<ul><li>{c['total']} iteration(s): {c['with_model']} with a model, {c['placeholders']} placeholder(s), "
            f"{c.get('pruned', 0)} pruned{_e(_reasons(c['by_reason']))}</li>"
            f"<li>best by {_e(a['monitor'])} ({_e(a['mode'])}): {_e(best)}</li>"
            f"<li>trend of {_e(a['monitor'])}: slope {_e(_num(trend.get('slope')))} per iteration, "
            f"Spearman {_e(_num(trend.get('spearman')))}</li>"
            f"<li>longest run of placeholders: {_e(run.get('length', 0))}; size on disk: "
            f"{_e(_size(int(a.get('size_on_disk_bytes') or 0)))}</li></ul>"
            f"{_stats_table(stats, main)}"
            f"<details><summary>every metric ({len(stats)})</summary>{_stats_table(stats, sorted(stats))}</details>"
        )
    return (
        f'<section id="numbers"><h2>The numbers</h2>{_forward_numbers(data)}'
        f'<h3 id="selection-numbers">The iterations and their selection (validation) scores</h3>{body}</section>'
    )


_BASELINE_ROWS = (
    ("total return", "total_return", _pct),
    ("annualized return (CAGR)", "cagr", _pct),
    ("Sharpe ratio (annualized)", "sharpe", _num),
    ("Sortino ratio", "sortino", _num),
    ("volatility (annualized)", "volatility", _pct),
    ("max drawdown", "max_drawdown", _pct),
    ("exposure (share of periods in a position)", "exposure", _pct),
    ("trades", "n_trades", _count),
    ("periods", "n_periods", _count),
)


def _baseline_html(report: Mapping[str, Any]) -> str:
    stitched = report.get("stitched") or {}
    mine = stitched.get("metrics") or {}
    base = report.get("baseline") or {}
    bh, flat = base.get("buy_and_hold") or {}, base.get("flat") or {}
    cols = (mine, bh, flat)
    body = "".join(
        f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{_e(fmt(c.get(key)))}</td>" for c in cols) + "</tr>"
        for label, key, fmt in _BASELINE_ROWS
    )
    body += (
        "<tr><th>excess total return of the forward curve over it</th><td></td>"
        + "".join(f"<td>{_e(_pct(c.get('excess_return')))}</td>" for c in (bh, flat))
        + "</tr><tr><th>Sharpe difference (forward minus it)</th><td></td>"
        + "".join(f"<td>{_e(_num(_finite(c.get('sharpe_difference'))))}</td>" for c in (bh, flat))
        + "</tr>"
    )
    first = stitched.get("first_date") or stitched.get("first_row")
    last = stitched.get("last_date") or stitched.get("last_row")
    return (
        f'<h3 id="forward-metrics">Stitched forward curve against its baselines</h3><p>Periods {_e(_when(first))} … '
        f'{_e(_when(last))}.</p><table class="stats baseline"><thead><tr><th>metric</th><th>forward (stitched)</th>'
        f"<th>buy-and-hold</th><th>flat</th></tr></thead><tbody>{body}</tbody></table>"
        + _how(
            "the forward curve is what the kept models earned on data none of them had seen; it earned its risk "
            "only if it beats buy-and-hold over the same periods (excess return and Sharpe difference above 0), "
            "and beating flat alone only says it made money."
        )
    )


def _efficiency_html(data: ReportData, report: Mapping[str, Any]) -> str:
    overall = report.get("overall") or {}
    eff = _finite(overall.get("efficiency"))
    sel, fwd = _finite(overall.get("selection_return")), _finite(overall.get("forward_return"))
    if eff is not None:
        value = (
            f"<strong>{_num(eff)}</strong> (annualized forward return {_pct(fwd)} over annualized selection "
            f"return {_pct(sel)})"
        )
    elif sel is None:
        value = "not computed: no selection returns were given (the annualized return on each validation part)"
    else:
        value = (
            f"not computed: the annualized selection return {_pct(sel)} is not positive, so the ratio has no meaning"
        )
    metric = forward_metric(data.monitor)
    cols = (
        "iteration",
        "traded by",
        "selection score",
        f"forward {metric}",
        "selection return",
        "forward return",
        "efficiency",
    )
    rows = "".join(
        f'<tr class="{"placeholder" if it.get("placeholder") else "model"}"><td>{_e(it["iteration"])}</td>'
        f"<td>{_e('placeholder (flat)' if it.get('placeholder') else it.get('candidate') or 'model')}</td>"
        f"<td>{_e(_num(_finite(it.get('selection_score'))))}</td><td>{_e(_num(_forward_value(it, metric)))}</td>"
        f"<td>{_e(_pct(it.get('selection_return')))}</td><td>{_e(_pct(it.get('forward_return')))}</td>"
        f"<td>{_e(_num(_finite(it.get('efficiency'))))}</td></tr>"
        for it in report.get("iterations") or []
    )
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    return (
        f'<h3 id="efficiency">Walk-forward efficiency</h3><p>{value}</p>'
        + _how(
            "the share of the validation-period return that survived on unseen data: near 1 the selection carried "
            "over, near 0 or negative the validation results were mostly the luck of the pick."
        )
        + f'<details><summary>per iteration</summary><table id="forward-iterations" class="stats">'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _dsr_html(report: Mapping[str, Any]) -> str:
    dsr = _finite(report.get("deflated_sharpe"))
    if dsr is None:
        value = _unavailable(text=f"not computed: {report.get('deflated_sharpe_reason') or 'no reason recorded'}")
    else:
        trials, var = report.get("n_trials"), _finite(report.get("trials_variance"))
        value = (
            f"<p><strong>{dsr:.3f}</strong> with {_e(trials)} trial(s) (the candidates compared), variance of "
            f"their per-period Sharpe ratios {_e(_num(var))}.</p>"
        )
    return f'<h3 id="deflated-sharpe">Deflated Sharpe ratio</h3>{value}' + _how(
        "the probability that the forward curve's true Sharpe ratio is above zero once the number of candidates "
        "tried is allowed for: above 0.95 is strong evidence, near 0.5 or below is what luck among that many "
        "tries would give (candidates differing only by seed are correlated trials, so it is a conservative haircut)."
    )


def _pbo_html(report: Mapping[str, Any]) -> str:
    pbo = report.get("pbo")
    text = (
        "the share of the combinatorial splits (CSCV) of the forward periods in which the candidate best on one "
        "half ranked at or below the median on the other: near 0 picking the best candidate works, 0.5 or more "
        "means picking by past performance is no better than a coin toss."
    )
    title = '<h3 id="pbo">Probability of backtest overfitting (PBO)</h3>'
    if not isinstance(pbo, Mapping) or _finite(pbo.get("pbo")) is None:
        reason = report.get("pbo_reason") or "no reason recorded"
        return f"{title}{_unavailable(text=f'not computed: {reason}')}{_how(text)}"
    logits = pbo.get("logits") or []
    value = (
        f"<p><strong>{float(pbo['pbo']):.3f}</strong> over {_e(pbo.get('n_combinations', len(logits)))} "
        f"combinations of {_e(pbo.get('n_partitions'))} blocks, {_e(pbo.get('n_strategies'))} candidates.</p>"
    )
    hist = (
        f"<p>The logits λ of those combinations (pre-binned): red bars are the overfit ones.</p>"
        f"{_chart('chart-logits', _logit_figure(pbo))}"
        if logits
        else ""
    )
    return f"{title}{value}{_how(text)}{hist}"


def _forward_numbers(data: ReportData) -> str:
    fwd = data.forward
    if fwd is None or fwd.report is None:
        reason = _missing_reason(data)
        return "".join(
            _unavailable(what, reason)
            for what in (
                "stitched forward metrics against buy-and-hold",
                "walk-forward efficiency",
                "deflated Sharpe ratio",
                "probability of backtest overfitting (PBO)",
            )
        )
    return (
        _baseline_html(fwd.report) + _efficiency_html(data, fwd.report) + _dsr_html(fwd.report) + _pbo_html(fwd.report)
    )


_COLUMNS = (
    "iteration", "status", "{monitor}", "forward {forward}", "validation", "timesteps", "size on disk", "sha256",
    "committed",
)  # fmt: skip


def _cells(r: IterationRow) -> list[tuple[str, Any]]:
    """(text, sort key) per column."""
    status = r.status if not r.reason else f"{r.status}: {r.reason}"
    if r.status == "pruned":
        status = "pruned (model removed, record kept)"
    return [
        (f"{r.iteration}{' ★ best' if r.best else ''}", r.iteration),
        (status, status),
        (_num(r.score), "" if r.score is None else r.score),
        (_num(r.forward_score), "" if r.forward_score is None else r.forward_score),
        (r.validation or "–", r.validation),
        (_num(r.timesteps), "" if r.timesteps is None else r.timesteps),
        (_size(r.size_bytes), r.size_bytes),
        ((r.sha256 or "")[:12] or "–", r.sha256 or ""),
        ((r.created_at or "–")[:19].replace("T", " "), r.created_at or ""),
    ]


def _table_section(data: ReportData) -> str:
    names = {"monitor": data.monitor, "forward": forward_metric(data.monitor)}
    heads = "".join(
        f'<th scope="col" data-col="{i}"><button type="button">{_e(c.format(**names))}</button></th>'
        for i, c in enumerate(_COLUMNS)
    )
    rows = "".join(
        f'<tr class="{r.status}{" best" if r.best else ""}" data-iteration="{r.iteration}">'
        + "".join(f'<td data-sort="{_e(key)}">{_e(text)}</td>' for text, key in _cells(r))
        + "</tr>"
        for r in data.rows
    )
    empty = "" if data.rows else '<p class="note">no iteration</p>'
    return (
        f'<section id="checkpoints"><h2>Checkpoints</h2><p>Every iteration; click a column to sort. '
        "Size on disk: the iteration's model files; sha256: the first 12 hex digits of the model zip's.</p>"
        f'<table id="checkpoint-table" class="sortable"><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>'
        f"{empty}</section>"
    )


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1150px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 2px;font-size:28px}h2{margin:34px 0 8px;font-size:20px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
.sub{color:#5b6572;margin:0 0 12px}
table{border-collapse:collapse;font-size:13.5px}th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #eceef1}
table.meta th{color:#5b6572;font-weight:500;white-space:nowrap;vertical-align:top}
.problem{background:#fdecea;border:2px solid #c62828;color:#8e1c1c;padding:8px 14px;border-radius:6px;margin:10px 0}
.ok{background:#e8f5e9;border:1px solid #2e7d32;color:#1b5e20;padding:6px 14px;border-radius:6px}
.note{background:#fff8e1;border:1px solid #f0c36d;padding:6px 14px;border-radius:6px}
.unavailable{color:#6b7380;font-style:italic;border-left:3px solid #c9ced6;padding:2px 10px}
h3{margin:22px 0 6px;font-size:16px}.how{color:#3d4753;font-size:14px;margin:4px 0 10px}
table.baseline td{font-variant-numeric:tabular-nums}
.chart{width:100%;min-height:380px}
table.sortable th button{all:unset;cursor:pointer;font-weight:600}
table.sortable th[aria-sort=ascending] button::after{content:" ▲"}
table.sortable th[aria-sort=descending] button::after{content:" ▼"}
tr.placeholder td,tr.unreadable td{background:#fff4f4}tr.unreadable td{color:#b00020}
tr.pruned td{color:#8a929c}tr.best td{font-weight:600}
td[data-sort]{font-variant-numeric:tabular-nums;white-space:nowrap}td[data-sort]:nth-child(2){white-space:normal}
"""

# Draws each figure, and sorts the checkpoint table by the clicked column (numbers as numbers).
_SCRIPT = """
document.querySelectorAll('script.figure').forEach(function (s) {
  var spec = JSON.parse(s.textContent);
  Plotly.newPlot(s.dataset.target, spec.data, spec.layout, {responsive: true, displaylogo: false});
});
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th) {
    th.addEventListener('click', function () {
      var col = +th.dataset.col, up = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      var body = table.tBodies[0], rows = Array.from(body.rows);
      function key(r) { var v = r.cells[col].dataset.sort; return v === '' || isNaN(v) ? v : +v; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), c;
        if (x === '' || y === '') c = (x === '') - (y === '');
        else c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
        return up ? c : (x === '' || y === '' ? c : -c);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def plotly_bundle() -> tuple[str, str]:
    """The vendored plotly.js partial bundle: ``(version, source)``."""
    source = (importlib.resources.files("sb3_iter_ckpt.report") / "_vendor" / _BUNDLE).read_text(encoding="utf-8")
    m = re.search(r"plotly\.js \([^)]*\) v(\d+\.\d+\.\d+)", source[:400])
    return (m.group(1) if m else "unknown"), source.replace("</script", "<\\/script")


def render_report(data: ReportData) -> str:
    """The page for ``data``: one HTML document with everything inline."""
    version, bundle = plotly_bundle()
    sections = [
        _header_section(data),
        _forward_curve_section(data),
        _scores_section(data),
        _numbers_section(data),
        _table_section(data),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="sb3-iter-ckpt {_e(__version__)}, plotly.js {_e(version)}">'
        f'<link rel="icon" href="data:,"><title>{_e(data.experiment)}: walk-forward report</title>'
        f"<style>{_CSS}</style><noscript><style>.chart{{display:none}}</style></noscript></head><body><main>{''.join(sections)}</main>"
        f"<script>{bundle}</script><script>{_SCRIPT}</script></body></html>"
    )


def default_report_path(repository: CheckpointRepository) -> Path:
    """``ROOT/report.html`` for a local repository; ``./{experiment}-report.html`` for a URL root."""
    root = repository.root
    return root / "report.html" if isinstance(root, Path) else Path(f"{root.name}-report.html")


def write_report(
    repository: CheckpointRepository | ReportData | str | os.PathLike[str],
    path: str | os.PathLike[str],
    forward: ForwardData | None = None,
) -> Path:
    """Write the experiment's report page to the local file ``path`` (also for an ``s3://`` repository).

    The file is replaced atomically: a reader sees the old page or the new one, never half of one.

    :param repository: A ``CheckpointRepository``, its root (a path or URL), or an already collected ``ReportData``.
    :param path: Where to write the HTML file; its folder is created.
    :param forward: The run's forward data for the forward sections (see ``collect_report``); ignored when
        ``repository`` is a ``ReportData``.
    :return: The path written.
    """
    _plotly()  # the clear message before any work
    data = repository if isinstance(repository, ReportData) else collect_report(repository, forward)
    page = render_report(data).encode("utf-8")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # created with the umask's mode
    try:
        with open(tmp, "xb") as f:
            f.write(page)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out
