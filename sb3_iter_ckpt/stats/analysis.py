"""Reports over a checkpoint history: counts, the best iterations, metric statistics and trends.

Pure code, no file I/O: every function takes the list of :class:`~sb3_iter_ckpt.common.record.Checkpoint`
records (as listed by the repository) and returns plain JSON values (dict, list, str, int, float,
bool, None; never NaN or infinity, those become None).

Conventions:

* Records are processed in iteration order, whatever order they are given in.
* Metric statistics and the trend use every record with a finite value, placeholders included (a
  ``below_min_score`` placeholder still records a real evaluation; leaving it out would bias the
  statistics upwards). The ``best`` list only has iterations with a model.
* Nested metrics are addressed by dotted keys (``{"validation": {"sharpe": 1}}`` -> ``validation.sharpe``).
* Numeric means int or float (numpy numbers included), bools excluded; only finite values count.
* Equal scores go to the later iteration (as in :mod:`sb3_iter_ckpt.retention`).
* A record whose model was pruned by retention (:func:`~sb3_iter_ckpt.retention.is_pruned`) is
  counted as ``pruned``, not as a placeholder: the iteration did produce a model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sb3_iter_ckpt.common.record import Checkpoint, flatten, to_jsonable
from sb3_iter_ckpt.retention import is_pruned, ranked

__all__ = ["BASE_COLUMNS", "analyze", "metric_stats", "performance_range", "spearman", "table_rows", "trend"]

#: Columns every :func:`table_rows` row starts with.
BASE_COLUMNS = ("iteration", "has_model", "reason", "timesteps", "created_at", "size_bytes", "verified")


def _ordered(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    return sorted(checkpoints, key=lambda c: c.iteration)


_NUMERIC = (int, float, np.integer, np.floating)


def _is_numeric_type(value: Any) -> bool:
    return isinstance(value, _NUMERIC) and not isinstance(value, (bool, np.bool_))


def _number(value: Any) -> float | None:
    """A finite float for an int/float (numpy included, bools excluded), else None."""
    if not _is_numeric_type(value):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _series(
    checkpoints: Sequence[Checkpoint], value_of: Callable[[Checkpoint], float | None]
) -> list[tuple[int, float]]:
    """``(iteration, value)`` for every record (in iteration order) with a finite value."""
    out = []
    for c in _ordered(checkpoints):
        v = value_of(c)
        if v is not None:
            out.append((c.iteration, v))
    return out


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the average of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_vals = values[order]
    i = 0
    n = len(values)
    while i < n:
        j = i
        while j + 1 < n and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson correlation of average ranks, so ties are handled).

    :param x: First sample.
    :param y: Second sample, same length.
    :return: The coefficient in [-1, 1], or None with fewer than 3 points or when either sample is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman: samples differ in length ({len(x)} != {len(y)})")
    if len(x) < 3:
        return None
    rx = _average_ranks(np.asarray(x, dtype=float))
    ry = _average_ranks(np.asarray(y, dtype=float))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if denom == 0.0:
        return None
    return max(-1.0, min(1.0, float(np.dot(dx, dy)) / denom))


def trend(points: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Least-squares slope (metric change per iteration) and Spearman correlation of metric vs iteration.

    :param points: ``(iteration, value)`` pairs with finite values.
    :return: ``{"slope", "spearman", "n"}``; slope is None with fewer than 2 points or a single
        distinct iteration, spearman as in :func:`spearman`.
    """
    n = len(points)
    slope: float | None = None
    rho: float | None = None
    if n >= 2:
        x = np.array([p[0] for p in points], dtype=float)
        y = np.array([p[1] for p in points], dtype=float)
        dx = x - x.mean()
        sxx = float(np.dot(dx, dx))
        if sxx > 0.0:
            with np.errstate(over="ignore", invalid="ignore"):  # huge values: overflow -> None
                s = float(np.dot(dx, y - y.mean())) / sxx
            slope = s if math.isfinite(s) else None
        rho = spearman(x.tolist(), y.tolist())
    return {"slope": slope, "spearman": rho, "n": n}


_STAT_FIELDS = ("mean", "std", "median", "min", "max", "first_iteration", "last_iteration")


def metric_stats(points: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """Summary statistics of finite ``(iteration, value)`` pairs given in iteration order.

    ``std`` is the *sample* standard deviation (ddof=1), None when fewer than 2 values. With no
    values every field but ``count`` is None.

    :param points: ``(iteration, value)`` pairs with finite values.
    :return: ``{"count", "mean", "std", "median", "min", "max", "first_iteration", "last_iteration"}``.
    """
    n = len(points)
    if n == 0:
        empty: dict[str, Any] = {"count": 0}
        empty.update(dict.fromkeys(_STAT_FIELDS))
        return empty
    v = np.array([p[1] for p in points], dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.mean(v))
        std = float(np.std(v, ddof=1)) if n >= 2 else None
        if not math.isfinite(mean) or (std is not None and not math.isfinite(std)):
            # values near the float limit: scale by the largest magnitude so the sums cannot overflow
            scale = float(np.max(np.abs(v)))
            mean = float(np.mean(v / scale)) * scale
            std = float(np.std(v / scale, ddof=1)) * scale if n >= 2 else None
    s = np.sort(v)
    mid = n // 2
    median = float(s[mid]) if n % 2 else float(s[mid - 1] / 2 + s[mid] / 2)

    def finite(x: float | None) -> float | None:
        return x if x is not None and math.isfinite(x) else None

    return {
        "count": n,
        "mean": finite(mean),
        "std": finite(std),
        "median": finite(median),
        "min": float(v.min()),
        "max": float(v.max()),
        "first_iteration": int(points[0][0]),
        "last_iteration": int(points[-1][0]),
    }


def _numeric_keys(flat_metrics: Sequence[dict[str, Any]]) -> list[str]:
    keys: set[str] = set()
    for f in flat_metrics:
        keys.update(k for k, v in f.items() if _is_numeric_type(v))
    return sorted(keys)


def performance_range(checkpoints: Sequence[Checkpoint], monitor: str = "mean_reward") -> dict[str, Any] | None:
    """The range of ``monitor`` over the history (every record with a finite value, placeholders included).

    :param checkpoints: The history.
    :param monitor: Metric name; a dotted name looks into nested metrics.
    :return: ``{"min", "max", "min_iteration", "max_iteration"}`` (on equal values the later
        iteration), or None when no record has a finite value.
    """
    points = _series(checkpoints, lambda c: c.score(monitor))
    if not points:
        return None
    lo = min(points, key=lambda p: (p[1], -p[0]))
    hi = max(points, key=lambda p: (p[1], p[0]))
    return {"min": lo[1], "max": hi[1], "min_iteration": lo[0], "max_iteration": hi[0]}


def _longest_placeholder_run(ordered: Sequence[Checkpoint]) -> dict[str, Any]:
    best: tuple[int, int | None, int | None] = (0, None, None)
    length, start = 0, None
    for c in ordered:
        if c.has_model or is_pruned(c):
            length, start = 0, None
            continue
        if length == 0:
            start = c.iteration
        length += 1
        if length > best[0]:
            best = (length, start, c.iteration)
    return {"length": best[0], "start": best[1], "end": best[2]}


def _counts(ordered: Sequence[Checkpoint]) -> dict[str, Any]:
    """The report's ``counts``: with a model, placeholders, pruned, by reason, unverified."""
    reasons = Counter(c.reason for c in ordered if c.reason is not None)
    return {
        "total": len(ordered),
        "with_model": sum(1 for c in ordered if c.has_model),
        "placeholders": sum(1 for c in ordered if not c.has_model and not is_pruned(c)),
        "pruned": sum(1 for c in ordered if is_pruned(c)),
        "by_reason": {str(r): n for r, n in sorted(reasons.items(), key=lambda rn: str(rn[0]))},
        "unverified": sum(1 for c in ordered if not c.verified),
    }


def _all_stats(ordered: Sequence[Checkpoint], monitor: str, monitor_points: list[tuple[int, float]]) -> dict[str, Any]:
    """The report's ``stats``: ``monitor`` first, then every other numeric metric by dotted key."""
    stats: dict[str, Any] = {monitor: metric_stats(monitor_points)}
    flat = {id(c): flatten(c.metrics) for c in ordered}
    for key in _numeric_keys(list(flat.values())):
        if key not in (monitor, "iteration"):  # legacy records repeat the iteration number as a metric
            stats[key] = metric_stats(
                [(c.iteration, v) for c in ordered if (v := _number(flat[id(c)].get(key))) is not None]
            )
    return stats


def analyze(
    checkpoints: Sequence[Checkpoint],
    monitor: str = "mean_reward",
    mode: str = "max",
    top_k: int = 5,
    size_on_disk: int | None = None,
) -> dict[str, Any]:
    """A JSON-serializable report over a checkpoint history.

    Keys of the report:

    * ``counts``: ``total``, ``with_model``, ``placeholders``, ``pruned`` (models removed by
      retention; ``with_model + placeholders + pruned == total``), ``by_reason`` (reason -> number
      of records with that reason, ``"pruned"`` included) and ``unverified`` (records without
      recorded hashes).
    * ``monitor``, ``mode``: as given.
    * ``best``: up to ``top_k`` iterations with a model and a finite score, best first (equal scores:
      later iteration first), each ``{"iteration", "score", "metrics"}`` with flattened metrics.
    * ``stats``: metric name -> :func:`metric_stats`, for ``monitor`` (always present, first) and
      every other numeric metric of any record, by flattened dotted key, sorted (a metric named
      ``iteration``, which legacy records carry, is skipped).
    * ``trend``: :func:`trend` of ``monitor`` against the iteration number.
    * ``longest_placeholder_run``: ``{"length", "start", "end"}`` of the longest run of consecutive
      placeholder records in iteration order (the earliest such run; start/end None if none). A
      pruned record ends a run.
    * ``size_on_disk_bytes``: ``size_on_disk`` if given, else the sum of the records' ``size_bytes``.
    * ``iterations``: every iteration number, sorted.

    :param checkpoints: The history (any order; placeholders included).
    :param monitor: The metric ranked and trended; a dotted name looks into nested metrics.
    :param mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
    :param top_k: How many best iterations to list (0 for none).
    :param size_on_disk: Measured bytes on disk, if the caller knows them.
    :return: The report (only dict, list, str, int, float, bool and None; no NaN or infinity).
    """
    _check_mode(mode)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
    ordered = _ordered(checkpoints)
    best = [
        {"iteration": c.iteration, "score": score, "metrics": to_jsonable(flatten(c.metrics))}
        for c, score in ranked(ordered, monitor, mode)[:top_k]
    ]
    monitor_points = _series(ordered, lambda c: c.score(monitor))
    size = size_on_disk if size_on_disk is not None else sum(int(c.size_bytes or 0) for c in ordered)
    report = {
        "counts": _counts(ordered),
        "monitor": monitor,
        "mode": mode,
        "best": best,
        "stats": _all_stats(ordered, monitor, monitor_points),
        "trend": trend(monitor_points),
        "longest_placeholder_run": _longest_placeholder_run(ordered),
        "size_on_disk_bytes": int(size),
        "iterations": [c.iteration for c in ordered],
    }
    return to_jsonable(report)


def table_rows(checkpoints: Sequence[Checkpoint]) -> list[dict[str, Any]]:
    """One row per record, in iteration order, for tables and CSV.

    Every row has the same columns in the same order: :data:`BASE_COLUMNS`, then every flattened
    metric key of any record, sorted (None where a record lacks it). A metric whose key clashes with
    a base column is named ``metrics.<key>``. Values are JSON-safe (NaN and infinity become None).

    :param checkpoints: The history (any order).
    :return: The rows.
    """
    ordered = _ordered(checkpoints)
    flat = [flatten(c.metrics) for c in ordered]

    def column(key: str) -> str:
        return f"metrics.{key}" if key in BASE_COLUMNS else key

    metric_keys = sorted({k for f in flat for k in f}, key=column)
    rows = []
    for c, f in zip(ordered, flat, strict=True):
        row: dict[str, Any] = {
            "iteration": c.iteration,
            "has_model": c.has_model,
            "reason": c.reason,
            "timesteps": c.timesteps,
            "created_at": c.created_at,
            "size_bytes": c.size_bytes,
            "verified": c.verified,
        }
        for k in metric_keys:
            row[column(k)] = f.get(k)
        rows.append(to_jsonable(row))
    return rows


def table(checkpoints: Sequence[Checkpoint]) -> Any:
    """One row per iteration with flattened metrics: a pandas DataFrame if pandas is installed, else the rows."""
    rows = table_rows(checkpoints)
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows).set_index("iteration") if rows else pd.DataFrame(rows)
