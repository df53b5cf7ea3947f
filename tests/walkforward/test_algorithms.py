"""Every SB3 and sb3-contrib algorithm as a candidate (issue 23): the names, the action mode of the built-in env
each one trains on, and one real run of them all at tiny budgets, each kept model traded again by hand (a
recurrent one with its state carried; that a dropped state changes the score is test_policies.py's, not this
budget's).

Real SB3 and sb3-contrib training on the built-in trading env, real files.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.envs import TradingEnv
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.runner.algorithms import (
    ALGORITHMS,
    ALIASES,
    algorithm_class,
    canonical_name,
    env_kwargs_for,
    trading_action_mode,
)
from sb3_iter_ckpt.splitter import WalkForwardSplitter

CONTINUOUS = {"ddpg", "sac", "td3", "tqc"}
OFF_POLICY = {"dqn", "qrdqn", *CONTINUOUS}
# Off-policy at 128 timesteps: learning from step 16, an update every 16 steps (7 updates), a small buffer.
OFF_KW = dict(learning_starts=16, train_freq=16, gradient_steps=1, batch_size=16, buffer_size=256)
TINY_KW = {
    "a2c": dict(n_steps=16),
    "ppo": dict(n_steps=32, batch_size=32, n_epochs=1),
    "trpo": dict(n_steps=32, batch_size=32),
    "recurrentppo": dict(n_steps=32, batch_size=32, n_epochs=1),
    "ars": dict(n_delta=2, n_top=1),
    **{name: OFF_KW for name in OFF_POLICY},
}
RUN = list(ALGORITHMS)  # every one, RecurrentPPO with its MlpLstmPolicy (the runner chooses it)


def _policy(name: str) -> str:
    return "MlpLstmPolicy" if name == "recurrentppo" else "MlpPolicy"


# -- names and action modes -------------------------------------------------------------------------------------
def test_every_name_and_alias_is_an_algorithm_class_and_a_wrong_one_lists_the_names():
    import sb3_contrib
    import stable_baselines3

    for name, path in ALGORITHMS.items():
        package = stable_baselines3 if path.startswith("stable_baselines3.") else sb3_contrib
        assert algorithm_class(name) is getattr(package, path.rpartition(".")[2])
        assert algorithm_class(name.upper()) is algorithm_class(name)
    for alias, name in ALIASES.items():
        assert canonical_name(alias.upper()) == name and algorithm_class(alias) is algorithm_class(name)
    assert algorithm_class("stable_baselines3.SAC") is stable_baselines3.SAC
    assert canonical_name("my_pkg.MyPPO") == "my_pkg.MyPPO"
    with pytest.raises(CheckpointError) as info:
        algorithm_class("ppo2")
    message = str(info.value)
    assert "\n" not in message and "unknown algorithm 'ppo2'" in message
    assert all(name in message for name in ALGORITHMS)


def test_an_algorithm_of_sb3_contrib_without_the_extra_names_it_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # what an environment without sb3-contrib imports
    for name in ("tqc", "QR-DQN", "trpo", "ars", "recurrent_ppo"):
        with pytest.raises(CheckpointError) as info:
            algorithm_class(name)
        message = str(info.value)
        assert "\n" not in message and 'pip install "sb3-iter-ckpt[contrib]"' in message and name in message
    assert algorithm_class("sac").__name__ == "SAC"  # SB3's own need nothing more


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_the_action_mode_of_each_algorithm_is_the_one_sb3_accepts(name, prices):
    """The table of Box-only algorithms against SB3 itself: each builds on the mode it is given, and a Box-only
    one is refused by the discrete mode (a discrete-only one by the continuous mode)."""
    cls, kw = algorithm_class(name), {"buffer_size": 16} if name in OFF_POLICY else {}
    mode = trading_action_mode(cls)
    assert mode == ("continuous" if name in CONTINUOUS else "discrete")
    cls(_policy(name), TradingEnv(prices[:60], action_mode=mode), device="cpu", **kw)
    other = "discrete" if mode == "continuous" else "continuous"
    if name in CONTINUOUS | {"dqn", "qrdqn"}:
        with pytest.raises(AssertionError, match="action space"):
            cls(_policy(name), TradingEnv(prices[:60], action_mode=other), device="cpu", **kw)
    else:  # both: the discrete mode, as every run before continuous actions
        cls(_policy(name), TradingEnv(prices[:60], action_mode=other), device="cpu", **kw)


def test_env_kwargs_add_the_continuous_mode_only_where_the_algorithm_needs_it():
    import stable_baselines3

    class MySAC(stable_baselines3.SAC):
        pass

    base = {"periods_per_year": 252, "window_size": 5}
    for algo in ("ppo", "a2c", "dqn", "trpo", "ars", "qrdqn"):
        assert env_kwargs_for(RunOptions(10, algo=algo, env_kwargs={"window_size": 5})) == base
    for algo in ("ddpg", "sac", "td3", "tqc", "stable_baselines3.SAC"):
        options = RunOptions(10, algo=algo, env_kwargs={"window_size": 5})
        assert env_kwargs_for(options) == {**base, "action_mode": "continuous"}
        assert "action_mode" not in options.to_config()["env_kwargs"]  # derived from the algorithm, never recorded
    assert trading_action_mode(MySAC) == "continuous"  # a subclass acts on what its base acts on
    given = RunOptions(10, algo="sac", env_kwargs={"action_mode": "discrete"})
    assert env_kwargs_for(given)["action_mode"] == "discrete"  # as given (the preflight then refuses it)
    own = RunOptions(10, algo="sac", make_model=lambda env, seed: None)
    assert "action_mode" not in env_kwargs_for(own)  # the user's model: the user's env arguments


# -- one run of every algorithm ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def every_algorithm(tmp_path_factory, prices):
    """Every algorithm a candidate on two windows with test parts, trained once: ``(root, runner, result)``.

    ``mean_reward`` is defined for every policy (a flat one's Sharpe ratio is not), so every window keeps a model;
    one evaluation, at the end, so that the kept model is the trained one.
    """
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    candidates = [Candidate(name, name, 3, TINY_KW[name]) for name in RUN]
    root = tmp_path_factory.mktemp("algorithms") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        runner = WalkForwardRunner(
            prices[:330], WalkForwardSplitter(150, 60, test_size=60), root, 128,
            eval_freq=128, monitor="mean_reward", progress=False, candidates=candidates, executor="sequential",
        )  # fmt: skip
        result = runner.run()
    assert result.trained == [0, 1]
    return root, runner, result


def _kept(root, name: str, iteration: int):
    repo = CheckpointRepository(root).candidate(name)
    ck = repo.get(iteration)
    assert ck.has_model, (name, iteration, ck.reason)
    model = algorithm_class(name).load(repo.checkpoints_dir / ck.artifacts["model"].file, device="cpu")
    return repo, ck, model


def _trade_by_hand(model, prices, test_start: int, test_stop: int) -> tuple[list[float], list[float]]:
    """The model over the test part's built-in env, stepped here (10 rows of history: the default window_size), a
    recurrent policy's state carried from step to step as SB3's ``evaluate_policy`` carries it."""
    mode = "continuous" if isinstance(model.action_space, spaces.Box) else "discrete"
    env = TradingEnv(prices[test_start - 10 : test_stop + 1], action_mode=mode)
    obs, _ = env.reset()
    state, start, done = None, True, False
    while not done:
        action, state = model.predict(obs, state=state, episode_start=np.array([start]), deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        start, done = False, terminated or truncated
    return env.episode_returns().tolist(), env.episode_positions().tolist()


def test_every_kept_model_trades_its_test_part_again_to_its_stored_forward_returns(every_algorithm, prices):
    root, runner, _ = every_algorithm
    for window in runner.windows:
        rows = set()
        for name in RUN:
            repo, _, model = _kept(root, name, window.iteration)
            forward = repo.forward(window.iteration)
            returns, positions = _trade_by_hand(model, prices[:330], window.test_start, window.test_stop)
            np.testing.assert_allclose(returns, forward.returns, rtol=0, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(positions, forward.positions, rtol=0, atol=1e-12, err_msg=name)
            rows.add(forward.rows)
            held = set(forward.positions)
            if name in CONTINUOUS:  # a target position between the discrete ones: the continuous mode traded
                assert isinstance(model.action_space, spaces.Box) and not held <= {-1.0, 0.0, 1.0}, name
            else:
                assert isinstance(model.action_space, spaces.Discrete) and held <= {-1.0, 0.0, 1.0}, name
        assert len(rows) == 1 and len(next(iter(rows))) >= 59  # the same rows, every candidate: comparable
    assert CheckpointRepository(root).verify() == []


def test_every_kept_model_was_updated_and_no_replay_buffer_is_kept(every_algorithm, prices):
    """The tiny budgets train: each kept model's weights differ from the same algorithm's initial ones (same
    seed, same hyperparameters). ARS is left out: the callback evaluates its policy as of its last finished round
    of perturbed episodes, and at 128 timesteps the first round (four episodes of the train part) is still
    running at every evaluation (the walk-forward guide says so)."""
    root, _, _ = every_algorithm
    for name in RUN:
        cls = algorithm_class(name)
        for iteration in (0, 1):
            _, ck, model = _kept(root, name, iteration)
            if name in OFF_POLICY:
                assert "replay_buffer" not in ck.artifacts, name  # save_replay_buffer is off unless asked
            if name == "ars":
                continue
            env = TradingEnv(prices[:60], action_mode=trading_action_mode(cls))
            initial = cls(_policy(name), env, seed=3 + iteration, device="cpu", **TINY_KW[name])
            before, after = initial.policy.state_dict(), model.policy.state_dict()
            assert before.keys() == after.keys()
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert changed, f"{name} iteration {iteration}: no weight changed in training"


def test_each_window_reports_its_wall_and_cpu_seconds(every_algorithm):
    """What the benchmark of the ensemble reads: each candidate's windows, timed in their worker."""
    _, _, result = every_algorithm
    assert sorted(result.candidates) == sorted(RUN)
    for name, own in result.candidates.items():
        assert sorted(own.outcomes) == [0, 1], name
        for outcome in own.outcomes.values():
            assert 0 < outcome["cpu_seconds"] and 0 < outcome["seconds"], (name, outcome)
