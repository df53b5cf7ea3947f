"""``WalkForwardRunner``: train on each window, keep each iteration's best by validation, move on.

One call (or ``sb3-iter-ckpt walk-forward``) replaces the hand-written loop of the seed's script;
``IterationCheckpointCallback`` does the checkpointing of every window.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sb3_iter_ckpt.common.candidates import Candidate, make_candidates
from sb3_iter_ckpt.common.options import (
    DEFAULT_PERIODS_PER_YEAR,
    PERIODS_PER_YEAR_SOURCES,
    RunOptions,
    config_fingerprint,
)
from sb3_iter_ckpt.common.record import FORWARD_RETURNS, Checkpoint, to_jsonable
from sb3_iter_ckpt.errors import CheckpointError, ConfigMismatchError
from sb3_iter_ckpt.repository import CheckpointRepository
from sb3_iter_ckpt.retention import is_pruned
from sb3_iter_ckpt.runner.algorithms import ALGORITHMS, algorithm_class
from sb3_iter_ckpt.runner.auto import choose_for_runs
from sb3_iter_ckpt.runner.executors import (
    Executor,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    forwarded_env,
    make_executor,
)
from sb3_iter_ckpt.runner.preflight import preflight
from sb3_iter_ckpt.runner.window import RepositoryRef, WindowSpec
from sb3_iter_ckpt.splitter import WalkForwardSplitter, Window

#: Name of the run description the runner keeps at the repository root (resume gate).
RUN_FILE = "walk_forward.json"


@dataclass
class WalkForwardResult:
    """What ``WalkForwardRunner.run`` did.

    :param checkpoints: The checkpoint of every window in the run, in order (skipped ones included).
    :param trained: Iterations trained by this call.
    :param skipped: Iterations already committed by an earlier run with the same configuration.
    :param best: The overall best checkpoint, or None.
    :param outcomes: For each trained iteration, what its worker reported: ``seconds``, ``cpu_seconds`` (the
        worker process's CPU time for the window, all its threads), ``pid``, ``host``, ``status`` (``"exists"``:
        an earlier attempt of the same window had committed it); on Ray also ``node_id``, the Ray node it ran
        on. Not part of the run's fingerprint.
    :param forward: With test parts: the forward report (``CheckpointRepository.forward_report``: the
        stitched out-of-sample curve, its baselines, selection vs forward, DSR, PBO); else None.
    :param forward_reason: Why ``forward`` is None.
    :param candidates: In a run with candidates: each candidate's own result (its repository's
        checkpoints, trained and skipped windows, its forward report), by name; else empty.
    :param annualization: The run's ``periods_per_year`` and where it came from, in words
        (``WalkForwardRunner.annualization``): e.g. ``"252 periods a year, assumed: the prices have no dates ..."``.
    :param executor: Where the windows trained and, for ``"auto"``, why, in one line (the line the run prints at
        its start): e.g. ``"executor: process (2 workers x 1 torch thread: 2 CPUs, 14 windows can train at once,
        2 candidates per window)"``.
    """

    checkpoints: list[Checkpoint] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    best: Checkpoint | None = None
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    forward: dict[str, Any] | None = None
    forward_reason: str | None = None
    candidates: dict[str, WalkForwardResult] = field(default_factory=dict)
    annualization: str | None = None
    executor: str | None = None


class WalkForwardRunner:
    """Walk-forward optimization of an SB3 agent with every iteration's best model kept.

    For each window of ``splitter`` over ``prices``: build the training env on the train part and
    the validation env on the validation part (with ``window_size`` prices of history before it),
    train ``total_timesteps`` with an ``IterationCheckpointCallback`` that evaluates the trading
    metrics on validation (and on train, and both combined) and keeps the best snapshot by
    ``monitor``; then the next window.

    :param prices: Close prices: a pandas Series (a DatetimeIndex gives windows dates) or an array; or a table,
        a DataFrame with a DatetimeIndex (or a ``date`` column) and any feature columns: ``price_column`` names
        the traded price (default: the column named close), ``benchmark_column`` buy-and-hold's, and
        ``make_env`` receives the table's slices (with their history rows). The fingerprint covers the table.
    :param splitter: The ``WalkForwardSplitter``.
    :param repository: A ``CheckpointRepository`` or its path (``results/{experiment_id}``).
    :param total_timesteps: Training timesteps per iteration.
    :param settings: The run's other settings, as keyword arguments of
        :class:`~sb3_iter_ckpt.common.options.RunOptions`: ``algo``, ``algo_kwargs``, ``make_env``, ``make_model``,
        ``env_kwargs``, ``seed``, ``eval_freq``, ``monitor``, ``mode``, ``min_score``, ``warm_start``, ``policy``,
        ``periods_per_year``, ``retention``, ``verbose``, ``torch_threads``, ``candidates`` (see there). With
        ``candidates``, each trains every window into ``candidates/<name>/`` (in parallel on the executor) and
        the root keeps a copy of each window's chosen one (``sb3_iter_ckpt.runner.ensemble``). With a test part in the
        splitter (``WalkForwardSplitter(..., test_size=M)``), each committed iteration's kept model trades its
        test part once; the results are stitched into ``forward_returns.csv`` at the end.
    :param options: A ready :class:`~sb3_iter_ckpt.common.options.RunOptions` instead of ``total_timesteps`` and
        ``settings`` (both may still be given: they replace its fields).
    :param progress: Show a progress bar over iterations.
    :param executor: Where windows train: ``"auto"`` (the default: a process pool when more than one CPU is
        available and more than one window can train at once, else this process; see
        ``sb3_iter_ckpt.runner.auto``), ``"sequential"`` (this process), ``"process"`` (a local process pool of
        ``n_jobs`` workers), ``"ray"`` (Ray tasks, ``[ray]`` extra) or an
        ``sb3_iter_ckpt.runner.executors.Executor`` (e.g. ``RayExecutor(address=...)``; not closed by the runner).
        Each worker commits its own iteration; with ``warm_start`` the windows still run one after another.
        The run prints which executor it chose, and why, when ``progress`` is on (``WalkForwardResult.executor``).
        Not part of the fingerprint: a run may be resumed with another executor.
    :param n_jobs: Workers of the ``"process"`` or ``"ray"`` executor (default: the CPU count); with ``"auto"``,
        at most this many.
    """

    def __init__(
        self,
        prices: Any,
        splitter: WalkForwardSplitter,
        repository: CheckpointRepository | str | Any,
        total_timesteps: int | None = None,
        *,
        options: RunOptions | None = None,
        progress: bool = True,
        executor: str | Executor | None = "auto",
        n_jobs: int | None = None,
        **settings: Any,
    ) -> None:
        if total_timesteps is not None:
            settings["total_timesteps"] = total_timesteps
        self.options = RunOptions(**settings) if options is None else dataclasses.replace(options, **settings)
        prices, self.options, self.price_series, self.benchmark_series = _table(prices, self.options)
        self.prices = prices
        self.splitter = splitter
        #: Where ``options.periods_per_year`` came from: a key of ``PERIODS_PER_YEAR_SOURCES``.
        self.periods_per_year_source: str = "given"
        self.options, self.periods_per_year_source = _resolved(self.options, splitter, prices)
        self.repository = (
            repository if isinstance(repository, CheckpointRepository) else CheckpointRepository(repository)
        )
        self.progress = progress
        self.executor = executor
        self.n_jobs = n_jobs
        series = self.price_series
        self._values = np.asarray(getattr(series, "to_numpy", lambda: series)(), dtype=np.float64)
        if splitter.n_windows(len(self._values)) == 0:
            raise CheckpointError(
                f"no window fits in {len(self._values)} prices: train_size + gap + val_size = {splitter.min_length}"
            )
        self.windows: list[Window] = list(splitter.split(prices))
        #: The candidate this runner trains (a member of a run with candidates), else None.
        self.candidate: str | None = None
        #: In a run with candidates: one runner per candidate, on its repository under ``candidates/``.
        self.members: dict[str, WalkForwardRunner] = {}
        for c in self.options.candidates:
            member = WalkForwardRunner(
                prices,
                splitter,
                self.repository.candidate(c.name),
                options=self.options.for_candidate(c),
                progress=False,
            )
            member.candidate = c.name
            self.members[c.name] = member

    # -- configuration fingerprint ----------------------------------------------------------------------
    @property
    def annualization(self) -> str:
        """The run's ``periods_per_year`` and where it came from, in words."""
        ppy = self.options.annualization
        return f"{ppy:g} periods a year, {PERIODS_PER_YEAR_SOURCES[self.periods_per_year_source]}"

    def config(self, options: RunOptions | None = None) -> dict[str, Any]:
        """Everything that makes two runs comparable (the resume gate compares it); ``options``: other
        settings on the same data and splitter."""
        from sb3_iter_ckpt.data import data_fingerprint

        data = {
            "splitter": self.splitter.to_dict(),
            "data_sha256": data_fingerprint(self.prices),
            "n_prices": len(self._values),
        }
        return to_jsonable({**data, **(self.options if options is None else options).to_config()})

    def fingerprint(self) -> str:
        return config_fingerprint(self.config())

    def _use_periods_per_year(self, ppy: float, source: str) -> None:
        for runner in (self, *self.members.values()):
            runner.options = dataclasses.replace(runner.options, periods_per_year=ppy)
            runner.periods_per_year_source = source

    def _earlier_default(self, previous: dict[str, Any] | None) -> None:
        """A run written before the runner estimated ``periods_per_year`` recorded the default 252: with the
        estimate instead, this run would not resume it. When the repository holds exactly that run (its
        ``walk_forward.json``, else its records), the run goes on with 252."""
        if self.periods_per_year_source != "estimated" or self.options.periods_per_year == DEFAULT_PERIODS_PER_YEAR:
            return
        earlier = config_fingerprint(
            self.config(dataclasses.replace(self.options, periods_per_year=DEFAULT_PERIODS_PER_YEAR))
        )
        if previous is not None:
            found = {previous.get("fingerprint")}
        else:
            found = {c.record.get("metadata", {}).get("fingerprint") for c in self.repository.list()}
        if found == {earlier}:
            self._use_periods_per_year(DEFAULT_PERIODS_PER_YEAR, "earlier default")

    def _check_resume(self) -> None:
        previous = self.repository.read_metadata(RUN_FILE)
        if previous is None or previous.get("fingerprint") != self.fingerprint():
            self._earlier_default(previous)
        config, fp = self.config(), self.fingerprint()
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
            if self.periods_per_year_source == "estimated" and old.get("periods_per_year") == DEFAULT_PERIODS_PER_YEAR:
                # written with the earlier default: what else changed (the estimate alone would have resumed)
                config = self.config(dataclasses.replace(self.options, periods_per_year=DEFAULT_PERIODS_PER_YEAR))
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ConfigMismatchError(
                f"{self.repository.root} was written by a different walk-forward configuration "
                f"(changed: {', '.join(changed) or 'unknown'}); resume needs the same data, splitter, algorithm, "
                "hyperparameters and seed. Use another --experiment-id to start afresh."
            )

    # -- one window ---------------------------------------------------------------------------------------------
    def _segment(self, start: int, stop: int) -> Any:
        return self.prices.iloc[start:stop] if hasattr(self.prices, "iloc") else self.prices[start:stop]

    def _spec(self, window: Window, fingerprint: str, warm_from: int | None, in_process: bool) -> WindowSpec:
        """The picklable unit of work of one window (see ``sb3_iter_ckpt.runner.window.train_window``)."""
        i, opts = window.iteration, self.options
        seed = opts.seed + i
        offset = 0 if window.test_start is None else max(0, window.test_start - opts.history)
        test_prices = None if window.test_stop is None else self._segment(offset, window.test_stop + 1)
        return WindowSpec(
            iteration=i,
            train_prices=self._segment(window.train_start, window.train_stop),
            val_prices=self._segment(max(0, window.val_start - opts.history), window.val_stop),
            seed=seed,
            repository=self.repository if in_process else RepositoryRef.of(self.repository),
            metadata={
                "window": window.to_dict(),
                "fingerprint": fingerprint,
                "seed": seed,
                "periods_per_year": opts.periods_per_year,
                "periods_per_year_source": self.periods_per_year_source,
            },
            options=opts,
            warm_start_from=warm_from,
            env=forwarded_env(),
            window=window,
            test_prices=test_prices,
            test_offset=offset,
            candidate=self.candidate,
        )

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, max_iterations: int | None = None) -> WalkForwardResult:
        """Train every window not yet committed; return what was trained, skipped and the best.

        The windows go to the runner's ``executor``; each worker commits its own iteration. The
        driver (this call) checks the fingerprint, submits only the windows without a record, shows
        one progress bar and, at the end, refreshes the best model link and the summaries once.

        :param max_iterations: Only the first N windows.
        """
        return run_many(
            [self], executor=self.executor, n_jobs=self.n_jobs, max_iterations=max_iterations, progress=self.progress
        )[0]


def _table(prices: Any, options: RunOptions) -> tuple[Any, RunOptions, Any, Any]:
    """A table checked (its price column resolved into the options), its traded price and benchmark series; a
    series or array as it is (the price and the benchmark)."""
    import pandas as pd

    from sb3_iter_ckpt.data import check_table, traded_prices

    if not isinstance(prices, pd.DataFrame):
        if options.price_column is not None or options.benchmark_column is not None:
            raise CheckpointError(
                "price_column and benchmark_column name columns of a table: pass the prices as a DataFrame"
            )
        return prices, options, prices, prices
    table, price, benchmark = check_table(prices, options.price_column, options.benchmark_column)
    options = dataclasses.replace(options, price_column=price, benchmark_column=benchmark)
    traded = traded_prices(table, price)
    return table, options, traded, traded if benchmark is None else table[benchmark]


def _resolved(options: RunOptions, splitter: WalkForwardSplitter, prices: Any) -> tuple[RunOptions, str]:
    """``options`` with the splitter's test part and a number for ``periods_per_year`` (None: estimated from
    the prices' dates, 252 without dates), and where that number came from (``PERIODS_PER_YEAR_SOURCES``)."""
    from sb3_iter_ckpt.data import estimate_periods_per_year

    test = (splitter.test_size, splitter.test_gap)
    if (options.test_size, options.test_gap) not in ((0, 0), test):
        raise CheckpointError(
            f"test_size={options.test_size}, test_gap={options.test_gap} differ from the splitter's test part "
            f"{test}; give the test part to the splitter: WalkForwardSplitter(..., test_size=, test_gap=)"
        )
    ppy, source = options.periods_per_year, "given"
    if ppy is None:
        ppy, source = estimate_periods_per_year(prices), "estimated"
        if ppy is None:
            ppy, source = DEFAULT_PERIODS_PER_YEAR, "assumed"
    return dataclasses.replace(options, test_size=test[0], test_gap=test[1], periods_per_year=ppy), source


class _Run:
    """The driver's state for one runner: windows left, windows done, what is in flight."""

    def __init__(self, runner: WalkForwardRunner, max_iterations: int | None) -> None:
        if runner.options.make_model is None:
            algorithm_class(runner.options.algo)  # an unknown algorithm fails here, not in a worker
        if runner.windows:  # the env contract and the algorithm's fit, before anything is written
            preflight(runner._spec(runner.windows[0], "", None, True))
        runner._check_resume()
        self.runner = runner
        self.fingerprint = runner.fingerprint()
        self.windows = runner.windows[:max_iterations] if max_iterations else runner.windows
        self.result = WalkForwardResult()
        self.done: dict[int, Checkpoint] = {}
        self.todo: deque[Window] = deque()
        self.in_flight = 0
        repo = runner.repository
        self.resumed: set[int] = set()  # committed before, their forward evaluation missing: evaluated only
        for window in self.windows:
            i = window.iteration
            if repo.has(i) and (window.test_start is None or repo.has_forward(i)):
                self.done[i] = repo.get(i)
                self.result.skipped.append(i)
            else:
                if repo.has(i):
                    self.resumed.add(i)
                self.todo.append(window)

    def next_spec(self, in_process: bool) -> tuple[Window, WindowSpec] | None:
        """The next window to submit, or None (nothing left, or a warm-started chain is busy)."""
        warm_start = self.runner.options.warm_start
        if not self.todo or (warm_start and self.in_flight):
            return None
        window = self.todo.popleft()
        warm_from = None
        if warm_start:  # the latest earlier iteration with a model (all earlier ones are done)
            warm_from = max((i for i, ck in self.done.items() if i < window.iteration and ck.has_model), default=None)
        self.in_flight += 1
        return window, self.runner._spec(window, self.fingerprint, warm_from, in_process)

    def finish(self, window: Window, outcome: dict[str, Any]) -> Checkpoint:
        self.in_flight -= 1
        ck = self.runner.repository.get(window.iteration)
        self.done[window.iteration] = ck
        if window.iteration in self.resumed:
            self.result.skipped.append(window.iteration)
        else:
            self.result.trained.append(window.iteration)
        self.result.outcomes[window.iteration] = outcome
        return ck

    def close(self) -> WalkForwardResult:
        runner, result = self.runner, self.result
        result.trained.sort()
        result.skipped.sort()
        result.checkpoints = [self.done[w.iteration] for w in self.windows if w.iteration in self.done]
        result.annualization = runner.annualization
        rule = runner.options.selection
        self.stitch()
        # Once more over every iteration, also on a rerun with nothing to train: a derived file a crash left
        # missing or stale is written again (an up-to-date one is left as it is).
        runner.repository.refresh(rule.monitor, rule.mode)
        result.best = runner.repository.best(rule.monitor, rule.mode)
        if runner.splitter.test_size:
            result.forward, result.forward_reason = runner.repository.forward_status()
        return result

    def stitch(self) -> bool:
        """With test parts: the forward results stitched into ``forward_returns.csv``; whether it changed."""
        from sb3_iter_ckpt.forward.stitching import restitch, stitch

        repo = self.runner.repository
        results = repo.forwards() if self.runner.splitter.test_size else []
        if not results:
            return False
        try:
            stitch(results, self.runner.benchmark_series)  # the results belong to these rows and dates
            # Written from the signed files alone, as every reader recomputes it: an equal-weight benchmark
            # of a slice can differ from the whole table's in the last bit.
            data = restitch(results).to_csv_bytes()
        except CheckpointError:
            return False  # a hole (a result missing): the repository's forward_status says why
        if repo.storage.exists(FORWARD_RETURNS) and repo.storage.read_bytes(FORWARD_RETURNS) == data:
            return False
        repo.write_forward_returns(data)
        return True


class _EnsembleRun(_Run):
    """A run with candidates: its members' windows are submitted; at the end each window's choice is
    copied into the root (``ensemble.publish_choice``), then the root is stitched and summarized as any run."""

    def __init__(self, runner: WalkForwardRunner, max_iterations: int | None) -> None:
        super().__init__(runner, max_iterations)  # the root's resume gate: a changed candidate list stops here
        # A window whose choice is still to be made needs every candidate's model: one pruned since (the root's
        # record removed by hand after retention) is trained again, as a run without candidates would.
        for i in (w.iteration for w in self.todo if not runner.repository.has(w.iteration)):
            for member in runner.members.values():
                repo = member.repository
                if repo.has(i) and is_pruned(repo.get(i)):
                    repo.forget_pruned(i)
        self.members = [_Run(m, max_iterations) for m in runner.members.values()]

    def next_spec(self, in_process: bool) -> tuple[Window, WindowSpec] | None:
        return None  # the members train; the root only receives copies

    def close(self) -> WalkForwardResult:
        from sb3_iter_ckpt.runner.ensemble import check_choices, publish_choice

        runner = self.runner
        member_results = {name: run.close() for name, run in zip(runner.members, self.members, strict=True)}
        repos = {name: m.repository for name, m in runner.members.items()}
        rule = runner.options.selection
        if any(w.iteration not in self.done for w in self.windows):
            check_choices(runner.repository, repos)
        for window in self.windows:
            i = window.iteration
            if i in self.done:
                continue
            self.done[i] = publish_choice(runner.repository, i, repos, rule, self.fingerprint)
            (self.result.skipped if i in self.resumed else self.result.trained).append(i)
        policy = runner.options.retention
        if policy is not None:  # deferred until every chosen model is copied and every forward result written
            for repo in (runner.repository, *repos.values()):
                repo.prune(policy, monitor=rule.monitor, mode=rule.mode)
        result = super().close()
        result.candidates = member_results
        return result


_Pending = dict[cf.Future, tuple[_Run, Window]]


def _submit(runs: Sequence[_Run], pool: Executor, pending: _Pending) -> bool:
    """Round-robin over the runs, up to ``pool.workers`` windows in flight; whether any is in flight."""
    limit = max(1, pool.workers)
    added = True
    while added and len(pending) < limit:
        added = False
        for run in runs:
            if len(pending) >= limit:
                break
            nxt = run.next_spec(pool.in_process)
            if nxt is not None:
                pending[pool.submit(nxt[1])] = (run, nxt[0])
                added = True
    return bool(pending)


def _outcome(future: cf.Future, window: Window) -> dict[str, Any]:
    try:
        return future.result()
    except cf.BrokenExecutor as exc:
        raise CheckpointError(
            f"a worker process died while training window {window.iteration} ({exc}); the windows "
            "committed so far are kept: run again to train only the missing ones"
        ) from exc


def _started(
    named: Executor | None, runners: Sequence[WalkForwardRunner], runs: Sequence[_Run], n_jobs: int | None
) -> tuple[Executor, str]:
    """The executor (``named``, or auto's choice once the windows left to train are known: a resumed run may have
    one left), started when there is something to train, and its line for the run's header."""
    if named is None:
        choice = choose_for_runs(runners, runs, n_jobs)
        if choice.fallback is not None:
            warnings.warn(f"executor='auto' trains the windows in this process: {choice.fallback}", stacklevel=4)
        pool, line = choice.executor, choice.line
    else:
        pool, line = named, ""
    if any(run.todo for run in runs):
        pool.start()  # e.g. Ray: join the cluster, learn how many windows may run at once
    return pool, line or f"executor: {pool.describe()}"


def _shown(bar: Any, run: _Run, ck: Checkpoint) -> None:
    """One more window on the progress bar, its score beside it."""
    monitor = run.runner.options.monitor
    score = ck.score(monitor)
    bar.update(1)
    shown = {"iter": ck.iteration, monitor: "-" if score is None else f"{score:.3f}"}
    if run.runner.candidate is not None:  # a run with candidates: whose window this was
        shown = {"candidate": run.runner.candidate, **shown}
    bar.set_postfix(shown)


def run_many(
    runners: Sequence[WalkForwardRunner],
    executor: str | Executor | None = "auto",
    n_jobs: int | None = None,
    *,
    max_iterations: int | None = None,
    progress: bool = True,
) -> list[WalkForwardResult]:
    """Run several walk-forward runners (seeds, configurations) on one executor, with one progress bar.

    Windows of different runners run in parallel; so do the windows of one runner, except with
    ``warm_start``, where each window waits for the previous one: a warm-started runner is one chain,
    and parallelism comes from running several chains at once. Each runner needs its own repository.

    :param executor: As ``WalkForwardRunner``'s ``executor`` (default ``"auto"``; None: ``"auto"``); an
        ``Executor`` object is left open for the caller.
    :param n_jobs: Workers of a named executor (with ``"auto"``: at most this many).
    :param max_iterations: Only the first N windows of each runner.
    """
    from tqdm.auto import tqdm

    roots = [str(r.repository.root) for r in runners]
    if len(set(roots)) != len(roots):
        raise CheckpointError("each runner of run_many needs its own repository (another --experiment-id)")
    auto = executor is None or (isinstance(executor, str) and executor.lower() == "auto")
    threads = runners[0].options.torch_threads if runners else 1
    named = None if auto else make_executor(executor, n_jobs, torch_threads=threads)  # a bad name fails here
    drivers = [_EnsembleRun(r, max_iterations) if r.members else _Run(r, max_iterations) for r in runners]
    # The windows of one run's candidates sit side by side in the round-robin, so they train in parallel.
    runs = [m for d in drivers for m in (d.members if isinstance(d, _EnsembleRun) else [d])]
    pool, line = _started(named, runners, runs, n_jobs)
    owned = pool is not executor
    if progress:
        tqdm.write(line)
    total = sum(len(r.windows) for r in runs)
    skipped = sum(len(r.result.skipped) for r in runs)
    bar = tqdm(total=total, initial=skipped, desc="walk-forward", unit="iter", disable=not progress)
    pending: _Pending = {}
    try:
        while _submit(runs, pool, pending):
            finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: pending[f][1].iteration):
                run, window = pending.pop(future)
                _shown(bar, run, run.finish(window, _outcome(future, window)))
    finally:
        for future in pending:
            future.cancel()
        bar.close()
        if owned:
            pool.close()
    results = [driver.close() for driver in drivers]
    for result in results:
        result.executor = line
    return results


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


#: The runner's public names; ``Candidate``, ``make_candidates``, ``RunOptions`` and the executors are
#: re-exported from :mod:`sb3_iter_ckpt.runner` so that users import them from here.
__all__: Sequence[str] = [
    "ALGORITHMS",
    "RUN_FILE",
    "Candidate",
    "Executor",
    "ProcessExecutor",
    "RayExecutor",
    "RunOptions",
    "SequentialExecutor",
    "make_candidates",
    "WalkForwardResult",
    "WalkForwardRunner",
    "run_many",
    "run_walk_forward",
]
