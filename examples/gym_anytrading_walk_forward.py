"""Walk-forward on gym-anytrading's ``StocksEnv`` and its bundled GOOGL data, ending with the report.

Two candidates per window (PPO and A2C), each trained on the window's train part and judged on its
validation part, both on ``StocksEnv``; the one with the better validation Sharpe ratio trades the
window's test part, on ``StocksEnv`` again. The test parts are stitched into one out-of-sample curve
and the run ends with the HTML report.

    pip install "sb3-iter-ckpt[tests]"          # or: pip install sb3-iter-ckpt gym-anytrading
    python examples/gym_anytrading_walk_forward.py --timesteps 20000 --out results/googl

Mind: gym-anytrading's ``total_profit`` changes only when a trade closes, so every return and curve
here is realized profit, not marked to market (see the docs' "Bring your own env").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from gym_anytrading.datasets import STOCKS_GOOGL
from gym_anytrading.envs import StocksEnv

from sb3_iter_ckpt.envs import StepReader
from sb3_iter_ckpt.report import write_report
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import Candidate, WalkForwardRunner

#: Rows of prices StocksEnv observes before its first decision (its ``window_size``): the run's ``env_history``.
WINDOW_SIZE = 10


def make_env(segment: pd.Series, seed: int) -> StocksEnv:
    """StocksEnv on one segment of the data: the GOOGL frame's rows of the segment's dates, all columns.

    With ``frame_bound=(WINDOW_SIZE, len(segment))`` it trades from row ``WINDOW_SIZE`` to the last row: one
    step per row after the first ``WINDOW_SIZE`` but the last, as the env contract asks (the preflight checks it).
    """
    frame = STOCKS_GOOGL.loc[segment.index]
    return StocksEnv(df=frame, window_size=WINDOW_SIZE, frame_bound=(WINDOW_SIZE, len(frame)))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training timesteps per window and candidate")
    parser.add_argument("--out", type=Path, default=Path("results/gym-anytrading-googl"), help="the run's folder")
    args = parser.parse_args(argv)

    prices = STOCKS_GOOGL["Close"]  # the price series with its DatetimeIndex: the windows are dated
    n_steps = min(512, args.timesteps)
    candidates = (
        Candidate("ppo", "ppo", seed=0, algo_kwargs={"n_steps": n_steps, "batch_size": min(64, n_steps)}),
        Candidate("a2c", "a2c", seed=0),
    )
    runner = WalkForwardRunner(
        prices,
        WalkForwardSplitter(train_size=1000, val_size=250, test_size=250),
        args.out / "run",
        total_timesteps=args.timesteps,
        make_env=make_env,
        step_reader=StepReader.gym_anytrading(),  # total_profit as the equity, Positions.Long as +1
        env_history=WINDOW_SIZE,
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
