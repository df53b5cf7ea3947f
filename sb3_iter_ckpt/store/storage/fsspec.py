"""``FsspecStorage``: a repository on object storage (``s3://``, ``memory://``, any fsspec URL).

An object store has no atomic rename and no cross-process lock, so the commit protocol differs
from ``LocalStorage``'s:

1. ``stage``: each artifact is uploaded once, under a key unique to the attempt
   (``checkpoints/model_iter_3.<16 hex>.zip``); that key is its final name. Two attempts at one
   iteration never write the same artifact key.
2. ``publish``: the metrics record is created last, *create-only* (``If-None-Match: *`` on S3,
   through ``s3fs``'s ``pipe_file(..., mode="create")``), naming the artifact keys with their
   sha256 and sizes. The record is the only thing that makes an iteration visible. Of two attempts
   at one record exactly one creates it; the other gets ``CheckpointExistsError`` and its own
   artifacts are removed (``discard``). A create answered "exists" whose stored record holds our
   own bytes was our own request, retried by the client after a lost reply: it counts as a success.
3. ``sweep``: artifacts that no record names and that are older than ``temp_grace`` are removed
   (a writer killed between upload and record). Nothing a record names is ever removed by it; a
   ``publish`` refuses artifacts uploaded more than half the grace period ago, so that a sweep
   cannot remove the artifacts of a record still to come.

Every listing that answers "what is committed" invalidates fsspec's listing cache first, so a
commit by another process (or another filesystem object) is seen at once.

``lock()`` is a no-op here (``capabilities.cross_process_lock`` is False): commits between writers
rely on create-only records alone. Derived files (``best_model.zip``, the summaries) are rewritten
by whichever writer refreshes last; ``prune``, ``adopt`` and an ``overwrite=True`` commit assume one
writer at a time on such a repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, CommitError, IntegrityError
from sb3_iter_ckpt.store.storage.base import (
    _CHUNK,
    ATTEMPT_RE,
    Capabilities,
    FileStat,
    Source,
    Staged,
    Storage,
    _HashingFile,
    already_committed,
    check_name,
)

#: Protocols whose ``pipe_file(mode="create")`` is atomic: S3's conditional PUT; ``memory`` under a lock here.
_CREATE_ONLY = ("s3", "s3a", "memory")
_MEMORY_LOCK = threading.Lock()  # the memory filesystem lives in this process: a lock makes "create" atomic
MIN_S3FS = (2025, 7)


class RemoteRoot(str):
    """The URL of a remote repository root; ``/`` joins like ``pathlib`` (``repo.root / "x.json"``)."""

    def __truediv__(self, other: str | os.PathLike[str]) -> RemoteRoot:
        return RemoteRoot(f"{self.rstrip('/')}/{os.fspath(other)}")

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


class FsspecStorage(Storage):
    """A repository on any fsspec filesystem (``s3://bucket/prefix``, ``memory://name``...).

    :param url: The repository root as a URL.
    :param storage_options: Passed to the filesystem (for ``s3://``: ``key``, ``secret``,
        ``endpoint_url``, ``client_kwargs``...), as for ``fsspec.open``.
    :param fs: An already built filesystem to use instead (then ``storage_options`` is ignored).
    :param temp_grace: Seconds after which an artifact that no record names is swept.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        fs: Any = None,
        temp_grace: float = 6 * 3600,
    ) -> None:
        url = os.fspath(url).rstrip("/")
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec comes with torch
            raise CheckpointError(f"{url}: object storage needs fsspec: pip install 'sb3-iter-ckpt[s3]'") from exc
        if fs is None:
            try:
                fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
            except ImportError as exc:
                raise CheckpointError(f"{url}: {exc} (for s3:// run: pip install 'sb3-iter-ckpt[s3]')") from exc
            except ValueError as exc:
                raise CheckpointError(f"{url} is not a URL fsspec knows: {exc}") from exc
        else:
            path = fs._strip_protocol(url)
        self.fs = fs
        self.temp_grace = temp_grace
        self._url = url
        self._root = str(path).rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = protocol
        if protocol in ("s3", "s3a"):
            _check_s3fs()
        self.capabilities = Capabilities(
            atomic_rename=False, create_only=protocol in _CREATE_ONLY, hard_links=False, cross_process_lock=False
        )
        self._staged_at: dict[str, float] = {}

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"FsspecStorage({self._url!r})"

    def child(self, folder: str) -> FsspecStorage:
        check_name(folder)
        return FsspecStorage(f"{self._url}/{folder}", fs=self.fs, temp_grace=self.temp_grace)

    def _path(self, name: str) -> str:
        check_name(name)
        return f"{self._root}/{name}" if self._root else name

    def _fresh(self, path: str) -> None:
        """Forget what fsspec's listing cache knows of ``path`` (and its parents)."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)

    # -- reading ---------------------------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes:
        path = self._path(name)
        try:
            try:
                return bytes(self.fs.cat_file(path))
            except FileNotFoundError:
                # s3fs answers from its listing cache: another writer may have created the key since
                self.fs.invalidate_cache(path)
                return bytes(self.fs.cat_file(path))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise _read_error(name, self._url, exc) from exc

    def read_many(self, names: Sequence[str]) -> dict[str, bytes | Exception]:
        """One concurrent batch of GETs (async filesystems), failures in place of bytes."""
        if len(names) < 2:
            return super().read_many(names)
        try:
            paths = {self._path(n): n for n in names}
            got = self.fs.cat(list(paths), on_error="return")
        except Exception:  # noqa: BLE001 - the careful path: one name at a time
            return super().read_many(names)
        out: dict[str, bytes | Exception] = {}
        for path, name in paths.items():
            value = got.get(path, got.get(self.fs._strip_protocol(path)))
            out[name] = value if isinstance(value, (bytes, Exception)) else IntegrityError(f"{name} not read")
        return out

    def exists(self, name: str) -> bool:
        path = self._path(name)
        self._fresh(path)
        try:
            return bool(self.fs.isfile(path))
        except FileNotFoundError:
            return False

    def listdir(self, folder: str, prefixes: tuple[str, ...] | None = None) -> dict[str, FileStat]:
        path = self._root if folder in ("", ".") else self._path(folder)
        self._fresh(path)  # never the listing cache: another writer's commit is seen at once
        try:
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, FileStat] = {}
        for e in entries:
            if e.get("type") != "file":
                continue
            base = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            if prefixes is not None and not base.startswith(prefixes):
                continue
            etag = e.get("ETag") or e.get("etag") or e.get("md5Hash") or ""
            out[base] = FileStat(int(e.get("size") or 0), _mtime_ns(e), 0, str(etag))
        return out

    def non_files(self, folder: str, prefixes: tuple[str, ...]) -> list[str]:
        path = self._root if folder in ("", ".") else self._path(folder)
        self._fresh(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = (str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") != "file")
        return sorted(n for n in names if n.startswith(prefixes))

    def hash_file(self, name: str) -> tuple[str, int]:
        path = self._path(name)
        h = hashlib.sha256()
        size = 0
        try:
            with self.fs.open(path, "rb", block_size=16 * _CHUNK) as f:
                while chunk := f.read(16 * _CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise _read_error(name, self._url, exc) from exc
        return h.hexdigest(), size

    # -- writing ---------------------------------------------------------------------------------
    def write_atomic(self, name: str, data: bytes) -> None:
        """One PUT: readers see the old object or the new one, never a mix."""
        path = self._path(name)
        self.fs.pipe_file(path, bytes(data))
        self._fresh(path)

    @staticmethod
    def _attempt_key(name: str) -> str:
        """``checkpoints/model_iter_3.zip`` -> ``checkpoints/model_iter_3.<16 hex>.zip``."""
        rel = check_name(name)
        stem, dot, ext = rel.name.rpartition(".")
        if not dot or not stem:
            stem, ext = rel.name, "bin"
        unique = f"{stem}.{uuid.uuid4().hex[:16]}.{ext}"
        return unique if str(rel.parent) == "." else f"{rel.parent}/{unique}"

    def stage(self, name: str, source: Source) -> Staged:
        final = self._attempt_key(name)
        path = self._path(final)
        self._staged_at[final] = time.time()
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            try:
                self.fs.pipe_file(path, data)  # one PUT: all or nothing
            except BaseException:
                self._staged_at.pop(final, None)
                raise
            return Staged(final=final, temp=final, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        # A writer: spooled to a local temporary file (hashed on the way), then one upload. Streaming
        # straight into the store would leave a partial object behind when the writer raises.
        fd, local = tempfile.mkstemp(prefix="sb3-iter-ckpt-upload-")
        try:
            with open(fd, "wb") as f:
                hw = _HashingFile(f)
                buffered = io.BufferedWriter(hw, buffer_size=_CHUNK)
                source(buffered)
                buffered.flush()
            self.fs.put_file(local, path)
        except BaseException:
            self._staged_at.pop(final, None)
            with contextlib.suppress(Exception):
                self.fs.rm_file(path)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)
        return Staged(final=final, temp=final, sha256=hw.hash.hexdigest(), size=hw.size)

    def restage(self, staged: Staged, name: str) -> Staged:
        """A server-side copy under an attempt key of ``name``'s iteration (the key names its iteration:
        the sweep and ``discard`` rely on it); the old key is removed."""
        final = self._attempt_key(name)
        try:
            self.fs.cp_file(self._path(staged.temp), self._path(final))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise _read_error(staged.temp, self._url, exc) from exc
        self._staged_at[final] = self._staged_at.get(staged.temp, time.time())  # the grace counts from the upload
        self.discard([staged])
        return Staged(final=final, temp=final, sha256=staged.sha256, size=staged.size)

    def discard(self, staged: Sequence[Staged]) -> None:
        """Remove staged artifacts, except any that a record names (a commit whose outcome was unclear)."""
        for s in staged:
            self._staged_at.pop(s.temp, None)
            with contextlib.suppress(Exception):
                if not self._referenced(s.temp):
                    self.fs.rm_file(self._path(s.temp))

    def _referenced(self, name: str) -> bool:
        """Whether a record names the attempt key ``name`` (True when unsure: keep the file)."""
        return ATTEMPT_RE.match(name.rpartition("/")[2]) is None or self.named_by_a_record(name)

    def _create(self, path: str, data: bytes) -> None:
        """Create ``path`` only if it does not exist (``FileExistsError`` otherwise)."""
        if self.protocol == "memory":
            with _MEMORY_LOCK:
                if self.fs.exists(path):
                    raise FileExistsError(path)
                self.fs.pipe_file(path, data)
            return
        self.fs.pipe_file(path, data, mode="create")

    def publish(
        self,
        staged: Sequence[Staged],
        record: str,
        record_bytes: bytes,
        *,
        conflicts: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        for name in replace:  # an explicit overwrite: the repository names the old records first
            self.delete(name)
        for name in conflicts:
            if name != record and self.exists(name):  # the record itself: the create-only write decides
                raise already_committed(name, self._url)
        started = [self._staged_at[s.temp] for s in staged if s.temp in self._staged_at]
        if started and time.time() - min(started) > self.temp_grace / 2:
            raise CommitError(
                f"the artifacts of {record} were uploaded more than {self.temp_grace / 2:.0f} s ago; a sweep "
                "may remove unreferenced artifacts after that: commit again"
            )
        path = self._path(record)
        data = bytes(record_bytes)
        try:
            self._create(path, data)
        except FileExistsError as exc:
            self._fresh(path)
            try:
                existing = self.read_bytes(record)
            except CheckpointError:
                existing = None
            if existing != data:
                raise CheckpointExistsError(
                    f"{record} was committed by another writer in {self._url} (create-only record); "
                    "this attempt's artifacts are discarded"
                ) from exc
            # our own create, retried by the client after a lost reply: it did succeed
        self._fresh(path)
        for s in staged:
            self._staged_at.pop(s.temp, None)
        ours = self._record_of(record)
        if ours is not None and ours[1]:
            # A placeholder: without a lock a model record of its iteration may have been created meanwhile;
            # readers let a model record win, so this placeholder withdraws.
            for other in conflicts:
                if self._record_of(other) == (ours[0], False) and self.exists(other):
                    self.delete(record)
                    raise CheckpointExistsError(f"{other} was committed by another writer in {self._url}")

    def _record_of(self, name: str) -> tuple[int, bool] | None:
        """``(iteration, placeholder)`` of a record's name, as the repository's ``record_of`` tells."""
        return None if self.record_of is None else self.record_of(name.rpartition("/")[2])

    def delete(self, name: str) -> bool:
        path = self._path(name)
        self._fresh(path)
        try:
            if not self.fs.isfile(path):
                return False
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        self._fresh(path)
        return True

    def copy_file(self, src: str, dst: str) -> None:
        """A server-side copy (S3 ``CopyObject``, one atomic object write): no bytes travel through this process."""
        try:
            self.fs.cp_file(self._path(src), self._path(dst))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise _read_error(src, self._url, exc) from exc
        self._fresh(self._path(dst))

    def local_path(self, name: str) -> None:
        return None

    # -- locking and sweeping ----------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """No lock on object storage (``capabilities.cross_process_lock`` is False)."""
        return contextlib.nullcontext()

    def sweep(self, folder: str = "checkpoints") -> list[str]:
        """Remove artifacts that no record names and that are older than ``temp_grace``.

        Which names are records, and what they name, the repository tells (``record_of``, ``references``).
        Records are read only for iterations that need it: an iteration without any record loses
        its old artifacts unread; one with a model record and a single attempt's artifacts keeps
        them unread (that attempt is the record's); any other mix (a retried, lost or placeholder
        attempt) keeps every name its records list, as ``references`` reads them (an unreadable
        record keeps all). Told nothing, the sweep keeps everything a record might name.
        """
        listing = self.listdir(folder)
        now = time.time_ns()
        records: dict[int, set[bool]] = {}  # iteration -> whether each of its records is a placeholder
        attempts: dict[int, set[str]] = {}
        old: dict[int, list[str]] = {}
        for name, st in listing.items():
            if (kind := self._record_of(name)) is not None:
                records.setdefault(kind[0], set()).add(kind[1])
            elif (m := ATTEMPT_RE.match(name)) is not None:
                it = int(m["iteration"])
                attempts.setdefault(it, set()).add(m["attempt"])
                if now - st.mtime_ns > self.temp_grace * 1e9:
                    old.setdefault(it, []).append(name)
        prefix = f"{folder}/" if folder else ""
        removed: list[str] = []
        for it, names in sorted(old.items()):
            kinds = records.get(it, set())
            if kinds or self.record_of is None:  # told nothing of records: any iteration may have one
                if len(attempts[it]) == 1 and False in kinds:  # a model record: the one attempt is its own
                    continue
                names = [n for n in names if not self.named_by_a_record(prefix + n)]
            for n in names:
                with contextlib.suppress(Exception):  # one undeletable file must not stop the rest
                    if self.delete(prefix + n):
                        removed.append(prefix + n)
        return removed


def _mtime_ns(info: dict[str, Any]) -> int:
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, (int, float)):
            return int(float(value) * 1e9)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
    return 0


def _read_error(name: str, url: str, exc: Exception) -> IntegrityError:
    if isinstance(exc, FileNotFoundError):
        return IntegrityError(f"{name} is missing from {url}")
    if isinstance(exc, IsADirectoryError):
        return IntegrityError(f"{name} is a folder, not a file")
    return IntegrityError(f"{name} cannot be read from {url}: {exc}")


def _check_s3fs() -> None:
    try:
        import s3fs
    except ImportError as exc:
        raise CheckpointError("s3:// needs s3fs: pip install 'sb3-iter-ckpt[s3]'") from exc
    parts = re.findall(r"\d+", s3fs.__version__)[:2]
    if tuple(int(p) for p in parts) < MIN_S3FS:
        raise CheckpointError(
            f"s3fs {s3fs.__version__} cannot create an object only if it is absent (conditional PUT); "
            "sb3-iter-ckpt needs s3fs>=2025.7: pip install -U 'sb3-iter-ckpt[s3]'"
        )
