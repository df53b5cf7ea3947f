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

# The public layer: the work is done in the modules of this folder (DEVELOPERS.md's module index).
from sb3_iter_ckpt.report import charts, collect, model, numbers
from sb3_iter_ckpt.report.bundle import plotly_bundle
from sb3_iter_ckpt.report.charts import decimate_line
from sb3_iter_ckpt.report.collect import collect_report
from sb3_iter_ckpt.report.model import (
    ForwardCurve,
    ForwardData,
    ForwardWindow,
    IterationRow,
    ReportData,
    forward_curve,
    forward_data,
    forward_data_from_results,
    forward_metric,
)
from sb3_iter_ckpt.report.numbers import bin_logits
from sb3_iter_ckpt.report.page import default_report_path, render_report, write_report

# The constants are assigned here, not only imported, so that their ``#:`` comments document them on the API page.
#: What every section that needs issue 15's forward evaluation shows until the repository has it.
FORWARD_MISSING = model.FORWARD_MISSING
#: The walk-forward runner's configuration file at the repository root.
RUN_FILE = collect.RUN_FILE
#: A line chart keeps at most this many points; longer series are pre-binned (min and max per bin).
MAX_LINE_POINTS = charts.MAX_LINE_POINTS
#: Bars of the CSCV logit histogram at most (the logits are pre-binned: up to 12,870 values).
MAX_HISTOGRAM_BINS = numbers.MAX_HISTOGRAM_BINS
#: Rows of a chart's no-JavaScript fallback table.
MAX_FALLBACK_ROWS = charts.MAX_FALLBACK_ROWS

# In the order of the API page (autodoc's "bysource" follows it).
__all__ = [
    "FORWARD_MISSING",
    "RUN_FILE",
    "MAX_LINE_POINTS",
    "MAX_HISTOGRAM_BINS",
    "MAX_FALLBACK_ROWS",
    "IterationRow",
    "ReportData",
    "ForwardWindow",
    "ForwardCurve",
    "ForwardData",
    "forward_curve",
    "forward_data",
    "forward_data_from_results",
    "forward_metric",
    "collect_report",
    "decimate_line",
    "bin_logits",
    "plotly_bundle",
    "render_report",
    "default_report_path",
    "write_report",
]
