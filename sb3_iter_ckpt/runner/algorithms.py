"""The SB3 algorithms known by short name (``"ppo"``), and the lookup of a name or import path.

A leaf: it imports only ``errors`` here, and SB3 (or the named module) when a class is looked up.
"""

from __future__ import annotations

import importlib
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["ALGORITHMS", "algorithm_class"]

#: Algorithms the built-in discrete-action trading env supports, by short name.
ALGORITHMS = {"ppo": "stable_baselines3.PPO", "a2c": "stable_baselines3.A2C", "dqn": "stable_baselines3.DQN"}


def algorithm_class(name: str) -> Any:
    """The algorithm class of a short name (``"ppo"``, see ``ALGORITHMS``) or an import path.

    :param name: A key of ``ALGORITHMS`` (any case) or ``"package.module.Class"``.
    :raises CheckpointError: when nothing importable has that name.
    """
    path = ALGORITHMS.get(name.lower(), name)
    module, _, cls = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"unknown algorithm {name!r}; use one of {sorted(ALGORITHMS)} or an import path") from exc
