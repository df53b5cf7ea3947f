"""The reading commands stay light: ``list``, ``show``, ``best``, ``verify`` and ``--help`` import neither torch
nor Stable-Baselines3 (they only read files; those two are the package's heaviest imports, and a machine that
only inspects results need not have them).

Each command runs as a real ``python -X importtime -m sb3_iter_ckpt.cli ...`` subprocess on a repository
trained for real; the interpreter's own import log says which modules were loaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "stable_baselines3")
#: ``import time:  self [us] | cumulative | imported package`` (the name indented by its nesting).
IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(?P<module>\S+)\s*$")


@pytest.fixture(scope="module")
def root(two_iterations) -> Path:
    return two_iterations("cli-imports")


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``sb3-iter-ckpt ARGS`` as ``python -m``; the process and every module it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sb3_iter_ckpt.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    modules = {m.group("module") for line in proc.stderr.splitlines() if (m := IMPORT_LINE.match(line))}
    return proc, modules


#: Each command, what its output must show (so that a command failing early cannot pass for a light one).
CASES = [
    (["list", "ROOT"], "2 iteration(s) in"),
    (["list", "ROOT", "--json"], '"iteration": 1'),
    (["show", "ROOT", "1"], "iteration 1: model"),
    (["best", "ROOT"], "best: iteration 1"),
    (["verify", "ROOT"], "ok: 2 iteration(s) hashed"),
    (["--help"], "walk-forward"),
    (["list", "--help"], "--experiment-id"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_a_reading_command_imports_neither_torch_nor_sb3(root, tmp_path, args, expected):
    proc, modules = imported(*(str(root) if a == "ROOT" else a for a in args), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
    assert "sb3_iter_ckpt.cli" in modules  # the log was read: the command itself is in it
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"sb3-iter-ckpt {' '.join(args)} imported {heavy[:5]}"
