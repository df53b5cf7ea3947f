"""Trading a part: a kept model trades its window's test part once, deterministically, on the built-in
env (:func:`evaluate_forward`), or an iteration without a model stays flat (:func:`placeholder_forward`);
either gives a :class:`~sb3_iter_ckpt.forward.result.ForwardResult`."""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.envs.trading import TradingEnv
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward.inputs import as_prices, check_candidate, check_ppy, check_test_part, dated_rows
from sb3_iter_ckpt.forward.result import ForwardResult
from sb3_iter_ckpt.splitter import Window
from sb3_iter_ckpt.stats.metrics import trading_metrics

_DEFAULT_WINDOW_SIZE = int(inspect.signature(TradingEnv.__init__).parameters["window_size"].default)


def _make_result(
    iteration: Any,
    candidate: Any,
    start: int,
    stop: int,
    placeholder: bool,
    rows: np.ndarray,
    prices: tuple[np.ndarray, pd.DatetimeIndex | None],
    returns: Sequence[float],
    positions: Sequence[float],
    periods_per_year: float,
) -> ForwardResult:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise CheckpointError(f"iteration must be an integer >= 0, got {iteration!r}")
    ppy = check_ppy(periods_per_year)
    r = np.asarray(returns, dtype=np.float64)
    values, index = prices
    return ForwardResult(
        iteration=int(iteration),
        candidate=check_candidate(candidate),
        test_start=start,
        test_stop=stop,
        placeholder=placeholder,
        rows=tuple(int(x) for x in rows),
        dates=None if index is None else tuple(index[int(x)].isoformat() for x in rows),
        returns=tuple(float(x) for x in r),
        positions=tuple(float(x) for x in positions),
        equity=tuple(float(x) for x in np.cumprod(1.0 + r)),
        metrics=trading_metrics(r, positions=list(positions), periods_per_year=ppy),
        periods_per_year=ppy,
        # buy-and-hold's return over each period, signed with the result (the stitched CSV is derived)
        asset_returns=tuple(float(x) for x in values[rows] / values[rows - 1] - 1.0),
    )


def _normalizer(vecnormalize: Any, venv: Any) -> Any:
    """``vecnormalize`` around ``venv`` in evaluation mode, leaving the caller's object untouched."""
    from stable_baselines3.common.vec_env import VecNormalize

    if isinstance(vecnormalize, VecNormalize):
        vn = copy.deepcopy(vecnormalize)  # VecNormalize's __getstate__ leaves its venv out of the copy
        vn.set_venv(venv)
    elif callable(vecnormalize):
        vn = vecnormalize(venv)  # e.g. functools.partial(repository.load_vecnormalize, i)
        if not isinstance(vn, VecNormalize):
            raise CheckpointError(f"vecnormalize(venv) returned a {type(vn).__name__}, not a VecNormalize")
    else:
        raise CheckpointError(
            f"vecnormalize must be a VecNormalize or a callable(venv), got {type(vecnormalize).__name__}"
        )
    vn.training = False
    vn.norm_reward = False
    return vn


def _trade(model: Any, env: TradingEnv, vecnormalize: Any) -> tuple[list[float], list[float]]:
    """Run ``model`` deterministically over the whole env once; the net return and position of every step."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv: Any = DummyVecEnv([lambda: env])
    if vecnormalize is not None:
        venv = _normalizer(vecnormalize, venv)
    returns: list[float] = []
    positions: list[float] = []
    try:
        obs = venv.reset()
        done = False
        while not done:
            try:
                action, _ = model.predict(obs, deterministic=True)
                action = np.asarray(action).reshape(1)
            except ValueError as exc:
                raise CheckpointError(
                    f"the model cannot act on the forward env ({exc}); pass the env_kwargs it was trained with"
                ) from exc
            # The info of the last step is read before DummyVecEnv's automatic reset can matter.
            obs, _, dones, infos = venv.step(action)
            returns.append(float(infos[0]["return"]))
            positions.append(float(infos[0]["position"]))
            done = bool(dones[0])
    finally:
        venv.close()
    return returns, positions


def evaluate_forward(
    model: Any,
    prices: Any,
    window: Window,
    *,
    iteration: int,
    candidate: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    vecnormalize: Any = None,
    periods_per_year: float = 252,
) -> ForwardResult:
    """Trade ``window``'s test part once with ``model``, deterministically, on the built-in ``TradingEnv``.

    The env runs over ``prices[test_start - window_size : test_stop + 1]`` (shorter at the end of the
    data), starting flat: the decision at row ``t`` sees closes up to ``t`` and its return is dated ``t + 1``.

    :param model: the kept model: anything with SB3's ``predict(obs, deterministic=True) -> (action, state)``.
    :param prices: all close prices (pandas Series with a DatetimeIndex or RangeIndex, or an array): the
        series the splitter split, so that the window's rows point into it.
    :param window: a :class:`~sb3_iter_ckpt.splitter.Window` with a test part.
    :param iteration: the iteration number recorded in the result.
    :param candidate: the candidate's name (None without candidates).
    :param env_kwargs: ``TradingEnv`` arguments the model was trained with (``window_size``,
        ``transaction_cost``, ``allow_short``...); ``random_start`` and ``max_steps`` are ignored (the whole
        test part is traded from its first row).
    :param vecnormalize: the model's ``VecNormalize`` statistics: a loaded ``VecNormalize`` (copied, not
        changed) or a ``callable(venv) -> VecNormalize`` such as
        ``functools.partial(repository.load_vecnormalize, i)``; used in evaluation mode
        (``training=False``, ``norm_reward=False``). None: observations are not normalized.
    :param periods_per_year: annualization of the result's metrics.
    :return: the :class:`ForwardResult`.
    :raises CheckpointError: for a window without a test part or outside the prices, a test part that starts
        before ``window_size`` rows of history, bad ``env_kwargs`` or a model that does not fit the env.
    """
    values, index = as_prices(prices)
    start, stop = check_test_part(window, len(values))
    kwargs = {**(env_kwargs or {}), "random_start": False, "max_steps": None}
    raw_size = kwargs.get("window_size", _DEFAULT_WINDOW_SIZE)
    if isinstance(raw_size, bool) or not isinstance(raw_size, numbers.Integral) or int(raw_size) < 1:
        raise CheckpointError(f"env_kwargs window_size must be an integer >= 1, got {raw_size!r}")
    window_size = int(raw_size)
    if start < window_size:
        raise CheckpointError(
            f"test part starts at row {start}, before the {window_size} rows of history its first observation "
            "needs; put train and validation parts before it"
        )
    rows = dated_rows(start, stop, len(values))
    returns: list[float] = []
    positions: list[float] = []
    if rows.size:
        try:
            env = TradingEnv(values[start - window_size : stop + 1], **kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot build the forward TradingEnv from env_kwargs: {exc}") from exc
        returns, positions = _trade(model, env, vecnormalize)
        if len(returns) != rows.size:  # the env and dated_rows disagree: a bug here, not the user's
            raise CheckpointError(f"forward evaluation made {len(returns)} steps for {rows.size} rows; report this")
    prices_ = (values, index)
    return _make_result(iteration, candidate, start, stop, False, rows, prices_, returns, positions, periods_per_year)


def placeholder_forward(
    prices: Any,
    window: Window,
    *,
    iteration: int,
    candidate: str | None = None,
    periods_per_year: float = 252,
) -> ForwardResult:
    """The forward result of an iteration without a model: flat over its test part, zero return every period.

    It has the same rows (and dates) :func:`evaluate_forward` would give, so the stitched curve has no hole.

    :param prices: all close prices, as for :func:`evaluate_forward`.
    :param window: a window with a test part.
    :param iteration: the iteration number.
    :param candidate: the candidate's name (None without candidates).
    :param periods_per_year: annualization of the metrics.
    :return: a :class:`ForwardResult` with ``placeholder=True``.
    """
    values, index = as_prices(prices)
    start, stop = check_test_part(window, len(values))
    rows = dated_rows(start, stop, len(values))
    zeros = [0.0] * rows.size
    return _make_result(iteration, candidate, start, stop, True, rows, (values, index), zeros, zeros, periods_per_year)
