"""Tests of sb3_iter_ckpt.stats.metrics: closed-form cases, edge cases and properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt.stats.metrics import (
    METRIC_KEYS,
    cagr,
    calmar,
    exposure,
    max_drawdown,
    n_trades,
    returns_from_equity,
    sharpe,
    sortino,
    total_return,
    trading_metrics,
    volatility,
    win_rate,
)

# Any numpy RuntimeWarning (division by zero, overflow, invalid value) is a test failure here.
pytestmark = pytest.mark.filterwarnings("error")


def _finite_or_none(metrics: dict) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in metrics.values())


# -- closed-form cases -----------------------------------------------------------------------------------------


def test_constant_returns_have_zero_volatility_and_no_sharpe():
    r = [0.001] * 50
    assert volatility(r) == 0.0
    assert sharpe(r) is None
    assert sortino(r) is None
    m = trading_metrics(r)
    assert m["volatility"] == 0.0 and m["sharpe"] is None and m["sortino"] is None


def test_constant_returns_from_geometric_equity_count_as_zero_variance():
    # Returns recomputed from 1.01**k differ by float round-off only: still "zero variance".
    equity = 1.01 ** np.arange(30)
    r = returns_from_equity(equity)
    assert volatility(r) == 0.0
    assert sharpe(r) is None


def test_sharpe_and_sortino_hand_computed():
    r = [0.02, 0.0, -0.01]
    # mean = 1/300, sample std = sqrt(7/30000) -> mean/std = 1/sqrt(21)
    assert sharpe(r, periods_per_year=1) == pytest.approx(1 / math.sqrt(21))
    assert sharpe(r, periods_per_year=4) == pytest.approx(2 / math.sqrt(21))
    # downside deviation = sqrt(0.01**2 / 3) -> mean/dd = sqrt(3)/3
    assert sortino(r, periods_per_year=1) == pytest.approx(math.sqrt(3) / 3)
    assert sortino(r, periods_per_year=252) == pytest.approx(math.sqrt(3) / 3 * math.sqrt(252))
    # annualised volatility
    assert volatility(r, periods_per_year=252) == pytest.approx(math.sqrt(7 / 30000) * math.sqrt(252))


def test_sharpe_risk_free_is_per_period():
    r = [0.02, 0.0, -0.01]
    # excess = [0.01, -0.01, -0.02]: mean -2/300, same std as r
    assert sharpe(r, periods_per_year=1, risk_free=0.01) == pytest.approx(-2 / math.sqrt(21))


def test_sortino_without_downside_is_none():
    assert sortino([0.01, 0.02, 0.03]) is None
    assert sharpe([0.01, 0.02, 0.03]) is not None


def test_max_drawdown_hand_computed_on_equity():
    equity = [100, 120, 90, 95, 130, 65]
    assert max_drawdown(equity=equity) == pytest.approx(0.5)
    # same curve as returns: the curve then starts at 1.0 and has the same shape
    assert max_drawdown(returns_from_equity(equity)) == pytest.approx(0.5)


def test_max_drawdown_counts_an_immediate_loss():
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(0.1)


def test_max_drawdown_is_clipped_to_total_loss():
    # A short position can lose more than 100%: the drawdown is still reported as 1.0.
    assert max_drawdown([0.5, -1.5]) == 1.0


def test_cagr_and_total_return_hand_computed():
    # equity 1 -> 4 over two years of 252 periods: CAGR 100 %
    r = np.full(504, 4 ** (1 / 504) - 1)
    assert total_return(r) == pytest.approx(3.0)
    assert cagr(r, periods_per_year=252) == pytest.approx(1.0)
    # same path over one year of 504 periods: CAGR 300 %
    assert cagr(r, periods_per_year=504) == pytest.approx(3.0)


def test_cagr_total_loss_and_undefined():
    assert cagr([-1.0, 0.1]) == -1.0
    assert cagr([-1.5, 0.1]) is None  # negative equity: no real root


def test_cagr_overflow_is_none():
    # a 1000x gain in one day, annualised with 252 periods, overflows float64
    assert cagr([999.0], periods_per_year=252) is None
    assert trading_metrics([999.0])["cagr"] is None


def test_monotone_equity_has_no_drawdown_and_no_calmar():
    equity = [1.0, 1.1, 1.2, 1.3, 1.35]
    assert max_drawdown(equity=equity) == 0.0
    m = trading_metrics(equity=equity)
    assert m["max_drawdown"] == 0.0
    assert m["calmar"] is None
    assert m["n_periods"] == 4


def test_calmar_hand_computed():
    r = [0.1, -0.2, 0.3]
    mdd = 0.2
    growth = 1.1 * 0.8 * 1.3
    expected = (growth ** (12 / 3) - 1) / mdd
    assert calmar(r, periods_per_year=12) == pytest.approx(expected)


def test_empty_series():
    m = trading_metrics([], positions=[])
    assert m["n_periods"] == 0
    assert m["periods_per_year"] == 252
    for key in METRIC_KEYS:
        if key not in ("n_periods", "periods_per_year"):
            assert m[key] is None, key
    assert trading_metrics(equity=[1.0])["n_periods"] == 0
    assert max_drawdown(equity=[5.0]) is None
    assert total_return([]) is None and cagr([]) is None and volatility([]) is None


def test_single_period():
    m = trading_metrics([0.01])
    assert m["total_return"] == pytest.approx(0.01)
    assert m["volatility"] is None and m["sharpe"] is None and m["sortino"] is None
    assert m["max_drawdown"] == 0.0


def test_flat_positions():
    m = trading_metrics([0.0, 0.0, 0.0], positions=[0, 0, 0])
    assert m["exposure"] == 0.0
    assert m["n_trades"] == 0
    assert m["win_rate"] is None
    assert m["sharpe"] is None  # zero variance


def test_positions_metrics():
    positions = [0, 1, 1, -1, 0]
    returns = [0.0, 0.02, -0.01, 0.03, -0.001]
    assert n_trades(positions) == 3
    assert n_trades([1, 1, 0]) == 2  # opening from the default flat start counts
    assert n_trades([1, 1, 0], initial_position=1) == 1
    assert n_trades([]) is None
    assert exposure(positions) == pytest.approx(0.6)
    # in the market in periods 1, 2, 3: wins at 1 and 3
    assert win_rate(returns, positions) == pytest.approx(2 / 3)
    # without positions, nonzero returns stand in for "in the market"
    assert win_rate(returns) == pytest.approx(2 / 4)
    m = trading_metrics(returns, positions=positions)
    assert m["n_trades"] == 3 and m["exposure"] == pytest.approx(0.6)


def test_no_positions_means_no_trade_metrics():
    m = trading_metrics([0.01, -0.02])
    assert m["n_trades"] is None and m["exposure"] is None
    assert m["win_rate"] == pytest.approx(0.5)


def test_keys_types_and_json():
    m = trading_metrics([0.01, -0.02, 0.005], positions=[1, 1, -1], periods_per_year=52)
    assert tuple(m) == METRIC_KEYS
    assert m["periods_per_year"] == 52
    assert isinstance(m["n_trades"], int) and isinstance(m["n_periods"], int)
    for value in m.values():
        assert value is None or type(value) in (int, float)  # no numpy scalars
    json.dumps(m, allow_nan=False)


def test_periods_per_year_changes_annualisation():
    r = [0.01, -0.005, 0.007, 0.002]
    daily, weekly = trading_metrics(r, periods_per_year=252), trading_metrics(r, periods_per_year=52)
    assert daily["sharpe"] / weekly["sharpe"] == pytest.approx(math.sqrt(252 / 52))
    assert weekly["periods_per_year"] == 52
    assert trading_metrics(r, periods_per_year=365.25)["periods_per_year"] == 365.25


@pytest.mark.parametrize("convert", [list, np.asarray, pd.Series, lambda x: pd.Series(x).to_frame()])
def test_accepts_lists_arrays_and_pandas(convert):
    r = [0.01, -0.02, 0.015, 0.0, -0.005]
    p = [1, 1, 0, -1, -1]
    assert trading_metrics(convert(r), positions=convert(p)) == trading_metrics(r, positions=p)
    eq = [1.0, 1.1, 1.05, 1.2]
    assert trading_metrics(equity=convert(eq)) == trading_metrics(equity=eq)


def test_equity_and_returns_agree():
    equity = np.array([1.0, 1.02, 0.99, 1.05, 1.01])
    a = trading_metrics(equity=equity)
    b = trading_metrics(returns_from_equity(equity))
    assert a == b
    assert max_drawdown(equity=equity) == pytest.approx(a["max_drawdown"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"returns": [0.1], "equity": [1.0, 1.1]}, "not both"),
        ({}, "returns or equity"),
        ({"returns": [0.1, 0.2], "positions": [1]}, "positions has 1"),
        ({"returns": [0.1, float("nan")]}, "NaN"),
        ({"returns": [0.1, float("inf")]}, "NaN or infinite"),
        ({"equity": [1.0, 0.0, 1.0]}, "strictly positive"),
        ({"returns": [0.1], "periods_per_year": 0}, "periods_per_year"),
        ({"returns": [0.1], "periods_per_year": float("nan")}, "periods_per_year"),
        ({"returns": [0.1], "risk_free": float("inf")}, "risk_free"),
        ({"returns": [[0.1, 0.2], [0.3, 0.4]]}, "one-dimensional"),
        ({"returns": ["a", "b"]}, "sequence of numbers"),
        ({"returns": pd.Series(["a", "b"])}, "sequence of numbers"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        trading_metrics(**kwargs)


def test_max_drawdown_needs_exactly_one_series():
    with pytest.raises(ValueError):
        max_drawdown()
    with pytest.raises(ValueError):
        max_drawdown([0.1], equity=[1.0, 1.1])


# -- properties --------------------------------------------------------------------------------------------

_positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(equity=st.lists(_positive, min_size=0, max_size=60), ppy=st.sampled_from([1, 12, 52, 252, 365.25]))
def test_property_equity_metrics_finite_or_none(equity, ppy):
    m = trading_metrics(equity=equity, periods_per_year=ppy)
    assert set(m) == set(METRIC_KEYS)
    assert _finite_or_none(m)
    if len(equity) >= 2:
        assert 0.0 <= m["max_drawdown"] <= 1.0
        assert 0.0 <= max_drawdown(equity=equity) <= 1.0
    else:
        assert m["max_drawdown"] is None


@settings(max_examples=200, deadline=None)
@given(
    returns=st.lists(st.floats(min_value=-3.0, max_value=50.0, allow_nan=False), max_size=60),
    data=st.data(),
)
def test_property_return_metrics_finite_or_none(returns, data):
    positions = data.draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=len(returns), max_size=len(returns)))
    rf = data.draw(st.floats(min_value=-0.01, max_value=0.01))
    m = trading_metrics(returns, positions=positions, risk_free=rf)
    assert _finite_or_none(m)
    if returns:
        assert 0.0 <= m["max_drawdown"] <= 1.0
        assert 0.0 <= m["exposure"] <= 1.0
        assert 0 <= m["n_trades"] <= len(returns)
    if m["win_rate"] is not None:
        assert 0.0 <= m["win_rate"] <= 1.0
