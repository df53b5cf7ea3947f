"""The checkpoint table section: every iteration, one row each, sortable by any column."""

from __future__ import annotations

from typing import Any

from sb3_iter_ckpt.report.markup import _e, _num, _size
from sb3_iter_ckpt.report.model import IterationRow, ReportData, forward_metric

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
