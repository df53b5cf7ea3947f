"""``Committer``: commits what the callback prepared at a boundary, now or in the background, under its error policy.

The callback (SB3 lifecycle) decides when an iteration ends and what it keeps (a
:class:`PreparedCommit`); the committer does the rest: the repository commit, a ``save_failed``
placeholder when that fails with ``on_error="warn"``, retention and summaries once the iteration is
durable and, with ``async_commit``, the hand-off to a :class:`~sb3_iter_ckpt.capture.background.BackgroundJobs`
thread whose results and errors surface in the training thread (``surface``, ``wait``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.capture.background import BackgroundJobs
from sb3_iter_ckpt.capture.snapshot import ModelSnapshot
from sb3_iter_ckpt.common.options import CommitOptions
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError

__all__ = ["Committer", "PreparedCommit", "WindowBest"]

#: Housekeeping of a committed iteration: "now" (run it here), None (done in the background), or its error.
Housekeeping = BaseException | str | None


@dataclass
class WindowBest:
    """The best evaluation of the current window so far, held in memory until its boundary."""

    score: float
    metrics: dict[str, Any]
    model: bytes | ModelSnapshot  # a ModelSnapshot is a repository Source: serialized only at commit
    vecnormalize: bytes | None
    timesteps: int
    evaluation: int


@dataclass
class PreparedCommit:
    """One iteration's commit, prepared at its boundary (what a background thread needs, nothing live)."""

    iteration: int
    best: WindowBest | None
    extra: dict[str, Any]
    replay: Callable[[Any], None] | None
    last_metrics: dict[str, Any]
    reason: str


class Committer:
    """Commits prepared iterations to a repository and applies the callback's error policy.

    :param repository: The ``CheckpointRepository``.
    :param options: ``on_error``, ``async_commit``, ``overwrite`` and ``retention``.
    :param selection: The rule retention and summaries rank by.
    :param next_free: Automatic numbering: a number taken meanwhile by another writer commits as the next free one.
    :param on_committed: Called in the training thread with each checkpoint once it is durable and housekept.
    """

    def __init__(
        self,
        repository: Any,
        options: CommitOptions,
        selection: SelectionRule,
        *,
        next_free: bool,
        on_committed: Callable[[Checkpoint], None],
    ) -> None:
        self.repository = repository
        self.options = options
        self.selection = selection
        self.next_free = next_free
        self._on_committed = on_committed
        self._jobs: BackgroundJobs | None = None
        #: Checkpoints committed, in order.
        self.committed: list[Checkpoint] = []
        #: Errors met (with ``on_error="warn"``).
        self.errors: list[BaseException] = []

    @property
    def pending(self) -> int:
        """Background commits queued or running."""
        return 0 if self._jobs is None else self._jobs.pending

    def commit(self, p: PreparedCommit) -> None:
        """Commit ``p`` now, or hand it to the background thread with ``async_commit``."""
        if self.options.async_commit:
            if self._jobs is None:
                self._jobs = BackgroundJobs(max_pending=1)
            # One write pending at most, so this boundary waits for the previous one anyway: wait before
            # surfacing, so its error surfaces here however slow the disk (not one iteration later).
            self._jobs.wait()
            self.surface()
            self._jobs.submit(lambda: self._background_commit(p), label=p)
            return
        ck: Checkpoint | None
        try:
            ck = self._write(p)
        except CheckpointExistsError:
            raise  # another writer owns this iteration: a conflict, not a fault to ride out
        except (CheckpointError, OSError) as exc:
            ck = self._commit_failed(p, exc)
        if ck is not None:
            self._done(ck, "now")

    def wait(self) -> None:
        """Wait for background commits and surface their results and errors."""
        if self._jobs is not None:
            self._jobs.wait()
        self.surface()

    def surface(self) -> None:
        """In the training thread: results and errors of finished background commits, in order."""
        if self._jobs is None:
            return
        fatal: BaseException | None = None
        for job in self._jobs.collect():
            p: PreparedCommit = job.label
            try:
                if job.error is None:
                    ck, after = job.result
                else:
                    exc = job.error
                    if isinstance(exc, CheckpointExistsError) or not isinstance(exc, (CheckpointError, OSError)):
                        raise exc
                    self._jobs.wait()  # the repository is used from this thread now
                    ck, after = self._commit_failed(p, exc), "now"
                    if ck is None:
                        continue
                self._done(ck, after)
            except BaseException as exc:  # keep handling the other jobs; the first error is raised
                fatal = fatal or exc
        if fatal is not None:
            raise fatal

    # -- commits ----------------------------------------------------------------------------------------------
    def _write(self, p: PreparedCommit) -> Checkpoint:
        common = dict(extra=p.extra, overwrite=self.options.overwrite, next_free=self.next_free)
        if p.best is None:
            # A placeholder keeps the last evaluation's metrics, so the analysis still sees them.
            return self.repository.commit(p.iteration, metrics=p.last_metrics, reason=p.reason, **common)
        best = p.best
        return self.repository.commit(
            p.iteration,
            metrics=best.metrics,
            model=best.model,
            vecnormalize=best.vecnormalize,
            replay_buffer=p.replay,
            timesteps=best.timesteps,
            **common,
        )

    def _commit_failed(self, p: PreparedCommit, exc: BaseException) -> Checkpoint | None:
        if self.options.on_error == "raise":
            raise exc
        self.errors.append(exc)
        warnings.warn(f"iteration {p.iteration} could not be committed, training goes on: {exc}", stacklevel=3)
        try:
            p.extra["error"] = str(exc)
            return self.repository.commit(
                p.iteration,
                metrics=p.best.metrics if p.best else p.last_metrics,
                reason="save_failed",
                extra=p.extra,
                overwrite=self.options.overwrite,
                next_free=self.next_free,
            )
        except (CheckpointError, OSError) as exc2:
            self.errors.append(exc2)
            warnings.warn(f"not even a placeholder for iteration {p.iteration} could be written: {exc2}", stacklevel=3)
            return None

    def _background_commit(self, p: PreparedCommit) -> tuple[Checkpoint, BaseException | None]:
        """In the background thread: file I/O only (commit, then retention and summaries)."""
        ck = self._write(p)
        try:
            self.housekeeping()
        except (CheckpointError, OSError) as exc:
            return ck, exc
        return ck, None

    def housekeeping(self) -> None:
        """Retention, then the summaries and the best model, ranked by the selection rule."""
        # Without retention=, a repository subclass's retention_policy() hook still applies. prune()
        # refreshes before deleting (the summaries never name a pruned iteration) and after; the refresh
        # here covers a prune that removed nothing and the callback's own monitor.
        rule, retention = self.selection, self.options.retention
        if retention is not None or self.repository.retention_policy() is not None:
            self.repository.prune(retention, monitor=rule.monitor, mode=rule.mode)
        self.repository.refresh(rule.monitor, rule.mode)

    def _done(self, ck: Checkpoint, housekeeping: Housekeeping) -> None:
        """Only once the iteration is durable: retention and summaries (``"now"``, or their background error)."""
        self.committed.append(ck)
        try:
            if isinstance(housekeeping, BaseException):
                raise housekeeping
            if housekeeping == "now":
                self.housekeeping()
        except (CheckpointError, OSError) as exc:
            if self.options.on_error == "raise":
                raise
            self.errors.append(exc)
            warnings.warn(f"after committing iteration {ck.iteration}: {exc}", stacklevel=3)
        self._on_committed(ck)
