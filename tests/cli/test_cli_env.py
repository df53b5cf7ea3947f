"""The walk-forward command with the user's env (issue 22 item 5): ``--env module:callable`` receiving the CSV's
table (every column), ``--env-kwargs`` JSON, ``--benchmark-column``, ``--transaction-cost``, ``--history``; bad
values exit 2 with one line; ``--help`` shows an example. In process, through ``sb3_iter_ckpt.cli.main``.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.cli import main
from sb3_iter_ckpt.data import synthetic_prices

ENV_MODULE = textwrap.dedent(
    """
    import gymnasium as gym
    import numpy as np
    import pandas as pd
    from gymnasium import spaces

    SEEN = []


    class FeatureEnv(gym.Env):
        def __init__(self, table, history, scale):
            assert isinstance(table, pd.DataFrame), type(table)
            SEEN.append((tuple(table.columns), history, scale))
            self.h = history
            self.features = table[["Close", "rsi"]].to_numpy(dtype=np.float64) * scale
            self.price = table["Close"].to_numpy(dtype=np.float64)
            self.action_space = spaces.Discrete(2)
            self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2 * history + 1,), dtype=np.float32)

        def _obs(self):
            rows = self.features[self.t - self.h + 1 : self.t + 1].reshape(-1)
            return np.concatenate((rows, [self.position])).astype(np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t, self.position = self.h, 0.0
            return self._obs(), {}

        def step(self, action):
            self.position = float(int(np.asarray(action).reshape(-1)[0]))
            ret = self.position * (self.price[self.t + 1] / self.price[self.t] - 1.0)
            self.t += 1
            done = self.t >= len(self.price) - 1
            return self._obs(), ret, done, False, {"return": ret, "position": self.position}


    class ValueEnv(FeatureEnv):
        # the same env reporting its portfolio value under "value" and its position under "pos"

        def reset(self, *, seed=None, options=None):
            obs, _ = super().reset(seed=seed)
            self.value = 100.0
            return obs, {"value": self.value}

        def step(self, action):
            obs, reward, done, truncated, info = super().step(action)
            self.value *= 1.0 + info["return"]
            return obs, reward, done, truncated, {"value": self.value, "pos": info["position"]}


    def make_env(table, seed, history=3, scale=1.0):
        return FeatureEnv(table, history, scale)


    def make_value_env(table, seed):
        return ValueEnv(table, 3, 1.0)


    NOT_CALLABLE = 3
    """
)
TINY = ["--total-timesteps", "64", "--n-steps", "32", "--train-size", "120", "--val-size", "50"]
TINY += ["--test-size", "50", "--iterations", "2", "--threads", "1", "--executor", "sequential"]


@pytest.fixture
def setup(user_module):
    tmp_path = user_module("user_envs", ENV_MODULE)
    close = synthetic_prices(300, seed=5)
    lines = ["Date,Open,Close,Volume,rsi,spy"]
    for k, (day, price) in enumerate(close.items()):
        lines.append(f"{day.date()},{price * 0.99},{price},{1000 + k},{30 + k % 40},{100 + k * 0.1}")
    (tmp_path / "prices.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def _walk(*extra: str, experiment: str = "e") -> list[str]:
    return ["walk-forward", "--experiment-id", experiment, "--data", "prices.csv", *TINY, *extra]


def test_user_env_from_the_command_line(setup, capsys):
    env_kwargs = json.dumps({"history": 4, "scale": 0.01})
    args = _walk("--env", "user_envs:make_env", "--env-kwargs", env_kwargs, "--history", "4", "--json")
    assert main(args) == 0, capsys.readouterr().err
    import user_envs

    assert user_envs.SEEN and all(cols == ("Open", "Close", "Volume", "rsi", "spy") for cols, _, _ in user_envs.SEEN)
    assert {(h, s) for _, h, s in user_envs.SEEN} == {(4, 0.01)}
    out = json.loads(capsys.readouterr().out)
    assert out["trained"] == [0, 1] and out["forward"] is not None
    repo = CheckpointRepository(setup / "results" / "e")
    assert repo.has_forward(0) and repo.has_forward(1)
    config = repo.read_metadata("walk_forward.json")["config"]
    assert config["make_env"] == "user_envs.make_env" and config["make_env_kwargs"] == {"history": 4, "scale": 0.01}
    assert config["env_history"] == 4 and config["price_column"] == "Close"

    # other --env-kwargs values: a different run, refused on resume
    changed = json.dumps({"history": 4, "scale": 0.02})
    args = _walk("--env", "user_envs:make_env", "--env-kwargs", changed, "--history", "4")
    assert main(args) == 5
    assert "make_env_kwargs" in capsys.readouterr().err


def test_step_reader_flags_read_another_env_to_the_same_forward(setup, capsys):
    """The same env reporting a portfolio value and "pos": read with --step-reader equity:value --position-key pos,
    its forward returns are the default-keyed env's (same seeds, same rewards: the same models)."""
    assert main(_walk("--env", "user_envs:make_env", "--history", "3", experiment="keys")) == 0
    args = ("--env", "user_envs:make_value_env", "--history", "3", "--step-reader", "equity:value")
    assert main(_walk(*args, "--position-key", "pos", experiment="value")) == 0, capsys.readouterr().err
    keys, value = (CheckpointRepository(setup / "results" / e) for e in ("keys", "value"))
    for i in (0, 1):
        np.testing.assert_allclose(value.forward(i).returns, keys.forward(i).returns, rtol=0, atol=1e-12)
        assert value.forward(i).positions == keys.forward(i).positions
    reader = value.read_metadata("walk_forward.json")["config"]["step_reader"]
    assert reader["equity_key"] == "value" and reader["position_key"] == "pos"
    # a preset by name; a reader without the position the test parts need is refused before training (exit 2)
    assert main(_walk("--env", "user_envs:make_value_env", "--step-reader", "gym-trading-env", experiment="p")) == 2
    assert "portfolio_valuation" in capsys.readouterr().err
    assert main(_walk(*args, "--position-key", "none", experiment="n")) == 2
    assert "position" in capsys.readouterr().err


def test_several_close_columns_trade_a_portfolio_against_its_equal_weight(setup, capsys):
    args = _walk("--env", "user_envs:make_env", "--history", "3", "--close-column", "Close, spy")
    assert main(args) == 0, capsys.readouterr().err
    repo = CheckpointRepository(setup / "results" / "e")
    assert repo.read_metadata("walk_forward.json")["config"]["price_column"] == ["Close", "spy"]
    table = np.loadtxt(setup / "prices.csv", delimiter=",", skiprows=1, usecols=(2, 5))
    rows = np.asarray(repo.forward(0).rows)
    expected = (table[rows] / table[rows - 1] - 1.0).mean(axis=1)
    np.testing.assert_allclose(repo.forward(0).asset_returns, expected, rtol=0, atol=1e-12)


def test_benchmark_and_cost_with_the_built_in_env(setup, capsys):
    args = _walk("--benchmark-column", "spy", "--transaction-cost", "0.002", "--history", "5", "--json")
    assert main(args) == 0, capsys.readouterr().err
    repo = CheckpointRepository(setup / "results" / "e")
    forward = repo.forward(0)
    spy = 100 + np.arange(300) * 0.1
    rows = np.asarray(forward.rows)
    assert np.allclose(forward.asset_returns, spy[rows] / spy[rows - 1] - 1.0)
    config = repo.read_metadata("walk_forward.json")["config"]
    assert config["env_kwargs"]["transaction_cost"] == 0.002 and config["env_kwargs"]["window_size"] == 5
    assert config["benchmark_column"] == "spy"


def test_close_only_csv_keeps_its_fingerprint(setup):
    """Without the new flags the CSV is the close series, as before: its data fingerprint is unchanged."""
    from sb3_iter_ckpt.cli import _prices, _run_options, build_parser
    from sb3_iter_ckpt.data import data_fingerprint, load_prices_csv

    args = build_parser().parse_args(_walk("--close-column", "Close"))
    prices = _prices(args)
    assert data_fingerprint(prices) == data_fingerprint(load_prices_csv("prices.csv", "date", "Close"))
    config = _run_options(args).to_config()
    assert not {"price_column", "benchmark_column", "make_env_kwargs", "env_history"} & set(config)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--env", "user_envs"], "module:callable"),
        (["--env", "no_such_module_xyz:make_env"], "no_such_module_xyz"),
        (["--env", "user_envs:missing"], "missing"),
        (["--env", "user_envs:NOT_CALLABLE"], "callable"),
        (["--env-kwargs", "{}"], "--env"),
        (["--env", "user_envs:make_env", "--env-kwargs", "[1]"], "JSON object"),
        (["--env", "user_envs:make_env", "--env-kwargs", "{bad"], "JSON"),
        (["--env", "user_envs:make_env", "--transaction-cost", "0.001"], "--transaction-cost"),
        (["--transaction-cost", "-1"], "--transaction-cost"),
        (["--transaction-cost", "nan"], "--transaction-cost"),
        (["--history", "-2"], "--history"),
        (["--history", "0"], "--history"),
        (["--benchmark-column", "nope"], "nope"),
        (["--env", "user_envs:make_env", "--close-column", "Open2"], "Open2"),
        (["--close-column", "Close,spy"], "--env"),
        (["--env", "user_envs:make_env", "--close-column", "Close,Close"], "distinct"),
        (["--env", "user_envs:make_env", "--close-column", "Close,nope"], "nope"),
        (["--step-reader", "equity:value"], "--env"),
        (["--position-key", "pos"], "--env"),
        (["--env", "user_envs:make_env", "--step-reader", "nope"], "return:KEY"),
        (["--env", "user_envs:make_env", "--step-reader", "fn:user_envs:NOT_CALLABLE"], "not callable"),
        (["--env", "user_envs:make_env", "--step-reader", "fn:no_such_module_xyz:f"], "no_such_module_xyz"),
    ],
)
def test_bad_values_exit_2(setup, capsys, extra, message):
    with pytest.raises(SystemExit) as info:  # argparse's own refusals exit 2 too
        code = main(_walk(*extra))
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) <= 2, err  # argparse prints its usage line first
    assert not (setup / "results" / "e").exists() or not any((setup / "results" / "e").iterdir())


def test_benchmark_column_needs_data(setup, capsys):
    args = ["walk-forward", "--experiment-id", "s", *TINY, "--benchmark-column", "spy"]
    assert main(args) == 2
    assert "--data" in capsys.readouterr().err


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["walk-forward", "--help"])
    text = capsys.readouterr().out
    for flag in ("--env", "--env-kwargs", "--benchmark-column", "--transaction-cost", "--history", "--step-reader"):
        assert flag in text
    assert "--env mypackage.envs:make_env" in text
    # the contract: what the env reports, one step per row, the dating, the preflight
    for words in ('info["return"]', 'info["position"]', "one step per row", "dated", "preflight", "--position-key"):
        assert words in text


def test_json_stays_one_document_when_the_run_prints(setup, capsys):
    """What the run prints (a user's env here; Ray's messages about its nodes) goes to stderr, not into the JSON."""
    chatty = "from user_envs import make_env as _make\n\n\ndef make_env(table, seed):\n    print('env built')\n"
    (setup / "chatty_envs.py").write_text(chatty + "    return _make(table, seed)\n")
    try:
        assert main(_walk("--env", "chatty_envs:make_env", "--history", "3", "--json")) == 0
    finally:
        sys.modules.pop("chatty_envs", None)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trained"] == [0, 1]
    assert "env built" in captured.err
