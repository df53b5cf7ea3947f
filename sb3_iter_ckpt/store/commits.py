"""``Publisher``: durable commits of one repository's iterations, artifacts first, the metrics record last.

It chooses the number (an explicit one refused when taken; automatic numbering takes the next free
one, also when another writer wins a race), stages the artifacts, builds and signs the record, and
has the ``Storage`` publish them; a failed or refused commit leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import ArtifactInfo, Checkpoint
from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, CommitError
from sb3_iter_ckpt.store.catalog import Catalog
from sb3_iter_ckpt.store.index import check_iteration
from sb3_iter_ckpt.store.storage import Source, Staged, Storage, intent_name
from sb3_iter_ckpt.store.summaries import versions

_CK = rec.CHECKPOINTS_DIR
_NEXT_FREE_ATTEMPTS = 1000  # writers racing for numbers: each lost race costs one; a bound, not a timeout


def commit_error(exc: OSError, what: str) -> CommitError:
    """A failed write as the package's error, naming the usual causes."""
    name = {28: "disk full (ENOSPC)", 5: "I/O error (EIO)", 13: "permission denied (EACCES)"}.get(
        exc.errno or 0, exc.strerror or type(exc).__name__
    )
    return CommitError(f"could not write {what}: {name}: {exc}")


def write_file(storage: Storage, name: str, data: bytes, where: object) -> None:
    """``storage.write_atomic``, a failure raised as ``commit_error`` naming ``name`` in ``where``."""
    try:
        storage.write_atomic(name, data)
    except OSError as exc:
        raise commit_error(exc, f"{name} in {where}") from exc


@dataclass
class Draft:
    """One iteration to commit: the record's content and, while committing, its number and staged files."""

    iteration: int
    metrics: Mapping[str, Any]
    reason: str | None
    timesteps: int | None
    fields: dict[str, Any]
    has_model: bool
    staged: dict[str, Staged] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        iteration: int,
        metrics: Mapping[str, Any],
        sources: Mapping[str, Source | None],
        reason: str | None,
        timesteps: int | None,
        extra: Mapping[str, Any] | None,
    ) -> Draft:
        """A commit's arguments checked: a placeholder (no model) needs a reason and holds no artifacts."""
        iteration = check_iteration(iteration)
        has_model = sources.get("model") is not None
        if not has_model and not reason:
            raise CheckpointError("a placeholder needs a reason")
        if not has_model and any(src is not None for src in sources.values()):
            raise CheckpointError("a placeholder holds no artifacts")
        return cls(iteration, metrics, reason, timesteps, dict(extra or {}), has_model=has_model)


class Publisher:
    """The write path of one repository.

    :param catalog: The repository's records (what is taken, the next free number) and signing decisions
        (a signed repository needs its key; records are signed).
    :param where: The checkpoints folder, for messages.
    """

    def __init__(self, catalog: Catalog, where: object) -> None:
        self.catalog = catalog
        self.storage = catalog.index.storage
        self.index = catalog.index
        self.trust = catalog.trust
        self.where = where

    def ensure_free(self, iterations: Sequence[int], overwrite: bool = False) -> None:
        """See ``CheckpointRepository.ensure_free``."""
        self.trust.authorize_write(self.index)
        if overwrite:
            return
        taken, stray = self.index.occupied([check_iteration(i) for i in iterations])
        if stray:
            # Another writer's commit in flight (its intent is there from before its files are renamed
            # into place until after its record is published) takes the number; its files are not strays.
            taken = [
                i
                for i in iterations
                if self.storage.exists(intent_name(f"{_CK}/{rec.record_name(i)}")) or self.index.has(i)
            ]
        if taken:
            raise CheckpointExistsError(
                f"iteration(s) {', '.join(map(str, taken))} already committed in {self.where}; "
                "use iteration=None for the next free one, or overwrite=True to replace"
            )
        if stray:
            raise CheckpointExistsError(
                f"{_CK}/{stray[0]} exists without a record (another program's file?) and would be overwritten; "
                "move it away, use iteration=None for the next free number, or pass overwrite=True"
            )

    def _taken(self, iteration: int) -> bool:
        taken, stray = self.index.occupied([iteration])
        return bool(taken or stray)

    def commit(
        self,
        draft: Draft,
        sources: Mapping[str, Source | None],
        *,
        overwrite: bool = False,
        idempotent: bool = False,
        next_free: bool = False,
        verbose: int = 0,
    ) -> Checkpoint:
        """See ``CheckpointRepository.commit``; ``draft.iteration`` is checked, ``sources`` by artifact kind."""
        if idempotent and not overwrite and self.index.has(draft.iteration):
            return self.catalog.get(draft.iteration)
        next_free = next_free and not overwrite
        if not next_free:
            self.ensure_free([draft.iteration], overwrite)  # and the signing key's check
        else:
            self.trust.authorize_write(self.index)
            if self._taken(draft.iteration):
                draft.iteration = max(draft.iteration + 1, self.index.next_iteration())
        # An explicit overwrite deletes the old iteration (record first) under the commit lock.
        replace = self.index.files_of(draft.iteration) if overwrite and self.index.has(draft.iteration) else []
        try:
            for kind, src in sources.items():
                if src is not None:
                    draft.staged[kind] = self.storage.stage(f"{_CK}/{rec.artifact_name(kind, draft.iteration)}", src)
            draft.fields.setdefault("versions", versions())
            committed = self._publish(draft, overwrite, next_free, replace)
        except CheckpointExistsError:
            self.storage.discard(list(draft.staged.values()))  # another writer's record won
            if idempotent:
                return self.catalog.get(draft.iteration)
            raise
        except OSError as exc:
            self.storage.discard(list(draft.staged.values()))
            raise commit_error(exc, f"iteration {draft.iteration} to {self.where}") from exc
        except BaseException:
            self.storage.discard(list(draft.staged.values()))
            raise
        if verbose >= 1:
            kind = "checkpoint" if draft.has_model else f"placeholder ({draft.reason})"
            print(f"sb3-iter-ckpt: committed iteration {draft.iteration} {kind} to {self.where}")
        return committed

    def _publish(self, draft: Draft, overwrite: bool, next_free: bool, replace: Sequence[str]) -> Checkpoint:
        """Build, sign and publish the record; under automatic numbering, retry the next free number."""
        signer = self.trust.signer
        for attempt in range(_NEXT_FREE_ATTEMPTS):
            i = draft.iteration
            artifacts = {k: ArtifactInfo(s.final.rsplit("/", 1)[-1], s.sha256, s.size) for k, s in draft.staged.items()}
            record = rec.build(
                i,
                metrics=draft.metrics,
                artifacts=artifacts,
                reason=draft.reason,
                timesteps=draft.timesteps,
                extra=draft.fields,
            )
            if signer is not None:
                signer.stamp(record)
            name = rec.record_name(i) if draft.has_model else rec.placeholder_name(i)
            data = rec.dumps(record)
            # Refused before publishing what no reader could parse back (metadata nested too deeply...).
            committed = rec.parse(name, data, model_path_for=self.index.model_path)
            conflicts = [] if overwrite else [f"{_CK}/{rec.record_name(i)}", f"{_CK}/{rec.placeholder_name(i)}"]
            try:
                self.storage.publish(
                    list(draft.staged.values()), f"{_CK}/{name}", data, conflicts=conflicts, replace=replace
                )
                return committed
            except CheckpointExistsError:
                if not next_free or attempt == _NEXT_FREE_ATTEMPTS - 1:
                    raise
            # Automatic numbering: another writer took this number since we chose it. The record is
            # create-only, so trying the next free number until one is ours is race-free.
            draft.iteration = max(i + 1, self.index.next_iteration())
            draft.staged = {
                k: self.storage.restage(s, f"{_CK}/{rec.artifact_name(k, draft.iteration)}")
                for k, s in draft.staged.items()
            }
        raise CheckpointError("unreachable: the last attempt raises")  # pragma: no cover
