"""6. Disk: bytes on disk per iteration and the refresh's time, best_model.zip as a copy against a hard link.

Ours: model zip + record per iteration, two summaries, and best_model.zip (best_vecnormalize.pkl) a
copy of the best iteration's file (LocalStorage.copy_file: a reflink where the file system has one,
else a byte copy, fsynced and renamed into place). The hard link of earlier versions is measured
next to it (a LocalStorage whose copy_file links; unsafe: SB3's model.save and EvalCallback write
best_model.zip in place and so overwrote the committed model through the link).
Seed: model_iter_{i}.zip + metrics_iter_{i}.json copied from curr_best_model.zip, and
best_model_no_early_stopping.zip as a second full copy of the best model.
The refresh (after each commit) is timed separately when the best changed (a new copy) and when
it did not (nothing copied); median of every refresh over all repeats.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def _reflink_available(folder: Path) -> bool:
    from sb3_iter_ckpt.store.storage.local import _reflink

    (folder / "a").write_bytes(b"x" * 4096)
    with open(folder / "a", "rb") as src, open(folder / "b", "wb") as dst:
        return _reflink(src.fileno(), dst.fileno())


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("6. Disk", args)
    c.setup_torch()
    import torch
    from stable_baselines3 import PPO, SAC

    from sb3_iter_ckpt import CheckpointRepository
    from sb3_iter_ckpt.capture.snapshot import ModelSnapshot
    from sb3_iter_ckpt.store.storage import LocalStorage

    class HardLinkStorage(LocalStorage):
        """best_model.zip as earlier versions made it: a hard link to the committed model."""

        def copy_file(self, src: str, dst: str) -> None:
            dst_path = self._path(dst, for_write=True)
            temp = self._path(self._temp_for(dst), for_write=True)
            os.link(self._path(src), temp)
            os.replace(temp, dst_path)
            self._fsync_dir(dst_path.parent)

    n = 4 if args.quick else 10  # the best changes at iterations 0, 1, 2, 5, 8
    repeats = args.repeats or (1 if args.quick else 5)
    reflink = _reflink_available(c.tmpdir("reflink"))
    print(f"reflink (FICLONE) on this file system: {'yes' if reflink else 'no: byte copies'}\n")
    models = {"PPO MLP (CartPole)": PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu", seed=0)}
    if not args.quick:
        models["SAC MLP (Pendulum)"] = SAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, device="cpu", seed=0)
        models["PPO MLP 2x1024 (CartPole)"] = PPO(
            "MlpPolicy", "CartPole-v1", n_steps=64, device="cpu", seed=0, policy_kwargs=dict(net_arch=[1024, 1024])
        )
    rows = []
    safe = True
    for label, model in models.items():
        # one distinct zip per iteration (as training makes them): identical bytes would need no new copy
        snapshots = []
        for _ in range(n):
            with torch.no_grad():
                next(model.policy.parameters()).add_(1e-3)
            snapshots.append(ModelSnapshot.capture(model))
        times: dict[str, tuple[list[float], list[float]]] = {"copy": ([], []), "hard link": ([], [])}
        roots: dict[str, Path] = {}
        for r in range(repeats):
            for variant, (changed, same) in times.items():  # the variants take turns: noise hits both alike
                root = c.tmpdir(f"disk-{variant.replace(' ', '')}") / "repo"
                storage = LocalStorage(root) if variant == "copy" else HardLinkStorage(root)
                repo = CheckpointRepository(root, storage=storage)
                best_score = None
                for i in range(n):
                    score = float((i * 37) % 11)  # the best changes at 5 of 10 iterations
                    repo.commit(i, metrics={"mean_reward": score}, model=snapshots[i], timesteps=i)
                    t0 = time.perf_counter()
                    repo.refresh("mean_reward", "max")
                    (changed if best_score is None or score >= best_score else same).append(time.perf_counter() - t0)
                    best_score = score if best_score is None else max(best_score, score)
                if r < repeats - 1:
                    shutil.rmtree(root.parent)
                roots[variant] = root
        results = {}
        for variant, root in roots.items():
            best = CheckpointRepository(root).best()
            assert best is not None
            linked = os.path.samefile(root / "best_model.zip", root / "checkpoints" / best.artifacts["model"].file)
            if variant == "copy":
                safe = safe and not linked
            results[variant] = (root, times[variant][0], times[variant][1], linked)
        seed = c.tmpdir("disk-seed") / "repo"
        (seed / "checkpoints").mkdir(parents=True)
        best_score, best_i = None, None
        for i in range(n):
            score = float((i * 37) % 11)
            metrics = {"mean_reward": score}
            # the seed: EvalCallback's best model, copied per iteration, and the overall best copied again
            model.save(seed / "curr_best_model.zip")
            (seed / "curr_best_metrics.json").write_text(json.dumps(metrics))
            shutil.copy2(seed / "curr_best_model.zip", seed / "checkpoints" / f"model_iter_{i}.zip")
            shutil.copy2(seed / "curr_best_metrics.json", seed / "checkpoints" / f"metrics_iter_{i}.json")
            if best_score is None or score > best_score:
                best_score, best_i = score, i
                shutil.copy2(seed / "curr_best_model.zip", seed / "best_model_no_early_stopping.zip")
            (seed / "curr_best_model.zip").unlink()
            (seed / "curr_best_metrics.json").unlink()
        (seed / "checkpoint_summary.json").write_text(json.dumps({"n": n, "best": best_i}))
        zip_size = CheckpointRepository(results["copy"][0]).get(0).size_bytes or 0
        link_a, link_b = c.disk_bytes(results["hard link"][0])
        link_changed = c.median(results["hard link"][1])
        for variant, (root, changed, same, linked) in results.items():
            a, b = c.disk_bytes(root)
            rows.append(
                [
                    label,
                    f"ours, {variant}",
                    n,
                    f"{zip_size / 1e6:.3f}",
                    f"{a / n / 1e6:.3f}",
                    f"{b / n / 1e6:.3f}",
                    f"{b / link_b:.2f}",
                    c.spread(changed),
                    f"{c.median(changed) / link_changed:.2f}",
                    c.spread(same) if same else "",
                    "hard link (unsafe)" if linked else ("reflink" if reflink else "copy"),
                ]
            )
        a_s, b_s = c.disk_bytes(seed)
        rows.append(
            [
                label,
                "seed",
                n,
                f"{zip_size / 1e6:.3f}",
                f"{a_s / n / 1e6:.3f}",
                f"{b_s / n / 1e6:.3f}",
                f"{b_s / link_b:.2f}",
                "",
                "",
                "",
                "copy",
            ]
        )
    c.table(
        f"Bytes on disk per iteration ({n} iterations) and refresh ms, median (IQR) of {repeats} runs",
        [
            "model",
            "layout",
            "iterations",
            "model zip MB",
            "apparent MB / iteration",
            "allocated MB / iteration",
            "allocated × hard link",
            "refresh ms, best changed",
            "× hard link",
            "refresh ms, best unchanged",
            "best model",
        ],
        rows,
    )
    c.goal(
        "6 disk",
        safe,
        "best_model.zip shares no inode with a committed model (SB3 writing it cannot reach one)"
        if safe
        else "best_model.zip is a hard link to a committed model",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
