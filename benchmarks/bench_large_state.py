"""4. Large state: SAC with a full replay buffer and save_replay_buffer=True.

Time the training thread is blocked at each iteration boundary, synchronous commit against
async_commit=True (the buffer's arrays copied in the training thread, pickled, written and fsynced
by the background writer), plus the wait at training end and the total wall time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("4. Large state (SAC + replay buffer)", args)
    c.setup_torch()
    import numpy as np
    from stable_baselines3 import SAC

    from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback

    if args.quick:
        sizes, per_iter, iterations, repeats = [10_000], 32, 2, args.repeats or 1
    else:
        sizes, per_iter, iterations, repeats = [100_000, 1_000_000], 100, 3, args.repeats or 3

    class Timed(IterationCheckpointCallback):
        """Records how long each boundary and the final wait keep the training thread."""

        def _init_callback(self) -> None:
            super()._init_callback()
            self.boundaries: list[float] = []
            self.end_wait = 0.0

        def _boundary(self) -> None:
            t0 = time.perf_counter()
            super()._boundary()
            self.boundaries.append(time.perf_counter() - t0)

        def wait(self) -> None:
            t0 = time.perf_counter()
            super().wait()
            self.end_wait += time.perf_counter() - t0

    def run(size: int, async_commit: bool) -> tuple[list[float], float, float, int]:
        model = SAC(
            "MlpPolicy", "Pendulum-v1", buffer_size=size, learning_starts=0, batch_size=64, device="cpu", seed=0
        )
        rb = model.replay_buffer
        rng = np.random.default_rng(0)
        for name in ("observations", "next_observations", "actions", "rewards"):
            arr = getattr(rb, name)
            arr[:] = rng.standard_normal(arr.shape, dtype=np.float32)
        rb.full, rb.pos = True, 0  # a full buffer: everything must be copied and written
        root = c.tmpdir(f"large-{size}")
        repo = CheckpointRepository(root)
        cb = Timed(
            repo,
            evaluator=lambda m, e: {"mean_reward": float(m.num_timesteps % per_iter)},
            eval_freq=per_iter // 2,
            iteration_timesteps=per_iter,
            save_replay_buffer=True,
            async_commit=async_commit,
        )
        t0 = time.perf_counter()
        model.learn(per_iter * iterations, callback=cb)
        wall = time.perf_counter() - t0
        assert repo.iterations() == list(range(iterations)), repo.iterations()
        nbytes = repo.get(0).artifacts["replay_buffer"].size
        return cb.boundaries, cb.end_wait, wall, nbytes

    rows = []
    ratios = []
    for size in sizes:
        results: dict[bool, list[tuple[list[float], float, float, int]]] = {False: [], True: []}
        for _ in range(repeats):
            for mode in (False, True):
                results[mode].append(run(size, mode))
        blocked = {m: c.median([b for r in results[m] for b in r[0]]) for m in results}
        ratio = blocked[True] / blocked[False]
        ratios.append(ratio)
        mb = results[False][0][3] / 1e6
        for mode in (False, True):
            rs = results[mode]
            rows.append(
                [
                    f"{size:,}",
                    f"{mb:.1f}",
                    "async_commit=True" if mode else "synchronous",
                    f"{blocked[mode] * 1e3:.1f}",
                    f"{max(b for r in rs for b in r[0]) * 1e3:.1f}",
                    f"{c.median([r[1] for r in rs]) * 1e3:.1f}",
                    f"{c.median([r[2] for r in rs]):.2f}",
                    f"{blocked[mode] / blocked[False]:.3f}",
                ]
            )
    c.table(
        f"Blocked time per boundary: {iterations} iterations x {per_iter} timesteps, {repeats} runs each",
        [
            "transitions",
            "buffer MB",
            "commit",
            "blocked ms (median)",
            "blocked ms (max)",
            "wait at end ms",
            "wall s",
            "ratio to sync",
        ],
        rows,
    )
    worst = max(ratios)
    c.goal("4 large state", worst <= 0.10, f"async blocked / sync blocked up to {worst:.3f} (goal <= 0.10)")
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
