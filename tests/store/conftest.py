"""Fixtures of the store's tests (the root conftest has those several folders share)."""

from __future__ import annotations

import gymnasium as gym
import pytest


@pytest.fixture
def eval_env():
    env = gym.make("CartPole-v1")
    env.reset(seed=123)
    yield env
    env.close()
