"""Walk-forward on a small two-asset portfolio env, against the equal-weight portfolio, ending with the report.

The data is a pandas DataFrame with a DatetimeIndex and the prices of two synthetic assets, ``a`` and ``b``,
both named as the run's price columns (``price_column=["a", "b"]``): buy-and-hold is then their equal-weight
portfolio, rebalanced every day (``sb3_iter_ckpt.data.equal_weight_index``). ``TwoAssetEnv`` holds all
of the portfolio in ``a``, half in each, or all in ``b`` (``Discrete(3)``), observing the recent returns
of both; it reports the portfolio's net return and its exposure (always 1.0: fully invested). Two
candidates per window (PPO and A2C) are trained on the train part and judged on the validation part; the
better one trades the test part, and the run ends with the HTML report, where the forward curve is
compared with the equal-weight portfolio.

    pip install sb3-iter-ckpt
    python examples/two_asset_portfolio.py --timesteps 20000 --out results/two-asset
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

#: Rows of returns the env observes before its first decision: the run's ``env_history``.
HISTORY = 5
#: The weight in ``a`` of each action (the rest in ``b``): all ``a``, half/half, all ``b``.
WEIGHTS_A = (1.0, 0.5, 0.0)


def two_asset_table(n: int = 900) -> pd.DataFrame:
    """Two synthetic assets' prices on the same business days."""
    a = synthetic_prices(n, seed=11)
    b = synthetic_prices(n, seed=12, start_price=50.0)
    return pd.DataFrame({"a": a.to_numpy(), "b": b.to_numpy()}, index=a.index)


class TwoAssetEnv(gym.Env):
    """A portfolio of ``a`` and ``b``: each step's action sets the weight in ``a`` (``WEIGHTS_A``), the rest in ``b``.

    One step per row after the first ``HISTORY`` rows but the last: the decision at row ``t`` sees the returns
    up to ``t`` and earns the weighted return to row ``t + 1``, less a cost on the weight it moves.
    ``info["return"]`` is that net return, ``info["position"]`` the exposure (the sum of the weights: 1.0).
    """

    def __init__(self, table: pd.DataFrame, cost: float = 0.0005) -> None:
        prices = table[["a", "b"]].to_numpy(dtype=np.float64)
        self.returns = np.vstack((np.zeros((1, 2)), prices[1:] / prices[:-1] - 1.0))  # row t: from t - 1 to t
        self.cost = cost
        self.action_space = spaces.Discrete(len(WEIGHTS_A))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2 * HISTORY + 1,), dtype=np.float32)

    def _obs(self) -> np.ndarray:
        recent = self.returns[self.t - HISTORY + 1 : self.t + 1] * 100.0  # in percent
        return np.append(recent.reshape(-1), self.weight_a).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.weight_a = HISTORY, 0.5  # the first decision is at row HISTORY, from half/half
        return self._obs(), {"return": 0.0, "position": 1.0}

    def step(self, action):
        weight_a = WEIGHTS_A[int(np.asarray(action).reshape(-1)[0])]
        ret_a, ret_b = self.returns[self.t + 1]
        turnover = 2.0 * abs(weight_a - self.weight_a)  # what leaves one asset enters the other
        ret = weight_a * ret_a + (1.0 - weight_a) * ret_b - self.cost * turnover
        self.weight_a = weight_a
        self.t += 1
        done = self.t == len(self.returns) - 1  # one step per row after the history but the last
        return self._obs(), float(ret), done, False, {"return": float(ret), "position": 1.0}


def make_env(table_slice: pd.DataFrame, seed: int) -> TwoAssetEnv:
    """The env on one segment of the table: the rows of the segment's dates, both columns."""
    return TwoAssetEnv(table_slice)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training timesteps per window and candidate")
    parser.add_argument("--out", type=Path, default=Path("results/two-asset"), help="the run's folder")
    args = parser.parse_args(argv)

    table = two_asset_table()
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
        # The env trades both assets: both are the run's price columns, and the baseline the report compares
        # with is their equal-weight portfolio (benchmark_column= would name another column instead).
        price_column=["a", "b"],
        candidates=candidates,
        progress=False,
    )
    result = runner.run()
    print(f"{len(runner.windows)} windows, {result.annualization}")
    for ck in result.checkpoints:
        chosen = ck.record.get("candidate") or {}
        name = chosen.get("name") or "no candidate kept a model"
        print(f"window {ck.iteration}: {name} (validation Sharpe ratios {chosen.get('scores')})")
    if result.forward is not None:
        print(f"stitched forward Sharpe: {result.forward['stitched']['metrics']['sharpe']}")
        # "buy-and-hold" in the forward results and the report is the equal-weight portfolio of a and b
        print(f"equal-weight total return: {result.forward['baseline']['buy_and_hold']['total_return']}")
    report = write_report(runner.repository, args.out / "report.html")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
