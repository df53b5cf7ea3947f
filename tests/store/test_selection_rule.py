"""SelectionRule: the one place the (monitor, mode, min_score) rule is validated and applied."""

import math

import pytest

from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError


@pytest.mark.parametrize(
    "kwargs",
    [
        {"monitor": ""},
        {"monitor": 3},
        {"mode": "maximum"},
        {"mode": None},
        {"min_score": float("nan")},
        {"min_score": float("inf")},
        {"min_score": "1.0"},
        {"min_score": True},
    ],
)
def test_bad_rules_are_refused_where_they_are_built(kwargs):
    with pytest.raises(CheckpointError):
        SelectionRule(**kwargs)


def test_max_mode_ranks_higher_first_and_ties_go_to_the_later_score():
    rule = SelectionRule("validation.sharpe", "max")
    assert rule.better(2.0, 1.0) and not rule.better(1.0, 2.0) and not rule.better(1.0, 1.0)
    assert rule.better(-5.0, None)
    assert rule.at_least(1.0, 1.0) and rule.at_least(2.0, 1.0) and not rule.at_least(0.5, 1.0)


def test_min_mode_ranks_lower_first():
    rule = SelectionRule("loss", "min")
    assert rule.better(1.0, 2.0) and not rule.better(2.0, 1.0) and not rule.better(1.0, 1.0)
    assert rule.at_least(1.0, 1.0) and rule.at_least(0.5, 1.0) and not rule.at_least(2.0, 1.0)


def test_min_score_follows_the_mode_and_callables_see_the_metrics():
    assert SelectionRule("s", "max", 1.0).accepts(1.0, {}) and not SelectionRule("s", "max", 1.0).accepts(0.9, {})
    assert SelectionRule("s", "min", 1.0).accepts(1.0, {}) and not SelectionRule("s", "min", 1.0).accepts(1.1, {})
    rule = SelectionRule("s", "max", lambda m: m["n_trades"] > 2)
    assert rule.accepts(0.0, {"n_trades": 3}) and not rule.accepts(9.0, {"n_trades": 1})
    assert SelectionRule("s", "max", 2).min_score == 2.0 and isinstance(SelectionRule("s", "max", 2).min_score, float)


def test_scores_read_dotted_keys_and_only_finite_numbers():
    rule = SelectionRule("validation.sharpe")
    assert rule.score({"validation": {"sharpe": 1.5}}) == 1.5
    assert rule.score({"validation.sharpe": 2.5, "validation": {"sharpe": 1.5}}) == 2.5  # an exact flat key wins
    assert rule.score({"validation": {"sharpe": float("nan")}}) is None
    assert rule.score({}) is None
    assert rule.strict_score({"validation": {"sharpe": float("nan")}}) is None
    assert rule.strict_score({"validation": {"sharpe": None}}) is None
    with pytest.raises(CheckpointError, match="not in the evaluation metrics"):
        rule.strict_score({"validation": {"sortino": 1.0}})
    for bad in ("1.0", True, [1.0], {"x": 1}):
        with pytest.raises(CheckpointError, match="not numeric"):
            rule.strict_score({"validation": {"sharpe": bad}})


def test_record_round_trip_and_defaults():
    rule = SelectionRule("validation.sharpe", "min", 0.5)
    assert rule.to_record() == {"monitor": "validation.sharpe", "mode": "min", "min_score": 0.5}
    assert SelectionRule.from_record(rule.to_record()) == rule
    assert SelectionRule.from_record({}) is None
    assert SelectionRule.from_record({"monitor": "x", "mode": "sideways"}) is None
    named = SelectionRule("s", "max", math.isfinite).to_record()["min_score"]
    assert named.endswith("isfinite")
    assert SelectionRule.from_record({"monitor": "s", "mode": "max", "min_score": named}).min_score is None
    assert SelectionRule.of(None, "min", default=rule) == SelectionRule("validation.sharpe", "min", 0.5)
    assert SelectionRule.of("x", None) == SelectionRule("x", "max")
