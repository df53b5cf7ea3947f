"""One episode of a model on any env that keeps the contract (``sb3_iter_ckpt.common.steps``).

:func:`run_episode` is the only place the package steps an env to judge a model: validation and train
scores, the forward evaluation of a test part, ``evaluate_trading``. It calls ``reset()`` and ``step()``
and nothing else, and reads each step with a :class:`~sb3_iter_ckpt.common.steps.StepReader`. A recurrent
policy's state and ``episode_start`` are carried through the episode as SB3's ``evaluate_policy`` does
(:func:`predictor`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_iter_ckpt.common.steps import StepReader
from sb3_iter_ckpt.stats.metrics import trading_metrics

__all__ = ["Episode", "episode_metrics", "predictor", "run_episode"]


@dataclass(frozen=True)
class Episode:
    """What one episode gave: every step's return, the env's positions (None: the reader reads none), the
    summed reward."""

    returns: tuple[float, ...]
    positions: tuple[float, ...] | None
    reward: float


def _reset_info(venv: Any) -> Any:
    """The reset info of a VecEnv's one env (a wrapper such as VecNormalize keeps none of its own)."""
    inner = venv
    while hasattr(inner, "venv"):
        inner = inner.venv
    infos = getattr(inner, "reset_infos", None)
    return infos[0] if infos else {}


def _takes_state(model: Any) -> bool:
    """Whether ``model.predict`` takes SB3's ``state`` and ``episode_start`` (a hand-written model may not)."""
    try:
        params = inspect.signature(model.predict).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): call it as SB3's
        return True
    return {"state", "episode_start"} <= params.keys() or any(p.kind is p.VAR_KEYWORD for p in params.values())


def predictor(model: Any, *, deterministic: bool = True) -> Callable[[Any, bool], Any]:
    """``model.predict`` as ``act(observation, episode_start) -> action``, the policy's state carried from one
    call to the next, as SB3's ``evaluate_policy`` does: no state before the first call, ``episode_start`` True
    on an episode's first step. A non-recurrent model ignores both; a ``predict`` without these parameters is
    called without them.

    :param model: anything with SB3's ``predict(observation, state=None, episode_start=None, deterministic=...)``.
    :param deterministic: passed to ``predict``.
    """
    if not _takes_state(model):
        return lambda obs, episode_start: model.predict(obs, deterministic=deterministic)[0]
    state: Any = None

    def act(obs: Any, episode_start: bool) -> Any:
        nonlocal state
        starts = np.array([episode_start], dtype=bool)  # one env: SB3's (n_envs,) flags
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        return action

    return act


def run_episode(
    model: Any,
    env: Any,
    reader: StepReader | None = None,
    *,
    deterministic: bool = True,
    seed: int | None = None,
    observe: Callable[[Mapping[str, Any]], None] | None = None,
) -> Episode:
    """Run ``model`` over one whole episode of ``env`` from a reset (seeded when ``seed`` is given).

    :param model: anything with SB3's ``predict(observation, state, episode_start, deterministic) -> (action,
        state)``; a recurrent policy's state is carried through the episode (:func:`predictor`).
    :param env: a gymnasium env (or wrapper) or an SB3 ``VecEnv`` with one env (e.g. with ``VecNormalize``).
    :param reader: how a step is read (default: the built-in env's ``info["return"]``, ``info["position"]``).
    :param observe: called with ``reset()``'s info, then with every step's (e.g. to collect dates and prices).
    :raises EnvContractError: when a step does not report what the reader reads.
    """
    from stable_baselines3.common.vec_env import VecEnv  # lazy: keeps torch out of `import ...envs`

    reader = StepReader() if reader is None else reader
    is_vec = isinstance(env, VecEnv)
    if is_vec:
        if env.num_envs != 1:
            raise ValueError(f"an episode needs a VecEnv with one environment, got {env.num_envs}")
        if seed is not None:
            env.seed(seed)
        obs = env.reset()
        reset_info = _reset_info(env)
    else:
        obs, reset_info = env.reset(seed=seed)
    if observe is not None:
        observe(reset_info)
    equity = reader.initial_equity(reset_info)
    returns: list[float] = []
    positions: list[float | None] = []
    total_reward, done = 0.0, False
    act = predictor(model, deterministic=deterministic)
    while not done:
        action = act(obs, not returns)  # episode_start: the first step only (the episode ends on done)
        if is_vec:
            # The info of the last step is read before DummyVecEnv's automatic reset can matter.
            obs, rewards, dones, infos = env.step(action)
            reward, info, done = float(rewards[0]), infos[0], bool(dones[0])
        else:
            obs, reward, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)
        total_reward += float(reward)
        if observe is not None:
            observe(info)
        step = reader.read(info, equity)
        equity = step.equity
        returns.append(step.ret)
        positions.append(step.position)
    known = None if reader.position_key is None else tuple(float(p) for p in positions if p is not None)
    return Episode(tuple(returns), known, total_reward)


def episode_metrics(episodes: Sequence[Episode], periods_per_year: float) -> dict[str, Any]:
    """Trading metrics of the episodes' concatenated returns, ``n_trades`` summed per episode (each starts
    flat), ``mean_reward`` over episodes and ``n_episodes``: what ``evaluate_trading`` reports."""
    returns = [r for e in episodes for r in e.returns]
    has_positions = all(e.positions is not None for e in episodes)
    positions = [p for e in episodes for p in (e.positions or ())] if has_positions else None
    result = trading_metrics(returns, positions=positions, periods_per_year=periods_per_year)
    if has_positions:
        result["n_trades"] = sum(
            int(np.count_nonzero(np.diff(np.concatenate(([0.0], e.positions or ()))))) for e in episodes
        )
    result["mean_reward"] = float(np.mean([e.reward for e in episodes]))
    result["n_episodes"] = len(episodes)
    return result
