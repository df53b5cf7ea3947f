"""The storage interface and what every backend shares.

Every byte of file I/O of a checkpoint repository goes through a ``Storage``.

``LocalStorage`` implements the commit protocol on a POSIX file system:

1. ``stage``: each artifact is streamed to a temporary name *next to* its final name
   (``.model_iter_3.zip.sb3ckpt-tmp-<host>-<pid>-<rand>``), hashed while written, flushed and fsynced.
2. ``publish`` (under a cross-process lock, held only for renames): refuse if the iteration is
   already committed, write an intent file naming the final artifacts, rename the artifacts into
   place, then publish the record with ``os.link`` (create-only: it fails if the name exists,
   where ``os.replace`` would overwrite silently), fsync the folder, drop the intent.
   The record is the commit marker: without it nothing of the iteration is listed.
3. ``sweep`` (at open, under the lock): roll back intents left by a dead writer and remove
   temporaries whose writer process is gone (same host) or that are older than a grace period.

Names are POSIX paths relative to the repository root; anything that would leave the root
(``..``, absolute paths, a symlink pointing outside) raises ``UnsafePathError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, UnsafePathError

#: A source of bytes for ``stage``: the bytes themselves, or a writer that fills a binary file object.
Source = bytes | Callable[[BinaryIO], None]

_CHUNK = 1 << 20
# Our temporaries and intents carry the package's tag: the sweep removes only those, never a user's
# hidden file that merely looks temporary (``.notes.tmp-host-1-deadbeef``). [0-9], not \d: no other digits.
TMP_TAG = "sb3ckpt-tmp"
_TMP_RE = re.compile(r"^\..+\.sb3ckpt-tmp-(?P<host>.+)-(?P<pid>[0-9]+)-(?P<rand>[0-9a-f]{8})\Z")
# An intent: of an iteration's record (group 1: the iteration), or of a record that is no iteration's
# (``.sb3ckpt-intent-signing.json``, the signing marker's create-only publish).
_INTENT_RE = re.compile(r"^\.sb3ckpt-intent-(?:iter-(0|[1-9][0-9]*)|[A-Za-z][A-Za-z0-9_]*)\.json\Z")
LOCK_NAME = ".lock"
# A name of one iteration's file (``model_iter_3.zip``, its record): intents, attempt keys and the
# sweep group files by iteration; which of them are records, and what a record names, is the repository's.
_ITERATION_FILE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_iter_(?P<iteration>0|[1-9][0-9]*)\.[A-Za-z0-9]+\Z")

#: ``references(storage, name)``: whether a committed record names the file ``name`` (True when unsure).
#: Given by the repository that opens the storage: storage never parses a record itself.
References = Callable[["Storage", str], bool]
#: ``record_of(file)``: ``(iteration, placeholder)`` when the file name is a record's, else None. A placeholder
#: record names no artifact, and a model record of the same iteration wins over it. Given by the repository
#: too: storage never knows the record names.
RecordOf = Callable[[str], "tuple[int, bool] | None"]


def iteration_of(file: str) -> int | None:
    """The iteration a file name of one iteration belongs to (``model_iter_3.zip`` -> 3), else None."""
    m = _ITERATION_FILE_RE.match(file)
    return int(m["iteration"]) if m else None


@dataclass(frozen=True)
class FileStat:
    """What a listing knows of a file without reading it."""

    size: int
    mtime_ns: int
    inode: int = 0
    #: An object store's ETag (content version), so that a record rewritten within one
    #: LastModified second with the same size is still seen as changed; "" where none.
    etag: str = ""
    #: Hard links to the file (1 where the backend has none); not part of a version's identity.
    links: int = field(default=1, compare=False)
    #: A regular file, not a symbolic link (always, where the backend has no links).
    regular: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class Staged:
    """An artifact written under a temporary name, waiting for ``publish``."""

    final: str
    temp: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees, for callers and the docs: the repository uses one protocol on every
    backend (staged artifacts, a create-only record), which needs none of these beyond ``create_only``."""

    atomic_rename: bool
    create_only: bool
    hard_links: bool
    #: Whether ``lock()`` excludes other processes. Where False (object stores) ``lock()`` is a
    #: no-op: create-only record writes are the only guarantee between writers.
    cross_process_lock: bool = True


class _HashingFile(io.RawIOBase):
    """A write-only file object that hashes and counts what passes through to ``raw``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        mv = memoryview(b).cast("B")
        self.raw.write(mv)
        self.hash.update(mv)
        self.size += len(mv)
        return len(mv)


def already_committed(name: str, where: str) -> CheckpointExistsError:
    """What ``publish`` raises when one of its ``conflicts`` exists."""
    return CheckpointExistsError(
        f"{name} already exists in {where}: the iteration is committed (pass overwrite=True to replace it)"
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _token() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Storage(ABC):
    """The interface a repository needs from where it keeps its files.

    Implementations: ``LocalStorage`` (POSIX file system) and ``FsspecStorage`` (object stores:
    the same verbs with attempt-unique artifact keys and a create-only record instead of renames).
    """

    capabilities: Capabilities
    #: Whether a committed record names a file (see ``References``); the opening repository sets it.
    #: Until then (None) the sweep and ``discard`` keep every file a record might name.
    references: References | None = None
    #: Which file names are records (see ``RecordOf``); the opening repository sets it. Until then (None)
    #: no name is known to be a record: the object store's sweep then keeps everything a record might name.
    record_of: RecordOf | None = None

    @property
    @abstractmethod
    def url(self) -> str:
        """Human-readable location of the root."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def listdir(self, folder: str, prefixes: tuple[str, ...] | None = None) -> dict[str, FileStat]:
        """Plain files directly inside ``folder`` (uncached), hidden temporaries included.

        :param prefixes: Only names starting with one of these (filtered before any stat).
        """

    def non_files(self, folder: str, prefixes: tuple[str, ...]) -> list[str]:
        """Names directly inside ``folder`` starting with one of ``prefixes`` that ``listdir`` leaves out:
        folders, devices, sockets... (what ``verify`` reports when it holds a record's name)."""
        return []

    def stat_many(self, names: Sequence[str]) -> dict[str, FileStat]:
        """``FileStat`` of those of ``names`` that exist, as ``listdir`` would report them.

        Default: one listing per folder (on an object store, one request per 1,000 keys, where each
        missing key could cost two). Local storage stats the names themselves, whatever the size of
        the folder.
        """
        folders: dict[str, list[str]] = {}
        for name in names:
            folder, _, base = name.rpartition("/")
            folders.setdefault(folder, []).append(base)
        out: dict[str, FileStat] = {}
        for folder, bases in folders.items():
            listing = self.listdir(folder or ".", prefixes=tuple(bases))
            out.update({f"{folder}/{b}" if folder else b: listing[b] for b in bases if b in listing})
        return out

    def folder_version(self, folder: str) -> tuple[tuple[int, ...], int] | None:
        """``(token, changed_ns)`` of ``folder``: the token changes whenever a name in it is created,
        removed or replaced; ``changed_ns`` is when it last did. ``None`` where the backend cannot
        tell (object stores), and the caller then checks every file.
        """
        return None

    def read_many(self, names: Sequence[str]) -> dict[str, bytes | Exception]:
        """``read_bytes`` of each name; a failure is returned in place of its bytes, not raised."""
        out: dict[str, bytes | Exception] = {}
        for name in names:
            try:
                out[name] = self.read_bytes(name)
            except Exception as exc:  # noqa: BLE001 - the caller re-reads the name to get its own error
                out[name] = exc
        return out

    def read_listing(
        self, folder: str, prefixes: tuple[str, ...], wanted: Callable[[str], object] = bool
    ) -> dict[str, tuple[FileStat, bytes | Exception]]:
        """``listdir(folder, prefixes)`` of the names ``wanted`` accepts, with each file's bytes (a failure in
        their place): a cold scan. No other file is read.

        Default: the listing, then ``read_many`` of what it found. Local storage does both in one pass.
        """
        listing = {n: st for n, st in self.listdir(folder, prefixes=prefixes).items() if wanted(n)}
        prefix = f"{folder}/" if folder not in ("", ".") else ""
        read = self.read_many([prefix + n for n in listing])
        return {n: (st, read[prefix + n]) for n, st in listing.items()}

    @abstractmethod
    def hash_file(self, name: str) -> tuple[str, int]:
        """``(sha256, size)`` of a stored file, streamed."""

    @abstractmethod
    def write_atomic(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` atomically and durably (summaries, indexes)."""

    @abstractmethod
    def stage(self, name: str, source: Source) -> Staged:
        """Write ``source`` durably under a temporary name for ``name``."""

    @abstractmethod
    def restage(self, staged: Staged, name: str) -> Staged:
        """``staged``, to be published under ``name`` instead (automatic numbering that lost a race)."""

    @abstractmethod
    def discard(self, staged: Sequence[Staged]) -> None:
        """Remove staged temporaries (after a failed or refused commit)."""

    @abstractmethod
    def publish(
        self,
        staged: Sequence[Staged],
        record: str,
        record_bytes: bytes,
        *,
        conflicts: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        """Make ``staged`` visible under their final names, then create ``record`` last.

        :param conflicts: Names whose existence means the iteration is already committed
            (``CheckpointExistsError``); checked under the lock, before anything is touched (the
            staged files are then left to the caller).
        :param replace: Names to delete first (an explicit overwrite).
        """

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Delete ``name`` if present (a symlink itself, never its target). True if removed."""

    @abstractmethod
    def copy_file(self, src: str, dst: str) -> None:
        """Replace ``dst`` atomically and durably with a copy of ``src`` that shares no inode with it.

        Never a hard link: a tool that writes ``dst`` in place (SB3's ``model.save``) must not reach ``src``.
        """

    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """A cross-process lock over the repository's commits and deletions."""

    @abstractmethod
    def sweep(self) -> list[str]:
        """Remove leftovers of dead writers; return what was removed."""

    def named_by_a_record(self, name: str) -> bool:
        """Whether a committed record names ``name``, as ``references`` tells (True when nobody told)."""
        return True if self.references is None else self.references(self, name)

    def local_path(self, name: str) -> Path | None:
        """A local path for ``name`` when the backend has one (for display), else None."""
        return None

    def reopen_root(self) -> str | None:
        """The root from which another process opens this same storage, or None: send it this object."""
        return None

    def child(self, folder: str) -> Storage:
        """The same kind of storage (same file system, options, credentials) rooted at ``folder`` below this
        root: a nested repository, e.g. a run's candidates."""
        raise CheckpointError(f"{type(self).__name__} cannot hold nested repositories ({folder!r})")


#: An attempt-unique artifact name on object storage: ``model_iter_3.<16 hex>.zip``.
ATTEMPT_RE = re.compile(
    r"^(?P<stem>[A-Za-z][A-Za-z0-9_]*_iter_(?P<iteration>0|[1-9][0-9]*))\.(?P<attempt>[0-9a-f]{16})\.(?P<ext>[A-Za-z0-9]+)\Z"
)


def strip_attempt(file: str) -> str:
    """``model_iter_3.0123456789abcdef.zip`` -> ``model_iter_3.zip``; any other name unchanged."""
    m = ATTEMPT_RE.fullmatch(file)
    return f"{m['stem']}.{m['ext']}" if m else file


def check_name(name: str) -> PurePosixPath:
    """Validate a repository-relative name: no absolute path, no ``..``, no NUL or backslash."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(f"invalid file name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or name.startswith("~"):
        raise UnsafePathError(f"file name {name!r} would escape the repository root")
    return p
