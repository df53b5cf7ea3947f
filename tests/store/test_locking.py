"""``FolderLock``: the commit lock's flock protocol, reentrancy, threads, fork and symlinks."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sb3_iter_ckpt.store.storage.locking import FolderLock, LockTimeout

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX flock")

_PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
    """
)


def _seen_by_another_process(path) -> str:
    """What another process's non-blocking flock of ``path`` finds: "held" or "free"."""
    return subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _in_thread(call) -> list[BaseException]:
    """Run ``call`` in another thread (a daemon: one that never returns must not hang the suite); what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "still running after 10 s"
    return errors


def test_the_lock_is_held_until_the_outermost_release_of_its_thread(tmp_path):
    lock = FolderLock(tmp_path / ".lock", timeout=1)
    assert _seen_by_another_process(tmp_path / ".lock") == "free"
    with lock:
        with lock:  # reentrant: a commit under prune's lock takes it again
            assert lock.is_locked
        assert lock.is_locked and _seen_by_another_process(tmp_path / ".lock") == "held"
    assert not lock.is_locked and _seen_by_another_process(tmp_path / ".lock") == "free"


def test_another_process_holding_it_times_out_then_releases(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"fd = os.open({str(tmp_path / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FolderLock(tmp_path / ".lock", timeout=0.2)
        t0 = time.monotonic()
        errors = _in_thread(lock.acquire)
        assert len(errors) == 1 and isinstance(errors[0], LockTimeout) and "another process" in str(errors[0])
        assert time.monotonic() - t0 >= 0.2 and not lock.is_locked
    finally:
        holder.communicate("go\n", timeout=30)
    with lock:  # released by the holder's exit: taken now
        assert _seen_by_another_process(tmp_path / ".lock") == "held"


def test_another_thread_waits_for_it(tmp_path):
    lock = FolderLock(tmp_path / ".lock", timeout=5)
    order: list[str] = []

    def other() -> None:
        with lock:
            order.append("other")

    with lock:
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.2)
        order.append("first")
        with pytest.raises(RuntimeError, match="not locked by this thread"):  # only the holding thread releases
            raise _in_thread(lock.release)[0]
        assert lock.is_locked and _seen_by_another_process(tmp_path / ".lock") == "held"
    t.join(10)
    assert order == ["first", "other"]


def test_another_thread_times_out(tmp_path):
    lock = FolderLock(tmp_path / ".lock", timeout=0.2)
    with lock:
        errors = _in_thread(lock.acquire)
    assert len(errors) == 1 and isinstance(errors[0], LockTimeout) and "another thread" in str(errors[0])


def test_a_forked_child_neither_holds_nor_releases_the_parents_lock(tmp_path):
    lock = FolderLock(tmp_path / ".lock", timeout=0.2)
    with lock:
        pid = os.fork()
        if pid == 0:  # the child: the lock is its parent's
            code = 0
            try:
                if lock.is_locked:
                    code = 1
                try:
                    lock.acquire()
                    code = 2  # it would have taken the lock its parent holds
                except LockTimeout:
                    pass
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.is_locked and _seen_by_another_process(tmp_path / ".lock") == "held"
    assert _seen_by_another_process(tmp_path / ".lock") == "free"


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("someone's file")
    (tmp_path / ".lock").symlink_to(target)
    with pytest.raises(OSError):
        FolderLock(tmp_path / ".lock", timeout=0.2).acquire()
    assert target.read_text() == "someone's file"


def test_the_lock_file_is_created_for_the_group_as_filelock_creates_it(tmp_path):
    old = os.umask(0o002)  # a repository shared by a group
    try:
        with FolderLock(tmp_path / ".lock", timeout=1):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / ".lock").stat().st_mode & 0o777 == 0o664


def test_eacces_means_held_and_a_missing_flock_says_so(tmp_path, monkeypatch):
    from sb3_iter_ckpt.store.storage import locking

    real = locking.fcntl.flock
    refusals = iter([errno.EACCES, errno.EACCES])  # what some NFS servers answer for "held elsewhere"

    def flock(fd, op):
        if op & fcntl.LOCK_EX and (err := next(refusals, None)) is not None:
            raise OSError(err, os.strerror(err))
        return real(fd, op)

    monkeypatch.setattr(locking.fcntl, "flock", flock)
    with FolderLock(tmp_path / ".lock", timeout=5) as lock:  # waited, then taken
        assert lock.is_locked

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(locking.fcntl, "flock", no_flock)
    with pytest.raises(OSError, match="cannot lock .*flock") as info:
        FolderLock(tmp_path / ".lock", timeout=5).acquire()
    assert not isinstance(info.value, LockTimeout)


def _hold(path):
    """Another process holding ``path``'s flock until it reads a line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_file_replaced_while_waiting_is_not_taken(tmp_path):
    """A waits holding the old file; the file is replaced and C holds the new one; when A's old holder lets go,
    taking the orphaned file would let two writers in at once."""
    path = tmp_path / ".lock"
    first = _hold(path)
    second = None
    try:
        lock = FolderLock(path, timeout=1.5)
        errors: list[BaseException] = []
        waiter = threading.Thread(target=lambda: errors.extend(_in_thread(lock.acquire)), daemon=True)
        waiter.start()
        time.sleep(0.3)  # the waiter has opened the old file and polls it
        path.unlink()
        second = _hold(path)  # a new .lock, held by another writer
        first.communicate("go\n", timeout=30)  # the old file's lock is free now
        waiter.join(15)
        assert len(errors) == 1 and isinstance(errors[0], LockTimeout), "took the lock of a file no longer named"
        assert not lock.is_locked
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.communicate("go\n", timeout=30)
    with lock:
        assert _seen_by_another_process(path) == "held"


def test_a_forked_child_closes_its_copy_of_the_lock_at_once(tmp_path):
    lock = FolderLock(tmp_path / ".lock", timeout=0.2)
    with lock:
        fd = lock._fd
        pid = os.fork()
        if pid == 0:  # a child that outlives a killed parent must not keep the repository locked
            code = 0
            try:
                os.fstat(fd)
                code = 3
            except OSError:
                pass
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child still had the lock's descriptor"
        assert lock.is_locked
