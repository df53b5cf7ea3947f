"""The callback's contract, with real SB3 training at tiny budgets."""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize

from sb3_iter_ckpt import (
    Checkpoint,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFound,
    CheckpointRepository,
    IntegrityError,
    IterationCheckpointCallback,
)


def test_one_learn_per_iteration_keeps_every_iteration(repo_root, make_ppo, eval_env):
    repo = CheckpointRepository(repo_root)
    for it in range(3):
        model = make_ppo(seed=it)
        cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=64, n_eval_episodes=2)
        model.learn(192, callback=cb)
        assert [c.iteration for c in cb.committed] == [it]
    cks = repo.list()
    assert [c.iteration for c in cks] == [0, 1, 2]
    for ck in cks:
        assert isinstance(ck, Checkpoint) and ck.has_model and ck.model_path.is_file()
        assert ck.size_bytes == ck.model_path.stat().st_size
        assert len(ck.sha256) == 64 and ck.created_at and ck.reason is None
        assert 0 < ck.timesteps <= 192
        assert ck.record["algorithm"] == "stable_baselines3.ppo.ppo.PPO"
        assert ck.record["n_evaluations"] == 3
        assert {"stable_baselines3", "torch", "gymnasium"} <= set(ck.record["versions"])
        assert isinstance(repo.load(ck.iteration), PPO)
    best = repo.best()
    assert best.score("mean_reward") == max(c.score("mean_reward") for c in cks)
    assert (repo_root / "best_model.zip").read_bytes() == best.model_path.read_bytes()
    assert repo.verify() == []


def test_repository_given_as_a_plain_path_string(repo_root, make_ppo):
    cb = IterationCheckpointCallback(str(repo_root), eval_freq=10_000)
    make_ppo().learn(64, callback=cb)
    assert CheckpointRepository(repo_root).iterations() == [0]


@pytest.mark.parametrize("n_envs", [1, 4])
def test_iteration_timesteps_counts_timesteps_not_calls(repo_root, make_ppo, eval_env, n_envs):
    repo = CheckpointRepository(repo_root)
    model = make_ppo(n_envs=n_envs, n_steps=16)
    cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1, iteration_timesteps=128)
    model.learn(320, callback=cb)  # windows [0,128) [128,256) [256,320]
    cks = repo.list()
    assert [c.iteration for c in cks] == [0, 1, 2]
    for ck in cks:
        start, end = ck.record["window_timesteps"]
        assert start < ck.timesteps <= end, "the snapshot comes from inside its own window"
    assert [c.record["window_timesteps"][0] for c in cks] == [0, 128, 256]
    # eval every 32 timesteps whatever n_envs: 4 per full window
    assert cks[0].record["n_evaluations"] == 4


def test_empty_last_window_makes_no_iteration(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_freq=10_000, iteration_timesteps=64)
    make_ppo(n_steps=32).learn(128, callback=cb)  # boundaries at 64 and 128 exactly
    assert repo.iterations() == [0, 1]


def test_evaluation_at_boundary_when_none_happened(repo_root, make_ppo, eval_env):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=1_000_000, n_eval_episodes=1)
    make_ppo().learn(64, callback=cb)
    ck = repo.get(0)
    assert ck.has_model and ck.record["n_evaluations"] == 1


def test_placeholder_below_min_score(repo_root, make_ppo, eval_env):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1, min_score=1e9)
    make_ppo().learn(64, callback=cb)
    ck = repo.get(0)
    assert not ck.has_model and ck.reason == "below_min_score" and ck.model_path is None
    assert (repo_root / "checkpoints" / "no_model_iter_0.json").is_file()
    assert not (repo_root / "checkpoints" / "model_iter_0.zip").exists()
    assert repo.best() is None
    with pytest.raises(CheckpointNotFound):
        repo.load_best()
    with pytest.raises(CheckpointNotFound, match="placeholder"):
        repo.load(0)


def test_callable_min_score(repo_root, make_ppo, eval_env):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(
        repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1, min_score=lambda m: m["mean_ep_length"] < 0
    )
    make_ppo().learn(64, callback=cb)
    assert repo.get(0).reason == "below_min_score"


def test_nan_metric_is_never_the_best(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    calls = iter([float("nan"), float("inf"), 5.0, float("nan")])

    def evaluator(model, env):
        return {"sharpe": next(calls)}

    cb = IterationCheckpointCallback(repo, evaluator=evaluator, monitor="sharpe", eval_freq=32)
    make_ppo().learn(128, callback=cb)
    ck = repo.get(0)
    assert ck.has_model and ck.metrics["sharpe"] == 5.0
    assert ck.record["n_nan_evaluations"] == 3

    cb2 = IterationCheckpointCallback(repo, evaluator=lambda m, e: {"sharpe": math.nan}, monitor="sharpe", eval_freq=32)
    make_ppo().learn(64, callback=cb2)
    ck1 = repo.get(1)
    assert not ck1.has_model and ck1.reason == "nan_metric"
    assert repo.best().iteration == 0


def test_no_evaluation_placeholder_without_finished_episodes(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    # Pendulum episodes last 200 steps: none finishes within 64 timesteps, and there is no eval env.
    cb = IterationCheckpointCallback(repo, eval_freq=16)
    make_ppo(env_id="Pendulum-v1").learn(64, callback=cb)
    assert repo.get(0).reason == "no_evaluation"


def test_training_episode_statistics_without_eval_env(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_freq=64)
    make_ppo(n_envs=2).learn(256, callback=cb)
    ck = repo.get(0)
    assert ck.has_model and ck.metrics["n_episodes"] >= 1
    assert ck.record["evaluation"]["source"] == "training_episodes"


def test_nested_dotted_monitor_and_min_mode(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    values = iter([0.3, 0.1, 0.2, 0.4])

    def evaluator(model, env):
        return {"validation": {"max_drawdown": next(values)}}

    cb = IterationCheckpointCallback(
        repo, evaluator=evaluator, monitor="validation.max_drawdown", mode="min", eval_freq=32
    )
    make_ppo().learn(128, callback=cb)
    assert repo.get(0).metric("validation.max_drawdown") == 0.1
    assert repo.best().iteration == 0


def test_monitor_missing_or_not_numeric_is_a_clear_error(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, evaluator=lambda m, e: {"sharpe": 1.0}, monitor="sortino", eval_freq=32)
    with pytest.raises(CheckpointError, match="sortino"):
        make_ppo().learn(64, callback=cb)
    cb = IterationCheckpointCallback(repo, evaluator=lambda m, e: {"sharpe": "high"}, monitor="sharpe", eval_freq=32)
    with pytest.raises(CheckpointError, match="not numeric"):
        make_ppo().learn(64, callback=cb)


def test_resume_with_iteration_none_takes_next_free(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    for _ in range(2):
        make_ppo().learn(64, callback=IterationCheckpointCallback(repo, eval_freq=32))
    # a new process would open a fresh repository object
    cb = IterationCheckpointCallback(str(repo_root), eval_freq=32)
    make_ppo().learn(64, callback=cb)
    assert repo.iterations() == [0, 1, 2]
    assert cb.committed[0].iteration == 2


def test_same_callback_reused_across_learn_calls(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_freq=32)
    model = make_ppo()
    model.learn(64, callback=cb)
    model.learn(64, callback=cb, reset_num_timesteps=False)
    assert repo.iterations() == [0, 1]


def test_overwrite_refused_before_training(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    make_ppo().learn(64, callback=IterationCheckpointCallback(repo, eval_freq=32))
    before = repo.get(0)
    model = make_ppo()
    with pytest.raises(CheckpointExistsError, match="already committed"):
        model.learn(64, callback=IterationCheckpointCallback(repo, iteration=0, eval_freq=32))
    assert model.num_timesteps == 0, "refused before any training time was spent"
    assert repo.get(0).sha256 == before.sha256
    # with iteration_timesteps the later windows are checked too
    with pytest.raises(CheckpointExistsError):
        make_ppo().learn(
            128, callback=IterationCheckpointCallback(repo, iteration=-0 + 0, eval_freq=32, iteration_timesteps=64)
        )


def test_overwrite_true_replaces(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    make_ppo().learn(64, callback=IterationCheckpointCallback(repo, eval_freq=32))
    old = repo.get(0)
    cb = IterationCheckpointCallback(repo, iteration=0, eval_freq=32, min_score=1e9, overwrite=True)
    make_ppo(seed=5).learn(64, callback=cb)
    new = repo.get(0)
    assert not new.has_model and new.reason == "below_min_score"
    assert not old.model_path.exists(), "the replaced iteration's model is gone with its record"
    assert repo.iterations() == [0] and repo.verify() == []


def test_on_training_end_twice_changes_nothing(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_freq=32)
    make_ppo().learn(64, callback=cb)
    snapshot = sorted(p.name for p in (repo_root / "checkpoints").iterdir())
    cb.on_training_end()  # as RL Zoo does in a finally:
    assert sorted(p.name for p in (repo_root / "checkpoints").iterdir()) == snapshot
    assert len(cb.committed) == 1


class _Boom(BaseCallback):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise RuntimeError("boom")
        return True


def test_exception_inside_learn_leaves_earlier_iterations_intact(repo_root, make_ppo):
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(repo, eval_freq=32, iteration_timesteps=64)
    with pytest.raises(RuntimeError, match="boom"):
        make_ppo().learn(256, callback=CallbackList([cb, _Boom(at=150)]))
    assert repo.iterations() == [0, 1]
    assert repo.verify() == []
    assert all(isinstance(repo.load(i), PPO) for i in repo.iterations())
    assert (repo_root / "training_summary.json").is_file(), "summaries are written at each boundary"


def test_inside_callback_list_and_logger_records(repo_root, make_ppo, tmp_path, eval_env):
    repo = CheckpointRepository(repo_root)
    model = make_ppo()
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1, iteration_timesteps=64)
    model.learn(192, callback=CallbackList([cb]))
    assert repo.iterations() == [0, 1, 2]
    with open(tmp_path / "log" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert "checkpoint/iteration" in rows[0] and "checkpoint/eval_score" in rows[0]
    assert {r["checkpoint/iteration"] for r in rows if r["checkpoint/iteration"]} >= {"0", "1"}


def test_vecnormalize_round_trip(repo_root, tmp_path):
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    repo = CheckpointRepository(repo_root)
    evaluator = lambda m, e: {"mean_reward": 1.0}  # noqa: E731
    cb = IterationCheckpointCallback(repo, evaluator=evaluator, eval_freq=10_000)
    model.learn(128, callback=cb)
    ck = repo.get(0)
    assert "vecnormalize" in ck.artifacts
    saved_mean = venv.obs_rms.mean.copy()
    loaded = repo.load(0, env=make_vec_env("Pendulum-v1", n_envs=1, seed=1))
    env = loaded.get_env()
    assert isinstance(env, VecNormalize)
    assert not env.training and not env.norm_reward
    np.testing.assert_allclose(env.obs_rms.mean, saved_mean)
    obs = env.reset()
    loaded.predict(obs)
    assert (repo_root / "best_vecnormalize.pkl").is_file()


def test_off_policy_with_replay_buffer(repo_root):
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = SAC(
        "MlpPolicy",
        env,
        buffer_size=500,
        learning_starts=32,
        batch_size=16,
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[16]),
    )
    repo = CheckpointRepository(repo_root)
    cb = IterationCheckpointCallback(
        repo, evaluator=lambda m, e: {"mean_reward": float(m.num_timesteps)}, eval_freq=32, save_replay_buffer=True
    )
    model.learn(96, callback=cb)
    ck = repo.get(0)
    assert {"model", "replay_buffer"} <= set(ck.artifacts)
    loaded = repo.load(0)
    assert isinstance(loaded, SAC)
    repo.load_replay_buffer(0, loaded)
    assert loaded.replay_buffer.size() == 96


def test_dqn_discrete_off_policy(repo_root, eval_env):
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=16,
        buffer_size=200,
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[16]),
    )
    repo = CheckpointRepository(repo_root)
    model.learn(64, callback=IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1))
    assert isinstance(repo.load(0, env=gym.make("CartPole-v1")), DQN)


def test_tampered_model_refused_before_unpickling(repo_root, make_ppo, mocker):
    repo = CheckpointRepository(repo_root)
    make_ppo().learn(64, callback=IterationCheckpointCallback(repo, eval_freq=32))
    path = repo.get(0).model_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    spy = mocker.spy(PPO, "load")
    with pytest.raises(IntegrityError, match="sha256"):
        repo.load(0)
    assert spy.call_count == 0, "nothing was unpickled"
    problems = repo.verify()
    assert len(problems) >= 1 and problems[0].iteration == 0
    path.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(IntegrityError):
        repo.load(0)


def test_get_missing_is_checkpoint_not_found(repo_root):
    repo = CheckpointRepository(repo_root)
    with pytest.raises(CheckpointNotFound) as info:
        repo.get(7)
    assert isinstance(info.value, CheckpointError)
    assert repo.best() is None and repo.list() == []


def test_argument_validation():
    with pytest.raises(CheckpointError):
        IterationCheckpointCallback("x", mode="up")
    with pytest.raises(CheckpointError):
        IterationCheckpointCallback("x", eval_freq=0)
    with pytest.raises(CheckpointError):
        IterationCheckpointCallback("x", on_error="ignore")
    with pytest.raises(CheckpointError):
        IterationCheckpointCallback("x", min_score="high")
