"""Price data for walk-forward runs: a seeded synthetic generator, a strict CSV loader and a fingerprint.

It uses pandas (a dependency of the package) for dates and CSV parsing.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.errors import CheckpointError

__all__ = [
    "DataError",
    "DEFAULT_REGIMES",
    "synthetic_prices",
    "load_prices_csv",
    "estimate_periods_per_year",
    "data_fingerprint",
]


class DataError(CheckpointError, ValueError):
    """A price file or series is missing, malformed or unusable.

    A ``ValueError`` (it is bad input) and, like every error of this package, a ``CheckpointError``.
    """


#: Default regimes of :func:`synthetic_prices`: name -> (annual drift, annual volatility).
DEFAULT_REGIMES: dict[str, tuple[float, float]] = {
    "bull": (0.20, 0.15),
    "bear": (-0.25, 0.30),
    "sideways": (0.0, 0.10),
}

# Bumped whenever the byte layout hashed by data_fingerprint changes, so old and new digests never collide.
_FINGERPRINT_VERSION = b"sb3-iter-ckpt/data-fingerprint/v1"


def _regime_params(regimes: Mapping[str, Sequence[float]] | Sequence[Sequence[float]] | None) -> np.ndarray:
    """``(k, 2)`` array of (annual drift, annual vol) pairs, validated."""
    if regimes is None:
        regimes = DEFAULT_REGIMES
    pairs = list(regimes.values()) if isinstance(regimes, Mapping) else list(regimes)
    if not pairs:
        raise ValueError("regimes must contain at least one (drift, volatility) pair")
    try:
        params = np.asarray(pairs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"regimes must be (drift, volatility) pairs: {exc}") from exc
    if params.ndim != 2 or params.shape[1] != 2:
        raise ValueError(f"regimes must be (drift, volatility) pairs, got shape {params.shape}")
    if not np.all(np.isfinite(params)) or np.any(params[:, 1] < 0):
        raise ValueError("regime drifts must be finite and volatilities finite and >= 0")
    return params


def synthetic_prices(
    n: int = 2000,
    seed: int | None = 0,
    start_price: float = 100.0,
    regimes: Mapping[str, Sequence[float]] | Sequence[Sequence[float]] | None = None,
    start: str = "2015-01-01",
    freq: str = "B",
    *,
    persistence: float = 0.98,
    periods_per_year: float = 252,
) -> pd.Series:
    """Close prices from a geometric Brownian motion whose drift and volatility follow a Markov chain.

    Each step the chain stays in its regime with probability ``persistence`` and otherwise jumps to one of the
    other regimes uniformly at random, which gives trends and calm/volatile phases for an agent to learn.
    The same arguments always produce the same series (a ``numpy.random.Generator`` seeded with ``seed``).

    :param n: number of prices (>= 2).
    :param seed: seed of ``numpy.random.default_rng``.
    :param start_price: first price (> 0).
    :param regimes: mapping name -> ``(annual_drift, annual_volatility)`` or a sequence of such pairs;
        defaults to :data:`DEFAULT_REGIMES` (bull / bear / sideways).
    :param start: first timestamp of the index.
    :param freq: pandas frequency of the index (``"B"``: business days).
    :param persistence: per-step probability of staying in the current regime, in ``[0, 1]``.
    :param periods_per_year: steps per year, to turn the annual drift/volatility into per-step values.
    :return: float64 Series named ``"close"`` with a DatetimeIndex named ``"date"``; every value > 0.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    n = int(n)
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"start_price must be positive and finite, got {start_price!r}")
    if not 0.0 <= persistence <= 1.0:
        raise ValueError(f"persistence must be in [0, 1], got {persistence!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
    params = _regime_params(regimes)
    k = len(params)
    rng = np.random.default_rng(seed)

    # Draw everything up front, in a fixed order, so the series depends on nothing but the arguments.
    state = int(rng.integers(k))
    stay = rng.random(n - 1) < persistence
    jumps = rng.integers(1, max(k, 2), size=n - 1)  # offset to a *different* regime
    shocks = rng.standard_normal(n - 1)

    states = np.empty(n - 1, dtype=np.int64)
    for t in range(n - 1):
        if not stay[t] and k > 1:
            state = (state + int(jumps[t])) % k
        states[t] = state

    dt = 1.0 / float(periods_per_year)
    mu = params[states, 0]
    sigma = params[states, 1]
    log_returns = (mu - 0.5 * sigma**2) * dt + sigma * math.sqrt(dt) * shocks
    log_prices = math.log(start_price) + np.concatenate(([0.0], np.cumsum(log_returns)))
    index = pd.date_range(start=start, periods=n, freq=freq, name="date")
    return pd.Series(np.exp(log_prices), index=index, name="close", dtype=np.float64)


def _find_column(columns: Sequence[Any], wanted: str, path: Path) -> Any:
    """The column named ``wanted``: exact match first, else the unique case-insensitive match."""
    if wanted in columns:
        return wanted
    key = wanted.strip().lower()
    matches = [c for c in columns if str(c).strip().lower() == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise DataError(f"{path}: column {wanted!r} is ambiguous, several columns match: {matches}")
    raise DataError(f"{path}: no column {wanted!r} (case-insensitive); columns present: {list(columns)}")


def _rows(mask: np.ndarray, values: pd.Series, limit: int = 5) -> str:
    """A short description of the offending rows (1-based data rows, header not counted)."""
    positions = np.flatnonzero(mask)
    shown = ", ".join(f"row {p + 1}: {values.iloc[p]!r}" for p in positions[:limit])
    more = f" and {len(positions) - limit} more" if len(positions) > limit else ""
    return f"{shown}{more}"


#: A day/month date with a four-digit year last, and whatever follows (a time): ``13.01.2017 00:00:00.000``.
_DAY_MONTH = re.compile(r"^\s*(\d{1,2})([./-])(\d{1,2})\2(\d{4})((?:[\sT].*)?)$", re.DOTALL)
_FORMAT_EXAMPLE = "%d.%m.%Y %H:%M:%S.%f"


def _day_month_to_iso(parts: pd.DataFrame, raw: pd.Series, column: Any, path: Path) -> pd.Series:
    """ISO strings from day/month dates, day-first or month-first as the column proves; refused if it cannot."""
    first, second = parts[0].astype(float), parts[2].astype(float)
    day_first, month_first = bool((first > 12).any()), bool((second > 12).any())
    hint = f"pass --date-format (a strftime format such as {_FORMAT_EXAMPLE!r} or '%m/%d/%Y')"
    if day_first == month_first:
        problem = (
            "some rows read only day-first and others only month-first"
            if day_first
            else f"every value reads both day-first and month-first (e.g. {raw.dropna().iloc[0]!r})"
        )
        raise DataError(f"{path}: column {column!r} is ambiguous: {problem}; {hint}")
    day, month = (parts[0], parts[2]) if day_first else (parts[2], parts[0])
    return parts[3] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + parts[4]


def _parse_dates(raw: pd.Series, column: Any, path: Path, date_format: str | None) -> pd.Series:
    """``raw`` as timestamps (NaT where a value cannot be read: the caller reports those rows)."""
    try:
        if date_format is not None:
            return pd.to_datetime(raw, format=date_format, errors="coerce")
        parts = raw.astype("string").str.extract(_DAY_MONTH)
        if parts[0].notna().any():
            # A day/month column: rows of another form stay NaT and are reported as unparsable.
            return pd.to_datetime(_day_month_to_iso(parts, raw, column, path), format="ISO8601", errors="coerce")
        return pd.to_datetime(raw, errors="coerce")
    except (ValueError, TypeError) as exc:  # e.g. mixed time zones, or a bad directive in date_format
        raise DataError(f"{path}: cannot parse column {column!r} as dates: {exc}") from exc


def _read_csv(p: Path, date_column: str, close_column: str) -> pd.DataFrame:
    if not p.is_file():
        raise DataError(f"price file not found: {p}")
    try:
        return pd.read_csv(p)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{p}: file is empty (expected a header with {date_column!r} and {close_column!r})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{p}: cannot read as CSV: {exc}") from exc


def _checked_dates(raw_dates: pd.Series, date_col: str, p: Path, date_format: str | None) -> pd.Series:
    """The parsed dates; ``DataError`` naming the rows that are missing or unparsable."""
    dates = _parse_dates(raw_dates, date_col, p, date_format)
    bad_dates = dates.isna().to_numpy()
    if bad_dates.any():
        expected = f"the date format {date_format!r}" if date_format else "one consistent format such as YYYY-MM-DD"
        raise DataError(
            f"{p}: unparsable or missing dates in column {date_col!r} ({_rows(bad_dates, raw_dates)}); "
            f"use {expected}, or pass --date-format (a strftime format such as {_FORMAT_EXAMPLE!r})"
        )
    return dates


def _checked_close(raw_close: pd.Series, close_col: str, p: Path) -> pd.Series:
    """The closes as float64; ``DataError`` naming the rows that are missing, non-numeric or <= 0."""
    close = pd.to_numeric(raw_close, errors="coerce").astype(np.float64)
    bad_close = ~np.isfinite(close.to_numpy())
    if bad_close.any():
        raise DataError(f"{p}: missing or non-numeric values in column {close_col!r} ({_rows(bad_close, raw_close)})")
    non_positive = close.to_numpy() <= 0
    if non_positive.any():
        raise DataError(f"{p}: close prices must be > 0 ({_rows(non_positive, raw_close)})")
    return close


def load_prices_csv(
    path: str | os.PathLike[str],
    date_column: str = "date",
    close_column: str = "close",
    date_format: str | None = None,
) -> pd.Series:
    """Load close prices from a CSV file, strictly.

    Column names are matched case-insensitively (``Date``/``Close`` work). Rows are sorted by date.

    Dates: ISO forms (``2017-01-13``, ``2017-01-13 09:00:00.000``) are read as they are. Day/month forms
    with a four-digit year last (``13.01.2017 00:00:00.000``, ``01/13/2017``; separator ``.``, ``/`` or
    ``-``, any time after) are day-first or month-first only when the column proves it: a first number above
    12 somewhere means day-first, a second number above 12 means month-first. A column where every value
    could be either (``01.02.2017``) is refused rather than guessed; so is one where some rows prove each.
    ``date_format`` (a strftime format, the CLI's ``--date-format``) settles it and every value must match.

    :param path: CSV file with a header row.
    :param date_column: name of the date column.
    :param close_column: name of the close price column.
    :param date_format: strftime format of the dates (e.g. ``"%d.%m.%Y %H:%M:%S.%f"``); None: as above.
    :return: float64 Series named ``"close"`` with a sorted DatetimeIndex named ``"date"``.
    :raises DataError: if the file is missing or unreadable, a column is missing (the message lists the
        columns present), a date cannot be parsed or is ambiguous, a close is missing, non-numeric,
        non-finite or <= 0, there are fewer than 2 rows, or a date appears twice.
    """
    p = Path(path)
    frame = _read_csv(p, date_column, close_column)
    date_col = _find_column(list(frame.columns), date_column, p)
    close_col = _find_column(list(frame.columns), close_column, p)
    raw_dates = frame[date_col]
    dates = _checked_dates(raw_dates, date_col, p, date_format)
    close = _checked_close(frame[close_col], close_col, p)
    if len(frame) < 2:
        raise DataError(f"{p}: need at least 2 price rows, found {len(frame)}")

    duplicated = dates.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise DataError(f"{p}: duplicate dates in column {date_col!r} ({_rows(duplicated, raw_dates)})")

    series = pd.Series(close.to_numpy(), index=pd.DatetimeIndex(dates.to_numpy(), name="date"), name="close")
    # Dates are unique at this point, so the sorted order is fully determined.
    return series.sort_index()


def estimate_periods_per_year(index: Any) -> float | None:
    """Bars per year of calendar time, from the timestamps: the annualization the data itself implies.

    ``(n - 1) / years``, where ``n`` is the number of timestamps and ``years`` the time from the first to
    the last one in 365.25-day years: ``n - 1`` bars fill that span. It gives about 252 for daily bars of an
    exchange calendar (weekdays without holidays: 365.25 * 5 / 7, about 261), about 6,260 for 24x5 hourly
    FX (120 bars a week), 8,766 for 24x7 hourly crypto (24 * 365.25), 52.2 for weekly bars.

    :param index: a pandas index, or a Series/DataFrame (its index).
    :return: the estimate; None when the index has no dates (a RangeIndex: keep your default), fewer
        than two of them, or no time between the first and the last.
    """
    if isinstance(index, (pd.Series, pd.DataFrame)):
        index = index.index
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return None
    seconds = (index.max() - index.min()).total_seconds()
    if not seconds > 0:
        return None
    return (len(index) - 1) / (seconds / (365.25 * 86400.0))


def data_fingerprint(series: pd.Series | Sequence[float] | np.ndarray) -> str:
    """A stable sha256 hex digest of a price series' values and index.

    The digest depends on the float64 values (``-0.0`` and ``0.0`` hash alike, all NaNs hash alike) and the
    index (timestamps as UTC nanoseconds since the epoch plus the time zone name, so the datetime resolution
    pandas happened to pick does not matter; other index types by their ``repr``). The series name and the
    index frequency are ignored. Array-likes without an index hash as a default ``RangeIndex`` would.

    :param series: a pandas Series, or any 1-D array-like of numbers.
    :return: 64 hexadecimal characters.
    """
    if isinstance(series, pd.DataFrame):
        raise TypeError("data_fingerprint expects a Series or a 1-D array, not a DataFrame")
    if not isinstance(series, pd.Series):
        series = pd.Series(np.asarray(series, dtype=np.float64))
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if values.ndim != 1:
        raise TypeError(f"data_fingerprint expects 1-D data, got shape {values.shape}")
    # Canonical bytes: one NaN bit pattern, no negative zero, little-endian whatever the platform.
    values = np.where(np.isnan(values), np.nan, values + 0.0).astype("<f8")

    h = hashlib.sha256()
    h.update(_FINGERPRINT_VERSION)
    h.update(len(values).to_bytes(8, "little"))
    h.update(values.tobytes())
    index = series.index
    if isinstance(index, pd.DatetimeIndex):
        h.update(b"datetime:" + str(index.tz).encode())
        # tz_convert(None) -> naive UTC: the same instants hash alike whatever the display zone.
        nanos = index.tz_convert(None) if index.tz is not None else index
        h.update(np.asarray(nanos.to_numpy().astype("datetime64[ns]").astype("<i8")).tobytes())
    elif isinstance(index, pd.RangeIndex):
        h.update(f"range:{index.start}:{index.stop}:{index.step}".encode())
    else:
        h.update(b"other:")
        for label in index:
            encoded = repr(label).encode()
            h.update(len(encoded).to_bytes(8, "little") + encoded)
    return h.hexdigest()
