"""A DataFrame run (a feature table, the user's env, test parts) killed with SIGKILL after its first window is
committed resumes to the end with nothing lost, in a real subprocess; a changed feature column then refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.errors import ConfigMismatchError

SCRIPT = textwrap.dedent(
    """
    import sys

    sys.path.insert(0, sys.argv[2])
    from test_table_data import _runner, ohlcv_table

    table = ohlcv_table()
    if sys.argv[3] == "changed":
        table.iloc[200, table.columns.get_loc("rsi")] += 1.0
    # a budget that keeps window 1 training for a second or more, long enough to be killed in it
    runner = _runner(table, sys.argv[1], total_timesteps=2048)
    result = runner.run()
    print("trained", result.trained, "skipped", result.skipped)
    """
)


def _run(root, mode, env, tests_dir):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(root), str(tests_dir), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_dataframe_run_killed_after_its_first_window_resumes_to_the_end(tmp_path):
    tests_dir = os.path.dirname(__file__)
    env = {**os.environ, "SB3_LOGDIR": str(tmp_path / "logs")}
    root = tmp_path / "exp"
    proc = _run(root, "first", env, tests_dir)
    deadline = time.monotonic() + 120
    while not list((root / "checkpoints").glob("forward_iter_0.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first window was not committed in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: window 0 committed and traded, window 1 training
    proc.wait()
    assert CheckpointRepository(root).iterations() == [0]

    again = _run(root, "resume", env, tests_dir)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "trained [1, 2] skipped [0]" in out
    repo = CheckpointRepository(root)
    assert repo.iterations() == [0, 1, 2] and [f.iteration for f in repo.forwards()] == [0, 1, 2]
    assert repo.verify() == []

    changed = _run(root, "changed", env, tests_dir)
    _, err = changed.communicate(timeout=300)
    assert changed.returncode != 0 and ConfigMismatchError.__name__ in err and "data_sha256" in err
