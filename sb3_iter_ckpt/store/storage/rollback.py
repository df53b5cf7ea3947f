"""Cleaning up after a local writer that died mid-commit: its intent rolled back, its stale temporaries removed.

An intent (``.sb3ckpt-intent-iter-<i>.json``) names the artifacts a publish renamed into place before its
record; seen under the lock, it belongs to a dead writer. The publish of a record that is no iteration's
(the signing marker, ``.sb3ckpt-intent-signing.json``) renames no artifact: only its intent is removed.
Which files a committed record still names is the repository's knowledge (``Storage.references``): this
module never reads a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.store.storage.base import _INTENT_RE, _TMP_RE, FileStat, Storage, _pid_alive, iteration_of


def intent_name(record: str) -> str:
    """The intent of a publish of ``record``: one per iteration, next to the record (the one source of
    this name: ``verify`` looks for it to tell a commit in progress from a model without a record)."""
    path = PurePosixPath(record)
    iteration = iteration_of(path.name)
    key = f"iter-{iteration}" if iteration is not None else path.stem
    return str(path.parent / f".sb3ckpt-intent-{key}.json")


def write_intent(path: Path, record: str, artifacts: Sequence[str]) -> None:
    """A local writer's intent of publishing ``record`` with ``artifacts``, written at ``path`` (its ``intent_name``).

    In place and not fsynced: it only guides the cleanup after a killed writer (the page cache survives a
    kill; lost in a power cut, it leaves at worst unreferenced files). No temporary and rename: the
    artifacts get their names only after this returns, and a writer killed while writing it leaves an
    intent ``rollback_intent`` cannot read, which removes nothing but itself. A failure removes it. Whatever
    held the name before (a dead writer's intent, a symlink) is replaced, never written through.
    """
    data = json.dumps({"record": record, "artifacts": list(artifacts), "pid": os.getpid()}).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)  # may report a write error (NFS): the intent is removed then too
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def is_stale_temp(name: str, st: FileStat, now_ns: int, temp_grace: float) -> bool:
    """Whether ``name`` is our temporary whose writer is gone (same host) or older than ``temp_grace``."""
    m = _TMP_RE.search(name)
    if m is None:
        return False
    if m.group("host") == socket.gethostname():
        return not _pid_alive(int(m.group("pid")))
    return now_ns - st.mtime_ns > temp_grace * 1e9


def sweep(storage: Storage, folders: Sequence[str], temp_grace: float) -> list[str]:
    """Roll back dead writers' intents and remove stale temporaries in ``folders``; return what was removed."""
    now = time.time_ns()

    def leftovers(folder: str) -> dict[str, FileStat]:
        listing = storage.listdir(folder, prefixes=(".",))  # intents and temporaries are hidden names
        return {n: st for n, st in listing.items() if _INTENT_RE.match(n) or is_stale_temp(n, st, now, temp_grace)}

    # A look without the lock first: opening a clean folder (a finished run, a seed script's
    # folder, a read-only copy) creates no lock file and writes nothing.
    if not any(leftovers(folder) for folder in folders):
        return []
    removed: list[str] = []
    with storage.lock():
        for folder in folders:
            listing = leftovers(folder)
            prefix = f"{folder}/" if folder else ""
            for name in listing:
                if _INTENT_RE.match(name):
                    removed += rollback_intent(storage, prefix + name)
            for name in listing:
                if not _INTENT_RE.match(name):  # a stale temporary
                    with contextlib.suppress(OSError):  # one undeletable file must not stop the rest
                        if storage.delete(prefix + name):
                            removed.append(prefix + name)
    return removed


def rollback_intent(storage: Storage, intent: str) -> list[str]:
    """An intent seen under the lock belongs to a writer that died between rename and record.

    Its artifacts are removed only when no committed record names them, and only names of its
    iteration in the intent's own folder, for a record of that iteration there: a corrupt or forged
    intent can cost nothing but itself (never a committed file, never a file elsewhere). The intent of a
    record that is no iteration's (the signing marker) removes nothing but itself.
    """
    removed: list[str] = []
    intent_path = PurePosixPath(intent)
    folder = intent_path.parent
    m = _INTENT_RE.match(intent_path.name)
    iteration = int(m.group(1)) if m and m.group(1) is not None else None
    try:
        body = json.loads(storage.read_bytes(intent))
        record = PurePosixPath(body["record"])
        artifacts = [a for a in body["artifacts"] if isinstance(a, str)]
    except (CheckpointError, ValueError, KeyError, TypeError):
        record, artifacts = None, []
    own = record is not None and record.parent == folder and iteration_of(record.name) == iteration
    if iteration is not None and own:
        for name in artifacts:
            p = PurePosixPath(name)
            if p.parent != folder or iteration_of(p.name) != iteration or p == record:
                continue
            with contextlib.suppress(OSError, CheckpointError):
                if not storage.named_by_a_record(name) and storage.delete(name):
                    removed.append(name)
    if storage.delete(intent):
        removed.append(intent)
    return removed
