"""``SelectionRule``: which metric picks "the best", in which direction, and the minimum it must reach.

One frozen value, validated once where it is built, then passed to the callback, the repository, retention
and the CLI alike, so that the ``(monitor, mode)`` pair is not checked again at every layer. Pure: it
imports only ``record`` (metric lookup) and ``errors``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sb3_iter_ckpt.common.record import as_score, get_metric
from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["MODES", "SelectionRule"]

MODES = ("max", "min")
_MISSING = object()

MinScore = float | Callable[[Mapping[str, Any]], bool] | None


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


@dataclass(frozen=True)
class SelectionRule:
    """How snapshots and iterations are ranked.

    :param monitor: Metric key; dotted for nested metrics (``"validation.sharpe"``); an exact flat key wins.
    :param mode: ``"max"`` (higher is better) or ``"min"``.
    :param min_score: A finite threshold the score must reach (``>=`` in max mode, ``<=`` in min mode), or a
        ``callable(metrics) -> bool``, or None (every finite score qualifies).
    """

    monitor: str = "mean_reward"
    mode: Literal["max", "min"] = "max"
    min_score: MinScore = None

    def __post_init__(self) -> None:
        if not isinstance(self.monitor, str) or not self.monitor:
            raise CheckpointError(f"monitor must be a non-empty metric name, got {self.monitor!r}")
        if self.mode not in MODES:
            raise CheckpointError(f"mode must be 'max' or 'min', got {self.mode!r}")
        m = self.min_score
        if m is not None and not callable(m):
            if as_score(m) is None:
                raise CheckpointError(f"min_score must be a finite number or a callable, got {m!r}")
            object.__setattr__(self, "min_score", float(m))

    @classmethod
    def of(
        cls, monitor: str | None = None, mode: str | None = None, default: SelectionRule | None = None
    ) -> SelectionRule:
        """A rule from optional parts, the missing ones taken from ``default`` (e.g. the recorded rule)."""
        base = default if default is not None else cls()
        return cls(monitor or base.monitor, mode or base.mode, base.min_score)  # type: ignore[arg-type]

    def score(self, metrics: Mapping[str, Any]) -> float | None:
        """The monitored value as a finite float; None when missing, NaN, infinite or not a number."""
        return as_score(get_metric(metrics, self.monitor))

    def strict_score(self, metrics: Mapping[str, Any]) -> float | None:
        """Like :meth:`score`, but a missing key or a non-numeric value is the user's error, not a NaN."""
        raw = get_metric(metrics, self.monitor, _MISSING)
        if raw is _MISSING:
            raise CheckpointError(
                f"monitor {self.monitor!r} is not in the evaluation metrics (keys: {sorted(metrics)}); "
                "set monitor= to one of them"
            )
        if raw is not None and (isinstance(raw, (bool, str, bytes)) or _not_float(raw)):
            raise CheckpointError(f"monitor {self.monitor!r} is not numeric: {raw!r}")
        return as_score(raw)

    def better(self, score: float, than: float | None) -> bool:
        """Whether ``score`` strictly improves on ``than`` (None: nothing yet, so any score does)."""
        if than is None:
            return True
        return score > than if self.mode == "max" else score < than

    def at_least(self, score: float, than: float | None) -> bool:
        """Whether ``score`` is as good as ``than`` or better: ties go to ``score`` (the later one)."""
        if than is None:
            return True
        return score >= than if self.mode == "max" else score <= than

    def accepts(self, score: float, metrics: Mapping[str, Any]) -> bool:
        """Whether a finite ``score`` (of ``metrics``) reaches ``min_score``."""
        m = self.min_score
        if m is None:
            return True
        if callable(m):
            return bool(m(metrics))
        return score >= m if self.mode == "max" else score <= m

    def to_record(self) -> dict[str, Any]:
        """The JSON form kept in each record's ``selection`` (a callable threshold by its import path)."""
        m = self.min_score
        return {"monitor": self.monitor, "mode": self.mode, "min_score": _qualname(m) if callable(m) else m}

    @classmethod
    def from_record(cls, selection: Mapping[str, Any]) -> SelectionRule | None:
        """The rule a record's ``selection`` names, or None when it names none (a seed record)."""
        monitor, mode = selection.get("monitor"), selection.get("mode")
        if not isinstance(monitor, str) or not monitor or mode not in MODES:
            return None
        m = selection.get("min_score")
        threshold = float(m) if isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) else None
        return cls(monitor, mode, threshold)


def _not_float(raw: Any) -> bool:
    try:
        float(raw)
    except (TypeError, ValueError):
        return True
    return False
