"""Which ``best_model.zip`` / ``best_vecnormalize.pkl`` is ours, and the copies a refresh makes.

best_model.zip and best_vecnormalize.pkl are COPIES (reflinks where the file system has them), never
hard links: SB3's model.save and EvalCallback(best_model_save_path=root) write that name in place,
and must not reach a committed artifact. Those tools own the name too, so a file there is ours only
while it holds what training_summary.json's "best_files" says we wrote; anything else is the user's:
never replaced, never deleted (verify() reports only a summary still naming it as ours). A best-file
name that is a hard link to a file in checkpoints/ (what versions before the copies left) is replaced
by a copy at the next refresh, whatever the best is, and never recorded as ours while it is a link;
so is a symbolic link at a best-file name (its target may be a committed artifact).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.errors import CheckpointError, IntegrityError, UnsafePathError
from sb3_iter_ckpt.store.index import RecordIndex
from sb3_iter_ckpt.store.storage import FileStat, Storage

_CK = rec.CHECKPOINTS_DIR

#: The files derived from the best iteration, and the artifact kind each copies.
BEST_FILES = {rec.BEST_MODEL: "model", rec.BEST_VECNORMALIZE: "vecnormalize"}

#: What a refresh does to each best-file name: copy (artifact, sha256) there, or None: remove ours.
Todo = dict[str, tuple[str, str] | None]


@dataclass(frozen=True)
class BestFile:
    """A best-file name as found: ``owner`` is "absent", "ours" (what we last wrote) or "user";
    ``linked``: a hard link to a file in ``checkpoints/`` (ours to replace by a copy, whoever made it)."""

    owner: str
    sha256: str | None = None
    stat: FileStat | None = None
    linked: bool = False


def _identity(sha256: str, st: FileStat) -> dict[str, Any]:
    """How a later refresh recognizes our copy without reading it: any write changes one of these."""
    return {"sha256": sha256, "size": st.size, "mtime_ns": st.mtime_ns, "inode": st.inode, "etag": st.etag}


class BestFiles:
    """The best-file names of one repository: who owns each, and what a refresh copies there.

    :param storage: Where the files live.
    :param index: The repository's records (an earlier version's summary: a copy of any committed
        artifact counts as ours).
    """

    def __init__(self, storage: Storage, index: RecordIndex) -> None:
        self.storage = storage
        self.index = index
        self._seen: dict[str, tuple[FileStat, str]] = {}  # best-file name -> (stat, sha256) last hashed

    def _owned(self) -> tuple[dict[str, list[dict[str, Any]]], bool]:
        """What we last wrote under the best-file names (from ``training_summary.json``), and whether the
        summary predates that field (then a copy of any committed artifact of the same kind counts as ours)."""
        try:
            summary = json.loads(self.storage.read_bytes(rec.TRAINING_SUMMARY))
        except (CheckpointError, ValueError, RecursionError):
            return {}, False
        if not isinstance(summary, dict):
            return {}, False
        files = summary.get("best_files")
        if not isinstance(files, dict):
            return {}, "best" in summary  # an earlier version's summary: its best files were hard links
        out: dict[str, list[dict[str, Any]]] = {}
        for name in BEST_FILES:
            entries = files.get(name)
            if isinstance(entries, list):
                out[name] = [e for e in entries if isinstance(e, dict) and isinstance(e.get("sha256"), str)]
        return out, False

    def _state(self, name: str, owned: Sequence[Mapping[str, Any]], legacy: bool) -> BestFile:
        st = self.storage.stat_many([name]).get(name)
        if st is None:
            return BestFile("absent")
        if not st.regular:
            # A symbolic link: hashing follows it, a write through the name (model.save) would too.
            # Never ours as it is, whoever made it: replaced by a real copy at the next refresh.
            return BestFile("ours", None, st, linked=True)
        if st.links > 1 and st.inode and any(s.inode == st.inode for s in self.storage.listdir(_CK).values()):
            # A write through this name would reach the committed file: never ours as it is, whoever
            # made the link (an earlier version of this package did); its content is in checkpoints/.
            return BestFile("ours", None, st, linked=True)
        for e in owned:  # the file as we left it (same inode/ETag, size, mtime): no need to read it
            if e.get("size") == st.size and [e.get("mtime_ns"), e.get("inode"), e.get("etag")] == [
                st.mtime_ns,
                st.inode,
                st.etag,
            ]:
                return BestFile("ours", e["sha256"], st)
        seen = self._seen.get(name)
        if seen is not None and seen[0] == st:
            digest: str | None = seen[1]
        else:
            try:
                digest = self.storage.hash_file(name)[0]
            except (IntegrityError, UnsafePathError):
                return BestFile("user", None, st)  # unreadable, a symlink out of the root: not ours to touch
            self._seen[name] = (st, digest)
        ours = {e["sha256"] for e in owned}
        if legacy:
            kind = BEST_FILES[name]
            ours |= {a.sha256 for c in self.index.scan()[0].values() if (a := c.artifacts.get(kind)) and a.sha256}
        return BestFile("ours" if digest in ours else "user", digest, st)

    def found(self) -> dict[str, BestFile]:
        """Each best-file name as it is now."""
        owned, legacy = self._owned()
        return {name: self._state(name, owned.get(name, []), legacy) for name in BEST_FILES}

    def plan(self, best: Checkpoint | None, found: Mapping[str, BestFile]) -> Todo:
        """What to copy or remove so that our best files hold ``best``'s artifacts (the user's left as they are)."""
        todo: Todo = {}
        for name, kind in BEST_FILES.items():
            art = best.artifacts.get(kind) if best is not None else None
            if found[name].owner == "user":
                continue
            if art is None:
                if found[name].owner == "ours":
                    todo[name] = None
                continue
            src = f"{_CK}/{art.file}"
            digest = art.sha256 or self.storage.hash_file(src)[0]  # a legacy record has no hash
            if found[name].sha256 != digest:
                todo[name] = (src, digest)
        return todo

    def apply(self, todo: Todo, found: dict[str, BestFile]) -> None:
        """Copy or remove as planned, updating ``found`` to what is there now."""
        for name, t in todo.items():
            if t is None:
                self.storage.delete(name)
                found[name] = BestFile("absent")
            else:
                self.storage.copy_file(t[0], name)
                found[name] = BestFile("ours", t[1], self.storage.stat_many([name]).get(name))


def ownership(found: Mapping[str, BestFile], pending: Mapping[str, str] | None) -> dict[str, list[dict[str, Any]]]:
    """The summary's ``best_files``: what we wrote under each name (and, mid-refresh, what we are about to)."""
    best_files: dict[str, list[dict[str, Any]]] = {}
    for name, f in found.items():
        entries = []
        if f.owner == "ours" and f.sha256 is not None:
            st = f.stat
            entries.append({"sha256": f.sha256} if st is None else _identity(f.sha256, st))
        if pending and name in pending and pending[name] != f.sha256:
            entries.append({"sha256": pending[name]})
        best_files[name] = entries
    return best_files
