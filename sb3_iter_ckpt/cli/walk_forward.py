"""The ``walk-forward`` command: its flags checked before any data is loaded, turned into the prices,
the splitter and ``RunOptions``; the run; its lines (or JSON), the forward summary and the report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.cli.env_flags import price_columns, step_reader
from sb3_iter_ckpt.cli.shared import (
    EXIT_OK,
    UsageError,
    _check_url,
    _ck_dict,
    _emit_json,
    _experiment_root,
    _fmt,
    _signing_key,
    _storage_options,
)
from sb3_iter_ckpt.errors import CheckpointError


def _walk_forward_monitors() -> set[str]:
    """Every metric the built-in trading evaluator records (``window._evaluator``), as a monitor key."""
    from sb3_iter_ckpt.stats.metrics import METRIC_KEYS

    per_env = (*METRIC_KEYS, "mean_reward", "n_episodes")  # evaluate_trading adds the last two
    keys = {"mean_reward"} | {f"combined.{k}" for k in METRIC_KEYS}
    return keys | {f"{part}.{k}" for part in ("validation", "train") for k in per_env}


def _check_walk_forward_args(args: argparse.Namespace) -> None:
    """Refuse a bad argument before any data is loaded or any training time is spent."""
    import importlib.util

    from sb3_iter_ckpt.store.storage import is_url

    if args.workers is not None and args.executor == "sequential":
        raise UsageError("--workers needs --executor auto, process or ray")
    if args.ray_address and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs Ray: pip install 'sb3-iter-ckpt[ray]'")
    algos = _algos(args)
    minibatched = [a for a in algos if a in _MINIBATCH]
    if minibatched and args.n_steps < 2:
        need = "needs at least 2 (its minibatches need two samples)"
        raise UsageError(f"--n-steps {args.n_steps}: {minibatched[0]} {need}")
    if args.monitor not in _walk_forward_monitors():
        from sb3_iter_ckpt.stats.metrics import METRIC_KEYS

        raise UsageError(
            f"--monitor {args.monitor!r} is not a metric the walk-forward records; use mean_reward, or validation., "
            f"train. or combined. followed by one of {', '.join(METRIC_KEYS)} (e.g. validation.sharpe)"
        )
    if args.test_size == 0 and args.test_gap:
        raise UsageError(f"--test-gap {args.test_gap} needs a test part: give --test-size N (not 0)")
    if args.date_format and not args.data:
        raise UsageError("--date-format reads the dates of --data; the synthetic prices have no CSV to read")
    if args.data and not Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: no such file; give a CSV with a date and a close column")
    _check_env_args(args)
    _storage_options(args)  # KEY=VALUE syntax
    if is_url(args.results_dir):
        _check_url(args.results_dir)
    elif args.storage_option:
        raise UsageError("--storage-option applies to URL results folders (s3://...), not to a local folder")
    else:
        for folder in (Path(args.results_dir), Path(args.results_dir) / str(args.experiment_id)):
            if folder.exists() and not folder.is_dir():
                raise UsageError(f"{folder} is a file, not a folder; choose another --results-dir or --experiment-id")
    from sb3_iter_ckpt.runner.algorithms import algorithm_class

    _given_algo_kwargs(args)  # ALGO:JSON, each for one of --algo
    try:
        classes = [algorithm_class(algo) for algo in algos]
        _candidates(args)  # duplicate names (--algo ppo,ppo)
    except CheckpointError as exc:
        raise UsageError(f"--algo: {exc}") from None
    _check_policy(args, classes)


def _check_policy(args: argparse.Namespace, classes: list[Any]) -> None:
    """``--policy``: an import path imports, an alias is one of every algorithm's (before anything is loaded)."""
    from sb3_iter_ckpt.common.candidates import check_policy
    from sb3_iter_ckpt.runner.policies import resolve_policy

    if args.policy is None:
        return
    try:
        check_policy(args.policy, "policy")
        for cls in classes:
            resolve_policy(cls, args.policy, None)
    except CheckpointError as exc:
        raise UsageError(f"--policy: {exc}") from None


def _check_env_args(args: argparse.Namespace) -> None:
    """``--env`` (imported here), ``--env-kwargs``, ``--benchmark-column``, ``--transaction-cost``, ``--history``."""
    import math

    _env_callable(args)
    _env_kwargs(args)
    price_columns(args)
    step_reader(args)
    if args.benchmark_column and not args.data:
        raise UsageError("--benchmark-column names a column of --data; the synthetic prices have one column")
    cost = args.transaction_cost
    if cost is not None and (args.env or not (math.isfinite(cost) and cost >= 0)):
        why = "is the built-in env's; give your env its cost in --env-kwargs" if args.env else "must be >= 0"
        raise UsageError(f"--transaction-cost {cost} {why}")
    if args.history is not None and args.history < (0 if args.env else 1):
        least = "0 or more" if args.env else "1 or more (the built-in env's window_size)"
        raise UsageError(f"--history {args.history}: rows of history must be {least}")


def _env_callable(args: argparse.Namespace) -> Any:
    """``--env module:callable`` imported (None without ``--env``); ``UsageError`` in one line if it is not one."""
    import importlib

    if not args.env:
        return None
    module_name, sep, attr = str(args.env).partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--env {args.env!r}: give an import path module:callable (e.g. mypackage.envs:make_env)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any failure is one line
        raise UsageError(f"--env {args.env}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"--env {args.env}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"--env {args.env}: {attr!r} is not callable; give make_env(table, seed) -> gym.Env")
    return target


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import json

    if args.env_kwargs is None:
        return {}
    if not args.env:
        raise UsageError("--env-kwargs are the keyword arguments of --env's callable: give --env too")
    try:
        kwargs = json.loads(args.env_kwargs)
    except ValueError as exc:
        raise UsageError(f"--env-kwargs is not JSON ({exc}); give an object such as '{{\"window\": 30}}'") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--env-kwargs must be a JSON object of keyword arguments, got {args.env_kwargs!r}")
    return kwargs


def _is_table(args: argparse.Namespace) -> bool:
    """Whether the run reads a table (its env or its benchmark needs more than the close column)."""
    return bool(args.env or args.benchmark_column)


#: The on-policy algorithms whose rollout is ``--n-steps`` long, and the default minibatch of those that have
#: one (capped at ``--n-steps``).
_ROLLOUT = ("ppo", "a2c", "trpo", "recurrentppo")
_MINIBATCH = {"ppo": 64, "trpo": 128, "recurrentppo": 128}


def _algos(args: argparse.Namespace) -> list[str]:
    """The names in ``--algo`` (one, or several comma-separated) as the registry knows them (``QR-DQN`` ->
    ``qrdqn``); an import path as given."""
    from sb3_iter_ckpt.runner.algorithms import canonical_name

    algos = [a.strip() for a in str(args.algo).split(",")]
    if any(not a for a in algos):
        raise UsageError(f"--algo {args.algo!r}: an empty name; give e.g. ppo or ppo,a2c")
    return [canonical_name(a.lower()) if "." not in a else a for a in algos]


def _given_algo_kwargs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--algo-kwargs ALGO:JSON`` (repeatable) as algorithm -> its hyperparameters, each for one of ``--algo``."""
    import json

    algos, out = _algos(args), {}
    for text in args.algo_kwargs or ():
        name, _, blob = str(text).partition(":")
        name = name.strip()
        if "," in name:  # one JSON object for two algorithms would silently reach only the first
            raise UsageError(f"--algo-kwargs {text!r}: one algorithm per --algo-kwargs; repeat the flag for each")
        algo = _algos(argparse.Namespace(algo=name))[0] if name else ""
        try:
            kwargs = json.loads(blob) if blob.strip().startswith("{") else None
        except ValueError as exc:
            raise UsageError(f"--algo-kwargs {text!r}: not JSON ({exc})") from None
        if not algo or not isinstance(kwargs, dict):
            raise UsageError(f"--algo-kwargs {text!r}: give ALGO:JSON, e.g. sac:'{{\"learning_starts\": 1000}}'")
        if algo not in algos:
            raise UsageError(f"--algo-kwargs {text!r}: {name} is not one of --algo {args.algo}")
        if algo in out:
            raise UsageError(f"--algo-kwargs: {name} is given twice; give all its hyperparameters in one JSON object")
        out[algo] = kwargs
    return out


def _algo_kwargs(algo: str, args: argparse.Namespace) -> dict[str, Any]:
    """An algorithm's hyperparameters: ``--n-steps`` for a rollout, then its ``--algo-kwargs`` over them."""
    n_steps, kwargs = args.n_steps, {}
    if algo in _ROLLOUT:
        kwargs["n_steps"] = n_steps
    if algo in _MINIBATCH:
        kwargs["batch_size"] = min(_MINIBATCH[algo], n_steps)
    return {**kwargs, **_given_algo_kwargs(args).get(algo, {})}


def _candidates(args: argparse.Namespace) -> tuple[Any, ...]:
    """The candidates of ``--algo a,b`` and ``--seeds N`` (none for one algorithm and one seed)."""
    from sb3_iter_ckpt.common.candidates import make_candidates

    algos = _algos(args)
    if len(algos) == 1 and args.seeds == 1:
        return ()
    return make_candidates(algos, args.seeds, args.seed, lambda a: _algo_kwargs(a, args))


def _prices(args: argparse.Namespace) -> Any:
    """The close series; with ``--env`` or ``--benchmark-column`` the whole table (a CSV run that uses only its
    close column keeps the series, and so its data fingerprint)."""
    from sb3_iter_ckpt.data import load_prices_csv, load_table_csv, synthetic_prices

    if not args.data:
        prices = synthetic_prices(args.n_prices, seed=args.data_seed)
        return prices.to_frame() if _is_table(args) else prices
    load = load_table_csv if _is_table(args) else load_prices_csv
    try:
        return load(
            args.data, date_column=args.date_column, close_column=price_columns(args)[0], date_format=args.date_format
        )
    except ValueError as exc:
        raise UsageError(f"{exc} (choose columns with --date-column / --close-column)") from exc


def _splitter(args: argparse.Namespace, n_prices: int) -> Any:
    from sb3_iter_ckpt.splitter import WalkForwardSplitter

    splitter = WalkForwardSplitter(
        train_size=args.train_size,
        val_size=args.val_size,
        step=args.step,
        gap=args.gap,
        mode=args.window_mode,
        max_windows=args.iterations,
        test_size=args.test_size,
        test_gap=args.test_gap,
    )
    if splitter.n_windows(n_prices) == 0:
        test = " + --test-gap + --test-size" if args.test_size else ""
        raise UsageError(
            f"no window fits in {n_prices} prices: --train-size + --gap + --val-size{test} = {splitter.min_length}; "
            "use smaller windows" + ("" if args.data else " or a larger --n-prices")
        )
    return splitter


def _run_options(args: argparse.Namespace) -> Any:
    """The run's settings from the flags: every walk-forward flag that changes what is trained is read here."""
    from sb3_iter_ckpt.common.options import RunOptions

    algo = _algos(args)[0]
    env_kwargs: dict[str, Any] = {}
    if args.transaction_cost is not None:
        env_kwargs["transaction_cost"] = args.transaction_cost
    if args.history is not None and not args.env:
        env_kwargs["window_size"] = args.history
    table = _is_table(args)
    return RunOptions(
        args.total_timesteps,
        algo=args.algo if "," not in args.algo else algo,  # one algorithm: as given, as its fingerprint has it
        algo_kwargs=_algo_kwargs(algo, args),
        candidates=_candidates(args),
        seed=args.seed,
        eval_freq=args.eval_freq,
        monitor=args.monitor,
        warm_start=args.warm_start,
        torch_threads=args.threads or None,
        test_size=args.test_size,
        test_gap=args.test_gap,
        # None: estimated from the dates of --data; the synthetic prices' dates are no calendar: 252
        periods_per_year=args.periods_per_year or (None if args.data else 252),
        make_env=_env_callable(args),
        make_env_kwargs=_env_kwargs(args),
        env_kwargs=env_kwargs,
        env_history=args.history if args.env else None,
        price_column=_price_column(args) if table else None,
        benchmark_column=args.benchmark_column,
        step_reader=step_reader(args),
        policy=args.policy,
    )


def _price_column(args: argparse.Namespace) -> str | tuple[str, ...]:
    """The run's ``price_column``: ``--close-column``'s one name or several (the synthetic prices' is close)."""
    if not args.data:
        return "close"
    names = price_columns(args)
    return names[0] if len(names) == 1 else names


def _print_walk_forward(args: argparse.Namespace, repo: Any, result: Any) -> None:
    monitor = args.monitor
    for ck in result.checkpoints:
        window = ck.record.get("metadata", {}).get("window", {})
        dates = f"{window.get('val_start_time', '')[:10]}..{window.get('val_end_time', '')[:10]}" if window else ""
        # Every path under the root as the user gave it (not the resolved absolute model path).
        model = ck.artifacts.get("model")
        path = repo.checkpoints_dir / (model.file if model is not None else ck.record_file)
        where = str(path) if ck.has_model else f"placeholder ({ck.reason}) {path}"
        skipped = " (resumed)" if ck.iteration in result.skipped else ""
        entry = ck.record.get("candidate")
        chosen = (
            f" [{entry.get('name') or 'none'} of {len(entry.get('scores') or {})}]" if isinstance(entry, dict) else ""
        )
        print(
            f"  iteration {ck.iteration} val {dates}: {monitor}={_fmt(ck.score(monitor))}{chosen} -> {where}{skipped}"
        )
    shown = repo.root  # a Path or an s3:// URL, both join with /
    if result.best is not None:
        print(f"best: iteration {result.best.iteration} -> {shown / 'best_model.zip'}")
    print(f"summaries: {shown / 'training_summary.json'}, {shown / 'checkpoint_summary.json'}")
    if args.test_size:
        _print_forward_summary(result.forward, result.forward_reason, shown)
    _write_run_report(repo)
    print(f"next: sb3-iter-ckpt list {shown}   |   sb3-iter-ckpt forward {shown}")


def _write_run_report(repo: Any) -> None:
    """The experiment's HTML report, written after every run; without the [report] extra, how to get it."""
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        print('report: not written (it needs plotly: pip install "sb3-iter-ckpt[report]")')
        return
    from sb3_iter_ckpt.report import collect_report, default_report_path, write_report

    data = collect_report(repo)
    out = write_report(data, default_report_path(repo))
    verdict = f"; verify found {len(data.problems)} problem(s), shown in red" if data.problems else ""
    print(f"report: {out} (open it in a browser{verdict})")


def _print_forward_summary(report: dict[str, Any] | None, reason: str | None, shown: Any) -> None:
    """The out-of-sample result in three lines: the stitched curve against buy-and-hold, and the DSR."""
    if report is None:
        print(f"forward: none ({reason})")
        return
    stitched, hold = report["stitched"], report["baseline"]["buy_and_hold"]
    mine = stitched["metrics"]
    span = f"{(stitched['first_date'] or '')[:10]}..{(stitched['last_date'] or '')[:10]}"
    if not stitched["first_date"]:
        span = f"rows {stitched['first_row']}..{stitched['last_row']}"
    print(
        f"forward (each kept model trading the unseen period after its window, {mine['n_periods']} periods {span}): "
        f"sharpe={_fmt(mine['sharpe'])} total_return={_fmt(mine['total_return'])}"
    )
    print(
        f"  buy-and-hold over the same periods: sharpe={_fmt(hold['sharpe'])} total_return={_fmt(hold['total_return'])}"
    )
    dsr = report["deflated_sharpe"]
    dsr_text = _fmt(dsr) if dsr is not None else f"none ({report['deflated_sharpe_reason']})"
    trials = report.get("n_trials") or 1
    print(f"  deflated Sharpe ratio: {dsr_text} ({trials} trial(s)); curve: {shown / 'forward_returns.csv'}")
    if trials > 1:
        pbo = report.get("pbo")
        pbo_text = _fmt(pbo["pbo"]) if pbo else f"none ({report.get('pbo_reason')})"
        print(f"  probability of backtest overfitting (PBO, over the {trials} candidates): {pbo_text}")
    print(f"  details: sb3-iter-ckpt forward {shown}")


def _algo_line(options: Any) -> str:
    if not options.candidates:
        return str(options.algo).upper()
    names = ", ".join(c.name for c in options.candidates)
    return f"{len(options.candidates)} candidates per window ({names}), the best on validation chosen"


def cmd_walk_forward(args: argparse.Namespace) -> int:
    if args.test_size is None:  # the default: trade a period as long as the validation part
        args.test_size = args.val_size
    _check_walk_forward_args(args)
    import torch

    from sb3_iter_ckpt.repository import CheckpointRepository
    from sb3_iter_ckpt.runner.executors import make_executor
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    torch.set_num_threads(args.threads)
    root = _experiment_root(args.results_dir, args.experiment_id)
    logs = Path(tempfile.gettempdir()) / "sb3-iter-ckpt" / str(args.experiment_id) if isinstance(root, str) else root
    os.environ.setdefault("SB3_LOGDIR", str(logs / "logs"))
    prices = _prices(args)
    splitter = _splitter(args, len(prices))
    repo = CheckpointRepository(root, storage_options=_storage_options(args), signing_key=_signing_key(args))
    options = _run_options(args)
    executor: Any = args.executor  # "auto": the runner chooses, once it knows the windows left to train
    if executor != "auto":
        executor = make_executor(executor, args.workers, address=args.ray_address, torch_threads=options.torch_threads)
    runner = WalkForwardRunner(
        prices, splitter, repo, options=options, progress=not args.json, executor=executor, n_jobs=args.workers
    )
    source = args.data or f"synthetic prices (n={args.n_prices}, seed={args.data_seed})"
    if not args.json:  # the executor's line follows, printed by the run
        test = f", test parts of {args.test_size}" if args.test_size else ""
        print(
            f"walk-forward on {source}: {len(runner.windows)} window(s){test}, {args.total_timesteps} timesteps each, "
            f"{_algo_line(runner.options)}, {runner.options.periods_per_year:g} periods a year, results in {root}"
        )
    # With --json, stdout carries the JSON document alone: what is printed while the run goes (Ray's messages
    # about its nodes and workers, a user's env) goes to stderr, until Ray is shut down.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        try:
            result = runner.run()
        finally:
            if not isinstance(executor, str):
                executor.close()
    if not args.json:
        _print_walk_forward(args, repo, result)
        return EXIT_OK
    best = None if result.best is None else _ck_dict(result.best)
    checkpoints = [_ck_dict(c) for c in result.checkpoints]
    _emit_json(
        {
            "root": str(root),
            "trained": result.trained,
            "skipped": result.skipped,
            "best": best,
            "checkpoints": checkpoints,
            "forward": result.forward,
            "forward_reason": result.forward_reason,
            "outcomes": _outcomes(result),
            "executor": result.executor,
        }
    )
    return EXIT_OK


def _outcomes(result: Any) -> list[dict[str, Any]]:
    """What the worker of each window trained by this call reported (``pid``, ``host``, on Ray ``node_id``),
    with its candidate (None in a run without candidates), in iteration order."""
    runs = list(result.candidates.items()) or [(None, result)]
    rows = [{**outcome, "candidate": name} for name, run in runs for outcome in run.outcomes.values()]
    return sorted(rows, key=lambda row: row["iteration"])
