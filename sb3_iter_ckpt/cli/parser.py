"""The ``sb3-iter-ckpt`` parser (one function per command, in the order ``--help`` lists them) and ``main``:
parse, run the command, map its error to an exit code and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from sb3_iter_ckpt.cli.env_flags import READER_HELP
from sb3_iter_ckpt.cli.maintenance import cmd_adopt, cmd_analyze, cmd_prune, cmd_summary
from sb3_iter_ckpt.cli.reading import cmd_best, cmd_list, cmd_show, cmd_verify
from sb3_iter_ckpt.cli.results import cmd_forward, cmd_plot, cmd_report
from sb3_iter_ckpt.cli.shared import EXIT_ERROR, EXIT_INTEGRITY, EXIT_MISMATCH, EXIT_NOT_FOUND, EXIT_USAGE, UsageError
from sb3_iter_ckpt.cli.walk_forward import cmd_walk_forward
from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointNotFound,
    ConfigMismatchError,
    IntegrityError,
    RecordError,
    SigningKeyError,
    UnsafePathError,
)


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
    p = _repo_parser(sub, "forward", help_, cmd_forward)
    p.add_argument(
        "--logits",
        action="store_true",
        help="with --json: every CSCV logit of PBO too (pbo.logits; 12,870 numbers with 16 blocks), "
        "beside their count, quantiles and histogram (pbo.logit_summary)",
    )
    _trials_flag(p)


def _trials_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="the trials you compared to find this strategy, when more than the run's candidates (e.g. the "
        "configurations a hand-written loop tried): the deflated Sharpe ratio deflates by them (default: the "
        "candidates, at least 1); give their Sharpe ratios' variance with --trials-variance",
    )
    p.add_argument(
        "--trials-variance",
        type=float,
        metavar="V",
        help="the variance of the --trials' per-period (not annualized) Sharpe ratios (default: the candidates')",
    )


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
    _trials_flag(p)


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="CSV with a date and a close column (default: embedded synthetic prices)")
    p.add_argument("--date-column", default="date", help="date column of --data (case-insensitive)")
    p.add_argument(
        "--close-column",
        default="close",
        help="the traded price column of --data (case-insensitive); several, comma-separated, for a portfolio --env "
        "(buy-and-hold is then their equal-weight portfolio, rebalanced every period)",
    )
    p.add_argument("--date-format", help="strftime format of the dates of --data (e.g. '%%d.%%m.%%Y %%H:%%M:%%S.%%f')")
    p.add_argument(
        "--periods-per-year",
        type=_positive_float,
        help="bars per year, to annualize the metrics (default: estimated from the dates of --data; 252 for the "
        "synthetic prices)",
    )
    p.add_argument("--n-prices", type=_positive_int, default=1500, help="length of the synthetic series")
    p.add_argument("--data-seed", type=_non_negative_int, default=0)


def _env_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        metavar="MODULE:CALLABLE",
        help="your env: make_env(table, seed) -> gym.Env, by import path; it receives the --data CSV's rows "
        "(every column, indexed by date, with --history rows before each part) (default: the built-in env)",
    )
    p.add_argument("--env-kwargs", metavar="JSON", help="keyword arguments of --env's callable, a JSON object")
    p.add_argument("--step-reader", metavar="RULE", help=READER_HELP)
    p.add_argument(
        "--position-key",
        metavar="KEY",
        help="info[KEY] of --env's steps is the position held (default: position; none: the env reports none)",
    )
    p.add_argument(
        "--benchmark-column", help="column of --data whose returns are buy-and-hold's (default: --close-column)"
    )
    p.add_argument("--transaction-cost", type=float, help="the built-in env's cost per unit of position change")
    p.add_argument(
        "--history",
        type=int,
        help="rows of history the env needs before its first decision (the built-in env's window_size, default 10)",
    )


_WALK_FORWARD_EXAMPLE = """your env (--env), the contract: make_env(table, seed) -> a gymnasium env over the table's
rows (every column of --data, indexed by date, with --history rows before each part and one row after it).
It takes one step per row after the --history rows but the last; the decision at row t earns its return
on row t + 1, which is where that return is dated. Each step's info reports the step's net return
(info["return"], or the rule of --step-reader) and the position held (info["position"], or --position-key).
Before anything trains, a preflight steps the env and refuses one that breaks this (exit 2). Docs: "Bring
your own env" (docs/guide/env_contract.md).

example, your env on a CSV of OHLCV and indicator columns:
  sb3-iter-ckpt walk-forward --experiment-id feat1 --total-timesteps 20000 --data prices.csv \\
      --close-column close --env mypackage.envs:make_env --env-kwargs '{"window": 30}' --history 30
  where mypackage/envs.py has  def make_env(table, seed, window=10): ...  (table: a pandas DataFrame)

example, gym-trading-env's TradingEnv (its portfolio valuation read as the equity), test parts:
  sb3-iter-ckpt walk-forward --experiment-id gte --total-timesteps 20000 --data prices.csv --test-size 120 \\
      --env mypackage.envs:make_gte --history 0 --step-reader gym-trading-env"""


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
        help="a2c, ppo, dqn, ddpg, sac, td3; with the [contrib] extra tqc, qrdqn, trpo, ars, recurrentppo; or an "
        "import path; or several comma-separated (a2c,ppo,ddpg,sac,td3): each a candidate per window, the one "
        "with the best validation score chosen; DDPG, SAC, TD3, TQC trade the built-in env's continuous "
        "positions (default: ppo)",
    )
    p.add_argument(
        "--algo-kwargs",
        action="append",
        metavar="ALGO:JSON",
        help="hyperparameters of one algorithm of --algo, a JSON object, e.g. "
        'sac:\'{"learning_starts": 1000, "buffer_size": 100000}\'; repeat for others',
    )
    p.add_argument(
        "--policy",
        help="the policy every candidate is built with: an alias of its algorithm (MlpPolicy, MlpLstmPolicy...) or a "
        "class's import path (package.module:Class); default: MlpPolicy, MultiInputPolicy for a Dict observation, "
        "a recurrent algorithm's own (MlpLstmPolicy)",
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
    p.add_argument(
        "--n-steps", type=_positive_int, default=256, help="rollout length of PPO, A2C, TRPO and RecurrentPPO"
    )
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1: fastest for small MLPs)")


def _execution_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results")
    p.add_argument(
        "--executor",
        choices=["auto", "sequential", "process", "ray"],
        default="auto",
        help="where windows train: auto (default: a local process pool when several CPUs and windows allow it, "
        "else this process; the run says which and why), sequential, process (a local pool), or Ray tasks",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="windows at once for process/ray, at most this many for auto (default: the CPUs)",
    )
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--json", action="store_true")
    _storage_option(p)
    _signing_key_file(p)


def _walk_forward_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "walk-forward",
        help="run walk-forward training (the main job)",
        description="Train on each window, keep each iteration's best by validation Sharpe, and let it trade\n"
        "the unseen test part after its window.",
        epilog=_WALK_FORWARD_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--experiment-id", required=True)
    p.add_argument("--total-timesteps", type=_positive_int, required=True, help="training timesteps per iteration")
    _data_flags(p)
    _env_flags(p)
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


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """``warnings.showwarning`` while a command runs: one ``sb3-iter-ckpt: warning: ...`` line on stderr (no
    source line, no file path of the package); a category other than ``UserWarning`` is named."""
    text = " ".join(str(message).split())
    kind = "" if category is UserWarning else f"{category.__name__}: "
    try:
        print(f"sb3-iter-ckpt: warning: {kind}{text}", file=file if file is not None else sys.stderr)
    except OSError:  # stderr closed: a warning never stops a command, as with Python's own showwarning
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning  # restored after the command: tests and other callers run main in-process
    warnings.showwarning = _one_line_warning
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown


def _run(args: argparse.Namespace) -> int:
    """The command of ``args``; its error -> its exit code and a one-line message."""
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
