"""What ``verify`` finds: ``Problem``, ``VerifyReport``, and the checks that build them.

Each check takes what the scan found and reads through the ``Storage`` it is given; the repository
assembles them in ``verify_report()``. Records of this package are checked against their recorded
sha256 and size; records in the seed's format only by opening their model as an SB3 zip.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.signing import HOW_TO_GIVE_KEY, MARKER, Signer
from sb3_iter_ckpt.errors import CheckpointError, IntegrityError, SignatureError, UnsafePathError
from sb3_iter_ckpt.store.index import RECORD_PREFIXES, RecordIndex, Scan
from sb3_iter_ckpt.store.storage import Storage, intent_name

_CK = rec.CHECKPOINTS_DIR


@dataclass(frozen=True)
class Problem:
    """One thing ``verify()`` found wrong."""

    iteration: int | None
    file: str
    message: str

    def __str__(self) -> str:
        where = f"iteration {self.iteration}: " if self.iteration is not None else ""
        return f"{where}{self.file}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_report()`` checked, iteration by iteration, and the problems it found.

    An iteration with a problem is in none of the lists below.

    :param problems: Everything found wrong (what ``verify()`` returns).
    :param hashed: Iterations whose every recorded file matches its recorded sha256 and size.
    :param records_only: Placeholders and pruned iterations: the record is valid and names no file.
    :param opened_only: Iterations in the seed's format (no recorded sha256): the model opens as an SB3
        zip (members present, CRCs right), nothing more can be known; ``adopt()`` records their hashes.
    :param unchecked: Placeholders in the seed's format: nothing recorded that could be checked.
    """

    problems: tuple[Problem, ...]
    hashed: tuple[int, ...] = ()
    records_only: tuple[int, ...] = ()
    opened_only: tuple[int, ...] = ()
    unchecked: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def complete(self) -> bool:
        """No problem found and every iteration's files were checked against recorded hashes."""
        return self.ok and not self.opened_only and not self.unchecked

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "hashed": list(self.hashed),
            "records_only": list(self.records_only),
            "opened_only": list(self.opened_only),
            "unchecked": list(self.unchecked),
            "problems": [p.__dict__ for p in self.problems],
        }


#: Members every SB3 model zip has (``BaseAlgorithm.save``): the JSON ``data`` and the policy's weights.
_SB3_ZIP_MEMBERS = ("data", "policy.pth")


def _sb3_zip_problem(data: bytes) -> str | None:
    """Why ``data`` is not an SB3 model zip (reading the zip's CRCs and the JSON, unpickling nothing)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            missing = [m for m in _SB3_ZIP_MEMBERS if m not in zf.namelist()]
            if missing:
                return f"not an SB3 model zip (no {', '.join(missing)})"
            bad = zf.testzip()
            if bad is not None:
                return f"damaged zip: {bad} fails its CRC"
            if not isinstance(json.loads(zf.read("data")), dict):
                return "not an SB3 model zip ('data' is not a JSON object)"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, RecursionError, EOFError, OSError) as exc:
        return f"not a readable zip ({exc})"
    return None


def record_problems(storage: Storage, scan: Scan, index: RecordIndex) -> list[Problem]:
    """Unreadable records, record names that are not files, two records of one iteration, models without one."""
    good, bad, dups = scan
    problems = [
        Problem(parsed[0] if (parsed := rec.parse_record_name(n)) else None, n, str(e)) for n, e in sorted(bad.items())
    ]
    for name in storage.non_files(_CK, RECORD_PREFIXES):
        if (parsed := rec.parse_record_name(name)) is not None:
            problems.append(Problem(parsed[0], name, "is not a regular file (a folder?): the record is unreadable"))
    for i, names in sorted(dups.items()):
        problems.append(Problem(i, ", ".join(names), "the iteration has more than one record"))
    orphans = index.orphan_models()
    if not is_seed_folder(storage, good, orphans):
        # A folder of ours: every model we write has a record (pruning removes a record only after its
        # model). A model without one is a record deleted by hand, or a file that is not ours.
        bad_its = {p[0] for n in bad if (p := rec.parse_record_name(n)) is not None}
        listing = storage.listdir(_CK)
        for i in orphans:
            if i not in bad_its and intent_name(f"{_CK}/{rec.record_name(i)}").rpartition("/")[2] not in listing:
                problems.append(
                    Problem(
                        i,
                        rec.artifact_name("model", i),
                        "a model without a record (record deleted?; a seed script's model: adopt() records it)",
                    )
                )
    return problems


def is_seed_folder(storage: Storage, good: Mapping[int, Checkpoint], orphans: Sequence[int]) -> bool:
    """Whether a model without a record may be the seed script's (listed, opened) rather than a problem.

    Only in a folder with records, all in the seed's format, and no ``signing.json``: one record in the
    current schema, or the marker, makes the folder ours, and one planted seed-format record cannot
    switch off the detection of a deleted record. (Our summaries prove nothing: the migration functions
    of ``legacy.py`` write them into seed folders.)
    """
    records = [ck for i, ck in good.items() if i not in orphans]  # the index lists orphans of a seed folder
    if not records or any(ck.verified for ck in records):
        return False
    return not storage.exists(MARKER)


def iteration_problems(storage: Storage, ck: Checkpoint, signer: Signer | None) -> list[Problem]:
    """Each artifact of ``ck`` against its recorded sha256/size (or opened, for the seed's format); its signature."""
    i = ck.iteration
    problems: list[Problem] = []
    for kind, art in ck.artifacts.items():
        name = f"{_CK}/{art.file}"
        if not ck.verified:
            try:
                why = _sb3_zip_problem(storage.read_bytes(name))
            except (IntegrityError, UnsafePathError) as exc:
                why = str(exc)
            if why is not None:
                problems.append(Problem(i, art.file, f"{kind} (no recorded sha256): {why}"))
            continue
        try:
            digest, size = storage.hash_file(name)
        except (IntegrityError, UnsafePathError) as exc:
            problems.append(Problem(i, art.file, f"{kind}: {exc}"))
            continue
        if digest != art.sha256 or size != art.size:
            problems.append(Problem(i, art.file, f"{kind} does not match its recorded sha256/size"))
    if signer is not None:
        try:
            signer.check(ck.record, i)
        except SignatureError as exc:
            problems.append(Problem(i, ck.record_file, str(exc)))
    return problems


def signing_problems(
    marker: tuple[bool, str | None], signer: Signer | None, good: Mapping[int, Checkpoint]
) -> list[Problem]:
    """A signed repository without its marker, or checked without its key, is not "ok"."""
    present, fingerprint = marker
    carries = any("signature" in c.record for c in good.values())
    if signer is None:
        if present or carries:
            return [
                Problem(
                    None,
                    MARKER,
                    f"signed repository: signatures could not be checked without the key; {HOW_TO_GIVE_KEY}",
                )
            ]
        return []
    if present and fingerprint != signer.fingerprint:
        return [
            Problem(None, MARKER, "not a marker of this key (damaged, or the repository is signed with another key)")
        ]
    if present and signer.binding is not None and signer.binding.problem is not None:
        return [Problem(None, MARKER, f"{signer.binding.problem}: no record can be checked against it")]
    if not present and carries:
        return [
            Problem(
                None, MARKER, "missing although the records are signed (deleted?); a write with the key restores it"
            )
        ]
    return []


def _linked_best_files(storage: Storage, summary: Mapping[str, Any], iteration: Any) -> list[Problem]:
    """A best-file name the summary says we wrote that is now a symbolic link (a write through it could
    reach whatever it points to, a committed artifact included)."""
    files = summary.get("best_files")
    names = [n for n in (rec.BEST_MODEL, rec.BEST_VECNORMALIZE) if isinstance(files, dict) and files.get(n)]
    names = names or [str(summary["best"]["best_model_file"])]
    found = storage.stat_many(sorted(names))
    return [
        Problem(iteration, n, "is a symbolic link, not our copy (the next refresh replaces it with a copy)")
        for n, st in sorted(found.items())
        if not st.regular
    ]


def best_problems(storage: Storage, good: Mapping[int, Checkpoint]) -> list[Problem]:
    """``training_summary.json`` naming a best iteration without a model record, or naming a best model
    file that is missing or no longer holds the best's model."""
    try:
        summary = rec.loads(storage.read_bytes(rec.TRAINING_SUMMARY), rec.TRAINING_SUMMARY)
    except CheckpointError:
        return []
    best = summary.get("best") if isinstance(summary, dict) else None
    if not isinstance(best, dict) or not best.get("best_model_file"):
        return []
    it = best.get("iteration")
    ck = good.get(it) if isinstance(it, int) else None
    if ck is None or not ck.has_model:
        return [Problem(it, rec.TRAINING_SUMMARY, "names a best iteration that has no model record")]
    named = str(best["best_model_file"])
    linked = _linked_best_files(storage, summary, it)
    if linked:
        return linked
    try:
        digest = storage.hash_file(named)[0]
    except (IntegrityError, UnsafePathError) as exc:  # missing, unreadable, a symlink out of the root
        return [Problem(it, named, str(exc))]
    recorded = best.get("sha256")
    if digest != (recorded if isinstance(recorded, str) else ck.sha256):  # what the summary says it holds
        # The summary names it as our copy of the best, and a reader will load it: a stale claim, whoever
        # wrote the file (SB3's EvalCallback after our last refresh, model.save, tampering). The file is
        # the user's from now on: the next refresh (or `sb3-iter-ckpt summary`) stops naming it.
        model_file = f"{_CK}/{ck.artifacts['model'].file}"
        return [
            Problem(
                it,
                named,
                f"was replaced after {rec.TRAINING_SUMMARY} named it as the best model; the best is {model_file} "
                "(a refresh, or 'sb3-iter-ckpt summary', stops naming the other file)",
            )
        ]
    return []


def report(problems: list[Problem], good: Mapping[int, Checkpoint]) -> VerifyReport:
    """The report: iterations without a problem, by how they were checked."""
    failed = {p.iteration for p in problems}
    fine = [ck for i, ck in sorted(good.items()) if i not in failed]
    return VerifyReport(
        problems=tuple(problems),
        hashed=tuple(c.iteration for c in fine if c.verified and c.artifacts),
        records_only=tuple(c.iteration for c in fine if c.verified and not c.artifacts),
        opened_only=tuple(c.iteration for c in fine if not c.verified and c.artifacts),
        unchecked=tuple(c.iteration for c in fine if not c.verified and not c.artifacts),
    )
