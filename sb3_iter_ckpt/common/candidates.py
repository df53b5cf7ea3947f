"""Candidates: several models trained per window, the one with the best selection score chosen (FinRL-style).

A :class:`Candidate` is one configuration (algorithm, seed, hyperparameters) trained on every window of a
walk-forward run into its own repository, ``candidates/<name>/`` under the experiment root. For each
window, :func:`choose` picks the candidate whose kept model has the best selection score on validation;
the root's ``checkpoints/`` then holds a copy of that model (``sb3_iter_ckpt.runner.ensemble``). Every
candidate's forward result feeds the deflated Sharpe ratio's trials and PBO.

Pure: names, validation and the choice; no file I/O.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError

__all__ = [
    "CANDIDATES_DIR",
    "Candidate",
    "candidate_scores",
    "check_candidates",
    "check_policy",
    "choose",
    "make_candidates",
    "policy_config",
    "policy_name",
]

#: The folder of the candidates' repositories under the experiment root.
CANDIDATES_DIR = "candidates"

# A folder name on every file system and object store we support: no separators, no leading dot or dash.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class Candidate:
    """One model configuration trained on every window.

    :param name: Its folder under ``candidates/`` and its name in records, the report and the forward table
        (letters, digits, ``.``, ``_``, ``-``; at most 64 characters; not starting with ``.`` or ``-``).
    :param algo: ``"ppo"``, ``"a2c"``, ``"dqn"`` or an import path (as ``RunOptions.algo``).
    :param seed: Its base seed (iteration ``i`` trains with ``seed + i``).
    :param algo_kwargs: Its hyperparameters, replacing the run's ``algo_kwargs``; None: the run's.
    :param policy: Its policy (as ``RunOptions.policy``: an alias, a class or its import path), replacing the
        run's; None: the run's.
    """

    name: str
    algo: str = "ppo"
    seed: int = 0
    algo_kwargs: Mapping[str, Any] | None = None
    policy: str | type | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or self.name in (".", ".."):
            raise CheckpointError(
                f"candidate name {self.name!r} is not a valid folder name: use letters, digits, '.', '_' and '-' "
                "(at most 64, not starting with '.' or '-')"
            )
        if not isinstance(self.algo, str) or not self.algo:
            raise CheckpointError(f"candidate {self.name!r}: algo must be a non-empty name, got {self.algo!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise CheckpointError(f"candidate {self.name!r}: seed must be an integer, got {self.seed!r}")
        if self.algo_kwargs is not None:
            object.__setattr__(self, "algo_kwargs", dict(self.algo_kwargs))
        check_policy(self.policy, f"candidate {self.name!r}: policy")

    def to_dict(self) -> dict[str, Any]:
        """Its configuration as plain data (the run's fingerprint records it)."""
        kwargs = None if self.algo_kwargs is None else dict(self.algo_kwargs)
        base = {"name": self.name, "algo": self.algo, "seed": self.seed, "algo_kwargs": kwargs}
        return {**base, **policy_config(self.policy)}


def check_policy(policy: Any, what: str) -> None:
    """Refuse a ``policy`` setting that is neither None, a name (an alias or an import path) nor a class."""
    if policy is None or isinstance(policy, type) or (isinstance(policy, str) and policy.strip() == policy != ""):
        return
    raise CheckpointError(
        f"{what} must be an alias such as 'MlpPolicy', a policy class or its import path "
        f"('package.module:Class'), got {policy!r}"
    )


def policy_config(policy: str | type | None) -> dict[str, str]:
    """``{"policy": name}`` for a fingerprint, empty when ``policy`` is None or ``"MlpPolicy"``: every earlier
    run was built with ``"MlpPolicy"`` and keeps its fingerprint, and wherever ``"MlpPolicy"`` builds a model at
    all (a flat observation, an algorithm that has it) the automatic choice is the same."""
    return {} if policy is None or policy == "MlpPolicy" else {"policy": policy_name(policy)}


def policy_name(policy: str | type) -> str:
    """A policy setting as the fingerprint records it: an alias as given, a class by its import path (the
    ``package.module:Class`` spelling written ``package.module.Class``, so that both are the same run)."""
    if isinstance(policy, type):
        return f"{policy.__module__}.{policy.__qualname__}"
    return policy.replace(":", ".")


def check_candidates(candidates: Iterable[Candidate]) -> tuple[Candidate, ...]:
    """``candidates`` as a tuple, refused when it holds something else or two share a name."""
    if isinstance(candidates, (Candidate, str)) or not isinstance(candidates, Iterable):
        raise CheckpointError(f"candidates must be a list of Candidate objects, got {candidates!r}")
    out = tuple(candidates)
    for c in out:
        if not isinstance(c, Candidate):
            raise CheckpointError(f"candidates must be Candidate objects, got {c!r}")
    seen: set[str] = set()
    for c in out:
        # Case-insensitive: two names differing only by case would share a folder on macOS or Windows.
        if c.name.lower() in seen:
            raise CheckpointError(f"two candidates are named {c.name!r}: each needs its own name (its folder)")
        seen.add(c.name.lower())
    return out


def make_candidates(
    algos: Sequence[str],
    n_seeds: int = 1,
    seed: int = 0,
    algo_kwargs: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> tuple[Candidate, ...]:
    """The product of ``algos`` and ``n_seeds`` seeds, named ``{algo}-s{k}`` with seed ``seed + k``.

    What ``walk-forward --algo ppo,a2c --seeds 2`` trains: ``ppo-s0``, ``ppo-s1``, ``a2c-s0``, ``a2c-s1``.

    :param algo_kwargs: ``algo -> its hyperparameters`` (None: the run's ``algo_kwargs`` for every one).
    """
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise CheckpointError(f"the number of seeds must be an integer >= 1, got {n_seeds!r}")
    names = [a.strip() for a in algos]
    if not names or any(not a for a in names):
        raise CheckpointError(f"give at least one algorithm name, without empty entries: {list(algos)!r}")
    # An import path's last part names the folder: my_pkg.algos.MyPPO -> myppo-s0.
    return check_candidates(
        Candidate(f"{a.rsplit('.', 1)[-1].lower()}-s{k}", a, seed + k, None if algo_kwargs is None else algo_kwargs(a))
        for a, k in itertools.product(names, range(n_seeds))
    )


def choose(scores: Mapping[str, float | None], rule: SelectionRule) -> str | None:
    """The candidate with the best score by ``rule.mode``; None when no candidate has one.

    ``scores``: candidate -> the selection score of its kept model on this window, None for a candidate
    without a model (a placeholder). Ties go to the first candidate in ``scores``' order (the run's
    order), so the choice never depends on timing.
    """
    best: str | None = None
    for name, score in scores.items():
        if score is not None and (best is None or rule.better(score, scores[best])):
            best = name
    return best


def candidate_scores(checkpoints: Iterable[Any]) -> dict[str, dict[int, float | None]]:
    """Candidate -> iteration -> its selection score, from the root records' ``candidate`` field.

    ``checkpoints``: the root's ``Checkpoint`` objects. A record without the field (a run without
    candidates) or with a malformed one (a hand-edited record: ``verify`` judges records, not this) adds nothing.
    """
    out: dict[str, dict[int, float | None]] = {}
    for ck in checkpoints:
        entry = ck.record.get("candidate") if isinstance(ck.record, dict) else None
        scores = entry.get("scores") if isinstance(entry, dict) else None
        if not isinstance(scores, dict):
            continue
        for name, score in scores.items():
            if isinstance(name, str) and _NAME_RE.match(name):
                ok = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
                out.setdefault(name, {})[ck.iteration] = float(score) if ok else None
    return out
