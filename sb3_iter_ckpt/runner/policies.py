"""The policy a model is built with: the run's (or candidate's) ``policy`` setting, or the one that fits.

``None`` (the default) chooses by the algorithm's own policy aliases and the env's observation space:
``"MlpPolicy"``, ``"MultiInputPolicy"`` for a gymnasium ``Dict`` observation, and a recurrent algorithm's
own alias when it has no ``MlpPolicy`` (sb3-contrib's ``RecurrentPPO``: ``"MlpLstmPolicy"``, or
``"MultiInputLstmPolicy"`` for a ``Dict``). A name with a ``.`` or ``:`` is an import path
(``"package.module:Class"`` or ``"package.module.Class"``); a class is used as it is.

A leaf: it imports only ``errors`` here, and gymnasium (or the named module) when a policy is resolved.
"""

from __future__ import annotations

import importlib
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError

__all__ = ["import_policy", "is_import_path", "resolve_policy"]

#: The aliases tried in order when no policy is named: a flat observation, a ``Dict`` one.
_AUTOMATIC = {False: ("MlpPolicy", "MlpLstmPolicy"), True: ("MultiInputPolicy", "MultiInputLstmPolicy")}


def is_import_path(policy: Any) -> bool:
    """Whether ``policy`` names a class by its import path (SB3's aliases have neither ``.`` nor ``:``)."""
    return isinstance(policy, str) and ("." in policy or ":" in policy)


def import_policy(path: str) -> type:
    """The class at ``"package.module:Class"`` or ``"package.module.Class"``.

    :raises CheckpointError: when nothing importable is a class at that path.
    """
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):  # a nested class: "package.module:Outer.Inner"
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(
            f"policy {path!r} cannot be imported ({type(exc).__name__}: {exc}); name a policy class as "
            "'package.module:Class' or an alias of the algorithm such as 'MlpPolicy'"
        ) from exc
    if not isinstance(obj, type):
        raise CheckpointError(f"policy {path!r} is a {type(obj).__name__}, not a class")
    return obj


def resolve_policy(algo_class: Any, policy: Any, observation_space: Any) -> Any:
    """What ``algo_class(policy, env, ...)`` is given: an alias of ``algo_class`` or a policy class.

    :param algo_class: the algorithm (its ``policy_aliases`` name what it builds by name).
    :param policy: the setting: None (chosen here), an alias, an import path or a class.
    :param observation_space: the env's (a ``Dict`` chooses a multi-input policy).
    :raises CheckpointError: an import path that does not import, an alias the algorithm does not know.
    """
    aliases = getattr(algo_class, "policy_aliases", None) or {}
    if policy is None:
        from gymnasium import spaces

        order = _AUTOMATIC[isinstance(observation_space, spaces.Dict)]
        return next((name for name in order if name in aliases), order[0])
    if is_import_path(policy):
        return import_policy(policy)
    if isinstance(policy, str) and aliases and policy not in aliases:
        name = getattr(algo_class, "__name__", str(algo_class))
        raise CheckpointError(
            f"policy {policy!r} is not one of {name}'s policies {sorted(aliases)}; name one of them, a class or "
            "its import path ('package.module:Class'), or leave it out to have it chosen"
        )
    return policy
