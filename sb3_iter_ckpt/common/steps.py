"""The env contract: what the package reads from an environment, and how (:class:`StepReader`).

The package needs nothing of an env but gymnasium's ``reset()`` and ``step()``. From each step it reads:

* **the step's portfolio return**, by one rule: a return key in ``info`` (the built-in ``TradingEnv``'s
  ``"return"``, the default), an equity / portfolio-value key (the return is the ratio of two
  consecutive values, the first one from ``reset()``'s info), or a callable on ``info``;
* **the position** (optional): a key in ``info``; an ``Enum`` counts by its ``.value``, which
  ``position_map`` may translate into a number (short = -1, flat = 0, long = +1, or a fraction);
* **one step per data row**: an env built on a price segment with ``history`` rows before the first
  decision takes exactly one step per row after them but the last (the last decision's return needs the
  row after it). Step ``k`` is dated on the row it is realized: the ``k``-th row after the history plus one.

The accounting is always read from the env that trained the model. Pure: the reader is a frozen, picklable
dataclass (no lambdas in the presets), part of a run's :class:`~sb3_iter_ckpt.common.options.RunOptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from sb3_iter_ckpt.errors import EnvContractError

__all__ = ["REALIZED", "StepRead", "StepReader", "realized_caveat"]


class StepRead(NamedTuple):
    """One step as read: its return, the env's position (None: the rule reads none), the equity (equity rules)."""

    ret: float
    position: float | None
    equity: float | None


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EnvContractError(f"{what} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise EnvContractError(f"{what} is {number}, not a finite number")
    return number


def _key(info: Mapping[str, Any], key: str, what: str) -> Any:
    if not isinstance(info, Mapping) or key not in info:
        keys = sorted(info) if isinstance(info, Mapping) else type(info).__name__
        raise EnvContractError(
            f"the env's {what} info has no {key!r} (its keys: {keys}); "
            "choose a StepReader rule for this env (the default reads the built-in TradingEnv's 'return', 'position')"
        )
    return info[key]


#: What a reader with ``realized=True`` means, said wherever its returns are shown.
REALIZED = (
    "realized profit: the env's equity changes only when a trade closes, so an open position's gains and "
    "losses appear all at once on the step that closes it (not marked to market)"
)


def realized_caveat(reader_config: Any) -> str | None:
    """The caveat of a run's recorded reader (``walk_forward.json``'s ``config["step_reader"]``), or None."""
    return REALIZED if isinstance(reader_config, dict) and reader_config.get("realized") is True else None


@dataclass(frozen=True)
class StepReader:
    """How a step's return and position are read from the ``info`` of ``env.step()``.

    Give at most one return rule (none: ``return_key="return"``, the built-in env's):

    :param return_key: ``info[return_key]`` is the step's net portfolio return.
    :param equity_key: ``info[equity_key]`` is the portfolio's value; the return is its ratio to the value
        before the step (the first one from ``reset()``'s info).
    :param return_fn: ``return_fn(info) -> float``, the step's return (a module-level function, so that the
        reader pickles and names itself in the run's fingerprint).
    :param position_key: ``info[position_key]`` is the position held over the step (an ``Enum`` counts by
        its ``.value``); None: the env reports none.
    :param position_map: ``(value, position)`` pairs translating ``info[position_key]`` (or its ``.value``)
        into a number, e.g. gym-anytrading's ``((0, -1.0), (1, 1.0))``; a mapping is accepted too.
    :param realized: True when the equity changes only as trades close (realized profit, not marked to
        market, e.g. gym-anytrading's ``total_profit``): every place that shows the returns says so.
    """

    return_key: str | None = None
    equity_key: str | None = None
    return_fn: Callable[[Mapping[str, Any]], Any] | None = None
    position_key: str | None = "position"
    position_map: tuple[tuple[Any, float], ...] | None = None
    realized: bool = False

    def __post_init__(self) -> None:
        rules = [name for name in ("return_key", "equity_key", "return_fn") if getattr(self, name) is not None]
        if len(rules) > 1:
            raise EnvContractError(f"a StepReader reads the return by one rule, got {', '.join(rules)}")
        if not rules:
            object.__setattr__(self, "return_key", "return")
        for name in ("return_key", "equity_key", "position_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise EnvContractError(f"StepReader {name} must be a non-empty string or None, got {value!r}")
        if not isinstance(self.realized, bool):
            raise EnvContractError(f"StepReader realized must be True or False, got {self.realized!r}")
        if self.return_fn is not None and not callable(self.return_fn):
            raise EnvContractError(f"StepReader return_fn must be callable, got {self.return_fn!r}")
        pairs = self.position_map
        if pairs is not None:
            items = pairs.items() if isinstance(pairs, Mapping) else pairs
            try:
                mapped = tuple((key, _finite(pos, f"position_map[{key!r}]")) for key, pos in items)
            except (TypeError, ValueError):
                raise EnvContractError(
                    f"StepReader position_map must be (value, position) pairs, got {pairs!r}"
                ) from None
            object.__setattr__(self, "position_map", mapped)

    # -- presets --------------------------------------------------------------------------------------------
    @classmethod
    def trading_env(cls) -> StepReader:
        """The built-in ``TradingEnv``: ``info["return"]`` (net of costs) and ``info["position"]`` (the default)."""
        return cls()

    @classmethod
    def gym_anytrading(cls, short: float = 0.0) -> StepReader:
        """gym-anytrading's envs: the equity ``info["total_profit"]`` and the ``Positions`` Enum
        ``info["position"]`` (``Long`` = 1 -> +1, ``Short`` = 0 -> ``short``).

        :param short: the position ``Short`` stands for. ``StocksEnv`` earns only while ``Long``: its
            ``Short`` is out of the market, 0 (the default). ``ForexEnv`` with ``unit_side="left"`` earns
            while ``Short``: pass -1.

        Mind: ``total_profit`` changes only when a trade closes (and on the last step), so the returns and
        every curve built from them are **realized** profit, not marked to market: an open position's gains
        and losses appear all at once on the step that closes it. Its ``info["position"]`` is the position
        after the step's action (held from that row on), not the one the step's profit was earned with.
        """
        return cls(
            equity_key="total_profit",
            position_key="position",
            position_map=((0, float(short)), (1, 1.0)),
            realized=True,
        )

    @classmethod
    def gym_trading_env(cls) -> StepReader:
        """gym-trading-env's ``TradingEnv``: the equity ``info["portfolio_valuation"]`` and ``info["position"]``
        (the fraction of the portfolio exposed, negative when short)."""
        return cls(equity_key="portfolio_valuation", position_key="position")

    # -- reading --------------------------------------------------------------------------------------------
    def describe(self) -> str:
        """The rule in words, for messages."""
        if self.equity_key is not None:
            rule = f"equity info[{self.equity_key!r}]"
        elif self.return_fn is not None:
            rule = f"return_fn {getattr(self.return_fn, '__qualname__', self.return_fn)!r}"
        else:
            rule = f"return info[{self.return_key!r}]"
        rule += "" if self.position_key is None else f", position info[{self.position_key!r}]"
        return rule + (f" ({REALIZED})" if self.realized else "")

    def fields(self) -> dict[str, Any]:
        """The reader's fields by name (the run's configuration names callables itself)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def initial_equity(self, reset_info: Mapping[str, Any]) -> float | None:
        """The portfolio value ``reset()`` reports (equity rules), else None."""
        if self.equity_key is None:
            return None
        equity = _finite(_key(reset_info, self.equity_key, "reset"), f"reset info[{self.equity_key!r}]")
        if equity <= 0:
            raise EnvContractError(f"reset info[{self.equity_key!r}] is {equity}: an equity must be positive")
        return equity

    def read(self, info: Mapping[str, Any], previous_equity: float | None = None) -> StepRead:
        """One step's return and position from its ``info``; ``previous_equity``: the equity before the step
        (equity rules: the last :class:`StepRead`'s or :meth:`initial_equity`)."""
        equity = None
        if self.equity_key is not None:
            equity = _finite(_key(info, self.equity_key, "step"), f"step info[{self.equity_key!r}]")
            if previous_equity is None or not previous_equity > 0:
                raise EnvContractError(f"the equity before a step is {previous_equity!r}; it must be positive")
            ret = equity / previous_equity - 1.0
        elif self.return_fn is not None:
            ret = _finite(self.return_fn(info), f"return_fn(info) of {self.describe()}")
        else:
            assert self.return_key is not None
            ret = _finite(_key(info, self.return_key, "step"), f"step info[{self.return_key!r}]")
        return StepRead(ret, self._position(info), equity)

    def _position(self, info: Mapping[str, Any]) -> float | None:
        if self.position_key is None:
            return None
        raw = _key(info, self.position_key, "step")
        value = getattr(raw, "value", raw)  # an Enum (gym-anytrading's Positions) by its value
        if self.position_map is not None:
            for key, position in self.position_map:
                if key == value:
                    return position
            known = [key for key, _ in self.position_map]
            raise EnvContractError(f"step info[{self.position_key!r}] is {raw!r}, not one of position_map's {known}")
        return _finite(value, f"step info[{self.position_key!r}]")
