"""``FolderLock``: a repository's commit lock across processes, ``flock(2)`` on its ``.lock`` file.

The protocol is the one of ``filelock``'s ``UnixFileLock`` (an exclusive ``flock`` on the file, opened
without following a symlink), so writers of versions that used ``filelock`` and writers of this one
exclude each other. It is written here rather than taken from ``filelock`` because a commit takes the
lock once and ``filelock`` 4.3's acquire and release cost about 110 µs of Python against 2 µs for the
same two system calls: a fifth of what a small model's commit may add to ``model.save`` + fsync
(``benchmarks/bench_commit.py``, ``docs/performance.md`` §3).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
import weakref
from types import TracebackType

__all__ = ["FolderLock", "LockTimeout"]

_POLL = 0.05  # seconds between tries while another process holds the lock
_HELD = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})  # flock's "another holder" (EACCES: some NFS)
_LIVE: weakref.WeakSet[FolderLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    # A forked child inherits the descriptors of its parent's locks: closed now, so that a child outliving a
    # killed parent does not keep the repository locked (closing a copy never releases the parent's lock).
    for lock in list(_LIVE):
        lock._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class LockTimeout(TimeoutError):
    """The lock was not acquired within the timeout."""


class FolderLock:
    """An exclusive lock of ``path`` shared by the processes using it, reentrant within one thread.

    Threads of one process wait for each other on a ``threading.RLock`` and the thread holding it takes the
    ``flock``. The lock file stays in place; one removed or replaced while a writer waited is not taken
    (the writer takes the file now named). A forked child holds nothing and closes its copy at once. EACCES
    counts as "held" as EAGAIN does; a file system without ``flock`` is an ``OSError`` that says so.

    :param path: The lock file (created when missing, never followed when it is a symlink).
    :param timeout: Seconds to wait for another holder before ``LockTimeout``; negative: wait forever.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._fd: int | None = None

    @property
    def is_locked(self) -> bool:
        """Whether this process holds the lock."""
        return self._pid == os.getpid() and self._fd is not None

    def _after_fork(self) -> None:
        """In a forked child: it holds nothing. Its copy of the descriptor shares the parent's lock, and
        unlocking it would release the parent's; closing the copy leaves the parent's lock alone."""
        fd = self._fd
        self._reset()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def acquire(self) -> None:
        """Take the lock (again, in the thread that holds it); ``LockTimeout`` after ``timeout`` seconds."""
        if self._pid != os.getpid():
            self._after_fork()  # a child forked where ``os.register_at_fork`` is missing
        deadline = None if self.timeout < 0 else time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=-1 if deadline is None else max(self.timeout, 0)):
            raise LockTimeout(f"{self.path} is held by another thread of this process")
        try:
            if self._depth == 0:
                self._fd = self._lock_file(deadline)
                self._owner = threading.get_ident()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def _lock_file(self, deadline: float | None) -> int:
        while True:
            # 0o666 less the umask, as filelock creates it: a group sharing the repository can all lock it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in _HELD:
                            raise OSError(exc.errno, f"cannot lock {self.path} (flock: {exc.strerror})") from exc
                        if deadline is not None and time.monotonic() >= deadline:
                            raise LockTimeout(f"{self.path} is held by another process") from None
                        time.sleep(_POLL)
                if self._still_named(fd):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            # The file was removed or replaced while we waited: the lock taken is of a file nobody else
            # opens any more, and another writer may hold the one now named. Take that one instead.
            os.close(fd)

    def _still_named(self, fd: int) -> bool:
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)

    def release(self) -> None:
        """Give the lock back (the outermost release in the holding thread unlocks the file)."""
        if self._pid != os.getpid() or self._depth == 0 or self._owner != threading.get_ident():
            raise RuntimeError(f"{self.path} is not locked by this thread")
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fd, self._fd, self._owner = self._fd, None, None
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            self._thread_lock.release()

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
