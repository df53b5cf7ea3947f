"""The reading commands: ``list``, ``show``, ``best``, ``verify``. They import neither torch nor SB3
(``tests/test_cli_imports.py``).
"""

from __future__ import annotations

import argparse

from sb3_iter_ckpt.cli.shared import (
    EXIT_INTEGRITY,
    EXIT_OK,
    _ck_dict,
    _emit_json,
    _fmt,
    _open_repo,
    _table,
)
from sb3_iter_ckpt.errors import CheckpointNotFound


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
