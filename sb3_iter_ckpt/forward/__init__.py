"""Forward (out-of-sample) evaluation: every kept model trades the unseen test part after its window.

Selection on validation picks the best of several noisy evaluations of the same data, so its scores are
optimistic by construction. Here each iteration's kept model trades its window's *test* part once,
deterministically, and the test parts are stitched into one out-of-sample account curve, compared with
buy-and-hold and flat over exactly the same periods, and judged with the deflated Sharpe ratio and the
probability of backtest overfitting (:mod:`sb3_iter_ckpt.stats.overfitting`).

Timing, the same as :class:`~sb3_iter_ckpt.envs.trading.TradingEnv`'s: the model trades the built-in env
over ``prices[test_start - window_size : test_stop + 1]``. A decision at row ``t`` (``test_start <= t <
test_stop``) sees closes up to row ``t`` only and earns the move from ``t`` to ``t + 1``; that return is
dated on row ``t + 1``, when it is realized. The last window of the data earns what the data allows (its
last decision is at the last row but one). With the splitter's default ``step == test_size`` the test parts
tile the data, so the stitched returns are dated on every row from ``test_start + 1`` of the first window
to ``test_stop`` of the last (or the last row of the data), each row traded by the model of its window.

Each test part starts flat: a model that holds a position across a boundary pays the entry cost again.
That is conservative, and it makes each window's result depend on nothing but its own model and prices,
so re-evaluating one window gives the same bytes.

A hand-written training loop has no prices and no windows, only a test env: :func:`trade_env` trades it
once per iteration (``IterationCheckpointCallback(..., test_env=)`` and
``sb3_iter_ckpt.trade_forward`` call it), numbering each test part's periods after the previous
iteration's, so its curve is stitched in iteration order; dates and the prices buy-and-hold needs come from
the env's ``info`` or a :class:`ForwardEnv` (without prices, buy-and-hold is shown as not available, with
the reason).

Nothing here reads or writes files: :meth:`ForwardResult.to_json_bytes` and
:meth:`StitchedForward.to_csv_bytes` give the bytes, the repository stores them.
"""

# The public layer: each name is defined in the module of its job (DEVELOPERS.md's module index); the
# package's own modules import it from there.
from sb3_iter_ckpt.forward import result
from sb3_iter_ckpt.forward.loop import ForwardEnv, trade_env
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.forward.statistics import MIN_BLOCK_ROWS as MIN_BLOCK_ROWS
from sb3_iter_ckpt.forward.statistics import forward_report, forward_statistics, pbo_partitions, selection_vs_forward
from sb3_iter_ckpt.forward.stitching import StitchedForward, stitch
from sb3_iter_ckpt.forward.trade import evaluate_forward, placeholder_forward

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ForwardEnv",
    "ForwardResult",
    "StitchedForward",
    "evaluate_forward",
    "placeholder_forward",
    "trade_env",
    "stitch",
    "selection_vs_forward",
    "forward_statistics",
    "pbo_partitions",
    "forward_report",
]

# Bound here again (the same objects) so that the API page, which documents this module, keeps their
# descriptions: autodoc reads ``#:`` comments from the documented module's own source.
#: ``format`` of a forward result's JSON; readers refuse any other.
FORMAT = result.FORMAT
#: Layout version of that JSON; readers refuse newer ones.
FORMAT_VERSION = result.FORMAT_VERSION
