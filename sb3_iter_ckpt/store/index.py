"""``RecordIndex``: the cached scan of a repository's ``checkpoints/`` folder.

It lists and parses the metrics records through a ``Storage`` (parsed records kept between calls,
a settled folder reused without a system call per record), and finds what a scan needs besides:
models that no record names, two records of one iteration. It knows nothing of signatures,
the best model or summaries: the repository decides what to make of a scan.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.errors import CheckpointError, CheckpointNotFound, IntegrityError
from sb3_iter_ckpt.store.storage import FileStat, Storage, iteration_of, strip_attempt

_CK = rec.CHECKPOINTS_DIR
RECORD_PREFIXES = ("metrics_iter_", "no_model_iter_")  # record names (see record.parse_record_name)
# A folder unchanged for this long is past any file system's timestamp granularity: a later change
# is bound to give it another change time, so a scan made then can be reused while it keeps it.
_SETTLED_NS = 2_000_000_000
#: (good records by iteration, errors by record file, duplicate record files by iteration).
Scan = tuple[dict[int, Checkpoint], dict[str, CheckpointError], dict[int, list[str]]]


def check_iteration(iteration: Any) -> int:
    """``iteration`` as a non-negative int (a numpy integer accepted); ``CheckpointError`` otherwise."""
    if isinstance(iteration, bool) or not isinstance(iteration, int):
        try:
            import numpy as np

            if isinstance(iteration, np.integer):
                iteration = int(iteration)
        except ImportError:  # pragma: no cover
            pass
    if isinstance(iteration, bool) or not isinstance(iteration, int):
        raise CheckpointError(f"iteration must be a non-negative integer, got {iteration!r}")
    if iteration < 0:
        raise CheckpointError(f"iteration must be non-negative, got {iteration}")
    return iteration


def not_found(iteration: int, where: object, committed: Sequence[int]) -> CheckpointNotFound:
    """What ``get`` raises for an absent ``iteration``, naming the ``committed`` ones (up to 10, else the range)."""
    its = list(committed)
    if not its:
        described = "none"
    else:
        described = ", ".join(map(str, its)) if len(its) <= 10 else f"{its[0]}..{its[-1]} ({len(its)} in all)"
    return CheckpointNotFound(f"no checkpoint for iteration {iteration} in {where} (committed: {described})")


class RecordIndex:
    """The records of one ``checkpoints/`` folder, parsed once and re-read when they change.

    :param storage: Where the folder lives.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._cache: dict[str, tuple[FileStat, Checkpoint | CheckpointError]] = {}
        self._prefetched: dict[str, bytes | Exception | None] = {}
        self._settled: tuple[tuple[int, ...], Scan] | None = None
        self._ck_local: Path | str | None = None

    def records_listing(self) -> dict[str, FileStat]:
        listing = self.storage.listdir(_CK, prefixes=RECORD_PREFIXES)
        return {n: st for n, st in listing.items() if rec.parse_record_name(n) is not None}

    def model_path(self, file: str) -> Path | str:
        """Where an artifact named by a record lives (a local path, or a URL), for display and loading."""
        if "/" not in file and file not in (".", "..") and "\x00" not in file and "\\" not in file:
            if self._ck_local is None:
                self._ck_local = self.storage.local_path(_CK) or f"{self.storage.url}/{_CK}"
            return self._ck_local / file if isinstance(self._ck_local, Path) else f"{self._ck_local}/{file}"
        name = f"{_CK}/{file}"
        return self.storage.local_path(name) or f"{self.storage.url}/{name}"

    def parse(self, name: str, st: FileStat) -> Checkpoint | CheckpointError:
        cached = self._cache.get(name)
        if cached is not None and cached[0] == st:
            return cached[1]
        try:
            data = self._prefetched.pop(name, None)
            if not isinstance(data, bytes):
                data = self.storage.read_bytes(f"{_CK}/{name}")
            result: Checkpoint | CheckpointError = rec.parse(name, data, model_path_for=self.model_path)
        except CheckpointError as exc:
            result = exc
        self._cache[name] = (st, result)
        return result

    def scan(self, recheck: bool = False) -> Scan:
        """Parse every record: (by iteration, errors by file, duplicates); treat the result as read-only.

        Every write of this package creates, replaces or removes a name in ``checkpoints/``, which
        changes the folder's version: while it keeps the version of a scan made once it had settled,
        that scan is reused without a system call per record. Otherwise each record is stat-checked
        and only new or changed ones are parsed. ``recheck`` (``verify()``) always stat-checks.
        """
        # The clock is read before the folder: a change after that stat is then more than 2 s past the
        # folder's change time, so even a file system with 1-second timestamps gives it another version.
        now = time.time_ns()
        version = self.storage.folder_version(_CK)
        settled = self._settled  # read once: another thread may reset it
        if not recheck and version is not None and settled is not None and settled[0] == version[0]:
            return settled[1]
        self._settled = None
        result = self.scan_records()
        if version is not None and now - version[1] > _SETTLED_NS:
            self._settled = (version[0], result)
        return result

    def scan_records(self) -> Scan:
        """Parse every record (cached by size/mtime/inode)."""
        if not self._cache:  # a cold open: list and read in one pass
            both = self.storage.read_listing(_CK, RECORD_PREFIXES, wanted=rec.parse_record_name)
            listing = {n: st for n, (st, _) in both.items()}
            self._prefetched = {n: data for n, (_, data) in both.items()}
        else:
            listing = self.records_listing()
            for stale in set(self._cache) - set(listing):
                del self._cache[stale]
            todo = [n for n, st in listing.items() if (hit := self._cache.get(n)) is None or hit[0] != st]
            if len(todo) > 1:  # many changed: read them in one go (one folder check instead of one per file)
                read = self.storage.read_many([f"{_CK}/{n}" for n in todo])
                self._prefetched = {n: read.get(f"{_CK}/{n}") for n in todo}
        good: dict[int, Checkpoint] = {}
        bad: dict[str, CheckpointError] = {}
        dups: dict[int, list[str]] = {}
        for name, st in listing.items():
            parsed = self.parse(name, st)
            if isinstance(parsed, CheckpointError):
                bad[name] = parsed
                continue
            prev = good.get(parsed.iteration)
            if prev is not None:
                dups.setdefault(parsed.iteration, [prev.record_file]).append(name)
                if prev.has_model:  # a model record wins over a placeholder of the same iteration
                    continue
            good[parsed.iteration] = parsed
        if any(not c.verified for c in good.values()):
            # The seed's script could leave a model_iter_{i}.zip without metrics: in such a folder list it
            # (unverified, no metrics) as the seed did. In a folder of ours a file without record is not ours.
            bad_its = {p[0] for n in bad if (p := rec.parse_record_name(n)) is not None}
            for i in self.orphan_models():
                if i not in good and i not in bad_its:
                    good[i] = self.orphan_checkpoint(i)
        return good, bad, dups

    def has(self, iteration: int) -> bool:
        """Whether ``iteration`` has a record (or, in a seed's folder, a model without one), readable or not."""
        names = [rec.record_name(iteration), rec.placeholder_name(iteration), rec.artifact_name("model", iteration)]
        found = self.storage.stat_many([f"{_CK}/{n}" for n in names])
        if f"{_CK}/{names[0]}" in found or f"{_CK}/{names[1]}" in found:
            return True
        if f"{_CK}/{names[2]}" not in found:
            return False
        return iteration in self.scan()[0]  # a legacy model zip without a metrics file

    def occupied(self, iterations: Sequence[int]) -> tuple[list[int], list[str]]:
        """(those of ``iterations`` that ``has``, the artifact names of all that exist when none has: files we did not
        commit): one ``stat`` a name."""
        records = {i: [f"{_CK}/{rec.record_name(i)}", f"{_CK}/{rec.placeholder_name(i)}"] for i in iterations}
        artifacts = {i: [f"{_CK}/{rec.artifact_name(kind, i)}" for kind in rec.ARTIFACT_NAMES] for i in iterations}
        found = self.storage.stat_many([n for i in iterations for n in records[i] + artifacts[i]])
        taken = [
            i
            for i in iterations
            if any(n in found for n in records[i])
            # a legacy model zip without a metrics file
            or (f"{_CK}/{rec.artifact_name('model', i)}" in found and i in self.scan()[0])
        ]
        stray = [] if taken else sorted(n.rpartition("/")[2] for i in iterations for n in artifacts[i] if n in found)
        return taken, stray

    def lookup(self, iteration: int) -> Checkpoint | None:
        """``iteration``'s checkpoint (a model record before a placeholder) or None; an unreadable record raises."""
        names = (rec.record_name(iteration), rec.placeholder_name(iteration))
        stats = self.storage.stat_many([f"{_CK}/{n}" for n in names])
        found: list[Checkpoint] = []
        for name in names:
            if (st := stats.get(f"{_CK}/{name}")) is not None:
                parsed = self.parse(name, st)
                if isinstance(parsed, CheckpointError):
                    raise parsed
                found.append(parsed)
        if not found and (orphan := self.scan()[0].get(iteration)) is not None:
            found.append(orphan)  # a legacy model zip without a metrics file
        return found[0] if found else None

    def files_of(self, iteration: int) -> list[str]:
        """Every file this repository recorded for ``iteration`` (its forward result, then the records)."""
        # The forward result first: removed alone it is evaluated again from the model still recorded.
        files: list[str] = [f"{_CK}/{rec.forward_name(iteration)}"]
        files += [f"{_CK}/{rec.record_name(iteration)}", f"{_CK}/{rec.placeholder_name(iteration)}"]
        for name in (rec.record_name(iteration), rec.placeholder_name(iteration)):
            try:
                parsed = rec.parse(name, self.storage.read_bytes(f"{_CK}/{name}"))
                files += [f"{_CK}/{a.file}" for a in parsed.artifacts.values()]
            except CheckpointError:
                pass
        return files

    def orphan_checkpoint(self, iteration: int) -> Checkpoint:
        """A ``model_iter_{i}.zip`` without metrics, listed as the seed's script did (unverified)."""
        return rec.orphan_model(iteration, self.model_path)

    def orphan_models(self) -> list[int]:
        """Iterations of ``model_iter_{i}.zip`` files that no record names."""
        names = self.storage.listdir(_CK)
        found = [p[1] for n in names if (p := rec.parse_artifact_name(n)) and p[0] == "model"]
        return sorted(i for i in found if rec.record_name(i) not in names and rec.placeholder_name(i) not in names)

    def next_iteration(self) -> int:
        """One past the highest record or artifact name in the folder (0 when empty)."""
        listing = self.storage.listdir(_CK)
        its = [p[0] for n in listing if (p := rec.parse_record_name(n)) is not None]
        # Plain names only: an attempt key no record names (object storage) is our own leftover, swept later.
        its += [a[1] for n in listing if (a := rec.parse_artifact_name(n)) is not None]
        return max(its) + 1 if its else 0


def record_files(raw: bytes) -> set[str] | None:
    """The artifact file names a record lists, or None when it cannot be read as a record of ours."""
    try:
        record = json.loads(raw)
        if "schema_version" not in record:
            return None  # the seed's format names no files, yet its model is committed: unsure
        arts = record.get("artifacts", {})
        if not isinstance(arts, dict):
            return None
        return {a["file"] for a in arts.values() if isinstance(a, dict) and isinstance(a.get("file"), str)}
    except (ValueError, AttributeError, TypeError, KeyError, RecursionError):
        return None


def referenced(storage: Storage, name: str) -> bool:
    """Whether ``name`` is committed: a record, or a file a record of its iteration in its folder names
    (True when unsure).

    The ``Storage.references`` a repository gives its storage: the sweep and ``discard`` ask it before
    removing a file, so that storage never reads the record format itself.
    """
    folder, _, base = name.rpartition("/")
    iteration = iteration_of(strip_attempt(base))
    if iteration is None or rec.parse_record_name(base) is not None or rec.parse_forward_name(base) is not None:
        return True  # a record, or a forward result: each is committed by itself
    prefix = f"{folder}/" if folder else ""
    for record in (rec.record_name(iteration), rec.placeholder_name(iteration)):
        try:
            raw = storage.read_bytes(prefix + record)
        except IntegrityError:
            continue  # no such record
        except Exception:  # noqa: BLE001 - unreadable for another reason: unsure
            return True
        files = record_files(raw)
        if files is None or base in files:
            return True
    return False


def attach(storage: Storage, *, sweep: bool, verbose: int, where: object) -> None:
    """Give ``storage`` its hooks (``references``: ``referenced``; ``record_of``: the record names) and, with
    ``sweep``, remove the leftovers of writers that died mid-commit (quietly where the folder is read-only)."""
    storage.references = referenced  # what the sweep may remove: storage never reads a record
    storage.record_of = rec.parse_record_name  # which names are records: storage never knows their names
    if not sweep:
        return
    try:
        removed = storage.sweep()
    except (OSError, CheckpointError):
        removed = []  # read-only folder: nothing of ours can be cleaned anyway
    if removed and verbose >= 1:
        print(f"sb3-iter-ckpt: removed {len(removed)} leftover(s) of an interrupted commit in {where}")
