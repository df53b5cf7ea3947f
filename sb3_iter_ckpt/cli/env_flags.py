"""The flags that tell how a user's env is read (``--step-reader``, ``--position-key``) and which columns of
``--data`` are its prices (``--close-column a,b``): each turned into what the runner takes, or one
``UsageError`` line before any data is loaded."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from sb3_iter_ckpt.cli.shared import UsageError

#: ``--step-reader``'s presets, by name (``StepReader``'s class methods).
PRESETS = ("trading-env", "gym-anytrading", "gym-trading-env")

READER_HELP = (
    "how each step of --env is read: return:KEY (info[KEY] is the step's net return; default return:return), "
    "equity:KEY (info[KEY] is the portfolio value: returns from its ratio), fn:MODULE:FUNCTION "
    "(FUNCTION(info) -> the return), or a preset: " + ", ".join(PRESETS)
)


def price_columns(args: argparse.Namespace) -> tuple[str, ...]:
    """``--close-column``'s names: one traded price, or several (comma-separated) for a portfolio ``--env``."""
    names = tuple(name.strip() for name in str(args.close_column).split(","))
    if len(names) > 1 and (not args.env or not args.data):
        raise UsageError(
            f"--close-column {args.close_column}: several price columns are a portfolio env's; give --env and --data"
        )
    if not all(names) or len(set(names)) != len(names):
        raise UsageError(f"--close-column {args.close_column!r}: give distinct, non-empty column names")
    return names


def _return_fn(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--step-reader fn:{spec}: give fn:MODULE:FUNCTION (e.g. fn:mypackage.envs:step_return)")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # the user's module: any failure is one line
        raise UsageError(f"--step-reader fn:{spec}: cannot import it ({type(exc).__name__}: {exc})") from None
    if not callable(target):
        raise UsageError(f"--step-reader fn:{spec}: {attr!r} is not callable")
    return target


def step_reader(args: argparse.Namespace) -> Any:
    """The ``StepReader`` of ``--step-reader`` and ``--position-key`` (None: neither given, the default)."""
    from sb3_iter_ckpt.common.steps import StepReader
    from sb3_iter_ckpt.errors import EnvContractError

    spec, position = args.step_reader, args.position_key
    if spec is None and position is None:
        return None
    if not args.env:
        raise UsageError("--step-reader and --position-key read your env (--env); the built-in env has its own")
    position_kw: dict[str, Any] = {}
    if position is not None:
        position_kw["position_key"] = None if position.lower() == "none" else position
    if spec is None or spec in PRESETS:
        base = getattr(StepReader, (spec or "trading-env").replace("-", "_"))()
        fields = {**base.fields(), **position_kw}
        return StepReader(**fields)
    rule, sep, value = spec.partition(":")
    if not sep or not value or rule not in ("return", "equity", "fn"):
        raise UsageError(
            f"--step-reader {spec!r}: use return:KEY, equity:KEY, fn:MODULE:FUNCTION or {', '.join(PRESETS)}"
        )
    chosen: dict[str, Any] = {"return": {"return_key": value}, "equity": {"equity_key": value}}.get(rule) or {
        "return_fn": _return_fn(value)
    }
    try:
        return StepReader(**chosen, **position_kw)
    except EnvContractError as exc:
        raise UsageError(f"--step-reader {spec}: {exc}") from None
