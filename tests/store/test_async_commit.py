"""``async_commit=True``: same records as the synchronous path, errors never lost, training end waits."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from sb3_iter_ckpt import CheckpointRepository, CommitError, IterationCheckpointCallback
from sb3_iter_ckpt.capture.background import BackgroundJobs

_VOLATILE = {"created_at", "versions"}


def _by_timesteps(m, env):
    return {"mean_reward": float(-abs(m.num_timesteps % 128 - 64))}  # best in the middle of each window


def _sac():
    return SAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, learning_starts=32, batch_size=16, seed=0, device="cpu")


def _train(root, async_commit, **kw):
    repo = CheckpointRepository(root)
    cb = IterationCheckpointCallback(
        repo,
        evaluator=_by_timesteps,
        eval_freq=32,
        iteration_timesteps=128,
        save_replay_buffer=True,
        async_commit=async_commit,
        **kw,
    )
    _sac().learn(384, callback=cb)
    return repo, cb


def _comparable(ck):
    record = {k: v for k, v in ck.record.items() if k not in _VOLATILE}
    record["artifacts"] = sorted(record["artifacts"])
    return record


def test_async_commit_produces_the_same_records_as_sync(tmp_path):
    repo_s, cb_s = _train(tmp_path / "sync", False)
    repo_a, cb_a = _train(tmp_path / "async", True)
    assert [c.iteration for c in cb_a.committed] == [c.iteration for c in cb_s.committed] == [0, 1, 2]
    assert [_comparable(c) for c in repo_a.list()] == [_comparable(c) for c in repo_s.list()]
    for i in range(3):
        a, s = repo_a.load(i, device="cpu"), repo_s.load(i, device="cpu")
        # the replay buffer is the one of the boundary
        repo_a.load_replay_buffer(i, a)
        repo_s.load_replay_buffer(i, s)
        ra, rs = a.replay_buffer, s.replay_buffer
        assert (ra.pos, ra.full) == (rs.pos, rs.full) and ra.pos > i * 128
        for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            np.testing.assert_array_equal(getattr(ra, name), getattr(rs, name))
        for k, v in s.policy.state_dict().items():
            assert torch.equal(a.policy.state_dict()[k], v)
        assert a.num_timesteps == s.num_timesteps
    assert repo_a.verify() == [] and repo_s.verify() == []
    assert (tmp_path / "async" / "best_model.zip").read_bytes() == repo_a.best().model_path.read_bytes()
    assert cb_a.errors == [] and cb_a._committer.pending == 0


def _failing_stage(mocker, repo, fail_for="model_iter_0", exc=None):
    real = repo.storage.stage
    calls = []

    def stage(name, source):
        calls.append((name, threading.current_thread().name))
        if fail_for in name:
            raise exc or OSError(errno.ENOSPC, "No space left on device")
        return real(name, source)

    mocker.patch.object(repo.storage, "stage", side_effect=stage)
    return calls


def test_background_error_with_warn_surfaces_as_warning_and_placeholder(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path / "r")
    calls = _failing_stage(mocker, repo)
    cb = IterationCheckpointCallback(
        repo, evaluator=_by_timesteps, eval_freq=32, iteration_timesteps=128, async_commit=True
    )
    with pytest.warns(UserWarning, match="iteration 0 could not be committed"):
        _sac().learn(256, callback=cb)
    assert any(t == "sb3-iter-ckpt-writer" for _, t in calls), "the write ran in the background"
    assert len(cb.errors) == 1 and isinstance(cb.errors[0], CommitError)
    assert "disk full" in str(cb.errors[0])
    its = {c.iteration: c for c in repo.list()}
    assert its[0].reason == "save_failed" and not its[0].has_model
    assert its[1].has_model
    assert [c.iteration for c in cb.committed] == [0, 1]


def test_background_error_with_raise_surfaces_at_the_next_boundary(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path / "r")
    _failing_stage(mocker, repo)
    model = _sac()
    cb = IterationCheckpointCallback(
        repo, evaluator=_by_timesteps, eval_freq=32, iteration_timesteps=128, async_commit=True, on_error="raise"
    )
    with pytest.raises(CommitError, match="disk full"):
        model.learn(1024, callback=cb)
    # raised at the boundary of iteration 1 or 2 (the write of iteration 0 runs meanwhile), not at the end
    assert model.num_timesteps < 1024
    assert 0 not in repo.iterations()


def test_background_error_with_raise_surfaces_at_training_end(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path / "r")
    _failing_stage(mocker, repo)
    cb = IterationCheckpointCallback(repo, evaluator=_by_timesteps, eval_freq=32, async_commit=True, on_error="raise")
    with pytest.raises(CommitError):
        _sac().learn(96, callback=cb)
    assert repo.iterations() == []


def test_unexpected_background_exception_is_raised_whatever_on_error(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path / "r")
    _failing_stage(mocker, repo, exc=RuntimeError("bug in a writer"))
    cb = IterationCheckpointCallback(repo, evaluator=_by_timesteps, eval_freq=32, async_commit=True, on_error="warn")
    with pytest.raises(RuntimeError, match="bug in a writer"):
        _sac().learn(96, callback=cb)


def test_training_end_waits_for_the_writer(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path / "r")
    real = repo.storage.stage

    def slow_stage(name, source):
        time.sleep(0.4)
        return real(name, source)

    mocker.patch.object(repo.storage, "stage", side_effect=slow_stage)
    cb = IterationCheckpointCallback(
        repo, evaluator=_by_timesteps, eval_freq=32, iteration_timesteps=64, async_commit=True
    )
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, device="cpu").learn(128, callback=cb)
    assert cb._committer.pending == 0
    assert repo.iterations() == [0, 1] and [c.iteration for c in cb.committed] == [0, 1]
    assert (repo.root / "training_summary.json").is_file()
    assert not any(t.name == "sb3-iter-ckpt-writer" for t in threading.enumerate())


def test_close_waits_and_surfaces_after_learn_raised(tmp_path):
    repo = CheckpointRepository(tmp_path / "r")

    class Boom(Exception):
        pass

    def evaluator(m, env):
        if m.num_timesteps > 64:
            raise Boom()
        return {"mean_reward": 1.0}

    cb = IterationCheckpointCallback(repo, evaluator=evaluator, eval_freq=32, iteration_timesteps=64, async_commit=True)
    with pytest.raises(Boom):
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, device="cpu").learn(256, callback=cb)
    cb.close()  # on_training_end never ran: close() waits for the pending write of iteration 0
    assert repo.iterations() == [0] and [c.iteration for c in cb.committed] == [0]


def test_background_jobs_keep_results_and_errors_in_order_and_bound_the_queue():
    w = BackgroundJobs(max_pending=1)
    gate = threading.Event()
    w.submit(lambda: gate.wait(5) and 1, label="a")
    t0 = time.perf_counter()
    threading.Timer(0.2, gate.set).start()
    w.submit(lambda: 1 / 0, label="b")  # waits for room: the first job holds the only slot
    assert time.perf_counter() - t0 >= 0.15
    assert w.wait(5)
    jobs = w.collect()
    assert [j.label for j in jobs] == ["a", "b"]
    assert jobs[0].result == 1 and jobs[0].error is None
    assert isinstance(jobs[1].error, ZeroDivisionError)
    assert w.collect() == []


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from stable_baselines3 import SAC
    from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
    from sb3_iter_ckpt.capture.snapshot import ModelSnapshot

    root, ready = sys.argv[1], sys.argv[2]
    real = ModelSnapshot.write

    def write_then_hang(self, f):
        real(self, f)
        f.flush()
        open(ready, "w").close()  # half the iteration is on disk, under temporary names
        time.sleep(60)

    ModelSnapshot.write = write_then_hang
    ModelSnapshot.__call__ = write_then_hang
    cb = IterationCheckpointCallback(
        CheckpointRepository(root), evaluator=lambda m, e: {"mean_reward": 1.0}, eval_freq=32,
        save_replay_buffer=True, async_commit=True,
    )
    SAC("MlpPolicy", "Pendulum-v1", buffer_size=500, learning_starts=32, device="cpu").learn(64, callback=cb)
    """
)


def test_kill_during_a_background_write_leaves_no_visible_partial_iteration(tmp_path):
    root, ready = tmp_path / "r", tmp_path / "ready"
    env = dict(os.environ, SB3_LOGDIR=str(tmp_path / "log"))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the child died before writing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert any(n.startswith(".") and ".sb3ckpt-tmp-" in n for n in os.listdir(root / "checkpoints"))
    finally:
        proc.kill()
        proc.wait()
    repo = CheckpointRepository(root)  # opening sweeps the dead writer's temporaries
    assert repo.list() == [] and repo.iterations() == []
    assert [n for n in os.listdir(root / "checkpoints") if not n.startswith(".lock")] == []
    assert repo.verify() == []
