"""One self-contained HTML page per experiment: what ran, how each iteration scored, every checkpoint.

The page is built in two steps so that new data adds sections without rewriting either:
``collect_report`` reads the repository into a ``ReportData`` (plain values, no HTML), and
``render_report`` turns a ``ReportData`` into the page. ``write_report`` does both and writes the file.

The page works offline and alone: styles, scripts (a partial plotly.js bundle, vendored in
``sb3_iter_ckpt/_vendor``), data and images are inline, so it makes no request when opened. Charts
are Plotly figures built with the ``plotly`` package (the ``report`` extra); with JavaScript off each
chart shows its values as a table and the checkpoint table stays a plain HTML table.
"""

from __future__ import annotations

import contextlib
import html
import importlib.resources
import json
import os
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.record import Checkpoint, parse_record_name, utc_now
from sb3_iter_ckpt.repository import CheckpointRepository, Problem
from sb3_iter_ckpt.retention import is_pruned
from sb3_iter_ckpt.version import __version__

#: What every section that needs issue 15's forward evaluation shows until the repository has it.
FORWARD_MISSING = "not available: this run has no forward (out-of-sample) data"
#: The walk-forward runner's configuration file at the repository root.
RUN_FILE = "walk_forward.json"
#: A line chart keeps at most this many points; longer series are pre-binned (min and max per bin).
MAX_LINE_POINTS = 4000
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
    :param forward: Issue 15's forward results (stitched curve, baselines, statistics); None when the run has none.
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
    forward: dict[str, Any] | None = None


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
    repo: CheckpointRepository, config: dict[str, Any] | None, cks: Sequence[Checkpoint], monitor: str, mode: str
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
        ("candidates", FORWARD_MISSING),
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


def collect_report(repository: CheckpointRepository | str | os.PathLike[str]) -> ReportData:
    """Read a repository into the page's data model, running ``verify()`` on the way.

    Never raises for bad content: an unreadable record, a missing configuration or a repository
    without iterations become ``notes``/``problems`` that the page shows.

    :param repository: A ``CheckpointRepository``, or the root of one (a path or an ``s3://`` URL).
    :return: The ``ReportData``.
    """
    repo = _open(repository)
    problems, problem_lines = _verify(repo)
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
    header = _header(repo, config, cks, monitor, mode)
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
    )


# -- charts ------------------------------------------------------------------------------------------------------
def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise CheckpointError(_INSTALL) from exc
    return go


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
    pts = [(a, b) for a, b in zip(x, y, strict=True) if b is not None]
    n_bins = max(1, max_points // 2)
    size = -(-len(pts) // n_bins)
    out: list[tuple[Any, Any]] = []
    for start in range(0, len(pts), size):
        chunk = pts[start : start + size]
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        out += sorted({lo, hi}, key=lambda p: p[0])
    return [p[0] for p in out], [p[1] for p in out]


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


def _unavailable(what: str = "") -> str:
    return f'<p class="unavailable">{_e(what + ": " if what else "")}{_e(FORWARD_MISSING)}</p>'


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


def _chart(chart_id: str, fig: Any) -> str:
    spec = json.loads(fig.to_json())
    payload = json.dumps({"data": spec["data"], "layout": spec["layout"]}, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # JSON inside <script>: "</script>" must not end it
    return (
        f'<div class="chart" id="{chart_id}"></div>'
        f'<script type="application/json" class="figure" data-target="{chart_id}">{payload}</script>'
        f"<noscript><p>JavaScript is off: the chart's values.</p>{_fallback_table(spec)}</noscript>"
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


def _forward_curve_section(data: ReportData) -> str:
    # issue 15 draws data.forward here: the stitched curve against buy-and-hold and flat, windows marked,
    # the drawdown under it
    return f'<section id="forward-curve"><h2>Stitched forward equity curve</h2>{_unavailable()}</section>'


def _scores_section(data: ReportData) -> str:
    if not data.rows:
        chart = '<p class="note">no iteration to chart</p>'
    else:
        chart = _chart("chart-scores", _score_figure(data))
    return (
        f'<section id="scores"><h2>Per iteration: selection score</h2>'
        f"<p>The score each iteration's kept model was chosen by ({_e(data.monitor)}, {_e(data.mode)}), "
        "on its window's validation part: the best of several evaluations on the same data, so optimistic.</p>"
        f"{chart}{_unavailable('forward score per iteration')}{_unavailable('candidates per window')}</section>"
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
    slots = "".join(
        _unavailable(what)
        for what in (
            "stitched forward metrics against buy-and-hold",
            "walk-forward efficiency",
            "deflated Sharpe ratio",
            "probability of backtest overfitting (PBO)",
        )
    )
    return f'<section id="numbers"><h2>The numbers</h2>{body}{slots}</section>'


_COLUMNS = ("iteration", "status", "{monitor}", "validation", "timesteps", "size on disk", "sha256", "committed")


def _cells(r: IterationRow) -> list[tuple[str, Any]]:
    """(text, sort key) per column."""
    status = r.status if not r.reason else f"{r.status}: {r.reason}"
    if r.status == "pruned":
        status = "pruned (model removed, record kept)"
    return [
        (f"{r.iteration}{' ★ best' if r.best else ''}", r.iteration),
        (status, status),
        (_num(r.score), "" if r.score is None else r.score),
        (r.validation or "–", r.validation),
        (_num(r.timesteps), "" if r.timesteps is None else r.timesteps),
        (_size(r.size_bytes), r.size_bytes),
        ((r.sha256 or "")[:12] or "–", r.sha256 or ""),
        ((r.created_at or "–")[:19].replace("T", " "), r.created_at or ""),
    ]


def _table_section(data: ReportData) -> str:
    heads = "".join(
        f'<th scope="col" data-col="{i}"><button type="button">{_e(c.format(monitor=data.monitor))}</button></th>'
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
    source = (importlib.resources.files("sb3_iter_ckpt") / "_vendor" / _BUNDLE).read_text(encoding="utf-8")
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
        f"<style>{_CSS}</style></head><body><main>{''.join(sections)}</main>"
        f"<script>{bundle}</script><script>{_SCRIPT}</script></body></html>"
    )


def default_report_path(repository: CheckpointRepository) -> Path:
    """``ROOT/report.html`` for a local repository; ``./{experiment}-report.html`` for a URL root."""
    root = repository.root
    return root / "report.html" if isinstance(root, Path) else Path(f"{root.name}-report.html")


def write_report(
    repository: CheckpointRepository | ReportData | str | os.PathLike[str], path: str | os.PathLike[str]
) -> Path:
    """Write the experiment's report page to the local file ``path`` (also for an ``s3://`` repository).

    The file is replaced atomically: a reader sees the old page or the new one, never half of one.

    :param repository: A ``CheckpointRepository``, its root (a path or URL), or an already collected ``ReportData``.
    :param path: Where to write the HTML file; its folder is created.
    :return: The path written.
    """
    _plotly()  # the clear message before any work
    data = repository if isinstance(repository, ReportData) else collect_report(repository)
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
