"""``Syncs``: the ``fsync`` of a staged file run in a background thread while the committing thread goes on.

A commit syncs four times in a fixed order (the artifact's bytes, its folder after the rename, the record's
bytes, the folder after the record's link). The bytes' syncs need not block the thread: the artifact's runs
while the record is built and the lock taken, the record's while the artifact is renamed and its folder
synced. Each is waited for, its error raised, before the name it guards is given, so what becomes durable,
and in which order, is what the synchronous protocol gives.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _reset_after_fork() -> None:
    # A forked child has none of its parent's threads (and maybe a lock held by one of them).
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # Two workers: an artifact's and a record's sync may be in flight together.
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sb3-iter-ckpt-fsync")
        return _POOL


def fsync_close(fd: int) -> None:
    """``fsync`` then close ``fd``; closed even when the sync fails."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncs:
    """The background syncs of one storage, by the staged file's name."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, Future[None]]] = {}

    def start(self, key: str, fd: int) -> None:
        """``fsync_close(fd)`` in the background (``fd`` is owned from here); at interpreter exit, now."""
        try:
            self._pending[key] = os.getpid(), _pool().submit(fsync_close, fd)
        except RuntimeError:  # no new threads at interpreter shutdown
            fsync_close(fd)

    def wait(self, key: str) -> None:
        """Until ``key``'s sync is done; its error raised (nothing pending: nothing to wait for)."""
        pid, future = self._pending.pop(key, (0, None))
        if future is not None and pid == os.getpid():  # a forked child never waits for its parent's thread
            future.result()

    def forget(self, key: str) -> None:
        """Until ``key``'s sync is done (its descriptor closed), its error ignored: the file is being removed."""
        with contextlib.suppress(Exception):
            self.wait(key)
