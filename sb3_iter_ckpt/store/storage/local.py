"""``LocalStorage``: the commit protocol on a POSIX file system (see ``sb3_iter_ckpt.store.storage``)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointExistsError,
    CommitError,
    IntegrityError,
    UnsafePathError,
)
from sb3_iter_ckpt.store.storage import rollback
from sb3_iter_ckpt.store.storage.base import (
    _CHUNK,
    LOCK_NAME,
    TMP_TAG,
    Capabilities,
    FileStat,
    Source,
    Staged,
    Storage,
    _HashingFile,
    _token,
    already_committed,
    check_name,
)
from sb3_iter_ckpt.store.storage.locking import FolderLock, LockTimeout
from sb3_iter_ckpt.store.storage.syncs import Syncs

_FICLONE = 0x40049409  # Linux's ioctl number, for Pythons whose fcntl does not name it

# File systems whose folder times change with every entry created, renamed or removed, and are not
# served from a cache of another host's state (NFS attribute caching, FUSE object-store mounts).
_LOCAL_FS_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "jfs", "reiserfs", "bcachefs", "overlay"}
)


def _has_local_folder_times(path: Path, mounts_file: str = "/proc/self/mounts") -> bool:
    """Whether ``path`` is on a file system listed above (Linux: ``/proc/self/mounts``; elsewhere: no)."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)  # "\040" is a space
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, kind
    return fstype in _LOCAL_FS_TYPES


class LocalStorage(Storage):
    """A repository on a local (POSIX) file system.

    :param root: The repository root folder (created on first write).
    :param lock_timeout: Seconds to wait for another process's commit before failing.
    :param temp_grace: Seconds after which another host's leftover temporary is swept.
    """

    capabilities = Capabilities(atomic_rename=True, create_only=True, hard_links=True)

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 120.0, temp_grace: float = 6 * 3600):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.lock_timeout = lock_timeout
        self.temp_grace = temp_grace
        self._lock: FolderLock | None = None
        self._local_times: bool | None = None
        self._names: dict[str, tuple[PurePosixPath, Path]] = {}
        self._syncs = Syncs()

    @property
    def url(self) -> str:
        return str(self.root)

    # -- paths -----------------------------------------------------------------------------------
    def _real_root(self) -> Path:
        return Path(os.path.realpath(self.root))

    def _path(self, name: str, *, for_write: bool = False) -> Path:
        rel, path = self._joined(name)
        # Writes and deletes go to the folder holding the name; that folder must be ours. Resolved only when
        # a folder between the root and the name is a symlink: without one it lies inside the root.
        if len(rel.parts) > 1 and _linked_folders(self.root, rel.parts[:-1]):
            real_root = self._real_root()
            parent = Path(os.path.realpath(path.parent))
            if parent != real_root and real_root not in parent.parents:
                raise UnsafePathError(f"{name!r} lies in a folder that points outside the repository root")
        if not for_write and path.is_symlink():
            target, real_root = Path(os.path.realpath(path)), self._real_root()
            if target != real_root and real_root not in target.parents:
                raise UnsafePathError(f"{name!r} is a symlink pointing outside the repository root; not followed")
        return path

    def _joined(self, name: str) -> tuple[PurePosixPath, Path]:
        """``check_name(name)`` and the path below the root it names, remembered: both depend on the name alone,
        and a commit names each of its files several times."""
        hit = self._names.get(name) if isinstance(name, str) else None
        if hit is None:
            rel = check_name(name)
            hit = rel, self.root.joinpath(*rel.parts)
            if len(self._names) >= 1024:
                self._names.clear()
            self._names[name] = hit
        return hit

    def local_path(self, name: str) -> Path | None:
        return self._joined(name)[1]

    def reopen_root(self) -> str | None:
        # A subclass may behave differently from what a reopen by path builds: it is sent as is.
        return str(self.root) if type(self) is LocalStorage else None

    def child(self, folder: str) -> LocalStorage:
        # Checked like any name: a nested repository stays inside this root.
        return LocalStorage(self._path(folder), lock_timeout=self.lock_timeout, temp_grace=self.temp_grace)

    def _fsync_dir(self, folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _mkdirs(self, folder: Path) -> None:
        # One level at a time: each created folder's entry must be made durable in its own parent.
        missing = []
        while not folder.is_dir() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            self._fsync_dir(path.parent)

    # -- reading ---------------------------------------------------------------------------------
    def read_bytes(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise _read_error(name, self.root, exc) from exc

    def exists(self, name: str) -> bool:
        return self._joined(name)[1].is_file()

    def listdir(self, folder: str, prefixes: tuple[str, ...] | None = None) -> dict[str, FileStat]:
        path = self.root if folder in ("", ".") else self._path(folder)
        out: dict[str, FileStat] = {}
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if prefixes is not None and not entry.name.startswith(prefixes):
                        continue  # no stat for files the caller does not want (artifacts next to records)
                    if (found := _entry_stat(entry)) is not None:
                        out[entry.name] = found
        except FileNotFoundError:
            pass
        except OSError as exc:  # not a folder, permission denied, I/O error
            raise CheckpointError(f"cannot list {path}: {exc.strerror or exc}") from exc
        return out

    def non_files(self, folder: str, prefixes: tuple[str, ...]) -> list[str]:
        path = self.root if folder in ("", ".") else self._path(folder)
        try:
            with os.scandir(path) as it:
                return sorted(
                    e.name
                    for e in it
                    if e.name.startswith(prefixes) and not (e.is_file(follow_symlinks=False) or e.is_symlink())
                )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointError(f"cannot list {path}: {exc.strerror or exc}") from exc

    def stat_many(self, names: Sequence[str]) -> dict[str, FileStat]:
        out: dict[str, FileStat] = {}
        checked: set[str] = set()
        for name in names:
            rel, path = self._joined(name)
            folder = str(rel.parent)
            if folder not in checked and folder != ".":
                self._path(folder)  # a folder pointing outside the root is refused, as by listdir
                checked.add(folder)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:  # a folder in the name that is a file, permission denied, I/O error
                raise CheckpointError(f"cannot stat {name} in {self.root}: {exc.strerror or exc}") from exc
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                out[name] = FileStat(
                    st.st_size, st.st_mtime_ns, st.st_ino, links=st.st_nlink, regular=stat.S_ISREG(st.st_mode)
                )
        return out

    def folder_version(self, folder: str) -> tuple[tuple[int, ...], int] | None:
        if self._local_times is None:
            self._local_times = _has_local_folder_times(self.root)
        if not self._local_times:
            return None
        path = self.root if folder in ("", ".") else self._path(folder)
        try:
            st = os.stat(path)
        except OSError:
            return None
        # ctime too: a tool that restores a folder's mtime (rsync -a, cp -p) cannot restore its ctime.
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size), st.st_ctime_ns

    def read_many(self, names: Sequence[str]) -> dict[str, bytes | Exception]:
        return _read_many(self, names)

    def read_listing(
        self, folder: str, prefixes: tuple[str, ...], wanted: Callable[[str], object] = bool
    ) -> dict[str, tuple[FileStat, bytes | Exception]]:
        return _read_listing(self, folder, prefixes, wanted)

    def hash_file(self, name: str) -> tuple[str, int]:
        path = self._path(name)
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise _read_error(name, self.root, exc) from exc
        return h.hexdigest(), size

    # -- writing ---------------------------------------------------------------------------------
    def _temp_for(self, name: str) -> str:
        rel = self._joined(name)[0]
        temp, parent = f".{rel.name}.{TMP_TAG}-{_token()}", str(rel.parent)
        return temp if parent == "." else f"{parent}/{temp}"

    def _write_temp(self, name: str, source: Source, durable: bool = True, later: bool = False) -> Staged:
        """``source`` under a temporary name for ``name``; ``durable``: fsynced (``later``: in the background,
        waited for with ``self._syncs.wait(temp)`` before the temporary gets a name that needs its bytes)."""
        temp = self._temp_for(name)
        path = self._path(temp, for_write=True)
        self._mkdirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with open(fd, "wb", closefd=False) as f:
                hw = _HashingFile(f)
                if isinstance(source, (bytes, bytearray, memoryview)):
                    hw.write(source)
                else:
                    source(io.BufferedWriter(hw, buffer_size=_CHUNK))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        if durable and later:
            self._syncs.start(temp, fd)
        else:
            try:
                if durable:
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            finally:
                os.close(fd)
        return Staged(final=name, temp=temp, sha256=hw.hash.hexdigest(), size=hw.size)

    def stage(self, name: str, source: Source) -> Staged:
        self._path(name, for_write=True)
        if callable(source):
            # BufferedWriter must be flushed before fsync: wrap the writer to flush it.
            user_writer = source

            def flushing(f: BinaryIO) -> None:
                user_writer(f)
                f.flush()

            return self._write_temp(name, flushing, later=True)
        return self._write_temp(name, source, later=True)

    def discard(self, staged: Sequence[Staged]) -> None:
        for s in staged:
            self._syncs.forget(s.temp)
            with contextlib.suppress(OSError, UnsafePathError):
                os.unlink(self._path(s.temp, for_write=True))

    def write_atomic(self, name: str, data: bytes) -> None:
        staged = self._write_temp(name, data)
        final = self._path(name, for_write=True)
        try:
            os.replace(self._path(staged.temp, for_write=True), final)
        except BaseException:
            self.discard([staged])
            raise
        self._fsync_dir(final.parent)

    def publish(
        self,
        staged: Sequence[Staged],
        record: str,
        record_bytes: bytes,
        *,
        conflicts: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        record_path = self._path(record, for_write=True)
        self._mkdirs(record_path.parent)
        # Written before the lock is taken, its bytes sync in the background while the lock is taken and the
        # artifacts get their names (a temporary: nothing another writer could see as committed).
        rec_staged = self._write_temp(record, record_bytes, later=True)
        discarded = False
        try:
            with self.lock():
                # Before the try: a refused publish leaves the staged files to the caller (which may retry
                # them under another iteration number, or discard them).
                for name in conflicts:
                    if self._joined(name)[1].exists():
                        raise already_committed(name, str(self.root))
                intent_path = self._publish_locked(staged, record, record_path, rec_staged, replace)
                self.discard([rec_staged])  # before the intent: a writer killed in between leaves only the intent
                discarded = True
                with contextlib.suppress(OSError):
                    os.unlink(intent_path)
        finally:
            if not discarded:
                self.discard([rec_staged])

    def _publish_locked(
        self, staged: Sequence[Staged], record: str, record_path: Path, rec_staged: Staged, replace: Sequence[str]
    ) -> Path:
        """Under the lock: the intent, the artifacts' names, the record's link, each synced; its intent's path.
        A failure undoes what was done."""
        folder, rel_folder = record_path.parent, self._joined(record)[0].parent

        def beside(name: str) -> Path:
            # A name in the record's folder, checked by the caller: joined without checking that folder again.
            rel, path = self._joined(name)
            return path if rel.parent == rel_folder else self._path(name, for_write=True)

        moved: list[Path] = []
        intent_path: Path | None = None
        linked = False
        try:
            for name in replace:
                self.delete(name)
            intent = self._path(rollback.intent_name(record), for_write=True)
            rollback.write_intent(intent, record, [s.final for s in staged])  # removed by itself if it fails
            intent_path = intent
            for s in staged:
                dst = beside(s.final)
                self._syncs.wait(s.temp)  # its bytes durable before its name
                os.replace(beside(s.temp), dst)
                moved.append(dst)
            if moved:
                self._fsync_dir(folder)
            self._syncs.wait(rec_staged.temp)
            try:
                os.link(beside(rec_staged.temp), record_path)
            except FileExistsError as exc:
                raise CheckpointExistsError(f"{record} was committed by another writer") from exc
            linked = True
            self._fsync_dir(folder)
            return intent
        except BaseException:
            self._undo_publish(record_path if linked else None, moved, staged, intent_path)
            raise

    def _undo_publish(
        self, record: Path | None, moved: Sequence[Path], staged: Sequence[Staged], intent: Path | None
    ) -> None:
        # Undo in the reverse order of publication: the record (the commit marker) first,
        # so that no record is ever left naming an artifact this rollback removes.
        if record is not None:
            with contextlib.suppress(OSError):
                os.unlink(record)
        for p in moved:
            with contextlib.suppress(OSError):
                os.unlink(p)
        self.discard([s for s in staged if self._path(s.final, for_write=True) not in moved])
        if intent is not None:
            with contextlib.suppress(OSError):
                os.unlink(intent)

    def restage(self, staged: Staged, name: str) -> Staged:
        """The same staged file, to be published under ``name`` (a rename at publish: nothing is copied)."""
        self._path(name, for_write=True)
        return Staged(final=name, temp=staged.temp, sha256=staged.sha256, size=staged.size)

    def delete(self, name: str) -> bool:
        path = self._path(name, for_write=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def copy_file(self, src: str, dst: str) -> None:
        """A reflink (``FICLONE``: btrfs, xfs, bcachefs...) where the file system has one, else a byte copy;
        written under a temporary name, fsynced, renamed over ``dst``: a writer still holding the old
        ``dst`` open writes into that old file, never into ``src`` or the new copy."""
        src_path = self._path(src)
        dst_path = self._path(dst, for_write=True)
        self._mkdirs(dst_path.parent)
        temp = self._path(self._temp_for(dst), for_write=True)
        try:
            with open(src_path, "rb") as fsrc, open(temp, "xb") as fdst:
                if not _reflink(fsrc.fileno(), fdst.fileno()):
                    shutil.copyfileobj(fsrc, _HashingFile(fdst), _CHUNK)  # the same write path as a commit
                    fdst.flush()
                os.fsync(fdst.fileno())
            os.replace(temp, dst_path)
        except FileNotFoundError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise _read_error(src, self.root, exc) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._fsync_dir(dst_path.parent)

    # -- locking and sweeping ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        if self._lock is None:
            self._lock = FolderLock(self.root / LOCK_NAME, timeout=self.lock_timeout)
        if not self._lock.is_locked:
            self._mkdirs(self.root)  # the lock file's folder (a root removed since is made again)
        try:
            self._lock.acquire()
        except LockTimeout as exc:
            raise CommitError(f"could not lock {self.root} within {self.lock_timeout} s") from exc
        try:
            yield
        finally:
            self._lock.release()

    def sweep(self, folders: Sequence[str] = ("", "checkpoints")) -> list[str]:
        """Roll back intents of dead writers and remove stale temporaries (see ``storage.rollback``)."""
        if not self.root.is_dir():
            return []
        return rollback.sweep(self, folders, self.temp_grace)


def _read_many(storage: LocalStorage, names: Sequence[str]) -> dict[str, bytes | Exception]:
    """Read many files of one folder: the folder is checked once, each file opened without following
    a symlink (relative to the folder's descriptor); a symlink or any failure goes through ``read_bytes``."""
    folders: dict[str, list[str]] = {}
    for name in names:
        parent, _, base = name.rpartition("/")
        folders.setdefault(parent, []).append(base)
    out: dict[str, bytes | Exception] = {}
    for parent, bases in folders.items():
        try:
            dir_fd = os.open(storage.root if parent == "" else storage._path(parent), os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, UnsafePathError):
            out.update(Storage.read_many(storage, [f"{parent}/{b}" if parent else b for b in bases]))
            continue
        try:
            for base in bases:
                name = f"{parent}/{base}" if parent else base
                try:
                    check_name(name)
                    fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                    with open(fd, "rb") as f:
                        out[name] = f.read()
                except (OSError, UnsafePathError):
                    out.update(Storage.read_many(storage, [name]))  # symlinks, odd files: the careful path
        finally:
            os.close(dir_fd)
    return out


def _read_listing(
    storage: LocalStorage, folder: str, prefixes: tuple[str, ...], wanted: Callable[[str], object]
) -> dict[str, tuple[FileStat, bytes | Exception]]:
    """One pass: each regular file opened relative to the folder's descriptor without following a link, its
    ``FileStat`` taken from the open file (what was read: no ``stat`` by name first); a symlink or any
    failure goes through ``listdir``'s stat and ``read_bytes`` (the careful path)."""
    prefix = "" if folder in ("", ".") else f"{folder}/"
    out: dict[str, tuple[FileStat, bytes | Exception]] = {}
    try:
        path = storage.root if not prefix else storage._path(folder)
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return out
    except (OSError, UnsafePathError):
        return Storage.read_listing(storage, folder, prefixes, wanted)
    try:
        with os.scandir(dir_fd) as it:
            for entry in it:
                if not entry.name.startswith(prefixes) or not wanted(entry.name):
                    continue
                read: tuple[FileStat, bytes | Exception] | None = (
                    _read_regular(entry.name, dir_fd) if entry.is_file(follow_symlinks=False) else None
                )
                if read is None and (found := _entry_stat(entry)) is not None:
                    # a symlink, or a file that could not be read here: as ``listdir`` and ``read_bytes`` do
                    name = prefix + entry.name
                    read = found, Storage.read_many(storage, [name])[name]
                if read is not None:
                    out[entry.name] = read
    except OSError as exc:  # as ``listdir``: permission denied, I/O error
        raise CheckpointError(f"cannot list {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)
    return out


def _linked_folders(root: Path, parts: Sequence[str]) -> bool:
    """Whether a folder of ``parts`` below the root may be a symlink (one ``lstat`` per folder; unsure: True).
    A missing one ends the walk: ``realpath`` keeps what does not exist as written."""
    folder = os.fspath(root)
    for part in parts:
        folder = f"{folder}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(folder).st_mode):
                return True
        except FileNotFoundError:
            return False
        except OSError:
            return True
    return False


def _reflink(src_fd: int, dst_fd: int) -> bool:
    """Share ``src``'s blocks with the empty ``dst`` (copy-on-write); False where the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(dst_fd, getattr(fcntl, "FICLONE", _FICLONE), src_fd)
    except OSError:  # EOPNOTSUPP (ext4, tmpfs), EXDEV, EINVAL...: the caller copies the bytes
        return False
    return True


def _entry_stat(entry: os.DirEntry[str]) -> FileStat | None:
    """What ``listdir`` reports of a folder entry: a file or a symlink (not followed); None for anything else."""
    try:
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            st = entry.stat(follow_symlinks=False)
            return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, links=st.st_nlink)
    except FileNotFoundError:
        pass  # removed while listing
    return None


def _read_regular(base: str, dir_fd: int) -> tuple[FileStat, bytes] | None:
    """``base`` in the folder of ``dir_fd``, when it is a regular file that can be read: its stat and bytes."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = os.read(fd, st.st_size + 1)
        if len(data) != st.st_size:  # grown since the stat, or a short read: read on to the end
            chunks = [data]
            while chunks[-1]:
                chunks.append(os.read(fd, _CHUNK))
            data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, links=st.st_nlink), data


def _read_error(name: str, root: Path, exc: OSError) -> IntegrityError:
    """A failed read as the package's own error: missing, a folder, unreadable."""
    if isinstance(exc, FileNotFoundError):
        return IntegrityError(f"{name} is missing from {root}")
    if isinstance(exc, IsADirectoryError):
        return IntegrityError(f"{name} is a folder, not a file")
    return IntegrityError(f"{name} cannot be read from {root}: {exc.strerror or exc}")
