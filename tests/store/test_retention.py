"""Retention policies and the retention plan, over synthetic histories (no files)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.retention import (
    AnyOf,
    KeepAll,
    KeepBestK,
    KeepEveryN,
    KeepLastN,
    RetentionPlan,
    RetentionPolicy,
    is_pruned,
    plan,
    policy_from_args,
    ranked,
)


def ckpt(iteration: int, has_model: bool = True, reason: str | None = None, **metrics: Any) -> Checkpoint:
    return Checkpoint(
        iteration=iteration,
        has_model=has_model,
        model_path=f"checkpoints/model_iter_{iteration}.zip" if has_model else None,
        metrics=dict(metrics),
        size_bytes=100 if has_model else 0,
        created_at="2024-01-01T00:00:00.000+00:00",
        sha256=("0" * 64) if has_model else None,
        reason=None if has_model else (reason or "below_min_score"),
        timesteps=1000 * iteration,
    )


def history(rewards: dict[int, Any], placeholders: Sequence[int] = ()) -> list[Checkpoint]:
    out = [ckpt(i, mean_reward=r) for i, r in rewards.items()]
    out += [ckpt(i, has_model=False, mean_reward=None) for i in placeholders]
    return sorted(out, key=lambda c: c.iteration)


# 0..9, placeholders at 4 and 7
H = history({0: 1.0, 1: 5.0, 2: 3.0, 3: 5.0, 5: 2.0, 6: float("nan"), 8: None, 9: 0.5}, placeholders=(4, 7))
MODELS = [0, 1, 2, 3, 5, 6, 8, 9]


# --- built-ins -------------------------------------------------------------------------------


def test_keep_all():
    assert KeepAll().keep(H) == set(MODELS)
    assert KeepAll().keep([]) == set()


def test_keep_last_n_counts_only_models():
    assert KeepLastN(1).keep(H) == {9}
    assert KeepLastN(3).keep(H) == {6, 8, 9}
    h = history({0: 1.0, 1: 1.0}, placeholders=(2, 3, 4))
    assert KeepLastN(2).keep(h) == {0, 1}
    assert KeepLastN(100).keep(H) == set(MODELS)


def test_keep_every_n_uses_iteration_number():
    assert KeepEveryN(3).keep(H) == {0, 3, 6, 9}
    assert KeepEveryN(2).keep(H) == {0, 2, 6, 8}  # 4 is a placeholder
    assert KeepEveryN(1).keep(H) == set(MODELS)
    # not positional: the same iterations are chosen when others are missing
    assert KeepEveryN(3).keep([c for c in H if c.iteration != 1]) == {0, 3, 6, 9}


def test_keep_best_k_max_and_ties_go_to_later_iteration():
    assert KeepBestK(1).keep(H) == {3}  # 1 and 3 both score 5.0; later wins
    assert KeepBestK(2).keep(H) == {1, 3}
    assert KeepBestK(3).keep(H) == {1, 2, 3}


def test_keep_best_k_min():
    assert KeepBestK(1, mode="min").keep(H) == {9}
    assert KeepBestK(2, mode="min").keep(H) == {9, 0}


def test_keep_best_k_non_finite_never_beats_finite_but_fills_spare_places():
    h = [ckpt(0, mean_reward=float("nan")), ckpt(1, mean_reward=None), ckpt(2, mean_reward=-100.0)]
    h += [ckpt(3, mean_reward=float("inf")), ckpt(4, mean_reward="abc")]
    assert KeepBestK(1).keep(h) == {2}
    assert KeepBestK(1, mode="min").keep(h) == {2}
    # fewer finite scores than k: the rest go to non-finite ones, latest first
    assert KeepBestK(3).keep(h) == {2, 4, 3}
    assert KeepBestK(10).keep(h) == {0, 1, 2, 3, 4}
    assert KeepBestK(2).keep(history({0: None, 1: None, 2: None})) == {1, 2}


def test_keep_best_k_nested_monitor():
    h = [
        ckpt(0, validation={"sharpe": 0.1}),
        ckpt(1, validation={"sharpe": 2.0}),
        ckpt(2, validation={"sharpe": 1.0}),
        ckpt(3, validation={}),
    ]
    assert KeepBestK(1, monitor="validation.sharpe").keep(h) == {1}
    assert KeepBestK(2, monitor="validation.sharpe").keep(h) == {1, 2}


def test_keep_best_k_ignores_placeholder_scores():
    h = [ckpt(0, mean_reward=1.0), ckpt(1, has_model=False, mean_reward=99.0), ckpt(2, mean_reward=0.0)]
    assert KeepBestK(1).keep(h) == {0}


def test_ranked_order():
    r = ranked(H, "mean_reward", "max")
    assert [(c.iteration, s) for c, s in r] == [(3, 5.0), (1, 5.0), (2, 3.0), (5, 2.0), (0, 1.0), (9, 0.5)]
    with pytest.raises(ValueError):
        ranked(H, "mean_reward", "best")


# --- composition -----------------------------------------------------------------------------


def test_union_with_or():
    p = KeepLastN(1) | KeepEveryN(5)
    assert isinstance(p, AnyOf)
    assert p.keep(H) == {9, 0, 5}
    assert p.policies == (KeepLastN(1), KeepEveryN(5))


def test_union_flattens():
    a, b, c, d = KeepLastN(1), KeepEveryN(2), KeepBestK(1), KeepAll()
    assert ((a | b) | c).policies == (a, b, c)
    assert (a | (b | c)).policies == (a, b, c)
    assert ((a | b) | (c | d)).policies == (a, b, c, d)
    assert AnyOf(AnyOf(a, b), c) == AnyOf(a, b, c)
    assert AnyOf(a).keep(H) == a.keep(H)


def test_union_rejects_non_policies():
    with pytest.raises(TypeError):
        KeepLastN(1) | 3  # type: ignore[operator,unused-ignore]
    with pytest.raises(ValueError):
        AnyOf(KeepLastN(1), "last")  # type: ignore[arg-type,unused-ignore]
    with pytest.raises(ValueError):
        AnyOf()


def test_policies_are_frozen_and_hashable():
    p = KeepLastN(2)
    with pytest.raises(FrozenInstanceError):
        p.n = 3  # type: ignore[misc,unused-ignore]
    assert len({KeepLastN(2), KeepLastN(2), KeepEveryN(2)}) == 2
    assert hash(KeepLastN(1) | KeepBestK(2)) == hash(KeepLastN(1) | KeepBestK(2))


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: KeepLastN(0),
        lambda: KeepLastN(-1),
        lambda: KeepLastN(1.5),  # type: ignore[arg-type]
        lambda: KeepLastN(True),
        lambda: KeepEveryN(0),
        lambda: KeepEveryN("2"),  # type: ignore[arg-type]
        lambda: KeepBestK(0),
        lambda: KeepBestK(1, mode="best"),
        lambda: KeepBestK(1, monitor=""),
        lambda: KeepBestK(1, monitor=None),  # type: ignore[arg-type]
        lambda: policy_from_args(keep_last_n=0),
        lambda: policy_from_args(keep_best_k=2, mode="MAX"),
    ],
)
def test_argument_validation(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        RetentionPolicy()  # type: ignore[abstract,unused-ignore]


# --- policy_from_args ------------------------------------------------------------------------


def test_policy_from_args():
    assert policy_from_args() is None
    assert policy_from_args(keep_last_n=3) == KeepLastN(3)
    assert policy_from_args(keep_every_n=4) == KeepEveryN(4)
    assert policy_from_args(keep_best_k=2, monitor="sharpe", mode="min") == KeepBestK(2, "sharpe", "min")
    p = policy_from_args(keep_every_n=5, keep_last_n=2, keep_best_k=1)
    assert p == AnyOf(KeepLastN(2), KeepEveryN(5), KeepBestK(1))
    assert p.keep(H) == {8, 9, 0, 5, 3}


# --- custom policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeepLowDrawdown(RetentionPolicy):
    bound: float = 0.2

    def keep(self, checkpoints: Sequence[Checkpoint]) -> set[int]:
        return {
            c.iteration
            for c in checkpoints
            if c.has_model and (dd := c.score("max_drawdown")) is not None and dd < self.bound
        }


def test_custom_subclass_policy():
    h = [
        ckpt(0, max_drawdown=0.10),
        ckpt(1, max_drawdown=0.35),
        ckpt(2, max_drawdown=float("nan")),
        ckpt(3, max_drawdown=0.19),
        ckpt(4, has_model=False, max_drawdown=0.01),
        ckpt(5, max_drawdown=0.50),
        ckpt(6, max_drawdown=0.25),
    ]
    p = KeepLowDrawdown(0.2)
    assert p.keep(h) == {0, 3}
    result = plan(h, p, best_iteration=1)
    assert result.remove == (2, 5)
    assert result.protected == {1: "best", 4: "placeholder", 6: "latest"}
    combined = p | KeepLastN(1)
    assert isinstance(combined, AnyOf)
    assert combined.keep(h) == {0, 3, 6}


# --- plan ------------------------------------------------------------------------------------


def test_plan_protects_best_latest_and_placeholders():
    result = plan(H, KeepLastN(1), best_iteration=3)
    assert isinstance(result, RetentionPlan)
    assert result.protected == {3: "best", 4: "placeholder", 7: "placeholder", 9: "latest"}
    assert result.remove == (0, 1, 2, 5, 6, 8)
    assert result.keep == (3, 4, 7, 9)


def test_plan_latest_record_placeholder_and_latest_model_both_protected():
    h = history({0: 1.0, 1: 2.0, 2: 3.0}, placeholders=(3, 4))
    result = plan(h, KeepBestK(1), best_iteration=None)
    # iteration 4 is the latest record (a placeholder), 2 the latest model
    assert result.protected == {2: "latest", 3: "placeholder", 4: "latest"}
    assert result.remove == (0, 1)
    assert result.keep == (2, 3, 4)


def test_plan_best_wins_over_latest_reason():
    h = history({0: 1.0, 1: 2.0})
    assert plan(h, KeepLastN(1), best_iteration=1).protected == {1: "best"}


def test_plan_best_not_in_history_is_ignored():
    h = history({0: 1.0, 1: 2.0, 2: 0.0})
    result = plan(h, KeepLastN(1), best_iteration=42)
    assert 42 not in result.protected and 42 not in result.keep
    assert result.remove == (0, 1)


def test_plan_none_policy_keeps_everything_and_empty_history():
    result = plan(H, None, best_iteration=None)
    assert result.remove == ()
    assert result.keep == tuple(range(10))
    empty = plan([], KeepLastN(1), best_iteration=None)
    assert empty == RetentionPlan(keep=(), remove=(), protected={})


def test_plan_ignores_policy_answers_outside_candidates():
    @dataclass(frozen=True)
    class Silly(RetentionPolicy):
        def keep(self, checkpoints):
            return {-5, 4, 1000}

    result = plan(H, Silly(), best_iteration=None)
    assert set(result.keep) == {4, 7, 9}
    assert set(result.remove) == set(MODELS) - {9}


def test_plan_pruned_records_are_protected_as_pruned():
    h = [ckpt(0), ckpt(1, has_model=False, reason="pruned"), ckpt(2, has_model=False), ckpt(3), ckpt(4)]
    assert is_pruned(h[1]) and not is_pruned(h[2]) and not is_pruned(h[0])
    result = plan(h, KeepLastN(1), best_iteration=None)
    assert result.protected == {1: "pruned", 2: "placeholder", 4: "latest"}
    assert result.remove == (0, 3)
    # pruning is idempotent: once removed, a second plan over the pruned history removes nothing
    after = [c if c.iteration not in result.remove else ckpt(c.iteration, False, "pruned") for c in h]
    assert plan(after, KeepLastN(1), best_iteration=None).remove == ()


def test_plan_duplicate_iteration_with_a_placeholder_is_never_removed():
    h = [ckpt(0), ckpt(1), ckpt(1, has_model=False), ckpt(2)]
    result = plan(h, KeepLastN(1), best_iteration=None)
    assert result.protected[1] == "placeholder"
    assert result.remove == (0,)


# --- property test ---------------------------------------------------------------------------

metric_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.none(),
    st.just("n/a"),
    st.booleans(),
)


@st.composite
def histories(draw) -> list[Checkpoint]:
    iters = draw(st.lists(st.integers(0, 60), unique=True, max_size=25))
    out = []
    for i in iters:
        has_model = draw(st.booleans())
        reason = None if has_model else draw(st.sampled_from(["below_min_score", "nan_metric", "pruned"]))
        metrics: dict[str, Any] = {}
        if draw(st.booleans()):
            metrics["mean_reward"] = draw(metric_values)
        if draw(st.booleans()):
            metrics["validation"] = {"sharpe": draw(metric_values)}
        out.append(ckpt(i, has_model=has_model, reason=reason, **metrics))
    return out


base_policies = st.one_of(
    st.builds(KeepLastN, st.integers(1, 6)),
    st.builds(KeepEveryN, st.integers(1, 6)),
    st.builds(
        KeepBestK,
        st.integers(1, 6),
        st.sampled_from(["mean_reward", "validation.sharpe", "missing"]),
        st.sampled_from(["max", "min"]),
    ),
    st.just(KeepAll()),
)
policies = st.one_of(
    st.none(),
    base_policies,
    st.lists(base_policies, min_size=1, max_size=4).map(lambda ps: AnyOf(*ps)),
)


@settings(max_examples=300, deadline=None)
@given(h=histories(), policy=policies, best_pick=st.one_of(st.none(), st.integers(0, 60)), seed=st.integers())
def test_plan_properties(h, policy, best_pick, seed):
    ordered = sorted(h, key=lambda c: c.iteration)
    all_iters = {c.iteration for c in h}
    model_iters = {c.iteration for c in h if c.has_model}
    placeholder_iters = all_iters - model_iters
    best = best_pick if best_pick in all_iters else None

    result = plan(ordered, policy, best_iteration=best)
    keep, remove, protected = set(result.keep), set(result.remove), result.protected

    # sorted, no duplicates
    assert list(result.keep) == sorted(keep) and len(keep) == len(result.keep)
    assert list(result.remove) == sorted(remove) and len(remove) == len(result.remove)
    assert list(protected) == sorted(protected)

    # keep and remove partition the history; only models are ever removed
    assert keep | remove == all_iters
    assert not keep & remove
    assert remove <= model_iters
    assert not remove & placeholder_iters

    # protection: best, latest record, latest model, every placeholder
    assert not remove & set(protected)
    assert set(protected) <= keep
    expected_protected = set(placeholder_iters)
    if all_iters:
        expected_protected.add(max(all_iters))
    if model_iters:
        expected_protected.add(max(model_iters))
    if best is not None:
        expected_protected.add(best)
        assert protected[best] == "best"
    assert set(protected) == expected_protected
    assert set(protected.values()) <= {"best", "latest", "placeholder", "pruned"}

    # exactly: remove = models - kept by policy - protected
    wanted = policy.keep(ordered) if policy is not None else model_iters
    assert remove == model_iters - wanted - set(protected)
    if policy is not None:
        assert wanted <= model_iters  # built-ins only ever propose models

    # deterministic, independent of input order
    shuffled = list(h)
    random.Random(seed).shuffle(shuffled)
    assert plan(shuffled, policy, best_iteration=best) == result
    assert plan(ordered, policy, best_iteration=best) == result


@settings(max_examples=200, deadline=None)
@given(h=histories(), ps=st.lists(base_policies, min_size=1, max_size=4))
def test_union_is_union_of_members(h, ps):
    ordered = sorted(h, key=lambda c: c.iteration)
    union = AnyOf(*ps)
    assert union.keep(ordered) == set().union(*(p.keep(ordered) for p in ps))


@settings(max_examples=200, deadline=None)
@given(h=histories(), k=st.integers(1, 8), mode=st.sampled_from(["max", "min"]))
def test_best_k_property(h, k, mode):
    ordered = sorted(h, key=lambda c: c.iteration)
    kept = KeepBestK(k, mode=mode).keep(ordered)
    models = [c for c in ordered if c.has_model]
    assert len(kept) == min(k, len(models))
    finite = {c.iteration: s for c in models if (s := c.score("mean_reward")) is not None}
    assert all(math.isfinite(v) for v in finite.values())
    kept_finite = {i for i in kept if i in finite}
    # a non-finite one is kept only when every finite one is kept
    if kept - kept_finite:
        assert kept_finite == set(finite)
    # no dropped finite score beats a kept one
    for i, s in finite.items():
        if i in kept:
            continue
        for j in kept_finite:
            assert (s <= finite[j]) if mode == "max" else (s >= finite[j])
