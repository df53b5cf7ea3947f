"""The forward result of a hand-written training loop: a kept model trades a whole test env once
(:func:`trade_env`); :class:`ForwardEnv` is that env with what it does not report itself (dates, prices).

A walk-forward knows its prices and windows, so its rows are rows of the prices. A hand-written loop gives
only an env, so its rows are numbered by the forward results themselves: iteration ``i``'s test part starts
where the previous iteration's ended (``first_row``: the ``test_stop`` of the last earlier forward result,
0 for the first), so the stitched curve is the test parts in iteration order. Each step is dated by
``info["date"]`` (or ``ForwardEnv(dates=...)``); without dates the curve is undated. Buy-and-hold needs the
asset's price before the first step and after each (``info["price"]`` on reset and every step, as the
built-in ``TradingEnv`` reports it, or ``ForwardEnv(prices=...)``); without them the result records why it
is not available.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.common.steps import StepReader
from sb3_iter_ckpt.envs.episode import Episode, run_episode
from sb3_iter_ckpt.errors import CheckpointError, EnvContractError
from sb3_iter_ckpt.forward.inputs import check_candidate, check_ppy
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.forward.trade import _normalizer
from sb3_iter_ckpt.stats.metrics import trading_metrics

__all__ = ["ForwardEnv", "check_follows", "next_row", "trade_env"]


@dataclass(frozen=True)
class ForwardEnv:
    """A test env for :func:`trade_env`, the callback's ``test_env`` or ``sb3_iter_ckpt.trade_forward``,
    with what the env does not report itself.

    :param env: a gymnasium env (or an SB3 ``VecEnv`` of one env); one episode from ``reset()`` is the whole
        test part. It is reset for every iteration and never closed.
    :param dates: one date per step (the date its return is realized); None: ``info[date_key]`` of each
        step when the env reports it, else the curve is undated.
    :param prices: the asset's price before the first step and after every step (one more than the steps);
        None: ``info[price_key]`` of ``reset()`` and every step when the env reports them, else buy-and-hold
        is not available.
    :param step_reader: how each step's return and position are read (None: the built-in env's keys).
    :param periods_per_year: the annualization of the metrics.
    :param date_key: the info key of a step's date.
    :param price_key: the info key of the asset's price.
    """

    env: Any
    dates: Sequence[Any] | None = None
    prices: Sequence[float] | None = None
    step_reader: StepReader | None = None
    periods_per_year: float = 252
    date_key: str = "date"
    price_key: str = "price"

    def trade(
        self, model: Any, *, iteration: int, first_row: int = 0, vecnormalize: Any = None, candidate: str | None = None
    ) -> ForwardResult:
        """:func:`trade_env` on this env with its dates, prices, reader and annualization."""
        return trade_env(
            model,
            self.env,
            iteration=iteration,
            first_row=first_row,
            step_reader=self.step_reader,
            dates=self.dates,
            prices=self.prices,
            vecnormalize=vecnormalize,
            periods_per_year=self.periods_per_year,
            candidate=candidate,
            date_key=self.date_key,
            price_key=self.price_key,
        )


def _iso(value: Any, k: int) -> str:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the date of step {k} is {value!r}, not a date ({exc})") from None
    if pd.isna(stamp):
        raise CheckpointError(f"the date of step {k} is missing ({value!r})")
    return stamp.isoformat()


def _dates(given: Sequence[Any] | None, seen: Sequence[Any], n: int, key: str) -> tuple[str, ...] | None:
    if given is None:
        if not seen or any(d is None for d in seen):
            return None  # the env reports no dates: an undated curve
        given = seen
    if len(given) != n:
        raise CheckpointError(f"{len(given)} dates given for {n} steps: give one date per step (when it is realized)")
    dates = tuple(_iso(d, k) for k, d in enumerate(given))
    if not _increasing(dates):
        raise CheckpointError("the test env's dates are not increasing: one step per period, in time order")
    return dates


def _increasing(dates: Sequence[str]) -> bool:
    stamps = [pd.Timestamp(d) for d in dates]
    return all(a < b for a, b in zip(stamps[:-1], stamps[1:], strict=True))


def _asset_returns(
    given: Sequence[float] | None, seen: Sequence[Any], n: int, key: str
) -> tuple[tuple[float, ...] | None, str | None]:
    if given is None:
        if len(seen) != n + 1 or any(p is None for p in seen):
            return None, (
                f"the test env gave no prices (info[{key!r}] on reset and every step) and none were given with it "
                "(ForwardEnv(env, prices=...)): buy-and-hold is not available"
            )
        given = seen
    try:
        values = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the test env's prices are not numbers ({exc})") from None
    if values.shape != (n + 1,):
        raise CheckpointError(
            f"{values.size} prices given for {n} steps: give the price before the first step and after each ({n + 1})"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise CheckpointError("the test env's prices must be finite and positive")
    return tuple(float(x) for x in values[1:] / values[:-1] - 1.0), None


def trade_env(
    model: Any,
    env: Any,
    *,
    iteration: int,
    first_row: int = 0,
    step_reader: StepReader | None = None,
    dates: Sequence[Any] | None = None,
    prices: Sequence[float] | None = None,
    vecnormalize: Any = None,
    periods_per_year: float = 252,
    candidate: str | None = None,
    date_key: str = "date",
    price_key: str = "price",
) -> ForwardResult:
    """Trade ``env`` once with ``model``, deterministically, over one whole episode: the forward result of a
    hand-written loop's iteration.

    :param model: the kept model: anything with SB3's ``predict(obs, deterministic=True) -> (action, state)``.
    :param env: the test env (a gymnasium env or a ``VecEnv`` of one env); reset, stepped to the episode's
        end, never closed.
    :param iteration: the iteration number recorded in the result.
    :param first_row: the result's ``test_start``: its returns are numbered ``first_row + 1 ...`` (in a
        callback's folder, :func:`next_row`: the test parts follow each other in iteration order).
    :param step_reader: how each step's return and position are read (None: the built-in env's keys); it
        must read a position.
    :param dates: one date per step; None: ``info[date_key]`` when every step reports it, else undated.
    :param prices: the price before the first step and after each; None: ``info[price_key]`` of ``reset()``
        and every step when reported, else buy-and-hold is not available (``asset_returns_reason``).
    :param vecnormalize: the model's ``VecNormalize`` statistics (a ``VecNormalize``, copied, or a
        ``callable(venv)``), used in evaluation mode; None: observations are not normalized.
    :param periods_per_year: the annualization of the metrics.
    :param candidate: the candidate's name (None without candidates).
    :param date_key: the info key of a step's date.
    :param price_key: the info key of the asset's price.
    :raises CheckpointError: an env that takes no step, dates or prices that do not fit the steps, a model that
        does not fit the env, a step that does not report what ``step_reader`` reads (``EnvContractError``).
    """
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise CheckpointError(f"iteration must be an integer >= 0, got {iteration!r}")
    if isinstance(first_row, bool) or not isinstance(first_row, numbers.Integral) or first_row < 0:
        raise CheckpointError(f"first_row must be an integer >= 0, got {first_row!r}")
    ppy, name = check_ppy(periods_per_year), check_candidate(candidate)
    seen: list[tuple[Any, Any]] = []

    def observe(info: Mapping[str, Any]) -> None:
        seen.append((info.get(date_key), info.get(price_key)) if isinstance(info, Mapping) else (None, None))

    episode = _episode(model, env, step_reader, vecnormalize, observe)
    returns, positions = (tuple(float(x) for x in seq) for seq in (episode.returns, episode.positions or ()))
    n, start = len(returns), int(first_row)
    assets, why = _asset_returns(prices, [p for _, p in seen], n, price_key)
    equity = tuple(float(x) for x in np.cumprod(1.0 + np.asarray(returns, dtype=np.float64)))
    metrics = trading_metrics(list(returns), positions=list(positions), periods_per_year=ppy)
    step_dates = _dates(dates, [d for d, _ in seen[1:]], n, date_key)
    rows = tuple(range(start + 1, start + n + 1))
    return ForwardResult(
        int(iteration), name, start, start + n, False, rows, step_dates, returns, positions, equity, metrics, ppy,
        assets, why, episode.assets, episode.weights,
    )  # fmt: skip


def _episode(model: Any, env: Any, step_reader: StepReader | None, vecnormalize: Any, observe: Any) -> Episode:
    """One deterministic episode of ``model`` on ``env`` (never closed)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

    reader = StepReader() if step_reader is None else step_reader
    if reader.position_key is None:
        raise EnvContractError(
            "a forward result records the env's position each step: give the StepReader a position_key"
        )
    venv: Any = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
    if vecnormalize is not None:
        venv = _normalizer(vecnormalize, venv)
    try:
        episode = run_episode(model, venv, reader, deterministic=True, observe=observe)
    except EnvContractError:
        raise
    except ValueError as exc:
        raise CheckpointError(
            f"the model cannot act on the test env ({exc}); give it the env it was trained on"
        ) from exc
    return episode


def next_row(results: Sequence[ForwardResult], iteration: int) -> int:
    """Where ``iteration``'s test part starts in a hand-written loop's folder: the ``test_stop`` of the last
    earlier iteration's forward result (0 for the first).

    :raises CheckpointError: a later iteration already has a forward result (trade in iteration order).
    """
    later = sorted(r.iteration for r in results if r.iteration > iteration)
    if later:
        raise CheckpointError(
            f"iterations {later} already have forward results: a hand-written loop's test parts follow each other "
            f"in iteration order, so iteration {iteration} must be traded before them"
        )
    earlier = [r for r in results if r.iteration < iteration]
    return max((r.test_stop for r in earlier), default=0)


def check_follows(results: Sequence[ForwardResult], result: ForwardResult) -> None:
    """Refuse ``result`` when its dates do not come after the earlier iterations' (the curve would go back in
    time) or when it mixes dated and undated parts."""
    earlier = [r for r in results if r.iteration < result.iteration and r.rows]
    if not earlier or not result.rows:
        return
    last = max(earlier, key=lambda r: r.iteration)
    if (last.dates is None) != (result.dates is None):
        raise CheckpointError(
            f"iteration {last.iteration}'s test part is {'un' if last.dates is None else ''}dated and iteration "
            f"{result.iteration}'s is not: give every test env dates, or none"
        )
    if last.dates is not None and result.dates is not None:
        if pd.Timestamp(result.dates[0]) <= pd.Timestamp(last.dates[-1]):
            raise CheckpointError(
                f"iteration {result.iteration}'s test part starts on {result.dates[0]}, not after iteration "
                f"{last.iteration}'s ends ({last.dates[-1]}): the stitched curve needs test parts in time order"
            )
