"""The stitched curve: the test parts' returns joined in time order (:func:`stitch`) into a
:class:`StitchedForward`, its baselines (buy-and-hold and flat over the same periods) and its CSV file."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sb3_iter_ckpt.errors import CheckpointError, RecordError
from sb3_iter_ckpt.forward.inputs import as_prices, check_ppy, dated_rows
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.stats.metrics import trading_metrics

_FLOATS = ("position", "return", "equity", "asset_return")
_CSV_COLUMNS = ("row", "date", "iteration", "candidate", "placeholder", "position", "return", "equity", "asset_return")


@dataclass(frozen=True)
class StitchedForward:
    """The test parts' returns in time order, one entry per period, and the asset's own return over each.

    :param rows: the row every return is dated on, consecutive.
    :param dates: their ISO timestamps when the prices have dates, else None.
    :param iterations: the iteration whose model traded each period.
    :param candidates: that iteration's candidate (None without candidates).
    :param placeholders: True where the iteration had no model (flat).
    :param positions: position held over each period.
    :param returns: net return of each period.
    :param equity: equity after each period, compounding across test parts from 1.0.
    :param asset_returns: the asset's return over each period, ``p[t] / p[t - 1] - 1`` for row ``t``
        (buy-and-hold's return); None when a test env gave no prices (``asset_returns_reason`` says so).
    :param periods_per_year: annualization of the metrics.
    :param asset_returns_reason: why the asset's returns are not known: buy-and-hold is not available.
    """

    rows: tuple[int, ...]
    dates: tuple[str, ...] | None
    iterations: tuple[int, ...]
    candidates: tuple[str | None, ...]
    placeholders: tuple[bool, ...]
    positions: tuple[float, ...]
    returns: tuple[float, ...]
    equity: tuple[float, ...]
    asset_returns: tuple[float, ...] | None
    periods_per_year: float
    asset_returns_reason: str | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """:func:`~sb3_iter_ckpt.stats.metrics.trading_metrics` of the stitched returns with their positions."""
        return trading_metrics(
            list(self.returns), positions=list(self.positions), periods_per_year=self.periods_per_year
        )

    def baseline(self) -> dict[str, Any]:
        """Buy-and-hold and flat over exactly the stitched periods, each with the strategy's excess over it.

        Buy-and-hold holds the asset (position 1) over every period and pays no cost: it is what the market
        paid over those periods, independent of the env's costs (one entry at the default cost would lower its
        total return by 0.05 %). Flat earns zero every period.

        :return: ``{"buy_and_hold": {...}, "flat": {...}}``: each the baseline's trading metrics plus
            ``excess_return`` (the strategy's total return minus the baseline's) and ``sharpe_difference``
            (the strategy's annualized Sharpe minus the baseline's; None where either is undefined, always for
            flat, whose Sharpe is undefined). Without the asset's returns ``buy_and_hold`` is None and
            ``buy_and_hold_reason`` says why.
        """
        mine = self.metrics
        ppy, n = self.periods_per_year, len(self.returns)
        out: dict[str, Any] = {}
        if self.asset_returns is None:
            out["buy_and_hold"], out["buy_and_hold_reason"] = None, self.asset_returns_reason or "no prices"
        baselines = (("buy_and_hold", self.asset_returns, 1.0), ("flat", (0.0,) * n, 0.0))
        for name, returns, position in baselines:
            if returns is None:
                continue
            metrics = trading_metrics(list(returns), positions=[position] * n, periods_per_year=ppy)
            metrics["excess_return"] = _difference(mine["total_return"], metrics["total_return"])
            metrics["sharpe_difference"] = _difference(mine["sharpe"], metrics["sharpe"])
            out[name] = metrics
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: first and last row (and date), the metrics, and the baselines."""
        return {
            "first_row": self.rows[0] if self.rows else None,
            "last_row": self.rows[-1] if self.rows else None,
            "first_date": self.dates[0] if self.dates else None,
            "last_date": self.dates[-1] if self.dates else None,
            "metrics": self.metrics,
            "baseline": self.baseline(),
        }

    def to_csv_bytes(self) -> bytes:
        """The curve as CSV, one line per period (``date`` column only when there are dates; ``asset_return``
        empty when not known); floats as ``repr``, ``\\n`` line ends: the same bytes for the same curve."""
        columns = [c for c in _CSV_COLUMNS if c != "date" or self.dates is not None]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for k, row in enumerate(self.rows):
            line = [str(row)] + ([self.dates[k]] if self.dates is not None else [])
            line += [str(self.iterations[k]), self.candidates[k] or "", "true" if self.placeholders[k] else "false"]
            asset = "" if self.asset_returns is None else repr(self.asset_returns[k])
            line += [repr(self.positions[k]), repr(self.returns[k]), repr(self.equity[k]), asset]
            writer.writerow(line)
        return buffer.getvalue().encode("utf-8")

    @classmethod
    def from_csv_bytes(cls, data: bytes, periods_per_year: float, what: str = "forward_returns.csv") -> StitchedForward:
        """Read :meth:`to_csv_bytes`'s output back (the CSV does not hold the annualization: pass it).

        :raises RecordError: for anything that is not such a file.
        """
        return _parse_csv(data, check_ppy(periods_per_year), what)


def _difference(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _csv_fields(line: list[str], columns: list[str], what: str, k: int) -> tuple[Any, ...]:
    cells = dict(zip(columns, line, strict=True))
    try:
        floats = tuple(float(cells[c] or "nan" if c == "asset_return" else cells[c]) for c in _FLOATS)
        ints = (int(cells["row"]), int(cells["iteration"]))
    except ValueError as exc:
        raise RecordError(f"{what}: line {k + 2} has a bad number ({exc}); write the file again") from exc
    if not all(math.isfinite(x) for x in floats[:3]) or cells["placeholder"] not in ("true", "false"):
        raise RecordError(f"{what}: line {k + 2} has a non-finite number or a bad placeholder flag; write it again")
    return (*ints, cells.get("date"), cells["candidate"] or None, cells["placeholder"] == "true", *floats)


def _parse_csv(data: bytes, ppy: float, what: str) -> StitchedForward:
    try:
        lines = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordError(f"{what} is not a CSV file ({exc}); write it again") from exc
    if not lines or lines[0] not in (list(_CSV_COLUMNS), [c for c in _CSV_COLUMNS if c != "date"]):
        raise RecordError(f"{what}: the header must be {','.join(_CSV_COLUMNS)} (date optional); write it again")
    columns = lines[0]
    body = lines[1:]
    if any(len(line) != len(columns) for line in body):
        raise RecordError(f"{what}: every line must have {len(columns)} cells; write the file again")
    parsed = [_csv_fields(line, columns, what, k) for k, line in enumerate(body)]
    rows, iterations, dates, candidates, placeholders, positions, returns, equity, assets = (
        tuple(field[j] for field in parsed) for j in range(9)
    )
    if rows and list(rows) != list(range(rows[0], rows[0] + len(rows))):
        raise RecordError(f"{what}: rows are not consecutive; write the file again")
    empty = [line[-1] == "" for line in body]  # asset_return is the last column
    if any(empty) and not all(empty) or not all(e or math.isfinite(a) for e, a in zip(empty, assets, strict=True)):
        raise RecordError(f"{what}: asset_return must be a finite number on every line or empty on all; write it again")
    unknown = bool(body) and all(empty)
    return StitchedForward(
        rows, dates if "date" in columns else None, iterations, candidates, placeholders, positions, returns,
        equity, None if unknown else assets, ppy, _NO_PRICES if unknown else None,
    )  # fmt: skip


def _check_tiling(ordered: Sequence[ForwardResult]) -> None:
    seen: set[int] = set()
    for result in ordered:
        if result.iteration in seen:
            raise CheckpointError(f"iteration {result.iteration} is given twice; pass one forward result per iteration")
        seen.add(result.iteration)
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        if b.test_start < a.test_stop:
            raise CheckpointError(
                f"test parts overlap: iteration {b.iteration}'s [{b.test_start}, {b.test_stop}) starts before "
                f"iteration {a.iteration}'s [{a.test_start}, {a.test_stop}) ends; split with step == test_size"
            )
        if b.test_start > a.test_stop:
            raise CheckpointError(
                f"rows {a.test_stop}..{b.test_start - 1} between iteration {a.iteration} and {b.iteration} are "
                "traded by no model; the stitched curve needs contiguous test parts: split with step == test_size"
            )


def stitch(results: Sequence[ForwardResult], prices: Any) -> StitchedForward:
    """Join the test parts' returns in time order into one out-of-sample curve.

    :param results: one :class:`ForwardResult` per iteration (any order), all with the same
        ``periods_per_year``, computed on ``prices``.
    :param prices: the close prices the results were computed on (for the asset's returns and a check
        that rows and dates match).
    :return: the :class:`StitchedForward`.
    :raises CheckpointError: for no results, an iteration given twice, overlapping test parts, a hole
        between two test parts (every row of the out-of-sample period must be traded by one model), mixed
        ``periods_per_year``, or results that do not belong to these prices.
    """
    if not results:
        raise CheckpointError("no forward results to stitch; evaluate at least one window with a test part")
    values, index = as_prices(prices)
    ordered = sorted(results, key=lambda r: r.test_start)
    _check_tiling(ordered)
    ppys = {r.periods_per_year for r in ordered}
    if len(ppys) != 1:
        raise CheckpointError(f"the results use different periods_per_year {sorted(ppys)}; evaluate them alike")
    for r in ordered:
        expected = dated_rows(r.test_start, r.test_stop, len(values))
        dates = None if index is None else tuple(index[int(x)].isoformat() for x in expected)
        if r.rows != tuple(int(x) for x in expected) or r.dates != dates:
            raise CheckpointError(
                f"iteration {r.iteration}'s forward result does not match these prices (rows or dates differ); "
                "stitch it with the prices it was evaluated on"
            )
    rows = np.asarray([x for r in ordered for x in r.rows], dtype=np.int64)
    return _join(ordered, tuple(float(x) for x in values[rows] / values[rows - 1] - 1.0), index is not None)


def _join(ordered: Sequence[ForwardResult], assets: tuple[float, ...], dated: bool) -> StitchedForward:
    returns = np.asarray([x for r in ordered for x in r.returns], dtype=np.float64)
    return StitchedForward(
        rows=tuple(int(x) for r in ordered for x in r.rows),
        dates=tuple(d for r in ordered for d in (r.dates or ())) if dated else None,
        iterations=tuple(r.iteration for r in ordered for _ in r.rows),
        candidates=tuple(r.candidate for r in ordered for _ in r.rows),
        placeholders=tuple(r.placeholder for r in ordered for _ in r.rows),
        positions=tuple(x for r in ordered for x in r.positions),
        returns=tuple(float(x) for x in returns),
        equity=tuple(float(x) for x in np.cumprod(1.0 + returns)),
        asset_returns=assets,
        periods_per_year=ordered[0].periods_per_year,
    )


#: Why buy-and-hold is not available in a curve read back without asset returns.
_NO_PRICES = "the test env gave no prices (info['price']) and none were given with it"


def restitch(results: Sequence[ForwardResult], written: StitchedForward | None = None) -> StitchedForward:
    """The stitched curve recomputed from the forward results alone (no prices): what every reader shows.

    The forward files are signed and ``forward_returns.csv`` is derived from them, so a reader recomputes
    the curve and only compares the CSV (``verify`` reports a CSV that disagrees).

    :param results: the committed forward results (any order).
    :param written: the curve read from ``forward_returns.csv``: the asset's returns of periods traded by a
        version-1 result (an earlier version's, which did not record them) are taken from it, unchecked.
    :raises CheckpointError: as :func:`stitch`; also when a version-1 result's periods are not in ``written``,
        or the results mix dated and undated rows.
    """
    if not results:
        raise CheckpointError("no forward results to stitch; evaluate at least one window with a test part")
    ordered = sorted(results, key=lambda r: r.test_start)
    _check_tiling(ordered)
    if len({r.periods_per_year for r in ordered}) != 1:
        raise CheckpointError("the forward results use different periods_per_year; evaluate them alike")
    dated = {r.dates is not None for r in ordered if r.rows}
    if len(dated) > 1:
        raise CheckpointError("some forward results have dates and others not; evaluate them on the same prices")
    missing = next((r for r in ordered if r.asset_returns_reason is not None), None)
    if missing is not None:
        why = f"iteration {missing.iteration}: {missing.asset_returns_reason}"
        return replace(_join(ordered, (), dated == {True}), asset_returns=None, asset_returns_reason=why)
    known = {}
    if written is not None and written.asset_returns is not None:
        known = dict(zip(written.rows, written.asset_returns, strict=True))
    assets: list[float] = []
    for r in ordered:
        if r.asset_returns is not None:
            assets += r.asset_returns
        elif all(x in known for x in r.rows):
            assets += [known[x] for x in r.rows]
        else:
            raise CheckpointError(
                f"iteration {r.iteration}'s forward result is from an earlier version (no asset returns) and "
                "forward_returns.csv does not cover its periods; run the walk-forward again to write it"
            )
    return _join(ordered, tuple(assets), dated == {True})
