"""The numbers section: the stitched forward curve against its baselines, walk-forward efficiency, the deflated
Sharpe ratio, PBO with the histogram of its logits, then the statistics of the selection scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sb3_iter_ckpt.report.bundle import _plotly
from sb3_iter_ckpt.report.charts import _GAIN, _LOSS, _chart
from sb3_iter_ckpt.report.markup import (
    _caveat,
    _count,
    _e,
    _how,
    _missing_reason,
    _num,
    _pct,
    _size,
    _unavailable,
    _when,
)
from sb3_iter_ckpt.report.model import ReportData, _finite, _forward_value, forward_metric

#: Bars of the CSCV logit histogram at most (the logits are pre-binned: up to 12,870 values).
MAX_HISTOGRAM_BINS = 40


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
        f'<section id="numbers"><h2>The numbers</h2>{_caveat(data)}{_forward_numbers(data)}'
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
    no_bh = base.get("buy_and_hold") is None and bool(base.get("buy_and_hold_reason"))
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
        + (_unavailable("buy-and-hold", f"not available: {base['buy_and_hold_reason']}") if no_bh else "")
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
