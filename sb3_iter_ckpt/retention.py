"""Retention policies: which committed iterations keep their model files.

Pure code, no file I/O. Modelled on Orbax's preservation policies: every policy is a tiny frozen
dataclass with one pure method, :meth:`RetentionPolicy.keep`, which looks at the whole history
(the ordered list of :class:`~sb3_iter_ckpt.common.record.Checkpoint` records, placeholders included) and
returns the iteration numbers it wants to keep. Policies compose by union with ``|``::

    policy = KeepLastN(3) | KeepBestK(2, monitor="validation.sharpe")

A policy only *proposes*; :func:`plan` decides. Whatever the policy says, :func:`plan` never removes

* the overall best iteration (passed in by the caller, who knows how "best" was chosen),
* the latest committed iteration (highest iteration number among the records, model or placeholder)
  and the latest iteration that has a model,
* any record without a model: a placeholder, or an iteration whose model was pruned earlier (record
  reason ``"pruned"``); there is nothing to remove and the record is the history.

Only iterations that have a model are candidates for removal.

Customizing: subclass :class:`RetentionPolicy` as a frozen dataclass and implement ``keep``. For example,
keep every iteration whose ``max_drawdown`` metric is below a bound::

    from dataclasses import dataclass

    from sb3_iter_ckpt.retention import KeepLastN, RetentionPolicy

    @dataclass(frozen=True)
    class KeepLowDrawdown(RetentionPolicy):
        bound: float = 0.2

        def keep(self, checkpoints):
            return {
                c.iteration
                for c in checkpoints
                if c.has_model and (dd := c.score("max_drawdown")) is not None and dd < self.bound
            }

    policy = KeepLowDrawdown(0.2) | KeepLastN(2)

Ties: wherever metrics are ranked (:class:`KeepBestK`, :func:`ranked`), equal scores go to the
*later* iteration (in walk-forward training the later model has seen more data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sb3_iter_ckpt.common.record import Checkpoint

__all__ = [
    "PROTECT_BEST",
    "PROTECT_LATEST",
    "PROTECT_PLACEHOLDER",
    "PROTECT_PRUNED",
    "AnyOf",
    "KeepAll",
    "KeepBestK",
    "KeepEveryN",
    "KeepLastN",
    "RetentionPlan",
    "RetentionPolicy",
    "plan",
    "policy_from_args",
    "is_pruned",
    "ranked",
]

#: Reasons found in ``RetentionPlan.protected``.
PROTECT_BEST = "best"
PROTECT_LATEST = "latest"
PROTECT_PLACEHOLDER = "placeholder"
PROTECT_PRUNED = "pruned"

_MODES = ("max", "min")


def _check_count(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")


def _check_mode(owner: str, mode: object) -> None:
    if mode not in _MODES:
        raise ValueError(f"{owner}: mode must be 'max' or 'min', got {mode!r}")


def _check_monitor(owner: str, monitor: object) -> None:
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"{owner}: monitor must be a non-empty metric name, got {monitor!r}")


def is_pruned(checkpoint: Checkpoint) -> bool:
    """Whether a record without a model is an iteration whose model was pruned (not a placeholder).

    :param checkpoint: A record.
    :return: True if it has no model and its reason is ``"pruned"`` or its record has a ``pruned`` entry.
    """
    return not checkpoint.has_model and (checkpoint.reason == "pruned" or "pruned" in checkpoint.record)


def _model_iterations(checkpoints: Iterable[Checkpoint]) -> list[int]:
    """Sorted distinct iteration numbers that have a model."""
    return sorted({c.iteration for c in checkpoints if c.has_model})


def ranked(
    checkpoints: Sequence[Checkpoint], monitor: str = "mean_reward", mode: str = "max"
) -> list[tuple[Checkpoint, float]]:
    """The checkpoints with a model and a finite ``monitor`` score, best first.

    Scores come from :meth:`~sb3_iter_ckpt.common.record.Checkpoint.score` (missing, NaN, inf and non-numeric
    values have none and are left out). Equal scores are ordered later iteration first.

    :param checkpoints: The history (any order; placeholders are ignored).
    :param monitor: Metric name; a dotted name looks into nested metrics (``"validation.sharpe"``).
    :param mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
    :return: ``(checkpoint, score)`` pairs, best first.
    """
    _check_mode("ranked", mode)
    scored = [(c, s) for c in checkpoints if c.has_model and (s := c.score(monitor)) is not None]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(scored, key=lambda cs: (sign * cs[1], -cs[0].iteration))


class RetentionPolicy(ABC):
    """Base class of retention policies. Subclass it (as a frozen dataclass) to write your own.

    A policy is a pure function of the history: given every committed record ordered by iteration
    (placeholders included), it returns the iteration numbers it wants to keep. Iterations it does not
    return may be removed by :func:`plan`, unless they are protected (best, latest, placeholders).
    Combine policies with ``|`` (keep what any of them keeps).
    """

    @abstractmethod
    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        """The iteration numbers this policy wants to keep.

        :param checkpoints: Every committed record, ordered by iteration, placeholders included.
        :return: Iteration numbers to keep. Numbers that are not candidates (placeholders, unknown
            iterations) are ignored by :func:`plan`.
        """

    def __or__(self, other: object) -> AnyOf:
        if not isinstance(other, RetentionPolicy):
            return NotImplemented
        return AnyOf(self, other)


@dataclass(frozen=True)
class KeepAll(RetentionPolicy):
    """Keep every iteration that has a model (nothing is removed)."""

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        return set(_model_iterations(checkpoints))


@dataclass(frozen=True)
class KeepLastN(RetentionPolicy):
    """Keep the ``n`` most recent iterations that have a model (placeholders do not count).

    :param n: How many, at least 1.
    """

    n: int

    def __post_init__(self) -> None:
        _check_count("KeepLastN", "n", self.n)

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        return set(_model_iterations(checkpoints)[-self.n :])


@dataclass(frozen=True)
class KeepEveryN(RetentionPolicy):
    """Keep iterations whose number is a multiple of ``n`` (``i % n == 0``: 0, n, 2n, ...) that have a model.

    The rule depends on the iteration number only, not on position in the history, so the set kept
    does not shift when other iterations are removed or turn out to be placeholders.

    :param n: The period, at least 1 (``n=1`` keeps everything).
    """

    n: int

    def __post_init__(self) -> None:
        _check_count("KeepEveryN", "n", self.n)

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        return {i for i in _model_iterations(checkpoints) if i % self.n == 0}


@dataclass(frozen=True)
class KeepBestK(RetentionPolicy):
    """Keep the ``k`` iterations with a model that score best on ``monitor``.

    Missing, NaN, infinite and non-numeric scores rank worst: they are never chosen over a finite
    score, but when fewer than ``k`` iterations have a finite score the remaining places go to them
    (latest first), so a policy never removes more than asked. Equal scores go to the later iteration.

    :param k: How many, at least 1.
    :param monitor: Metric name; a dotted name looks into nested metrics (``"validation.sharpe"``).
    :param mode: ``"max"`` if higher is better, ``"min"`` if lower is better.
    """

    k: int
    monitor: str = "mean_reward"
    mode: str = "max"

    def __post_init__(self) -> None:
        _check_count("KeepBestK", "k", self.k)
        _check_monitor("KeepBestK", self.monitor)
        _check_mode("KeepBestK", self.mode)

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        best: list[int] = []
        for c, _ in ranked(checkpoints, self.monitor, self.mode):
            if c.iteration not in best:
                best.append(c.iteration)
        if len(best) < self.k:
            rest = [i for i in reversed(_model_iterations(checkpoints)) if i not in best]
            best.extend(rest)
        return set(best[: self.k])


@dataclass(frozen=True, init=False)
class AnyOf(RetentionPolicy):
    """Keep what any of ``policies`` keeps (their union). ``a | b`` builds one.

    Nested unions are flattened: ``AnyOf(AnyOf(a, b), c) == AnyOf(a, b, c)``.

    :param policies: One or more retention policies.
    """

    policies: tuple[RetentionPolicy, ...] = field(default=())

    def __init__(self, *policies: RetentionPolicy) -> None:
        flat: list[RetentionPolicy] = []
        for p in policies:
            if isinstance(p, AnyOf):
                flat.extend(p.policies)
            elif isinstance(p, RetentionPolicy):
                flat.append(p)
            else:
                raise ValueError(f"AnyOf: {p!r} is not a RetentionPolicy")
        if not flat:
            raise ValueError("AnyOf: needs at least one policy")
        object.__setattr__(self, "policies", tuple(flat))

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        out: set[int] = set()
        for p in self.policies:
            out |= set(p.keep(checkpoints))
        return out


@dataclass(frozen=True)
class RetentionPlan:
    """What :func:`plan` decided. All three views are sorted by iteration.

    Every iteration of the history is in exactly one of ``keep`` and ``remove``.

    :param keep: Iterations whose files stay: kept by the policy, protected, or placeholders.
    :param remove: Iterations with a model whose files may be deleted.
    :param protected: Iteration -> why it is kept whatever the policy says (``"best"``, ``"latest"``,
        ``"placeholder"``, ``"pruned"``; when several apply, the first in that order).
    """

    keep: tuple[int, ...]
    remove: tuple[int, ...]
    protected: dict[int, str]


def plan(
    checkpoints: Sequence[Checkpoint],
    policy: RetentionPolicy | None,
    *,
    best_iteration: int | None,
) -> RetentionPlan:
    """Decide which iterations a retention policy removes, never touching protected ones.

    Protected, whatever the policy says: ``best_iteration`` (if it is in the history), the latest
    committed iteration (the highest iteration number among the records, model or placeholder), the
    latest iteration with a model, and every record without a model (reason ``"placeholder"``, or
    ``"pruned"`` for a model pruned earlier, see :func:`is_pruned`). If an iteration number appears
    more than once and any of its records has no model, it is not a candidate for removal.

    Exactly: ``remove`` = iterations with a model, minus those the policy keeps, minus the protected
    ones; ``keep`` = every other iteration of the history. The result does not depend on the order
    of ``checkpoints``.

    :param checkpoints: The history (every committed record, placeholders included).
    :param policy: The retention policy; None keeps everything.
    :param best_iteration: The overall best iteration, or None if there is none.
    :return: The plan.
    """
    history = sorted(checkpoints, key=lambda c: (c.iteration, c.has_model))
    all_iters = sorted({c.iteration for c in history})
    placeholders = {c.iteration for c in history if not c.has_model}
    pruned = {c.iteration for c in history if is_pruned(c)} - {c.iteration for c in history if not is_pruned(c)}
    models = [i for i in _model_iterations(history) if i not in placeholders]

    reasons: dict[int, str] = {}
    if best_iteration is not None and best_iteration in all_iters:
        reasons[best_iteration] = PROTECT_BEST
    for latest in all_iters[-1:] + models[-1:]:
        reasons.setdefault(latest, PROTECT_LATEST)
    for i in sorted(placeholders):
        reasons.setdefault(i, PROTECT_PRUNED if i in pruned else PROTECT_PLACEHOLDER)
    protected = {i: reasons[i] for i in sorted(reasons)}

    wanted = set(policy.keep(history)) if policy is not None else set(models)
    remove = tuple(i for i in models if i not in wanted and i not in protected)
    removed = set(remove)
    keep = tuple(i for i in all_iters if i not in removed)
    return RetentionPlan(keep=keep, remove=remove, protected=protected)


def policy_from_args(
    keep_every_n: int | None = None,
    keep_last_n: int | None = None,
    keep_best_k: int | None = None,
    monitor: str = "mean_reward",
    mode: str = "max",
) -> RetentionPolicy | None:
    """Build the union of the policies whose argument is given (for command lines and configs).

    :param keep_every_n: If given, :class:`KeepEveryN` with this ``n``.
    :param keep_last_n: If given, :class:`KeepLastN` with this ``n``.
    :param keep_best_k: If given, :class:`KeepBestK` with this ``k``, ``monitor`` and ``mode``.
    :param monitor: Metric ranked by ``keep_best_k``.
    :param mode: ``"max"`` or ``"min"`` for ``keep_best_k``.
    :return: The single policy, an :class:`AnyOf` of several, or None when no argument is given.
    """
    parts: list[RetentionPolicy] = []
    if keep_last_n is not None:
        parts.append(KeepLastN(keep_last_n))
    if keep_every_n is not None:
        parts.append(KeepEveryN(keep_every_n))
    if keep_best_k is not None:
        parts.append(KeepBestK(keep_best_k, monitor=monitor, mode=mode))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return AnyOf(*parts)
