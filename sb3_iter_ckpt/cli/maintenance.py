"""The maintenance commands: ``analyze``, ``prune``, ``summary``, ``adopt``."""

from __future__ import annotations

import argparse

from sb3_iter_ckpt.cli.shared import EXIT_OK, UsageError, _emit_json, _fmt, _open_repo, _table


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
