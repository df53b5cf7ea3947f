"""Walk-forward on a feature table: OHLCV columns and two indicators, a custom long/flat env, two candidates.

The data is a pandas DataFrame with a DatetimeIndex: synthetic closes (``sb3_iter_ckpt.data.synthetic_prices``)
with open, high, low and volume derived from them, and two indicators computed here, the close's gap to its
20-day moving average and the 14-day RSI. The runner hands each env the table's rows of its segment (all the
columns); ``LongFlatFeatureEnv`` observes the indicators' last rows and is flat or long on ``close``, the
traded price column (``price_column="close"``). Two candidates per window (PPO and A2C) are trained on the
train part and judged on the validation part; the better one trades the test part, and the run ends with the
HTML report.

    pip install sb3-iter-ckpt
    python examples/feature_table_walk_forward.py --timesteps 20000 --out results/feature-table
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import StepReader
from sb3_iter_ckpt.report import write_report
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import Candidate, WalkForwardRunner

#: Rows of indicators the env observes before its first decision: the run's ``env_history``.
HISTORY = 5
INDICATORS = ("ma_gap", "rsi")


def feature_table(n: int = 900, seed: int = 7) -> pd.DataFrame:
    """Synthetic OHLCV rows with a moving-average gap and the RSI; the indicators' warm-up rows are dropped."""
    close = synthetic_prices(n, seed=seed)
    rng = np.random.default_rng(seed)
    spread = np.abs(rng.normal(0.0, 0.005, n))
    table = pd.DataFrame(
        {
            "open": close.shift(1).fillna(close.iloc[0]),
            "high": close * (1.0 + spread),
            "low": close * (1.0 - spread),
            "close": close,
            "volume": rng.integers(100_000, 200_000, n).astype(np.float64),
        },
        index=close.index,
    )
    table["high"] = table[["open", "high", "close"]].max(axis=1)
    table["low"] = table[["open", "low", "close"]].min(axis=1)
    table["ma_gap"] = close / close.rolling(20).mean() - 1.0
    change = close.diff()
    gain = change.clip(lower=0.0).rolling(14).mean()
    loss = (-change.clip(upper=0.0)).rolling(14).mean()
    table["rsi"] = 100.0 - 100.0 / (1.0 + gain / loss)
    return table.dropna()  # the table must be finite: the first 20 rows have no moving average


class LongFlatFeatureEnv(gym.Env):
    """Flat (0) or long (1) on ``close``, observing the last ``HISTORY`` rows of the indicators and its position.

    One step per row after the first ``HISTORY`` rows but the last: the decision at row ``t`` sees the rows up
    to ``t`` and earns the close-to-close return to row ``t + 1`` (less a cost when the position changes),
    reported as ``info["return"]`` with the position held, ``info["position"]`` (the default ``StepReader``).
    """

    def __init__(self, table: pd.DataFrame, cost: float = 0.0005) -> None:
        features = table[list(INDICATORS)].to_numpy(dtype=np.float64)
        self.features = np.column_stack((features[:, 0] * 10.0, features[:, 1] / 100.0 - 0.5))  # about -1..1
        self.prices = table["close"].to_numpy(dtype=np.float64)
        self.cost = cost
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(HISTORY * len(INDICATORS) + 1,), dtype=np.float32)

    def _obs(self) -> np.ndarray:
        rows = self.features[self.t - HISTORY + 1 : self.t + 1].reshape(-1)
        return np.append(rows, self.position).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.position = HISTORY, 0.0  # the first decision is at row HISTORY
        return self._obs(), {"return": 0.0, "position": 0.0}

    def step(self, action):
        position = float(int(np.asarray(action).reshape(-1)[0]))
        ret = position * (self.prices[self.t + 1] / self.prices[self.t] - 1.0) - self.cost * abs(
            position - self.position
        )
        self.position = position
        self.t += 1
        done = self.t == len(self.prices) - 1  # one step per row after the history but the last
        return self._obs(), float(ret), done, False, {"return": float(ret), "position": position}


def make_env(table_slice: pd.DataFrame, seed: int) -> LongFlatFeatureEnv:
    """The env on one segment of the table: all its columns, the rows of the segment's dates."""
    return LongFlatFeatureEnv(table_slice)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training timesteps per window and candidate")
    parser.add_argument("--out", type=Path, default=Path("results/feature-table"), help="the run's folder")
    args = parser.parse_args(argv)

    table = feature_table()
    n_steps = min(512, args.timesteps)
    candidates = (
        Candidate("ppo", "ppo", seed=0, algo_kwargs={"n_steps": n_steps, "batch_size": min(64, n_steps)}),
        Candidate("a2c", "a2c", seed=0),
    )
    runner = WalkForwardRunner(
        table,
        WalkForwardSplitter(train_size=400, val_size=120, test_size=120),
        args.out / "run",
        total_timesteps=args.timesteps,
        make_env=make_env,
        step_reader=StepReader.trading_env(),  # info["return"], info["position"]
        env_history=HISTORY,
        price_column="close",  # the traded price: dates the steps, gives buy-and-hold
        candidates=candidates,
        progress=False,
    )
    result = runner.run()
    print(f"{len(table)} rows x {len(table.columns)} columns, {len(runner.windows)} windows, {result.annualization}")
    for ck in result.checkpoints:
        chosen = ck.record.get("candidate") or {}
        name = chosen.get("name") or "no candidate kept a model"
        print(f"window {ck.iteration}: {name} (validation Sharpe ratios {chosen.get('scores')})")
    if result.forward is not None:
        print(f"stitched forward Sharpe: {result.forward['stitched']['metrics']['sharpe']}")
    report = write_report(runner.repository, args.out / "report.html")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
