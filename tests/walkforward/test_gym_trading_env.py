"""gym-trading-env's real ``TradingEnv`` read with its preset (``StepReader.gym_trading_env()``), and a walk-forward
on it whose kept models, re-run independently in that env on their test rows, give exactly the stored forward.

Importing ``gym_trading_env`` turns every warning of the process into an error; it is imported inside
``warnings.catch_warnings()``, which puts pytest's filters back.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import StepReader, run_episode
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import Candidate

with warnings.catch_warnings():
    environments = pytest.importorskip("gym_trading_env.environments")


def feature_table(n: int = 420) -> pd.DataFrame:
    close = synthetic_prices(n, seed=3)
    table = pd.DataFrame({"close": close, "feature_return": close.pct_change().fillna(0.0)}, index=close.index)
    table["feature_level"] = close / close.iloc[0] - 1.0
    return table


def gte_env(segment: pd.DataFrame, seed: int):
    """Short, flat or long, 0.1 % fees, flat at the start (its default start is random)."""
    return environments.TradingEnv(
        df=segment, positions=[-1, 0, 1], trading_fees=0.001, initial_position=0, verbose=0, name="t"
    )


def test_the_preset_reads_gym_trading_envs_valuation_and_position():
    table = feature_table(60)
    env = gte_env(table, 0)
    rng = np.random.default_rng(0)

    class _Random:
        def predict(self, obs, deterministic=True):
            return np.asarray(int(rng.integers(3))), None

    episode = run_episode(_Random(), env, StepReader.gym_trading_env())
    assert len(episode.returns) == len(table) - 1  # one step per row but the last
    assert set(episode.positions) == {-1.0, 0.0, 1.0}
    valuation = env.unwrapped.historical_info["portfolio_valuation"]
    np.testing.assert_allclose(np.prod(1.0 + np.asarray(episode.returns)), valuation[-1] / valuation[0], rtol=1e-12)
    assert list(episode.positions) == [float(p) for p in env.unwrapped.historical_info["position"][1:]]


def _rerun(model, env) -> tuple[list[float], list[float]]:
    """The model over gym-trading-env, independently of the package: its own valuation history."""
    obs, _ = env.reset()
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    history = env.unwrapped.historical_info
    valuation = np.asarray(history["portfolio_valuation"], dtype=np.float64)
    return list(valuation[1:] / valuation[:-1] - 1.0), [float(p) for p in history["position"][1:]]


def test_a_walk_forward_on_gym_trading_env_stores_what_its_models_do_there(repo_root, make_runner, tiny_algo):
    table = feature_table()
    candidates = (Candidate("ppo", "ppo", seed=0, algo_kwargs=tiny_algo), Candidate("a2c", "a2c", seed=0))
    runner = make_runner(
        table,
        repo_root,
        splitter=WalkForwardSplitter(150, 60, test_size=60),
        make_env=gte_env,
        price_column="close",
        step_reader=StepReader.gym_trading_env(),
        env_history=0,
        candidates=candidates,
        algo_kwargs={},  # each candidate has its own
    )
    runner.run()
    repo = CheckpointRepository(repo_root)
    forwards = repo.forwards()
    assert len(forwards) == 3 and repo.verify() == []
    traded = [f for f in forwards if not f.placeholder]
    assert traded
    for f in traded:
        returns, positions = _rerun(
            repo.load(f.iteration, device="cpu"), gte_env(table.iloc[f.test_start : f.test_stop + 1], 0)
        )
        np.testing.assert_allclose(f.returns, returns, rtol=0, atol=1e-15)
        assert list(f.positions) == positions
        assert list(f.rows) == list(range(f.test_start + 1, f.test_stop + 1))
        assert list(f.dates) == [table.index[r].isoformat() for r in f.rows]
        close = table["close"].to_numpy()
        np.testing.assert_allclose(f.asset_returns, close[list(f.rows)] / close[[r - 1 for r in f.rows]] - 1.0)
