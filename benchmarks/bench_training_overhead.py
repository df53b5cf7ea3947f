"""1. Training overhead: the same PPO walk-forward training with identical evaluation schedules.

Variants: no checkpointing; SB3 EvalCallback without saving; EvalCallback with best_model_save_path
plus a copy per iteration (the seed's approach); IterationCheckpointCallback (sync and async commit).
Wall time and process CPU time (all threads) of each, medians of interleaved repeats, and the
ratios to "EvalCallback without saving". On a shared machine the CPU time is the steadier measure:
other processes stretch the wall time of whichever run they happen to overlap.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("1. Training overhead (PPO, MLP policy, CartPole-v1)", args)
    c.setup_torch()
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback

    if args.quick:
        iterations, per_iter, eval_freq, episodes, repeats = 2, 128, 64, 1, args.repeats or 1
        ppo = dict(n_steps=64, batch_size=64, n_epochs=1)
    else:
        iterations, per_iter, eval_freq, episodes, repeats = 3, 2048, 512, 2, args.repeats or 7
        ppo = dict(n_steps=512, batch_size=64, n_epochs=4)

    def eval_env():
        env = gym.make("CartPole-v1")
        env.reset(seed=123)
        return env

    cpu: dict[str, list[float]] = {}

    def run(variant: str) -> None:
        cpu0 = time.process_time()
        model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), seed=0, device="cpu", **ppo)
        root = c.tmpdir(variant)
        ours = None
        if variant.startswith("ours"):
            ours = IterationCheckpointCallback(
                CheckpointRepository(root),
                eval_env=eval_env(),
                eval_freq=eval_freq,
                n_eval_episodes=episodes,
                async_commit=variant == "ours_async",
            )
        for it in range(iterations):
            if variant == "none":
                cb = None
            elif variant == "eval_nosave":
                cb = EvalCallback(eval_env(), eval_freq=eval_freq, n_eval_episodes=episodes, verbose=0, warn=False)
            elif variant == "eval_save_copy":
                best = root / f"iter_{it}"
                cb = EvalCallback(
                    eval_env(),
                    eval_freq=eval_freq,
                    n_eval_episodes=episodes,
                    best_model_save_path=str(best),
                    verbose=0,
                    warn=False,
                )
            else:
                cb = ours
            model.learn(per_iter, callback=cb, reset_num_timesteps=False)
            if variant == "eval_save_copy":  # the seed: copy the iteration's best into checkpoints/
                (root / "checkpoints").mkdir(exist_ok=True)
                if (best / "best_model.zip").exists():
                    shutil.copy2(best / "best_model.zip", root / "checkpoints" / f"model_iter_{it}.zip")
        if ours is not None:
            ours.close()
        cpu.setdefault(variant, []).append(time.process_time() - cpu0)
        shutil.rmtree(root, ignore_errors=True)

    names = {
        "none": "no checkpointing",
        "eval_nosave": "EvalCallback, no saving",
        "eval_save_copy": "EvalCallback + best_model_save_path + copy/iteration (seed)",
        "ours": "IterationCheckpointCallback",
        "ours_async": "IterationCheckpointCallback(async_commit=True)",
    }
    warmup = 0 if args.quick else 1
    times = c.interleaved({k: (lambda k=k: run(k)) for k in names}, repeats, warmup=warmup)
    cpu_t = {k: v[warmup:] for k, v in cpu.items()}
    base, cbase = c.median(times["eval_nosave"]), c.median(cpu_t["eval_nosave"])
    rows = [
        [
            names[k],
            f"{c.median(v):.3f}",
            f"{c.median(v) / base:.3f}",
            f"{c.median(cpu_t[k]):.3f}",
            f"{c.median(cpu_t[k]) / cbase:.3f}",
            len(v),
        ]
        for k, v in times.items()
    ]
    c.table(
        f"Training overhead: {iterations} iterations x {per_iter} timesteps, eval every {eval_freq} "
        f"({episodes} episodes)",
        ["variant", "wall s", "wall ratio", "CPU s", "CPU ratio (to EvalCallback without saving)", "runs"],
        rows,
    )
    ours, seed = c.median(cpu_t["ours"]) / cbase, c.median(cpu_t["eval_save_copy"]) / cbase
    wall = c.median(times["ours"]) / base
    c.goal(
        "1 training overhead",
        ours <= 1.02 and ours < seed,
        f"CPU ratio: ours {ours:.3f} (<= 1.02), seed {seed:.3f}; wall ratio ours {wall:.3f}",
    )
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
