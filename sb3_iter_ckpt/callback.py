"""``IterationCheckpointCallback``: SB3 lifecycle only.

It decides when to evaluate, keeps the iteration's best snapshot in memory, and at each
iteration boundary asks the repository to commit it. It does no file I/O itself.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError
from sb3_iter_ckpt.record import Checkpoint, as_score, get_metric
from sb3_iter_ckpt.repository import CheckpointRepository

if TYPE_CHECKING:
    from sb3_iter_ckpt.retention import RetentionPolicy

Evaluator = Callable[[Any, Any], Mapping[str, Any]]


@dataclass
class _Snapshot:
    """The iteration's best so far, held in memory until the boundary."""

    score: float
    metrics: dict[str, Any]
    model: bytes
    vecnormalize: bytes | None
    timesteps: int
    evaluation: int


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
    :param eval_env: Validation environment (``gym.Env`` or ``VecEnv``); None: use the statistics
        of the training episodes finished since the last evaluation.
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
    :param verbose: Verbosity level: 0 no output, 1 a line per iteration, 2 a line per evaluation.
    """

    def __init__(
        self,
        repository: CheckpointRepository | str | Any,
        iteration: int | None = None,
        eval_env: gym.Env | VecEnv | None = None,
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
    ) -> None:
        super().__init__(verbose=verbose)
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
        self.eval_env = eval_env
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
            self._eval_vec_env = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])  # type: ignore

    def _on_training_start(self) -> None:
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
            rewards, lengths = evaluate_policy(
                self.model,
                self._eval_vec_env,
                n_eval_episodes=self.n_eval_episodes,
                deterministic=self.deterministic,
                return_episode_rewards=True,
                warn=False,
            )
            return {
                "mean_reward": float(np.mean(rewards)),
                "std_reward": float(np.std(rewards)),
                "mean_ep_length": float(np.mean(lengths)),
                "n_episodes": len(rewards),
            }
        if not self._episodes:
            return None
        rewards = [float(ep["r"]) for ep in self._episodes]
        lengths = [float(ep["l"]) for ep in self._episodes]
        self._episodes = []
        return {
            "mean_reward": float(np.mean(rewards)),
            "std_reward": float(np.std(rewards)),
            "mean_ep_length": float(np.mean(lengths)),
            "n_episodes": len(rewards),
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

    def _snapshot_model(self) -> bytes:
        buf = io.BytesIO()
        self.model.save(buf)
        return buf.getvalue()

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

    def _commit(self, iteration: int) -> Checkpoint | None:
        best = self._best
        extra = self._extra(iteration)
        try:
            if best is None:
                # A placeholder keeps the last evaluation's metrics, so the analysis still sees them.
                return self.repository.commit(
                    iteration, metrics=self._last_metrics, reason=self._reason(), extra=extra, overwrite=self.overwrite
                )
            replay = None
            if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
                model = self.model
                replay = lambda f: model.save_replay_buffer(f)  # noqa: E731
            return self.repository.commit(
                iteration,
                metrics=best.metrics,
                model=best.model,
                vecnormalize=best.vecnormalize,
                replay_buffer=replay,
                timesteps=best.timesteps,
                extra=extra,
                overwrite=self.overwrite,
            )
        except CheckpointExistsError:
            raise  # another writer owns this iteration: a conflict, not a fault to ride out
        except (CheckpointError, OSError) as exc:
            if self.on_error == "raise":
                raise
            self.errors.append(exc)
            warnings.warn(f"iteration {iteration} could not be committed, training goes on: {exc}", stacklevel=2)
            try:
                extra["error"] = str(exc)
                return self.repository.commit(
                    iteration,
                    metrics=best.metrics if best else self._last_metrics,
                    reason="save_failed",
                    extra=extra,
                    overwrite=self.overwrite,
                )
            except (CheckpointError, OSError) as exc2:
                self.errors.append(exc2)
                warnings.warn(
                    f"not even a placeholder for iteration {iteration} could be written: {exc2}", stacklevel=2
                )
                return None

    def _after_commit(self, ck: Checkpoint) -> None:
        """Only once the iteration is durable: retention, best link, summaries, logging."""
        try:
            if self.retention is not None:
                self.repository.prune(self.retention, monitor=self.monitor, mode=self.mode)
            self.repository.refresh(self.monitor, self.mode)
        except (CheckpointError, OSError) as exc:
            if self.on_error == "raise":
                raise
            self.errors.append(exc)
            warnings.warn(f"after committing iteration {ck.iteration}: {exc}", stacklevel=2)
        self.logger.record("checkpoint/iteration", ck.iteration)
        self.logger.record("checkpoint/has_model", int(ck.has_model))
        self.logger.record("checkpoint/n_evaluations", self._n_evals)
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
