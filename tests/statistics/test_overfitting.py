"""Tests of sb3_iter_ckpt.stats.overfitting: PSR, DSR and PBO (CSCV) against hand-computed cases, the papers'
worked example, independent implementations written here (scipy.stats and plain loops), and properties."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.stats.overfitting import (
    EULER_GAMMA,
    BacktestOverfitting,
    _psr,
    deflated_sharpe_ratio,
    expected_max_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
    walk_forward_efficiency,
)

PHI = NormalDist().cdf
PHI_INV = NormalDist().inv_cdf

# Returns on a 1e-4 grid: realistic sizes, many ties and some constant series.
returns_lists = st.lists(st.integers(-1000, 1000).map(lambda k: k / 10_000), min_size=2, max_size=60)


# -- hand-computed cases ------------------------------------------------------------------------------------


def test_psr_symmetric_sample_by_hand():
    # r = [1, 2, -1, 3, 0] %: mean 1, deviations 0, 1, -2, 2, -1 (squares sum to 10).
    # sample variance 10/4 = 2.5, so SR = 1/sqrt(2.5) (units cancel); m2 = 10/5 = 2.
    # m3 = (0 + 1 - 8 + 8 - 1)/5 = 0 -> skew 0;  m4 = (0 + 1 + 16 + 16 + 1)/5 = 6.8 -> kurtosis 6.8/4 = 1.7.
    # denominator = 1 - 0 + (1.7 - 1)/4 * SR^2 = 1 + 0.175 * 0.4 = 1.07;  z = SR * sqrt(4) / sqrt(1.07).
    r = [0.01, 0.02, -0.01, 0.03, 0.0]
    assert sharpe_ratio(r) == pytest.approx(1 / math.sqrt(2.5), rel=1e-12)
    z = 2 / math.sqrt(2.5 * 1.07)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(PHI(z), rel=1e-12)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(0.88930, abs=1e-5)  # z = 1.22284
    # against a benchmark of 0.2 per period: z = (SR - 0.2) * 2 / sqrt(1.07)
    z_b = (1 / math.sqrt(2.5) - 0.2) * 2 / math.sqrt(1.07)
    assert probabilistic_sharpe_ratio(r, benchmark=0.2) == pytest.approx(PHI(z_b), rel=1e-12)


def test_psr_skewed_sample_by_hand():
    # r = [0, 0, 0, 4]: mean 1, deviations -1, -1, -1, 3 (squares sum to 12): sample std 2, SR = 0.5.
    # m2 = 3, m3 = (-3 + 27)/4 = 6 -> skew 6 / 3**1.5 = 2/sqrt(3);  m4 = (3 + 81)/4 = 21 -> kurtosis 21/9 = 7/3.
    # denominator = 1 - (2/sqrt(3)) * 0.5 + (7/3 - 1)/4 * 0.25 = 13/12 - 1/sqrt(3).
    r = [0.0, 0.0, 0.0, 4.0]
    assert sharpe_ratio(r) == pytest.approx(0.5, rel=1e-12)
    denominator = 13 / 12 - 1 / math.sqrt(3)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(PHI(0.5 * math.sqrt(3) / math.sqrt(denominator)), rel=1e-12)
    assert probabilistic_sharpe_ratio(r, 0.1) == pytest.approx(PHI(0.4 * math.sqrt(3) / math.sqrt(denominator)))
    # positive skew shrinks the denominator below 1: more confident than the normal-returns formula
    assert probabilistic_sharpe_ratio(r) > PHI(0.5 * math.sqrt(3))


def test_expected_max_sharpe_by_hand():
    # N = 2: Φ⁻¹(1 - 1/2) = 0, so SR0 = sqrt(V) * γ * Φ⁻¹(1 - 1/(2e)).
    assert expected_max_sharpe_ratio(2, 0.04) == pytest.approx(0.2 * EULER_GAMMA * PHI_INV(1 - 1 / (2 * math.e)))
    assert expected_max_sharpe_ratio(2, 0.04) == pytest.approx(0.10395, abs=1e-5)  # Φ⁻¹(0.81606) = 0.90045
    # N = 10, V = 1: (1 - γ) Φ⁻¹(0.9) + γ Φ⁻¹(1 - 1/(10e))
    assert expected_max_sharpe_ratio(10, 1.0) == pytest.approx(
        (1 - EULER_GAMMA) * 1.2815515655446004 + EULER_GAMMA * PHI_INV(1 - 1 / (10 * math.e))
    )
    assert EULER_GAMMA == pytest.approx(0.5772156649015329, abs=1e-16)
    # one trial is no selection; zero variance means every trial had the same Sharpe ratio
    assert expected_max_sharpe_ratio(1, 5.0) == 0.0 and expected_max_sharpe_ratio(7, 0.0) == 0.0
    # huge N: Φ⁻¹(1 - 1/N) without rounding 1 - 1/N to 1
    assert math.isfinite(expected_max_sharpe_ratio(10**20, 1.0)) and expected_max_sharpe_ratio(10**20, 1.0) > 9


def test_dsr_paper_numerical_example():
    # Bailey & López de Prado (2014), numerical example: an annualised SR of 2.5 over 1,250 daily returns,
    # skewness -3, kurtosis 10, selected from N = 100 trials whose annualised Sharpe ratios have variance 1/2.
    # Per day: SR = 2.5/sqrt(250) ≈ 0.1581, V = 0.5/250; the paper finds SR0 ≈ 0.1132 and DSR ≈ 0.9004.
    sr0 = expected_max_sharpe_ratio(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert _psr(2.5 / math.sqrt(250), -3.0, 10.0, 1250, sr0) == pytest.approx(0.9004, abs=5e-5)


def test_dsr_is_psr_against_expected_maximum():
    r = [0.01, 0.02, -0.01, 0.03, 0.0]
    sr0 = expected_max_sharpe_ratio(2, 0.04)
    assert deflated_sharpe_ratio(r, 2, 0.04) == pytest.approx(probabilistic_sharpe_ratio(r, sr0), rel=1e-12)
    z = (1 / math.sqrt(2.5) - sr0) * 2 / math.sqrt(1.07)  # the symmetric sample's hand-computed terms
    assert deflated_sharpe_ratio(r, 2, 0.04) == pytest.approx(PHI(z), rel=1e-12)
    # N = 1 (Φ⁻¹(0) = -inf is never evaluated) and zero variance: the PSR against 0
    assert deflated_sharpe_ratio(r, 1, 0.04) == probabilistic_sharpe_ratio(r)
    assert deflated_sharpe_ratio(r, 30, 0.0) == probabilistic_sharpe_ratio(r)


def test_none_for_zero_variance_or_zero_denominator():
    for flat in ([0.0, 0.0, 0.0], [0.001] * 50, [0.1, 0.1]):
        assert sharpe_ratio(flat) is None
        assert probabilistic_sharpe_ratio(flat) is None
        assert deflated_sharpe_ratio(flat, 5, 0.01) is None
    # 1 - skew*SR + (kurt - 1)/4*SR^2 = 1 - 2 + 4/4 = 0 (a degenerate two-valued sample): None, not inf.
    assert _psr(1.0, 2.0, 5.0, 10, 0.0) is None
    assert _psr(1.0, 3.0, 5.0, 10, 0.0) is None  # negative
    # nearly degenerate but positive: a finite probability
    value = probabilistic_sharpe_ratio([0.6160254037844386, 0.6160254037844386, 0.6160254037844386, 1.6160254037844386])
    assert value is not None and 0.0 <= value <= 1.0


def test_walk_forward_efficiency():
    assert walk_forward_efficiency(0.1, 0.2) == pytest.approx(0.5)
    assert walk_forward_efficiency(-0.1, 0.2) == pytest.approx(-0.5)
    assert walk_forward_efficiency(0.1, 0.0) is None
    assert walk_forward_efficiency(0.1, -0.3) is None
    assert walk_forward_efficiency(None, 0.2) is None and walk_forward_efficiency(0.1, None) is None
    with pytest.raises(CheckpointError, match="forward_return"):
        walk_forward_efficiency(float("nan"), 0.2)


# Tiny CSCV worked by hand: 8 rows, 4 blocks of 2 rows, 3 strategies.
#   A: blocks 0, 1 = [2, 4], blocks 2, 3 = [-4, -2]      (good early, bad late)
#   B: the reverse                                      (bad early, good late)
#   C: every block [0, 1]                               (small and steady)
# Over 4 rows: A on {0,1} is [2,4,2,4]: mean 3, sample std sqrt(4/3), SR = 2.598; on {2,3} -2.598;
# on any mixed half [2,4,-4,-2]: mean 0, SR 0. B is the mirror image. C is always [0,1,0,1]: SR 0.866.
#   IS {0,1}: A best (2.598); OOS {2,3}: A -2.598 < C 0.866 < B 2.598 -> rank 1, ω 1/4, λ = ln(1/3)
#   IS {0,2}, {0,3}, {1,2}, {1,3}: A = B = 0 < C: C best; OOS also mixed: C rank 3, ω 3/4, λ = ln 3
#   IS {2,3}: B best; OOS {0,1}: B -2.598 -> rank 1, λ = ln(1/3)
# PBO = 2/6 = 1/3.
HAND_MATRIX = np.array(
    [
        [2, -4, 0],
        [4, -2, 1],
        [2, -4, 0],
        [4, -2, 1],
        [-4, 2, 0],
        [-2, 4, 1],
        [-4, 2, 0],
        [-2, 4, 1],
    ],
    dtype=float,
)


def test_pbo_hand_computed_cscv():
    result = probability_of_backtest_overfitting(HAND_MATRIX, n_partitions=4)
    assert isinstance(result, BacktestOverfitting)
    assert result.n_combinations == 6 and result.n_partitions == 4 and result.n_strategies == 3
    assert result.rows_used == 8
    expected = [math.log(1 / 3), math.log(3), math.log(3), math.log(3), math.log(3), math.log(1 / 3)]
    assert result.logits == pytest.approx(expected, abs=1e-12)
    assert result.pbo == pytest.approx(1 / 3)
    # the leftover rows (10 % 4 = 2) are dropped, not spread
    padded = np.vstack([HAND_MATRIX, [[100, -100, 5], [-100, 100, 7]]])
    assert probability_of_backtest_overfitting(padded, n_partitions=4).logits == result.logits
    ln3 = math.log(3)
    out = result.to_dict()
    sizes = {"n_combinations": 6, "n_partitions": 4, "n_strategies": 3, "rows_used": 8}
    assert {k: v for k, v in out.items() if k != "logit_summary"} == {"pbo": result.pbo, **sizes}
    summary = out["logit_summary"]
    assert summary["count"] == 6 and summary["histogram"]["counts"] == [2, 4]  # -ln 3 twice, ln 3 four times
    assert sum(summary["histogram"]["edges"], []) == pytest.approx([-ln3, -ln3, ln3, ln3])
    # the quantile q of the 6 sorted logits sits at position 5q, between its neighbours linearly
    expected_q = {"p05": -ln3, "p25": -ln3 + 0.25 * 2 * ln3, "p50": ln3, "p75": ln3, "p95": ln3}
    assert summary["quantiles"] == pytest.approx(expected_q)
    assert result.to_dict(logits=True) == {**result.to_dict(), "logits": list(result.logits)}


def test_pbo_ties_first_strategy_wins_and_ranks_average():
    # Identical strategies: the first wins every in-sample tie; out of sample the two tie at ranks 1 and 2,
    # average 1.5, ω = 1.5/3 = 1/2, λ = 0, which counts as overfit (λ ≤ 0).
    column = np.array([0.01, -0.02, 0.03, 0.0, 0.02, -0.01, 0.04, 0.01])
    result = probability_of_backtest_overfitting(np.column_stack([column, column]), n_partitions=4)
    assert result.logits == (0.0,) * 6 and result.pbo == 1.0
    # Three strategies, the last two identical and better: the in-sample winner is column 1 (the first of
    # the tied pair), out of sample it shares ranks 2 and 3 with column 2: 2.5/4, λ = ln(2.5/1.5) > 0.
    matrix = np.column_stack([column - 0.01, column + 0.01, column + 0.01])
    result = probability_of_backtest_overfitting(matrix, n_partitions=4)
    assert result.logits == pytest.approx([math.log(2.5 / 1.5)] * 6) and result.pbo == 0.0


def test_pbo_constant_strategy_is_undefined_and_ranks_lowest():
    # A = [1, 3, -1, -3], one row per block; F is flat (zero variance in every half: no Sharpe ratio).
    # A's Sharpe ratio is negative in some halves ({2,3}: [-1,-3]), yet F never wins in-sample and always ranks
    # below A out of sample: every λ = ln((2/3)/(1/3)) = ln 2. (Reading F as a Sharpe ratio of 0 would pick F
    # in-sample on {2,3} and rank A below F out of sample on {0,3}, giving negative logits.)
    for flat in (0.0, 0.001):
        matrix = np.array([[1.0, flat], [3.0, flat], [-1.0, flat], [-3.0, flat]])
        result = probability_of_backtest_overfitting(matrix, n_partitions=4)
        assert result.logits == pytest.approx([math.log(2)] * 6) and result.pbo == 0.0
    # every strategy flat: the first is taken, all tie lowest: ω = 1/2, λ = 0
    result = probability_of_backtest_overfitting(np.zeros((8, 3)), n_partitions=4)
    assert result.logits == (0.0,) * 6 and result.pbo == 1.0


def test_pbo_in_sample_tie_goes_to_the_first_strategy():
    # One row per block. A and B are equal on blocks 0 and 1 and differ on 2 and 3 (A = [2, 5], B = [-1, 0]).
    # Combination 0 puts {0, 1} in-sample: a tie, so the first column wins; out of sample A beats B.
    a, b = [1.0, 3.0, 2.0, 5.0], [1.0, 3.0, -1.0, 0.0]
    # A first: A is chosen and ranks 2 of 2 out of sample: ω = 2/3, λ = ln 2.
    assert probability_of_backtest_overfitting(np.column_stack([a, b]), 4).logits[0] == pytest.approx(math.log(2))
    # B first: B is chosen and ranks 1 of 2: ω = 1/3, λ = ln(1/2).
    assert probability_of_backtest_overfitting(np.column_stack([b, a]), 4).logits[0] == pytest.approx(-math.log(2))


def test_pbo_piecewise_constant_strategy_is_undefined_where_it_is_flat():
    # P is 0.0313 for the first half of the rows and 0.0413 for the second: flat inside the halves {0, 1} and
    # {2, 3}, where sums of squares leave a rounding residue (about 2e-20) that would read as a Sharpe ratio of
    # 3e8. It must not win in-sample there: A is chosen, and P ranks lowest out of sample.
    rows = 3
    p = np.array([0.0313] * (2 * rows) + [0.0413] * (2 * rows))
    a = np.random.default_rng(7).normal(0.0, 0.01, size=4 * rows)
    matrix = np.column_stack([a, p])
    result = probability_of_backtest_overfitting(matrix, 4)
    assert result.logits == pytest.approx(_reference_pbo(matrix, 4)[1], abs=1e-12)
    # combinations (0, 1) and (2, 3): A chosen in-sample, P undefined out of sample -> A ranks 2 of 2
    assert result.logits[0] == pytest.approx(math.log(2)) and result.logits[5] == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "matrix, n_partitions, message",
    [
        (np.zeros((20, 1)), 4, "at least 2 columns"),
        (np.zeros((20, 2)), 3, "even integer"),
        (np.zeros((20, 2)), 0, "even integer"),
        (np.zeros((20, 2)), 4.0, "even integer"),
        (np.zeros((20, 2)), True, "even integer"),
        (np.zeros((20, 2)), 24, "at most 22 partitions"),
        (np.zeros((15, 2)), 16, "15 rows"),
        (np.zeros((3, 2)), 2, "too few"),
        (np.zeros(20), 4, "2-D"),
        (np.array([[0.1, np.nan]] * 8), 4, "NaN"),
        (np.array([[0.1, np.inf]] * 8), 4, "NaN"),
        ([["a", "b"]] * 8, 4, "numbers"),
    ],
)
def test_pbo_bad_arguments(matrix, n_partitions, message):
    with pytest.raises(CheckpointError, match=message):
        probability_of_backtest_overfitting(matrix, n_partitions=n_partitions)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: probabilistic_sharpe_ratio([0.1]), "at least 2"),
        (lambda: probabilistic_sharpe_ratio([]), "at least 2"),
        (lambda: probabilistic_sharpe_ratio([0.1, float("nan"), 0.2]), "NaN"),
        (lambda: probabilistic_sharpe_ratio([0.1, float("inf")]), "NaN"),
        (lambda: probabilistic_sharpe_ratio([[0.1, 0.2], [0.3, 0.4]]), "one-dimensional"),
        (lambda: probabilistic_sharpe_ratio(["x", "y"]), "numbers"),
        (lambda: probabilistic_sharpe_ratio([0.1, 0.2], benchmark=float("nan")), "benchmark"),
        (lambda: sharpe_ratio([0.1]), "at least 2"),
        (lambda: deflated_sharpe_ratio([0.1, 0.2], 0, 0.1), "n_trials"),
        (lambda: deflated_sharpe_ratio([0.1, 0.2], 2.0, 0.1), "n_trials"),
        (lambda: deflated_sharpe_ratio([0.1, 0.2], True, 0.1), "n_trials"),
        (lambda: deflated_sharpe_ratio([0.1, 0.2], 3, -0.1), "trials_variance"),
        (lambda: deflated_sharpe_ratio([0.1, 0.2], 3, float("nan")), "trials_variance"),
        (lambda: deflated_sharpe_ratio([0.1], 3, 0.1), "at least 2"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(CheckpointError, match=message):
        call()


# -- independent implementations ----------------------------------------------------------------------------


def _reference_psr(returns, benchmark):
    """The 2012 paper's formula with scipy.stats' moments."""
    r = np.asarray(returns, dtype=float)
    if np.ptp(r) <= 1e-12 * np.max(np.abs(r)):
        return None
    sr = r.mean() / r.std(ddof=1)
    skew = scipy.stats.skew(r, bias=True)
    kurt = scipy.stats.kurtosis(r, fisher=False, bias=True)
    denominator = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    if denominator <= 0:
        return None
    return float(scipy.stats.norm.cdf((sr - benchmark) * math.sqrt(len(r) - 1) / math.sqrt(denominator)))


def _reference_sr0(n, variance):
    if n == 1:
        return 0.0
    g = np.euler_gamma
    return math.sqrt(variance) * (
        (1 - g) * scipy.stats.norm.ppf(1 - 1 / n) + g * scipy.stats.norm.ppf(1 - 1 / (n * np.e))
    )


@settings(max_examples=300, deadline=None)
@given(returns=returns_lists, benchmark=st.floats(-0.5, 0.5))
def test_psr_matches_scipy_reference(returns, benchmark):
    expected = _reference_psr(returns, benchmark)
    got = probabilistic_sharpe_ratio(returns, benchmark)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert sharpe_ratio(returns) == pytest.approx(np.mean(returns) / np.std(returns, ddof=1), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(returns=returns_lists, n=st.integers(1, 10_000), variance=st.floats(0.0, 1.0))
def test_dsr_matches_scipy_reference(returns, n, variance):
    assert expected_max_sharpe_ratio(n, variance) == pytest.approx(_reference_sr0(n, variance), rel=1e-9, abs=1e-15)
    expected = _reference_psr(returns, _reference_sr0(n, variance))
    got = deflated_sharpe_ratio(returns, n, variance)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def _reference_pbo(matrix, n_partitions):
    """CSCV as the 2017 paper lists it, one combination at a time (with this module's tie rules)."""
    matrix = np.asarray(matrix, dtype=float)
    rows = len(matrix) // n_partitions
    blocks = [matrix[b * rows : (b + 1) * rows] for b in range(n_partitions)]

    def sharpe(part):
        if np.ptp(part) <= 1e-12 * np.max(np.abs(part)):
            return -math.inf  # undefined: lowest
        return part.mean() / part.std(ddof=1)

    logits = []
    for combo in itertools.combinations(range(n_partitions), n_partitions // 2):
        train = np.vstack([blocks[b] for b in combo])
        test = np.vstack([blocks[b] for b in range(n_partitions) if b not in combo])
        is_sr = [sharpe(train[:, j]) for j in range(matrix.shape[1])]
        oos_sr = [sharpe(test[:, j]) for j in range(matrix.shape[1])]
        best = max(range(len(is_sr)), key=lambda j: (is_sr[j], -j))  # first on ties
        rank = scipy.stats.rankdata(oos_sr, method="average")[best]
        omega = rank / (len(oos_sr) + 1)
        logits.append(math.log(omega / (1 - omega)))
    return sum(x <= 0 for x in logits) / len(logits), logits


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_partitions=st.sampled_from([2, 4, 6, 8]),
    n_strategies=st.integers(2, 6),
    extra_rows=st.integers(0, 30),
    flat=st.booleans(),
    duplicate=st.booleans(),
)
def test_pbo_matches_loop_reference(seed, n_partitions, n_strategies, extra_rows, flat, duplicate):
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.01, size=(n_partitions * 2 + extra_rows, n_strategies))
    matrix += rng.normal(0.0, 0.003, size=n_strategies)  # different drifts
    if flat:
        matrix[:, -1] = 0.0  # a strategy that never trades
    if duplicate:
        matrix[:, 0] = matrix[:, 1]  # exact ties in and out of sample
    pbo, logits = _reference_pbo(matrix, n_partitions)
    result = probability_of_backtest_overfitting(matrix, n_partitions)
    assert result.logits == pytest.approx(logits, abs=1e-9)
    assert result.pbo == pytest.approx(pbo)


# -- properties ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(returns=returns_lists, b1=st.floats(-1.0, 1.0), b2=st.floats(-1.0, 1.0))
def test_property_psr_probability_and_monotone_in_benchmark(returns, b1, b2):
    low, high = min(b1, b2), max(b1, b2)
    p_low, p_high = probabilistic_sharpe_ratio(returns, low), probabilistic_sharpe_ratio(returns, high)
    if p_low is None:
        assert p_high is None
        return
    assert 0.0 <= p_high <= p_low <= 1.0


@settings(max_examples=300, deadline=None)
@given(returns=returns_lists, n=st.integers(2, 10_000), variance=st.floats(1e-8, 1.0))
def test_property_dsr_below_psr(returns, n, variance):
    psr, dsr = probabilistic_sharpe_ratio(returns), deflated_sharpe_ratio(returns, n, variance)
    assume(psr is not None)
    assert dsr is not None and 0.0 <= dsr <= psr <= 1.0
    # more trials, more deflation
    more = deflated_sharpe_ratio(returns, n + 1, variance)
    assert more is not None and more <= dsr


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_partitions=st.sampled_from([2, 4, 8]), n_strategies=st.integers(2, 8))
def test_property_pbo_is_a_share(seed, n_partitions, n_strategies):
    matrix = np.random.default_rng(seed).normal(0.0, 0.01, size=(n_partitions * 5, n_strategies))
    result = probability_of_backtest_overfitting(matrix, n_partitions)
    assert 0.0 <= result.pbo <= 1.0
    assert result.n_combinations == len(result.logits) == math.comb(n_partitions, n_partitions // 2)
    assert all(math.isfinite(x) for x in result.logits)
    assert result.pbo == sum(x <= 0 for x in result.logits) / len(result.logits)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_partitions=st.sampled_from([2, 4, 8, 16]),
    n_strategies=st.integers(2, 8),
    winner=st.integers(0, 7),
)
def test_property_dominant_strategy_gives_pbo_zero(seed, n_partitions, n_strategies, winner):
    # Every strategy is the same noise plus its own drift; the winner's drift is the largest, so it has the
    # highest return in every period and the highest Sharpe ratio in every half.
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.01, size=(n_partitions * 4, 1))
    drifts = rng.uniform(-0.002, 0.002, size=n_strategies)
    winner %= n_strategies
    drifts[winner] = drifts.max() + 0.001
    result = probability_of_backtest_overfitting(noise + drifts, n_partitions)
    assert result.pbo == 0.0
    assert result.logits == pytest.approx([math.log(n_strategies)] * result.n_combinations)


def test_noise_strategies_give_pbo_near_one_half():
    # For exchangeable noise the in-sample winner's out-of-sample rank is uniform on 1..N, so with an even N
    # P(λ <= 0) = 1/2. Averaged over 60 fixed seeds (one matrix's PBO has a spread of about 0.2).
    values = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0.0, 0.01, (160, 6)), 8).pbo
        for seed in range(60)
    ]
    assert 0.4 < float(np.mean(values)) < 0.6
