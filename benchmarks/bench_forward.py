"""7. Forward evaluation: what trading the test part adds to a window of the README's main job.

Runs the README's main job (``sb3-iter-ckpt walk-forward --experiment-id demo --total-timesteps 10000
--algo ppo,a2c``: 7 windows, two candidates each (PPO and A2C), test parts of 125 rows) through the CLI
in this process (the sequential executor), and times, inside that run, each window's ``train_window``
and, within it, the forward evaluation of the kept model after its commit (``window._forward``: the
model loaded through the repository, hash-verified; ``forward.evaluate_forward`` trading the test part;
``forward_iter_{i}.json`` committed). The code has no hook or logged duration for this, so the two
functions are wrapped with timers that call them unchanged. With candidates a window is trained once
per candidate and each candidate's kept model trades the test part: the window's figures add up its
candidates. Training = the window's time less its forward evaluation. Per window: wall and CPU seconds,
the forward part split into load / trade / write, and the ratio forward / training; then the median
over the windows that kept a model (a placeholder window stays flat: nothing is loaded or traded).
``--repeats N`` runs the job N times (default 1), each in a fresh results folder; the per-window
figures are medians over the runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL = 0.05  # issue 15: forward evaluation adds at most 5 % to a window's training time
README_JOB = ["walk-forward", "--experiment-id", "demo", "--total-timesteps", "10000", "--algo", "ppo,a2c"]
# --quick: the same command on a tiny series (2 windows, 512 timesteps): a smoke test, not a measurement.
QUICK_JOB = [
    *README_JOB[:4],
    "512",
    *README_JOB[5:],
    "--n-prices",
    "330",
    "--train-size",
    "150",
    "--val-size",
    "50",
    "--n-steps",
    "64",
    "--iterations",
    "2",
]


class Clock:
    """Wall and process CPU seconds spent in the wrapped calls, per iteration and per part."""

    def __init__(self) -> None:
        self.times: dict[tuple[int, str], list[float]] = {}
        self.current: int | None = None  # the iteration whose forward evaluation is running

    def wrap(self, fn: Callable[..., Any], part: str, iteration: Callable[..., int | None]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            i = iteration(*args, **kwargs)
            if i is None:
                return fn(*args, **kwargs)
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc = self.times.setdefault((i, part), [0.0, 0.0])
                acc[0] += time.perf_counter() - w0
                acc[1] += time.process_time() - c0

        return timed

    def get(self, i: int, part: str) -> tuple[float, float]:
        wall, cpu = self.times.get((i, part), (0.0, 0.0))
        return wall, cpu


def run_job(argv: list[str], results: Path) -> tuple[Clock, dict[str, Any], float]:
    """The CLI's walk-forward with timers around each window and its forward evaluation (calls unchanged)."""
    from sb3_iter_ckpt import cli
    from sb3_iter_ckpt.forward import trade
    from sb3_iter_ckpt.repository import CheckpointRepository
    from sb3_iter_ckpt.runner import executors, window

    clock = Clock()
    saved = {
        (executors, "train_window"): executors.train_window,
        (window, "_forward"): window._forward,
        (trade, "evaluate_forward"): trade.evaluate_forward,
        (trade, "placeholder_forward"): trade.placeholder_forward,
        (CheckpointRepository, "load"): CheckpointRepository.load,
        (CheckpointRepository, "commit_forward"): CheckpointRepository.commit_forward,
    }
    fwd = window._forward

    def forward_step(spec: Any, repo: Any) -> None:
        clock.current = spec.iteration
        try:
            fwd(spec, repo)
        finally:
            clock.current = None

    in_forward = lambda *a, **k: clock.current  # noqa: E731 - the parts count only inside a forward evaluation
    executors.train_window = clock.wrap(executors.train_window, "window", lambda spec: spec.iteration)
    window._forward = clock.wrap(forward_step, "forward", lambda spec, repo: spec.iteration)
    trade.evaluate_forward = clock.wrap(trade.evaluate_forward, "trade", in_forward)
    trade.placeholder_forward = clock.wrap(trade.placeholder_forward, "trade", in_forward)
    CheckpointRepository.load = clock.wrap(CheckpointRepository.load, "load", in_forward)  # type: ignore[method-assign]
    CheckpointRepository.commit_forward = clock.wrap(  # type: ignore[method-assign]
        CheckpointRepository.commit_forward, "write", in_forward
    )
    out = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            # in this process: the clocks wrap this process's functions (auto would train in worker processes)
            rc = cli.main([*argv, "--results-dir", str(results), "--json", "--executor", "sequential"])
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)
    total = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"the walk-forward exited {rc}: {out.getvalue()[-2000:]}")
    report = json.loads(out.getvalue())
    if report["forward"] is None or report["skipped"]:
        raise SystemExit(f"no complete forward result, or resumed windows: {report['forward_reason']}")
    return clock, report, total


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("7. Forward evaluation against a window's training (the README's main job)", args)
    argv = QUICK_JOB if args.quick else README_JOB
    runs = args.repeats or 1
    print(f"job: sb3-iter-ckpt {' '.join(argv)} (x{runs}, each in a fresh results folder)\n", flush=True)
    rows: dict[int, list[dict[str, float]]] = {}
    placeholder: dict[int, str] = {}  # windows without a kept model (why): flat over their test part
    totals = []
    for _ in range(runs):
        clock, report, total = run_job(argv, c.tmpdir("results"))
        totals.append(total)
        placeholder.update({ck["iteration"]: ck["reason"] for ck in report["checkpoints"] if not ck["has_model"]})
        for i in report["trained"]:
            (w_wall, w_cpu), (f_wall, f_cpu) = clock.get(i, "window"), clock.get(i, "forward")
            if f_wall <= 0 or w_wall <= f_wall:
                raise SystemExit(f"window {i}: no forward evaluation was timed inside its training")
            rows.setdefault(i, []).append(
                {
                    "train": w_wall - f_wall,
                    "forward": f_wall,
                    "load": clock.get(i, "load")[0],
                    "trade": clock.get(i, "trade")[0],
                    "write": clock.get(i, "write")[0],
                    "ratio": f_wall / (w_wall - f_wall),
                    "cpu_ratio": f_cpu / max(w_cpu - f_cpu, 1e-9),
                }
            )

    def med(i: int, key: str) -> float:
        return c.median([r[key] for r in rows[i]])

    table = [
        [
            f"{i} (placeholder: {placeholder[i]})" if i in placeholder else i,
            f"{med(i, 'train'):.2f}",
            f"{med(i, 'forward') * 1e3:.0f}",
            f"{med(i, 'load') * 1e3:.0f}",
            f"{med(i, 'trade') * 1e3:.0f}",
            f"{med(i, 'write') * 1e3:.0f}",
            f"{med(i, 'ratio') * 100:.2f} %",
            f"{med(i, 'cpu_ratio') * 100:.2f} %",
        ]
        for i in sorted(rows)
    ]
    # The goal is about a kept model's evaluation: a placeholder's (nothing to load or trade) is left out.
    every = [r for i in rows if i not in placeholder for r in rows[i]]
    if not every:
        raise SystemExit("no window kept a model: nothing was forward-evaluated")
    wall = c.median([r["ratio"] for r in every])
    cpu = c.median([r["cpu_ratio"] for r in every])
    table.append(
        [
            f"median ({len({i for i in rows if i not in placeholder})} windows with a model)",
            f"{c.median([r['train'] for r in every]):.2f}",
            f"{c.median([r['forward'] for r in every]) * 1e3:.0f}",
            f"{c.median([r['load'] for r in every]) * 1e3:.0f}",
            f"{c.median([r['trade'] for r in every]) * 1e3:.0f}",
            f"{c.median([r['write'] for r in every]) * 1e3:.0f}",
            f"**{wall * 100:.2f} %**",
            f"{cpu * 100:.2f} %",
        ]
    )
    c.table(
        f"Forward evaluation per window ({len(rows)} windows x {runs} run(s); goal: forward/training <= "
        f"{GOAL:.0%}); whole run {c.median(totals):.1f} s wall",
        [
            "iteration",
            "training s (wall)",
            "forward ms (wall)",
            "of which load ms",
            "trade ms",
            "write ms",
            "forward / training (wall)",
            "forward / training (CPU)",
        ],
        table,
    )
    c.goal(
        "7 forward evaluation",
        wall <= GOAL,
        f"median forward/training wall {wall * 100:.2f} % (<= {GOAL:.0%}), CPU {cpu * 100:.2f} %, "
        f"worst window {max(r['ratio'] for r in every) * 100:.2f} %",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
