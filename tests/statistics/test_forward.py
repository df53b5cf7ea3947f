"""Tests of sb3_iter_ckpt.forward: each kept model trades its unseen test part; the stitched curve and its
statistics.

The arithmetic is checked on hand-computed prices with a model double whose ``predict`` returns a fixed
action sequence (SB3's ``predict(obs, deterministic=True) -> (action, None)``); a real PPO with saved and
loaded VecNormalize statistics checks the SB3 path and determinism.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import numpy as np
import pandas as pd
import pytest

from sb3_iter_ckpt.common import record
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.errors import CheckpointError, RecordError
from sb3_iter_ckpt.forward import (
    ForwardResult,
    StitchedForward,
    evaluate_forward,
    forward_report,
    forward_statistics,
    pbo_partitions,
    placeholder_forward,
    selection_vs_forward,
    stitch,
)
from sb3_iter_ckpt.splitter import WalkForwardSplitter, Window
from sb3_iter_ckpt.stats.metrics import trading_metrics
from sb3_iter_ckpt.stats.overfitting import (
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
)

SHORT, FLAT, LONG = 0, 1, 2  # TradingEnv's actions


class FixedActions:
    """A model double: plays ``actions`` in order and records every observation it was shown."""

    def __init__(self, actions):
        self.actions = list(actions)
        self.seen: list[np.ndarray] = []

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        assert deterministic is True
        self.seen.append(np.array(obs, copy=True))
        return np.array([self.actions[len(self.seen) - 1]]), None


class Momentum:
    """A model double whose action depends on its observation: long after a rise, short after a fall."""

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        last_log_return = np.asarray(obs).reshape(-1)[-2]  # the observation ends with the position
        return np.array([LONG if last_log_return > 0 else SHORT]), None


# Eight closes, window_size 2, a 1 % cost: train [0, 2), validation [2, 4), test [4, 7).
P = [100.0, 101.0, 99.0, 102.0, 104.0, 103.0, 105.0, 104.0]
DATES = pd.date_range("2020-01-01", periods=len(P), freq="D", name="date")
ENV = {"window_size": 2, "transaction_cost": 0.01}


def _window(prices, **kw):
    params = {"train_size": 2, "val_size": 2, "test_size": 3, **kw}
    return next(iter(WalkForwardSplitter(**params).split(prices)))


@pytest.fixture
def prices():
    return pd.Series(P, index=DATES, name="close")


# -- one test part, by hand -----------------------------------------------------------------------------------


def test_returns_positions_and_costs_match_the_hand_computation(prices):
    w = _window(prices)
    assert (w.test_start, w.test_stop) == (4, 7)
    r = evaluate_forward(FixedActions([LONG, LONG, SHORT]), prices, w, iteration=0, env_kwargs=ENV)
    # decision at row 4 (long, entering from flat: cost 0.01 * |1 - 0|), earns 104 -> 103, dated row 5
    # decision at row 5 (stay long: no cost), earns 103 -> 105, dated row 6
    # decision at row 6 (reverse to short: cost 0.01 * |-1 - 1|), earns -(105 -> 104), dated row 7
    expected = [
        1 * (103 / 104 - 1) - 0.01 * 1,
        1 * (105 / 103 - 1) - 0.01 * 0,
        -1 * (104 / 105 - 1) - 0.01 * 2,
    ]
    assert r.returns == pytest.approx(expected, abs=1e-15)
    assert r.positions == (1.0, 1.0, -1.0)
    assert r.equity == pytest.approx(np.cumprod(1 + np.array(expected)), abs=1e-15)
    assert r.metrics == trading_metrics(expected, positions=[1, 1, -1], periods_per_year=252)
    assert r.metrics["n_trades"] == 2 and r.periods_per_year == 252
    assert (r.iteration, r.candidate, r.placeholder) == (0, None, False)


def test_each_return_is_dated_on_the_row_it_is_realized(prices):
    r = evaluate_forward(FixedActions([FLAT, LONG, FLAT]), prices, _window(prices), iteration=3, env_kwargs=ENV)
    assert r.rows == (5, 6, 7)
    assert r.dates == ("2020-01-06T00:00:00", "2020-01-07T00:00:00", "2020-01-08T00:00:00")
    # only the decision at row 5 is long: its move 103 -> 105 shows on row 6, minus the entry cost
    assert r.returns == pytest.approx([0.0, 105 / 103 - 1 - 0.01, -0.01], abs=1e-15)


def test_the_first_decision_sees_closes_up_to_test_start_only(prices):
    model = FixedActions([FLAT, FLAT, FLAT])
    evaluate_forward(model, prices, _window(prices), iteration=0, env_kwargs=ENV)
    first = model.seen[0].reshape(-1)
    # window_size 2: the log returns of rows 3 and 4 (closes 99 -> 102 -> 104), then the position (flat)
    assert first == pytest.approx([math.log(102 / 99), math.log(104 / 102), 0.0], abs=1e-6)
    assert len(model.seen) == 3  # decisions at rows 4, 5, 6: none at the last row of the test part's move


def test_no_decision_depends_on_a_later_price():
    prices = synthetic_prices(60, seed=11)
    w = Window(0, 0, 20, 20, 30, test_start=30, test_stop=50)
    base = evaluate_forward(Momentum(), prices, w, iteration=0)
    assert len(set(base.positions)) == 2  # the model does react to what it sees
    rng = np.random.default_rng(0)
    responded = False
    for k, t in enumerate(range(w.test_start, w.test_stop)):
        later = prices.copy()
        later.iloc[t + 1 :] *= np.exp(rng.normal(0, 0.05, len(prices) - t - 1))  # change every close after t
        changed = evaluate_forward(Momentum(), later, w, iteration=0)
        assert changed.positions[: k + 1] == base.positions[: k + 1], f"decision at row {t} saw a later price"
        responded |= changed.positions != base.positions
    assert responded  # and the later decisions do see the changed closes


def test_each_test_part_starts_flat_and_pays_its_entry(prices):
    r = evaluate_forward(FixedActions([SHORT, SHORT, SHORT]), prices, _window(prices), iteration=0, env_kwargs=ENV)
    assert r.returns[0] == pytest.approx(-(103 / 104 - 1) - 0.01, abs=1e-15)
    assert r.returns[1] == pytest.approx(-(105 / 103 - 1), abs=1e-15)


def test_the_last_window_earns_what_the_data_allows(prices):
    # test part [5, 8) ends with the data: decisions at rows 5 and 6 only, returns dated 6 and 7
    w = Window(0, 0, 3, 3, 5, test_start=5, test_stop=8)
    model = FixedActions([LONG, LONG, LONG])
    r = evaluate_forward(model, prices, w, iteration=0, env_kwargs=ENV)
    assert r.rows == (6, 7) and len(model.seen) == 2
    assert r.returns == pytest.approx([105 / 103 - 1 - 0.01, 104 / 105 - 1], abs=1e-15)
    # a test part on the very last row has no move left to earn
    last_row = Window(0, 0, 3, 3, 7, test_start=7, test_stop=8)
    empty = evaluate_forward(FixedActions([]), prices, last_row, iteration=1, env_kwargs=ENV)
    assert empty.rows == () and empty.returns == () and empty.metrics["n_periods"] == 0


def test_a_range_index_or_an_array_gives_rows_without_dates():
    for prices in (P, np.array(P), pd.Series(P)):
        r = evaluate_forward(FixedActions([LONG] * 3), prices, _window(len(P)), iteration=0, env_kwargs=ENV)
        assert r.rows == (5, 6, 7) and r.dates is None


def test_the_default_window_size_is_the_envs():
    prices = synthetic_prices(40, seed=1)
    model = FixedActions([FLAT] * 10)
    evaluate_forward(model, prices, Window(0, 0, 20, 20, 30, test_start=30, test_stop=40), iteration=0)
    assert model.seen[0].shape == (1, 11)  # TradingEnv's default window_size=10, plus the position


@pytest.mark.parametrize(
    "window, kwargs, match",
    [
        (Window(0, 0, 2, 2, 4), {}, "no test part"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=9), {}, "outside the 8 prices"),
        (Window(0, 0, 1, 1, 2, test_start=1, test_stop=3), {}, "before the 2 rows of history"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"env_kwargs": {"window_size": 0}}, "window_size"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"env_kwargs": {**ENV, "bad": 1}}, "env_kwargs"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"env_kwargs": {"window_size": 3}}, "trained with"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"candidate": ""}, "candidate"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"periods_per_year": 0}, "periods_per_year"),
        (Window(0, 0, 2, 2, 4, test_start=4, test_stop=7), {"vecnormalize": "stats.pkl"}, "vecnormalize"),
    ],
)
def test_bad_arguments_are_checkpoint_errors(prices, window, kwargs, match):
    class Strict:  # like an SB3 policy: refuses observations of the wrong shape
        def predict(self, obs, deterministic=False):
            if np.asarray(obs).shape != (1, 3):
                raise ValueError(f"Unexpected observation shape {np.asarray(obs).shape}")
            return np.array([FLAT]), None

    args = {"env_kwargs": ENV, **kwargs}
    with pytest.raises(CheckpointError, match=match):
        evaluate_forward(Strict(), prices, window, iteration=0, **args)


def test_a_placeholder_stays_flat_over_the_same_rows(prices):
    w = _window(prices)
    p = placeholder_forward(prices, w, iteration=2, candidate="ppo-s0")
    traded = evaluate_forward(FixedActions([LONG] * 3), prices, w, iteration=2, env_kwargs=ENV)
    assert p.placeholder is True and p.candidate == "ppo-s0"
    assert (p.rows, p.dates) == (traded.rows, traded.dates)
    assert p.returns == (0.0, 0.0, 0.0) and p.positions == (0.0, 0.0, 0.0) and p.equity == (1.0, 1.0, 1.0)
    assert p.metrics["total_return"] == 0.0 and p.metrics["n_trades"] == 0


@pytest.mark.parametrize(
    ("bad", "match"),
    [(np.nan, "finite and strictly positive"), (0.0, "finite and strictly positive"), ("x", "1-D sequence")],
)
def test_bad_prices_are_checkpoint_errors_before_anything_trades(prices, bad, match):
    w = _window(prices)
    broken = prices.astype(object) if isinstance(bad, str) else prices.copy()
    broken.iloc[w.test_start] = bad
    with pytest.raises(CheckpointError, match=match):
        placeholder_forward(broken, w, iteration=2)
    with pytest.raises(CheckpointError, match="one-dimensional"):
        placeholder_forward(np.ones((len(prices), 2)), w, iteration=2)


# -- JSON -----------------------------------------------------------------------------------------------------


def test_json_round_trip_is_exact_and_deterministic(prices):
    r = evaluate_forward(
        FixedActions([LONG, SHORT, FLAT]), prices, _window(prices), iteration=1, candidate="a2c-s1", env_kwargs=ENV
    )
    data = r.to_json_bytes()
    assert (
        data
        == evaluate_forward(
            FixedActions([LONG, SHORT, FLAT]), prices, _window(prices), iteration=1, candidate="a2c-s1", env_kwargs=ENV
        ).to_json_bytes()
    )
    back = ForwardResult.from_json_bytes(data)
    assert back == r and back.to_json_bytes() == data
    raw = json.loads(data)
    assert list(raw) == sorted(raw) and raw["format"] == "sb3-iter-ckpt/forward" and raw["version"] == 2
    # buy-and-hold's return per period is signed with the result: the stitched CSV is derived from these
    assert raw["asset_returns"] == [prices.iloc[t] / prices.iloc[t - 1] - 1 for t in r.rows]


def test_a_version_1_result_an_earlier_version_wrote_reads_back_byte_for_byte(prices):
    r = evaluate_forward(FixedActions([LONG, SHORT, FLAT]), prices, _window(prices), iteration=0, env_kwargs=ENV)
    old = dataclasses.replace(r, asset_returns=None)
    data = old.to_json_bytes()
    raw = json.loads(data)
    assert raw["version"] == 1 and "asset_returns" not in raw
    back = ForwardResult.from_json_bytes(data)
    assert back.asset_returns is None and back.to_json_bytes() == data
    assert b"NaN" not in data and repr(r.returns[0]).encode() in data  # floats written with repr
    p = placeholder_forward(prices, _window(prices), iteration=0)
    assert ForwardResult.from_json_bytes(p.to_json_bytes()) == p


def _mutations():
    def set_(key, value):
        return lambda raw: raw.__setitem__(key, value)

    return [
        ("missing field", lambda raw: raw.pop("rows")),
        ("unknown field", set_("extra", 1)),
        ("other format", set_("format", "sb3-iter-ckpt/record")),
        ("newer version", set_("version", 4)),
        ("version 3 with asset returns", set_("version", 3)),
        ("version 2 without asset returns", lambda raw: raw.pop("asset_returns")),
        ("version 1 with asset returns", set_("version", 1)),
        ("asset return of -100 %", lambda raw: raw["asset_returns"].__setitem__(0, -1.0)),
        ("bool iteration", set_("iteration", True)),
        ("negative iteration", set_("iteration", -1)),
        ("string test_start", set_("test_start", "4")),
        ("empty candidate", set_("candidate", "")),
        ("number candidate", set_("candidate", 3)),
        ("string placeholder", set_("placeholder", "false")),
        ("rows not consecutive", set_("rows", [5, 7, 8])),
        ("rows as floats", set_("rows", [5.0, 6.0, 7.0])),
        ("placeholder that traded", set_("placeholder", True)),
        ("rows before the test part", set_("rows", [4, 5, 6])),
        ("rows past the test part", lambda raw: raw.update(test_stop=5)),
        ("dates too short", set_("dates", ["2020-01-06T00:00:00"])),
        ("dates not strings", set_("dates", [1, 2, 3])),
        ("returns too short", set_("returns", [0.0])),
        ("returns not numbers", set_("returns", ["0.1", 0.0, 0.0])),
        ("bool position", set_("positions", [True, 1.0, -1.0])),
        ("equity tampered", lambda raw: raw["equity"].__setitem__(0, 1.5)),
        ("metrics not an object", set_("metrics", [1, 2])),
        ("metric a string", lambda raw: raw["metrics"].__setitem__("sharpe", "high")),
        ("zero periods_per_year", set_("periods_per_year", 0)),
        ("top-level list", lambda raw: raw.clear()),
    ]


@pytest.mark.parametrize("name, mutate", _mutations(), ids=[m[0] for m in _mutations()])
def test_a_damaged_result_is_a_record_error(prices, name, mutate):
    raw = json.loads(
        evaluate_forward(
            FixedActions([LONG, SHORT, FLAT]), prices, _window(prices), iteration=0, env_kwargs=ENV
        ).to_json_bytes()
    )
    if name == "top-level list":
        data = b"[1, 2]"
    else:
        mutate(raw)
        data = json.dumps(raw).encode()
    with pytest.raises(RecordError):
        ForwardResult.from_json_bytes(data, "forward_iter_0.json")


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe", b'{"returns": NaN}', b"1e999", b"[" * 100 + b"]" * 100, b"null"]
)
def test_hostile_bytes_are_record_errors(data):
    with pytest.raises(RecordError):
        ForwardResult.from_json_bytes(data)


def test_every_truncation_is_a_record_error(prices):
    data = evaluate_forward(
        FixedActions([LONG, SHORT, FLAT]), prices, _window(prices), iteration=0, env_kwargs=ENV
    ).to_json_bytes()
    for cut in range(len(data) - 1):  # the last byte cut is the closing brace too
        with pytest.raises(RecordError):
            ForwardResult.from_json_bytes(data[:cut])


# -- stitching ------------------------------------------------------------------------------------------------


class Constant:
    """A model double holding one action: the stitched positions show which window's model traded a row."""

    def __init__(self, action):
        self.action = action

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.array([self.action]), None


@pytest.fixture(scope="module")
def long_prices():
    return synthetic_prices(1500, seed=4)


def _seven(prices, **kw):
    splitter = WalkForwardSplitter(train_size=500, val_size=125, test_size=125, **kw)
    return list(splitter.split(prices))


def test_stitched_test_parts_of_a_real_splitter_are_contiguous_and_traded_by_their_window(long_prices):
    windows = _seven(long_prices)
    assert len(windows) == 7 and windows[0].test_start == 625 and windows[-1].test_stop == 1500
    results = [
        evaluate_forward(Constant(w.iteration % 3), long_prices, w, iteration=w.iteration, candidate=f"c{w.iteration}")
        for w in windows
    ]
    s = stitch(list(reversed(results)), long_prices)  # any order in, time order out
    assert s.rows == tuple(range(626, 1500))  # no gap, no overlap; the last window ends with the data
    assert s.dates == tuple(long_prices.index[t].isoformat() for t in range(626, 1500))
    for t, iteration, candidate, position in zip(s.rows, s.iterations, s.candidates, s.positions, strict=True):
        w = windows[iteration]
        assert w.test_start < t <= w.test_stop  # the return of the decision at t - 1 inside window w
        assert candidate == f"c{iteration}" and position == float(iteration % 3 - 1)
    assert s.returns == tuple(x for r in results for x in r.returns)
    assert s.equity == pytest.approx(np.cumprod(1 + np.array(s.returns)), rel=1e-12)
    assert s.metrics == trading_metrics(list(s.returns), positions=list(s.positions), periods_per_year=252)


def test_stitch_refuses_overlap_holes_and_mixed_inputs(long_prices):
    def results(windows, **kw):
        return [evaluate_forward(Constant(LONG), long_prices, w, iteration=w.iteration, **kw) for w in windows]

    with pytest.raises(CheckpointError, match="overlap"):
        stitch(results(_seven(long_prices, step=100)[:3]), long_prices)
    with pytest.raises(CheckpointError, match="traded by no model"):
        stitch(results(_seven(long_prices, step=150)[:3]), long_prices)
    ok = results(_seven(long_prices)[:2])
    with pytest.raises(CheckpointError, match="given twice"):
        stitch([ok[0], ok[0]], long_prices)
    with pytest.raises(CheckpointError, match="no forward results"):
        stitch([], long_prices)
    with pytest.raises(CheckpointError, match="periods_per_year"):
        stitch([ok[0], results(_seven(long_prices)[1:2], periods_per_year=365)[0]], long_prices)
    with pytest.raises(CheckpointError, match="does not match these prices"):
        stitch(ok, long_prices.iloc[:800])
    with pytest.raises(CheckpointError, match="does not match these prices"):
        stitch(ok, long_prices.reset_index(drop=True))  # the results have dates, these prices none


def test_a_test_gap_still_tiles(long_prices):
    windows = list(WalkForwardSplitter(400, 100, test_size=100, test_gap=5).split(long_prices))
    s = stitch([placeholder_forward(long_prices, w, iteration=w.iteration) for w in windows], long_prices)
    assert s.rows == tuple(range(windows[0].test_start + 1, windows[-1].test_stop + 1))


def test_baselines_cover_exactly_the_stitched_periods(prices):
    w0 = Window(0, 0, 2, 2, 3, test_start=3, test_stop=5)
    w1 = Window(1, 0, 2, 2, 5, test_start=5, test_stop=8)
    r0 = evaluate_forward(FixedActions([LONG, SHORT]), prices, w0, iteration=0, env_kwargs=ENV)
    r1 = placeholder_forward(prices, w1, iteration=1)
    s = stitch([r0, r1], prices)
    assert s.rows == (4, 5, 6, 7)
    asset = [104 / 102 - 1, 103 / 104 - 1, 105 / 103 - 1, 104 / 105 - 1]  # row t: p[t] / p[t-1] - 1
    assert s.asset_returns == pytest.approx(asset, abs=1e-15)
    base = s.baseline()
    bh = trading_metrics(asset, positions=[1.0] * 4, periods_per_year=252)
    for key, value in bh.items():
        assert base["buy_and_hold"][key] == pytest.approx(value, abs=1e-15), key
    mine = trading_metrics(list(s.returns), positions=list(s.positions), periods_per_year=252)
    assert base["buy_and_hold"]["excess_return"] == pytest.approx(mine["total_return"] - bh["total_return"])
    assert base["buy_and_hold"]["sharpe_difference"] == pytest.approx(mine["sharpe"] - bh["sharpe"])
    assert base["flat"]["total_return"] == 0.0 and base["flat"]["n_periods"] == 4
    assert base["flat"]["excess_return"] == pytest.approx(mine["total_return"])
    assert base["flat"]["sharpe_difference"] is None  # flat has no Sharpe ratio
    summary = s.to_dict()
    assert (summary["first_row"], summary["last_row"]) == (4, 7)
    assert summary["first_date"] == "2020-01-05T00:00:00" and summary["baseline"] == base


def test_csv_is_deterministic_and_round_trips(long_prices, prices):
    windows = _seven(long_prices)[:3]
    results = [evaluate_forward(Momentum(), long_prices, w, iteration=w.iteration, candidate="ppo-s0") for w in windows]
    results[1] = placeholder_forward(long_prices, windows[1], iteration=1, candidate="ppo-s0")
    s = stitch(results, long_prices)
    data = s.to_csv_bytes()
    assert data == stitch(list(reversed(results)), long_prices).to_csv_bytes()
    lines = data.decode().split("\n")
    assert lines[0] == "row,date,iteration,candidate,placeholder,position,return,equity,asset_return"
    assert lines[1].startswith(f"626,{long_prices.index[626].isoformat()},0,ppo-s0,false,")
    assert len(lines) == 1 + len(s.rows) + 1 and lines[-1] == ""
    back = StitchedForward.from_csv_bytes(data, 252)
    assert back == s and back.to_csv_bytes() == data
    # without dates the column is left out
    plain = stitch([evaluate_forward(Constant(LONG), P, _window(len(P)), iteration=0, env_kwargs=ENV)], np.array(P))
    assert plain.to_csv_bytes().startswith(b"row,iteration,candidate,placeholder,position")
    assert StitchedForward.from_csv_bytes(plain.to_csv_bytes(), 252) == plain


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"row,iteration\n1,2\n",
        b"row,iteration,candidate,placeholder,position,return,equity,asset_return\n1,0,,true,0.0,0.0,1.0\n",
        b"row,iteration,candidate,placeholder,position,return,equity,asset_return\n1,0,,yes,0.0,0.0,1.0,0.0\n",
        b"row,iteration,candidate,placeholder,position,return,equity,asset_return\nx,0,,true,0.0,0.0,1.0,0.0\n",
        b"row,iteration,candidate,placeholder,position,return,equity,asset_return\n1,0,,true,nan,0.0,1.0,0.0\n",
        b"row,iteration,candidate,placeholder,position,return,equity,asset_return\n"
        b"1,0,,true,0.0,0.0,1.0,0.0\n3,0,,true,0.0,0.0,1.0,0.0\n",
    ],
)
def test_a_damaged_csv_is_a_record_error(data):
    with pytest.raises(RecordError):
        StitchedForward.from_csv_bytes(data, 252)


# -- selection against forward, the statistics ----------------------------------------------------------------


def test_selection_vs_forward_by_hand(prices):
    w0 = Window(0, 0, 2, 2, 3, test_start=3, test_stop=5)
    w1 = Window(1, 0, 2, 2, 5, test_start=5, test_stop=8)
    r0 = evaluate_forward(FixedActions([LONG, LONG]), prices, w0, iteration=0, env_kwargs=ENV, candidate="ppo")
    r1 = evaluate_forward(FixedActions([SHORT, LONG, LONG]), prices, w1, iteration=1, env_kwargs=ENV, candidate="a2c")
    out = selection_vs_forward([r1, r0], {0: 1.5, 1: 0.7}, {0: 0.4, 1: -0.2})
    first, second = out["iterations"]
    assert (first["iteration"], first["candidate"], second["candidate"]) == (0, "ppo", "a2c")
    assert first["selection_score"] == 1.5 and first["forward"] == r0.metrics
    assert first["forward_score"] == r0.metrics["sharpe"] and first["forward_return"] == r0.metrics["cagr"]
    assert first["efficiency"] == pytest.approx(r0.metrics["cagr"] / 0.4)
    assert second["efficiency"] is None  # selection return not positive
    overall = out["overall"]
    assert r0.rows + r1.rows == (4, 5, 6, 7)
    growth = np.prod(1 + np.array(r0.returns + r1.returns))
    assert overall["forward_return"] == pytest.approx(growth ** (252 / 4) - 1)
    assert overall["selection_return"] == pytest.approx(0.1)  # mean of 0.4 and -0.2
    assert overall["efficiency"] == pytest.approx(overall["forward_return"] / 0.1)
    explicit = selection_vs_forward([r0, r1], {}, {}, overall_selection_return=0.5)
    assert explicit["iterations"][0]["selection_score"] is None and explicit["iterations"][0]["efficiency"] is None
    assert explicit["overall"]["efficiency"] == pytest.approx(overall["forward_return"] / 0.5)


def _candidates(n_rows, n_candidates, seed=0):
    rng = np.random.default_rng(seed)
    return {f"c{k}": rng.normal(0.0005 * k, 0.01, n_rows) for k in range(n_candidates)}


def test_statistics_match_direct_calls_of_the_papers_functions():
    cands = _candidates(874, 3)
    chosen = cands["c2"]
    out = forward_statistics(chosen, cands)
    sharpes = [sharpe_ratio(r) for r in cands.values()]
    variance = float(np.var(sharpes, ddof=1))
    assert out["n_trials"] == 3 and out["trials_variance"] == pytest.approx(variance, rel=1e-12)
    assert out["deflated_sharpe"] == pytest.approx(deflated_sharpe_ratio(chosen, 3, variance), rel=1e-12)
    assert out["candidate_sharpes"] == pytest.approx(dict(zip(cands, sharpes, strict=True)))
    pbo = probability_of_backtest_overfitting(np.column_stack(list(cands.values())), 16)
    expected = pbo.to_dict()
    assert out["pbo"] == expected and out["pbo"]["n_partitions"] == 16
    assert "logits" not in out["pbo"] and out["pbo"]["logit_summary"]["count"] == 12_870
    assert forward_statistics(chosen, cands, logits=True)["pbo"] == {**expected, "logits": list(pbo.logits)}
    assert out["deflated_sharpe_reason"] is None and out["pbo_reason"] is None
    assert record.loads(record.dumps(out), "statistics") == json.loads(json.dumps(record.to_jsonable(out)))


def test_the_serializer_passes_a_plain_series_as_it_is_and_converts_any_other():
    """A forward result's series go to JSON without a conversion per number; anything else as before."""
    assert record.to_jsonable((1.5, -2.0)) == [1.5, -2.0] and record.to_jsonable((3, 4)) == [3, 4]
    assert record.to_jsonable([1e308, 1e308]) == [1e308, 1e308]  # finite, though their sum is not
    assert record.to_jsonable([1.0, math.nan, -math.inf]) == [1.0, None, None]
    out = record.to_jsonable([np.float64(0.5), 1.0, True, 2])
    assert out == [0.5, 1.0, True, 2] and [type(x) for x in out] == [float, float, bool, int]
    assert [type(x) for x in record.to_jsonable((np.float64(0.5), np.float64(1.0)))] == [float, float]


def test_one_candidate_gives_the_psr_against_zero_and_no_pbo():
    cands = _candidates(200, 1, seed=3)
    out = forward_statistics(cands["c0"], cands)
    assert out["n_trials"] == 1 and out["trials_variance"] == 0.0
    assert out["deflated_sharpe"] == pytest.approx(probabilistic_sharpe_ratio(cands["c0"], 0.0), rel=1e-12)
    assert out["pbo"] is None and "at least 2" in out["pbo_reason"]


def test_short_runs_use_fewer_partitions_or_report_why_not():
    assert [pbo_partitions(n) for n in (874, 32, 31, 20, 6, 4, 3, 0)] == [16, 16, 14, 10, 2, 2, 0, 0]
    cands = _candidates(20, 2, seed=5)
    out = forward_statistics(cands["c1"], cands)
    assert out["pbo"] == probability_of_backtest_overfitting(np.column_stack(list(cands.values())), 10).to_dict()
    tiny = _candidates(3, 2)
    out = forward_statistics(tiny["c0"], tiny)
    assert out["pbo"] is None and "too few for PBO" in out["pbo_reason"]
    one = {"a": [0.01], "b": [0.02]}
    out = forward_statistics([0.01], one)
    assert out["deflated_sharpe"] is None and "at least 2 values" in out["deflated_sharpe_reason"]
    flat = forward_statistics([0.0] * 10, {"a": [0.0] * 10})
    assert flat["deflated_sharpe"] is None and "zero variance" in flat["deflated_sharpe_reason"]
    with pytest.raises(CheckpointError, match="different periods"):
        forward_statistics([0.0] * 10, {"a": [0.0] * 10, "b": [0.0] * 9})


def test_report_has_the_forward_commands_keys(long_prices):
    windows = _seven(long_prices)
    per_candidate = {
        name: [evaluate_forward(model, long_prices, w, iteration=w.iteration, candidate=name) for w in windows]
        for name, model in (("long", Constant(LONG)), ("momentum", Momentum()))
    }
    chosen = [per_candidate["momentum" if w.iteration % 2 else "long"][w.iteration] for w in windows]
    report = forward_report(
        chosen,
        long_prices,
        selection_scores={w.iteration: 1.0 for w in windows},
        selection_returns={w.iteration: 0.1 for w in windows},
        candidate_results=per_candidate,
    )
    for key in ("iterations", "stitched", "baseline", "deflated_sharpe", "pbo"):
        assert key in report
    assert set(report["baseline"]) == {"buy_and_hold", "flat"}
    assert [row["candidate"] for row in report["iterations"]] == [r.candidate for r in chosen]
    for row in report["iterations"]:
        assert {"iteration", "candidate", "selection_score", "forward", "placeholder"} <= set(row)
    curves = {name: stitch(parts, long_prices).returns for name, parts in per_candidate.items()}
    assert report["pbo"] == forward_statistics(stitch(chosen, long_prices).returns, curves)["pbo"]
    assert isinstance(report["deflated_sharpe"], float) and 0 <= report["deflated_sharpe"] <= 1
    record.dumps(report)  # strict JSON
    with pytest.raises(CheckpointError, match="differ from the chosen curve"):
        forward_report(chosen, long_prices, candidate_results={"short": per_candidate["long"][:3]})


# -- a real PPO with VecNormalize -----------------------------------------------------------------------------


def _train_ppo_with_vecnormalize(prices, tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from sb3_iter_ckpt.envs.trading import TradingEnv

    venv = VecNormalize(DummyVecEnv([lambda: TradingEnv(prices.iloc[:300].to_numpy())]), norm_reward=True)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    model.save(tmp_path / "model.zip")
    venv.save(tmp_path / "vecnormalize.pkl")
    return PPO.load(tmp_path / "model.zip", device="cpu")


def _load_vecnormalize(path, venv):
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize.load(str(path), venv)


def test_a_real_ppo_with_vecnormalize_is_deterministic(tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_iter_ckpt.envs.trading import TradingEnv

    prices = synthetic_prices(500, seed=8)
    model = _train_ppo_with_vecnormalize(prices, tmp_path)
    loaded = _load_vecnormalize(tmp_path / "vecnormalize.pkl", DummyVecEnv([lambda: TradingEnv(prices.to_numpy())]))
    assert loaded.training is True  # as VecNormalize.load leaves it; forward evaluation must not change it
    w = Window(0, 0, 300, 300, 400, test_start=400, test_stop=500)
    first = evaluate_forward(model, prices, w, iteration=0, vecnormalize=loaded).to_json_bytes()
    again = evaluate_forward(model, prices, w, iteration=0, vecnormalize=loaded).to_json_bytes()
    factory = functools.partial(_load_vecnormalize, tmp_path / "vecnormalize.pkl")
    fresh = evaluate_forward(model, prices, w, iteration=0, vecnormalize=factory).to_json_bytes()
    assert first == again == fresh
    assert loaded.training is True and loaded.obs_rms.count > 0  # the caller's statistics untouched
    assert len(ForwardResult.from_json_bytes(first).returns) == 99


def test_observations_are_normalized_with_the_given_statistics(tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_iter_ckpt.envs.trading import TradingEnv

    prices = synthetic_prices(500, seed=8)
    _train_ppo_with_vecnormalize(prices, tmp_path)
    stats = _load_vecnormalize(tmp_path / "vecnormalize.pkl", DummyVecEnv([lambda: TradingEnv(prices.to_numpy())]))
    w = Window(0, 0, 300, 300, 400, test_start=400, test_stop=500)
    plain, normalized = FixedActions([LONG] * 99), FixedActions([LONG] * 99)
    evaluate_forward(plain, prices, w, iteration=0)
    evaluate_forward(normalized, prices, w, iteration=0, vecnormalize=stats)
    for raw, seen in zip(plain.seen, normalized.seen, strict=True):
        assert seen == pytest.approx(stats.normalize_obs(raw), abs=1e-6)
    assert not np.allclose(plain.seen[0], normalized.seen[0])


def test_a_model_and_statistics_from_the_repository_trade_alike_by_both_routes(repo_root):
    """The wiring the runner uses: the kept model and its VecNormalize statistics loaded through the
    repository (hash-verified), either as a ``callable(venv)`` or as the env ``load(i, env=...)`` made."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
    from sb3_iter_ckpt.envs.trading import TradingEnv

    prices = synthetic_prices(500, seed=9)
    venv = VecNormalize(DummyVecEnv([lambda: TradingEnv(prices.iloc[:300].to_numpy())]))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    repo = CheckpointRepository(repo_root)
    model.learn(128, callback=IterationCheckpointCallback(repo, evaluator=lambda m, e: {"mean_reward": 1.0}))
    assert "vecnormalize" in repo.get(0).artifacts
    w = Window(0, 0, 300, 300, 400, test_start=400, test_stop=500)
    factory = functools.partial(repo.load_vecnormalize, 0)
    by_factory = evaluate_forward(repo.load(0), prices, w, iteration=0, vecnormalize=factory)
    loaded = repo.load(0, env=DummyVecEnv([lambda: TradingEnv(prices.to_numpy())]))
    by_env = evaluate_forward(loaded, prices, w, iteration=0, vecnormalize=loaded.get_env())
    assert by_factory.to_json_bytes() == by_env.to_json_bytes()
    assert len(by_factory.returns) == 99 and not by_factory.placeholder
