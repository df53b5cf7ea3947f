"""Environments shipped with sb3-iter-ckpt (a small trading task for examples and tests)."""

from __future__ import annotations

from sb3_iter_ckpt.envs.trading import TradingEnv, evaluate_trading

__all__ = ["TradingEnv", "evaluate_trading"]
