"""Plotly, both halves: the vendored plotly.js bundle every page inlines (``_vendor/``), and the ``plotly``
package, imported only when a figure is built (the ``report`` extra)."""

from __future__ import annotations

import importlib.resources
import re
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError

_BUNDLE = "plotly-cartesian.min.js"
_INSTALL = 'the report needs plotly: pip install "sb3-iter-ckpt[report]"'


def plotly_bundle() -> tuple[str, str]:
    """The vendored plotly.js partial bundle: ``(version, source)``."""
    source = (importlib.resources.files("sb3_iter_ckpt.report") / "_vendor" / _BUNDLE).read_text(encoding="utf-8")
    m = re.search(r"plotly\.js \([^)]*\) v(\d+\.\d+\.\d+)", source[:400])
    return (m.group(1) if m else "unknown"), source.replace("</script", "<\\/script")


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:
        raise CheckpointError(_INSTALL) from exc
    return go
