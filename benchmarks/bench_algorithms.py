"""10. The FinRL-style ensemble: the run time of each of its five candidates at the README's budget.

Issue 23: ``sb3-iter-ckpt walk-forward --algo a2c,ppo,ddpg,sac,td3`` at the README's budget (10,000
timesteps per iteration, ``--n-steps 256``, the CLI's splitter: train 500, validation 125, test parts of 125
rows, 1,500 synthetic prices, seed 0: 7 windows), its settings built by the CLI's own parser, run in this
process with the sequential executor, torch on one thread. A2C and PPO train on the built-in env's discrete
mode, DDPG, SAC and TD3 on its continuous mode, each with SB3's default hyperparameters (off-policy: a
gradient step per timestep from timestep 100 on, batches of 256).

One run, timed in wall seconds and in CPU seconds (the machine of the figures is shared; CPU time is what
the work costs whatever else runs beside it):

* **per candidate**: what its windows took in their worker, this process
  (``result.candidates[name].outcomes``: ``seconds`` and ``cpu_seconds`` of building the envs and the model,
  training with its evaluations, the commit, the forward evaluation of the test part), in total and per
  window, and against PPO's;
* **the run**: its wall and CPU time, against the sum of its candidates' windows. The rest is the driver's:
  the preflight of each candidate, copying each window's chosen model into the root, the stitched curve and
  the statistics. The goal: at most 5 % of the run's CPU time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL = 0.05  # the driver's share of the five-candidate run
ALGOS = "a2c,ppo,ddpg,sac,td3"
README = ["--total-timesteps", "10000"]
# --quick: two small windows of 128 timesteps, off-policy learning from step 32 on batches of 32
QUICK = ["--total-timesteps", "128", "--n-prices", "330", "--train-size", "150", "--val-size", "50"]
QUICK += ["--n-steps", "32", "--eval-freq", "64", "--iterations", "2"]
OFF = '{"learning_starts": 32, "batch_size": 32}'
QUICK += [arg for a in ("ddpg", "sac", "td3") for arg in ("--algo-kwargs", f"{a}:{OFF}")]


def main() -> int:
    p = c.parser(__doc__)
    p.add_argument("--iterations", type=int, default=None, help="only the first N windows (default: all 7)")
    args = p.parse_args()
    c.header("10. The FinRL-style ensemble: run time per candidate", args)
    c.setup_torch()

    from sb3_iter_ckpt.cli import _prices, _run_options, _splitter, build_parser
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    flags = QUICK if args.quick else README + (["--iterations", str(args.iterations)] if args.iterations else [])
    cli = ["walk-forward", "--experiment-id", "finrl", "--algo", ALGOS, *flags]
    print(f"the run: sb3-iter-ckpt {' '.join(cli)} --executor sequential (in this process)\n", flush=True)
    ns = build_parser().parse_args(cli)
    ns.test_size = ns.val_size  # what the command does with no --test-size
    prices = _prices(ns)
    # in this process, as measured: its CPU clock then holds every window's (auto would train in worker processes)
    runner = WalkForwardRunner(
        prices, _splitter(ns, len(prices)), c.tmpdir("finrl"), options=_run_options(ns), executor="sequential"
    )
    runner.progress = False
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = runner.run(max_iterations=ns.iterations)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    out = {name: list(r.outcomes.values()) for name, r in result.candidates.items()}
    ppo = sum(o["cpu_seconds"] for o in out["ppo-s0"])
    rows, windows, windows_cpu = [], 0.0, 0.0
    for name, outcomes in out.items():
        w, u, n = sum(o["seconds"] for o in outcomes), sum(o["cpu_seconds"] for o in outcomes), len(outcomes)
        rows.append((name, n, w, u, u / n, u / ppo, f"{u / cpu:.1%}"))
        windows, windows_cpu = windows + w, windows_cpu + u
    n = len(result.checkpoints)
    rows.append(
        ("all five (sum)", n, windows, windows_cpu, windows_cpu / n, windows_cpu / ppo, f"{windows_cpu / cpu:.1%}")
    )
    rows.append(("the run", n, wall, cpu, cpu / n, cpu / ppo, "100%"))
    c.table(
        f"The five-candidate run, {ns.total_timesteps} timesteps per window",
        ["candidate", "windows", "wall s", "CPU s", "CPU s per window", "CPU to PPO", "share of the run's CPU"],
        rows,
    )
    if windows_cpu > cpu * 1.01:  # this process's clock cannot have missed its own windows
        raise SystemExit(f"the windows took {windows_cpu:.1f} CPU s, the run {cpu:.1f}: they ran in other processes")
    driver = (cpu - windows_cpu) / cpu
    c.goal(
        "the driver's share of the five-candidate run's CPU time <= 5 %",
        driver <= GOAL,
        f"{driver:.1%}: {cpu:.1f} CPU s in the run, {windows_cpu:.1f} in the candidates' windows; {wall:.1f} s wall",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
