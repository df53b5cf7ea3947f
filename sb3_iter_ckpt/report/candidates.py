"""The candidates per window: every candidate's forward score and selection score on each window, the chosen one
ringed (part of the per-iteration section)."""

from __future__ import annotations

from typing import Any

from sb3_iter_ckpt.report.bundle import _plotly
from sb3_iter_ckpt.report.charts import _PALETTE, _chart, _label
from sb3_iter_ckpt.report.markup import _e, _missing_reason, _unavailable
from sb3_iter_ckpt.report.model import ForwardData, ReportData, _finite, _forward_value, forward_metric


def _candidates_figure(data: ReportData, forward: ForwardData) -> Any:
    go = _plotly()
    metric = forward_metric(data.monitor)
    fig = go.Figure()
    for k, (candidate, by_iteration) in enumerate(forward.candidates.items()):
        color, name = _PALETTE[k % len(_PALETTE)], _label(candidate)
        xs = sorted(by_iteration)
        fig.add_scatter(
            x=xs,
            y=[_finite(by_iteration[i]["metrics"].get(metric)) for i in xs],
            mode="lines+markers",
            name=f"{name}: forward {metric}",
            line={"color": color},
            hovertemplate=f"{name}<br>iteration %{{x}}<br>forward %{{y:.4g}}<extra></extra>",
        )
        selection = forward.candidate_selection.get(candidate)
        if selection:
            sx = sorted(selection)
            fig.add_scatter(
                x=sx,
                y=[_finite(selection[i]) for i in sx],
                mode="lines+markers",
                name=f"{name}: selection score",
                line={"color": color, "dash": "dot"},
                marker={"symbol": "diamond-open"},
                hovertemplate=f"{name}<br>iteration %{{x}}<br>selection %{{y:.4g}}<extra></extra>",
            )
    chosen = [it for it in (forward.report or {}).get("iterations") or [] if it.get("candidate") in forward.candidates]
    fig.add_scatter(
        x=[it["iteration"] for it in chosen],
        y=[_forward_value(it, metric) for it in chosen],
        text=[_label(it["candidate"]) for it in chosen],
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


def _candidates_html(data: ReportData) -> str:
    """The candidates per window, after the selection and forward scores of the per-iteration section."""
    fwd = data.forward
    if fwd is None or fwd.report is None:
        return _unavailable("candidates per window", _missing_reason(data))
    metric = forward_metric(data.monitor)
    if fwd.candidates:
        return (
            f"<h3>Candidates per window</h3><p>Every candidate's forward {_e(metric)} on each window "
            f"({len(fwd.candidates)} candidates), dotted its selection score; the ringed one was chosen by "
            "its selection score and traded the stitched curve. A missing point is an undefined score: a "
            "candidate that kept no model on that window, or that stayed flat (a Sharpe ratio without "
            f"variance).</p>{_chart('chart-candidates', _candidates_figure(data, fwd))}"
        )
    return _unavailable(
        "candidates per window",
        "one model per window: this run compared no candidates (--algo a,b or --seeds N)",
    )
