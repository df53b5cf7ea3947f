"""Fixtures of the walk-forward tests: the sequential runs several modules compare against, trained once, and
one process pool.

The runs are ``(root, result)`` of a real tiny walk-forward (``make_runner``'s defaults: PPO, seed 7, four windows
of 150 training and 60 validation days, no test part). Tests only read them; a test that changes a repository
trains its own or works on a copy (``shutil.copytree`` into its tmp_path).
"""

from __future__ import annotations

import pytest

from sb3_iter_ckpt.runner.executors import ProcessExecutor


@pytest.fixture(scope="session")
def sequential_run(tmp_path_factory, prices, make_runner):
    """The default run, sequential, every window: ``(root, result)``."""
    root = tmp_path_factory.mktemp("sequential") / "seq"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        result = make_runner(prices, root).run()
    return root, result


@pytest.fixture(scope="session")
def warm_run(tmp_path_factory, prices, make_runner):
    """The default run with ``warm_start=True``, sequential, its first three windows: ``(root, result)``."""
    root = tmp_path_factory.mktemp("warm") / "seq"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        result = make_runner(prices, root, warm_start=True).run(max_iterations=3)
    return root, result


@pytest.fixture(scope="session")
def pool():
    """One pool of two ``spawn`` workers for every test that trains in a local process pool: a worker start costs
    seconds (torch and SB3 are imported once per worker). The runner leaves an executor it was given open;
    ``executor="process"`` (a pool the runner starts and closes itself) runs in the docs' examples."""
    executor = ProcessExecutor(2)
    yield executor
    executor.close()
