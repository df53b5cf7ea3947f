"""The ``sb3-iter-ckpt`` command line: run a walk-forward, then list, inspect, verify and prune its checkpoints.

Exit codes: 0 success, 1 other error, 2 bad usage (a signing key missing or not the repository's included),
3 not found, 4 integrity problem (``verify`` of a signed repository without its key included), 5 configuration mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointNotFound,
    ConfigMismatchError,
    IntegrityError,
    RecordError,
    SigningKeyError,
    UnsafePathError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY, EXIT_MISMATCH = 0, 1, 2, 3, 4, 5


class UsageError(Exception):
    """A user mistake on the command line (exit code 2)."""


# -- output helpers -----------------------------------------------------------------------------------------
def _emit_json(obj: Any) -> None:
    from sb3_iter_ckpt.common.record import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _ck_dict(ck: Any) -> dict[str, Any]:
    return {
        "iteration": ck.iteration,
        "has_model": ck.has_model,
        "model_path": None if ck.model_path is None else str(ck.model_path),
        "metrics": ck.metrics,
        "size_bytes": ck.size_bytes,
        "created_at": ck.created_at,
        "sha256": ck.sha256,
        "reason": ck.reason,
        "timesteps": ck.timesteps,
        "verified": ck.verified,
        # In a run with candidates: which one this copy is, and every candidate's score on the window.
        **({"candidate": ck.record["candidate"]} if isinstance(ck.record.get("candidate"), dict) else {}),
    }


# -- repository location --------------------------------------------------------------------------------
def _open_repo(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    from sb3_iter_ckpt.repository import CheckpointRepository
    from sb3_iter_ckpt.store.storage import is_url

    if args.path is not None:
        if not args.path.strip():
            raise UsageError("the repository PATH is empty; give the experiment folder (results/ID)")
        root: Path | str = args.path if is_url(args.path) else Path(args.path)
    elif args.experiment_id is not None:
        root = _experiment_root(args.results_dir, args.experiment_id)
    else:
        raise UsageError(
            "say which repository: a PATH to the experiment folder, or --experiment-id ID [--results-dir DIR]"
        )
    options = _storage_options(args)
    key = _signing_key(args)
    if isinstance(root, str):  # a URL root (s3://...): options from --storage-option or the environment
        _check_url(root)
        try:
            repo = CheckpointRepository(root, storage_options=options, signing_key=key)
            found = repo.storage.listdir("checkpoints") if must_exist else True
        except ValueError as exc:  # raised by the filesystem's client, e.g. endpoint_url=notaurl
            if isinstance(exc, CheckpointError):
                raise
            raise UsageError(f"cannot open {root}: {exc}; check the URL and --storage-option values") from exc
        if not found:
            raise CheckpointNotFound(
                f"no checkpoint repository at {root} (nothing under checkpoints/); check the URL and storage options"
            )
        return repo
    if options is not None:
        raise UsageError("--storage-option applies to URL roots (s3://...), not to a local folder")
    if must_exist and not (root / "checkpoints").is_dir():
        raise CheckpointNotFound(f"no checkpoint repository at {root} (no checkpoints/ folder); check the path")
    return CheckpointRepository(root, signing_key=key)


def _signing_key(args: argparse.Namespace) -> bytes | None:
    """The key of ``--signing-key-file`` (trailing line breaks ignored); None: the repository reads the environment."""
    from sb3_iter_ckpt.common.signing import SIGNING_KEY_ENV

    if getattr(args, "signing_key_value", None) is not None:
        raise UsageError(
            "a signing key on the command line would show in the process list and shell history; "
            f"set {SIGNING_KEY_ENV} or pass --signing-key-file PATH"
        )
    path = getattr(args, "signing_key_file", None)
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read --signing-key-file {path}: {exc.strerror or exc}") from exc
    if not key:
        raise UsageError(f"--signing-key-file {path} is empty")
    return key


def _check_url(url: str) -> None:
    """A URL whose scheme no installed filesystem handles is bad usage, not an error of the repository."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UsageError(f"{url}: unknown URL scheme {protocol!r}; use a local folder or s3://bucket/prefix") from None
    except ImportError as exc:
        raise UsageError(f"{url}: {exc} (for s3:// run: pip install 'sb3-iter-ckpt[s3]')") from None


def _experiment_root(results_dir: str, experiment_id: Any) -> Path | str:
    from sb3_iter_ckpt.store.storage import is_url

    text = str(experiment_id)
    parts = text.replace("\\", "/").split("/")
    # An id names a folder inside RESULTS_DIR: never one above it or elsewhere (../x, /abs).
    if "\x00" in text or text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(
            f"--experiment-id {text!r} must be a folder name inside --results-dir (no '..', no absolute path)"
        )
    if is_url(results_dir):
        return f"{results_dir.rstrip('/')}/{experiment_id}"
    return Path(results_dir) / str(experiment_id)


def _storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--storage-option KEY=VALUE`` pairs over ``SB3_ITER_CKPT_STORAGE_OPTIONS``; None when no flag is given.

    A VALUE that parses as JSON is taken as such (``false``, ``3``, ``{"region_name": "eu-west-1"}``), else as text.
    """
    pairs = getattr(args, "storage_option", None)
    if not pairs:
        return None
    from sb3_iter_ckpt.store.storage import storage_options_from_env

    options = storage_options_from_env()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


# -- verbs ----------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    cks = repo.list()
    if args.json:
        _emit_json([_ck_dict(c) for c in cks])
        return EXIT_OK
    monitor = args.monitor or repo.default_selection()[0]
    rows = [
        [
            c.iteration,
            "model" if c.has_model else f"none ({c.reason})",
            c.score(monitor),
            c.timesteps,
            round(c.size_bytes / 1e6, 3),
            c.created_at,
        ]
        for c in cks
    ]
    print(_table(["iter", "model", monitor, "timesteps", "MB", "created_at"], rows))
    print(f"{len(cks)} iteration(s) in {repo.checkpoints_dir}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    ck = repo.get(args.iteration)
    if args.json:
        out = _ck_dict(ck)
        out["record"] = ck.record
        _emit_json(out)
        return EXIT_OK
    from sb3_iter_ckpt.common.record import flatten

    print(
        f"iteration {ck.iteration}: "
        + ("model " + str(ck.model_path) if ck.has_model else f"placeholder ({ck.reason})")
    )
    for key in ("created_at", "timesteps", "sha256", "size_bytes", "verified"):
        print(f"  {key}: {_fmt(getattr(ck, key))}")
    window = ck.record.get("metadata", {}).get("window")
    if window:
        print(f"  window: {window}")
    print("  metrics:")
    for k, v in sorted(flatten(ck.metrics).items()):
        print(f"    {k}: {_fmt(v)}")
    return EXIT_OK


def cmd_best(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    best = repo.best(args.monitor, args.mode)
    if best is None:
        raise CheckpointNotFound(f"no checkpoint with a model and a finite score in {repo.checkpoints_dir}")
    if args.json:
        _emit_json(_ck_dict(best))
    else:
        monitor = args.monitor or repo.default_selection()[0]
        print(f"best: iteration {best.iteration}  {monitor}={_fmt(best.score(monitor))}  {best.model_path}")
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    report = repo.analyze(args.monitor, args.mode, top_k=args.top_k)
    if args.json:
        _emit_json(report)
        return EXIT_OK
    c = report["counts"]
    print(
        f"{c['total']} iterations: {c['with_model']} with a model, {c['placeholders']} placeholders, "
        f"{c.get('pruned', 0)} pruned {c['by_reason']}"
    )
    print(f"monitor: {report['monitor']} ({report['mode']})")
    print("best:", ", ".join(f"#{b['iteration']}={_fmt(b['score'])}" for b in report["best"]) or "none")
    trend = report.get("trend") or {}
    print(f"trend: slope={_fmt(trend.get('slope'))} per iteration, spearman={_fmt(trend.get('spearman'))}")
    rows = [
        [k, s["count"], s["mean"], s["std"], s["median"], s["min"], s["max"]]
        for k, s in sorted(report["stats"].items())
    ]
    print(_table(["metric", "n", "mean", "std", "median", "min", "max"], rows))
    run = report.get("longest_placeholder_run") or {}
    print(
        f"longest run of placeholders: {run.get('length', 0)}; "
        f"size on disk: {report['size_on_disk_bytes'] / 1e6:.2f} MB"
    )
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    if args.keep_every_n is None and args.keep_last_n is None and args.keep_best_k is None:
        raise UsageError("prune needs at least one of --keep-every-n, --keep-last-n, --keep-best-k")
    repo = _open_repo(args)
    result = repo.prune(
        keep_every_n=args.keep_every_n,
        keep_last_n=args.keep_last_n,
        keep_best_k=args.keep_best_k,
        monitor=args.monitor,
        mode=args.mode,
        dry_run=args.dry_run,
        remove_records=args.remove_records,
    )
    if args.json:
        _emit_json(result.to_dict())
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    print(f"keep: {list(result.plan.keep)}")
    print(f"protected: {result.plan.protected}")
    print(
        f"{verb} the models of iterations {list(result.plan.remove)}"
        + ("" if args.dry_run else f" ({len(result.removed)} files, {result.freed_bytes / 1e6:.2f} MB)")
    )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    report = repo.verify_report()
    if args.json:
        _emit_json(report.to_dict())
        return EXIT_INTEGRITY if report.problems else EXIT_OK
    for p in report.problems:
        print(f"PROBLEM {p}")
    checked = [f"{len(report.hashed)} iteration(s) hashed (every recorded file matches its sha256 and size)"]
    if report.records_only:
        checked.append(f"{len(report.records_only)} placeholder/pruned record(s) naming no file")
    if report.opened_only:
        checked.append(
            f"{len(report.opened_only)} seed-format model(s) with no recorded sha256, only opened as SB3 zips "
            "(NOT verified)"
        )
    if report.unchecked:
        checked.append(f"{len(report.unchecked)} seed-format placeholder(s) (nothing to check)")
    where = repo.checkpoints_dir
    if report.problems:
        print(f"{len(report.problems)} problem(s) in {where}; checked: {'; '.join(checked)}")
    elif report.complete:
        print(f"ok: {'; '.join(checked)} in {where}")
    else:
        print(
            f"no problem found, but not everything is verified in {where}: {'; '.join(checked)}; "
            "'sb3-iter-ckpt adopt' records the missing hashes"
        )
    return EXIT_INTEGRITY if report.problems else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    summary = repo.write_summary(args.monitor, args.mode)
    training = repo.write_training_summary(args.monitor, args.mode)
    if args.json:
        _emit_json({"checkpoint_summary": summary, "training_summary": training})
    else:
        best = training.get("best")
        print(f"wrote {repo.root / 'checkpoint_summary.json'} and {repo.root / 'training_summary.json'}")
        print(
            f"{training['total_checkpoints']} checkpoints, {training['placeholders']} placeholders; "
            f"best: {'none' if best is None else 'iteration ' + str(best['iteration'])}"
        )
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    adopted = repo.adopt()
    if args.json:
        _emit_json({"adopted": adopted})
    else:
        print(f"adopted {len(adopted)} legacy iteration(s): {adopted}")
    return EXIT_OK


def _plot_out(args: argparse.Namespace) -> Path:
    """``--out`` as an image file matplotlib can write, checked before the repository is opened."""
    from sb3_iter_ckpt.report.plotting import image_formats

    try:
        formats = image_formats()
    except ImportError as exc:
        raise UsageError('plot needs matplotlib: pip install "sb3-iter-ckpt[plot]"') from exc
    out = Path(args.out)
    if out.suffix.lstrip(".").lower() not in formats:
        raise UsageError(
            f"--out {args.out}: give an image file name ending in one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. progress.png)"
        )
    if out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give an image file name, e.g. {out / 'progress.png'}")
    return out


def cmd_plot(args: argparse.Namespace) -> int:
    from sb3_iter_ckpt.report.plotting import plot_progress

    out = _plot_out(args)
    repo = _open_repo(args)
    metric = args.metric or repo.default_selection()[0]
    cks = repo.list()
    if args.metric and cks and not any(c.score(metric) is not None for c in cks):
        raise CheckpointNotFound(f"no iteration has a value for --metric {metric!r} in {repo.checkpoints_dir}")
    best = repo.best(metric, args.mode)
    try:
        points, holes = plot_progress(out, cks, metric, best, f"{metric} across iterations — {repo.root}")
    except OSError as exc:
        raise UsageError(f"cannot write --out {args.out}: {exc.strerror or exc}; choose a writable path") from exc
    print(f"wrote {out} ({points} points, {holes} placeholders)")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from sb3_iter_ckpt.report import collect_report, default_report_path, write_report

    if args.out is not None and Path(args.out).is_dir():  # before the repository is opened, as plot's --out
        raise UsageError(f"--out {args.out} is a folder; give an HTML file name, e.g. {Path(args.out) / 'report.html'}")
    if args.out is not None and any(p.exists() and not p.is_dir() for p in Path(args.out).parents):
        raise UsageError(f"--out {args.out}: a folder in that path is a file; choose a writable path")
    repo = _open_repo(args)
    data = collect_report(repo)
    try:
        out = write_report(data, args.out or default_report_path(repo))
    except OSError as exc:
        if args.out is None:
            raise  # the repository's own folder: a file system error (exit 1)
        raise UsageError(f"cannot write --out {args.out}: {exc.strerror or exc}; choose a writable path") from exc
    if args.json:
        _emit_json({"path": str(out), "iterations": len(data.rows), "problems": data.problems, "notes": data.notes})
    else:
        verdict = f"verify found {len(data.problems)} problem(s), shown in red" if data.problems else "verify: ok"
        print(f"wrote {out} ({len(data.rows)} iteration(s); {verdict})")
        for note in data.notes:
            print(f"  note: {note}")
    if args.open:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return EXIT_INTEGRITY if data.problems else EXIT_OK


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
        raise UsageError("--workers needs --executor process or --executor ray")
    if args.ray_address and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs Ray: pip install 'sb3-iter-ckpt[ray]'")
    algos = _algos(args)
    if "ppo" in algos and args.n_steps < 2:
        raise UsageError(f"--n-steps {args.n_steps}: PPO needs at least 2 (its minibatches need two samples)")
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

    try:
        for algo in algos:
            algorithm_class(algo)
        _candidates(args)  # duplicate names (--algo ppo,ppo)
    except CheckpointError as exc:
        raise UsageError(f"--algo: {exc}") from None


def _algos(args: argparse.Namespace) -> list[str]:
    """The names in ``--algo`` (one, or several comma-separated), lower-cased as the registry knows them."""
    algos = [a.strip() for a in str(args.algo).split(",")]
    if any(not a for a in algos):
        raise UsageError(f"--algo {args.algo!r}: an empty name; give e.g. ppo or ppo,a2c")
    return [a.lower() if "." not in a else a for a in algos]


def _algo_kwargs(algo: str, n_steps: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if algo.lower() in ("ppo", "a2c"):
        kwargs["n_steps"] = n_steps
    if algo.lower() == "ppo":
        kwargs["batch_size"] = min(64, n_steps)
    return kwargs


def _candidates(args: argparse.Namespace) -> tuple[Any, ...]:
    """The candidates of ``--algo a,b`` and ``--seeds N`` (none for one algorithm and one seed)."""
    from sb3_iter_ckpt.common.candidates import make_candidates

    algos = _algos(args)
    if len(algos) == 1 and args.seeds == 1:
        return ()
    return make_candidates(algos, args.seeds, args.seed, lambda a: _algo_kwargs(a, args.n_steps))


def _prices(args: argparse.Namespace) -> Any:
    from sb3_iter_ckpt.data import load_prices_csv, synthetic_prices

    if not args.data:
        return synthetic_prices(args.n_prices, seed=args.data_seed)
    try:
        return load_prices_csv(
            args.data, date_column=args.date_column, close_column=args.close_column, date_format=args.date_format
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
    return RunOptions(
        args.total_timesteps,
        algo=args.algo if "," not in args.algo else algo,  # one algorithm: as given, as its fingerprint has it
        algo_kwargs=_algo_kwargs(algo, args.n_steps),
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
    )


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
    executor = make_executor(args.executor, args.workers, address=args.ray_address, torch_threads=options.torch_threads)
    runner = WalkForwardRunner(prices, splitter, repo, options=options, progress=not args.json, executor=executor)
    source = args.data or f"synthetic prices (n={args.n_prices}, seed={args.data_seed})"
    if not args.json:
        test = f", test parts of {args.test_size}" if args.test_size else ""
        print(
            f"walk-forward on {source}: {len(runner.windows)} window(s){test}, {args.total_timesteps} timesteps each, "
            f"{_algo_line(runner.options)}, {args.executor} executor{f' x{args.workers}' if args.workers else ''}, "
            f"{runner.options.periods_per_year:g} periods a year, results in {root}"
        )
    try:
        result = runner.run()
    finally:
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
        }
    )
    return EXIT_OK


def cmd_forward(args: argparse.Namespace) -> int:
    repo = _open_repo(args)
    repo.forwards()  # a damaged forward file: an integrity problem (exit 4), not "no forward data"
    report, reason = repo.forward_status()
    if report is None:
        raise CheckpointNotFound(f"no forward data in {repo.root}: {reason}")
    if args.json:
        _emit_json(report)
        return EXIT_OK
    rows = [
        [
            it["iteration"],
            it["candidate"],
            it["selection_score"],
            it["forward"].get("sharpe"),
            it["forward"].get("total_return"),
            "yes" if it["placeholder"] else "",
        ]
        for it in report["iterations"]
    ]
    print(_table(["iter", "candidate", "selection", "fwd sharpe", "fwd return", "placeholder"], rows))
    mine, base = report["stitched"]["metrics"], report["baseline"]
    periods = mine["n_periods"]
    print(f"stitched: {periods} periods, sharpe={_fmt(mine['sharpe'])} total_return={_fmt(mine['total_return'])}")
    for name in ("buy_and_hold", "flat"):
        b = base[name]
        print(
            f"{name.replace('_', '-')}: sharpe={_fmt(b['sharpe'])} total_return={_fmt(b['total_return'])} "
            f"excess_return={_fmt(b['excess_return'])}"
        )
    print(f"walk-forward efficiency: {_fmt(report['overall']['efficiency'])}")
    dsr, pbo = report["deflated_sharpe"], report["pbo"]
    print(f"deflated Sharpe ratio: {_fmt(dsr) if dsr is not None else report['deflated_sharpe_reason']}")
    print(f"PBO: {_fmt(pbo['pbo']) if pbo is not None else report['pbo_reason']}")
    return EXIT_OK


def _object_storage_error(exc: BaseException) -> str | None:
    """A one-line message for an object storage client's own error (botocore's are not ``OSError``), else None."""
    botocore = sys.modules.get("botocore.exceptions")  # loaded only if an s3:// root was opened
    if botocore is None or not isinstance(exc, botocore.BotoCoreError):
        return None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (botocore.NoCredentialsError, botocore.PartialCredentialsError)):
        return (
            f"object storage: {text}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass "
            "--storage-option key=... --storage-option secret=..."
        )
    if isinstance(exc, botocore.EndpointConnectionError):
        return f"object storage: {text}; check endpoint_url and that the server is reachable"
    return f"object storage: {text}; check the URL, the credentials and the --storage-option values"


# -- parser ---------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _positive_float(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number")
    return int(value) if value.is_integer() else value  # 252 as 252: the fingerprint records it so


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="an option of an s3:// (or other URL) root's filesystem, e.g. endpoint_url=http://...; repeatable; "
        "over the JSON object in SB3_ITER_CKPT_STORAGE_OPTIONS",
    )


def _signing_key_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signing-key-file",
        metavar="PATH",
        help="file holding the HMAC key of a signed repository (trailing line breaks ignored); default: the "
        "SB3_ITER_CKPT_SIGNING_KEY environment variable. Never give the key itself on the command line",
    )
    p.add_argument("--signing-key", dest="signing_key_value", help=argparse.SUPPRESS)  # refused with a message


def _selection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitor", help="metric key (dotted for nested); default: as recorded")
    p.add_argument("--mode", choices=["max", "min"], help="default: as recorded")


Subparsers = Any  # argparse's _SubParsersAction


def _repo_parser(sub: Subparsers, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
    """A command on one repository: PATH or --experiment-id, --json, storage options, the signing key."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("path", nargs="?", help="the experiment folder (results/ID); or use --experiment-id")
    p.add_argument("--results-dir", default="results", help="folder holding experiments (default: results)")
    p.add_argument("--experiment-id", help="experiment id: the repository is RESULTS_DIR/ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _storage_option(p)
    _signing_key_file(p)
    p.set_defaults(func=func)
    return p


def _list_parser(sub: Subparsers) -> None:
    p = _repo_parser(sub, "list", "list every iteration (placeholders included)", cmd_list)
    p.add_argument("--monitor", help="metric column to show")


def _show_parser(sub: Subparsers) -> None:
    p = _repo_parser(sub, "show", "show one iteration's record", cmd_show)
    p.add_argument("iteration", type=_non_negative_int)


def _best_parser(sub: Subparsers) -> None:
    _selection_flags(_repo_parser(sub, "best", "the best iteration", cmd_best))


def _analyze_parser(sub: Subparsers) -> None:
    p = _repo_parser(sub, "analyze", "statistics and trend across iterations", cmd_analyze)
    _selection_flags(p)
    p.add_argument("--top-k", type=_positive_int, default=5)


def _prune_parser(sub: Subparsers) -> None:
    help_ = "remove models the retention rules do not keep (best, latest, placeholders are kept)"
    p = _repo_parser(sub, "prune", help_, cmd_prune)
    p.add_argument("--keep-every-n", type=_positive_int)
    p.add_argument("--keep-last-n", type=_positive_int)
    p.add_argument("--keep-best-k", type=_positive_int)
    _selection_flags(p)
    p.add_argument("--dry-run", action="store_true", help="only show the plan")
    p.add_argument("--remove-records", action="store_true", help="delete the pruned iterations' metrics records too")


def _verify_parser(sub: Subparsers) -> None:
    help_ = (
        "hash every recorded file against its sha256 and size and, with the key, check every signature; "
        "seed-format iterations (no hashes) are only opened as SB3 zips and reported as not verified; "
        "exit 4 on problems, and on a signed repository without its key"
    )
    _repo_parser(sub, "verify", help_, cmd_verify)


def _summary_parser(sub: Subparsers) -> None:
    _selection_flags(
        _repo_parser(sub, "summary", "write checkpoint_summary.json and training_summary.json", cmd_summary)
    )


def _adopt_parser(sub: Subparsers) -> None:
    _repo_parser(sub, "adopt", "record hashes for a folder written by the seed's script", cmd_adopt)


def _forward_parser(sub: Subparsers) -> None:
    help_ = (
        "the out-of-sample result: each kept model's forward (test part) figures, the stitched curve against "
        "buy-and-hold and flat, the deflated Sharpe ratio and PBO (exit 3 without forward data)"
    )
    _repo_parser(sub, "forward", help_, cmd_forward)


def _plot_parser(sub: Subparsers) -> None:
    p = _repo_parser(sub, "plot", "plot a metric across iterations (placeholders marked)", cmd_plot)
    p.add_argument("--metric", help="metric key; default: the monitored one")
    p.add_argument("--mode", choices=["max", "min"])
    p.add_argument("--out", required=True, help="output image, e.g. progress.png")


def _report_parser(sub: Subparsers) -> None:
    help_ = "write a self-contained HTML report (exit 4 if verify finds problems)"
    p = _repo_parser(sub, "report", help_, cmd_report)
    p.add_argument("--out", help="the HTML file to write (default: PATH/report.html; ./ID-report.html for a URL)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="CSV with a date and a close column (default: embedded synthetic prices)")
    p.add_argument("--date-column", default="date", help="date column of --data (case-insensitive)")
    p.add_argument("--close-column", default="close", help="close price column of --data (case-insensitive)")
    p.add_argument("--date-format", help="strftime format of the dates of --data (e.g. '%%d.%%m.%%Y %%H:%%M:%%S.%%f')")
    p.add_argument(
        "--periods-per-year",
        type=_positive_float,
        help="bars per year, to annualize the metrics (default: estimated from the dates of --data; 252 for the "
        "synthetic prices)",
    )
    p.add_argument("--n-prices", type=_positive_int, default=1500, help="length of the synthetic series")
    p.add_argument("--data-seed", type=_non_negative_int, default=0)


def _window_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", type=_positive_int, help="at most this many windows")
    p.add_argument("--train-size", type=_positive_int, default=500, help="training rows per window (default 500)")
    p.add_argument("--val-size", type=_positive_int, default=125, help="validation rows per window (default 125)")
    p.add_argument(
        "--test-size",
        type=_non_negative_int,
        help="rows of each window's test part, traded once by its kept model (default: --val-size; 0: none)",
    )
    p.add_argument("--test-gap", type=_non_negative_int, default=0, help="rows skipped between validation and test")
    p.add_argument(
        "--step", type=_positive_int, help="rows between windows (default: --test-size, or --val-size without one)"
    )
    p.add_argument("--gap", type=_non_negative_int, default=0, help="purge gap between train and validation rows")
    p.add_argument("--window-mode", choices=["rolling", "anchored"], default="rolling")


def _training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algo",
        default="ppo",
        help="ppo, a2c or dqn, or several comma-separated (ppo,a2c): each a candidate per window, the one with "
        "the best validation score chosen (default: ppo)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="seeds per algorithm (candidates {algo}-s{k} with seed --seed + k; default 1)",
    )
    p.add_argument(
        "--eval-freq", type=_positive_int, help="evaluate every N timesteps (default: a fifth of an iteration)"
    )
    p.add_argument("--monitor", default="validation.sharpe")
    p.add_argument("--warm-start", action="store_true", help="start each iteration from the previous model")
    p.add_argument("--n-steps", type=_positive_int, default=256, help="rollout length for PPO/A2C")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1: fastest for small MLPs)")


def _execution_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results")
    p.add_argument(
        "--executor",
        choices=["sequential", "process", "ray"],
        default="sequential",
        help="where windows train: this process, a local process pool, or Ray tasks (default: sequential)",
    )
    p.add_argument("--workers", type=_positive_int, help="windows at once for process/ray (default: the CPUs)")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--json", action="store_true")
    _storage_option(p)
    _signing_key_file(p)


def _walk_forward_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "walk-forward",
        help="run walk-forward training (the main job)",
        description="Train on each window, keep each iteration's best by validation Sharpe, and let it trade "
        "the unseen test part after its window.",
    )
    p.add_argument("--experiment-id", required=True)
    p.add_argument("--total-timesteps", type=_positive_int, required=True, help="training timesteps per iteration")
    _data_flags(p)
    _window_flags(p)
    _training_flags(p)
    _execution_flags(p)
    p.set_defaults(func=cmd_walk_forward)


#: The commands, in the order ``--help`` lists them.
_COMMANDS = (
    _list_parser,
    _show_parser,
    _best_parser,
    _analyze_parser,
    _prune_parser,
    _verify_parser,
    _summary_parser,
    _adopt_parser,
    _forward_parser,
    _plot_parser,
    _report_parser,
    _walk_forward_parser,
)


def build_parser() -> argparse.ArgumentParser:
    from sb3_iter_ckpt.common.version import __version__

    parser = argparse.ArgumentParser(
        prog="sb3-iter-ckpt",
        description="Walk-forward training of SB3 agents that keeps every iteration's best model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"sb3-iter-ckpt: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointNotFound as exc:
        print(f"sb3-iter-ckpt: not found: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except SigningKeyError as exc:  # the key is the user's to give: not a damaged repository
        print(f"sb3-iter-ckpt: signing key: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (IntegrityError, RecordError, UnsafePathError) as exc:
        print(f"sb3-iter-ckpt: integrity problem: {exc}; run 'sb3-iter-ckpt verify'", file=sys.stderr)
        return EXIT_INTEGRITY
    except ConfigMismatchError as exc:
        print(f"sb3-iter-ckpt: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    except CheckpointError as exc:
        if isinstance(exc, ValueError):  # bad input, e.g. an unreadable --data CSV (data.DataError)
            print(f"sb3-iter-ckpt: bad input: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"sb3-iter-ckpt: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # e.g. object storage unreachable or access denied
        hint = "; check permissions or the storage credentials" if isinstance(exc, PermissionError) else ""
        print(f"sb3-iter-ckpt: error: {str(exc).rstrip('.')}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        message = _object_storage_error(exc)
        if message is None:
            raise  # a bug, not a user's mistake: keep the traceback
        print(f"sb3-iter-ckpt: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sb3-iter-ckpt: interrupted; committed iterations are safe, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
