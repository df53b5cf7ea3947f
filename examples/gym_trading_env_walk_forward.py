"""Walk-forward on gym-trading-env's ``TradingEnv`` over a feature table, ending with the report.

gym-trading-env observes the table's columns whose names contain ``feature`` (computed here from synthetic
OHLCV rows: the bar's return and the close's gap to its 20-day moving average) and trades ``close`` with
positions -1 (short), 0 (flat) and 1 (long), its fees and its portfolio valuation. The package reads each
step with ``StepReader.gym_trading_env()``: the return is the ratio of ``info["portfolio_valuation"]`` to the
one before, the position is ``info["position"]``. Two candidates per window (PPO and A2C) are trained on the
train part and judged on the validation part; the better one trades the test part, on ``TradingEnv`` again.

    pip install sb3-iter-ckpt gym-trading-env
    python examples/gym_trading_env_walk_forward.py --timesteps 20000 --out results/gym-trading-env

Mind: importing ``gym_trading_env`` turns every warning of the process into an error (it calls
``warnings.filterwarnings("error")``); it is imported here inside ``warnings.catch_warnings()``, which puts
the filters back.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import StepReader
from sb3_iter_ckpt.report import write_report
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import Candidate, WalkForwardRunner

with warnings.catch_warnings():
    from gym_trading_env.environments import TradingEnv

#: 0.1 % of the traded value per trade, as the run's cost is meant.
FEES = 0.001


def feature_table(n: int = 900, seed: int = 3) -> pd.DataFrame:
    """Synthetic OHLCV rows and two ``feature_`` columns; the moving average's warm-up rows are dropped."""
    close = synthetic_prices(n, seed=seed)
    rng = np.random.default_rng(seed)
    spread = np.abs(rng.normal(0.0, 0.004, n))
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
    table["feature_return"] = close.pct_change()
    table["feature_ma_gap"] = close / close.rolling(20).mean() - 1.0
    return table.dropna()


def make_env(segment: pd.DataFrame, seed: int) -> TradingEnv:
    """gym-trading-env's ``TradingEnv`` on the segment's rows: one step per row but the last (it starts on
    the first row, ``windows=None``), as the env contract asks; flat at the start (its default start is a
    random position from numpy's global generator, which would make the forward evaluation irreproducible)."""
    return TradingEnv(
        df=segment,
        positions=[-1, 0, 1],
        trading_fees=FEES,
        initial_position=0,
        verbose=0,
        name="synthetic",
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training timesteps per window and candidate")
    parser.add_argument("--out", type=Path, default=Path("results/gym-trading-env"), help="the run's folder")
    args = parser.parse_args(argv)

    n_steps = min(512, args.timesteps)
    candidates = (
        Candidate("ppo", "ppo", seed=0, algo_kwargs={"n_steps": n_steps, "batch_size": min(64, n_steps)}),
        Candidate("a2c", "a2c", seed=0),
    )
    runner = WalkForwardRunner(
        feature_table(),
        WalkForwardSplitter(train_size=400, val_size=120, test_size=120),
        args.out / "run",
        total_timesteps=args.timesteps,
        make_env=make_env,
        price_column="close",
        step_reader=StepReader.gym_trading_env(),  # portfolio_valuation as the equity, position as it is
        env_history=0,  # the env decides on the first row of its segment: no rows of history before it
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
    report = write_report(runner.repository, args.out / "report.html")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
