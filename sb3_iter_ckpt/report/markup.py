"""The HTML fragments every section shares: escaping (HTML text and attributes; JSON inside ``<script>``), number
formats, the "not available" and "how to read it" paragraphs."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from sb3_iter_ckpt.report.model import FORWARD_MISSING, ReportData, _finite


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# Inside a <script> element the HTML parser ends the element at "</script" and, after "<!--", also reads
# "<script" (the script-data escape states): a value holding "<!--<script>" keeps the real "</script>" from
# closing it, and the rest of the page becomes script text. With no "<" or ">" in the payload neither can
# happen. "&" goes too (the payload then means the same wherever it is read as markup), and U+2028/U+2029,
# line ends to JavaScript parsers before ES2019.
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_for_script(value: Any) -> str:
    """``value`` as compact JSON text that is safe as the whole content of any ``<script>`` element.

    ``<``, ``>``, ``&``, U+2028 and U+2029 are written as ``\\u003c``-style escapes; they can only occur inside
    JSON strings, where such an escape means the same character, so ``json.loads`` (or ``JSON.parse``) of the
    text gives ``value`` back. Every payload the page embeds in a script element goes through here.

    :param value: Plain JSON values (dicts, lists, strings, finite numbers, booleans, None).
    :return: The JSON text, free of ``<``, ``>``, ``&``, U+2028 and U+2029.
    """
    return json.dumps(value, separators=(",", ":")).translate(_SCRIPT_ESCAPES)


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


def _caveat(data: ReportData) -> str:
    """The returns' caveat (e.g. realized profit only), wherever a number or curve built from them is shown."""
    return f'<p class="caveat"><strong>Mind:</strong> every return here is {_e(data.caveat)}</p>' if data.caveat else ""


def _how(text: str) -> str:
    return f'<p class="how"><strong>How to read it:</strong> {_e(text)}</p>'
