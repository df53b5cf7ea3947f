"""Trading a part: a kept model trades its window's test part once, deterministically, on the env it was
trained on (the user's ``make_env``, else the built-in env; :func:`evaluate_forward`), or an iteration
without a model stays flat (:func:`placeholder_forward`); either gives a
:class:`~sb3_iter_ckpt.forward.result.ForwardResult`."""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from sb3_iter_ckpt.common.options import name_of
from sb3_iter_ckpt.common.steps import StepReader
from sb3_iter_ckpt.envs.episode import Episode, run_episode
from sb3_iter_ckpt.envs.trading import TradingEnv
from sb3_iter_ckpt.errors import CheckpointError, EnvContractError
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
    episode: Episode,
    periods_per_year: float,
) -> ForwardResult:
    if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
        raise CheckpointError(f"iteration must be an integer >= 0, got {iteration!r}")
    ppy = check_ppy(periods_per_year)
    r, positions = np.asarray(episode.returns, dtype=np.float64), list(episode.positions or ())
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
        assets=episode.assets,
        weights=episode.weights,
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


def _trade(model: Any, env: Any, vecnormalize: Any, reader: StepReader) -> Episode:
    """Run ``model`` deterministically over the whole env once; the net return and position of every step."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    if reader.position_key is None:
        raise EnvContractError(
            "a forward result records the env's position each step: give the StepReader a position_key"
        )
    venv: Any = DummyVecEnv([lambda: env])
    if vecnormalize is not None:
        venv = _normalizer(vecnormalize, venv)
    try:
        episode = run_episode(model, venv, reader, deterministic=True)
    except EnvContractError:
        raise
    except ValueError as exc:
        raise CheckpointError(
            f"the model cannot act on the forward env ({exc}); pass the env_kwargs it was trained with"
        ) from exc
    finally:
        venv.close()
    return episode


def _check_history(history: Any, start: int) -> int:
    if isinstance(history, bool) or not isinstance(history, numbers.Integral) or int(history) < 0:
        raise CheckpointError(f"history must be an integer >= 0, got {history!r}")
    if start < int(history):
        raise CheckpointError(
            f"test part starts at row {start}, before the {history} rows of history its first observation "
            "needs; put train and validation parts before it"
        )
    return int(history)


def _env_builder(
    prices: Any, values: np.ndarray, part: tuple[int, int], env_kwargs: Any, make_env: Any, history: Any, seed: int
) -> tuple[int, Callable[[], Any]]:
    """The rows of history before the test part, and how its env is built: the user's ``make_env`` on
    ``prices[start - history : stop + 1]`` (in the type of ``prices``), else the built-in env."""
    start, stop = part
    if make_env is not None:
        h = _check_history(
            (env_kwargs or {}).get("window_size", _DEFAULT_WINDOW_SIZE) if history is None else history, start
        )
        lo, hi = start - h, stop + 1
        return h, lambda: make_env(prices.iloc[lo:hi] if hasattr(prices, "iloc") else prices[lo:hi], seed)
    kwargs = {**(env_kwargs or {}), "random_start": False, "max_steps": None}
    raw_size = kwargs.get("window_size", _DEFAULT_WINDOW_SIZE)
    if isinstance(raw_size, bool) or not isinstance(raw_size, numbers.Integral) or int(raw_size) < 1:
        raise CheckpointError(f"env_kwargs window_size must be an integer >= 1, got {raw_size!r}")
    h = _check_history(int(raw_size), start)

    def build() -> Any:
        try:
            return TradingEnv(values[start - h : stop + 1], **kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot build the forward TradingEnv from env_kwargs: {exc}") from exc

    return h, build


def _same_rows(data: Any, n: int, what: str) -> Any:
    if len(data) != n:
        raise CheckpointError(f"{what} has {len(data)} rows, the prices {n}: give both for the same rows")
    return data


def _benchmark(benchmark: Any, values: np.ndarray) -> np.ndarray:
    """Buy-and-hold's prices: ``benchmark``'s values (checked as prices), else the traded ``values``."""
    return values if benchmark is None else _same_rows(as_prices(benchmark)[0], len(values), "benchmark")


def _steps_error(make_env: Any, steps: int, part: tuple[int, int], rows: int, history: int) -> EnvContractError:
    who = "the built-in TradingEnv" if make_env is None else f"the env of make_env {name_of(make_env)}"
    return EnvContractError(
        f"{who} took {steps} steps over test part {part[0]}..{part[1]}, which has {rows} dated rows "
        f"(one step per row after {history} rows of history); its returns cannot be dated"
    )


def _part_returns(
    model: Any, build: Callable[[], Any], vecnormalize: Any, reader: StepReader, rows: np.ndarray, part: tuple
) -> Episode:
    """The model trading the part's env, one step per dated row."""
    if not rows.size:
        return Episode((), (), 0.0)
    episode = _trade(model, build(), vecnormalize, reader)
    if len(episode.returns) != rows.size:
        make_env, start, stop, history = part
        raise _steps_error(make_env, len(episode.returns), (start, stop), rows.size, history)
    return episode


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
    make_env: Any = None,
    step_reader: StepReader | None = None,
    history: int | None = None,
    seed: int = 0,
    table: Any = None,
    benchmark: Any = None,
) -> ForwardResult:
    """Trade ``window``'s test part once with ``model``, deterministically, on the env it was trained on.

    The env (``make_env``'s, else the built-in ``TradingEnv``) runs over
    ``prices[test_start - history : test_stop + 1]`` (shorter at the end of the data): the decision at
    row ``t`` sees prices up to ``t`` and its return is dated ``t + 1``. An env that takes another number of
    steps than the part has dated rows is an error, never a shifted curve.

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
    :param make_env: the ``callable(prices_segment, seed) -> gym.Env`` the model was trained with (it gets
        the segment in the type of ``prices``); None: the built-in ``TradingEnv`` with ``env_kwargs``.
    :param step_reader: how each step's return and position are read (None: the built-in env's keys).
    :param history: rows ``make_env``'s env needs before the first decision (None: ``env_kwargs``'
        ``window_size`` or the built-in env's default); the built-in env always takes its ``window_size``.
    :param seed: the seed given to ``make_env``.
    :param table: what ``make_env`` gets, sliced as ``prices`` (a DataFrame of the same rows); None: ``prices``.
    :param benchmark: buy-and-hold's prices, same rows (the result's ``asset_returns``); None: ``prices``.
    :return: the :class:`ForwardResult`.
    :raises CheckpointError: for a window without a test part or outside the prices, a test part that starts
        before ``history`` rows, bad ``env_kwargs``, a model that does not fit the env, an env whose steps
        do not match the rows or do not report what ``step_reader`` reads (``EnvContractError``).
    """
    values, index = as_prices(prices)
    start, stop = check_test_part(window, len(values))
    reader = StepReader() if step_reader is None else step_reader
    env_data = prices if table is None else _same_rows(table, len(values), "table")
    h, build = _env_builder(env_data, values, (start, stop), env_kwargs, make_env, history, seed)
    rows = dated_rows(start, stop, len(values))
    episode = _part_returns(model, build, vecnormalize, reader, rows, (make_env, start, stop, h))
    prices_ = (_benchmark(benchmark, values), index)
    return _make_result(iteration, candidate, start, stop, False, rows, prices_, episode, periods_per_year)


def placeholder_forward(
    prices: Any,
    window: Window,
    *,
    iteration: int,
    candidate: str | None = None,
    periods_per_year: float = 252,
    benchmark: Any = None,
) -> ForwardResult:
    """The forward result of an iteration without a model: flat over its test part, zero return every period.

    It has the same rows (and dates) :func:`evaluate_forward` would give, so the stitched curve has no hole.

    :param prices: all close prices, as for :func:`evaluate_forward`.
    :param window: a window with a test part.
    :param iteration: the iteration number.
    :param candidate: the candidate's name (None without candidates).
    :param periods_per_year: annualization of the metrics.
    :param benchmark: buy-and-hold's prices, as for :func:`evaluate_forward`.
    :return: a :class:`ForwardResult` with ``placeholder=True``.
    """
    values, index = as_prices(prices)
    start, stop = check_test_part(window, len(values))
    rows = dated_rows(start, stop, len(values))
    zeros = (0.0,) * rows.size
    prices_ = (_benchmark(benchmark, values), index)
    flat = Episode(zeros, zeros, 0.0)
    return _make_result(iteration, candidate, start, stop, True, rows, prices_, flat, periods_per_year)
