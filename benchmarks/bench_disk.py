"""6. Disk: bytes on disk per iteration, our layout against the seed's.

Ours: model zip + record per iteration, best_model.zip a hard link to the best iteration's zip
(LocalStorage.link_or_copy; a copy only where the file system has no hard links), two summaries.
Seed: model_iter_{i}.zip + metrics_iter_{i}.json copied from curr_best_model.zip, and
best_model_no_early_stopping.zip as a second full copy of the best model.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("6. Disk", args)
    c.setup_torch()
    from stable_baselines3 import PPO, SAC

    from sb3_iter_ckpt import CheckpointRepository
    from sb3_iter_ckpt.snapshot import ModelSnapshot

    n = 3 if args.quick else 10
    models = {"PPO MLP (CartPole)": PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu", seed=0)}
    if not args.quick:
        models["SAC MLP (Pendulum)"] = SAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, device="cpu", seed=0)
    rows = []
    for label, model in models.items():
        ours = c.tmpdir("disk-ours") / "repo"
        repo = CheckpointRepository(ours)
        seed = c.tmpdir("disk-seed") / "repo"
        (seed / "checkpoints").mkdir(parents=True)
        best_score, best_i = None, None
        for i in range(n):
            score = float((i * 37) % 11)
            metrics = {"mean_reward": score}
            repo.commit(i, metrics=metrics, model=ModelSnapshot.capture(model), timesteps=i)
            repo.refresh("mean_reward", "max")
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
        repo.write_summary()
        (seed / "checkpoint_summary.json").write_text(json.dumps({"n": n, "best": best_i}))
        zip_size = repo.get(0).size_bytes
        a_o, b_o = c.disk_bytes(ours)
        a_s, b_s = c.disk_bytes(seed)
        linked = (ours / "best_model.zip").stat().st_nlink > 1
        rows.append(
            [
                label,
                "ours",
                n,
                f"{zip_size / 1e6:.3f}",
                f"{a_o / n / 1e6:.3f}",
                f"{b_o / n / 1e6:.3f}",
                "hard link" if linked else "copy",
            ]
        )
        rows.append([label, "seed", n, f"{zip_size / 1e6:.3f}", f"{a_s / n / 1e6:.3f}", f"{b_s / n / 1e6:.3f}", "copy"])
        ok = linked
    c.table(
        f"Bytes on disk per iteration ({n} iterations; hard links counted once)",
        [
            "model",
            "layout",
            "iterations",
            "model zip MB",
            "apparent MB / iteration",
            "allocated MB / iteration",
            "best model",
        ],
        rows,
    )
    c.goal("6 disk", ok, "best_model.zip is a hard link: no second copy" if ok else "hard links unavailable: a copy")
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
