"""What trading a part and stitching the parts both check first: the prices, a window's test part, the rows
its returns are dated on, the annualization and the candidate's name."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.envs.trading import price_array
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.splitter import Window


def as_prices(prices: Any) -> tuple[np.ndarray, pd.DatetimeIndex | None]:
    """The prices as finite positive float64 values, and their DatetimeIndex (None for any other index)."""
    index = prices.index if isinstance(prices, pd.Series) else None
    try:
        values = price_array(prices)
    except ValueError as exc:
        raise CheckpointError(f"{exc}; pass one series of close prices, cleaned first") from exc
    return values, index if isinstance(index, pd.DatetimeIndex) else None


def check_test_part(window: Window, n: int) -> tuple[int, int]:
    start, stop = getattr(window, "test_start", None), getattr(window, "test_stop", None)
    if start is None or stop is None:
        raise CheckpointError(f"window {getattr(window, 'iteration', '?')} has no test part; split with test_size > 0")
    if not 0 <= start < stop <= n:
        raise CheckpointError(
            f"test part [{start}, {stop}) lies outside the {n} prices; pass the prices the splitter split"
        )
    return int(start), int(stop)


def dated_rows(start: int, stop: int, n: int) -> np.ndarray:
    """Rows the returns of decisions at ``start .. stop - 1`` are dated on (the last row of the data at most)."""
    return np.arange(start + 1, min(stop, n - 1) + 1, dtype=np.int64)


def check_ppy(periods_per_year: Any) -> float:
    ok = isinstance(periods_per_year, numbers.Real) and not isinstance(periods_per_year, bool)
    if not ok or not (math.isfinite(float(periods_per_year)) and periods_per_year > 0):
        raise CheckpointError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return periods_per_year  # an int stays an int, as trading_metrics records it


def check_candidate(candidate: Any) -> str | None:
    if candidate is not None and (not isinstance(candidate, str) or not candidate):
        raise CheckpointError(f"candidate must be a non-empty name or None, got {candidate!r}")
    return candidate
