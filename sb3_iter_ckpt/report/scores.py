"""The per-iteration section: the selection score of every iteration, and next to it the forward score of the
same model on its unseen test part (then the candidates per window, ``candidates.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sb3_iter_ckpt.report.bundle import _plotly
from sb3_iter_ckpt.report.candidates import _candidates_html
from sb3_iter_ckpt.report.charts import _LOSS, _STRATEGY, _chart, _label, decimate_line
from sb3_iter_ckpt.report.markup import _e, _missing_reason, _num, _unavailable
from sb3_iter_ckpt.report.model import ReportData, _finite, _forward_value, forward_metric


def _score_figure(data: ReportData) -> Any:
    go = _plotly()
    fig = go.Figure()
    shown = [r for r in data.rows if r.status != "unreadable"]
    # None where an iteration has no score, so the line breaks there instead of bridging a placeholder
    x, y = decimate_line([r.iteration for r in shown], [r.score for r in shown])
    pruned = {r.iteration for r in shown if r.status == "pruned"}
    monitor = _label(data.monitor)
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=f"selection score ({monitor})",
        marker={"symbol": ["circle-open" if i in pruned else "circle" for i in x], "size": 8},
        hovertemplate="iteration %{x}<br>" + monitor + " %{y:.4g}<extra></extra>",
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
            text=[_label(f"{r.status}: {r.reason}") for r in holes],
            marker={"symbol": "x", "size": 11, "color": "#d62728"},
            hovertemplate="iteration %{x}<br>%{text}<extra></extra>",
        )
    fig.update_layout(
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": {"text": "walk-forward iteration"}, "dtick": 1 if len(data.rows) <= 30 else None},
        yaxis={"title": {"text": monitor}},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _selection_forward_figure(data: ReportData, report: Mapping[str, Any]) -> Any:
    go = _plotly()
    metric = forward_metric(data.monitor)
    its = list(report.get("iterations") or [])
    text = [
        _label(f"{it.get('candidate') or ''}{' placeholder (flat)' if it.get('placeholder') else ''}") for it in its
    ]
    fig = go.Figure()
    fig.add_bar(
        x=[it["iteration"] for it in its],
        y=[_finite(it.get("selection_score")) for it in its],
        name=f"selection score ({_label(data.monitor)}, validation)",
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


def _scores_section(data: ReportData) -> str:
    if not data.rows:
        chart = '<p class="note">no iteration to chart</p>'
    else:
        chart = _chart("chart-scores", _score_figure(data))
    fwd = data.forward
    if fwd is None or fwd.report is None:
        forward = _unavailable("forward score per iteration", _missing_reason(data))
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
    return (
        f'<section id="scores"><h2>Per iteration: selection score and forward score</h2>'
        f"<p>The score each iteration's kept model was chosen by ({_e(data.monitor)}, {_e(data.mode)}), "
        "on its window's validation part: the best of several evaluations on the same data, so optimistic.</p>"
        f"{chart}{forward}{_candidates_html(data)}</section>"
    )
