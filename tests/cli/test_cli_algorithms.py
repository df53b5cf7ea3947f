"""The walk-forward command's algorithms (issue 23): short names and aliases, ``--algo-kwargs ALGO:JSON``, the
missing contrib extra and an algorithm that does not fit the user's env, each refused in one line with exit 2
before anything trains. In process, through ``sb3_iter_ckpt.cli.main``.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from sb3_iter_ckpt.cli import _run_options, build_parser, main
from sb3_iter_ckpt.runner.algorithms import ALGORITHMS

ENV_MODULE = textwrap.dedent(
    """
    import gymnasium as gym
    import numpy as np
    from gymnasium import spaces


    class LongFlat(gym.Env):
        def __init__(self, close, box):
            self.px = np.asarray(close, dtype=np.float64)
            self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32) if box else spaces.Discrete(2)
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)

        def _obs(self):
            return np.array([np.log(self.px[self.t] / self.px[self.t - 1]), self.position], np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t, self.position = 1, 0.0
            return self._obs(), {}

        def step(self, action):
            self.position = float(np.asarray(action).reshape(-1)[0])
            ret = self.position * (self.px[self.t + 1] / self.px[self.t] - 1.0)
            self.t += 1
            return self._obs(), ret, self.t >= len(self.px) - 1, False, {"return": ret, "position": self.position}


    def make_env(table, seed, box=False):
        return LongFlat(table["close"], box)
    """
)
WALK = ["walk-forward", "--experiment-id", "e", "--total-timesteps", "64", "--iterations", "1", "--n-prices", "300"]
WALK += ["--executor", "sequential"]
WALK += ["--train-size", "120", "--val-size", "50", "--test-size", "50", "--n-steps", "32"]


@pytest.fixture
def work(user_module):
    return user_module("algo_envs", ENV_MODULE)


def _refused(capsys, *args: str) -> str:
    """The one line of a walk-forward refused with exit 2, nothing trained."""
    code = main([*WALK, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algo-kwargs", 'sac:{"gamma": 0.9}'], "sac is not one of --algo ppo"),
        (["--algo-kwargs", "ppo"], "give ALGO:JSON"),
        (["--algo-kwargs", 'ppo:"gamma"'], "give ALGO:JSON"),
        (["--algo-kwargs", ':{"gamma": 0.9}'], "give ALGO:JSON"),
        (["--algo-kwargs", "ppo:{gamma: 0.9}"], "not JSON"),
        (["--algo", "ppo,a2c", "--algo-kwargs", "ppo:{}", "--algo-kwargs", 'PPO:{"gamma": 0.9}'], "given twice"),
        (["--algo", "ppo,a2c", "--algo-kwargs", 'ppo,a2c:{"gamma": 0.9}'], "one algorithm per --algo-kwargs"),
        (["--algo", "ppo2"], "unknown algorithm 'ppo2'; use one of " + ", ".join(ALGORITHMS)),
        (["--algo", "a2c,trpo", "--n-steps", "1"], "trpo needs at least 2"),
    ],
)
def test_bad_algorithms_and_hyperparameters_exit_2_in_one_line(work, capsys, args, message):
    assert message in _refused(capsys, *args)
    assert not (work / "results" / "e" / "checkpoints").exists()


def test_a_contrib_algorithm_without_the_extra_names_it(work, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # what an environment without sb3-contrib imports
    err = _refused(capsys, "--algo", "ppo,tqc")
    assert "tqc is sb3-contrib's TQC, which is not installed" in err and 'pip install "sb3-iter-ckpt[contrib]"' in err


def test_algo_kwargs_reach_their_algorithm_and_aliases_name_the_candidates(work):
    args = build_parser().parse_args([*WALK, "--algo", "sac", "--algo-kwargs", 'SAC:{"learning_starts": 10}'])
    options = _run_options(args)
    assert options.algo == "sac" and options.algo_kwargs == {"learning_starts": 10}
    flags = ["--algo", "PPO,QR-DQN,recurrent_ppo", "--algo-kwargs", 'ppo:{"n_epochs": 2, "batch_size": 16}']
    options = _run_options(build_parser().parse_args([*WALK, *flags]))
    by_name = {c.name: (c.algo, c.algo_kwargs) for c in options.candidates}
    assert by_name == {
        "ppo-s0": ("ppo", {"n_steps": 32, "batch_size": 16, "n_epochs": 2}),  # over the --n-steps defaults
        "qrdqn-s0": ("qrdqn", {}),
        "recurrentppo-s0": ("recurrentppo", {"n_steps": 32, "batch_size": 32}),
    }
    plain = _run_options(build_parser().parse_args([*WALK, "--algo", "PPO"]))
    assert plain.algo == "PPO" and plain.algo_kwargs == {"n_steps": 32, "batch_size": 32}  # as every earlier run


@pytest.mark.parametrize(
    "algo, env_kwargs, space",
    [("sac", "{}", "Discrete(2)"), ("dqn", '{"box": true}', "Box(0.0, 1.0, (1,), float32)")],
)
def test_an_algorithm_that_does_not_fit_the_users_env_is_refused_naming_both(work, capsys, algo, env_kwargs, space):
    err = _refused(capsys, "--env", "algo_envs:make_env", "--env-kwargs", env_kwargs, "--history", "1", "--algo", algo)
    assert f"{algo} does not fit the env of make_env algo_envs.make_env (action space {space}" in err
    assert not (work / "results" / "e" / "checkpoints").exists() or not any((work / "results/e/checkpoints").iterdir())
