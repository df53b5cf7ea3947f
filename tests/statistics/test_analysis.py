"""Reports over synthetic checkpoint histories (no files)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.stats.analysis import (
    BASE_COLUMNS,
    analyze,
    metric_stats,
    performance_range,
    spearman,
    table_rows,
    trend,
)


def ckpt(
    iteration: int,
    has_model: bool = True,
    reason: str | None = None,
    size: int = 100,
    verified: bool = True,
    **metrics: Any,
) -> Checkpoint:
    return Checkpoint(
        iteration=iteration,
        has_model=has_model,
        model_path=None,
        metrics=dict(metrics),
        size_bytes=size if has_model else 10,
        created_at=f"2024-01-0{iteration % 9 + 1}T00:00:00.000+00:00",
        sha256=None,
        reason=None if has_model else (reason or "below_min_score"),
        timesteps=1000 * iteration,
        verified=verified,
    )


def small_history() -> list[Checkpoint]:
    # given out of order on purpose
    return [
        ckpt(2, mean_reward=3.0, validation={"sharpe": 0.5}, combined={"sharpe": 0.4}),
        ckpt(0, mean_reward=1.0, validation={"sharpe": 0.1}, combined={"sharpe": 0.2}),
        ckpt(1, mean_reward=2.0, validation={"sharpe": 0.3}, flag=True, note="hello"),
        ckpt(3, has_model=False, reason="nan_metric", mean_reward=float("nan")),
        ckpt(4, has_model=False, reason="below_min_score", mean_reward=-1.0),
        ckpt(5, mean_reward=6.0, verified=False, validation={"sharpe": float("inf")}),
    ]


def assert_strict_json(obj: Any) -> None:
    text = json.dumps(obj, allow_nan=False)
    assert json.loads(text) == obj


def test_counts_and_basics():
    r = analyze(small_history())
    assert r["counts"] == {
        "total": 6,
        "with_model": 4,
        "placeholders": 2,
        "pruned": 0,
        "by_reason": {"below_min_score": 1, "nan_metric": 1},
        "unverified": 1,
    }
    assert r["monitor"] == "mean_reward" and r["mode"] == "max"
    assert r["iterations"] == [0, 1, 2, 3, 4, 5]
    assert r["size_on_disk_bytes"] == 4 * 100 + 2 * 10
    assert analyze(small_history(), size_on_disk=12345)["size_on_disk_bytes"] == 12345
    assert r["longest_placeholder_run"] == {"length": 2, "start": 3, "end": 4}
    assert_strict_json(r)


def test_closed_form_stats_of_monitor():
    # finite mean_reward values: 1, 2, 3, -1 (placeholder 4 counts), 6; NaN at 3 is skipped
    values = [1.0, 2.0, 3.0, -1.0, 6.0]
    s = analyze(small_history())["stats"]["mean_reward"]
    assert s["count"] == 5
    assert s["mean"] == pytest.approx(11.0 / 5)
    assert s["std"] == pytest.approx(statistics.stdev(values))  # sample, ddof=1
    assert s["std"] == pytest.approx(math.sqrt(sum((v - 2.2) ** 2 for v in values) / 4))
    assert s["median"] == 2.0
    assert s["min"] == -1.0 and s["max"] == 6.0
    assert s["first_iteration"] == 0 and s["last_iteration"] == 5


def test_nested_metric_keys_in_stats():
    stats = analyze(small_history())["stats"]
    assert list(stats)[0] == "mean_reward"
    assert set(stats) == {"mean_reward", "validation.sharpe", "combined.sharpe"}  # bool/str excluded
    v = stats["validation.sharpe"]
    assert v["count"] == 3  # inf at 5 is not counted
    assert v["mean"] == pytest.approx(0.3)
    assert v["std"] == pytest.approx(0.2)
    assert (v["first_iteration"], v["last_iteration"]) == (0, 2)
    c = stats["combined.sharpe"]
    assert c["count"] == 2 and c["median"] == pytest.approx(0.3)
    assert c["std"] == pytest.approx(statistics.stdev([0.2, 0.4]))


def test_single_value_std_is_none():
    s = analyze([ckpt(0, mean_reward=4.0)])["stats"]["mean_reward"]
    assert s == {
        "count": 1,
        "mean": 4.0,
        "std": None,
        "median": 4.0,
        "min": 4.0,
        "max": 4.0,
        "first_iteration": 0,
        "last_iteration": 0,
    }


def test_best_top_k_max_min_and_exclusions():
    r = analyze(small_history(), top_k=3)
    assert [b["iteration"] for b in r["best"]] == [5, 2, 1]  # placeholder 4 and NaN 3 never listed
    assert r["best"][0]["score"] == 6.0
    assert r["best"][1]["metrics"] == {
        "mean_reward": 3.0,
        "validation.sharpe": 0.5,
        "combined.sharpe": 0.4,
    }
    assert r["best"][0]["metrics"]["validation.sharpe"] is None  # inf -> None
    r_min = analyze(small_history(), mode="min", top_k=2)
    assert [b["iteration"] for b in r_min["best"]] == [0, 1]
    assert analyze(small_history(), top_k=0)["best"] == []
    assert len(analyze(small_history(), top_k=100)["best"]) == 4


def test_best_ties_go_to_later_iteration():
    h = [ckpt(0, mean_reward=1.0), ckpt(1, mean_reward=1.0), ckpt(2, mean_reward=0.0)]
    assert [b["iteration"] for b in analyze(h, top_k=2)["best"]] == [1, 0]


def test_nested_monitor():
    r = analyze(small_history(), monitor="validation.sharpe", top_k=2)
    assert [b["iteration"] for b in r["best"]] == [2, 1]
    assert list(r["stats"])[0] == "validation.sharpe"
    assert r["trend"]["n"] == 3
    assert r["trend"]["spearman"] == pytest.approx(1.0)


def test_trend_monotone_series():
    h = [ckpt(i, mean_reward=float(i * i)) for i in range(6)]  # monotone, not linear
    t = analyze(h)["trend"]
    assert t["spearman"] == pytest.approx(1.0)
    assert t["n"] == 6
    assert t["slope"] == pytest.approx(np.polyfit(range(6), [i * i for i in range(6)], 1)[0])
    down = analyze([ckpt(i, mean_reward=-(float(i) ** 3)) for i in range(5)])["trend"]
    assert down["spearman"] == pytest.approx(-1.0)


def test_trend_linear_slope_uses_iteration_numbers():
    # iterations 0, 2, 4 (gaps): value = 3 * iteration + 1 -> slope 3 per iteration
    h = [ckpt(i, mean_reward=3.0 * i + 1) for i in (0, 2, 4)] + [ckpt(1, has_model=False)]
    t = analyze(h)["trend"]
    assert t == {"slope": pytest.approx(3.0), "spearman": pytest.approx(1.0), "n": 3}


def test_spearman_ties_average_ranks():
    x = [1, 2, 3, 4, 5]
    y = [1.0, 2.0, 2.0, 3.0, 4.0]
    # ranks of y: 1, 2.5, 2.5, 4, 5 -> Pearson of ranks
    ry = np.array([1, 2.5, 2.5, 4, 5])
    rx = np.arange(1, 6, dtype=float)
    expected = float(np.corrcoef(rx, ry)[0, 1])
    assert spearman(x, y) == pytest.approx(expected)
    assert expected < 1.0
    assert spearman([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)


def test_spearman_degenerate_cases():
    assert spearman([1, 2], [1, 2]) is None  # fewer than 3 points
    assert spearman([1, 2, 3], [7, 7, 7]) is None  # zero variance
    assert spearman([], []) is None
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_trend_degenerate_cases():
    assert trend([]) == {"slope": None, "spearman": None, "n": 0}
    assert trend([(3, 1.0)]) == {"slope": None, "spearman": None, "n": 1}
    two = trend([(0, 1.0), (1, 3.0)])
    assert two["slope"] == pytest.approx(2.0) and two["spearman"] is None
    flat = analyze([ckpt(i, mean_reward=2.0) for i in range(4)])["trend"]
    assert flat["slope"] == 0.0 and flat["spearman"] is None


def test_nan_handling():
    h = [
        ckpt(0, mean_reward=float("nan")),
        ckpt(1, mean_reward=None),
        ckpt(2, mean_reward="oops"),
        ckpt(3, mean_reward=float("-inf")),
        ckpt(4, mean_reward=np.float32(2.5)),
        ckpt(5, mean_reward=np.int64(1)),
    ]
    r = analyze(h)
    s = r["stats"]["mean_reward"]
    assert s["count"] == 2 and s["mean"] == pytest.approx(1.75)
    assert [b["iteration"] for b in r["best"]] == [4, 5]
    assert r["best"][0]["score"] == 2.5 and type(r["best"][0]["score"]) is float
    assert_strict_json(r)


def test_all_nan_monitor():
    r = analyze([ckpt(0, mean_reward=float("nan")), ckpt(1, mean_reward=float("nan"))])
    assert r["stats"]["mean_reward"]["count"] == 0
    assert r["stats"]["mean_reward"]["mean"] is None
    assert r["best"] == []
    assert r["trend"] == {"slope": None, "spearman": None, "n": 0}
    assert_strict_json(r)


def test_empty_input():
    r = analyze([])
    assert r["counts"] == {
        "total": 0,
        "with_model": 0,
        "placeholders": 0,
        "pruned": 0,
        "by_reason": {},
        "unverified": 0,
    }
    assert r["best"] == []
    assert r["stats"] == {"mean_reward": metric_stats([])}
    assert r["stats"]["mean_reward"] == {
        "count": 0,
        "mean": None,
        "std": None,
        "median": None,
        "min": None,
        "max": None,
        "first_iteration": None,
        "last_iteration": None,
    }
    assert r["trend"] == {"slope": None, "spearman": None, "n": 0}
    assert r["longest_placeholder_run"] == {"length": 0, "start": None, "end": None}
    assert r["size_on_disk_bytes"] == 0
    assert r["iterations"] == []
    assert_strict_json(r)
    assert performance_range([]) is None
    assert table_rows([]) == []


def test_longest_placeholder_run_earliest_of_equal_runs():
    h = [
        ckpt(0, has_model=False),
        ckpt(1),
        ckpt(2, has_model=False),
        ckpt(5, has_model=False),  # consecutive in record order despite the gap
        ckpt(6),
        ckpt(7, has_model=False),
        ckpt(8, has_model=False),
    ]
    assert analyze(h)["longest_placeholder_run"] == {"length": 2, "start": 2, "end": 5}
    assert analyze([ckpt(0, has_model=False)])["longest_placeholder_run"] == {
        "length": 1,
        "start": 0,
        "end": 0,
    }


def test_argument_validation():
    with pytest.raises(ValueError):
        analyze([], mode="best")
    with pytest.raises(ValueError):
        analyze([], top_k=-1)


def test_performance_range():
    assert performance_range(small_history()) == {
        "min": -1.0,
        "max": 6.0,
        "min_iteration": 4,
        "max_iteration": 5,
    }
    assert performance_range(small_history(), "validation.sharpe") == {
        "min": 0.1,
        "max": 0.5,
        "min_iteration": 0,
        "max_iteration": 2,
    }
    assert performance_range(small_history(), "missing") is None
    ties = [ckpt(0, mean_reward=1.0), ckpt(1, mean_reward=1.0)]
    assert performance_range(ties) == {"min": 1.0, "max": 1.0, "min_iteration": 1, "max_iteration": 1}


def test_table_rows():
    rows = table_rows(small_history())
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4, 5]
    metric_cols = ["combined.sharpe", "flag", "mean_reward", "note", "validation.sharpe"]
    for r in rows:
        assert list(r) == list(BASE_COLUMNS) + metric_cols
    assert rows[0] == {
        "iteration": 0,
        "has_model": True,
        "reason": None,
        "timesteps": 0,
        "created_at": "2024-01-01T00:00:00.000+00:00",
        "size_bytes": 100,
        "verified": True,
        "combined.sharpe": 0.2,
        "flag": None,
        "mean_reward": 1.0,
        "note": None,
        "validation.sharpe": 0.1,
    }
    assert rows[1]["flag"] is True and rows[1]["note"] == "hello"
    assert rows[3]["reason"] == "nan_metric" and rows[3]["mean_reward"] is None
    assert rows[5]["verified"] is False and rows[5]["validation.sharpe"] is None
    assert_strict_json(rows)


def test_table_rows_metric_clashing_with_base_column():
    # legacy records keep every raw key as a metric, including "iteration"
    c = ckpt(7, mean_reward=1.0)
    rows = table_rows([replace(c, metrics={"iteration": 7, "mean_reward": 1.0})])
    assert rows[0]["iteration"] == 7
    assert rows[0]["metrics.iteration"] == 7
    assert rows[0]["mean_reward"] == 1.0
    assert set(analyze([replace(c, metrics={"iteration": 7, "mean_reward": 1.0})])["stats"]) == {"mean_reward"}


# --- property: any history gives a strict-JSON report ----------------------------------------

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
)


@st.composite
def histories(draw) -> list[Checkpoint]:
    iters = draw(st.lists(st.integers(0, 40), unique=True, max_size=15))
    out = []
    for i in iters:
        metrics = draw(
            st.dictionaries(
                st.sampled_from(["mean_reward", "a", "b"]),
                st.one_of(values, st.dictionaries(st.sampled_from(["x", "y"]), values, max_size=2)),
                max_size=3,
            )
        )
        out.append(ckpt(i, has_model=draw(st.booleans()), verified=draw(st.booleans()), **metrics))
    return out


@settings(max_examples=150, deadline=None)
@given(h=histories(), mode=st.sampled_from(["max", "min"]), top_k=st.integers(0, 4))
def test_report_is_always_strict_json(h, mode, top_k):
    r = analyze(h, mode=mode, top_k=top_k)
    assert_strict_json(r)
    assert_strict_json(table_rows(h))
    c = r["counts"]
    assert c["with_model"] + c["placeholders"] + c["pruned"] == c["total"] == len(h)
    assert len(r["best"]) <= top_k
    scores = [b["score"] for b in r["best"]]
    assert scores == sorted(scores, reverse=(mode == "max"))
    rho = r["trend"]["spearman"]
    assert rho is None or -1.0 <= rho <= 1.0
    for s in r["stats"].values():
        if s["count"]:
            assert s["min"] <= s["median"] <= s["max"]
            assert s["first_iteration"] <= s["last_iteration"]


def test_values_near_the_float_limit_do_not_overflow():
    big = 1.7e308
    h = [ckpt(i, mean_reward=v) for i, v in enumerate([big, big, -big, big])]
    r = analyze(h)
    s = r["stats"]["mean_reward"]
    assert s["mean"] == pytest.approx(big / 2)
    assert s["median"] == big and s["min"] == -big and s["max"] == big
    assert s["std"] is not None and math.isfinite(s["std"])
    assert_strict_json(r)


def test_pruned_records_are_not_placeholders():
    h = [
        ckpt(0, mean_reward=1.0),
        ckpt(1, has_model=False, reason="pruned", mean_reward=5.0),
        ckpt(2, has_model=False),
        ckpt(3, has_model=False, reason="pruned", mean_reward=2.0),
        ckpt(4, has_model=False),
        ckpt(5, mean_reward=0.5),
    ]
    r = analyze(h, top_k=10)
    assert r["counts"]["placeholders"] == 2 and r["counts"]["pruned"] == 2 and r["counts"]["with_model"] == 2
    assert r["counts"]["by_reason"] == {"below_min_score": 2, "pruned": 2}
    assert r["longest_placeholder_run"] == {"length": 1, "start": 2, "end": 2}  # pruned 3 breaks the run
    assert [b["iteration"] for b in r["best"]] == [0, 5]  # a pruned model cannot be loaded
    assert r["stats"]["mean_reward"]["count"] == 4  # but its evaluation still counts


def test_zero_values_are_counted():
    h = [ckpt(0, mean_reward=0.0, loss=0.0), ckpt(1, mean_reward=0, loss=0.0), ckpt(2, mean_reward=1.0, loss=1.0)]
    stats = analyze(h)["stats"]
    assert stats["mean_reward"]["count"] == 3 and stats["loss"]["count"] == 3
    assert stats["loss"]["mean"] == pytest.approx(1 / 3)
