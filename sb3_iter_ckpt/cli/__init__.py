"""The ``sb3-iter-ckpt`` command line: run a walk-forward, then list, inspect, verify and prune its checkpoints.

Exit codes: 0 success, 1 other error, 2 bad usage (a signing key missing or not the repository's included),
3 not found, 4 integrity problem (``verify`` of a signed repository without its key included), 5 configuration mismatch.

The console script is ``sb3_iter_ckpt.cli:main``; ``python -m sb3_iter_ckpt.cli`` runs it too. The parser and
``main`` live in ``parser.py``, the commands in one module per family (``reading``, ``maintenance``, ``results``,
``walk_forward``), what they share in ``shared.py``.
"""

from __future__ import annotations

from sb3_iter_ckpt.cli.parser import build_parser, main
from sb3_iter_ckpt.cli.shared import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_MISMATCH,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)

# The walk-forward's flags -> prices, splitter and options, as the fingerprint tests rebuild a run from them.
from sb3_iter_ckpt.cli.walk_forward import _prices, _run_options, _splitter

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTEGRITY",
    "EXIT_MISMATCH",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "_prices",
    "_run_options",
    "_splitter",
]
