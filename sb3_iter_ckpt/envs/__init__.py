"""Environments shipped with sb3-iter-ckpt (a small trading task for examples and tests) and the env contract:
what the package reads from any env (:class:`StepReader`, its presets) and the one episode runner."""

from __future__ import annotations

from sb3_iter_ckpt.common.steps import StepRead, StepReader
from sb3_iter_ckpt.envs.episode import Episode, episode_metrics, run_episode
from sb3_iter_ckpt.envs.trading import TradingEnv, evaluate_trading

__all__ = ["Episode", "StepRead", "StepReader", "TradingEnv", "episode_metrics", "evaluate_trading", "run_episode"]
