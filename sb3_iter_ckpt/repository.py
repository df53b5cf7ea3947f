"""``CheckpointRepository``: the checkpoint store of one experiment, and its queries.

It never touches a file itself: every read, write, rename and delete goes through its ``Storage``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.candidates import CANDIDATES_DIR, Candidate, candidate_scores
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.common.signing import SIGNING_KEY_ENV, Signer
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.store import adoption, loading, pruning
from sb3_iter_ckpt.store.bestfiles import BestFiles
from sb3_iter_ckpt.store.catalog import LEGACY_MONITORS, Catalog
from sb3_iter_ckpt.store.commits import Draft, Publisher, write_file
from sb3_iter_ckpt.store.commits import commit_error as _commit_error
from sb3_iter_ckpt.store.derived import read_json_object
from sb3_iter_ckpt.store.forwardfiles import ForwardFiles
from sb3_iter_ckpt.store.index import RecordIndex, attach, check_iteration
from sb3_iter_ckpt.store.integrity import Problem, VerifyReport
from sb3_iter_ckpt.store.pruning import PruneResult
from sb3_iter_ckpt.store.storage import (
    RemoteRoot,
    Source,
    Storage,
    display_root,
    storage_for,
)
from sb3_iter_ckpt.store.summaries import versions
from sb3_iter_ckpt.store.trust import Trust
from sb3_iter_ckpt.store.upkeep import Upkeep, disk_usage

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from sb3_iter_ckpt.forward.result import ForwardResult
    from sb3_iter_ckpt.forward.stitching import StitchedForward
    from sb3_iter_ckpt.retention import RetentionPlan, RetentionPolicy

__all__ = [
    "LEGACY_MONITORS",
    "SIGNING_KEY_ENV",
    "CheckpointRepository",
    "Problem",
    "PruneResult",
    "Signer",
    "VerifyReport",
    "candidate_forwards",
    "checked_run_file",
    "pbo_logits",
    "trade_forward",
    "versions",
]

_CK = rec.CHECKPOINTS_DIR
_check_iteration = check_iteration  # its name here before index.py


class CheckpointRepository:
    """The checkpoints of one walk-forward experiment, in the seed's layout (see the guide's "Layout").

    The records are the truth, read again when they change: a repository sees what other processes
    commit, replace or prune at its next call (a record edited *in place* by another program: at
    ``verify()`` or in a new repository object). Parsed records are kept between calls.

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
        # The repository's own signer: it carries this repository's binding (signing.Binding).
        self._signer: Signer | None = None if key is None else (key if isinstance(key, Signer) else Signer(key))
        self._signer = self._signer.for_repository() if self._signer is not None else None
        self.verbose = verbose
        self._index = RecordIndex(self.storage)
        self._trust = Trust(self.storage, self._signer, self.root)
        self._forwards = ForwardFiles(self.storage, self._signer, self.checkpoints_dir)
        members = functools.partial(candidate_members, self)  # a run's candidates: the DSR's trials, PBO
        self._catalog = Catalog(self._index, self._trust, self._forwards, self.checkpoints_dir, members)
        self._publisher = Publisher(self._catalog, self.checkpoints_dir)
        self._upkeep = Upkeep(self._catalog, BestFiles(self.storage, self._index), self.root)
        attach(self.storage, sweep=sweep, verbose=verbose, where=self.root)
        self._trust.check_key(self._index)

    def __repr__(self) -> str:
        return f"CheckpointRepository({str(self.root)!r})"

    @property
    def signing_key(self) -> bytes | None:
        """The signing key, to open this repository in another process (``window.RepositoryRef``)."""
        return self._signer.key if self._signer is not None else None

    @property
    def repository_id(self) -> str | None:
        """The identity signed records here are bound to (``signing.json``); None when unsigned or not bound yet."""
        return self._signer.binding.repository_id if self._signer is not None and self._signer.binding else None

    @property
    def checkpoints_dir(self) -> Path | RemoteRoot:
        return self.root / _CK

    def exists(self) -> bool:
        """Whether the repository has a ``checkpoints/`` folder with at least one record."""
        return bool(self._index.records_listing())

    # -- reading -----------------------------------------------------------------------------------
    def list(self) -> builtins.list[Checkpoint]:
        """Every committed iteration, in order, placeholders included; unreadable records left out with a warning."""
        return self._catalog.checkpoints()

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._catalog.trusted())

    def __contains__(self, iteration: object) -> bool:
        return isinstance(iteration, int) and self.has(iteration)

    def iterations(self) -> builtins.list[int]:
        return sorted(self._catalog.trusted())

    def has(self, iteration: int) -> bool:
        """Whether ``iteration`` is committed (with a model or as a placeholder), readable or not."""
        return self._index.has(check_iteration(iteration))

    def get(self, iteration: int) -> Checkpoint:
        """The checkpoint of ``iteration``; ``CheckpointNotFound`` if absent, ``RecordError`` if unreadable."""
        return self._catalog.get(check_iteration(iteration))

    def latest(self) -> Checkpoint | None:
        """The highest committed iteration, or None."""
        return self._catalog.latest()

    def next_iteration(self) -> int:
        """One past the highest record, or artifact name without one (never overwrite a stranger's file)."""
        return self._index.next_iteration()

    def default_selection(self) -> tuple[str, str]:
        """(monitor, mode) recorded by the latest iteration's callback; without one (a seed folder) the
        first of ``LEGACY_MONITORS`` present in the records, maximized."""
        return self._catalog.default_selection()

    def selection_rule(self, monitor: str | None = None, mode: str | None = None) -> SelectionRule:
        """The rule ``monitor`` and ``mode`` name, what they leave out as recorded (``default_selection``).

        :raises CheckpointError: for a mode other than ``"max"``/``"min"`` or an empty monitor.
        """
        return self._catalog.rule(monitor, mode)

    def best(self, monitor: str | None = None, mode: str | None = None) -> Checkpoint | None:
        """The checkpoint with the best finite ``monitor`` value, placeholders and NaN ignored.

        :param monitor: Metric key (dotted for nested); default: the one the callback selected on.
        :param mode: ``"max"`` or ``"min"``; default as recorded.
        :return: The best checkpoint (the later one on ties), or None when none has a model and a score.
        """
        return self._catalog.best(self.selection_rule(monitor, mode))

    # -- loading ---------------------------------------------------------------------------------
    def _read_verified(self, ck: Checkpoint, kind: str, verify: bool) -> bytes:
        return loading.read_verified(self.storage, ck, kind, verify, self._signer)

    def read_artifact(self, iteration: int, kind: str = "model", verify: bool = True) -> bytes:
        """One artifact's bytes (``model``, ``vecnormalize``, ``replay_buffer``), checked against the record."""
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
        """Load iteration ``iteration``'s model as the right SB3 algorithm class, its sha256 checked first.

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
        return loading.load_checkpoint(
            self.storage, ck, self._signer, env=env, verify=verify, algo=algo, device=device, **kwargs
        )

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
            raise self._catalog.no_best()
        return self.load(best.iteration, env=env, device=device, verify=verify, **kwargs)

    # -- integrity ---------------------------------------------------------------------------------
    def verify(self) -> builtins.list[Problem]:
        """Check every record and artifact; return the problems found (empty when healthy)."""
        return builtins.list(self.verify_report().problems)

    def verify_report(self) -> VerifyReport:
        """Check every record and artifact, and say what was checked how (hashed, opened only...)."""
        return self._catalog.verify_report()

    # -- writing ---------------------------------------------------------------------------------
    def ensure_free(self, iterations: Sequence[int], overwrite: bool = False) -> None:
        """Raise ``CheckpointExistsError`` if any of ``iterations`` is committed (unless ``overwrite``), or
        ``SigningKeyError`` when a commit would be refused (``()``: the signing check only)."""
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
        sources = {"model": model, "vecnormalize": vecnormalize, "replay_buffer": replay_buffer}
        draft = Draft.of(iteration, metrics, sources, reason, timesteps, extra)
        return self._publisher.commit(
            draft, sources, overwrite=overwrite, idempotent=idempotent, next_free=next_free, verbose=self.verbose
        )

    # -- forward (out-of-sample) results ------------------------------------------------------------
    def has_forward(self, iteration: int) -> bool:
        """Whether ``iteration`` has a forward result file (``checkpoints/forward_iter_{i}.json``)."""
        return self._forwards.has(check_iteration(iteration))

    def forward(self, iteration: int) -> ForwardResult:
        """The checked forward result of ``iteration`` (its kept model trading its test part); ``CheckpointNotFound``
        without one (no test part, or its evaluation is pending)."""
        return self._catalog.forward(check_iteration(iteration))

    def forwards(self) -> builtins.list[ForwardResult]:
        """The forward results of every committed iteration that has one, in iteration order."""
        return self._catalog.forward_results()

    def commit_forward(self, result: ForwardResult) -> ForwardResult:
        """Store ``result`` as its iteration's ``forward_iter_{i}.json``, create-only (the same bytes: a no-op).

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
        self._upkeep.write_forward_returns(curve if isinstance(curve, bytes) else curve.to_csv_bytes())

    def forward_report(self) -> dict[str, Any] | None:
        """What ``sb3-iter-ckpt forward --json`` prints, or None without complete forward data."""
        return self._catalog.forward_status()[0]

    def forward_status(
        self, n_trials: int | None = None, trials_variance: float | None = None, logits: bool = False
    ) -> tuple[dict[str, Any] | None, str | None]:
        """``(forward report, None)`` or ``(None, why)``; the trials named, ``logits``: ``forward_statistics``."""
        return self._catalog.forward_status(n_trials, trials_variance, logits)

    # -- a run's candidates (``candidates/<name>/``, see ``sb3_iter_ckpt.runner.ensemble``) --------------------------
    def candidate(self, name: str, sweep: bool = True) -> CheckpointRepository:
        """Candidate ``name``'s repository: this storage's backend and options, this key (``sweep`` as here)."""
        storage = self.storage.child(f"{CANDIDATES_DIR}/{Candidate(name).name}")  # a valid folder name
        key, verbose = self._signer, self.verbose
        return CheckpointRepository(storage.url, storage=storage, signing_key=key, sweep=sweep, verbose=verbose)

    def stitched_forward(self) -> StitchedForward | None:
        """``forward_returns.csv`` read back, or None when the run wrote none; ``RecordError`` when damaged."""
        return self._catalog.stitched_forward()

    # -- the best model and the summaries ------------------------------------------------------------
    def update_best(self, monitor: str | None = None, mode: str | None = None) -> Checkpoint | None:
        """Copy the best model (and VecNormalize) to ``best_model.zip``, then write ``training_summary.json``."""
        return self._upkeep.update_best(self.selection_rule(monitor, mode))

    def training_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """The content of ``training_summary.json`` (totals, best checkpoint, performance range)."""
        return self._upkeep.training_summary(self.selection_rule(monitor, mode))

    def write_training_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Write ``training_summary.json`` atomically and return it."""
        return self._upkeep.write_training_summary(self.selection_rule(monitor, mode))

    def refresh(self, monitor: str | None = None, mode: str | None = None) -> None:
        """After a commit: the best model's copy, ``training_summary.json``, ``checkpoint_summary.json`` (locked)."""
        self._upkeep.refresh(monitor, mode)

    def write_summary(self, monitor: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Write ``checkpoint_summary.json`` (atomic): metadata and the analysis. Returns it."""
        return self._upkeep.write_summary(self.selection_rule(monitor, mode))

    # -- experiment metadata files -------------------------------------------------------------------
    def read_metadata(self, name: str) -> dict[str, Any] | None:
        """A JSON object kept at the repository root by a tool (e.g. ``walk_forward.json``), or None."""
        return read_json_object(self.storage, name)

    def write_metadata(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a JSON object at the repository root, atomically."""
        write_file(self.storage, name, rec.dumps(dict(data)), self.root)

    # -- retention -----------------------------------------------------------------------------------
    def retention_policy(self) -> RetentionPolicy | None:
        """The policy ``prune()`` applies when given none. Override in a subclass to customize."""
        return None

    def plan_retention(
        self, policy: RetentionPolicy | None, monitor: str | None = None, mode: str | None = None
    ) -> RetentionPlan:
        """What ``policy`` would remove; the best, the latest and every placeholder are protected."""
        chosen = (monitor, mode) != (None, None)
        return self._upkeep.plan_retention(policy, self.selection_rule(monitor, mode), chosen)

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
        Metrics records stay (marked ``pruned``) unless ``remove_records=True``.

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
        rule = self.selection_rule(monitor, mode)
        chosen = pruning.combined_policy(policy, keep_every_n, keep_last_n, keep_best_k, rule.monitor, rule.mode)
        chosen = chosen if chosen is not None else self.retention_policy()
        return self._upkeep.prune(chosen, rule, dry_run=dry_run, remove_records=remove_records)

    # -- analysis ------------------------------------------------------------------------------------
    def forget_pruned(self, iteration: int) -> builtins.list[str]:
        """Remove a pruned ``iteration``'s record and forward result (a run trains it again); the files removed."""
        return self._upkeep.forget_pruned(check_iteration(iteration))

    def disk_usage(self) -> int:
        """Bytes on disk of the repository's files (hard links counted once)."""
        return disk_usage(self.storage)

    def analyze(self, monitor: str | None = None, mode: str | None = None, top_k: int = 5) -> dict[str, Any]:
        """A JSON-serializable report across iterations: counts, top K, statistics, trend, disk use."""
        return self._upkeep.analyze(self.selection_rule(monitor, mode), top_k)

    def table(self) -> Any:
        """One row per iteration with flattened metrics: a pandas DataFrame if pandas is installed."""
        from sb3_iter_ckpt.stats.analysis import table

        return table(self.list())

    # -- legacy folders -------------------------------------------------------------------------------
    def adopt(self) -> builtins.list[int]:
        """Record sha256 and size for the files of a folder written by the seed's script.

        Legacy records (no ``schema_version``) are rewritten in the current schema, keeping their
        metrics; a ``model_iter_{i}.zip`` without a record gets one with empty metrics. Returns the
        adopted iterations.
        """
        try:
            self._trust.authorize_write(self._index)  # an adopted record is signed, never left unsigned
            with self.storage.lock():
                return adoption.adopt(self.storage, self._index.scan()[0], self._index, self._signer)
        except OSError as exc:  # a read-only folder, disk full, I/O error
            raise _commit_error(exc, f"the adopted records of {self.root}") from exc


def candidate_members(repository: CheckpointRepository) -> dict[str, CheckpointRepository]:
    """The candidates' repositories a run's root names (opened without sweeping: a read never removes
    another writer's leftovers)."""
    return {name: repository.candidate(name, sweep=False) for name in candidate_scores(repository.list())}


def checked_run_file(repository: CheckpointRepository) -> tuple[dict[str, Any] | None, str | None]:
    """``walk_forward.json`` and why it cannot be shown as the run's configuration (None: it can, being the
    configuration the records' signed ``metadata.fingerprint`` hashes); ``(None, None)`` without one."""
    return repository._catalog.run_file()


def candidate_forwards(repository: CheckpointRepository) -> dict[str, list[ForwardResult]]:
    """Candidate -> its forward results on the iterations ``repository`` (a run's root) holds: the DSR's
    trials, PBO and the report's candidates chart; empty for a run without candidates. Each candidate
    folder is checked first against what the root recorded of it (``CheckpointError`` naming it)."""
    return repository._catalog.candidate_forwards()


def pbo_logits(repository: CheckpointRepository) -> builtins.list[float] | None:
    """Every CSCV logit of the run's PBO, in ``itertools.combinations`` order, recomputed from the (signed)
    forward files: what the forward report, ``analyze()`` and ``checkpoint_summary.json`` keep only as
    ``pbo.logit_summary`` (count, quantiles, histogram); ``sb3-iter-ckpt forward --json --logits`` prints them.

    :param repository: the run's ``CheckpointRepository`` (its root, with candidates).
    :return: the logits; None when the run has no PBO (no forward data, or fewer than two candidates: the
        forward report's ``pbo_reason`` says why).
    """
    report = repository.forward_status(logits=True)[0]
    pbo = report.get("pbo") if report is not None else None
    return list(pbo["logits"]) if pbo is not None else None


@contextlib.contextmanager
def one_reading(repository: CheckpointRepository) -> Iterator[None]:
    """Within it, the reads of ``repository`` that reach its candidates (``verify``, the forward report,
    ``candidate_forwards``) open each candidate's repository once and share what was read of it (each read
    still checks the candidates against the root): a report's reads, at a third of the cost."""
    with repository._catalog.reading():
        yield


def trade_forward(
    repository: CheckpointRepository, iteration: int, test_env: Any, *, candidate: str | None = None
) -> ForwardResult:
    """Trade committed ``iteration``'s model in ``repository`` on ``test_env`` and commit the forward result:
    what ``IterationCheckpointCallback(..., test_env=)`` does at the end of each iteration, after the fact.

    The model is loaded verified, with its ``VecNormalize`` statistics in evaluation mode; it trades one
    whole episode deterministically (:func:`~sb3_iter_ckpt.forward.trade_env`). Its test part starts where
    the last earlier iteration's ended, so the stitched curve is the test parts in iteration order; then
    ``forward_returns.csv`` is written again. Trading the same iteration again gives the same result (a no-op).

    :param repository: the ``CheckpointRepository`` (a hand-written loop's folder).
    :param iteration: a committed iteration with a model.
    :param test_env: a gymnasium env, or a :class:`~sb3_iter_ckpt.forward.ForwardEnv` (the env with its
        dates, prices, step reader and annualization).
    :param candidate: the candidate's name (None without candidates).
    :raises CheckpointError: a placeholder or pruned iteration, a later iteration already traded, dates that
        do not follow the earlier test parts', anything :func:`~sb3_iter_ckpt.forward.trade_env` refuses.
    """
    from sb3_iter_ckpt.forward.loop import ForwardEnv, check_follows, next_row
    from sb3_iter_ckpt.forward.stitching import restitch

    ck = repository.get(iteration)
    if not ck.has_model:
        raise CheckpointError(f"iteration {ck.iteration} has no model ({ck.reason}): nothing to trade")
    env = test_env if isinstance(test_env, ForwardEnv) else ForwardEnv(test_env)
    others = [r for r in repository.forwards() if r.iteration != ck.iteration]
    has_vn = "vecnormalize" in ck.artifacts
    result = env.trade(
        repository.load(ck.iteration),
        iteration=ck.iteration,
        first_row=next_row(others, ck.iteration),
        vecnormalize=functools.partial(repository.load_vecnormalize, ck.iteration) if has_vn else None,
        candidate=candidate,
    )
    check_follows(others, result)
    restitch([*others, result])  # the curve with it stitches (same annualization, no overlap)
    repository.commit_forward(result)
    repository.write_forward_returns(restitch(repository.forwards()))
    return result
