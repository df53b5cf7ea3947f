"""The seed script's five checkpoint functions, same names and arguments, delegating to the repository.

For users migrating from ``training_utils_no_early_stopping.py``: replace the import, keep the calls.
"""

from __future__ import annotations

import os
from typing import Any

from sb3_iter_ckpt.common.record import CHECKPOINTS_DIR
from sb3_iter_ckpt.repository import CheckpointRepository


def list_checkpoints(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every iteration as the seed listed it: iteration, model path, size, metrics (placeholders too)."""
    repo = CheckpointRepository(results_dir)
    on_disk = {name: st.size for name, st in repo.storage.listdir(CHECKPOINTS_DIR).items()}
    return [
        {
            "iteration": ck.iteration,
            "model_path": None if ck.model_path is None else str(ck.model_path),
            "has_model": ck.has_model,
            # unadopted legacy files have no recorded size: the size on disk, as the seed reported
            "size_mb": round((ck.size_bytes or sum(on_disk.get(a.file, 0) for a in ck.artifacts.values())) / 1e6, 3),
            "metrics": ck.metrics,
            "reason": ck.reason,
            "verified": ck.verified,
        }
        for ck in repo.list()
    ]


def analyze_checkpoint_performance(results_dir: str | os.PathLike[str], monitor: str | None = None) -> dict[str, Any]:
    """The cross-iteration analysis (see ``CheckpointRepository.analyze``)."""
    return CheckpointRepository(results_dir).analyze(monitor)


def cleanup_checkpoints(
    results_dir: str | os.PathLike[str], keep_every_n: int = 5, keep_last_n: int = 3, dry_run: bool = False
) -> dict[str, Any]:
    """Keep every Nth iteration and the last N; the best, the latest and placeholders are always kept."""
    result = CheckpointRepository(results_dir).prune(
        keep_every_n=keep_every_n, keep_last_n=keep_last_n, dry_run=dry_run
    )
    return result.to_dict()


def load_checkpoint_model(results_dir: str | os.PathLike[str], iteration: int, env: Any = None, **kwargs: Any) -> Any:
    """Load iteration ``iteration``'s model (verified before unpickling)."""
    return CheckpointRepository(results_dir).load(iteration, env=env, **kwargs)


def create_checkpoint_summary(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write and return ``checkpoint_summary.json``."""
    return CheckpointRepository(results_dir).write_summary()
