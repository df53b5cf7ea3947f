"""Every script in ``examples/`` runs end to end at a tiny budget and ends with its report.

Each script takes ``--timesteps N --out DIR`` and writes ``DIR/report.html``; it runs in a subprocess, as a
user runs it (``python examples/<script>.py``), with ``SB3_LOGDIR`` inside the test's folder.
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
        "two_asset_portfolio.py",
    ]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_an_example_runs_and_writes_its_report(script, tmp_path):
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
