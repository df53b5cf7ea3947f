"""The commands that present a run's results: ``plot`` (a PNG), ``report`` (the HTML page), ``forward``
(the out-of-sample figures).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.cli.shared import (
    EXIT_INTEGRITY,
    EXIT_OK,
    UsageError,
    _emit_json,
    _fmt,
    _open_repo,
    _table,
)
from sb3_iter_ckpt.errors import CheckpointNotFound


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
        if b is None:
            print(f"{name.replace('_', '-')}: not available: {base.get(name + '_reason')}")
            continue
        print(
            f"{name.replace('_', '-')}: sharpe={_fmt(b['sharpe'])} total_return={_fmt(b['total_return'])} "
            f"excess_return={_fmt(b['excess_return'])}"
        )
    print(f"walk-forward efficiency: {_fmt(report['overall']['efficiency'])}")
    dsr, pbo = report["deflated_sharpe"], report["pbo"]
    print(f"deflated Sharpe ratio: {_fmt(dsr) if dsr is not None else report['deflated_sharpe_reason']}")
    print(f"PBO: {_fmt(pbo['pbo']) if pbo is not None else report['pbo_reason']}")
    caveat = _caveat(repo)
    if caveat:
        print(f"mind: every return here is {caveat}")
    return EXIT_OK


def _caveat(repo: Any) -> str | None:
    """The returns' caveat of the run's recorded reader (realized profit only), from a trustworthy
    ``walk_forward.json``."""
    from sb3_iter_ckpt.common.steps import realized_caveat
    from sb3_iter_ckpt.repository import checked_run_file

    run, problem = checked_run_file(repo)
    return None if run is None or problem else realized_caveat(run["config"].get("step_reader"))
