"""``Upkeep``: the files a repository derives from its records, and carrying out a retention plan.

After a commit or a prune: the best iteration's copy (``best_model.zip``, ``best_vecnormalize.pkl``),
``training_summary.json`` and ``checkpoint_summary.json`` (with the cross-iteration analysis). A prune
removes what a plan does not keep, in an order that leaves every moment consistent for a reader or a kill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError, SigningKeyError
from sb3_iter_ckpt.retention import RetentionPlan, RetentionPolicy, is_pruned, plan
from sb3_iter_ckpt.stats import analysis
from sb3_iter_ckpt.store import pruning, summaries
from sb3_iter_ckpt.store.bestfiles import BestFile, BestFiles
from sb3_iter_ckpt.store.catalog import Catalog
from sb3_iter_ckpt.store.commits import commit_error, write_file
from sb3_iter_ckpt.store.pruning import PruneResult
from sb3_iter_ckpt.store.storage import Storage


def disk_usage(storage: Storage) -> int:
    """Bytes of the files at the root and in ``checkpoints/`` (hard links counted once)."""
    seen: set[int] = set()
    total = 0
    for folder in ("", rec.CHECKPOINTS_DIR):
        for st in storage.listdir(folder).values():
            if st.inode and st.inode in seen:
                continue
            seen.add(st.inode)
            total += st.size
    return total


_TIMES = ("updated_at", "created_at")


def _timeless(summary: Any) -> Any:
    """A summary without what changes with the moment of its writing: its times (top level and ``metadata``)
    and the analysis's size on disk (which counts the summary itself and the report)."""
    if not isinstance(summary, dict):
        return summary
    out = {k: v for k, v in summary.items() if k not in _TIMES}
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k not in _TIMES}
    if isinstance(out.get("analysis"), dict):
        out["analysis"] = {k: v for k, v in out["analysis"].items() if k != "size_on_disk_bytes"}
    return out


class Upkeep:
    """The derived files and the pruning of one repository.

    :param catalog: Its trusted records.
    :param best_files: Its best-file names.
    :param where: The repository's root, for messages.
    """

    def __init__(self, catalog: Catalog, best_files: BestFiles, where: object) -> None:
        self.catalog = catalog
        self.storage = catalog.index.storage
        self.trust = catalog.trust
        self.best_files = best_files
        self.where = where

    def _authorize(self) -> None:
        self.trust.authorize_write(self.catalog.index)

    # -- the analysis and the summaries ------------------------------------------------------------
    def analyze(self, rule: SelectionRule, top_k: int = 5) -> dict[str, Any]:
        cks = self.catalog.checkpoints()
        report = analysis.analyze(cks, rule.monitor, rule.mode, top_k, size_on_disk=disk_usage(self.storage))
        report["forward"], report["forward_reason"] = self.catalog.forward_status()
        return report

    def training_summary(
        self, rule: SelectionRule, found: Mapping[str, BestFile] | None = None, pending: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """``pending``: a refresh about to replace the best files (then no ``best_model_file`` is named)."""
        found = self.best_files.found() if found is None else found
        return summaries.training_summary(self.catalog.checkpoints(), self.catalog.best(rule), rule, found, pending)

    def write_training_summary(self, rule: SelectionRule) -> dict[str, Any]:
        self._authorize()
        with self.storage.lock():  # every writer of a derived file holds the repository lock
            return self._write_training_summary(rule, self.best_files.found(), None, force=True)

    def _write_training_summary(
        self,
        rule: SelectionRule,
        found: Mapping[str, BestFile],
        pending: Mapping[str, str] | None,
        force: bool = False,
    ) -> dict[str, Any]:
        summary = self.training_summary(rule, found, pending)
        if force or self._differs(rec.TRAINING_SUMMARY, summary):
            write_file(self.storage, rec.TRAINING_SUMMARY, rec.dumps(summary), self.where)
        return summary

    def _differs(self, name: str, content: dict[str, Any]) -> bool:
        """Whether a summary file is missing, unreadable or says other than ``content`` (its times aside):
        a refresh writes only then, so a rerun with nothing to do leaves it as it is, and one after a crash
        or an edit brings it up to date."""
        try:
            old = rec.loads(self.storage.read_bytes(name), name)
        except CheckpointError:
            return True
        return bool(_timeless(old) != _timeless(json.loads(rec.dumps(content))))

    def _stale(self, rule: SelectionRule) -> bool:
        """Whether a refresh would write anything (the best copies, or either summary)."""
        found = self.best_files.found()
        if self.best_files.plan(self.catalog.best(rule), found):
            return True
        summary = summaries.checkpoint_summary(self.analyze(rule), None)
        return self._differs(rec.TRAINING_SUMMARY, self.training_summary(rule, found, None)) or self._differs(
            rec.CHECKPOINT_SUMMARY, summary
        )

    def write_forward_returns(self, data: bytes) -> None:
        """``forward_returns.csv``, a derived file: written under the lock like the summaries."""
        self._authorize()
        with self.storage.lock():
            write_file(self.storage, rec.FORWARD_RETURNS, data, self.where)

    def update_best(self, rule: SelectionRule) -> Checkpoint | None:
        self._authorize()
        with self.storage.lock():
            return self._update_best(rule)

    def _update_best(self, rule: SelectionRule) -> Checkpoint | None:
        best = self.catalog.best(rule)
        found = self.best_files.found()
        todo = self.best_files.plan(best, found)
        if todo:
            # Crash-safe order: the summary first stops naming best_model.zip and records both the old and
            # the new content as ours, so a kill at any point leaves files we still recognize.
            pending = {name: t[1] for name, t in todo.items() if t is not None}
            self._write_training_summary(rule, found, pending)
            self.best_files.apply(todo, found)
        self._write_training_summary(rule, found, None)
        return best

    def write_summary(self, rule: SelectionRule) -> dict[str, Any]:
        self._authorize()
        with self.storage.lock():
            return self._write_summary(rule, force=True)

    def _write_summary(self, rule: SelectionRule, force: bool = False) -> dict[str, Any]:
        try:
            old: bytes | None = self.storage.read_bytes(rec.CHECKPOINT_SUMMARY)
        except CheckpointError:
            old = None  # missing or unreadable: this write replaces it
        summary = summaries.checkpoint_summary(self.analyze(rule), summaries.created_at(old))
        if force or self._differs(rec.CHECKPOINT_SUMMARY, summary):
            write_file(self.storage, rec.CHECKPOINT_SUMMARY, rec.dumps(summary), self.where)
        return summary

    def refresh(self, monitor: str | None = None, mode: str | None = None) -> None:
        """The best copy with ``training_summary.json``, then ``checkpoint_summary.json``, under the lock;
        each written only when missing or different from what the records give."""
        try:
            self._authorize()
        except SigningKeyError:
            if not self._stale(self.catalog.rule(monitor, mode)):
                return  # nothing to write: a rerun with nothing to do needs no key
            raise
        try:
            with self.trust.authorized(), self.storage.lock():  # the writes below need no second check
                self._update_best(self.catalog.rule(monitor, mode))
                self._write_summary(self.catalog.rule(monitor, mode))
        except OSError as exc:
            raise commit_error(exc, f"the best model and summaries of {self.where}") from exc

    # -- retention ---------------------------------------------------------------------------------
    def plan_retention(self, policy: RetentionPolicy | None, rule: SelectionRule, chosen: bool) -> RetentionPlan:
        """``chosen``: ``rule`` is not (only) the recorded selection, whose best stays protected too."""
        cks = self.catalog.checkpoints()
        best = self.catalog.best(rule)
        result = plan(cks, policy, best_iteration=best.iteration if best else None)
        return pruning.protect(result, cks, self.catalog.best(self.catalog.rule()) if chosen else None)

    def prune(
        self, policy: RetentionPolicy | None, rule: SelectionRule, dry_run: bool, remove_records: bool
    ) -> PruneResult:
        """Carry out ``policy`` (None: nothing is removed), under the lock."""
        if policy is None:
            return PruneResult(plan=self.plan_retention(None, rule, True), removed=(), freed_bytes=0, dry_run=dry_run)
        if not dry_run:
            self._authorize()  # pruning rewrites records: never strip their signatures
        try:
            with self.storage.lock():
                the_plan = self.plan_retention(policy, rule, True)
                removed, freed = self._remove(the_plan, remove_records) if not dry_run else ([], 0)
        except OSError as exc:  # a read-only folder, disk full, I/O error
            raise commit_error(exc, f"the pruned records of {self.where}") from exc
        return PruneResult(plan=the_plan, removed=tuple(removed), freed_bytes=freed, dry_run=dry_run)

    def forget_pruned(self, iteration: int) -> list[str]:
        """Remove a pruned iteration's record and forward result, under the lock: the files removed."""
        self._authorize()
        with self.storage.lock():
            ck = self.catalog.get(iteration)
            if not is_pruned(ck):
                raise CheckpointError(f"iteration {iteration} is not a pruned one: its record stays")
            removed, _ = pruning.prune_iteration(self.storage, ck, True, self.trust.signer)
        self.refresh()
        return removed

    def _remove(self, the_plan: RetentionPlan, remove_records: bool) -> tuple[list[str], int]:
        """(files removed, bytes freed)."""
        removed: list[str] = []
        freed = 0
        if the_plan.remove:
            # Every moment consistent for a reader or a kill: the best copy and the summaries first
            # name only what stays (the best is protected), then the deletions, then the summaries
            # again with the new counts. The recorded selection: keep_best_k's monitor does not
            # redefine "the best".
            self.refresh()
            for i in the_plan.remove:
                ck = self.catalog.get(i)
                files, size = pruning.prune_iteration(self.storage, ck, remove_records, self.trust.signer)
                removed += files
                freed += size
            self.refresh()
        return removed, freed
