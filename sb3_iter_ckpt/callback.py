"""``IterationCheckpointCallback``: SB3 lifecycle only.

It decides when to evaluate, keeps the iteration's best snapshot in memory, and at each
iteration boundary asks the repository to commit it. It does no file I/O itself.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError
from sb3_iter_ckpt.record import Checkpoint, as_score, get_metric
from sb3_iter_ckpt.repository import CheckpointRepository
from sb3_iter_ckpt.snapshot import ModelSnapshot, copy_replay_buffer
from sb3_iter_ckpt.writer import AsyncWriter

if TYPE_CHECKING:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from sb3_iter_ckpt.retention import RetentionPolicy

Evaluator = Callable[[Any, Any], Mapping[str, Any]]


@dataclass
class _Snapshot:
    """The iteration's best so far, held in memory until the boundary."""

    score: float
    metrics: dict[str, Any]
    model: bytes | ModelSnapshot  # a ModelSnapshot is a writer Source: serialized only at commit
    vecnormalize: bytes | None
    timesteps: int
    evaluation: int


@dataclass
class _Pending:
    """One iteration's commit, prepared at its boundary (what the writer thread needs, nothing live)."""

    iteration: int
    best: _Snapshot | None
    extra: dict[str, Any]
    replay: Callable[[Any], None] | None
    last_metrics: dict[str, Any]
    reason: str


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class IterationCheckpointCallback(BaseCallback):
    """Keep the best model of every walk-forward iteration, crash-safely.

    Evaluates every ``eval_freq`` timesteps, keeps the best snapshot of the current iteration in
    memory, and at the iteration boundary (the end of ``learn()``, or every ``iteration_timesteps``)
    commits it with its metrics to a ``CheckpointRepository``. An iteration where nothing qualified
    gets a placeholder record with a reason.

    :param repository: A ``CheckpointRepository`` or a path to one (``results/{experiment_id}``).
    :param iteration: Number of the first iteration this callback writes; None: the next free one.
        Each further boundary (or ``learn()`` call with the same callback) takes the next number.
    :param eval_env: Validation environment (``gym.Env``, ``VecEnv`` or a gymnasium env id); None: use the
        statistics of the training episodes finished since the last evaluation.
    :param eval_freq: Evaluate every ``eval_freq`` timesteps (timesteps, not calls: ``n_envs``
        does not change the schedule).
    :param n_eval_episodes: Episodes per evaluation with ``evaluate_policy``.
    :param evaluator: Optional ``callable(model, eval_env) -> dict`` returning the metrics
        (e.g. Sharpe, drawdown); replaces ``evaluate_policy``.
    :param monitor: Metric that picks the best snapshot; dotted keys reach nested dicts.
    :param mode: ``"max"`` or ``"min"``.
    :param min_score: Acceptance rule: a number the score must reach (``>=`` for max, ``<=`` for
        min) or ``callable(metrics) -> bool``. When nothing is accepted the iteration gets a placeholder.
    :param iteration_timesteps: Several iterations inside one ``learn()``: a boundary every N timesteps
        (and at training end for a partial last window).
    :param save_vecnormalize: Save the training env's ``VecNormalize`` statistics with each snapshot.
    :param save_replay_buffer: Save the replay buffer (as of the boundary) of off-policy algorithms.
    :param deterministic: Deterministic actions in evaluation.
    :param retention: Optional ``RetentionPolicy`` applied after each iteration is durably committed.
    :param overwrite: Replace already committed iterations instead of refusing before training.
    :param on_error: ``"warn"`` (default): a failed commit warns, records a ``save_failed`` placeholder
        when possible and training goes on; ``"raise"``: the error stops training.
    :param metadata: Extra JSON-serializable fields stored in every record (window bounds, config...).
        A callable ``metadata(iteration) -> dict`` is called at each boundary.
    :param async_commit: Write and fsync each iteration in a background thread, so training is blocked
        at the boundary only while the state is copied (the replay buffer's arrays, for off-policy
        algorithms). The commit protocol and its crash-safety are the same; iterations are committed in
        order, one at a time. A background error surfaces at the next boundary or at training end (a
        warning and ``errors`` with ``on_error="warn"``, the exception with ``"raise"``), never lost;
        training end (and ``close()``) waits for the writer. While a write is pending, do not use the
        same ``CheckpointRepository`` object from other code; ``committed`` is filled when it finishes.
    :param verbose: Verbosity level: 0 no output, 1 a line per iteration, 2 a line per evaluation.
    """

    def __init__(
        self,
        repository: CheckpointRepository | str | Any,
        iteration: int | None = None,
        eval_env: gym.Env | VecEnv | str | None = None,
        eval_freq: int = 10_000,
        n_eval_episodes: int = 5,
        evaluator: Evaluator | None = None,
        monitor: str = "mean_reward",
        mode: str = "max",
        min_score: float | Callable[[Mapping[str, Any]], bool] | None = None,
        iteration_timesteps: int | None = None,
        save_vecnormalize: bool = True,
        save_replay_buffer: bool = False,
        deterministic: bool = True,
        retention: RetentionPolicy | None = None,
        overwrite: bool = False,
        on_error: str = "warn",
        metadata: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None = None,
        verbose: int = 0,
        async_commit: bool = False,
    ) -> None:
        super().__init__(verbose=verbose)
        self.async_commit = bool(async_commit)
        self._writer: AsyncWriter | None = None
        if mode not in ("max", "min"):
            raise CheckpointError(f"mode must be 'max' or 'min', got {mode!r}")
        if on_error not in ("warn", "raise"):
            raise CheckpointError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        if int(eval_freq) <= 0:
            raise CheckpointError(f"eval_freq must be a positive number of timesteps, got {eval_freq}")
        if iteration_timesteps is not None and int(iteration_timesteps) <= 0:
            raise CheckpointError(f"iteration_timesteps must be positive, got {iteration_timesteps}")
        if min_score is not None and not callable(min_score) and as_score(min_score) is None:
            raise CheckpointError(f"min_score must be a finite number or a callable, got {min_score!r}")
        self.repository = (
            repository if isinstance(repository, CheckpointRepository) else CheckpointRepository(repository)
        )
        self.iteration = None if iteration is None else int(iteration)
        # A string is a gymnasium env id, so YAML configs (RL Zoo) can name a validation env.
        self.eval_env = gym.make(eval_env) if isinstance(eval_env, str) else eval_env
        self.eval_freq = int(eval_freq)
        self.n_eval_episodes = int(n_eval_episodes)
        self.evaluator = evaluator
        self.monitor = monitor
        self.mode = mode
        self.min_score = min_score
        self.iteration_timesteps = None if iteration_timesteps is None else int(iteration_timesteps)
        self.save_vecnormalize = save_vecnormalize
        self.save_replay_buffer = save_replay_buffer
        self.deterministic = deterministic
        self.retention = retention
        self.overwrite = overwrite
        self.on_error = on_error
        self.metadata = metadata
        #: Checkpoints committed by this callback, in order.
        self.committed: list[Checkpoint] = []
        #: Errors met at boundaries (with ``on_error="warn"``).
        self.errors: list[BaseException] = []
        self._eval_vec_env: VecEnv | None = None
        self._window_open = False
        self._current: int | None = None

    # -- SB3 lifecycle -------------------------------------------------------------------------------
    def _init_callback(self) -> None:
        if self.eval_env is not None and self.evaluator is None:
            env = self.eval_env
            self._eval_vec_env = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
        if (
            self.eval_env is not None
            and self.model.get_vec_normalize_env() is not None
            and not isinstance(self.eval_env, VecNormalize)
        ):
            # As SB3's EvalCallback: the policy would see raw observations during evaluation.
            warnings.warn(
                "training uses VecNormalize but eval_env is not wrapped in VecNormalize: evaluation sees "
                "unnormalized observations; wrap eval_env in VecNormalize(..., training=False, norm_reward=False)",
                stacklevel=2,
            )

    def _on_training_start(self) -> None:
        self.wait()  # async: a write left by an earlier learn() that raised finishes (and surfaces) first
        if self._current is None:
            self._current = self.iteration if self.iteration is not None else self.repository.next_iteration()
        total = int(self.locals.get("total_timesteps", self.model.num_timesteps))
        remaining = max(total - self.model.num_timesteps, 0)
        windows = 1 if self.iteration_timesteps is None else max(1, math.ceil(remaining / self.iteration_timesteps))
        # Refuse before any training time is spent (SB3 runs this before the first rollout).
        self.repository.ensure_free(range(self._current, self._current + windows), self.overwrite)
        self._begin_window(self.model.num_timesteps)

    def _begin_window(self, start: int) -> None:
        self._window_start = start
        self._window_end = None if self.iteration_timesteps is None else start + self.iteration_timesteps
        self._next_eval = start + self.eval_freq
        self._best: _Snapshot | None = None
        self._n_evals = 0
        self._n_nan = 0
        self._n_below = 0
        self._episodes: list[dict[str, float]] = []
        self._last_metrics: dict[str, Any] = {}
        self._window_open = True

    def _on_step(self) -> bool:
        if self.eval_env is None:
            for info in self.locals.get("infos", ()):
                ep = info.get("episode") if isinstance(info, dict) else None
                if ep is not None:
                    self._episodes.append(ep)
        if self.num_timesteps >= self._next_eval:
            if self._evaluate():
                while self._next_eval <= self.num_timesteps:
                    self._next_eval += self.eval_freq
        if self._window_end is not None and self.num_timesteps >= self._window_end:
            end = self._window_end
            self._boundary()
            self._begin_window(end)
        return True

    def _on_training_end(self) -> None:
        self._close_window()
        self.wait()  # async: training ends once the last iteration is durable; its errors surface here

    def _close_window(self) -> None:
        # Idempotent: launchers may call this twice; an empty window makes no iteration.
        if not self._window_open:
            return
        if self.iteration_timesteps is not None and self.num_timesteps <= self._window_start:
            self._window_open = False
            return
        self._boundary()

    # -- evaluation ---------------------------------------------------------------------------------
    def _run_evaluation(self) -> dict[str, Any] | None:
        if self.evaluator is not None:
            env = self.eval_env
            self._sync_normalization(env)
            return dict(self.evaluator(self.model, env))
        if self._eval_vec_env is not None:
            self._sync_normalization(self._eval_vec_env)
            rewards, lengths = cast(
                "tuple[list[float], list[int]]",
                evaluate_policy(
                    self.model,
                    self._eval_vec_env,
                    n_eval_episodes=self.n_eval_episodes,
                    deterministic=self.deterministic,
                    return_episode_rewards=True,
                    warn=False,
                ),
            )
            return {
                "mean_reward": float(np.mean(rewards)),
                "std_reward": float(np.std(rewards)),
                "mean_ep_length": float(np.mean(lengths)),
                "n_episodes": len(rewards),
            }
        if not self._episodes:
            return None
        ep_rewards = [float(ep["r"]) for ep in self._episodes]
        ep_lengths = [float(ep["l"]) for ep in self._episodes]
        self._episodes = []
        return {
            "mean_reward": float(np.mean(ep_rewards)),
            "std_reward": float(np.std(ep_rewards)),
            "mean_ep_length": float(np.mean(ep_lengths)),
            "n_episodes": len(ep_rewards),
        }

    def _sync_normalization(self, eval_env: Any) -> None:
        train = self.model.get_vec_normalize_env()
        if train is not None and isinstance(eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, eval_env)

    def _score(self, metrics: Mapping[str, Any]) -> float | None:
        if not _has_key(metrics, self.monitor):
            raise CheckpointError(
                f"monitor {self.monitor!r} is not in the evaluation metrics (keys: {sorted(metrics)}); "
                "set monitor= to one of them"
            )
        raw = get_metric(metrics, self.monitor)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, float, np.number))):
            raise CheckpointError(f"monitor {self.monitor!r} is not numeric: {raw!r}")
        return as_score(raw)

    def _accepts(self, score: float, metrics: Mapping[str, Any]) -> bool:
        if self.min_score is None:
            return True
        if callable(self.min_score):
            return bool(self.min_score(metrics))
        threshold = float(self.min_score)
        return score >= threshold if self.mode == "max" else score <= threshold

    def _better(self, score: float) -> bool:
        if self._best is None:
            return True
        return score > self._best.score if self.mode == "max" else score < self._best.score

    def _evaluate(self) -> bool:
        """Evaluate now; keep a snapshot if it is the window's best. False when no data was available."""
        metrics = self._run_evaluation()
        if metrics is None:
            return False
        self._n_evals += 1
        self._last_metrics = metrics
        score = self._score(metrics)
        self.logger.record("checkpoint/eval_score", float("nan") if score is None else score)
        if score is None:
            self._n_nan += 1
        elif not self._accepts(score, metrics):
            self._n_below += 1
        elif self._better(score):
            self._best = _Snapshot(
                score=score,
                metrics=metrics,
                model=self._snapshot_model(),
                vecnormalize=self._snapshot_vecnormalize(),
                timesteps=self.num_timesteps,
                evaluation=self._n_evals,
            )
        if self.verbose >= 2:
            print(f"sb3-iter-ckpt: eval at {self.num_timesteps} timesteps: {self.monitor}={score}")
        return True

    def _snapshot_model(self) -> ModelSnapshot:
        # A copy of what model.save() would write now; the zip is only built at commit.
        return ModelSnapshot.capture(self.model)

    def _snapshot_vecnormalize(self) -> bytes | None:
        vn = self.model.get_vec_normalize_env() if self.save_vecnormalize else None
        return None if vn is None else pickle.dumps(vn)

    # -- boundary -------------------------------------------------------------------------------------
    def _boundary(self) -> None:
        self._window_open = False
        if self._n_evals == 0:
            self._evaluate()  # nothing measured yet in this window: measure now
        assert self._current is not None
        iteration = self._current
        self._current += 1
        if self.async_commit:
            self._submit(iteration)
            return
        ck = self._commit(iteration)
        if ck is not None:
            self.committed.append(ck)
            self._after_commit(ck)

    def _reason(self) -> str:
        if self._n_evals == 0:
            return "no_evaluation"
        if self._n_below > 0:
            return "below_min_score"
        return "nan_metric"

    def _extra(self, iteration: int) -> dict[str, Any]:
        policy = getattr(self.model, "policy", None)
        min_score = self.min_score
        extra: dict[str, Any] = {
            "selection": {
                "monitor": self.monitor,
                "mode": self.mode,
                "min_score": _qualname(min_score) if callable(min_score) else min_score,
                "score": None if self._best is None else self._best.score,
            },
            "algorithm": _qualname(type(self.model)),
            "policy_class": _qualname(type(policy)) if policy is not None else None,
            "n_evaluations": self._n_evals,
            "n_nan_evaluations": self._n_nan,
            "n_below_min_score": self._n_below,
            "n_envs": self.model.n_envs,
            "window_timesteps": [self._window_start, self.num_timesteps],
            "evaluation": {
                "source": "evaluator" if self.evaluator else ("eval_env" if self.eval_env else "training_episodes"),
                "eval_freq": self.eval_freq,
                "n_eval_episodes": self.n_eval_episodes,
                "deterministic": self.deterministic,
            },
        }
        meta = self.metadata(iteration) if callable(self.metadata) else self.metadata
        if meta:
            extra["metadata"] = dict(meta)
        return extra

    def _prepare(self, iteration: int, copy_state: bool = False) -> _Pending:
        """What committing ``iteration`` needs, taken now; ``copy_state``: copied for a later write."""
        best = self._best
        replay = None
        if best is not None and self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            if copy_state:
                from stable_baselines3.common.save_util import save_to_pkl

                buffer = copy_replay_buffer(cast("OffPolicyAlgorithm", self.model).replay_buffer)
                replay = lambda f: save_to_pkl(f, buffer)  # noqa: E731 - what model.save_replay_buffer writes
            else:
                model = cast("OffPolicyAlgorithm", self.model)
                replay = lambda f: model.save_replay_buffer(f)  # noqa: E731
        return _Pending(iteration, best, self._extra(iteration), replay, dict(self._last_metrics), self._reason())

    def _commit(self, iteration: int) -> Checkpoint | None:
        p = self._prepare(iteration)
        try:
            return self._write(p)
        except CheckpointExistsError:
            raise  # another writer owns this iteration: a conflict, not a fault to ride out
        except (CheckpointError, OSError) as exc:
            return self._commit_failed(p, exc)

    def _write(self, p: _Pending) -> Checkpoint:
        if p.best is None:
            # A placeholder keeps the last evaluation's metrics, so the analysis still sees them.
            return self.repository.commit(
                p.iteration, metrics=p.last_metrics, reason=p.reason, extra=p.extra, overwrite=self.overwrite
            )
        best = p.best
        return self.repository.commit(
            p.iteration,
            metrics=best.metrics,
            model=best.model,
            vecnormalize=best.vecnormalize,
            replay_buffer=p.replay,
            timesteps=best.timesteps,
            extra=p.extra,
            overwrite=self.overwrite,
        )

    def _commit_failed(self, p: _Pending, exc: BaseException) -> Checkpoint | None:
        iteration, best, extra = p.iteration, p.best, p.extra
        if self.on_error == "raise":
            raise exc
        self.errors.append(exc)
        warnings.warn(f"iteration {iteration} could not be committed, training goes on: {exc}", stacklevel=3)
        try:
            extra["error"] = str(exc)
            return self.repository.commit(
                iteration,
                metrics=best.metrics if best else p.last_metrics,
                reason="save_failed",
                extra=extra,
                overwrite=self.overwrite,
            )
        except (CheckpointError, OSError) as exc2:
            self.errors.append(exc2)
            warnings.warn(f"not even a placeholder for iteration {iteration} could be written: {exc2}", stacklevel=3)
            return None

    # -- asynchronous commit (async_commit=True) -------------------------------------------------------
    def _submit(self, iteration: int) -> None:
        p = self._prepare(iteration, copy_state=True)
        if self._writer is None:
            self._writer = AsyncWriter(max_pending=1)
        # One write pending at most, so this boundary waits for the previous one anyway: wait before
        # surfacing, so its error surfaces here however slow the disk (not one iteration later).
        self._writer.wait()
        self._surface()
        self._writer.submit(lambda: self._background_commit(p), label=p)

    def _background_commit(self, p: _Pending) -> tuple[Checkpoint, BaseException | None]:
        """In the writer thread: file I/O only (commit, then retention and summaries)."""
        ck = self._write(p)
        try:
            self._housekeeping()
        except (CheckpointError, OSError) as exc:
            return ck, exc
        return ck, None

    def _surface(self) -> None:
        """In the training thread: results and errors of finished background commits, in order."""
        if self._writer is None:
            return
        fatal: BaseException | None = None
        for job in self._writer.collect():
            p: _Pending = job.label
            try:
                if job.error is None:
                    ck, after = job.result
                else:
                    exc = job.error
                    if isinstance(exc, CheckpointExistsError) or not isinstance(exc, (CheckpointError, OSError)):
                        raise exc
                    self._writer.wait()  # the repository is used from this thread now
                    ck, after = self._commit_failed(p, exc), "now"
                    if ck is None:
                        continue
                self.committed.append(ck)
                self._after_commit(ck, after)
            except BaseException as exc:  # keep handling the other jobs; the first error is raised
                fatal = fatal or exc
        if fatal is not None:
            raise fatal

    def wait(self) -> None:
        """Wait for background commits (``async_commit``) and surface their results and errors."""
        if self._writer is not None:
            self._writer.wait()
        self._surface()

    close = wait

    def _housekeeping(self) -> None:
        # Without retention=, a repository subclass's retention_policy() hook still applies.
        if self.retention is not None or self.repository.retention_policy() is not None:
            self.repository.prune(self.retention, monitor=self.monitor, mode=self.mode)
        self.repository.refresh(self.monitor, self.mode)

    def _after_commit(self, ck: Checkpoint, housekeeping: BaseException | str | None = "now") -> None:
        """Only once the iteration is durable: retention, best link, summaries, logging.

        ``housekeeping``: ``"now"`` to run retention and summaries here; None when the writer thread
        already did; the exception it met there.
        """
        try:
            if isinstance(housekeeping, BaseException):
                raise housekeeping
            if housekeeping == "now":
                self._housekeeping()
        except (CheckpointError, OSError) as exc:
            if self.on_error == "raise":
                raise
            self.errors.append(exc)
            warnings.warn(f"after committing iteration {ck.iteration}: {exc}", stacklevel=2)
        self.logger.record("checkpoint/iteration", ck.iteration)
        self.logger.record("checkpoint/has_model", int(ck.has_model))
        self.logger.record("checkpoint/n_evaluations", ck.record.get("n_evaluations", self._n_evals))
        score = ck.score(self.monitor)
        if score is not None:
            self.logger.record("checkpoint/score", score)
        if self.verbose >= 1:
            what = f"{self.monitor}={score}" if ck.has_model else f"placeholder ({ck.reason})"
            print(f"sb3-iter-ckpt: iteration {ck.iteration}: {what} -> {self.repository.checkpoints_dir}")


def _has_key(metrics: Mapping[str, Any], key: str) -> bool:
    if key in metrics:
        return True
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
