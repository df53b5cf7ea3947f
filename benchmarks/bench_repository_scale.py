# ruff: noqa: B023  (closures are called within their loop iteration)
"""5. Repository scale: a cold open, list(), best(), analyze() at 100 / 1,000 / 10,000 (--large: 50,000) iterations.

Against the seed's approach: glob the checkpoints folder and parse every JSON record on each call.
Records (shaped as the walk-forward writes them, about 3 KB) and 1 KB artifacts are synthesized
directly in the repository's layout (no training).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def _metrics(r: random.Random) -> dict:
    """A trading run's metrics, as the walk-forward records them (validation, train, combined)."""
    part = {
        k: r.uniform(-2, 2)
        for k in ("cagr", "calmar", "exposure", "max_drawdown", "sharpe", "sortino", "total_return", "volatility")
    }
    counts = {"n_periods": r.randrange(100, 700), "n_trades": r.randrange(30), "periods_per_year": 252}
    validation = {**part, **counts, "mean_reward": r.uniform(-1, 1), "n_episodes": 1, "win_rate": r.random()}
    train = {**{k: v * 0.9 for k, v in part.items()}, **counts, "mean_reward": r.uniform(-1, 1), "n_episodes": 1}
    return {
        "combined": {**part, **counts},
        "mean_reward": validation["mean_reward"],
        "train": train,
        "validation": validation,
    }


def synthesize(root: Path, n: int) -> None:
    """``n`` iterations shaped as the walk-forward commits them (records of about 3 KB), a 1 KB model each."""
    from sb3_iter_ckpt.common import record as rec
    from sb3_iter_ckpt.common.record import ArtifactInfo
    from sb3_iter_ckpt.store.summaries import versions

    ck = root / "checkpoints"
    ck.mkdir(parents=True)
    r = random.Random(0)
    base = {
        "algorithm": "stable_baselines3.ppo.ppo.PPO",
        "evaluation": {"deterministic": True, "eval_freq": 2000, "n_eval_episodes": 5, "source": "evaluator"},
        "n_below_min_score": 0,
        "n_envs": 1,
        "n_evaluations": 5,
        "n_nan_evaluations": 0,
        "policy_class": "stable_baselines3.common.policies.ActorCriticPolicy",
        "versions": versions(),
    }
    for i in range(n):
        window = {
            f"{part}_{edge}": 125 * i + k
            for k, (part, edge) in enumerate((p, e) for p in ("train", "val", "test") for e in ("start", "stop"))
        }
        window.update(
            {
                f"{part}_{edge}_time": f"2016-0{1 + i % 9}-1{i % 10}T00:00:00"
                for part in ("train", "val", "test")
                for edge in ("start", "end")
            }
        )
        metrics = _metrics(r)
        extra = {
            **base,
            "metadata": {
                "fingerprint": r.randbytes(32).hex(),
                "lineage": {"warm_start_from": None},
                "periods_per_year": 252,
                "periods_per_year_source": "given",
                "seed": 0,
                "window": {"iteration": i, **window},
            },
            "selection": {
                "min_score": None,
                "mode": "max",
                "monitor": "validation.sharpe",
                "score": metrics["validation"]["sharpe"],
            },
            "window_timesteps": [10_000 * i, 10_000 * (i + 1)],
        }
        if i % 10 == 9:  # a placeholder every tenth iteration
            p = rec.build(i, metrics={}, artifacts={}, reason="below_min_score", extra=extra)
            (ck / rec.placeholder_name(i)).write_bytes(rec.dumps(p))
            continue
        payload = r.randbytes(1024)
        (ck / rec.artifact_name("model", i)).write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        m = rec.build(
            i,
            metrics=metrics,
            artifacts={"model": ArtifactInfo(rec.artifact_name("model", i), digest, 1024)},
            timesteps=10_000 * (i + 1),
            extra=extra,
        )
        (ck / rec.record_name(i)).write_bytes(rec.dumps(m))


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


def cold_vs_seed(root: Path, n: int, repeats: int) -> dict[str, list[float]]:
    """A cold open (a new repository object, its sweep included, and its first ``list()``) interleaved with
    the seed's glob + parse of every record: both read every record once, from the page cache."""
    from sb3_iter_ckpt import CheckpointRepository

    def cold() -> None:
        assert len(CheckpointRepository(root).list()) == n

    return c.interleaved({"cold": cold, "seed_list": lambda: seed_list(root)}, repeats)


def warm_calls(root: Path, repeats: int) -> dict[str, list[float]]:
    """Warm calls on a settled folder (unchanged for 2 s: the repository reuses its last scan while the
    folder's version stays) and right after a change (every record stat-checked, changed ones re-read)."""
    from sb3_iter_ckpt import CheckpointRepository

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
    return t


def main() -> int:
    p = c.parser(__doc__)
    p.add_argument("--large", action="store_true", help="also 50,000 iterations (a few minutes)")
    args = p.parse_args()
    c.header("5. Repository scale", args)

    sizes = [100, 1000] if args.quick else [100, 1000, 10_000] + ([50_000] if args.large else [])
    repeats = args.repeats or (3 if args.quick else 7)
    cold_rows, rows = [], []
    at: dict[int, dict[str, float]] = {}
    for n in sizes:
        root = c.tmpdir(f"scale-{n}") / "repo"
        synthesize(root, n)
        cold = {k: c.median(v) for k, v in cold_vs_seed(root, n, repeats).items()}
        m = {k: c.median(v) for k, v in warm_calls(root, repeats).items()}
        m["cold"], m["seed_cold"] = cold["cold"], cold["seed_list"]
        at[n] = m
        kb = sum(f.stat().st_size for f in (root / "checkpoints").glob("*.json")) / n / 1e3
        cold_rows.append(
            [
                f"{n:,}",
                f"{kb:.1f}",
                f"{m['cold'] * 1e3:.1f}",
                f"{m['seed_cold'] * 1e3:.1f}",
                f"{m['cold'] / m['seed_cold']:.2f}",
            ]
        )
        for op, what in (
            ("list", "list(), settled folder"),
            ("best", "best()"),
            ("analyze", "analyze()"),
            ("list_changed", "list(), right after a change"),
        ):
            seed = m["seed_" + op.split("_")[0]]
            rows.append([f"{n:,}", what, f"{m[op] * 1e3:.1f}", f"{seed * 1e3:.1f}", f"{seed / m[op]:.1f}"])
        shutil.rmtree(root.parent, ignore_errors=True)
    c.table(
        f"Cold open + first list() against the seed's glob + json.load of every record: ms, median of {repeats} "
        "interleaved",
        ["iterations", "record KB", "ours: cold open + list() ms", "seed: glob + parse ms", "ours / seed"],
        cold_rows,
    )
    c.table(
        f"Warm calls: ms, median of {repeats} (interleaved with the seed's)",
        ["iterations", "operation", "ours ms", "seed ms (glob + parse all)", "seed / ours"],
        rows,
    )
    n = 1000 if args.quick else 10_000
    m = at[n]
    ok = m["list"] < 0.1 and m["seed_list"] / m["list"] >= 10 and m["cold"] <= m["seed_cold"]
    c.goal(
        "5 repository scale",
        ok,
        f"at {n:,}: cold open + list() {m['cold'] * 1e3:.0f} ms, {m['cold'] / m['seed_cold']:.2f}x the seed's glob + "
        f"parse (<= 1); warm list {m['list'] * 1e3:.1f} ms (< 100), {m['seed_list'] / m['list']:.1f}x faster than "
        f"the seed (>= 10); right after a change: {m['list_changed'] * 1e3:.1f} ms, "
        f"{m['seed_list'] / m['list_changed']:.1f}x faster",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
