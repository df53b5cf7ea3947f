"""Every script in ``examples/`` runs end to end at a tiny budget and ends with its report.

Each script takes ``--timesteps N --out DIR`` and writes ``DIR/report.html``; it runs in a subprocess, as a
user runs it (``python examples/<script>.py``), with ``SB3_LOGDIR`` inside the test's folder. Its report is
then opened in a real Chromium, where every chart the page holds must be drawn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: Training timesteps per window (and candidate): enough for a boundary, small enough for the suite.
TINY = 64


def test_there_are_examples():
    assert [p.name for p in EXAMPLES] == [
        "callback_loop_with_test_env.py",
        "feature_table_walk_forward.py",
        "gym_anytrading_walk_forward.py",
        "gym_trading_env_walk_forward.py",
        "two_asset_portfolio.py",
    ]


#: The charts each report must draw: a walk-forward with test parts and two candidates has all five sections'
#: charts; a hand-written loop has no candidates to compare.
WALK_FORWARD_CHARTS = {"chart-scores", "chart-forward", "chart-selection-forward", "chart-candidates", "chart-logits"}
CHARTS = {"callback_loop_with_test_env.py": {"chart-scores", "chart-forward", "chart-selection-forward"}}


def _drawn_charts(chromium, report: Path) -> dict[str, int]:
    """Every ``div.chart`` of the page by id, with the traces Plotly drew in it (0: not drawn); page errors fail."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.resolve().as_uri())
        page.wait_for_function(
            "() => [...document.querySelectorAll('div.chart')].every(d => d._fullLayout !== undefined)"
        )
        drawn = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('div.chart')].map(d => [d.id,
                d.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length]))"""
        )
        assert errors == []
        return drawn
    finally:
        context.close()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_an_example_runs_and_writes_its_report(script, tmp_path, chromium):
    env = {**os.environ, "SB3_LOGDIR": str(tmp_path / "logs")}
    out = tmp_path / "out"
    args = [sys.executable, str(script), "--timesteps", str(TINY), "--out", str(out)]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = out / "report.html"
    assert report.is_file() and report.stat().st_size > 100_000  # the page, plotly.js inlined
    assert f"report: {report}" in proc.stdout
    # a walk-forward run's root, or a hand-written loop's repository (its checkpoint summary, no candidates)
    runs = [p.parent for p in out.rglob("walk_forward.json")]
    runs += [p.parent for p in out.rglob("checkpoint_summary.json") if not any(r in p.parents for r in runs)]
    assert runs, "the example wrote no checkpoint repository"
    for root in runs:
        repo = CheckpointRepository(root)
        assert repo.iterations() and repo.verify() == []
    drawn = _drawn_charts(chromium, report)
    assert set(drawn) == CHARTS.get(script.name, WALK_FORWARD_CHARTS)
    assert all(n > 0 for n in drawn.values()), drawn
    # gym-anytrading's returns are realized profit: the page and `forward` say so; the others' are not
    realized = script.name == "gym_anytrading_walk_forward.py"
    page = report.read_text(encoding="utf-8")
    assert page.count('<p class="caveat"><strong>Mind:</strong> every return here is realized profit') == (
        3 if realized else 0
    )
    if runs[0].joinpath("walk_forward.json").exists():
        cli = [sys.executable, "-m", "sb3_iter_ckpt.cli", "forward", str(runs[0])]
        shown = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert ("mind: every return here is realized profit" in shown.stdout) == realized
