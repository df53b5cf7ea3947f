"""Run every benchmark (``python benchmarks/run_all.py``; ``--quick`` for the CI smoke variants).

Each script runs in its own process; their tables go to stdout, then a summary of the goals.
Exit status: non-zero if any script failed (a missed goal is reported, not a failure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_training_overhead.py",
    "bench_improvement.py",
    "bench_commit.py",
    "bench_large_state.py",
    "bench_repository_scale.py",
    "bench_disk.py",
    "bench_forward.py",
    "bench_env.py",
    "bench_algorithms.py",
    "bench_s3.py",
    "bench_parallel.py",
    "bench_report.py",
]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run_all.py",
        description="Run every benchmark script (full size: about 65 minutes on 2 cores, bench_algorithms.py about 46 "
        "of them, bench_s3.py about 10) and summarize the goals.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the smoke variants CI runs (tiny sizes, not measurements)"
    )
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT", help=f"only these scripts, of: {' '.join(SCRIPTS)}")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scripts if s not in SCRIPTS]
    if unknown:
        parser.error(f"unknown benchmark script(s): {' '.join(unknown)}")
    return args


def main(argv: list[str]) -> int:
    args = _parse(argv)
    extra = ["--quick"] if args.quick else []
    only = args.scripts
    env = dict(os.environ)
    logdir = None
    if "SB3_LOGDIR" not in env:
        logdir = env["SB3_LOGDIR"] = tempfile.mkdtemp(prefix="sb3-iter-ckpt-bench-log-")
    goals, failed = [], []
    for script in only or SCRIPTS:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / script), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        print(proc.stdout, flush=True)
        print(f"({script}: {time.perf_counter() - t0:.1f} s, exit {proc.returncode})\n", flush=True)
        goals += [ln for ln in proc.stdout.splitlines() if ln.startswith("GOAL ")]
        if proc.returncode != 0:
            failed.append(script)
    if logdir is not None:
        shutil.rmtree(logdir, ignore_errors=True)
    print("## Goals")
    for g in goals:
        print(f"- {g}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
