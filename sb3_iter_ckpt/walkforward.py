"""``WalkForwardRunner``: train on each window, keep each iteration's best by validation, move on.

One call (or ``sb3-iter-ckpt walk-forward``) replaces the hand-written loop of the seed's script;
``IterationCheckpointCallback`` does the checkpointing of every window.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sb3_iter_ckpt.callback import IterationCheckpointCallback
from sb3_iter_ckpt.errors import CheckpointError, ConfigMismatchError
from sb3_iter_ckpt.record import Checkpoint, to_jsonable
from sb3_iter_ckpt.repository import CheckpointRepository
from sb3_iter_ckpt.splitter import WalkForwardSplitter, Window

#: Name of the run description the runner keeps at the repository root (resume gate).
RUN_FILE = "walk_forward.json"

#: Algorithms the built-in discrete-action trading env supports, by short name.
ALGORITHMS = {"ppo": "stable_baselines3.PPO", "a2c": "stable_baselines3.A2C", "dqn": "stable_baselines3.DQN"}

MakeEnv = Callable[[Any, int], Any]
MakeModel = Callable[[Any, int], Any]


def _algo_class(name: str) -> Any:
    import importlib

    path = ALGORITHMS.get(name.lower(), name)
    module, _, cls = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"unknown algorithm {name!r}; use one of {sorted(ALGORITHMS)} or an import path") from exc


def _name_of(fn: Any) -> str | None:
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return f"partial({_name_of(fn.func)}, {sorted(fn.keywords)})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


@dataclass
class WalkForwardResult:
    """What ``WalkForwardRunner.run`` did.

    :param checkpoints: The checkpoint of every window in the run, in order (skipped ones included).
    :param trained: Iterations trained by this call.
    :param skipped: Iterations already committed by an earlier run with the same configuration.
    :param best: The overall best checkpoint, or None.
    """

    checkpoints: list[Checkpoint] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    best: Checkpoint | None = None


class WalkForwardRunner:
    """Walk-forward optimization of an SB3 agent with every iteration's best model kept.

    For each window of ``splitter`` over ``prices``: build the training env on the train part and
    the validation env on the validation part (with ``window_size`` prices of history before it),
    train ``total_timesteps`` with an ``IterationCheckpointCallback`` that evaluates the trading
    metrics on validation (and on train, and both combined) and keeps the best snapshot by
    ``monitor``; then the next window.

    :param prices: Close prices: a pandas Series (a DatetimeIndex gives windows dates) or an array.
    :param splitter: The ``WalkForwardSplitter``.
    :param repository: A ``CheckpointRepository`` or its path (``results/{experiment_id}``).
    :param total_timesteps: Training timesteps per iteration.
    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or an import path; used by the default ``make_model``.
    :param algo_kwargs: Hyperparameters for the algorithm (recorded in the fingerprint).
    :param make_env: ``callable(prices_segment, seed) -> gym.Env``; default: the built-in ``TradingEnv``.
    :param make_model: ``callable(vec_env, seed) -> model``;
        default: ``algo("MlpPolicy", env, seed=seed, **algo_kwargs)``.
    :param env_kwargs: Arguments of the built-in ``TradingEnv`` (``window_size``, ``transaction_cost``...).
    :param seed: Base seed; iteration ``i`` uses ``seed + i`` (deterministic per iteration).
    :param eval_freq: Evaluate every this many timesteps (default: ``total_timesteps // 5``).
    :param monitor: Metric that picks the best snapshot (default ``"validation.sharpe"``).
    :param mode: ``"max"`` or ``"min"``.
    :param min_score: Acceptance rule passed to the callback.
    :param warm_start: Start each iteration from the previous iteration's model (recorded as lineage).
    :param periods_per_year: Annualisation of the trading metrics (stored in each record).
    :param retention: Optional retention policy applied after each commit.
    :param progress: Show a progress bar over iterations.
    :param verbose: Verbosity level: 0 none, 1 a line per iteration.
    """

    def __init__(
        self,
        prices: Any,
        splitter: WalkForwardSplitter,
        repository: CheckpointRepository | str | Any,
        total_timesteps: int,
        *,
        algo: str = "ppo",
        algo_kwargs: Mapping[str, Any] | None = None,
        make_env: MakeEnv | None = None,
        make_model: MakeModel | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
        eval_freq: int | None = None,
        monitor: str = "validation.sharpe",
        mode: str = "max",
        min_score: Any = None,
        warm_start: bool = False,
        periods_per_year: float = 252,
        retention: Any = None,
        progress: bool = True,
        verbose: int = 0,
    ) -> None:
        if int(total_timesteps) <= 0:
            raise CheckpointError(f"total_timesteps must be positive, got {total_timesteps}")
        self.prices = prices
        self.splitter = splitter
        self.repository = (
            repository if isinstance(repository, CheckpointRepository) else CheckpointRepository(repository)
        )
        self.total_timesteps = int(total_timesteps)
        self.algo = algo
        self.algo_kwargs = dict(algo_kwargs or {})
        self.make_env = make_env
        self.make_model = make_model
        self.env_kwargs = dict(env_kwargs or {})
        self.env_kwargs.setdefault("periods_per_year", periods_per_year)
        self.seed = int(seed)
        self.eval_freq = int(eval_freq) if eval_freq else max(1, self.total_timesteps // 5)
        self.monitor = monitor
        self.mode = mode
        self.min_score = min_score
        self.warm_start = warm_start
        self.periods_per_year = periods_per_year
        self.retention = retention
        self.progress = progress
        self.verbose = verbose
        self._values = np.asarray(getattr(prices, "to_numpy", lambda: prices)(), dtype=np.float64)
        if splitter.n_windows(len(self._values)) == 0:
            raise CheckpointError(
                f"no window fits in {len(self._values)} prices: train_size + gap + val_size = {splitter.min_length}"
            )
        self.windows: list[Window] = list(splitter.split(prices))

    # -- configuration fingerprint ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything that makes two runs comparable (the resume gate compares it)."""
        from sb3_iter_ckpt.data import data_fingerprint

        return to_jsonable(
            {
                "splitter": self.splitter.to_dict(),
                "data_sha256": data_fingerprint(self.prices),
                "n_prices": len(self._values),
                "algo": self.algo if self.make_model is None else _name_of(self.make_model),
                "algo_kwargs": self.algo_kwargs,
                "make_env": _name_of(self.make_env),
                "env_kwargs": self.env_kwargs,
                "seed": self.seed,
                "total_timesteps": self.total_timesteps,
                "eval_freq": self.eval_freq,
                "monitor": self.monitor,
                "mode": self.mode,
                "min_score": _name_of(self.min_score) if callable(self.min_score) else self.min_score,
                "warm_start": self.warm_start,
                "periods_per_year": self.periods_per_year,
            }
        )

    def fingerprint(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def _check_resume(self) -> None:
        config, fp = self.config(), self.fingerprint()
        previous = self.repository.read_metadata(RUN_FILE)
        if previous is None:
            foreign = [
                c.iteration for c in self.repository.list() if c.record.get("metadata", {}).get("fingerprint") != fp
            ]
            if foreign:
                raise ConfigMismatchError(
                    f"{self.repository.root} already holds iterations {foreign[:5]} not written by this walk-forward "
                    "configuration; use another --experiment-id (or results folder)"
                )
            self.repository.write_metadata(RUN_FILE, {"fingerprint": fp, "config": config})
            return
        if previous.get("fingerprint") != fp:
            old = previous.get("config") or {}
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ConfigMismatchError(
                f"{self.repository.root} was written by a different walk-forward configuration "
                f"(changed: {', '.join(changed) or 'unknown'}); resume needs the same data, splitter, algorithm, "
                "hyperparameters and seed. Use another --experiment-id to start afresh."
            )

    # -- envs and models ------------------------------------------------------------------------------------
    def _segment(self, start: int, stop: int) -> Any:
        return self.prices.iloc[start:stop] if hasattr(self.prices, "iloc") else self.prices[start:stop]

    def _env(self, segment: Any, seed: int) -> Any:
        if self.make_env is not None:
            return self.make_env(segment, seed)
        from sb3_iter_ckpt.envs.trading import TradingEnv

        return TradingEnv(segment, **self.env_kwargs)

    def _history(self) -> int:
        return int(self.env_kwargs.get("window_size", 10))

    def _model(self, venv: Any, seed: int, previous: Checkpoint | None) -> Any:
        if previous is not None:
            return self.repository.load(previous.iteration, env=venv, seed=seed)
        if self.make_model is not None:
            return self.make_model(venv, seed)
        cls = _algo_class(self.algo)
        kwargs = {"device": "cpu", **self.algo_kwargs}
        return cls("MlpPolicy", venv, seed=seed, **kwargs)

    def _evaluator(self, train_env: Any) -> Callable[[Any, Any], dict[str, Any]]:
        from sb3_iter_ckpt.envs.trading import evaluate_trading
        from sb3_iter_ckpt.metrics import trading_metrics

        ppy = self.periods_per_year

        def evaluate(model: Any, val_env: Any) -> dict[str, Any]:
            val = evaluate_trading(model, val_env, periods_per_year=ppy)
            train = evaluate_trading(model, train_env, periods_per_year=ppy)
            returns = list(train_env.unwrapped.episode_returns()) + list(val_env.unwrapped.episode_returns())
            positions = list(train_env.unwrapped.episode_positions()) + list(val_env.unwrapped.episode_positions())
            combined = trading_metrics(returns, positions=positions, periods_per_year=ppy)
            return {"validation": val, "train": train, "combined": combined, "mean_reward": val.get("mean_reward")}

        return evaluate

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, max_iterations: int | None = None) -> WalkForwardResult:
        """Train every window not yet committed; return what was trained, skipped and the best.

        :param max_iterations: Only the first N windows.
        """
        from stable_baselines3.common.env_util import make_vec_env
        from tqdm.auto import tqdm

        self._check_resume()
        windows = self.windows[:max_iterations] if max_iterations else self.windows
        result = WalkForwardResult()
        fp = self.fingerprint()
        history = self._history()
        bar = tqdm(windows, desc="walk-forward", unit="iter", disable=not self.progress)
        previous: Checkpoint | None = None
        for window in bar:
            i = window.iteration
            if self.repository.has(i):
                ck = self.repository.get(i)
                result.skipped.append(i)
                result.checkpoints.append(ck)
                previous = ck if ck.has_model else previous
                continue
            seed = self.seed + i
            train_seg = self._segment(window.train_start, window.train_stop)
            val_seg = self._segment(max(0, window.val_start - history), window.val_stop)
            venv = make_vec_env(lambda s=train_seg, sd=seed: self._env(s, sd), n_envs=1, seed=seed)
            val_env = self._env(val_seg, seed)
            train_eval_env = self._env(train_seg, seed)
            warm = previous if (self.warm_start and previous is not None) else None
            model = self._model(venv, seed, warm)
            metadata = {
                "window": window.to_dict(),
                "fingerprint": fp,
                "seed": seed,
                "periods_per_year": self.periods_per_year,
                "lineage": {"warm_start_from": warm.iteration if warm else None},
            }
            cb = IterationCheckpointCallback(
                self.repository,
                iteration=i,
                eval_env=val_env,
                evaluator=self._evaluator(train_eval_env),
                eval_freq=self.eval_freq,
                monitor=self.monitor,
                mode=self.mode,
                min_score=self.min_score,
                retention=self.retention,
                metadata=metadata,
                verbose=self.verbose,
            )
            model.learn(self.total_timesteps, callback=cb, reset_num_timesteps=True)
            venv.close()
            ck = self.repository.get(i)
            result.trained.append(i)
            result.checkpoints.append(ck)
            if ck.has_model:
                previous = ck
            score = ck.score(self.monitor)
            bar.set_postfix({"iter": i, self.monitor: "-" if score is None else f"{score:.3f}"})
        result.best = self.repository.best(self.monitor, self.mode)
        return result


def run_walk_forward(
    prices: Any,
    splitter: WalkForwardSplitter,
    repository: CheckpointRepository | str | Any,
    total_timesteps: int,
    **kwargs: Any,
) -> WalkForwardResult:
    """Functional form of ``WalkForwardRunner(...).run()``; ``max_iterations`` may be passed here too."""
    max_iterations = kwargs.pop("max_iterations", None)
    return WalkForwardRunner(prices, splitter, repository, total_timesteps, **kwargs).run(max_iterations)


__all__: Sequence[str] = ["ALGORITHMS", "RUN_FILE", "WalkForwardResult", "WalkForwardRunner", "run_walk_forward"]
