"""What the sections' charts share: the colours, long series pre-binned, a user's string as a Plotly label (shown as
text, never read as Plotly's markup), and a Plotly figure embedded in the page (its JSON escaped for ``<script>`` by
``json_for_script``, its values as a table when JavaScript is off)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sb3_iter_ckpt.report.markup import _e, _num, json_for_script

#: A line chart keeps at most this many points; longer series are pre-binned (min and max per bin).
MAX_LINE_POINTS = 4000
#: Rows of a chart's no-JavaScript fallback table.
MAX_FALLBACK_ROWS = 500
_STRATEGY, _BENCHMARK, _FLAT, _LOSS, _GAIN = "#1f77b4", "#ff7f0e", "#8a929c", "#d62728", "#2ca02c"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


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


def _label(text: Any) -> str:
    """A user's string (a monitor, a candidate, a reason) for a Plotly name, text, title or hover template.

    Plotly reads those as its own small HTML (``<br>``, ``<b>``, ``<a href>``, entities): with ``&``, ``<`` and
    ``>`` escaped the string is shown as it is, never as markup (``"`` stays: Plotly does not decode ``&quot;``).
    """
    return html.escape(str(text), quote=False)


def _fallback_table(fig: Mapping[str, Any]) -> str:
    """The values of a figure's traces as a table, shown instead of the chart when JavaScript is off."""
    traces = [t for t in fig.get("data", []) if isinstance(t.get("x"), list)]
    xs = sorted({x for t in traces for x in t["x"]})
    values = [dict(zip(t["x"], t.get("y") or [], strict=False)) for t in traces]
    # a trace's name is Plotly's markup (``_label``): its entities decoded, it is the text the chart shows
    head = "".join(f"<th>{_e(html.unescape(str(t.get('name', ''))))}</th>" for t in traces)
    body = "".join(
        f"<tr><td>{_e(x)}</td>" + "".join(f"<td>{_e(_num(v.get(x)))}</td>" for v in values) + "</tr>"
        for x in xs[:MAX_FALLBACK_ROWS]
    )
    more = f"<p>… {len(xs) - MAX_FALLBACK_ROWS} more rows.</p>" if len(xs) > MAX_FALLBACK_ROWS else ""
    return f'<table class="fallback"><thead><tr><th>x</th>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def _chart(chart_id: str, fig: Any, fallback: str | None = None) -> str:
    """A Plotly figure drawn by the page's script; ``fallback`` (default: its values) when JavaScript is off."""
    spec = json.loads(fig.to_json())
    payload = json_for_script({"data": spec["data"], "layout": spec["layout"]})
    return (
        f'<div class="chart" id="{chart_id}"></div>'
        f'<script type="application/json" class="figure" data-target="{chart_id}">{payload}</script>'
        f"<noscript><p>JavaScript is off: the chart's values.</p>{fallback or _fallback_table(spec)}</noscript>"
    )
