"""The algorithms known by short name (``"ppo"``, ``"sac"``), the lookup of a name or import path, and the
action mode of the built-in env each one trains on.

A leaf: it imports only ``errors`` here, and SB3 (or sb3-contrib, or the named module) when a class is looked up.
"""

from __future__ import annotations

import importlib
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["ALGORITHMS", "ALIASES", "algorithm_class", "canonical_name", "env_kwargs_for", "trading_action_mode"]

#: Every algorithm of SB3 and sb3-contrib that can be a candidate, by short name (sb3-contrib's need the
#: ``contrib`` extra).
ALGORITHMS = {
    "a2c": "stable_baselines3.A2C",
    "ppo": "stable_baselines3.PPO",
    "dqn": "stable_baselines3.DQN",
    "ddpg": "stable_baselines3.DDPG",
    "sac": "stable_baselines3.SAC",
    "td3": "stable_baselines3.TD3",
    "tqc": "sb3_contrib.TQC",
    "qrdqn": "sb3_contrib.QRDQN",
    "trpo": "sb3_contrib.TRPO",
    "ars": "sb3_contrib.ARS",
    "recurrentppo": "sb3_contrib.RecurrentPPO",
}

#: Other spellings of the short names (``ppo_lstm`` is RL Zoo's).
ALIASES = {
    "qr-dqn": "qrdqn",
    "qr_dqn": "qrdqn",
    "recurrent_ppo": "recurrentppo",
    "recurrent-ppo": "recurrentppo",
    "ppo_lstm": "recurrentppo",
    "ppo-lstm": "recurrentppo",
}

#: The algorithms that act on a ``Box`` action space only (their ``supported_action_spaces``, which SB3 passes
#: to ``BaseAlgorithm.__init__`` and keeps on no attribute): the built-in env trades them in its continuous
#: mode. Every other one acts on ``Discrete`` and trains on the discrete mode, as before.
_BOX_ONLY = ("stable_baselines3.DDPG", "stable_baselines3.SAC", "stable_baselines3.TD3", "sb3_contrib.TQC")

_CONTRIB_EXTRA = 'pip install "sb3-iter-ckpt[contrib]"'


def canonical_name(name: str) -> str:
    """A short name or alias as its key of ``ALGORITHMS`` (``"QR-DQN"`` -> ``"qrdqn"``); an import path as given."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in ALGORITHMS else name


def algorithm_class(name: str) -> Any:
    """The algorithm class of a short name (``"ppo"``, see ``ALGORITHMS`` and ``ALIASES``) or an import path.

    :param name: A key of ``ALGORITHMS`` or ``ALIASES`` (any case) or ``"package.module.Class"``.
    :raises CheckpointError: when nothing importable has that name, or the name is sb3-contrib's and it is
        not installed (one line naming the extra).
    """
    key = canonical_name(name)
    path = ALGORITHMS.get(key, name)
    module, _, cls = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if key in ALGORITHMS and exc.name == "sb3_contrib":
            raise CheckpointError(f"{name} is sb3-contrib's {cls}, which is not installed: {_CONTRIB_EXTRA}") from None
        raise _unknown(name) from exc
    except (ImportError, AttributeError, ValueError) as exc:
        raise _unknown(name) from exc


def _unknown(name: str) -> CheckpointError:
    names = ", ".join(ALGORITHMS)
    return CheckpointError(f"unknown algorithm {name!r}; use one of {names} (or an import path package.module.Class)")


def trading_action_mode(cls: type) -> str:
    """``"continuous"`` for an algorithm that acts on a ``Box`` only (DDPG, SAC, TD3, TQC and their subclasses),
    else ``"discrete"``: the built-in env's ``action_mode`` it trains on."""
    paths = {f"{c.__module__.partition('.')[0]}.{c.__name__}" for c in cls.__mro__}
    return "continuous" if paths.intersection(_BOX_ONLY) else "discrete"


def env_kwargs_for(options: Any) -> dict[str, Any]:
    """The built-in env's arguments for a run's (or candidate's) ``RunOptions``: ``trading_env_kwargs``, with
    ``action_mode="continuous"`` when its algorithm acts on a ``Box`` only.

    Derived from the algorithm, which the fingerprint records, so never recorded itself: a discrete run's
    arguments are those of every earlier version. An ``action_mode`` in ``env_kwargs`` is kept as given, and so
    are the arguments of a run with its own ``make_model`` (its algorithm is the user's).
    """
    kwargs: dict[str, Any] = options.trading_env_kwargs
    if options.make_model is None and "action_mode" not in kwargs:
        if trading_action_mode(algorithm_class(options.algo)) == "continuous":
            kwargs["action_mode"] = "continuous"
    return kwargs
