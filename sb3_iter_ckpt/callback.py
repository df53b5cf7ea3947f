"""``IterationCheckpointCallback``: SB3 lifecycle only.

It decides when to evaluate, keeps the iteration's best snapshot in memory, and at each
iteration boundary prepares its commit and hands it to a ``Committer`` (``committer.py``: the
repository commit, the error policy, the background thread of ``async_commit``). Its settings are
checked by the value objects that hold them (``SelectionRule``, ``EvaluationOptions``,
``CommitOptions``). It does no file I/O itself.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from sb3_iter_ckpt.capture.committer import Committer, PreparedCommit, WindowBest
from sb3_iter_ckpt.capture.snapshot import ModelSnapshot, copy_replay_buffer
from sb3_iter_ckpt.common.options import CommitOptions, EvaluationOptions
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.selection import MinScore, SelectionRule
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.repository import CheckpointRepository, _check_iteration, trade_forward

if TYPE_CHECKING:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    from sb3_iter_ckpt.retention import RetentionPolicy

Evaluator = Callable[[Any, Any], Mapping[str, Any]]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _selection(rule: SelectionRule | None, monitor: str, mode: str, min_score: MinScore) -> SelectionRule:
    if rule is None:
        return SelectionRule(monitor, mode, min_score)  # type: ignore[arg-type]
    if (monitor, mode, min_score) != ("mean_reward", "max", None):
        raise CheckpointError("give either selection= or monitor=/mode=/min_score=, not both")
    return rule


def _episode_stats(rewards: list[float], lengths: list[float] | list[int]) -> dict[str, Any]:
    return {
        "mean_reward": float(np.mean(rewards)),
        "std_reward": float(np.std(rewards)),
        "mean_ep_length": float(np.mean(lengths)),
        "n_episodes": len(rewards),
    }


def _trade_committed(
    repository: CheckpointRepository, ck: Checkpoint, test_env: Any, on_error: str, errors: list[BaseException]
) -> None:
    """The callback's forward test: ``ck``'s kept model trades ``test_env`` (or ``test_env(iteration)``) and
    the result is committed (``trade_forward``); a failure follows ``on_error``."""
    try:
        env = test_env(ck.iteration) if callable(test_env) else test_env
        if hasattr(env, "reset") or hasattr(env, "env"):
            trade_forward(repository, ck.iteration, env)
        else:
            raise CheckpointError(f"test_env gave {type(env).__name__}, not an env or a ForwardEnv")
    except (CheckpointError, OSError) as exc:
        if on_error == "raise":
            raise
        errors.append(exc)
        warnings.warn(
            f"iteration {ck.iteration}'s forward test on test_env failed, training goes on: {exc}", stacklevel=3
        )


class IterationCheckpointCallback(BaseCallback):
    """Keep the best model of every walk-forward iteration, crash-safely.

    Evaluates every ``eval_freq`` timesteps, keeps the best snapshot of the current iteration in
    memory, and at the iteration boundary (the end of ``learn()``, or every ``iteration_timesteps``)
    commits it with its metrics to a ``CheckpointRepository``. An iteration where nothing qualified
    gets a placeholder record with a reason.

    :param repository: A ``CheckpointRepository`` or a path to one (``results/{experiment_id}``).
    :param iteration: Number of the first iteration this callback writes (refused before training when
        taken, unless ``overwrite``); None: automatic numbering, the next free one, settled at each commit:
        when another writer takes that number meanwhile, the commit takes the next free one instead.
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
    :param selection: A ready ``SelectionRule`` instead of ``monitor``, ``mode`` and ``min_score``.
    :param test_env: The forward (out-of-sample) test: once an iteration is committed, its kept model trades
        this env once, deterministically, and the forward result is committed beside the record
        (``sb3_iter_ckpt.trade_forward``): a gymnasium env, a ``sb3_iter_ckpt.forward.ForwardEnv``
        (with the dates, prices and ``StepReader`` the env does not give), or ``callable(iteration)`` returning
        either. A placeholder iteration is not traded. A failure follows ``on_error``.
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
        min_score: MinScore = None,
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
        selection: SelectionRule | None = None,
        test_env: Any = None,
    ) -> None:
        super().__init__(verbose=verbose)
        # Every setting is checked by the value object that holds it, before anything is opened.
        self.selection = _selection(selection, monitor, mode, min_score)
        self.evaluation = EvaluationOptions(eval_freq, n_eval_episodes, deterministic, iteration_timesteps)
        self.commit_options = CommitOptions(
            on_error, async_commit, overwrite, retention, save_vecnormalize, save_replay_buffer
        )
        self.repository = (
            repository if isinstance(repository, CheckpointRepository) else CheckpointRepository(repository)
        )
        # Checked here like every other argument, not first at learn().
        self.iteration = None if iteration is None else _check_iteration(iteration)
        # A string is a gymnasium env id, so YAML configs (RL Zoo) can name a validation env.
        self.eval_env = gym.make(eval_env) if isinstance(eval_env, str) else eval_env
        self.evaluator = evaluator
        self.metadata = metadata
        self.test_env = test_env
        self._committer = Committer(
            self.repository,
            self.commit_options,
            self.selection,
            next_free=self.iteration is None,
            on_committed=self._on_committed,
        )
        #: Checkpoints committed by this callback, in order.
        self.committed: list[Checkpoint] = self._committer.committed
        #: Errors met at boundaries (with ``on_error="warn"``).
        self.errors: list[BaseException] = self._committer.errors
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
        if self.iteration is None:
            # Automatic numbering: a guess here, settled at each commit (next_free), where another writer
            # on the same repository that took this number meanwhile makes ours the next free one.
            nxt = self.repository.next_iteration()
            self._current = nxt if self._current is None else max(self._current, nxt)
            self.repository.ensure_free(())  # no number to check: a signed repository without its key, refused now
        else:
            if self._current is None:
                self._current = self.iteration
            total = int(self.locals.get("total_timesteps", self.model.num_timesteps))
            remaining = max(total - self.model.num_timesteps, 0)
            step = self.evaluation.iteration_timesteps
            windows = 1 if step is None else max(1, math.ceil(remaining / step))
            # Explicit numbers: refused before any training time is spent (SB3 runs this before the first rollout).
            self.repository.ensure_free(range(self._current, self._current + windows), self.commit_options.overwrite)
        self._begin_window(self.model.num_timesteps)

    def _begin_window(self, start: int) -> None:
        step = self.evaluation.iteration_timesteps
        self._window_start = start
        self._window_end = None if step is None else start + step
        self._next_eval = start + self.evaluation.eval_freq
        self._best: WindowBest | None = None
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
                    self._next_eval += self.evaluation.eval_freq
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
        if self.evaluation.iteration_timesteps is not None and self.num_timesteps <= self._window_start:
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
                    n_eval_episodes=self.evaluation.n_eval_episodes,
                    deterministic=self.evaluation.deterministic,
                    return_episode_rewards=True,
                    warn=False,
                ),
            )
            return _episode_stats(rewards, lengths)
        if not self._episodes:
            return None
        episodes, self._episodes = self._episodes, []
        return _episode_stats([float(ep["r"]) for ep in episodes], [float(ep["l"]) for ep in episodes])

    def _sync_normalization(self, eval_env: Any) -> None:
        train = self.model.get_vec_normalize_env()
        if train is not None and isinstance(eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, eval_env)

    def _evaluate(self) -> bool:
        """Evaluate now; keep a snapshot if it is the window's best. False when no data was available."""
        metrics = self._run_evaluation()
        if metrics is None:
            return False
        self._n_evals += 1
        self._last_metrics = metrics
        rule = self.selection
        score = rule.strict_score(metrics)
        self.logger.record("checkpoint/eval_score", float("nan") if score is None else score)
        if score is None:
            self._n_nan += 1
        elif not rule.accepts(score, metrics):
            self._n_below += 1
        elif rule.better(score, None if self._best is None else self._best.score):
            self._best = WindowBest(
                score=score,
                metrics=metrics,
                model=self._snapshot_model(),
                vecnormalize=self._snapshot_vecnormalize(),
                timesteps=self.num_timesteps,
                evaluation=self._n_evals,
            )
        if self.verbose >= 2:
            print(f"sb3-iter-ckpt: eval at {self.num_timesteps} timesteps: {rule.monitor}={score}")
        return True

    def _snapshot_model(self) -> ModelSnapshot:
        # A copy of what model.save() would write now; the zip is only built at commit.
        return ModelSnapshot.capture(self.model)

    def _snapshot_vecnormalize(self) -> bytes | None:
        vn = self.model.get_vec_normalize_env() if self.commit_options.save_vecnormalize else None
        return None if vn is None else pickle.dumps(vn)

    # -- boundary -------------------------------------------------------------------------------------
    def _boundary(self) -> None:
        self._window_open = False
        if self._n_evals == 0:
            self._evaluate()  # nothing measured yet in this window: measure now
        assert self._current is not None
        iteration = self._current
        self._current += 1
        # Finished background commits first, so that their copies are freed here, in this thread, before this
        # boundary copies the replay buffer again: the copy then reuses that memory instead of page-faulting
        # on fresh pages (benchmark 4: 13 ms instead of 30 ms blocked at 10^6 transitions).
        self._committer.surface()
        self._committer.commit(self._prepare(iteration))

    def _reason(self) -> str:
        if self._n_evals == 0:
            return "no_evaluation"
        if self._n_below > 0:
            return "below_min_score"
        return "nan_metric"

    def _extra(self, iteration: int) -> dict[str, Any]:
        policy = getattr(self.model, "policy", None)
        evaluation = self.evaluation
        extra: dict[str, Any] = {
            "selection": {**self.selection.to_record(), "score": None if self._best is None else self._best.score},
            "algorithm": _qualname(type(self.model)),
            "policy_class": _qualname(type(policy)) if policy is not None else None,
            "n_evaluations": self._n_evals,
            "n_nan_evaluations": self._n_nan,
            "n_below_min_score": self._n_below,
            "n_envs": self.model.n_envs,
            "window_timesteps": [self._window_start, self.num_timesteps],
            "evaluation": {
                "source": "evaluator" if self.evaluator else ("eval_env" if self.eval_env else "training_episodes"),
                "eval_freq": evaluation.eval_freq,
                "n_eval_episodes": evaluation.n_eval_episodes,
                "deterministic": evaluation.deterministic,
            },
        }
        meta = self.metadata(iteration) if callable(self.metadata) else self.metadata
        if meta:
            extra["metadata"] = dict(meta)
        return extra

    def _prepare(self, iteration: int) -> PreparedCommit:
        """What committing ``iteration`` needs, taken now (with ``async_commit``, copied for a later write)."""
        best, options = self._best, self.commit_options
        replay = None
        if best is not None and options.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            if options.async_commit:
                from stable_baselines3.common.save_util import save_to_pkl

                buffer = copy_replay_buffer(cast("OffPolicyAlgorithm", self.model).replay_buffer)
                replay = lambda f: save_to_pkl(f, buffer)  # noqa: E731 - what model.save_replay_buffer writes
            else:
                model = cast("OffPolicyAlgorithm", self.model)
                replay = lambda f: model.save_replay_buffer(f)  # noqa: E731
        return PreparedCommit(iteration, best, self._extra(iteration), replay, dict(self._last_metrics), self._reason())

    def wait(self) -> None:
        """Wait for background commits (``async_commit``) and surface their results and errors."""
        self._committer.wait()

    close = wait

    def _on_committed(self, ck: Checkpoint) -> None:
        """Once the iteration is durable (and housekept): numbering, logging."""
        if self._current is not None and ck.iteration >= self._current:
            self._current = ck.iteration + 1  # automatic numbering moved past a number another writer took
        if self.test_env is not None and ck.has_model:
            _trade_committed(self.repository, ck, self.test_env, self.commit_options.on_error, self.errors)
        monitor = self.selection.monitor
        self.logger.record("checkpoint/iteration", ck.iteration)
        self.logger.record("checkpoint/has_model", int(ck.has_model))
        self.logger.record("checkpoint/n_evaluations", ck.record.get("n_evaluations", self._n_evals))
        score = ck.score(monitor)
        if score is not None:
            self.logger.record("checkpoint/score", score)
        if self.verbose >= 1:
            what = f"{monitor}={score}" if ck.has_model else f"placeholder ({ck.reason})"
            print(f"sb3-iter-ckpt: iteration {ck.iteration}: {what} -> {self.repository.checkpoints_dir}")
