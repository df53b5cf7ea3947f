"""The forward result files of a repository: ``checkpoints/forward_iter_{i}.json``, one per iteration.

Each holds the :class:`~sb3_iter_ckpt.forward.ForwardResult` of iteration ``i``'s kept model trading its
window's test part, inside an envelope that ``verify`` checks: the sha256 of the result's canonical bytes,
the sha256 of the model that traded (the record's), and in a signed repository an HMAC by the repository's
key. The file sits next to the record and never changes it (the record stays create-only and signed). It
is published like a record: written under a temporary name, fsynced, then created only if absent (a
conditional create on object storage). Committing the same bytes again is a no-op; other bytes for an
iteration that has a forward result are a ``CheckpointExistsError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.signing import REPOSITORY_FIELD, Signer
from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFound,
    IntegrityError,
    RecordError,
)
from sb3_iter_ckpt.retention import is_pruned
from sb3_iter_ckpt.store.integrity import Problem
from sb3_iter_ckpt.store.storage import FileStat, Storage, sha256_bytes

if TYPE_CHECKING:
    from sb3_iter_ckpt.forward.result import ForwardResult
    from sb3_iter_ckpt.forward.stitching import StitchedForward

#: ``format`` of a forward result file's envelope; readers refuse any other.
FORMAT = "sb3-iter-ckpt/forward-file"
#: Layout version of the envelope; readers refuse newer ones.
VERSION = 1
_FIELDS = {"format", "version", "iteration", "model_sha256", "sha256", "forward"}
_CK = rec.CHECKPOINTS_DIR
_AGAIN = "delete it and run the walk-forward again: it evaluates the kept model once more (deterministic)"


def model_sha256(ck: Checkpoint) -> str | None:
    """The sha256 of the model ``ck`` records (also after pruning); None for a placeholder."""
    if ck.sha256 is not None:
        return ck.sha256
    pruned = ck.record.get("pruned")
    model = pruned.get("artifacts", {}).get("model") if isinstance(pruned, dict) else None
    sha = model.get("sha256") if isinstance(model, dict) else None
    return sha if isinstance(sha, str) else None


def envelope(result: ForwardResult, model: str | None, signer: Signer | None) -> bytes:
    """The bytes of ``result``'s file: the same bytes for the same result, model and key."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": result.iteration,
        "model_sha256": model,
        "sha256": sha256_bytes(result.to_json_bytes()),
        "forward": result.to_dict(),
    }
    if signer is not None:
        signer.stamp(body)
    return rec.dumps(body)


def read(name: str, data: bytes, iteration: int, signer: Signer | None) -> tuple[ForwardResult, dict[str, Any]]:
    """A forward file's result and envelope, checked: layout, the payload's sha256, the signature (with a key).

    :raises RecordError: not such a file. :raises IntegrityError: the payload does not match its sha256.
    :raises SignatureError: a key is configured and the signature is missing or wrong.
    """
    from sb3_iter_ckpt.forward.result import ForwardResult

    raw = rec.loads(data, name)
    if not isinstance(raw, dict) or not _FIELDS <= set(raw) <= _FIELDS | {"signature", REPOSITORY_FIELD}:
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise RecordError(f"{name}: expected the fields {sorted(_FIELDS)}, found {found}; {_AGAIN}")
    if raw["format"] != FORMAT or raw["version"] != VERSION or raw["iteration"] != iteration:
        raise RecordError(f"{name}: not a forward result file of iteration {iteration} in format {FORMAT} {VERSION}")
    payload = rec.dumps(raw["forward"])
    if sha256_bytes(payload) != raw["sha256"]:
        raise IntegrityError(f"{name}: the forward result does not match its recorded sha256 (edited?); {_AGAIN}")
    if signer is not None:
        signer.check(raw, iteration)
    result = ForwardResult.from_dict(raw["forward"], name)  # parsed strictly with the envelope: not again
    if result.iteration != iteration:
        raise RecordError(f"{name}: holds the result of iteration {result.iteration}; {_AGAIN}")
    return result, raw


_SETTLE_READS = 6  # about 1.5 s of reads in all


class ForwardFiles:
    """The forward result files of one repository's ``checkpoints/`` folder.

    :param storage: Where they live.
    :param signer: The repository's key (None: unsigned).
    :param where: The checkpoints folder, for messages.
    """

    def __init__(self, storage: Storage, signer: Signer | None, where: object) -> None:
        self.storage = storage
        self.signer = signer
        self.where = where
        self._cache: dict[str, tuple[FileStat, ForwardResult, Any]] = {}

    def listing(self) -> dict[int, FileStat]:
        """Iteration -> the stat of its forward file, for every forward file in the folder."""
        found = self.storage.listdir(_CK, prefixes=(rec.FORWARD_PREFIX,))
        return {i: st for name, st in found.items() if (i := rec.parse_forward_name(name)) is not None}

    def has(self, iteration: int) -> bool:
        return bool(self.storage.stat_many([f"{_CK}/{rec.forward_name(iteration)}"]))

    def read(self, iteration: int, st: FileStat | None = None, ck: Checkpoint | None = None) -> ForwardResult:
        """The checked result of ``iteration`` (cached while its file keeps its stat); with ``ck``, its
        record, the model that traded must be the one the record names (a file copied from another
        experiment, even one signed with the same key, is refused)."""
        name = f"{_CK}/{rec.forward_name(iteration)}"
        st = st if st is not None else self.storage.stat_many([name]).get(name)
        if st is None:
            raise CheckpointNotFound(
                f"iteration {iteration} has no forward result in {self.where} (a run without a test part, or its "
                "evaluation was interrupted: run the walk-forward again to complete it)"
            )
        hit = self._cache.get(name)
        if hit is None or hit[0] != st:
            result, raw = read(name, self.storage.read_bytes(name), iteration, self.signer)
            hit = (st, result, raw["model_sha256"])
            self._cache[name] = hit
        if ck is not None and hit[2] != model_sha256(ck):
            raise IntegrityError(
                f"{name}: traded another model than the one {ck.record_file} records (copied from another "
                f"experiment?); {_AGAIN}"
            )
        return hit[1]

    def commit(self, result: ForwardResult, ck: Checkpoint) -> ForwardResult:
        """Publish ``result`` for the committed ``ck`` create-only; the same bytes again is a no-op."""
        i = ck.iteration
        if result.iteration != i:
            raise CheckpointError(f"a forward result of iteration {result.iteration} cannot be committed for {i}")
        if result.placeholder == (model_sha256(ck) is not None):
            kind = "a placeholder's" if result.placeholder else "a model's"
            raise CheckpointError(
                f"iteration {i} {'has a model' if ck.has_model or is_pruned(ck) else 'is a placeholder'}: "
                f"{kind} forward result does not belong to it; evaluate the iteration's own model"
            )
        name = f"{_CK}/{rec.forward_name(i)}"
        data = envelope(result, model_sha256(ck), self.signer)
        try:
            if not self._same(name, data):
                self.storage.publish([], name, data, conflicts=[name])
        except CheckpointExistsError:
            if not self._same(name, data, settling=True):
                raise
        return result

    def _same(self, name: str, data: bytes, settling: bool = False) -> bool:
        """False when ``name`` is absent; True when it holds ``data``; else ``CheckpointExistsError``.

        ``settling``: another writer's create just won, so the key exists; an object store may still answer
        a read of it as missing for a moment (seen with s3fs and moto): read again a few times first.
        """
        attempts = _SETTLE_READS if settling else 1
        for attempt in range(attempts):
            try:
                existing = self.storage.read_bytes(name)
                break
            except IntegrityError:
                if not settling:
                    # Absent, or not readable now: the create-only publish decides. (A check of existence here
                    # raced a winner's create: read missing, then found, and the loser failed unsettled.)
                    return False
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        if existing != data:
            raise CheckpointExistsError(
                f"{name} in {self.where} already holds another forward result (forward results are create-only); "
                "to evaluate again, delete it or prune the iteration with remove_records"
            )
        return True

    def problems(self, good: Mapping[int, Checkpoint]) -> list[Problem]:
        """What ``verify`` finds in the forward files: unreadable, edited, unsigned, orphaned or of another model."""
        problems: list[Problem] = []
        for i in sorted(self.listing()):
            file = rec.forward_name(i)
            ck = good.get(i)
            if ck is None:
                problems.append(Problem(i, file, "a forward result without a record (record deleted?)"))
                continue
            try:
                raw = read(f"{_CK}/{file}", self.storage.read_bytes(f"{_CK}/{file}"), i, self.signer)[1]
            except CheckpointError as exc:
                problems.append(Problem(i, file, str(exc)))
                continue
            if raw["model_sha256"] != model_sha256(ck):
                problems.append(Problem(i, file, f"traded another model than the one {ck.record_file} records"))
        return problems


def report(
    results: Sequence[ForwardResult],
    cks: Mapping[int, Checkpoint],
    csv: bytes | None,
    candidates: Mapping[str, Sequence[ForwardResult]] | None = None,
    candidate_names: Sequence[str] = (),
    candidates_problem: str | None = None,
    trials: tuple[int | None, float | None] = (None, None),
    logits: bool = False,
) -> tuple[dict[str, Any] | None, str | None]:
    """The forward report of a repository (``forward.forward_report``) from its forward results and its
    ``forward_returns.csv`` (the stitched curve with the asset's returns, written at the end of a run), or
    None with the reason.

    :param results: the forward results of the committed iterations.
    :param cks: the committed iterations (their selection scores and validation returns).
    :param csv: the bytes of ``forward_returns.csv``, None when it is missing.
    :param candidates: candidate -> its forward results on those iterations (a run with candidates).
    :param candidate_names: the candidates the root's records name (the DSR's trials).
    :param candidates_problem: why ``candidates`` could not be read; then, as when they do not cover the
        chosen curve's periods, the report stands without the DSR and PBO (never a DSR of one trial).
    :param trials: ``(n_trials, trials_variance)`` named by the user (``forward_statistics``), or Nones.
    :param logits: keep every CSCV logit in the report's ``pbo`` (``forward.forward_statistics``).
    """
    from sb3_iter_ckpt.forward.statistics import forward_report

    if not results:
        return None, "no forward results: the run has no test part (walk-forward --test-size N)"
    if csv is None:
        return None, f"{rec.FORWARD_RETURNS} is missing: the run did not finish; run the walk-forward again"
    try:  # every number is recomputed from the signed forward files; the CSV only completes version-1 ones
        curve = stitched(results, csv)
        written = written_curve(results, csv)
    except CheckpointError as exc:
        return None, str(exc)
    if (written.rows, written.iterations) != (curve.rows, curve.iterations):
        return None, (
            f"{rec.FORWARD_RETURNS} covers other periods than the forward results (written before some were added "
            "or removed?); run the walk-forward again to write it"
        )
    ordered = sorted(results, key=lambda r: r.test_start)
    scores = {i: rec.as_score(ck.selection.get("score")) for i, ck in cks.items()}
    returns = {i: ck.score("validation.cagr") for i, ck in cks.items()}
    kwargs: dict[str, Any] = {"selection_scores": scores, "selection_returns": returns, "stitched": curve}
    kwargs.update(n_trials=trials[0], trials_variance=trials[1], logits=logits)
    try:
        if candidates_problem is None:
            try:
                return forward_report(ordered, None, candidate_results=candidates, **kwargs), None
            except CheckpointError as exc:
                if not candidates:
                    raise
                candidates_problem = str(exc)
        report = forward_report(ordered, None, **kwargs)
    except CheckpointError as exc:
        return None, str(exc)
    return _without_candidates(report, max(len(candidate_names), len(candidates or {}), 1), candidates_problem), None


def written_curve(results: Sequence[ForwardResult], csv: bytes) -> StitchedForward:
    """``forward_returns.csv`` read back as it is (``RecordError`` when it is no such file)."""
    from sb3_iter_ckpt.forward.stitching import StitchedForward

    ppy = min(results, key=lambda r: r.test_start).periods_per_year if results else 252
    return StitchedForward.from_csv_bytes(csv, ppy, rec.FORWARD_RETURNS)


def stitched(results: Sequence[ForwardResult], csv: bytes | None) -> StitchedForward:
    """The stitched curve every reader shows: recomputed from the (signed) forward results; the CSV's asset
    returns are used only for the periods of version-1 results, which did not record them."""
    from sb3_iter_ckpt.forward.stitching import restitch

    written = None
    if csv is not None and any(r.version == 1 for r in results):
        written = written_curve(results, csv)
    return restitch(results, written)


def csv_problem(results: Sequence[ForwardResult], csv: bytes) -> str | None:
    """Why ``forward_returns.csv`` disagrees with the forward results (None when it agrees): ``verify``."""
    try:
        written = written_curve(results, csv)
        truth = stitched(results, csv)
    except CheckpointError as exc:
        return str(exc)
    columns = ("rows", "dates", "iterations", "candidates", "placeholders", "positions", "returns", "asset_returns")
    for column in columns:
        a, b = getattr(written, column), getattr(truth, column)
        if a != b:
            k = next((k for k, (x, y) in enumerate(zip(a or (), b or (), strict=False)) if x != y), None)
            at = f"first at line {k + 2}" if k is not None else f"{len(a or ())} lines, {len(b or ())} expected"
            return f"its {column} column disagrees with the signed forward results ({at}): edited?"
    if not all(abs(x - y) <= 1e-12 * max(1.0, abs(y)) for x, y in zip(written.equity, truth.equity, strict=True)):
        return "its equity column disagrees with the compounded returns: edited?"
    return None


def _without_candidates(report: dict[str, Any], n_trials: int, problem: str) -> dict[str, Any]:
    """``report`` with its DSR and PBO marked unavailable: the candidates' data is missing or damaged."""
    why = (
        "it needs every candidate's forward results (candidates/<name>/checkpoints/), and they are missing "
        f"or damaged: {problem}"
    )
    return {
        **report,
        "deflated_sharpe": None,
        "deflated_sharpe_reason": why,
        "n_trials": n_trials,  # never a DSR of one trial when several were compared
        "trials_variance": None,
        "candidate_sharpes": {},
        "pbo": None,
        "pbo_reason": why,
    }
