"""The HTML fragments every section shares: escaping, number formats, the "not available" and "how to read it"
paragraphs."""

from __future__ import annotations

import html
import re
from typing import Any

from sb3_iter_ckpt.report.model import FORWARD_MISSING, ReportData, _finite


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
