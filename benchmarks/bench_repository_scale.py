# ruff: noqa: B023  (closures are called within their loop iteration)
"""5. Repository scale: list(), best(), analyze() and a cold open at 100 / 1,000 / 10,000 iterations.

Against the seed's approach: glob the checkpoints folder and parse every JSON record on each call.
Records and (small) artifacts are synthesized directly in the repository's layout (no training).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def synthesize(root: Path, n: int) -> None:
    from sb3_iter_ckpt.common import record as rec
    from sb3_iter_ckpt.common.record import ArtifactInfo

    ck = root / "checkpoints"
    ck.mkdir(parents=True)
    payload = os.urandom(1024)
    digest = hashlib.sha256(payload).hexdigest()
    for i in range(n):
        extra = {"selection": {"monitor": "mean_reward", "mode": "max"}, "algorithm": "stable_baselines3.ppo.ppo.PPO"}
        if i % 10 == 9:  # a placeholder every tenth iteration
            r = rec.build(i, metrics={}, artifacts={}, reason="below_min_score", extra=extra)
            (ck / rec.placeholder_name(i)).write_bytes(rec.dumps(r))
            continue
        (ck / rec.artifact_name("model", i)).write_bytes(payload)
        metrics = {"mean_reward": float((i * 7919) % 1000) / 10, "validation": {"sharpe": (i % 37) / 10}}
        r = rec.build(
            i,
            metrics=metrics,
            artifacts={"model": ArtifactInfo(rec.artifact_name("model", i), digest, 1024)},
            timesteps=1000 * (i + 1),
            extra=extra,
        )
        (ck / rec.record_name(i)).write_bytes(rec.dumps(r))


def seed_list(root: Path) -> list[dict]:
    """What the seed's list_checkpoints did on every call."""
    out = []
    ck = os.path.join(root, "checkpoints")
    for pattern in ("metrics_iter_*.json", "no_model_iter_*.json"):
        for path in glob.glob(os.path.join(ck, pattern)):
            with open(path) as f:
                data = json.load(f)
            it = int(os.path.basename(path).rsplit("_", 1)[1].split(".")[0])
            model = os.path.join(ck, f"model_iter_{it}.zip")
            has = os.path.exists(model)
            out.append(
                {
                    "iteration": it,
                    "metrics": data,
                    "model_path": model if has else None,
                    "size_mb": os.path.getsize(model) / 1e6 if has else 0,
                }
            )
    return sorted(out, key=lambda d: d["iteration"])


def seed_best(root: Path):
    best = None
    for d in seed_list(root):
        s = (d["metrics"].get("metrics") or {}).get("mean_reward")
        if d["model_path"] and s is not None and (best is None or s > best[0]):
            best = (s, d)
    return best


def seed_analyze(root: Path) -> dict:
    cks = seed_list(root)
    scores = [s for d in cks if (s := (d["metrics"].get("metrics") or {}).get("mean_reward")) is not None]
    return {"n": len(cks), "mean": statistics.fmean(scores), "std": statistics.pstdev(scores), "max": max(scores)}


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("5. Repository scale", args)
    from sb3_iter_ckpt import CheckpointRepository

    sizes = [100, 1000] if args.quick else [100, 1000, 10_000]
    repeats = args.repeats or (3 if args.quick else 7)
    rows = []
    at_max: dict[str, float] = {}
    for n in sizes:
        root = c.tmpdir(f"scale-{n}") / "repo"
        synthesize(root, n)
        # cold: a new repository object (its sweep included) and its first list(), median over fresh objects
        colds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            repo = CheckpointRepository(root)
            assert len(repo.list()) == n
            colds.append(time.perf_counter() - t0)
        # Warm calls on a settled folder (unchanged for 2 s: the repository reuses its last scan while the
        # folder's version stays) and right after a change (every record stat-checked, changed ones re-read).
        ck = root / "checkpoints"
        time.sleep(max(0.0, 2.1 - (time.time_ns() - os.stat(ck).st_ctime_ns) / 1e9))
        repo = CheckpointRepository(root)
        repo.list()

        def list_after_change() -> None:
            os.utime(ck)  # a change of the folder, as any commit makes
            repo.list()

        t = c.interleaved(
            {
                "list": repo.list,
                "best": repo.best,
                "analyze": repo.analyze,
                "seed_list": lambda: seed_list(root),
                "seed_best": lambda: seed_best(root),
                "seed_analyze": lambda: seed_analyze(root),
            },
            repeats,
        )
        # Measured after the others: each call changes the folder, which un-settles it.
        t.update(c.interleaved({"list_changed": list_after_change}, repeats))
        m = {k: c.median(v) for k, v in t.items()}
        m["cold"] = c.median(colds)
        for op in ("list", "best", "analyze"):
            rows.append(
                [
                    f"{n:,}",
                    f"{op}()" + (", settled folder" if op == "list" else ""),
                    f"{m[op] * 1e3:.1f}",
                    f"{m['seed_' + op] * 1e3:.1f}",
                    f"{m['seed_' + op] / m[op]:.1f}",
                ]
            )
        rows.append(
            [
                f"{n:,}",
                "list(), right after a change",
                f"{m['list_changed'] * 1e3:.1f}",
                f"{m['seed_list'] * 1e3:.1f}",
                f"{m['seed_list'] / m['list_changed']:.1f}",
            ]
        )
        rows.append(
            [
                f"{n:,}",
                "cold open + first list()",
                f"{m['cold'] * 1e3:.1f}",
                f"{m['seed_list'] * 1e3:.1f}",
                f"{m['seed_list'] / m['cold']:.1f}",
            ]
        )
        at_max = m
    c.table(
        f"Repository scale: ms, median of {repeats} (warm calls interleaved with the seed's)",
        ["iterations", "operation", "ours ms", "seed ms (glob + parse all)", "seed / ours"],
        rows,
    )
    n = sizes[-1]
    ok = at_max["list"] < 0.1 and at_max["seed_list"] / at_max["list"] >= 10 and at_max["cold"] < 1.0
    c.goal(
        "5 repository scale",
        ok,
        f"at {n:,}: warm list {at_max['list'] * 1e3:.1f} ms (< 100), {at_max['seed_list'] / at_max['list']:.1f}x the "
        f"seed (>= 10), cold open {at_max['cold'] * 1e3:.0f} ms (< 1000); right after a change: "
        f"{at_max['list_changed'] * 1e3:.1f} ms, {at_max['seed_list'] / at_max['list_changed']:.1f}x the seed",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
