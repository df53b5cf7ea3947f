"""The content of ``training_summary.json`` and ``checkpoint_summary.json``, and the versions a record carries.

Pure over what it is given (the checkpoints, the best one, the selection rule, what the best files
hold, the analysis): the repository reads and writes the files.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.retention import is_pruned
from sb3_iter_ckpt.stats.analysis import performance_range
from sb3_iter_ckpt.store.bestfiles import BestFile, ownership

_CK = rec.CHECKPOINTS_DIR


@functools.cache
def _installed(distribution: str) -> str:
    """An installed distribution's version, read once per process (its metadata parsed: milliseconds each)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on, for the record. Read from the installed
    distributions, not by importing them: ``verify`` and ``list`` never import torch or SB3."""
    from sb3_iter_ckpt.common.version import __version__

    def of(module: str, distribution: str) -> str:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(getattr(loaded, "__version__", None), str):
            return str(loaded.__version__)
        return _installed(distribution)

    return {
        "sb3_iter_ckpt": __version__,
        "stable_baselines3": of("stable_baselines3", "stable-baselines3"),
        "torch": of("torch", "torch"),
        "gymnasium": of("gymnasium", "gymnasium"),
        "numpy": of("numpy", "numpy"),
        "python": platform.python_version(),
    }


def _best_info(
    best: Checkpoint, rule: SelectionRule, best_model: BestFile, pending: Mapping[str, str] | None
) -> dict[str, Any]:
    best_model_ok = (
        pending is None and best_model.owner == "ours" and bool(best.sha256) and best_model.sha256 == best.sha256
    )
    model_file = f"{_CK}/{best.artifacts['model'].file}"
    info: dict[str, Any] = {
        "iteration": best.iteration,
        "score": best.score(rule.monitor),
        "metrics": best.metrics,
        "model_file": model_file,
        "best_model_file": rec.BEST_MODEL if best_model_ok else None,
        "sha256": best.sha256,
        "timesteps": best.timesteps,
    }
    if best_model.owner == "user":
        info["best_model_note"] = (
            f"{rec.BEST_MODEL} is another tool's file (e.g. SB3's EvalCallback), left as it is; "
            f"this repository's best model is {model_file}"
        )
    return info


def training_summary(
    cks: Sequence[Checkpoint],
    best: Checkpoint | None,
    rule: SelectionRule,
    found: Mapping[str, BestFile],
    pending: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The content of ``training_summary.json`` (totals, best checkpoint, performance range).

    :param cks: Every trusted checkpoint.
    :param best: The best of them by ``rule``.
    :param found: What each best-file name holds now.
    :param pending: A refresh about to replace the best files (then no ``best_model_file`` is named).
    """
    # Same definition as the analysis: every record with a finite value, ties to the later iteration.
    perf = performance_range(cks, rule.monitor)
    return {
        "schema_version": rec.SCHEMA_VERSION,
        "updated_at": rec.utc_now(),
        "checkpoints_dir": _CK,
        "total_checkpoints": sum(c.has_model for c in cks),
        "total_iterations": len(cks),
        "placeholders": sum(not c.has_model and not is_pruned(c) for c in cks),
        "pruned": sum(is_pruned(c) for c in cks),
        "iterations": [c.iteration for c in cks],
        "monitor": rule.monitor,
        "mode": rule.mode,
        "best": None if best is None else _best_info(best, rule, found[rec.BEST_MODEL], pending),
        "best_files": ownership(found, pending),
        "performance_range": perf,
        "versions": versions(),
    }


def created_at(old_summary: bytes | None) -> str | None:
    """The ``created_at`` an existing ``checkpoint_summary.json`` keeps (None: missing or damaged)."""
    if old_summary is None:
        return None
    try:
        old = rec.loads(old_summary, rec.CHECKPOINT_SUMMARY)
    except CheckpointError:
        return None
    meta = old.get("metadata") if isinstance(old, dict) else None
    created = meta.get("created_at") if isinstance(meta, dict) else None
    return created if isinstance(created, str) else None


def checkpoint_summary(analysis: dict[str, Any], created: str | None) -> dict[str, Any]:
    """The content of ``checkpoint_summary.json``: metadata and the analysis."""
    now = rec.utc_now()
    return {
        "schema_version": rec.SCHEMA_VERSION,
        "metadata": {
            "created_at": created if created is not None else now,
            "updated_at": now,
            "versions": versions(),
            "checkpoints_dir": _CK,
        },
        "analysis": analysis,
    }
