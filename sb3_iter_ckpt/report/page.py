"""The HTML shell: the page template (styles, the script that draws the figures and sorts the table) around the
sections, ``render_report`` and ``write_report`` (collect, render, replace the file atomically)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from sb3_iter_ckpt.common.version import __version__
from sb3_iter_ckpt.report.bundle import _plotly, plotly_bundle
from sb3_iter_ckpt.report.checkpoints import _table_section
from sb3_iter_ckpt.report.collect import collect_report
from sb3_iter_ckpt.report.equity_curve import _forward_curve_section
from sb3_iter_ckpt.report.header import _header_section
from sb3_iter_ckpt.report.markup import _e
from sb3_iter_ckpt.report.model import ForwardData, ReportData
from sb3_iter_ckpt.report.numbers import _numbers_section
from sb3_iter_ckpt.report.scores import _scores_section
from sb3_iter_ckpt.repository import CheckpointRepository

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f6f7f9}
main{max-width:1150px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:0 0 2px;font-size:28px}h2{margin:34px 0 8px;font-size:20px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
.sub{color:#5b6572;margin:0 0 12px}
table{border-collapse:collapse;font-size:13.5px}th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #eceef1}
table.meta th{color:#5b6572;font-weight:500;white-space:nowrap;vertical-align:top}
.problem{background:#fdecea;border:2px solid #c62828;color:#8e1c1c;padding:8px 14px;border-radius:6px;margin:10px 0}
.ok{background:#e8f5e9;border:1px solid #2e7d32;color:#1b5e20;padding:6px 14px;border-radius:6px}
.note,.caveat{background:#fff8e1;border:1px solid #f0c36d;padding:6px 14px;border-radius:6px}
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
