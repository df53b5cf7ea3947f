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

from sb3_iter_ckpt.common.prices import equal_weight_index, traded_prices
from sb3_iter_ckpt.errors import CheckpointError

__all__ = [
    "DataError",
    "DEFAULT_REGIMES",
    "synthetic_prices",
    "load_prices_csv",
    "estimate_periods_per_year",
    "data_fingerprint",
    "check_table",
    "equal_weight_index",
    "traded_prices",
    "load_table_csv",
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
_TABLE_FINGERPRINT_VERSION = b"sb3-iter-ckpt/table-fingerprint/v1"


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


def load_table_csv(
    path: str | os.PathLike[str],
    date_column: str = "date",
    close_column: str = "close",
    date_format: str | None = None,
) -> pd.DataFrame:
    """Load a whole CSV as a table: every column but the date, indexed by the dates, sorted.

    The dates and the close column are checked as :func:`load_prices_csv` checks them; the other columns
    pass through as pandas reads them (for an env of the user's that reads features).

    :return: a DataFrame with a sorted DatetimeIndex named ``"date"``; the close column keeps its name.
    :raises DataError: as :func:`load_prices_csv`.
    """
    p = Path(path)
    frame = _read_csv(p, date_column, close_column)
    date_col = _find_column(list(frame.columns), date_column, p)
    close_col = _find_column(list(frame.columns), close_column, p)
    dates = _checked_dates(frame[date_col], date_col, p, date_format)
    frame[close_col] = _checked_close(frame[close_col], close_col, p)
    if len(frame) < 2:
        raise DataError(f"{p}: need at least 2 price rows, found {len(frame)}")
    duplicated = dates.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise DataError(f"{p}: duplicate dates in column {date_col!r} ({_rows(duplicated, frame[date_col])})")
    table = frame.drop(columns=[date_col])
    table.index = pd.DatetimeIndex(dates.to_numpy(), name="date")
    return table.sort_index()


def _table_column(table: pd.DataFrame, wanted: str | None, what: str) -> Any:
    """The column ``wanted`` names (exact, else the unique case-insensitive match); None: a unique close."""
    columns = list(table.columns)
    if wanted is not None and wanted in columns:
        if columns.count(wanted) > 1:
            raise DataError(f"the table has several columns named {wanted!r}; name each column once")
        return wanted
    key = "close" if wanted is None else str(wanted).strip().lower()
    matches = [c for c in columns if str(c).strip().lower() == key]
    if len(matches) == 1:
        return matches[0]
    if wanted is None:
        problem = "several columns" if matches else "no column"
        raise DataError(f"{problem} named close in the table ({columns}); name the traded price with {what}=")
    if matches:
        raise DataError(f"{what} {wanted!r} is ambiguous, several columns match: {matches}")
    raise DataError(f"{what} {wanted!r} is not a column of the table; columns present: {columns}")


def _price_column_values(table: pd.DataFrame, column: Any, what: str) -> None:
    values = table[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(f"{what} {column!r} must be numeric, its dtype is {values.dtype}")
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise DataError(f"{what} {column!r} must be finite and positive prices ({_rows(bad, values)})")


def _table_index(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` indexed by its date column when it has a RangeIndex and one column named date."""
    if isinstance(table.index, pd.RangeIndex):
        dates = [c for c in table.columns if str(c).strip().lower() == "date"]
        if len(dates) == 1:
            try:
                index = pd.DatetimeIndex(pd.to_datetime(table[dates[0]]), name="date")
            except (TypeError, ValueError) as exc:
                raise DataError(f"cannot read the table's column {dates[0]!r} as dates: {exc}") from exc
            table = table.drop(columns=[dates[0]])
            table.index = index
    if table.index.has_duplicates:
        raise DataError(f"the table's index has duplicate labels (e.g. {table.index[table.index.duplicated()][0]!r})")
    if not table.index.is_monotonic_increasing:
        raise DataError("the table's index is not sorted in increasing order; sort it (table.sort_index()) first")
    return table


def check_table(
    table: pd.DataFrame, price_column: str | Sequence[str] | None = None, benchmark_column: str | None = None
) -> tuple[pd.DataFrame, Any, Any]:
    """A table of a run checked once: its index (a DatetimeIndex, or its ``date`` column made one), the traded
    price column (``price_column``, default: the one column named close; several for a portfolio) and the
    optional benchmark column.

    :return: ``(table, price_column, benchmark_column)`` with the columns as the table names them (several
        price columns as a tuple).
    :raises DataError: in one line, for no rows, a duplicate or unsorted index, a missing or ambiguous
        column, or a price or benchmark column that is not finite positive numbers.
    """
    if len(table) == 0:
        raise DataError("the table has no rows")
    if table.columns.has_duplicates:
        raise DataError(f"the table has duplicate column names: {list(table.columns)}")
    table = _table_index(table)
    if price_column is None or isinstance(price_column, str):
        price: Any = _table_column(table, price_column, "price_column")
        _price_column_values(table, price, "price_column")
    else:
        price = tuple(_table_column(table, column, "price_column") for column in price_column)
        for column in price:
            _price_column_values(table, column, "price_column")
    benchmark = None
    if benchmark_column is not None:
        benchmark = _table_column(table, benchmark_column, "benchmark_column")
        _price_column_values(table, benchmark, "benchmark_column")
    return table, price, benchmark


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


def _hash_index(h: Any, index: pd.Index) -> None:
    if isinstance(index, pd.DatetimeIndex):
        h.update(b"datetime:" + str(index.tz).encode())
        # tz_convert(None) -> naive UTC: the same instants hash alike whatever the display zone.
        nanos = index.tz_convert(None) if index.tz is not None else index
        h.update(np.asarray(nanos.to_numpy().astype("datetime64[ns]").astype("<i8")).tobytes())
    elif isinstance(index, pd.RangeIndex):
        h.update(f"range:{index.start}:{index.stop}:{index.step}".encode())
    else:
        h.update(b"other:")
        _hash_labels(h, index)


def _hash_labels(h: Any, labels: Any) -> None:
    for label in labels:
        encoded = repr(label).encode()
        h.update(len(encoded).to_bytes(8, "little") + encoded)


def _canonical(values: np.ndarray) -> np.ndarray:
    """One NaN bit pattern, no negative zero, little-endian whatever the platform."""
    return np.where(np.isnan(values), np.nan, values + 0.0).astype("<f8")


def _table_fingerprint(table: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(_TABLE_FINGERPRINT_VERSION)
    h.update(len(table).to_bytes(8, "little") + len(table.columns).to_bytes(8, "little"))
    _hash_labels(h, table.columns)
    for k in range(len(table.columns)):
        column = table.iloc[:, k]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            h.update(b"numeric:" + _canonical(column.to_numpy(dtype=np.float64, na_value=np.nan)).tobytes())
        else:
            h.update(f"values:{column.dtype}:".encode())
            _hash_labels(h, column)
    _hash_index(h, table.index)
    return h.hexdigest()


def data_fingerprint(series: pd.Series | pd.DataFrame | Sequence[float] | np.ndarray) -> str:
    """A stable sha256 hex digest of a price series' values and index, or of a whole table.

    The digest depends on the float64 values (``-0.0`` and ``0.0`` hash alike, all NaNs hash alike) and the
    index (timestamps as UTC nanoseconds since the epoch plus the time zone name, so the datetime resolution
    pandas happened to pick does not matter; other index types by their ``repr``). The series name and the
    index frequency are ignored. Array-likes without an index hash as a default ``RangeIndex`` would.

    A DataFrame hashes its column names in order, every column's values (numbers as above, other columns by
    each value's ``repr``) and its index, under its own version tag: a changed feature column changes it.

    :param series: a pandas Series or DataFrame, or any 1-D array-like of numbers.
    :return: 64 hexadecimal characters.
    """
    if isinstance(series, pd.DataFrame):
        return _table_fingerprint(series)
    if not isinstance(series, pd.Series):
        series = pd.Series(np.asarray(series, dtype=np.float64))
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if values.ndim != 1:
        raise TypeError(f"data_fingerprint expects 1-D data, got shape {values.shape}")
    values = _canonical(values)

    h = hashlib.sha256()
    h.update(_FINGERPRINT_VERSION)
    h.update(len(values).to_bytes(8, "little"))
    h.update(values.tobytes())
    _hash_index(h, series.index)
    return h.hexdigest()
