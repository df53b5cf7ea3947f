"""``walk-forward --policy`` (issue 23): the named policy reaches the run's options and fingerprint; one that does
not import, or that an algorithm of the run does not have, exits 2 with one line before anything is trained.
In process, through ``sb3_iter_ckpt.cli.main``."""

from __future__ import annotations

import pytest

from sb3_iter_ckpt.cli import _run_options, build_parser, main

WALK = ["walk-forward", "--experiment-id", "p", "--total-timesteps", "64", "--train-size", "150", "--val-size", "60"]
WALK += ["--executor", "sequential"]
TEST = ["--test-size", "60"]  # what the command sets when it is not given
PATH = "stable_baselines3.common.policies:ActorCriticPolicy"


def test_the_policy_flag_reaches_the_runs_options_and_its_fingerprint():
    options = _run_options(build_parser().parse_args([*WALK, *TEST, "--policy", PATH]))
    assert options.policy == PATH
    assert options.to_config()["policy"] == "stable_baselines3.common.policies.ActorCriticPolicy"
    assert "policy" not in _run_options(build_parser().parse_args([*WALK, *TEST])).to_config()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--policy", "MlpLstmPolicy"], "--policy: policy 'MlpLstmPolicy' is not one of PPO's policies"),
        (["--algo", "ppo,sb3_contrib.RecurrentPPO", "--policy", "MlpPolicy"], "not one of RecurrentPPO's policies"),
        (["--policy", "no_such_module:Policy"], "--policy: policy 'no_such_module:Policy' cannot be imported"),
        (["--policy", "stable_baselines3:PPO.learn"], "is a function, not a class"),
        (["--policy", ""], "--policy: policy must be an alias"),
    ],
)
def test_a_policy_the_run_cannot_build_exits_2_on_one_line_before_training(
    tmp_path, monkeypatch, capsys, flags, message
):
    monkeypatch.chdir(tmp_path)
    assert main([*WALK, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
