"""``BackgroundJobs``: run jobs (the callback's commits) in one background thread, never losing their errors.

The training thread prepares a job (everything copied that consistency demands) and submits it;
one worker thread runs the jobs in order. At most ``max_pending`` jobs are queued or running:
``submit`` blocks until there is room, which bounds the memory held by copies.

A job's result or exception is kept until the training thread ``collect``s it (the callback does
so at the next boundary and at training end), so an error in the background is never lost.

The worker is a non-daemon thread that exits once the queue is empty and is restarted by the next
``submit``: an interpreter exit waits for a running write instead of cutting it, and an idle
queue keeps no thread alive.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BackgroundJobs", "Job"]


@dataclass
class Job:
    """One submitted job: ``fn()`` and, once done, its ``result`` or ``error``."""

    fn: Callable[[], Any]
    label: Any = None
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0  #: wall time ``fn`` ran in the worker


class BackgroundJobs:
    """One background worker with a bounded queue.

    :param max_pending: Jobs queued or running at most; ``submit`` waits beyond that.
    :param name: Name of the worker thread.
    """

    def __init__(self, max_pending: int = 1, name: str = "sb3-iter-ckpt-writer") -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._finished: list[Job] = []
        self._thread: threading.Thread | None = None

    # -- training thread ---------------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any], label: Any = None) -> Job:
        """Queue ``fn`` (waits while ``max_pending`` jobs are queued or running)."""
        job = Job(fn, label)
        with self._cond:
            while len(self._queue) >= self.max_pending:
                self._cond.wait()
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=False)
                self._thread.start()
        return job

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._queue)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has finished; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def collect(self) -> list[Job]:
        """Finished jobs not collected yet, in submission order (results and errors)."""
        with self._cond:
            done, self._finished = self._finished, []
        return done

    # -- worker thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    return
                job = self._queue[0]
            start = time.perf_counter()
            try:
                job.result = job.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, never dropped
                job.error = exc
            job.seconds = time.perf_counter() - start
            job.done = True
            with self._cond:
                self._queue.popleft()
                self._finished.append(job)
                self._cond.notify_all()
