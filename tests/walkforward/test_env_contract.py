"""The env contract (issue 22): a run reads its accounting from the user's env, validation and forward alike.

Real PPO at tiny budgets on a user's long-only env with its own observation shape; a preflight that refuses
an env or algorithm before any model file exists; gym-anytrading's real StocksEnv read with its preset.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.common.steps import REALIZED, realized_caveat
from sb3_iter_ckpt.envs import StepReader, TradingEnv, evaluate_trading, run_episode
from sb3_iter_ckpt.errors import EnvContractError
from sb3_iter_ckpt.forward import evaluate_forward
from sb3_iter_ckpt.splitter import WalkForwardSplitter, Window

HISTORY = 5
TEST = dict(splitter=WalkForwardSplitter(150, 60, test_size=60), env_history=HISTORY)


class LongOnlyEnv(gym.Env):
    """A user's env: flat (0) or long (1), observation = 5 log returns, the position and a constant (7 values)."""

    def __init__(self, prices, keys=("return", "position"), end_early: int = 0):
        arr = np.asarray(getattr(prices, "to_numpy", lambda: prices)(), dtype=np.float64)
        self.prices, self.keys, self.end_early = arr, keys, end_early
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(HISTORY + 2,), dtype=np.float32)

    def _obs(self):
        window = np.diff(np.log(self.prices[self.t - HISTORY : self.t + 1]))
        return np.concatenate((window, [self.position, 1.0])).astype(np.float32)

    def _info(self, ret):
        info = {"return": ret, "position": self.position, "equity": self.equity}
        return {k: info[k] for k in self.keys}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.position, self.equity = HISTORY, 0.0, 1.0
        return self._obs(), self._info(0.0)

    def step(self, action):
        self.position = float(int(np.asarray(action).reshape(-1)[0]))
        ret = self.position * (self.prices[self.t + 1] / self.prices[self.t] - 1.0)
        self.t += 1
        self.equity *= 1.0 + ret
        done = self.t >= len(self.prices) - 1 - self.end_early
        return self._obs(), ret, done, False, self._info(ret)


def long_only_env(prices, seed):
    return LongOnlyEnv(prices)


def equity_only_env(prices, seed):
    return LongOnlyEnv(prices, keys=("equity", "position"))


def no_return_env(prices, seed):
    return LongOnlyEnv(prices, keys=("position",))


def early_env(prices, seed):
    return LongOnlyEnv(prices, end_early=1)


class BoxActionEnv(LongOnlyEnv):
    def __init__(self, prices):
        super().__init__(prices)
        self.action_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)

    def step(self, action):
        return super().step(np.round(np.asarray(action, dtype=np.float64)).astype(int))


def box_env(prices, seed):
    return BoxActionEnv(prices)


class _Constant:
    """A model that always takes one action."""

    def __init__(self, action):
        self.action = action

    def predict(self, obs, deterministic=True):
        n = np.asarray(obs).shape[0] if np.asarray(obs).ndim > 1 else None
        return (np.full(n, self.action) if n else np.asarray(self.action)), None


def _model_files(root) -> list[str]:
    folder = Path(root) / "checkpoints"
    return sorted(p.name for p in folder.glob("*.zip")) if folder.exists() else []


def _rerun(model, env) -> tuple[list[float], list[float]]:
    """The model over the env, independently of the package: reset, then step to the end."""
    obs, _ = env.reset()
    returns, positions, done = [], [], False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(action)
        returns.append(info["return"])
        positions.append(info["position"])
        done = terminated or truncated
    return returns, positions


# -- the run on a user's env ----------------------------------------------------------------------------------
def test_every_kept_model_rerun_in_the_users_env_gives_the_stored_forward(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=long_only_env, **TEST)
    result = runner.run()
    repo = CheckpointRepository(repo_root)
    forwards = repo.forwards()
    assert result.trained == [0, 1, 2] and [f.iteration for f in forwards] == [0, 1, 2]
    for f in forwards:
        assert not f.placeholder
        segment = prices.iloc[f.test_start - HISTORY : f.test_stop + 1]
        returns, positions = _rerun(repo.load(f.iteration, device="cpu"), long_only_env(segment, 7 + f.iteration))
        assert list(f.returns) == returns and list(f.positions) == positions
        rows = list(range(f.test_start + 1, f.test_start + 1 + len(returns)))
        assert list(f.rows) == rows and len(rows) == f.test_stop - f.test_start
        assert list(f.dates) == [prices.index[r].isoformat() for r in rows]
    # a long-only env never shows a short position: forward files, the stitched CSV, the metrics
    assert all(p in (0.0, 1.0) for f in forwards for p in f.positions)
    with open(Path(repo_root) / "forward_returns.csv", newline="") as fh:
        assert {float(row["position"]) for row in csv.DictReader(fh)} <= {0.0, 1.0}
    for ck in repo.list():
        for part in ("validation", "train", "combined"):
            assert ck.metrics[part]["exposure"] >= 0.0


def test_validation_reads_the_equity_rule_of_an_env_without_a_return(prices, repo_root, make_runner):
    reader = StepReader(equity_key="equity")
    runner = make_runner(prices, repo_root, make_env=equity_only_env, step_reader=reader, **TEST)
    runner.run(max_iterations=1)
    repo = CheckpointRepository(repo_root)
    (f,) = repo.forwards()
    segment = prices.iloc[f.test_start - HISTORY : f.test_stop + 1]
    returns, _ = _rerun(repo.load(0, device="cpu"), long_only_env(segment, 7))
    np.testing.assert_allclose(f.returns, returns, rtol=0, atol=1e-12)  # derived from the equity's ratio
    assert repo.get(0).metrics["validation"]["n_periods"] == 59


def test_an_env_without_the_return_is_refused_before_any_model_file(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=no_return_env, **TEST)
    with pytest.raises(EnvContractError, match="no 'return'") as info:
        runner.run()
    assert "\n" not in str(info.value) and "no_return_env" in str(info.value)
    assert _model_files(repo_root) == [] and CheckpointRepository(repo_root).iterations() == []


def test_an_env_whose_steps_do_not_match_the_rows_is_refused_before_training(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=early_env, **TEST)
    with pytest.raises(EnvContractError, match="took 59 steps over the first test part, which has 60 rows"):
        runner.run()
    assert _model_files(repo_root) == []


def test_an_algorithm_that_does_not_fit_the_spaces_is_refused_before_training(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=box_env, algo="dqn", algo_kwargs={}, **TEST)
    with pytest.raises(EnvContractError, match="dqn does not fit") as info:
        runner.run()
    assert "\n" not in str(info.value)
    assert _model_files(repo_root) == []


# -- the forward evaluation on its own ------------------------------------------------------------------------
def test_forward_trades_the_users_env_and_refuses_a_step_count_that_differs(prices):
    window = Window(0, 0, 150, 150, 210, test_start=210, test_stop=270)
    result = evaluate_forward(_Constant(1), prices, window, iteration=0, make_env=long_only_env, history=HISTORY)
    expected = prices.to_numpy()[211:271] / prices.to_numpy()[210:270] - 1.0
    np.testing.assert_array_equal(result.returns, expected)
    assert set(result.positions) == {1.0} and result.rows == tuple(range(211, 271))
    with pytest.raises(EnvContractError, match=r"early_env took 59 steps .* which has 60 dated rows"):
        evaluate_forward(_Constant(1), prices, window, iteration=0, make_env=early_env, history=HISTORY)
    with pytest.raises(EnvContractError, match="position_key"):
        reader = StepReader(position_key=None)
        evaluate_forward(_Constant(1), prices, window, iteration=0, make_env=long_only_env, step_reader=reader)


# -- the reader -----------------------------------------------------------------------------------------------
def test_step_reader_rules_presets_and_pickling():
    assert StepReader() == StepReader.trading_env() == StepReader(return_key="return")
    for reader in (StepReader.trading_env(), StepReader.gym_anytrading(), StepReader.gym_trading_env()):
        assert pickle.loads(pickle.dumps(reader)) == reader
    assert StepReader(equity_key="v").read({"v": 1.1, "position": 1}, 1.0).ret == pytest.approx(0.1)
    assert StepReader(position_map={"L": 1.0, "F": 0.0}).read({"return": 0.0, "position": "F"}).position == 0.0
    with pytest.raises(EnvContractError, match="one rule"):
        StepReader(return_key="r", equity_key="e")
    with pytest.raises(EnvContractError, match="not a finite number"):
        StepReader().read({"return": float("nan"), "position": 0})
    with pytest.raises(EnvContractError, match="reset info has no 'v'"):
        StepReader(equity_key="v").initial_equity({})


def test_the_default_reader_keeps_every_fingerprint_and_another_one_changes_it():
    base = RunOptions(100).to_config()
    assert RunOptions(100, step_reader=StepReader()).to_config() == base
    other = RunOptions(100, step_reader=StepReader.gym_trading_env(), env_history=3).to_config()
    assert other["step_reader"]["equity_key"] == "portfolio_valuation" and other["env_history"] == 3
    assert {k: v for k, v in other.items() if k not in ("step_reader", "env_history")} == base
    # the realized flag (gym-anytrading's preset) is recorded, and only when set: it came later
    assert "realized" not in other["step_reader"]
    realized = RunOptions(100, step_reader=StepReader.gym_anytrading()).to_config()["step_reader"]
    assert realized["realized"] is True and realized_caveat(realized) == REALIZED
    assert realized_caveat(other["step_reader"]) is None and "realized profit" in StepReader.gym_anytrading().describe()
    with pytest.raises(EnvContractError, match="realized must be True or False"):
        StepReader(realized="yes")


def test_evaluate_trading_reads_any_env_with_a_reader(prices):
    env = LongOnlyEnv(prices.to_numpy()[:40], keys=("equity",))
    metrics = evaluate_trading(
        _Constant(1), env, periods_per_year=252, step_reader=StepReader(equity_key="equity", position_key=None)
    )
    assert metrics["n_periods"] == 40 - HISTORY - 1 and metrics["n_trades"] is None
    builtin = evaluate_trading(_Constant(2), TradingEnv(prices.to_numpy()[:40]))
    assert builtin["n_trades"] == 1


# -- gym-anytrading, the real package -------------------------------------------------------------------------
def test_gym_anytrading_stocks_env_read_with_its_preset():
    gym_anytrading = pytest.importorskip("gym_anytrading")
    from gym_anytrading.datasets import STOCKS_GOOGL
    from gym_anytrading.envs import StocksEnv

    def stocks_env(segment, seed):
        return StocksEnv(segment, window_size=HISTORY, frame_bound=(HISTORY, len(segment)))

    assert gym_anytrading is not None
    frame = STOCKS_GOOGL.iloc[:80]
    reader = StepReader.gym_anytrading()
    env = stocks_env(frame, 0)
    rng = np.random.default_rng(0)

    class _Alternating:
        def predict(self, obs, deterministic=True):
            return np.asarray(int(rng.integers(2))), None

    episode = run_episode(_Alternating(), env, reader)
    assert len(episode.returns) == len(frame) - HISTORY - 1  # one step per row after the history but the last
    assert set(episode.positions) <= {0.0, 1.0}  # StocksEnv's Short is out of the market
    np.testing.assert_allclose(np.prod(1.0 + np.asarray(episode.returns)), env.unwrapped._total_profit, rtol=1e-12)
    # the forward evaluation over a test part of the data frame, with the preset
    window = Window(0, 0, 40, 40, 50, test_start=50, test_stop=70)
    result = evaluate_forward(
        _Constant(1),
        STOCKS_GOOGL["Close"].iloc[:100],
        window,
        iteration=0,
        make_env=lambda s, seed: stocks_env(s.to_frame(), seed),
        step_reader=reader,
        history=HISTORY,
    )
    assert result.rows == tuple(range(51, 71)) and set(result.positions) == {1.0}


def not_an_env(prices, seed):
    return None


def test_an_env_that_fails_its_reset_is_refused_on_one_line(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, make_env=not_an_env, **TEST)
    with pytest.raises(EnvContractError, match="not_an_env failed its reset or step .* AttributeError") as info:
        runner.run()
    assert "\n" not in str(info.value) and _model_files(repo_root) == []


def test_a_reader_without_a_position_is_refused_before_any_model_file_when_the_run_has_test_parts(
    prices, repo_root, make_runner
):
    reader = StepReader(position_key=None)
    runner = make_runner(prices, repo_root, make_env=long_only_env, step_reader=reader, **TEST)
    with pytest.raises(EnvContractError, match="reads no position") as info:
        runner.run()
    message = str(info.value)
    assert "\n" not in message and "give the StepReader a position_key" in message
    assert reader.describe() in message
    assert _model_files(repo_root) == [] and CheckpointRepository(repo_root).iterations() == []
