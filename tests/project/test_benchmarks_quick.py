"""Every benchmark script runs with ``--quick`` (a smoke test: no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run_all():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SCRIPTS = list(_run_all().SCRIPTS)  # what ``python benchmarks/run_all.py`` runs


def test_run_all_lists_the_six_benchmarks_of_the_performance_page():
    assert len(SCRIPTS) >= 6 and all((BENCHMARKS / s).is_file() for s in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_quick_runs_and_prints_its_table(script, tmp_path):
    env = dict(os.environ, SB3_LOGDIR=str(tmp_path / "sb3log"), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("### ") for ln in lines), proc.stdout[-3000:]
    assert any(ln.startswith("|---") for ln in lines), "a Markdown table"
    assert sum(ln.startswith("| ") for ln in lines) >= 3, "a header and rows"
    assert any(ln.startswith("GOAL ") for ln in lines), "the goal line with its ratio"
    assert not list(tmp_path.glob("sb3-iter-ckpt-bench-*")), "the benchmark cleans up after itself"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--bogus"], ["no_such_bench.py"]])
def test_run_all_help_and_bad_arguments_run_nothing(args, tmp_path):
    """Regression: ``--help`` started the full seven-minute run instead of printing the usage."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), *args],
        env=dict(os.environ, SB3_LOGDIR=str(tmp_path / "sb3log")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert proc.returncode == (0 if args[0] in ("--help", "-h") else 2), proc.stdout[-2000:]
    assert proc.stdout.startswith("usage: "), proc.stdout[-2000:]
    assert "### " not in proc.stdout and "## Goals" not in proc.stdout, "no benchmark ran"
