"""The chosen candidate of each window, copied into the experiment root.

In a run with candidates each candidate trains every window into its own repository
(``candidates/<name>/``, see ``sb3_iter_ckpt.common.candidates``). Once every candidate has committed window
``i`` (and its forward result), :func:`publish_choice` picks the one whose kept model has the best
selection score and commits iteration ``i`` of the root with:

* a **copy** of its artifacts (read back hash-verified, written through the root's own crash-safe commit;
  never a link, so nothing written to one file can reach the other);
* a record with the candidate's metrics, timesteps and fields, plus ``candidate``: its name, its score,
  every candidate's score, where its record lies and ``members``: what ties the root to every candidate's
  window (its model and forward hashes, its repository's identity; ``store.members``), signed with the root;
* the candidate's forward result on the window's test part (the model is the same bytes: it is the one
  that trades the stitched curve).

When no candidate kept a model (every one a placeholder), the root gets a placeholder saying so, and a
flat forward result. Idempotent: an iteration already in the root (a resumed run) only gets its forward
result when that is missing, so the list, best, load, prune and verify of the root work unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sb3_iter_ckpt.common.candidates import CANDIDATES_DIR, choose
from sb3_iter_ckpt.common.record import CHECKPOINTS_DIR
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.retention import is_pruned
from sb3_iter_ckpt.store.forwardfiles import model_sha256
from sb3_iter_ckpt.store.members import check_members, member_entry

if TYPE_CHECKING:
    from sb3_iter_ckpt.common.record import Checkpoint
    from sb3_iter_ckpt.repository import CheckpointRepository

__all__ = ["check_choices", "publish_choice"]


def check_choices(root: CheckpointRepository, members: Mapping[str, CheckpointRepository]) -> None:
    """Before a run chooses again: every candidate folder still holds what the root recorded of it
    (``CheckpointError`` naming the first that does not: replaced by another experiment's, or another
    candidate's files copied over it), so that no choice is made, and signed, from foreign data."""
    check_members({ck.iteration: ck for ck in root.list()}, members)


# Set again by the root's own commit, or its own (the signature covers the root record).
_OWN_FIELDS = frozenset(
    {"schema_version", "iteration", "kind", "created_at", "reason", "timesteps", "metrics", "artifacts", "signature"}
)


def publish_choice(
    root: CheckpointRepository,
    iteration: int,
    members: Mapping[str, CheckpointRepository],
    rule: SelectionRule,
    fingerprint: str,
) -> Checkpoint:
    """Commit window ``iteration``'s chosen candidate to ``root`` (see the module); return the root's checkpoint.

    :param root: The experiment's repository.
    :param iteration: The window.
    :param members: Candidate name -> its repository, in the run's order (ties go to the first).
    :param rule: The run's selection rule.
    :param fingerprint: The root run's fingerprint (its records' ``metadata.fingerprint``).
    :raises CheckpointError: a candidate has not committed the window.
    """
    if not root.has(iteration):
        missing = [name for name, repo in members.items() if not repo.has(iteration)]
        if missing:
            raise CheckpointError(f"window {iteration} is not committed by candidate(s) {missing}; run again")
        cks = {name: repo.get(iteration) for name, repo in members.items()}
        pruned = [name for name, ck in cks.items() if is_pruned(ck)]
        if pruned:  # choosing among the rest would silently change the run's choice
            raise CheckpointError(
                f"window {iteration}'s model of candidate(s) {pruned} was pruned before it was copied to the root; "
                "the choice can no longer be made: run the walk-forward again, which retrains those windows"
            )
        scores = {name: ck.score(rule.monitor) if ck.has_model else None for name, ck in cks.items()}
        chosen = choose(scores, rule)
        tie = {name: member_entry(repo, iteration) for name, repo in members.items()}
        if chosen is None:
            _commit_placeholder(root, iteration, cks, scores, tie, fingerprint)
        else:
            _commit_copy(root, iteration, chosen, members[chosen], cks[chosen], scores, tie, fingerprint)
    ck = root.get(iteration)
    _publish_forward(root, ck, members)
    return ck


def _candidate_field(
    chosen: str | None, ck: Checkpoint | None, scores: Mapping[str, float | None], tie: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "name": chosen,
        "score": scores.get(chosen) if chosen is not None else None,
        "scores": dict(scores),
        "record": None if ck is None else f"{CANDIDATES_DIR}/{chosen}/{CHECKPOINTS_DIR}/{ck.record_file}",
        "members": dict(tie),
    }


def _fields(ck: Checkpoint, fingerprint: str) -> dict[str, Any]:
    fields = {k: v for k, v in ck.record.items() if k not in _OWN_FIELDS}
    fields["metadata"] = {**(fields.get("metadata") or {}), "fingerprint": fingerprint}
    return fields


def _commit_copy(
    root: CheckpointRepository,
    iteration: int,
    chosen: str,
    member: CheckpointRepository,
    ck: Checkpoint,
    scores: Mapping[str, float | None],
    tie: Mapping[str, Any],
    fingerprint: str,
) -> None:
    artifacts = {kind: member.read_artifact(iteration, kind) for kind in ck.artifacts}
    extra = {**_fields(ck, fingerprint), "candidate": _candidate_field(chosen, ck, scores, tie)}
    root.commit(
        iteration,
        metrics=ck.metrics,
        model=artifacts["model"],
        vecnormalize=artifacts.get("vecnormalize"),
        replay_buffer=artifacts.get("replay_buffer"),
        timesteps=ck.timesteps,
        extra=extra,
        idempotent=True,
    )


def _commit_placeholder(
    root: CheckpointRepository,
    iteration: int,
    cks: Mapping[str, Checkpoint],
    scores: Mapping[str, float | None],
    tie: Mapping[str, Any],
    fingerprint: str,
) -> None:
    first = next(iter(cks.values()))
    why = "; ".join(f"{name}: {ck.reason}" for name, ck in cks.items())
    root.commit(
        iteration,
        metrics=first.metrics,
        reason=f"no candidate kept a model ({why})",
        extra={**_fields(first, fingerprint), "candidate": _candidate_field(None, None, scores, tie)},
        idempotent=True,
    )


def _publish_forward(root: CheckpointRepository, ck: Checkpoint, members: Mapping[str, CheckpointRepository]) -> None:
    """The chosen candidate's forward result as the root's (a placeholder: a candidate's flat one)."""
    i = ck.iteration
    if root.has_forward(i):
        return
    name: str | None = None
    source = next(iter(members.values()))
    sha = model_sha256(ck)
    if sha is not None:  # found by the model's sha256 (kept after pruning), never by the editable candidate field
        found = [(n, m) for n, m in members.items() if m.has(i) and model_sha256(m.get(i)) == sha]
        if not found:
            raise CheckpointError(
                f"iteration {i} of {root.root} holds a model no candidate committed for window {i}; "
                "remove it (prune --remove-records) and run again"
            )
        entry = ck.record.get("candidate")
        recorded = entry.get("name") if isinstance(entry, dict) else None
        # Two candidates may have saved identical bytes: then the one the record names.
        name, source = next(((n, m) for n, m in found if n == recorded), found[0])
    if not source.has_forward(i):
        return  # no test part, or the candidate's evaluation is missing: the root's report says so
    result = source.forward(i)
    root.commit_forward(dataclasses.replace(result, candidate=name))
