"""A run's root is tied to its candidates' folders (issue 21, item 3).

The DSR's trials, PBO, the candidates chart and a rerun's choice all come from ``candidates/<name>/``;
the root's signed records hold what each candidate kept on each window (model and forward hashes, the
candidate repository's identity), so a folder replaced by another experiment's (same key) or a candidate's
files copied over another's is refused by name, never folded into the statistics.
Real PPO and A2C at tiny budgets, two real signed runs.
"""

from __future__ import annotations

import shutil

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.repository import SIGNING_KEY_ENV
from sb3_iter_ckpt.splitter import WalkForwardSplitter

KEY = "the lab's key"
PPO_KW = dict(n_steps=64, batch_size=64, n_epochs=1)
TWO = (Candidate("ppo-s0", "ppo", 7, PPO_KW), Candidate("a2c-s1", "a2c", 8, dict(n_steps=16)))
SPLIT = WalkForwardSplitter(150, 60, test_size=60)


def _run(root, seed: int):
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    repo = CheckpointRepository(root, signing_key=KEY)
    params = dict(algo_kwargs=PPO_KW, eval_freq=32, progress=False, seed=7, candidates=TWO, executor="sequential")
    return WalkForwardRunner(synthetic_prices(420, seed=seed), SPLIT, repo, 128, **params).run()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(SIGNING_KEY_ENV, raising=False)
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        base = tmp_path_factory.mktemp("bind")
        mine, theirs = base / "mine", base / "theirs"
        assert _run(mine, 3).forward["n_trials"] == 2
        _run(theirs, 3)  # the same configuration and data: only the repositories differ
    return mine, theirs


@pytest.fixture
def runs(two_runs, tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3log"))
    mine, theirs = (tmp_path / "mine", tmp_path / "theirs")
    shutil.copytree(two_runs[0], mine)
    shutil.copytree(two_runs[1], theirs)
    return mine, theirs


def _repo(root) -> CheckpointRepository:
    return CheckpointRepository(root, signing_key=KEY)


def test_an_untouched_run_verifies_down_into_its_candidates(runs):
    mine, _ = runs
    assert _repo(mine).verify() == []
    report = _repo(mine).forward_report()
    assert report["deflated_sharpe"] is not None and report["pbo"] is not None


@pytest.mark.parametrize("swap", ["another experiment's folder", "the other candidate's folder"])
def test_a_replaced_candidate_folder_is_refused_by_name_and_moves_no_statistic(runs, swap):
    mine, theirs = runs
    source = theirs / "candidates" / "ppo-s0" if swap.startswith("another") else mine / "candidates" / "a2c-s1"
    shutil.rmtree(mine / "candidates" / "ppo-s0")
    shutil.copytree(source, mine / "candidates" / "ppo-s0")
    repo = _repo(mine)
    problems = [p for p in repo.verify() if p.file.startswith("candidates/ppo-s0")]
    assert problems and "not this run's" in problems[0].message, repo.verify()
    report, _ = repo.forward_status()
    assert report is not None, "the root's own curve still reports"
    assert report["deflated_sharpe"] is None and "ppo-s0" in report["deflated_sharpe_reason"]
    assert report["pbo"] is None and "ppo-s0" in report["pbo_reason"]
    with pytest.raises(CheckpointError, match="ppo-s0"):
        from sb3_iter_ckpt.repository import candidate_forwards

        candidate_forwards(repo)


def test_a_rerun_refuses_to_choose_again_from_a_replaced_folder(runs):
    mine, theirs = runs
    shutil.rmtree(mine / "candidates" / "ppo-s0")
    shutil.copytree(theirs / "candidates" / "ppo-s0", mine / "candidates" / "ppo-s0")
    last = max(_repo(mine).iterations())
    for f in (mine / "checkpoints").glob(f"*_iter_{last}.*"):
        f.unlink()  # the root's last window removed: a rerun chooses it again
    with pytest.raises(CheckpointError, match="ppo-s0.*not this run's"):
        _run(mine, 3)
    assert last not in _repo(mine).iterations(), "nothing chosen, nothing signed from the foreign folder"
