"""9. The report at scale: building the HTML page of a run of 100 iterations x 4 candidates, and its size.

The repository is a real walk-forward made by the command line (``walk-forward --algo ppo,a2c --seeds 2``:
four candidates, each trained on every one of 100 windows at a tiny budget of 32 timesteps, each kept
model trading its test part of 125 rows; 12,500 forward periods, 16 CSCV blocks, 12,870 logits). Then the
page is built again and again from that repository: ``sb3-iter-ckpt report`` as a user runs it (a new
process: Python's start and the imports included), and in this process its two halves, ``collect_report``
(the repository read, ``verify()`` included, the forward report recomputed from the signed forward files)
and ``render_report`` + the write. Wall and CPU seconds (the CPU time of the command is its process's,
read from ``getrusage``), medians over ``--repeats`` interleaved rounds; the page's size in MB. The goal is
judged on the command's CPU time: it runs on one core, so on an idle machine its wall time is about the same,
and on a shared one the wall time mostly measures the neighbours. The build takes about 1.5 minutes on 2 idle
cores; ``--root PATH`` times the report of an existing repository instead (a run of another version, yours).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL_SECONDS, GOAL_MB = 5.0, 6.0  # issue 24: at 100 iterations x 4 candidates


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sb3-iter-ckpt ARGS`` in a new process, on the package this process imported: ``python -m`` puts the
    current folder first on the path (a checkout there would answer instead), so it runs in ``cwd`` with the
    package's parent first on ``PYTHONPATH``."""
    import sb3_iter_ckpt

    parent = str(Path(sb3_iter_ckpt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (parent, os.environ.get("PYTHONPATH"))))}
    command = [sys.executable, "-m", "sb3_iter_ckpt.cli", *args]
    proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sb3-iter-ckpt {args[0]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def build(results: Path, quick: bool) -> Path:
    """The walk-forward of the module's docstring (``--quick``: 3 windows of 40 rows, 2 candidates)."""
    windows, test, algo = (3, 40, "ppo") if quick else (100, 125, "ppo,a2c")
    flags = ["--algo", algo, "--seeds", "2", "--total-timesteps", "32", "--n-steps", "16", "--eval-freq", "16"]
    flags += ["--train-size", "100", "--val-size", "50", "--test-size", str(test), "--iterations", str(windows)]
    flags += ["--n-prices", str(150 + windows * test), "--results-dir", str(results)]
    parallel = not quick and (os.cpu_count() or 1) > 1  # a process pool starts in seconds: not worth it for 6 units
    flags += ["--executor", "process" if parallel else "sequential"]
    _cli(["walk-forward", "--experiment-id", "report", *flags], cwd=results)
    return results / "report"


def describe(root: Path) -> str:
    """``N iterations x K candidates, P forward periods`` of a run's repository."""
    from sb3_iter_ckpt import CheckpointRepository

    repo = CheckpointRepository(root, sweep=False)
    candidates = root / "candidates"
    k = sum(p.is_dir() for p in candidates.iterdir()) if candidates.is_dir() else 1
    periods = sum(len(r.returns) for r in repo.forwards())
    return f"{len(repo.iterations())} iterations x {k} candidates, {periods:,} forward periods"


def cli_report(root: Path, out: Path) -> tuple[float, float]:
    """``sb3-iter-ckpt report ROOT --out OUT`` in a new process: (wall s, CPU s of that process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _cli(["report", str(root), "--out", str(out)], cwd=out.parent)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process(root: Path, out: Path) -> dict[str, tuple[float, float]]:
    """``collect_report`` then ``render_report`` and the write, in this process: part -> (wall s, CPU s)."""
    from sb3_iter_ckpt.report import collect_report
    from sb3_iter_ckpt.report.page import render_report

    w0, c0 = time.perf_counter(), time.process_time()
    data = collect_report(root)
    w1, c1 = time.perf_counter(), time.process_time()
    out.write_text(render_report(data), encoding="utf-8")
    w2, c2 = time.perf_counter(), time.process_time()
    return {"collect": (w1 - w0, c1 - c0), "render + write": (w2 - w1, c2 - c1)}


def main() -> int:
    p = c.parser(__doc__)
    p.add_argument("--root", type=Path, help="time the report of this repository instead of building one")
    args = p.parse_args()
    c.header("9. The report at scale", args)
    repeats = args.repeats or (1 if args.quick else 5)
    root = args.root
    if root is None:
        t0 = time.perf_counter()
        root = build(c.tmpdir("report"), args.quick)
        print(f"built in {time.perf_counter() - t0:.0f} s\n", flush=True)
    label = describe(root)
    out = c.tmpdir("page") / "page.html"
    in_process(root, out)  # warm-up: imports, plotly's first figure
    times: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeats):
        times.setdefault("`sb3-iter-ckpt report` (a new process)", []).append(cli_report(root, out))
        for part, value in in_process(root, out).items():
            times.setdefault(f"in this process: {part}", []).append(value)
    size = out.stat().st_size / 1e6
    rows = [
        [name, f"{c.median([w for w, _ in v]):.2f}", f"{c.median([u for _, u in v]):.2f}"] for name, v in times.items()
    ]
    c.table(
        f"The report of {label}: seconds, median of {repeats}; the page {size:.2f} MB",
        ["build", "wall s", "CPU s"],
        rows,
    )
    cli = times["`sb3-iter-ckpt report` (a new process)"]
    wall, cpu = c.median([w for w, _ in cli]), c.median([u for _, u in cli])
    c.goal(
        "9 report at scale",
        cpu < GOAL_SECONDS and size < GOAL_MB,
        f"{label}: `sb3-iter-ckpt report` {cpu:.2f} s CPU (< {GOAL_SECONDS:g} s; {wall:.2f} s wall), "
        f"the page {size:.2f} MB (< {GOAL_MB:g} MB)",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
