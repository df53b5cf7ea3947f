"""The repository's side of retention: what a plan may not remove here, and pruning one iteration.

``retention`` decides from the records alone; this module adds what only a repository knows (files
of an unadopted seed folder are not ours; the recorded best is protected whatever ``keep_best_k``
ranks by) and removes an iteration's artifacts in a crash-safe order through the ``Storage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.signing import Signer
from sb3_iter_ckpt.retention import AnyOf, RetentionPlan, RetentionPolicy, policy_from_args
from sb3_iter_ckpt.store.storage import Storage, strip_attempt

_CK = rec.CHECKPOINTS_DIR


@dataclass(frozen=True)
class PruneResult:
    """What ``prune()`` decided and did.

    :param plan: The ``RetentionPlan`` (keep, remove, protected with reasons).
    :param removed: Files deleted (empty for a dry run).
    :param freed_bytes: Bytes freed.
    :param dry_run: Whether nothing was deleted on purpose.
    """

    plan: RetentionPlan
    removed: tuple[str, ...]
    freed_bytes: int
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep": list(self.plan.keep),
            "remove": list(self.plan.remove),
            "protected": {str(k): v for k, v in self.plan.protected.items()},
            "removed_files": list(self.removed),
            "freed_bytes": self.freed_bytes,
            "dry_run": self.dry_run,
        }


def combined_policy(
    policy: RetentionPolicy | None,
    keep_every_n: int | None,
    keep_last_n: int | None,
    keep_best_k: int | None,
    monitor: str,
    mode: str,
) -> RetentionPolicy | None:
    """``policy`` and the ``keep_*`` shortcuts combined by union; None when none is given."""
    shortcuts = policy_from_args(keep_every_n, keep_last_n, keep_best_k, monitor, mode)
    parts = [p for p in (policy, shortcuts) if p]
    return AnyOf(*parts) if len(parts) > 1 else (parts[0] if parts else None)


def protect(result: RetentionPlan, cks: Sequence[Checkpoint], recorded_best: Checkpoint | None) -> RetentionPlan:
    """``result`` keeping what this repository must not delete.

    :param cks: The checkpoints the plan was made from.
    :param recorded_best: The best by the recorded selection, when the plan ranked by another rule.
    """
    # Files of an unadopted legacy folder were not written by us: never delete them.
    saved = {c.iteration: "unverified" for c in cks if not c.verified and c.iteration in result.remove}
    # A monitor/mode given for keep_best_k must not unprotect the best by the recorded selection
    # (the one best_model.zip and training_summary.json name).
    if recorded_best is not None and recorded_best.iteration in result.remove:
        saved[recorded_best.iteration] = "best"
    if not saved:
        return result
    protected = dict(result.protected)
    protected.update(saved)
    return RetentionPlan(
        keep=tuple(sorted(set(result.keep) | set(saved))),
        remove=tuple(i for i in result.remove if i not in saved),
        protected=dict(sorted(protected.items())),
    )


def prune_iteration(
    storage: Storage, ck: Checkpoint, remove_record: bool, signer: Signer | None
) -> tuple[list[str], int]:
    """Remove ``ck``'s artifacts (and its record when ``remove_record``): (files removed, bytes freed)."""
    # State before delete: the record stops naming the artifacts first, so a crash in
    # between leaves unreferenced files, never a record pointing at a missing file. A record to
    # remove goes last (after being marked pruned): a model never outlives its record (verify()
    # reports a model without a record).
    record_name = f"{_CK}/{ck.record_file}"
    if ck.artifacts or not remove_record:
        pruned = dict(ck.record)
        pruned["pruned"] = {
            "at": rec.utc_now(),
            "artifacts": {k: {"file": a.file, "sha256": a.sha256, "size": a.size} for k, a in ck.artifacts.items()},
        }
        pruned["artifacts"] = {}
        pruned.pop("signature", None)
        if signer is not None:
            signer.stamp(pruned)
        storage.write_atomic(record_name, rec.dumps(pruned))
    removed: list[str] = []
    freed = 0
    for kind, art in ck.artifacts.items():
        if kind not in rec.ARTIFACT_NAMES or strip_attempt(art.file) != rec.artifact_name(kind, ck.iteration):
            continue  # a hand-edited record naming another file: not a file this repository wrote
        if storage.delete(f"{_CK}/{art.file}"):
            removed.append(f"{_CK}/{art.file}")
            freed += art.size or 0
    if remove_record:
        # The forward result goes with its record, before it: a kill in between leaves a pruned record
        # without one (nothing to evaluate again), never a forward result without its record.
        forward = f"{_CK}/{rec.forward_name(ck.iteration)}"
        if storage.delete(forward):
            removed.append(forward)
        storage.delete(record_name)
        removed.insert(0, record_name)
    return removed, freed
