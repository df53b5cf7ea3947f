"""What ties a run's root to its candidates' folders (``candidates/<name>/``).

The root's record of window ``i`` holds, in its signed ``candidate`` field, ``members``: for every
candidate, the sha256 of the model it kept on that window (None for a placeholder), the sha256 of its
forward result (None when it has none) and, in a signed repository, the candidate repository's identity.
Everything the root shows of the candidates (the DSR's trials, PBO, the candidates chart) and a rerun's
choice comes from those folders, so each read checks them against what the root recorded: a folder
replaced by another experiment's (even one signed with the same key), or a candidate's files copied over
another's, is refused by name instead of moving the statistics. Model hashes are kept through pruning and
forward files are create-only, so retention never makes a folder disagree. Records written before this
field existed carry no ``members`` and are not checked (their candidates keep reading as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sb3_iter_ckpt.common.candidates import CANDIDATES_DIR
from sb3_iter_ckpt.common.record import CHECKPOINTS_DIR, Checkpoint
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.store.forwardfiles import model_sha256
from sb3_iter_ckpt.store.integrity import Problem
from sb3_iter_ckpt.store.storage import sha256_bytes

__all__ = ["Member", "check_members", "member_entry", "member_problems", "members_of"]


class Member(Protocol):
    """What is read of a candidate's repository (a ``CheckpointRepository``)."""

    @property
    def repository_id(self) -> str | None: ...

    def has(self, iteration: int) -> bool: ...

    def get(self, iteration: int) -> Checkpoint: ...

    def has_forward(self, iteration: int) -> bool: ...

    def forward(self, iteration: int) -> Any: ...

    def forwards(self) -> list[Any]: ...

    def verify(self) -> list[Problem]: ...


def _forward_sha(member: Member, iteration: int) -> str | None:
    return sha256_bytes(member.forward(iteration).to_json_bytes()) if member.has_forward(iteration) else None


def member_entry(member: Member, iteration: int) -> dict[str, Any]:
    """What the root records of one candidate's window ``iteration`` (see the module)."""
    return {
        "model_sha256": model_sha256(member.get(iteration)),
        "forward_sha256": _forward_sha(member, iteration),
        "repository_id": member.repository_id,
    }


def members_of(ck: Checkpoint) -> dict[str, dict[str, Any]] | None:
    """The ``members`` a root record holds, or None (a record from before the field, or not a root's)."""
    entry = ck.record.get("candidate")
    members = entry.get("members") if isinstance(entry, dict) else None
    if not isinstance(members, dict):
        return None
    return {n: m for n, m in members.items() if isinstance(n, str) and isinstance(m, dict)}


def _mismatch(name: str, member: Member | None, iteration: int, recorded: Mapping[str, Any]) -> str | None:
    if member is None:
        return "missing"
    if recorded.get("repository_id") is not None and member.repository_id != recorded["repository_id"]:
        return "is another repository than the one this run trained (replaced?)"
    try:
        if not member.has(iteration):
            return f"has no record of window {iteration} (deleted, or the folder replaced?)"
        if model_sha256(member.get(iteration)) != recorded.get("model_sha256"):
            return f"holds another model for window {iteration} than the root recorded"
        if recorded.get("forward_sha256") is not None and _forward_sha(member, iteration) != recorded["forward_sha256"]:
            return f"holds another forward result for window {iteration} than the root recorded"
    except CheckpointError as exc:
        return f"cannot be read: {exc}"
    return None


def member_problems(roots: Mapping[int, Checkpoint], members: Mapping[str, Member | None]) -> list[Problem]:
    """Every candidate folder that does not match what the root's records hold of it (verify, and the
    check before any read of the candidates or a rerun's choice)."""
    problems: list[Problem] = []
    for i, ck in sorted(roots.items()):
        for name, recorded in sorted((members_of(ck) or {}).items()):
            why = _mismatch(name, members.get(name), i, recorded)
            if why is not None:
                folder = f"{CANDIDATES_DIR}/{name}/{CHECKPOINTS_DIR}"
                problems.append(Problem(i, folder, f"candidate {name!r} {why}; it is not this run's data"))
    return problems


def check_members(roots: Mapping[int, Checkpoint], members: Mapping[str, Member | None]) -> None:
    """Raise ``CheckpointError`` naming the first candidate folder that does not match the root."""
    problems = member_problems(roots, members)
    if problems:
        p = problems[0]
        raise CheckpointError(
            f"{p.file} (window {p.iteration}): {p.message}. Restore the folder, or start a new experiment"
        )
