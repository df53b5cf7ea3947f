"""The policy a model is built with (issue 23): chosen for the env and the algorithm, or the user's; a recurrent
policy's state carried through every evaluation as SB3's ``evaluate_policy`` carries it.

Real sb3-contrib ``RecurrentPPO`` and PPO at tiny budgets, a user's env with a ``Dict`` observation, a user's
policy class named by its import path.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.envs import TradingEnv, run_episode
from sb3_iter_ckpt.errors import CheckpointError, EnvContractError
from sb3_iter_ckpt.runner.policies import resolve_policy
from sb3_iter_ckpt.splitter import WalkForwardSplitter

LSTM = dict(lstm_hidden_size=8, net_arch=[8])


class DictObservation(gym.ObservationWrapper):
    """A user's env whose observation is a ``Dict``: the built-in env's log returns and position apart."""

    def __init__(self, env):
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = spaces.Dict(
            {"returns": spaces.Box(low[:-1], high[:-1]), "position": spaces.Box(low[-1:], high[-1:])}
        )

    def observation(self, observation):
        return {"returns": observation[:-1], "position": observation[-1:]}


def dict_env(segment, seed):
    return DictObservation(TradingEnv(segment))


class LoudObservation(gym.ObservationWrapper):
    """A user's env: the built-in env's observation times 100 (log returns of about 1), which an LSTM's memory
    picks up even barely trained."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)

    def observation(self, observation):
        return (observation * 100.0).astype(np.float32)


def loud_env(segment, seed):
    return LoudObservation(TradingEnv(segment))


class WidePolicy(ActorCriticPolicy):
    """A user's policy class: an actor-critic whose hidden layers are 7 wide, whatever the run asks."""

    def __init__(self, *args, **kwargs):
        kwargs["net_arch"] = [7]
        super().__init__(*args, **kwargs)


def _loop(model, env, *, carry: bool) -> tuple[float, ...]:
    """The model over one episode, written out: SB3's state carried (or dropped, a fresh state every step)."""
    obs, _ = env.reset()
    returns, state, done = [], None, False
    while not done:
        starts = np.array([not returns])
        action, next_state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        state = next_state if carry else None
        obs, _, terminated, truncated, info = env.step(action)
        returns.append(info["return"])
        done = terminated or truncated
    return tuple(returns)


def _lstm_model(prices) -> RecurrentPPO:
    """A RecurrentPPO whose actions depend on its state: seeded weights, no biases (an untrained LSTM's actions
    are set by its biases and barely by its memory)."""
    venv = DummyVecEnv([lambda: TradingEnv(prices.iloc[:150])])
    model = RecurrentPPO("MlpLstmPolicy", venv, seed=0, device="cpu", n_steps=32, batch_size=32, policy_kwargs=LSTM)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.policy.named_parameters():
            p.copy_(torch.zeros(p.shape) if "bias" in name else torch.randn(p.shape, generator=generator))
    return model


# -- item 5: the recurrent state through an episode -------------------------------------------------------------
def test_run_episode_carries_a_recurrent_policys_state_as_evaluate_policy_does(prices):
    model = _lstm_model(prices)
    segment = prices.iloc[150:260]
    carried, dropped = _loop(model, TradingEnv(segment), carry=True), _loop(model, TradingEnv(segment), carry=False)
    assert carried != dropped  # these weights make the state matter: the comparisons below can tell
    assert run_episode(model, TradingEnv(segment)).returns == carried
    # through a VecEnv (the forward evaluation's path), against SB3's own evaluate_policy on the same env
    episode = run_episode(model, DummyVecEnv([lambda: TradingEnv(segment)]))
    rewards, _ = evaluate_policy(
        model, DummyVecEnv([lambda: TradingEnv(segment)]), n_eval_episodes=1, return_episode_rewards=True, warn=False
    )
    assert episode.returns == carried and episode.reward == rewards[0]


def test_a_recurrent_run_keeps_models_that_rerun_carrying_their_state_to_the_stored_forward(
    prices, repo_root, make_runner
):
    """RecurrentPPO through the runner (its ``MlpLstmPolicy`` chosen): every kept model, loaded back and run on its
    test part by the loop above, gives the stored forward returns exactly."""
    runner = make_runner(
        prices,
        repo_root,
        algo="sb3_contrib.RecurrentPPO",
        algo_kwargs=dict(n_steps=64, batch_size=64, n_epochs=1, policy_kwargs=LSTM),
        make_env=loud_env,
        env_history=10,
        splitter=WalkForwardSplitter(150, 60, test_size=60),
    )
    assert runner.run(max_iterations=2).trained == [0, 1]
    repo = CheckpointRepository(repo_root)
    assert "policy" not in runner.config()  # chosen, not given: the fingerprint of a run that names none
    differs = []
    for f in repo.forwards():
        model = repo.load(f.iteration, device="cpu")
        assert isinstance(model, RecurrentPPO) and type(model.policy).__name__ == "RecurrentActorCriticPolicy"
        assert not f.placeholder
        env = loud_env(prices.iloc[f.test_start - 10 : f.test_stop + 1], None)
        assert f.returns == _loop(model, env, carry=True)
        differs.append(f.returns != _loop(model, env, carry=False))
    assert all(differs), "these seeds train models whose memory moves their trades: a forward dropping it differs"
    assert repo.verify() == []


# -- item 4: the policy ---------------------------------------------------------------------------------------
def test_the_policy_is_chosen_for_the_observation_and_the_algorithm_unless_named():
    flat, mapping = TradingEnv(np.linspace(1, 2, 20)).observation_space, DictObservation(TradingEnv(np.ones(20)))
    assert resolve_policy(PPO, None, flat) == "MlpPolicy"
    assert resolve_policy(PPO, None, mapping.observation_space) == "MultiInputPolicy"
    assert resolve_policy(RecurrentPPO, None, flat) == "MlpLstmPolicy"
    assert resolve_policy(RecurrentPPO, None, mapping.observation_space) == "MultiInputLstmPolicy"
    assert resolve_policy(PPO, "CnnPolicy", flat) == "CnnPolicy"  # named: as given
    for path in (f"{__name__}:WidePolicy", f"{__name__}.WidePolicy"):
        assert resolve_policy(PPO, path, flat) is WidePolicy
    with pytest.raises(CheckpointError, match="not one of RecurrentPPO's policies"):
        resolve_policy(RecurrentPPO, "MlpPolicy", flat)
    with pytest.raises(CheckpointError, match="cannot be imported"):
        resolve_policy(PPO, "no_such_module:Policy", flat)


def test_the_policy_enters_the_fingerprint_only_when_it_changes_the_run():
    base = RunOptions(100).to_config()
    assert RunOptions(100, policy="MlpPolicy").to_config() == base  # what every earlier run was built with
    named = RunOptions(100, policy=f"{__name__}:WidePolicy").to_config()
    assert named == {**base, "policy": f"{__name__}.WidePolicy"}
    assert RunOptions(100, policy=WidePolicy).to_config() == named  # the class or its path: the same run
    plain = Candidate("a", "ppo")
    assert "policy" not in plain.to_dict() and Candidate("a", "ppo", policy=WidePolicy).to_dict()["policy"]
    assert RunOptions(100, policy="X").for_candidate(Candidate("b", policy=WidePolicy)).policy is WidePolicy
    for bad in ("", 3, " MlpPolicy"):
        with pytest.raises(CheckpointError, match="policy must be"):
            RunOptions(100, policy=bad)
    with pytest.raises(CheckpointError, match="drop make_model, or the policy"):
        RunOptions(100, policy="MlpPolicy", make_model=lambda env, seed: None)


def test_a_dict_observation_env_trains_through_the_runner_with_multi_input_policy(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=dict_env)
    assert runner.run(max_iterations=1).trained == [0]
    model = CheckpointRepository(repo_root).load(0, device="cpu")
    assert type(model.policy).__name__ == "MultiInputActorCriticPolicy"
    assert isinstance(model.observation_space, spaces.Dict)


def test_a_users_policy_class_by_import_path_is_what_the_kept_model_runs(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, policy=f"{__name__}:WidePolicy")
    assert runner.run(max_iterations=1).trained == [0]
    model = CheckpointRepository(repo_root).load(0, device="cpu")
    assert type(model.policy) is WidePolicy
    assert [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == [7]


class MissingKey(DictObservation):
    """A user's env whose observations lack a key its ``Dict`` space declares: SB3 builds the model on the space;
    only acting on an observation shows it."""

    def observation(self, observation):
        return {"returns": observation[:-1]}


def missing_key_env(segment, seed):
    return MissingKey(TradingEnv(segment))


def test_a_policy_that_cannot_act_on_the_envs_observations_is_refused_before_training(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=missing_key_env)
    with pytest.raises(EnvContractError, match="ppo does not fit the env of make_env .*missing_key_env.*'position'"):
        runner.run()
    assert not (repo_root / "checkpoints").exists() or not any((repo_root / "checkpoints").glob("*.zip"))
