"""The header section: the experiment, what ``verify()`` found, the notes and the run's configuration."""

from __future__ import annotations

from sb3_iter_ckpt.common.version import __version__
from sb3_iter_ckpt.report.markup import _caveat, _e
from sb3_iter_ckpt.report.model import ReportData


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
        f"by sb3-iter-ckpt {_e(__version__)}</p>{verify}{notes}{_caveat(data)}"
        f'<table class="meta"><tbody>{lines}</tbody></table></header>'
    )
