"""``CheckpointRepository``: the checkpoint store of one experiment, and its queries.

It never touches a file itself: every read, write, rename and delete goes through its ``Storage``.
"""

from __future__ import annotations

import builtins
import io
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from sb3_iter_ckpt import adoption, forwardfiles, integrity, loading, pruning, summaries
from sb3_iter_ckpt import record as rec
from sb3_iter_ckpt.bestfiles import BestFile, BestFiles
from sb3_iter_ckpt.candidates import CANDIDATES_DIR, Candidate, candidate_scores
from sb3_iter_ckpt.commits import Draft, Publisher
from sb3_iter_ckpt.commits import commit_error as _commit_error
from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointNotFound,
    RecordError,
    SignatureError,
)
from sb3_iter_ckpt.forwardfiles import ForwardFiles
from sb3_iter_ckpt.index import RecordIndex, Scan, check_iteration, not_found, referenced
from sb3_iter_ckpt.integrity import Problem, VerifyReport
from sb3_iter_ckpt.pruning import PruneResult
from sb3_iter_ckpt.record import Checkpoint
from sb3_iter_ckpt.selection import SelectionRule
from sb3_iter_ckpt.signing import SIGNING_KEY_ENV, Signer
from sb3_iter_ckpt.storage import (
    RemoteRoot,
    Source,
    Storage,
    display_root,
    storage_for,
)
from sb3_iter_ckpt.summaries import versions
from sb3_iter_ckpt.trust import Trust

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from sb3_iter_ckpt.forward import ForwardResult, StitchedForward
    from sb3_iter_ckpt.retention import RetentionPlan, RetentionPolicy

__all__ = [
    "LEGACY_MONITORS",
    "SIGNING_KEY_ENV",
    "CheckpointRepository",
    "Problem",
    "PruneResult",
    "Signer",
    "VerifyReport",
    "versions",
]

#: Metrics the seed's script recorded, tried in order when no selection rule is recorded.
LEGACY_MONITORS = ("mean_reward", "validation_performance", "combined_performance")

_CK = rec.CHECKPOINTS_DIR


_check_iteration = check_iteration  # its name here before index.py


class CheckpointRepository:
    """The checkpoints of one walk-forward experiment, in the seed's layout::

        root/
          checkpoints/model_iter_{i}.zip, metrics_iter_{i}.json, no_model_iter_{i}.json,
                      vecnormalize_iter_{i}.pkl, replay_buffer_iter_{i}.pkl,
                      forward_iter_{i}.json (runs with test parts: the kept model trading its test part)
          best_model.zip, best_vecnormalize.pkl
          training_summary.json, checkpoint_summary.json, forward_returns.csv

    The records are the truth and are read again when they change: a repository sees what other
    processes commit, replace or prune at its next call. Parsed records are kept between calls; on
    a local file system (ext4, xfs, btrfs, tmpfs... not NFS, SMB or FUSE mounts, whose folder times
    may be cached or frozen) a folder that has not changed for 2 seconds costs one ``stat`` per call.
    A record edited *in place* by another program (no file created, renamed or removed) is seen by
    ``verify()`` and by a new repository object.

    :param root: The experiment folder (``results/{experiment_id}``), a str or ``os.PathLike``; or a URL:
        ``s3://bucket/prefix`` (needs the ``s3`` extra), ``memory://name``, any fsspec URL (then
        ``self.root`` is a ``RemoteRoot``, a URL string that joins with ``/``).
    :param storage: Where the files live; default ``storage_for(root, storage_options)``:
        ``LocalStorage`` for a path or ``file://``, ``FsspecStorage`` for other URLs.
    :param storage_options: Options of a URL root's filesystem (``key``, ``secret``, ``endpoint_url``...);
        default: the JSON object in ``SB3_ITER_CKPT_STORAGE_OPTIONS``.
    :param signing_key: Key (bytes, str or a ``Signer``) for HMAC-signing records; default from the
        ``SB3_ITER_CKPT_SIGNING_KEY`` environment variable. With a key, only records whose signature
        verifies count (list, best, retention, summaries, ``best_model.zip``) and ``load`` refuses the
        others; the repository gets a ``signing.json`` marker, and from then on every write needs the key.
        A key that is not the marker's raises ``SigningKeyError`` here.
    :param sweep: Remove leftovers of writers that died mid-commit when opening (default True).
    :param verbose: Verbosity level: 0 no output, 1 info messages.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        storage: Storage | None = None,
        storage_options: dict[str, Any] | None = None,
        signing_key: bytes | str | Signer | None = None,
        sweep: bool = True,
        verbose: int = 0,
    ) -> None:
        if isinstance(root, CheckpointRepository):
            raise CheckpointError("pass the repository itself, not a repository as a root")
        if storage is not None and storage_options:
            raise CheckpointError("pass storage_options or a storage, not both")
        self.storage: Storage = storage if storage is not None else storage_for(root, storage_options)
        self.root = display_root(self.storage, root if storage is None else None)
        key = signing_key if signing_key is not None else os.environ.get(SIGNING_KEY_ENV) or None
        self._signer: Signer | None = key if isinstance(key, Signer) or key is None else Signer(key)
        self.verbose = verbose
        self._index = RecordIndex(self.storage)
        self._trust = Trust(self.storage, self._signer, self.root)
        self._best_files = BestFiles(self.storage, self._index)
        self._publisher = Publisher(self.storage, self._index, self._trust, self.checkpoints_dir)
        self._forwards = ForwardFiles(self.storage, self._signer, self.checkpoints_dir)
        self.storage.references = referenced  # what the sweep may remove: storage never reads a record
        if sweep:
            try:
                removed = self.storage.sweep()
            except (OSError, CheckpointError):
                removed = []  # read-only folder: nothing of ours can be cleaned anyway
            if removed and verbose >= 1:
                print(f"sb3-iter-ckpt: removed {len(removed)} leftover(s) of an interrupted commit in {self.root}")
        self._trust.check_key()

    def __repr__(self) -> str:
        return f"CheckpointRepository({str(self.root)!r})"

    @property
    def signing_key(self) -> bytes | None:
        """The signing key, to open this repository in another process (``executors.RepositoryRef``)."""
        return self._signer.key if self._signer is not None else None

    @property
    def _key(self) -> bytes | None:  # the name executors.RepositoryRef.of reads
        return self.signing_key

    @property
    def checkpoints_dir(self) -> Path | RemoteRoot:
        return self.root / _CK

    def exists(self) -> bool:
        """Whether the repository has a ``checkpoints/`` folder with at least one record."""
        return bool(self._index.records_listing())

    # -- reading -----------------------------------------------------------------------------------
    def _scan(self, recheck: bool = False) -> Scan:
        return self._index.scan(recheck)

    def list(self) -> builtins.list[Checkpoint]:
        """Every committed iteration, in iteration order, placeholders included.

        Records that cannot be read are left out with a warning; ``verify()`` lists them.
        """
        good, bad, _ = self._scan()
        if bad:
            warnings.warn(
                f"{len(bad)} unreadable record(s) in {self.checkpoints_dir} left out "
                f"(first: {next(iter(bad.values()))}); run verify()",
                stacklevel=2,
            )
        trusted = self._trust.trusted(good)
        if len(trusted) < len(good):
            first = min(set(good) - set(trusted))
            warnings.warn(
                f"{len(good) - len(trusted)} record(s) in {self.checkpoints_dir} without a valid signature "
                f"left out (first: iteration {first}); run verify()",
                stacklevel=2,
            )
        return [trusted[i] for i in sorted(trusted)]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._trust.trusted(self._scan()[0]))

    def __contains__(self, iteration: object) -> bool:
        return isinstance(iteration, int) and self.has(iteration)

    def iterations(self) -> builtins.list[int]:
        return sorted(self._trust.trusted(self._scan()[0]))

    def has(self, iteration: int) -> bool:
        """Whether ``iteration`` is committed (with a model or as a placeholder), readable or not."""
        return self._index.has(check_iteration(iteration))

    def get(self, iteration: int) -> Checkpoint:
        """The checkpoint of ``iteration``; ``CheckpointNotFound`` if absent, ``RecordError`` if unreadable."""
        iteration = check_iteration(iteration)
        ck = self._index.lookup(iteration)
        if ck is None:
            raise not_found(iteration, self.checkpoints_dir, self.iterations())
        return ck

    def latest(self) -> Checkpoint | None:
        """The highest committed iteration, or None."""
        good = self._trust.trusted(self._scan()[0])
        return good[max(good)] if good else None

    def next_iteration(self) -> int:
        """The next free iteration number: one past the highest committed (or unreadable) record.

        An artifact name without a record (``model_iter_{i}.zip``..., a legacy or a stranger's file) counts
        too: never overwrite it.
        """
        return self._index.next_iteration()

    def default_selection(self) -> tuple[str, str]:
        """(monitor, mode) recorded by the latest iteration's callback.

        Without a recorded rule (a seed folder): the first of ``mean_reward``,
        ``validation_performance``, ``combined_performance`` present in the records, maximized.
        """
        good = self._trust.trusted(self._scan()[0])  # a forged record must not choose the rule either
        for i in sorted(good, reverse=True):
            recorded = SelectionRule.from_record(good[i].selection)
            if recorded is not None:
                return recorded.monitor, recorded.mode
        for key in LEGACY_MONITORS:
            if any(ck.score(key) is not None for ck in good.values()):
                return key, "max"
        return "mean_reward", "max"

    def selection_rule(self, monitor: str | None = None, mode: str | None = None) -> SelectionRule:
        """The rule ``monitor`` and ``mode`` name, what they leave out as recorded (``default_selection``).

        :raises CheckpointError: for a mode other than ``"max"``/``"min"`` or an empty monitor.
        """
        d_monitor, d_mode = self.default_selection()
        return SelectionRule(monitor or d_monitor, cast("Literal['max', 'min']", mode or d_mode))

    def best(self, monitor: str | None = None, mode: str | None = None) -> Checkpoint | None:
        """The checkpoint with the best finite ``monitor`` value, placeholders and NaN ignored.

        :param monitor: Metric key (dotted for nested); default: the one the callback selected on.
        :param mode: ``"max"`` or ``"min"``; default as recorded.
        :return: The best checkpoint (the later one on ties), or None when none has a model and a score.
        """
        return self._best(self.selection_rule(monitor, mode))

    def _best(self, rule: SelectionRule) -> Checkpoint | None:
        best: Checkpoint | None = None
        best_score = 0.0
        for ck in self.list():
            score = ck.score(rule.monitor) if ck.has_model else None
            if score is None:
                continue
            # ">=": ties go to the later iteration (it has seen more data), as in retention.KeepBestK
            if best is None or rule.at_least(score, best_score):
                best, best_score = ck, score
        return best

    # -- loading ---------------------------------------------------------------------------------
    def _read_verified(self, ck: Checkpoint, kind: str, verify: bool) -> bytes:
        return loading.read_verified(self.storage, ck, kind, verify, self._signer)

    def read_artifact(self, iteration: int, kind: str = "model", verify: bool = True) -> bytes:
        """The bytes of one committed artifact (``model``, ``vecnormalize``, ``replay_buffer``), checked
        against the record's sha256 and size (and signature) first: what a copy to another repository reads."""
        return self._read_verified(self.get(iteration), kind, verify)

    def load(
        self,
        iteration: int,
        env: Any = None,
        device: str = "auto",
        verify: bool = True,
        algo: type[BaseAlgorithm] | str | None = None,
        **kwargs: Any,
    ) -> BaseAlgorithm:
        """Load iteration ``iteration``'s model as the right SB3 algorithm class.

        The file's sha256 is checked against the record before anything is unpickled.

        :param iteration: The iteration number.
        :param env: Optional env (gym.Env or VecEnv). When the checkpoint holds VecNormalize
            statistics, a VecEnv is wrapped in them (not training, reward not normalized).
        :param device: Torch device, as for ``BaseAlgorithm.load``.
        :param verify: Check sha256/size (and signature when a key is set) before loading.
        :param algo: Algorithm class or import path; only needed for legacy records without one.
        :param kwargs: Passed to ``BaseAlgorithm.load``.
        :return: The loaded model.
        """
        ck = self.get(iteration)
        if not ck.has_model:
            raise CheckpointNotFound(f"iteration {iteration} is a placeholder ({ck.reason}): it has no model")
        data = self._read_verified(ck, "model", verify)
        cls = loading.model_class(ck, data, algo)
        if env is not None and "vecnormalize" in ck.artifacts:
            env = self.load_vecnormalize(ck.iteration, loading.inner_venv(env), verify=verify)
        return loading.load_model(cls, data, iteration, env=env, device=device, **kwargs)

    def load_vecnormalize(self, iteration: int, venv: Any, verify: bool = True) -> Any:
        """The iteration's saved ``VecNormalize`` statistics around ``venv``, frozen for evaluation."""
        ck = self.get(iteration)
        return loading.vecnormalize(self._read_verified(ck, "vecnormalize", verify), iteration, venv)

    def load_replay_buffer(self, iteration: int, model: Any, verify: bool = True) -> None:
        """Load the iteration's saved replay buffer into ``model`` (off-policy algorithms)."""
        ck = self.get(iteration)
        data = self._read_verified(ck, "replay_buffer", verify)
        model.load_replay_buffer(io.BytesIO(data))

    def load_best(self, env: Any = None, device: str = "auto", verify: bool = True, **kwargs: Any) -> BaseAlgorithm:
        """Load the best checkpoint (see ``best``); ``CheckpointNotFound`` when there is none."""
        monitor = kwargs.pop("monitor", None)
        mode = kwargs.pop("mode", None)
        best = self.best(monitor, mode)
        if best is None:
            unsigned = len(self._scan()[0]) - len(self._trust.trusted(self._scan()[0]))
            if unsigned:
                raise SignatureError(
                    f"no signed checkpoint with a model and a finite score in {self.checkpoints_dir} "
                    f"({unsigned} record(s) fail the signature check; run verify())"
                )
            raise CheckpointNotFound(f"no checkpoint with a model and a finite score in {self.checkpoints_dir}")
        return self.load(best.iteration, env=env, device=device, verify=verify, **kwargs)

    # -- integrity ---------------------------------------------------------------------------------
    def verify(self) -> builtins.list[Problem]:
        """Check every record and artifact; return the problems found (empty when healthy).

        See ``verify_report()`` for what could and could not be checked.
        """
        return builtins.list(self.verify_report().problems)

    def verify_report(self) -> VerifyReport:
        """Check every record and artifact, and say what was checked how.

        Records of this package: each artifact is hashed and compared with its recorded sha256 and size.
        Records in the seed's format have no hashes: their model must open as an SB3 zip (nothing is
        unpickled). Also reported: a record name that is not a regular file, a ``model_iter_{i}.zip``
        without a record in a folder of this package, two records of one iteration, the best model file.
        """
        scan = self._scan(recheck=True)
        good = scan[0]
        problems = integrity.record_problems(self.storage, scan, self._index)
        for i in sorted(good):
            problems += integrity.iteration_problems(self.storage, good[i], self._signer)
        problems += self._forwards.problems(good)
        problems += integrity.signing_problems(self._trust.read_marker(), self._signer, good)
        problems += integrity.best_problems(self.storage, self._trust.trusted(good))
        return integrity.report(problems, good)

    # -- writing ---------------------------------------------------------------------------------
    def ensure_free(self, iterations: Sequence[int], overwrite: bool = False) -> None:
        """Raise ``CheckpointExistsError`` if any of ``iterations`` is committed (unless ``overwrite``).

        Also ``SigningKeyError`` when a commit would be refused (a signed repository without its key,
        or another key, also when its ``signing.json`` was deleted): the callback calls this before any
        training time is spent (with ``()`` under automatic numbering: the signing check only).
        """
        self._publisher.ensure_free(iterations, overwrite)

    def commit(
        self,
        iteration: int,
        *,
        metrics: Mapping[str, Any],
        model: Source | None = None,
        vecnormalize: Source | None = None,
        replay_buffer: Source | None = None,
        reason: str | None = None,
        timesteps: int | None = None,
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        idempotent: bool = False,
        next_free: bool = False,
    ) -> Checkpoint:
        """Durably commit one iteration: artifacts first, the metrics record last (the commit marker).

        Without ``model`` this writes a placeholder (``no_model_iter_{i}.json``) and ``reason`` is required.

        :param iteration: The iteration number.
        :param metrics: The chosen snapshot's metrics.
        :param model: The SB3 zip, as bytes or a ``writer(fileobj)`` (e.g. ``model.save``).
        :param vecnormalize: Pickled VecNormalize statistics (bytes or writer).
        :param replay_buffer: The replay buffer (bytes or writer, e.g. ``model.save_replay_buffer``).
        :param reason: Why there is no model (placeholders).
        :param timesteps: ``num_timesteps`` of the chosen snapshot.
        :param extra: More record fields (selection rule, algorithm, window bounds, lineage...).
        :param overwrite: Replace an already committed iteration instead of raising.
        :param idempotent: For retries: when the iteration is already committed (by an earlier attempt
            or another writer that won the race), return that record instead of raising.
        :param next_free: Automatic numbering: when ``iteration`` is taken (by a record, or by a file
            without one), or another writer takes it during this commit, commit under the next free
            number instead of raising. The returned checkpoint carries the number used.
        :return: The committed ``Checkpoint``.
        """
        iteration = check_iteration(iteration)
        if model is None and not reason:
            raise CheckpointError("a placeholder needs a reason")
        if model is None and (vecnormalize is not None or replay_buffer is not None):
            raise CheckpointError("a placeholder holds no artifacts")
        draft = Draft(iteration, metrics, reason, timesteps, dict(extra or {}), has_model=model is not None)
        sources = {"model": model, "vecnormalize": vecnormalize, "replay_buffer": replay_buffer}
        return self._publisher.commit(
            draft, sources, overwrite=overwrite, idempotent=idempotent, next_free=next_free, verbose=self.verbose
        )

    # -- forward (out-of-sample) results ------------------------------------------------------------
    def has_forward(self, iteration: int) -> bool:
        """Whether ``iteration`` has a forward result file (``checkpoints/forward_iter_{i}.json``)."""
        return self._forwards.has(check_iteration(iteration))

    def forward(self, iteration: int) -> ForwardResult:
        """The forward result of ``iteration``: its kept model trading its window's test part.

        Checked against its recorded sha256 (and signature, with a key) before it is returned.

        :raises CheckpointNotFound: the iteration has none (no test part, or its evaluation is pending).
        """
        return self._forwards.read(check_iteration(iteration))

    def forwards(self) -> builtins.list[ForwardResult]:
        """The forward results of every committed iteration that has one, in iteration order."""
        trusted = set(self.iterations())
        return [self._forwards.read(i, st) for i, st in sorted(self._forwards.listing().items()) if i in trusted]

    def commit_forward(self, result: ForwardResult) -> ForwardResult:
        """Store ``result`` durably as its committed iteration's ``forward_iter_{i}.json``, create-only.

        The selection record is not rewritten. Committing the same bytes again is a no-op (a resumed run).

        :raises CheckpointNotFound: the iteration is not committed.
        :raises CheckpointExistsError: the iteration already has a different forward result.
        """
        ck = self.get(result.iteration)
        self._trust.authorize_write(self._index)
        try:
            return self._forwards.commit(result, ck)
        except OSError as exc:
            raise _commit_error(exc, f"the forward result of iteration {ck.iteration} to {self.root}") from exc

    def write_forward_returns(self, curve: StitchedForward | bytes) -> None:
        """Write the stitched forward curve (or its ``to_csv_bytes()``) as ``forward_returns.csv``, atomically."""
        self._trust.authorize_write(self._index)
        data = curve if isinstance(curve, bytes) else curve.to_csv_bytes()
        try:
            self.storage.write_atomic(rec.FORWARD_RETURNS, data)
        except OSError as exc:
            raise _commit_error(exc, f"{rec.FORWARD_RETURNS} in {self.root}") from exc

    def forward_report(self) -> dict[str, Any] | None:
        """What ``sb3-iter-ckpt forward --json`` prints (see ``forward.forward_report``), or None when the
        repository has no complete forward data (``forward_status`` says why)."""
        return self.forward_status()[0]

    def forward_status(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(forward report, None)``, or ``(None, why there is none)``."""
        listing = self._forwards.listing()
        if not listing:
            return None, "no forward results: the run has no test part (walk-forward --test-size N)"
        try:
            results = self.forwards()
            csv = self.storage.read_bytes(rec.FORWARD_RETURNS) if self.storage.exists(rec.FORWARD_RETURNS) else None
        except CheckpointError as exc:  # a damaged forward file must not stop a commit's summaries
            return None, f"{exc}; run verify"
        cks = {c.iteration: c for c in self.list()}
        names = builtins.list(candidate_scores(cks.values()))
        try:  # the candidates' data only adds the DSR's trials and PBO: without it the root's report stands
            candidates, problem = self.candidate_forwards(), None
        except CheckpointError as exc:
            candidates, problem = {}, str(exc)
        return forwardfiles.report(results, cks, csv, candidates or None, names, problem)

    def candidate(self, name: str) -> CheckpointRepository:
        """The repository of candidate ``name`` (``candidates/<name>/``) of a run with candidates: the same
        storage (options, credentials) and signing key as this one."""
        name = Candidate(name).name  # a valid folder name
        storage = self.storage.child(f"{CANDIDATES_DIR}/{name}")
        return CheckpointRepository(storage.url, storage=storage, signing_key=self._signer, verbose=self.verbose)

    def candidate_scores(self) -> dict[str, dict[int, float | None]]:
        """Candidate -> iteration -> its selection score on that window, from the records of the chosen
        models (``record["candidate"]["scores"]``); empty for a run without candidates."""
        return candidate_scores(self.list())

    def candidate_forwards(self) -> dict[str, builtins.list[ForwardResult]]:
        """Candidate -> its forward results on the iterations committed here (DSR trials, PBO, the report)."""
        kept = set(self.iterations())
        out: dict[str, builtins.list[ForwardResult]] = {}
        for name in self.candidate_scores():
            member = self.candidate(name)
            try:
                out[name] = [r for r in member.forwards() if r.iteration in kept]
            except CheckpointError as exc:  # say whose file it is: the root's verify does not see it
                raise CheckpointError(f"candidate {name!r}, {CANDIDATES_DIR}/{name}/: {exc}; run verify there") from exc
        return out

    def stitched_forward(self) -> StitchedForward | None:
        """The stitched forward curve (``forward_returns.csv`` read back), or None when the run wrote none.

        :raises RecordError: when the file is damaged.
        """
        from sb3_iter_ckpt.forward import StitchedForward

        if not self.storage.exists(rec.FORWARD_RETURNS):
            return None
        results = self.forwards()
        ppy = results[0].periods_per_year if results else 252
        return StitchedForward.from_csv_bytes(self.storage.read_bytes(rec.FORWARD_RETURNS), ppy, rec.FORWARD_RETURNS)

    def update_best(self, monitor: str | None = None, mode: str | None = None) -> Checkpoint | None:
        """Copy the best iteration's model (and VecNormalize statistics) to ``best_model.zip``
        (``best_vecnormalize.pkl``), then write ``training_summary.json``, which records what was written.

        Each copy is a reflink where the file system has them, else a byte copy, written under a
        temporary name and renamed into place: it shares no inode with the committed artifact. A file
        under those names that we did not write (SB3's ``EvalCallback(best_model_save_path=root)``,
        ``model.save``) is the user's: left as it is; the summary then names no ``best_model_file``.
        """
        self._trust.authorize_write(self._index)
        rule = self.selection_rule(monitor, mode)
        best = self._best(rule)
        found = self._best_files.found()
        todo = self._best_files.plan(best, found)
        if todo:
            # Crash-safe order: the summary first stops naming best_model.zip and records both the old and
            # the new content as ours, so a kill at any point leaves files we still recognize.
            pending = {name: t[1] for name, t in todo.items() if t is not None}
            self._write_training_summary(rule, found, pending)
            self._best_files.apply(todo, found)
        self._write_training_summary(rule, found, None)
        return best

    def training_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """The content of ``training_summary.json`` (totals, best checkpoint, performance range)."""
        return self._training_summary(self.selection_rule(monitor, mode), self._best_files.found(), None)

    def _training_summary(
        self, rule: SelectionRule, found: Mapping[str, BestFile], pending: Mapping[str, str] | None
    ) -> dict[str, Any]:
        """``pending``: a refresh about to replace the best files (then no ``best_model_file`` is named)."""
        return summaries.training_summary(self.list(), self._best(rule), rule, found, pending)

    def _write_training_summary(
        self, rule: SelectionRule, found: Mapping[str, BestFile], pending: Mapping[str, str] | None
    ) -> dict[str, Any]:
        summary = self._training_summary(rule, found, pending)
        try:
            self.storage.write_atomic(rec.TRAINING_SUMMARY, rec.dumps(summary))
        except OSError as exc:
            raise _commit_error(exc, f"{rec.TRAINING_SUMMARY} in {self.root}") from exc
        return summary

    def write_training_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Write ``training_summary.json`` atomically and return it."""
        self._trust.authorize_write(self._index)
        return self._write_training_summary(self.selection_rule(monitor, mode), self._best_files.found(), None)

    def refresh(self, monitor: str | None = None, mode: str | None = None) -> None:
        """After a commit: the best model's copy with ``training_summary.json``, then ``checkpoint_summary.json``.

        Under the commit lock, so that concurrent writers leave one consistent best. Crash-safe:
        before ``best_model.zip`` changes, ``training_summary.json`` stops naming it, so a kill
        between the two never leaves a summary naming a file that holds another model.
        A failed write (disk full, I/O error, permission denied) raises ``CommitError``.
        """
        self._trust.authorize_write(self._index)
        try:
            with self._trust.authorized(), self.storage.lock():  # the writes below need no second check
                self.update_best(monitor, mode)
                self.write_summary(monitor, mode)
        except OSError as exc:
            raise _commit_error(exc, f"the best model and summaries of {self.root}") from exc

    # -- experiment metadata files -------------------------------------------------------------------
    def read_metadata(self, name: str) -> dict[str, Any] | None:
        """A JSON object kept at the repository root by a tool (e.g. ``walk_forward.json``), or None."""
        if not self.storage.exists(name):
            return None
        data = rec.loads(self.storage.read_bytes(name), name)
        if not isinstance(data, dict):
            raise RecordError(f"{name} is not a JSON object")
        return data

    def write_metadata(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a JSON object at the repository root, atomically."""
        try:
            self.storage.write_atomic(name, rec.dumps(dict(data)))
        except OSError as exc:
            raise _commit_error(exc, f"{name} in {self.root}") from exc

    # -- retention -----------------------------------------------------------------------------------
    def retention_policy(self) -> RetentionPolicy | None:
        """The policy ``prune()`` applies when given none. Override in a subclass to customize."""
        return None

    def plan_retention(
        self, policy: RetentionPolicy | None, monitor: str | None = None, mode: str | None = None
    ) -> RetentionPlan:
        """What ``policy`` would remove; the best, the latest and every placeholder are protected."""
        return self._plan_retention(policy, self.selection_rule(monitor, mode), (monitor, mode) != (None, None))

    def _plan_retention(self, policy: RetentionPolicy | None, rule: SelectionRule, chosen: bool) -> RetentionPlan:
        """``chosen``: ``rule`` is not (only) the recorded selection, whose best stays protected too."""
        from sb3_iter_ckpt.retention import plan

        cks = self.list()
        best = self._best(rule)
        result = plan(cks, policy, best_iteration=best.iteration if best else None)
        return pruning.protect(result, cks, self.best() if chosen else None)

    def prune(
        self,
        policy: RetentionPolicy | None = None,
        *,
        keep_every_n: int | None = None,
        keep_last_n: int | None = None,
        keep_best_k: int | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        dry_run: bool = False,
        remove_records: bool = False,
    ) -> PruneResult:
        """Remove the model artifacts of iterations the retention policy does not keep.

        ``policy`` and the ``keep_*`` shortcuts are combined by union; with none of them the
        ``retention_policy()`` hook decides, and if that is None too nothing is removed.
        Always protected: the overall best, the latest iteration, every placeholder.
        Metrics records stay (marked ``pruned``) so the analysis of all iterations stays complete,
        unless ``remove_records=True``. Only files this repository recorded are deleted.

        :param policy: A ``RetentionPolicy``.
        :param keep_every_n: Keep iterations with ``i % n == 0``.
        :param keep_last_n: Keep the last n iterations with a model.
        :param keep_best_k: Keep the k best by ``monitor``/``mode``.
        :param monitor: Metric for ``keep_best_k``; default as recorded. Its best is protected, and so is
            the best by the recorded selection (the one ``best_model.zip`` names).
        :param mode: ``"max"`` or ``"min"``; default as recorded.
        :param dry_run: Only return the plan.
        :param remove_records: Delete the metrics records of pruned iterations too.
        :return: A ``PruneResult`` (the plan, files removed, bytes freed).
        """
        from sb3_iter_ckpt.retention import AnyOf, policy_from_args

        rule = self.selection_rule(monitor, mode)
        shortcuts = policy_from_args(keep_every_n, keep_last_n, keep_best_k, rule.monitor, rule.mode)
        parts = [p for p in (policy, shortcuts) if p]
        chosen = AnyOf(*parts) if len(parts) > 1 else (parts[0] if parts else self.retention_policy())
        if chosen is None:
            return PruneResult(plan=self._plan_retention(None, rule, True), removed=(), freed_bytes=0, dry_run=dry_run)
        if not dry_run:
            self._trust.authorize_write(self._index)  # pruning rewrites records: never strip their signatures
        try:
            with self.storage.lock():
                the_plan = self._plan_retention(chosen, rule, True)
                removed, freed = self._prune(the_plan, remove_records) if not dry_run else ([], 0)
        except OSError as exc:  # a read-only folder, disk full, I/O error
            raise _commit_error(exc, f"the pruned records of {self.root}") from exc
        return PruneResult(plan=the_plan, removed=tuple(removed), freed_bytes=freed, dry_run=dry_run)

    def _prune(self, the_plan: RetentionPlan, remove_records: bool) -> tuple[builtins.list[str], int]:
        """Carry out ``the_plan`` (under the lock): (files removed, bytes freed)."""
        removed: builtins.list[str] = []
        freed = 0
        if the_plan.remove:
            # Every moment consistent for a reader or a kill: the best link and the summaries first
            # name only what stays (the best is protected), then the deletions, then the summaries
            # again with the new counts. The recorded selection: keep_best_k's monitor does not
            # redefine "the best".
            self.refresh()
            for i in the_plan.remove:
                files, size = pruning.prune_iteration(self.storage, self.get(i), remove_records, self._signer)
                removed += files
                freed += size
            self.refresh()
        return removed, freed

    # -- analysis and summaries -----------------------------------------------------------------------
    def disk_usage(self) -> int:
        """Bytes on disk of the repository's files (hard links counted once)."""
        seen: set[int] = set()
        total = 0
        for folder in ("", _CK):
            for st in self.storage.listdir(folder).values():
                if st.inode and st.inode in seen:
                    continue
                seen.add(st.inode)
                total += st.size
        return total

    def analyze(self, monitor: str | None = None, mode: str | None = None, top_k: int = 5) -> dict[str, Any]:
        """A JSON-serializable report across iterations: counts, top K, statistics, trend, disk use."""
        return self._analyze(self.selection_rule(monitor, mode), top_k)

    def _analyze(self, rule: SelectionRule, top_k: int = 5) -> dict[str, Any]:
        from sb3_iter_ckpt import analysis

        report = analysis.analyze(self.list(), rule.monitor, rule.mode, top_k, size_on_disk=self.disk_usage())
        report["forward"], report["forward_reason"] = self.forward_status()
        return report

    def write_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Write ``checkpoint_summary.json`` (atomic): metadata and the analysis. Returns it."""
        self._trust.authorize_write(self._index)
        try:
            old: bytes | None = self.storage.read_bytes(rec.CHECKPOINT_SUMMARY)
        except CheckpointError:
            old = None  # missing or unreadable: this write replaces it
        summary = summaries.checkpoint_summary(self.analyze(monitor, mode), summaries.created_at(old))
        try:
            self.storage.write_atomic(rec.CHECKPOINT_SUMMARY, rec.dumps(summary))
        except OSError as exc:
            raise _commit_error(exc, f"{rec.CHECKPOINT_SUMMARY} in {self.root}") from exc
        return summary

    def table(self) -> Any:
        """One row per iteration with flattened metrics: a pandas DataFrame if pandas is installed."""
        from sb3_iter_ckpt.analysis import table_rows

        rows = table_rows(self.list())
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("iteration") if rows else pd.DataFrame(rows)

    # -- legacy folders -------------------------------------------------------------------------------
    def adopt(self) -> builtins.list[int]:
        """Record sha256 and size for files of a folder written by the seed's script.

        Legacy records (no ``schema_version``) are rewritten in the current schema, keeping their
        metrics; a ``model_iter_{i}.zip`` that has no record at all gets one with empty metrics.
        From then on those files are verified like any other. Returns the adopted iterations.
        """
        try:
            return self._adopt()
        except OSError as exc:  # a read-only folder, disk full, I/O error
            raise _commit_error(exc, f"the adopted records of {self.root}") from exc

    def _adopt(self) -> builtins.list[int]:
        self._trust.authorize_write(self._index)  # an adopted record is signed with the key, never left unsigned
        with self.storage.lock():
            return adoption.adopt(self.storage, self._scan()[0], self._index, self._signer)
