"""Static checks in the test run: the package ships ``py.typed``, so its annotations are a contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_finds_no_errors_in_the_package(tmp_path):
    proc = _run("mypy", "--cache-dir", str(tmp_path / "mypy"), "sb3_iter_ckpt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


def test_ruff_lint_and_format_are_clean(tmp_path):
    for args in (("check", "--no-cache", "."), ("format", "--no-cache", "--check", ".")):
        proc = _run("ruff", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
