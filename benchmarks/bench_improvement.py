# ruff: noqa: B023  (closures are called within their loop iteration)
"""2. Cost of one improvement (a new in-iteration best).

Ours (ModelSnapshot.capture: copies of the state dicts, the zip is built only at commit) against the
previous in-memory snapshot (model.save(io.BytesIO())), model.save(path) (EvalCallback's
best_model_save_path) and the seed's save + copy.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    args = c.parser(__doc__).parse_args()
    c.header("2. Cost of one improvement", args)
    c.setup_torch()

    from sb3_iter_ckpt.capture.snapshot import ModelSnapshot

    repeats = args.repeats or (5 if args.quick else 200)
    steps = 64 if args.quick else 256
    models = c.sample_models(args.quick)
    rows = []
    worst = float("inf")
    for label, model in models.items():
        model.learn(steps)  # optimizer state exists, like a model mid-training
        folder = c.tmpdir("improve")
        path, copy_to = folder / "best_model.zip", folder / "model_iter_0.zip"

        def save_and_copy() -> None:
            model.save(path)
            shutil.copy2(path, copy_to)

        times = c.interleaved(
            {
                "ours": lambda: ModelSnapshot.capture(model),
                "bytesio": lambda: model.save(io.BytesIO()),
                "path": lambda: model.save(path),
                "seed": save_and_copy,
            },
            repeats,
        )
        snap = ModelSnapshot.capture(model)
        buf = io.BytesIO()
        model.save(buf)
        ours = c.median(times["ours"])
        worst = min(worst, c.median(times["path"]) / ours)
        for key, name in (
            ("ours", "ours: ModelSnapshot.capture"),
            ("bytesio", "previous: model.save(io.BytesIO())"),
            ("path", "model.save(path)"),
            ("seed", "seed: model.save(path) + shutil.copy2"),
        ):
            m = c.median(times[key])
            held = (
                f"{snap.nbytes / 1e6:.3f}"
                if key == "ours"
                else (f"{len(buf.getvalue()) / 1e6:.3f}" if key == "bytesio" else "0 (on disk)")
            )
            rows.append([label, name, c.spread(times[key]), f"{m / ours:.2f}", held])
    c.table(
        f"One improvement: ms, median (IQR) of {repeats} interleaved repeats",
        ["model", "variant", "ms", "x ours", "MB held in memory"],
        rows,
    )
    c.goal("2 improvement", worst >= 2.0, f"model.save(path) / ours >= {worst:.2f} for every model (goal >= 2)")
    c.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
