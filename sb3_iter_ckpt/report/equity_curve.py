"""The stitched forward equity curve section: equity, buy-and-hold and flat, the drawdown under it, each window
labelled with who traded it; its no-JavaScript view is the per-window table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sb3_iter_ckpt.report.bundle import _plotly
from sb3_iter_ckpt.report.charts import (
    _BENCHMARK,
    _FLAT,
    _LOSS,
    _STRATEGY,
    MAX_LINE_POINTS,
    _chart,
    _kept_indices,
    _label,
)
from sb3_iter_ckpt.report.markup import _caveat, _e, _missing_reason, _num, _pct, _unavailable, _when
from sb3_iter_ckpt.report.model import ForwardCurve, ForwardWindow, ReportData


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
             "text": _label(_window_label(w)), "showarrow": False, "textangle": -90 if rotate else 0,
             "font": {"size": 10 if rotate else 12, "color": _LOSS if w.placeholder else "#33404d"},
             "name": f"window {w.iteration}"}
        )  # fmt: skip
    return shapes, labels


def _labelled(curve: ForwardCurve) -> ForwardCurve:
    """The curve with its x as Plotly labels: dates that are not dates make a category axis, whose tick labels
    Plotly reads as its markup too."""
    return replace(curve, x=[_label(x) if isinstance(x, str) else x for x in curve.x])


def _forward_curve_figure(curve: ForwardCurve) -> Any:
    go = _plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04)
    label = [""] * len(curve.x)
    for w in curve.windows:
        label[w.first : w.last + 1] = [_label(_window_label(w))] * (w.last - w.first + 1)
    for name, y, color, row in (
        ("forward equity (stitched test parts)", curve.equity, _STRATEGY, 1),
        ("buy-and-hold (same periods)", curve.buy_and_hold or [], _BENCHMARK, 1),
        ("drawdown of the forward equity", curve.drawdown, _LOSS, 2),
    ):
        if not y:
            continue  # buy-and-hold without the asset's prices
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
    _axes(fig, curve)
    return fig


def _axes(fig: Any, curve: ForwardCurve) -> None:
    both = curve.equity + (curve.buy_and_hold or [])
    low, high = min(both), max(both)
    log = low > 0 and high / low > 20  # a long run that compounds far: ratios read right on a log scale
    fig.update_yaxes(title_text="equity (1 = start" + (", log scale)" if log else ")"), row=1, col=1)
    if log:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="date" if curve.dated else "row of the prices", row=2, col=1)


def _growth(end: float, start: float) -> float | None:
    """A window's return from the equity it started and ended with; None from a ruined (0) account."""
    return end / start - 1 if start > 0 else None


def _windows_table(curve: ForwardCurve) -> str:
    """Per window: who traded it and how the curve and buy-and-hold ended it (the curve's no-JavaScript view)."""
    body = ""
    for w in curve.windows:
        start = curve.equity[w.first - 1] if w.first else 1.0
        bh = curve.buy_and_hold
        bh_return = None if bh is None else _growth(bh[w.last], bh[w.first - 1] if w.first else 1.0)
        body += (
            f"<tr><td>{w.iteration}</td><td>{_e(_traded_by(w))}</td>"
            f"<td>{_e(_when(curve.x[w.first]))} … {_e(_when(curve.x[w.last]))}</td><td>{w.last - w.first + 1}</td>"
            f"<td>{_pct(_growth(curve.equity[w.last], start))}</td>"
            f"<td>{_pct(bh_return)}</td>"
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
    no_bh = (
        ""
        if curve.buy_and_hold is not None
        else _unavailable("buy-and-hold", f"not available: {curve.buy_and_hold_reason}")
    )
    return (
        f"{title}<p>Every kept model traded the test part after its window once, on data it had not seen; the "
        f"test parts joined in time order ({len(curve.x):,} periods, {len(curve.windows)} windows, each labelled "
        "with the candidate that traded it; dotted lines mark where a window starts) against buy-and-hold and "
        f"flat over exactly the same periods. The drawdown of the forward equity is under it.</p>{_caveat(data)}"
        f"{flat}{no_bh}"
        f"{_chart('chart-forward', _forward_curve_figure(_labelled(curve)), _windows_table(curve))}</section>"
    )
