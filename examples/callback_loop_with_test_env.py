"""A hand-written walk-forward loop with ``IterationCheckpointCallback(..., test_env=...)``, ending with the report.

Three iterations on synthetic prices: each trains PPO on the built-in ``TradingEnv`` over 200 days, is
evaluated on their last 60, and its kept model then trades the next 100 days, unseen, once and
deterministically (the callback's ``test_env``). The test parts follow each other, so the forward results
stitch into one out-of-sample curve: ``repo.forward_status()`` gives its metrics, the deflated Sharpe ratio
and buy-and-hold, and the run ends with the HTML report.

    pip install sb3-iter-ckpt
    python examples/callback_loop_with_test_env.py --timesteps 20000 --out results/callback-loop
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import TradingEnv
from sb3_iter_ckpt.forward import ForwardEnv
from sb3_iter_ckpt.report import write_report

ITERATIONS = 3
TRAIN, VALIDATION, TEST = 200, 60, 100  # days; each iteration moves on by TEST days
HISTORY = 10  # TradingEnv's window_size: rows it observes before its first decision


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="training timesteps per iteration")
    parser.add_argument("--out", type=Path, default=Path("results/callback-loop"), help="the run's folder")
    args = parser.parse_args(argv)

    prices = synthetic_prices(TRAIN + ITERATIONS * TEST + 1, seed=3)  # a pandas Series with business-day dates
    n_steps = min(512, args.timesteps)
    repo = CheckpointRepository(args.out / "run")
    for k in range(ITERATIONS):
        start = k * TEST
        train = prices.iloc[start : start + TRAIN]
        # the test part: decisions on the TEST days after the train part, with the HISTORY days before them
        # and the day after the last (its return); HISTORY + TEST + 1 prices, TEST steps
        test = prices.iloc[start + TRAIN - HISTORY : start + TRAIN + TEST + 1]
        # TradingEnv reports info["price"] (buy-and-hold's); the dates are given, one per step: the day
        # its return is realized, the day after the decision
        test_env = ForwardEnv(TradingEnv(test, window_size=HISTORY), dates=test.index[HISTORY + 1 :])
        model = PPO("MlpPolicy", TradingEnv(train), n_steps=n_steps, batch_size=min(64, n_steps), seed=k, device="cpu")
        callback = IterationCheckpointCallback(
            repo,
            eval_env=TradingEnv(train.iloc[-VALIDATION:]),
            n_eval_episodes=1,
            eval_freq=n_steps,
            test_env=test_env,
        )
        model.learn(args.timesteps, callback=callback)
        forward = repo.forward(k)
        print(f"iteration {k}: traded {forward.dates[0]} .. {forward.dates[-1]}, Sharpe {forward.metrics['sharpe']}")

    status, why = repo.forward_status()  # the test parts stitched in time order, against buy-and-hold
    if status is None:
        print(f"no stitched forward curve: {why}")
    else:
        print(f"stitched forward Sharpe: {status['stitched']['metrics']['sharpe']}")
        print(f"buy-and-hold total return: {status['baseline']['buy_and_hold']['total_return']}")
        print(f"deflated Sharpe ratio: {status['deflated_sharpe']} (trials: {status['n_trials']})")
    report = write_report(repo, args.out / "report.html")
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main()
