"""Adopting a folder written by the seed's script: its records rewritten in the current schema, with hashes.

A legacy record (no ``schema_version``) keeps its metrics and gains the sha256 and size of its files;
a ``model_iter_{i}.zip`` without any record gets one with empty metrics. From then on those files are
verified like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import ArtifactInfo, Checkpoint
from sb3_iter_ckpt.common.signing import Signer
from sb3_iter_ckpt.store.index import RecordIndex
from sb3_iter_ckpt.store.storage import FileStat, Storage

_CK = rec.CHECKPOINTS_DIR


def legacy_checkpoints(
    good: Mapping[int, Checkpoint], listing: Mapping[str, FileStat], index: RecordIndex
) -> dict[int, Checkpoint]:
    """``good`` plus a checkpoint for each ``model_iter_{i}.zip`` in ``listing`` that has no record."""
    out = dict(good)
    orphan_models = [p[1] for n in listing if (p := rec.parse_artifact_name(n)) and p[0] == "model"]
    for i in sorted(set(orphan_models) - set(out)):
        out[i] = index.orphan_checkpoint(i)
    return out


def adopted_record(storage: Storage, ck: Checkpoint, listing: Mapping[str, FileStat]) -> dict[str, Any] | None:
    """The current-schema record of the legacy ``ck``, or None when its model is missing (verify() reports it)."""
    i = ck.iteration
    artifacts: dict[str, ArtifactInfo] = {}
    for kind in ("model", "vecnormalize"):
        name = rec.artifact_name(kind, i)
        if ck.has_model and name in listing:
            digest, size = storage.hash_file(f"{_CK}/{name}")
            artifacts[kind] = ArtifactInfo(name, digest, size)
    if ck.has_model and "model" not in artifacts:
        return None  # the legacy record's model is missing: leave it for verify() to report
    return rec.build(
        i,
        metrics=ck.metrics,
        artifacts=artifacts,
        reason=ck.reason,
        timesteps=None,
        extra={"adopted_at": rec.utc_now(), "legacy_record": ck.record},
    )


def adopt(storage: Storage, good: Mapping[int, Checkpoint], index: RecordIndex, signer: Signer | None) -> list[int]:
    """Rewrite every unverified record of ``good`` (and record orphan models); return the adopted iterations.

    Called under the repository's lock, after the signing check.
    """
    adopted: list[int] = []
    listing = storage.listdir(_CK)
    for i, ck in sorted(legacy_checkpoints(good, listing, index).items()):
        if ck.verified:
            continue
        record = adopted_record(storage, ck, listing)
        if record is None:
            continue
        if signer is not None:
            signer.stamp(record)
        storage.write_atomic(f"{_CK}/{ck.record_file}", rec.dumps(record))
        adopted.append(i)
    return adopted
