"""``FolderLock``: a repository's commit lock across processes, ``flock(2)`` on its ``.lock`` file.

The protocol is the one of ``filelock``'s ``UnixFileLock`` (an exclusive ``flock`` on the file, opened
without following a symlink), so writers of versions that used ``filelock`` and writers of this one
exclude each other. It is written here rather than taken from ``filelock`` because a commit takes the
lock once and ``filelock`` 4.3's acquire and release cost about 110 µs of Python against 2 µs for the
same two system calls: a fifth of what a small model's commit may add to ``model.save`` + fsync
(``benchmarks/bench_commit.py``, ``docs/performance.md`` §3).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from types import TracebackType

__all__ = ["FolderLock", "LockTimeout"]

_POLL = 0.05  # seconds between tries while another process holds the lock


class LockTimeout(TimeoutError):
    """The lock was not acquired within the timeout."""


class FolderLock:
    """An exclusive lock of ``path`` shared by the processes using it, reentrant within one thread.

    Threads of one process wait for each other on a ``threading.RLock`` and the thread holding it takes the
    ``flock``; the lock file stays in place (removing it would let two processes lock two different files).

    :param path: The lock file (created when missing, never followed when it is a symlink).
    :param timeout: Seconds to wait for another holder before ``LockTimeout``; negative: wait forever.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._reset()

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

    def acquire(self) -> None:
        """Take the lock (again, in the thread that holds it); ``LockTimeout`` after ``timeout`` seconds."""
        if self._pid != os.getpid():
            # A forked child holds nothing: its copy of the descriptor shares the parent's lock, and
            # unlocking it would release the parent's. Closing the copy leaves the parent's lock alone.
            fd = self._fd
            self._reset()
            if fd is not None:
                os.close(fd)
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeout(f"{self.path} is held by another process") from None
                    time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise

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
