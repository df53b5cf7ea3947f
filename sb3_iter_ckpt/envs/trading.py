"""A minimal single-asset trading environment and the evaluator the walk-forward runner uses by default.

``TradingEnv`` is deliberately small: one instrument, discrete short/flat/long positions (or, with
``action_mode="continuous"``, any target position in between), proportional transaction costs, and the
per-step net return as reward. It exists so that examples and tests have a real
trading task whose metrics mean something; bring your own environment for research.

Timing convention (no look-ahead): at step ``t`` the agent sees log returns up to and including price ``t``,
chooses the position it will hold from ``t`` to ``t + 1``, pays the cost of changing to it, and earns
``position * (price[t + 1] / price[t] - 1)``.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_iter_ckpt.common.steps import StepReader
from sb3_iter_ckpt.envs.episode import episode_metrics, run_episode
from sb3_iter_ckpt.stats.metrics import trading_metrics

__all__ = ["TradingEnv", "evaluate_trading", "price_array"]


def price_array(prices: Any) -> np.ndarray:
    """Close prices (a pandas Series or any 1-D sequence) as a float64 array; ``ValueError`` unless they
    are one-dimensional, finite and strictly positive."""
    try:
        arr = np.asarray(prices.to_numpy(dtype=np.float64) if hasattr(prices, "to_numpy") else prices, np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"prices must be a 1-D sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"prices must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("prices must be finite and strictly positive")
    return arr


# Observed log returns are clipped to this bound so the observation space can be finite (SB3's env checker
# warns about infinite bounds); a one-bar log return of +/-10 (a factor of 22000) never happens in real data.
_OBS_BOUND = 10.0

#: The two ways an action names the position: an index into short/flat/long, or the target position itself.
ACTION_MODES = ("discrete", "continuous")


class TradingEnv(gym.Env):
    """Trade one instrument with short / flat / long positions.

    Actions (``Discrete(3)``): ``0`` short (-1), ``1`` flat (0), ``2`` long (+1). With ``allow_short=False``
    (``Discrete(2)``): ``0`` flat, ``1`` long.

    With ``action_mode="continuous"`` (for DDPG, SAC, TD3, TQC) the action is the target position itself,
    ``Box(-1, 1, (1,))`` (``Box(0, 1, (1,))`` with ``allow_short=False``); a value outside the box is clipped
    to it, as SB3 clips a Gaussian policy's actions. The cost, the reward and ``info`` are the discrete mode's
    with that position: the actions -1, 0 and 1 give exactly the returns of short, flat and long.

    Observation (``Box(float32, (window_size + 1,))``): the last ``window_size`` log returns (clipped to
    +/-10) followed by the current position.

    Reward: ``position * simple_return - transaction_cost * |position change|``, i.e. the step's net return,
    so equity is the running product of ``1 + reward``. A step that would lose more than the whole account
    (a short through a move of 2x or more) returns -1: equity ends at 0, never below. A ruined account
    stays at 0: the episode goes on, every later step holds position 0 and returns 0.

    An episode starts at index ``window_size`` (or a random index with ``random_start``) and terminates at the
    last price; ``max_steps`` truncates it earlier. Each step's ``info`` holds ``equity``, ``position``,
    ``return`` (net), ``price`` (the price the step ends on) and ``step`` (steps taken this episode); the
    last step's ``info`` also holds ``episode_metrics`` from :func:`sb3_iter_ckpt.stats.metrics.trading_metrics`.

    :param prices: close prices (array-like or pandas Series), finite and > 0.
    :param window_size: number of past log returns in the observation.
    :param transaction_cost: cost as a fraction of traded notional per unit of position change
        (going from short to long costs twice this).
    :param allow_short: offer the short action (continuous mode: negative positions).
    :param max_steps: truncate episodes after this many steps (None: run to the end of the series).
    :param random_start: start each episode at a random index drawn from the env's ``np_random``
        (seeded by ``reset(seed=...)``).
    :param periods_per_year: annualisation factor used for ``episode_metrics``.
    :param action_mode: ``"discrete"`` (an index into the positions) or ``"continuous"`` (the target position).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        prices: Any,
        window_size: int = 10,
        transaction_cost: float = 0.0005,
        allow_short: bool = True,
        max_steps: int | None = None,
        random_start: bool = False,
        periods_per_year: float = 252,
        action_mode: str = "discrete",
    ) -> None:
        super().__init__()
        arr = price_array(prices)
        if isinstance(window_size, bool) or not isinstance(window_size, (int, np.integer)) or window_size < 1:
            raise ValueError(f"window_size must be an integer >= 1, got {window_size!r}")
        window_size = int(window_size)
        if len(arr) < window_size + 2:
            raise ValueError(
                f"prices has {len(arr)} values; window_size={window_size} needs at least {window_size + 2} "
                "(window_size + 1 prices for the first observation and one more for a step)"
            )
        if not (math.isfinite(transaction_cost) and transaction_cost >= 0):
            raise ValueError(f"transaction_cost must be finite and >= 0, got {transaction_cost!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        if not (math.isfinite(periods_per_year) and periods_per_year > 0):
            raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be 'discrete' or 'continuous', got {action_mode!r}")

        self.prices = arr
        self.window_size = window_size
        self.transaction_cost = float(transaction_cost)
        self.allow_short = bool(allow_short)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.random_start = bool(random_start)
        self.periods_per_year = periods_per_year
        self.action_mode = action_mode

        # log_returns[i] = log(p[i] / p[i-1]); index 0 is padding so positions line up with prices.
        self._log_returns = np.zeros_like(arr)
        self._log_returns[1:] = np.clip(np.diff(np.log(arr)), -_OBS_BOUND, _OBS_BOUND)
        self._positions_of_action = np.array([-1.0, 0.0, 1.0] if self.allow_short else [0.0, 1.0])

        self.action_space: spaces.Space[Any] = spaces.Discrete(len(self._positions_of_action))
        if action_mode == "continuous":
            low = -1.0 if self.allow_short else 0.0
            self.action_space = spaces.Box(low=low, high=1.0, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Box(
            low=-_OBS_BOUND, high=_OBS_BOUND, shape=(window_size + 1,), dtype=np.float32
        )

        self._t = window_size
        self._position = 0.0
        self._equity = 1.0
        self._returns: list[float] = []
        self._positions: list[float] = []

    # -- gymnasium API --------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode flat with equity 1.0.

        :param seed: seeds ``np_random`` (used by ``random_start``).
        :param options: unused.
        :return: the first observation and an info dict (same keys as a step's, ``return`` 0.0).
        """
        super().reset(seed=seed)
        last_start = len(self.prices) - 2  # the last index from which one step is still possible
        if self.random_start:
            if self.max_steps is not None:
                # Prefer starts that leave room for a full max_steps episode.
                last_start = max(self.window_size, len(self.prices) - 1 - self.max_steps)
            self._t = int(self.np_random.integers(self.window_size, last_start + 1))
        else:
            self._t = self.window_size
        self._start = self._t
        self._position = 0.0
        self._equity = 1.0
        self._returns = []
        self._positions = []
        return self._observation(), self._info(0.0)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Hold the position chosen by ``action`` over the next price move.

        :param action: an action index (int, numpy scalar or one-element array); in continuous mode the
            target position (a number or a one-element array).
        :return: observation, reward (net return), terminated (end of data), truncated (``max_steps``), info.
        """
        new_position = self._position_of(action)
        if self._t >= len(self.prices) - 1:
            raise RuntimeError("step() called after the episode ended; call reset()")
        if self._equity <= 0.0:
            # A ruined account holds nothing and earns nothing; the episode goes on (one step per row).
            new_position, net = 0.0, 0.0
        else:
            cost = self.transaction_cost * abs(new_position - self._position)
            simple_return = self.prices[self._t + 1] / self.prices[self._t] - 1.0
            # A loss beyond the whole account (a short through a 2x move) ends at 0, never below.
            net = max(new_position * simple_return - cost, -1.0)

        self._t += 1
        self._position = new_position
        self._equity *= 1.0 + net
        self._returns.append(float(net))
        self._positions.append(new_position)

        terminated = self._t >= len(self.prices) - 1
        truncated = not terminated and self.max_steps is not None and len(self._returns) >= self.max_steps
        info = self._info(net)
        if terminated or truncated:
            info["episode_metrics"] = trading_metrics(
                self._returns, positions=self._positions, periods_per_year=self.periods_per_year
            )
        return self._observation(), float(net), terminated, truncated, info

    # -- episode accessors ----------------------------------------------------------------------------------

    def episode_returns(self) -> np.ndarray:
        """Net return of every step of the current (or just finished) episode."""
        return np.asarray(self._returns, dtype=np.float64)

    def episode_positions(self) -> np.ndarray:
        """Position held during every step of the current episode (aligned with :meth:`episode_returns`)."""
        return np.asarray(self._positions, dtype=np.float64)

    def episode_equity(self) -> np.ndarray:
        """Equity curve of the current episode: 1.0, then one value per step."""
        return np.concatenate(([1.0], np.cumprod(1.0 + self.episode_returns())))

    # -- helpers --------------------------------------------------------------------------------------------

    def _position_of(self, action: Any) -> float:
        """The position an action names; ``ValueError`` for anything else."""
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"invalid action {action!r} for {self.action_space}") from None
        # SB3's predict returns a 0-d array for one observation and shape (1,) when batched.
        value = float(arr.reshape(-1)[0]) if arr.size == 1 else math.nan
        if self.action_mode == "continuous":
            if not math.isfinite(value):
                raise ValueError(f"invalid action {action!r} for {self.action_space}: a finite target position")
            low = -1.0 if self.allow_short else 0.0
            return min(max(value, low), 1.0)
        if not (math.isfinite(value) and value == int(value) and self.action_space.contains(int(value))):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        return float(self._positions_of_action[int(value)])

    def _observation(self) -> np.ndarray:
        window = self._log_returns[self._t - self.window_size + 1 : self._t + 1]
        return np.append(window, self._position).astype(np.float32)

    def _info(self, net: float) -> dict[str, Any]:
        return {
            "equity": float(self._equity),
            "position": float(self._position),
            "return": float(net),
            "price": float(self.prices[self._t]),
            "step": len(self._returns),
        }


def _find_periods_per_year(env: Any, is_vec: bool) -> float:
    try:
        if is_vec:
            return env.get_attr("periods_per_year", indices=[0])[0]
        return env.get_wrapper_attr("periods_per_year")
    except AttributeError:
        raise ValueError(
            "cannot find periods_per_year on the environment (is it a TradingEnv?); pass periods_per_year="
        ) from None


def evaluate_trading(
    model: Any,
    env: Any,
    n_episodes: int = 1,
    deterministic: bool = True,
    periods_per_year: float | None = None,
    *,
    seed: int | None = None,
    step_reader: StepReader | None = None,
) -> dict[str, float | None]:
    """Run ``model`` for whole episodes on a trading env and compute trading metrics.

    This is the default evaluator of the walk-forward runner: ``functools.partial(evaluate_trading,
    n_episodes=1)`` is a ``callable(model, eval_env) -> dict``.

    :param model: anything with SB3's ``predict(observation, deterministic=...) -> (action, state)``.
    :param env: a :class:`TradingEnv`, a gymnasium wrapper around one (e.g. ``Monitor``), or an SB3
        ``VecEnv`` with exactly one sub-environment wrapping one (e.g. ``DummyVecEnv`` + ``VecNormalize``;
        put ``VecNormalize`` in evaluation mode, ``training=False``, yourself).
    :param n_episodes: number of complete episodes to run (each one is reset first).
    :param deterministic: passed to ``model.predict``.
    :param periods_per_year: annualisation factor; None reads it from the environment.
    :param seed: optional seed for the first reset (matters with ``random_start``).
    :param step_reader: how a step's return and position are read from its info (default: ``"return"``
        and ``"position"``, the built-in env's); any env that keeps the contract can be evaluated.
    :return: :func:`~sb3_iter_ckpt.stats.metrics.trading_metrics` of the concatenated step returns of all
        episodes (``n_trades`` summed per episode, since every episode starts flat), plus ``mean_reward``
        (mean over episodes of the summed rewards the env returned) and ``n_episodes``.
    """
    from stable_baselines3.common.vec_env import VecEnv  # lazy: keeps torch out of `import ...envs`

    if isinstance(n_episodes, bool) or int(n_episodes) != n_episodes or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    is_vec = isinstance(env, VecEnv)
    if is_vec and env.num_envs != 1:
        raise ValueError(f"evaluate_trading needs a VecEnv with one environment, got {env.num_envs}")
    ppy = _find_periods_per_year(env, is_vec) if periods_per_year is None else periods_per_year
    episodes = [
        run_episode(model, env, step_reader, deterministic=deterministic, seed=seed if episode == 0 else None)
        for episode in range(int(n_episodes))
    ]
    return episode_metrics(episodes, ppy)
