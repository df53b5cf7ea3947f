"""The unit of work of one walk-forward window: train it, evaluate it, commit its iteration.

:func:`train_window` takes a :class:`WindowSpec` (plain, picklable data: the window's price
segments, the configuration, a :class:`RepositoryRef` to the repository), builds the envs and the
model, trains with an ``IterationCheckpointCallback`` whose evaluator reports the trading metrics,
and commits the iteration to the repository itself. It runs wherever an executor puts it (this
process, a pool worker, a Ray task; see ``sb3_iter_ckpt.runner.executors``).

A retried or duplicated window is committed exactly once: the record is published create-only, and
:func:`train_window` returns the existing record when its iteration is already committed.

A window with a test (trade) part then has its kept model, loaded back through the repository
(hash-verified, with its VecNormalize statistics), trade that part once (``forward.evaluate_forward``),
and commits the result beside the record (``forward_iter_{i}.json``). An iteration committed without
its forward result (a run killed in between) gets it when the window is submitted again. Nothing of
the forward result reaches selection, retention or a later window: they read the records and models only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.errors import CheckpointExistsError

__all__ = ["RepositoryRef", "WindowSpec", "train_window"]


@dataclass(frozen=True)
class RepositoryRef:
    """How a worker opens the driver's repository: its root, its storage (None: local files), its key."""

    root: str
    storage: Any = None
    signing_key: bytes | None = None

    @classmethod
    def of(cls, repository: Any) -> RepositoryRef:
        """The reference of a ``CheckpointRepository``, through its public ``storage`` and ``signing_key``."""
        storage, key = repository.storage, repository.signing_key
        root = storage.reopen_root()
        if root is not None:  # a worker rebuilds the storage from its root
            return cls(root, None, key)
        return cls(str(repository.root), storage, key)

    def open(self) -> Any:
        from sb3_iter_ckpt.repository import CheckpointRepository

        return CheckpointRepository(self.root, storage=self.storage, signing_key=self.signing_key)


@dataclass
class WindowSpec:
    """Everything one window's training needs, as plain data (no live env, model or repository).

    ``repository`` is a :class:`RepositoryRef` (a worker opens it) or, in this process only, the
    driver's ``CheckpointRepository`` itself. ``options``: the run's settings. ``seed``: this window's
    (the run's seed plus its iteration). ``warm_start_from``: the iteration whose model this one starts
    from (None: a fresh model). ``metadata``: the record's ``metadata`` (window, fingerprint, seed...;
    ``lineage`` is added here). ``env``: environment variables the worker takes over from the driver.
    ``window``: the splitter's window; with a test part, ``test_prices`` are the prices from
    ``test_offset`` (the test part's first row less the env's history) to one past its last row.
    ``candidate``: the candidate this window trains, in a run with candidates (its forward result says so).
    """

    iteration: int
    train_prices: Any
    val_prices: Any
    seed: int
    repository: Any
    metadata: dict[str, Any]
    options: RunOptions
    warm_start_from: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    window: Any = None
    test_prices: Any = None
    test_offset: int = 0
    candidate: str | None = None


def _pin_threads(n: int | None) -> Callable[[], None]:
    if not n:
        return lambda: None
    import torch

    old = torch.get_num_threads()
    if old == n:
        return lambda: None
    torch.set_num_threads(n)
    return lambda: torch.set_num_threads(old)


def _make_env(spec: WindowSpec, segment: Any) -> Any:
    make_env = spec.options.env_factory
    if make_env is not None:
        return make_env(segment, spec.seed)  # a table's slice, every column
    from sb3_iter_ckpt.envs.trading import TradingEnv

    return TradingEnv(_column(segment, spec.options.price_column), **spec.options.trading_env_kwargs)


def _column(segment: Any, column: Any) -> Any:
    """A table's column (the traded price, the benchmark), or the segment itself when it is no table."""
    return segment if column is None or not hasattr(segment, "columns") else segment[column]


def _make_model(spec: WindowSpec, repo: Any, venv: Any) -> Any:
    opts = spec.options
    if spec.warm_start_from is not None:
        return repo.load(spec.warm_start_from, env=venv, seed=spec.seed)
    if opts.make_model is not None:
        return opts.make_model(venv, spec.seed)
    return build_model(opts, venv, spec.seed)


def build_model(opts: RunOptions, venv: Any, seed: int) -> Any:
    """The default model: the run's algorithm with its policy (named, or chosen for the env's observations)."""
    from sb3_iter_ckpt.runner.algorithms import algorithm_class
    from sb3_iter_ckpt.runner.policies import resolve_policy

    cls = algorithm_class(opts.algo)
    policy = resolve_policy(cls, opts.policy, venv.observation_space)
    return cls(policy, venv, seed=seed, **{"device": "cpu", **opts.algo_kwargs})


def _evaluator(train_env: Any, ppy: float, reader: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """Validation, train and both combined, each step read with the run's ``StepReader`` from the env itself."""
    from sb3_iter_ckpt.envs.episode import episode_metrics, run_episode
    from sb3_iter_ckpt.stats.metrics import trading_metrics

    def evaluate(model: Any, val_env: Any) -> dict[str, Any]:
        val_episode = run_episode(model, val_env, reader)
        train_episode = run_episode(model, train_env, reader)
        val, train = episode_metrics([val_episode], ppy), episode_metrics([train_episode], ppy)
        returns = train_episode.returns + val_episode.returns
        positions = None
        if train_episode.positions is not None and val_episode.positions is not None:
            positions = list(train_episode.positions + val_episode.positions)
        combined = trading_metrics(list(returns), positions=positions, periods_per_year=ppy)
        return {"validation": val, "train": train, "combined": combined, "mean_reward": val.get("mean_reward")}

    return evaluate


def _outcome(spec: WindowSpec, repo: Any, status: str, t0: float) -> dict[str, Any]:
    ck = repo.get(spec.iteration)
    return {
        "iteration": spec.iteration,
        "status": status,  # "trained", or "exists": committed by an earlier attempt or another worker
        "record_file": ck.record_file,
        "has_model": ck.has_model,
        "score": ck.score(spec.options.monitor),
        "seconds": time.perf_counter() - t0,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def _forward(spec: WindowSpec, repo: Any) -> None:
    """With a test part: the committed iteration's kept model trades it once; the result is committed."""
    i, w, opts = spec.iteration, spec.window, spec.options
    if spec.test_prices is None or w is None or w.test_start is None or repo.has_forward(i):
        return
    from sb3_iter_ckpt.common.prices import traded_prices
    from sb3_iter_ckpt.forward import trade
    from sb3_iter_ckpt.retention import is_pruned
    from sb3_iter_ckpt.splitter import Window

    ck, off = repo.get(i), spec.test_offset
    prices = traded_prices(spec.test_prices, opts.price_column)  # several columns: their equal-weight portfolio
    benchmark = prices if opts.benchmark_column is None else _column(spec.test_prices, opts.benchmark_column)
    # The test part in the rows of test_prices; the result's rows are shifted back below.
    local = Window(i, 0, 0, 0, 0, test_start=w.test_start - off, test_stop=w.test_stop - off)
    if ck.has_model:
        vecnormalize = functools.partial(repo.load_vecnormalize, i) if "vecnormalize" in ck.artifacts else None
        result = trade.evaluate_forward(
            repo.load(i, device="cpu"),
            prices,
            local,
            iteration=i,
            env_kwargs=opts.trading_env_kwargs,
            vecnormalize=vecnormalize,
            periods_per_year=opts.annualization,
            candidate=spec.candidate,
            make_env=opts.env_factory,
            step_reader=opts.reader,
            history=opts.history,
            seed=spec.seed,
            table=spec.test_prices,
            benchmark=benchmark,
        )
    elif is_pruned(ck):
        return  # its model is gone (pruned by hand): nothing can trade the test part any more
    else:
        result = trade.placeholder_forward(
            prices,
            local,
            iteration=i,
            periods_per_year=opts.annualization,
            candidate=spec.candidate,
            benchmark=benchmark,
        )
    rows = tuple(r + off for r in result.rows)
    repo.commit_forward(dataclasses.replace(result, test_start=w.test_start, test_stop=w.test_stop, rows=rows))


def _retention_after_forward(spec: WindowSpec, repo: Any) -> None:
    """Retention, deferred past the forward evaluation (it must not prune the model before it trades)."""
    rule = spec.options.selection
    if spec.test_prices is not None and spec.options.retention is not None:
        repo.prune(spec.options.retention, monitor=rule.monitor, mode=rule.mode)


def train_window(spec: WindowSpec) -> dict[str, Any]:
    """Train one walk-forward window and commit its iteration; return a small outcome dict.

    Idempotent: when the iteration is already committed (an earlier attempt got that far before its
    worker died, or another worker won a race) nothing is trained and the existing record is reported
    with ``status="exists"``. Torch is pinned to ``spec.options.torch_threads`` threads while it runs.
    """
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_iter_ckpt.callback import IterationCheckpointCallback
    from sb3_iter_ckpt.repository import CheckpointRepository

    t0, opts = time.perf_counter(), spec.options
    for key, value in spec.env.items():
        os.environ[key] = value
    restore = _pin_threads(opts.torch_threads)
    try:
        repo = spec.repository if isinstance(spec.repository, CheckpointRepository) else spec.repository.open()
        if repo.has(spec.iteration):
            _forward(spec, repo)  # a run killed between the commit and its forward evaluation
            return _outcome(spec, repo, "exists", t0)
        seed = spec.seed
        venv = make_vec_env(lambda: _make_env(spec, spec.train_prices), n_envs=1, seed=seed)
        val_env = _make_env(spec, spec.val_prices)
        train_eval_env = _make_env(spec, spec.train_prices)
        model = _make_model(spec, repo, venv)
        metadata = dict(spec.metadata, lineage={"warm_start_from": spec.warm_start_from})
        cb = IterationCheckpointCallback(
            repo,
            iteration=spec.iteration,
            eval_env=val_env,
            evaluator=_evaluator(train_eval_env, opts.annualization, opts.reader),
            eval_freq=opts.eval_freq,
            selection=opts.selection,
            retention=opts.retention if spec.test_prices is None else None,
            metadata=metadata,
            verbose=opts.verbose,
        )
        try:
            model.learn(opts.total_timesteps, callback=cb, reset_num_timesteps=True)
        except CheckpointExistsError:
            if not repo.has(spec.iteration):
                raise
            _forward(spec, repo)
            return _outcome(spec, repo, "exists", t0)  # another attempt committed it first
        finally:
            venv.close()
        _forward(spec, repo)
        _retention_after_forward(spec, repo)
        return _outcome(spec, repo, "trained", t0)
    finally:
        restore()
