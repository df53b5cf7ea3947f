"""What the CLI says when a record is left out, and how Python warnings reach its user (trust, third pass).

A tampered root record takes its forward result out of the stitched curve, so ``forward`` had no forward
data and blamed ``forward_returns.csv`` ("run the walk-forward again"), which a rerun does not fix: the
reason now names the record. Python warnings (the repository's "record(s) left out" ones) reach a CLI
user as one ``sb3-iter-ckpt: warning: ...`` line each, never with a source line or the package's file path.
Real tiny signed walk-forward with a test part.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.cli import EXIT_NOT_FOUND, main
from sb3_iter_ckpt.repository import SIGNING_KEY_ENV
from sb3_iter_ckpt.splitter import WalkForwardSplitter

KEY = "cli-messages key"
CK = "checkpoints"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prices, tiny_algo) -> Path:
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    root = tmp_path_factory.mktemp("messages") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(SIGNING_KEY_ENV, raising=False)
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        repo = CheckpointRepository(root, signing_key=KEY)
        params = dict(algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7, total_timesteps=128)
        params["executor"] = "sequential"
        params["splitter"] = WalkForwardSplitter(150, 60, test_size=60)
        runner = WalkForwardRunner(prices, repository=repo, **params)
        assert runner.run().forward is not None
    assert CheckpointRepository(root, signing_key=KEY).iterations() == [0, 1, 2]
    return root


@pytest.fixture
def root(finished, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)
    shutil.copytree(finished, tmp_path / "exp")
    return tmp_path / "exp"


def _tamper(root: Path, i: int, how: str) -> None:
    path = root / CK / f"metrics_iter_{i}.json"
    record = json.loads(path.read_text())
    if how == "edited":
        record["metrics"]["mean_reward"] = 1e9
    elif how == "unsigned":
        del record["signature"]
    else:
        path.write_text("{not json")
        return
    path.write_text(json.dumps(record))


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


WHY = {"edited": "wrong signature", "unsigned": "not signed", "unreadable": "cannot be read"}


@pytest.mark.parametrize("how", sorted(WHY))
@pytest.mark.parametrize("i", [0, 1, 2])  # first, middle (a hole in the curve), last
def test_forward_names_the_record_whose_forward_result_is_left_out(root, i, how):
    _tamper(root, i, how)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report, reason = CheckpointRepository(root).forward_status()
        rc, out, err = _cli("forward", str(root))
    assert report is None and reason is not None
    assert f"iteration {i}" in reason and f"metrics_iter_{i}.json" in reason and WHY[how] in reason, reason
    assert "run verify" in reason and "walk-forward again" not in reason, reason
    assert rc == EXIT_NOT_FOUND and out == ""  # the documented "no forward data for forward"
    assert reason in err and "walk-forward again" not in err, err


def test_a_forward_file_without_a_record_is_named(root):
    (root / CK / "metrics_iter_1.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reason = CheckpointRepository(root).forward_status()[1]
    assert reason is not None and "forward_iter_1.json" in reason and "no record" in reason, reason


def _warning_lines_are_one_line_each(stderr: str) -> None:
    lines = stderr.splitlines()
    assert any(
        line.startswith("sb3-iter-ckpt: warning: 1 record(s)") and "without a valid signature" in line for line in lines
    ), stderr
    for line in lines:
        assert line.startswith("sb3-iter-ckpt: "), stderr  # no source line, no indented continuation
        assert "warnings.warn" not in line and ".py:" not in line and "UserWarning" not in line, stderr
        assert os.path.dirname(os.path.abspath(__file__)) not in line, stderr


def test_cli_warnings_are_one_line_each_in_a_subprocess(root):
    _tamper(root, 1, "edited")
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    for verb in ("forward", "list", "analyze"):
        done = subprocess.run(
            [sys.executable, "-m", "sb3_iter_ckpt.cli", verb, str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        _warning_lines_are_one_line_each(done.stderr)


def test_cli_warnings_are_one_line_each_in_process_and_the_hook_is_restored(root):
    _tamper(root, 1, "edited")
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        shown = warnings.showwarning
        rc, _, err = _cli("list", str(root))
        assert warnings.showwarning is shown
    assert rc == 0
    _warning_lines_are_one_line_each(err)
    assert warnings.showwarning is before
