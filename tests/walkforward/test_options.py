"""``RunOptions``: one value for a run's settings; the fingerprint of every earlier configuration unchanged."""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle

import pytest

from sb3_iter_ckpt.common.options import CommitOptions, EvaluationOptions, RunOptions
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs.trading import TradingEnv
from sb3_iter_ckpt.errors import CheckpointError, ConfigMismatchError
from sb3_iter_ckpt.runner.algorithms import algorithm_class
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import WalkForwardRunner

PRICES = synthetic_prices(1500, seed=0)

#: Fingerprints computed with the runner as it was before ``RunOptions`` (its own 22 attributes): a
#: repository written by any of these configurations must still resume. Never update these values.
KNOWN = {
    "default": (
        dict(total_timesteps=1000),
        "85b50d12d3b28717bc3d4e2d11069796949efdfc2aea0e7fd51704a8c27e07dc",
    ),
    "every setting": (
        dict(
            total_timesteps=640,
            splitter=WalkForwardSplitter(300, 100, step=50, gap=5, mode="anchored"),
            algo="a2c",
            algo_kwargs={"n_steps": 32},
            env_kwargs={"window_size": 5, "transaction_cost": 0.001},
            seed=3,
            eval_freq=200,
            monitor="validation.sortino",
            mode="min",
            min_score=0.5,
            warm_start=True,
            periods_per_year=365,
        ),
        "3cb38bfe3617f6a7b3b39bb088d53132bb1c748417ff7f2461f614662dd9dcd8",
    ),
    "callables": (
        dict(
            total_timesteps=100,
            prices=list(PRICES.to_numpy()),
            min_score=math.isfinite,
            make_env=functools.partial(TradingEnv, window_size=4),
            make_model=algorithm_class,
        ),
        "3d49cc544c409f49c944c6b885891eb8bd5bda31d02f02c65e7a94f64183e693",
    ),
    "an int threshold, periods in env_kwargs": (  # 0 stays 0 (not 0.0) in the configuration
        dict(total_timesteps=1000, min_score=0, env_kwargs={"periods_per_year": 12}),
        "3e4bccaa1cfe881c9645d6b17fe1779c77707fa598a3d87fb557db082b6cc000",
    ),
}


def _runner(tmp_path, **kw):
    prices = kw.pop("prices", PRICES)
    splitter = kw.pop("splitter", WalkForwardSplitter(500, 125))
    return WalkForwardRunner(prices, splitter, tmp_path / "r", progress=False, **kw)


#: Every earlier version's default ``periods_per_year`` (the runner now estimates it from the dates).
EARLIER = {"periods_per_year": 252}


@pytest.mark.parametrize("name", list(KNOWN))
def test_the_fingerprint_of_earlier_configurations_is_unchanged(tmp_path, name):
    settings, fingerprint = KNOWN[name]
    assert _runner(tmp_path, **{**EARLIER, **settings}).fingerprint() == fingerprint


@pytest.mark.parametrize("name", [n for n, (kw, _) in KNOWN.items() if not {"periods_per_year", "prices"} & set(kw)])
def test_a_run_written_with_the_earlier_default_resumes_with_the_defaults(tmp_path, name):
    """The same keywords as before: the dates say about 261 periods a year, the earlier run recorded 252. The
    run resumes with 252 (its fingerprint, its records' annualization) instead of refusing."""
    settings, fingerprint = KNOWN[name]
    _runner(tmp_path, **{**EARLIER, **settings})._check_resume()  # what an earlier version wrote first
    runner = _runner(tmp_path, **settings)
    assert runner.options.periods_per_year == pytest.approx(260.84, abs=0.01)  # business days, estimated
    runner._check_resume()
    assert runner.options.periods_per_year == 252 and runner.fingerprint() == fingerprint
    assert runner.periods_per_year_source == "earlier default"
    # anything else changed still refuses, naming only what changed
    with pytest.raises(ConfigMismatchError, match=r"changed: seed\)"):
        _runner(tmp_path, **{**settings, "seed": 99})._check_resume()
    # a fresh repository gets the estimate
    fresh = _runner(tmp_path / "fresh", **settings)
    fresh._check_resume()
    assert fresh.options.periods_per_year == pytest.approx(260.84, abs=0.01)
    assert fresh.periods_per_year_source == "estimated"


def test_periods_per_year_is_estimated_by_default_and_252_is_said_to_be_assumed(tmp_path):
    assert RunOptions(100).periods_per_year is None
    dated = _runner(tmp_path / "dated", total_timesteps=100)
    assert dated.options.periods_per_year == pytest.approx(260.84, abs=0.01)
    assert dated.periods_per_year_source == "estimated" and "estimated from the prices' dates" in dated.annualization
    plain = _runner(tmp_path / "plain", total_timesteps=100, prices=PRICES.to_numpy())
    assert plain.options.periods_per_year == 252 and plain.periods_per_year_source == "assumed"
    assert plain.annualization.startswith("252 periods a year, assumed") and "no dates" in plain.annualization
    given = _runner(tmp_path / "given", total_timesteps=100, periods_per_year=252)
    assert given.periods_per_year_source == "given" and given.annualization == "252 periods a year, given"


def test_a_ready_options_object_gives_the_same_run_as_the_keywords(tmp_path):
    settings, fingerprint = KNOWN["every setting"]
    settings = dict(settings)
    splitter = settings.pop("splitter")
    runner = _runner(tmp_path, splitter=splitter, options=RunOptions(**settings))
    assert runner.fingerprint() == fingerprint
    # keywords given with options= replace its fields
    assert _runner(tmp_path, splitter=splitter, options=RunOptions(**settings), seed=4).options.seed == 4


def test_options_are_validated_once_where_they_are_built():
    with pytest.raises(CheckpointError, match="total_timesteps must be positive"):
        RunOptions(0)
    with pytest.raises(CheckpointError, match="eval_freq must be a positive number of timesteps"):
        RunOptions(100, eval_freq=-5)
    with pytest.raises(CheckpointError, match="mode must be 'max' or 'min'"):
        RunOptions(100, mode="up")
    with pytest.raises(CheckpointError, match="min_score must be a finite number"):
        RunOptions(100, min_score=float("nan"))
    with pytest.raises(CheckpointError, match="on_error must be 'warn' or 'raise'"):
        CommitOptions(on_error="ignore")
    with pytest.raises(CheckpointError, match="iteration_timesteps must be positive"):
        EvaluationOptions(iteration_timesteps=0)


def test_options_derive_defaults_and_the_selection_rule():
    opts = RunOptions(1000, monitor="validation.sortino", mode="min", min_score=1, env_kwargs={"window_size": 7})
    assert opts.eval_freq == 200 and opts.history == 7
    assert opts.selection == SelectionRule("validation.sortino", "min", 1.0)
    assert opts.trading_env_kwargs == {"periods_per_year": 252, "window_size": 7}
    # replace() runs the same checks and derivations again; env_kwargs keep only what was given
    later = dataclasses.replace(opts, periods_per_year=365, mode="max")
    assert later.trading_env_kwargs["periods_per_year"] == 365 and later.selection.mode == "max"


def test_options_travel_to_a_worker_unchanged():
    opts = RunOptions(100, algo_kwargs={"n_steps": 8}, min_score=math.isfinite, make_env=functools.partial(TradingEnv))
    back = pickle.loads(pickle.dumps(opts))
    assert back.to_config() == opts.to_config() and back.selection == opts.selection
    assert dataclasses.replace(back, make_env=None) == dataclasses.replace(
        opts, make_env=None
    )  # a partial: by identity


def test_the_callback_takes_a_ready_selection_rule_or_its_three_parts(tmp_path):
    from sb3_iter_ckpt import IterationCheckpointCallback

    rule = SelectionRule("validation.sharpe", "min", 0.5)
    assert IterationCheckpointCallback(tmp_path / "a", selection=rule).selection is rule
    parts = IterationCheckpointCallback(tmp_path / "b", monitor="validation.sharpe", mode="min", min_score=0.5)
    assert parts.selection == rule
    with pytest.raises(CheckpointError, match="either selection= or monitor="):
        IterationCheckpointCallback(tmp_path / "c", selection=rule, monitor="x")
    with pytest.raises(CheckpointError, match="on_error must be 'warn' or 'raise'"):
        IterationCheckpointCallback(tmp_path / "d", on_error="ignore")


@pytest.mark.parametrize(
    ("module", "named"),
    [
        ("sb3_iter_ckpt.runner.algorithms", "sb3_iter_ckpt.algorithms"),
        ("sb3_iter_ckpt.store.storage.local", "sb3_iter_ckpt.storage.local"),
        ("sb3_iter_ckpt.forward.trading", "sb3_iter_ckpt.forward"),
        ("sb3_iter_ckpt.envs.trading", "sb3_iter_ckpt.envs.trading"),
        ("sb3_iter_ckpt.walkforward", "sb3_iter_ckpt.walkforward"),
        ("mypkg.common.x", "mypkg.common.x"),
    ],
)
def test_a_package_callable_is_named_by_its_module_before_the_layout_change(module, named):
    from sb3_iter_ckpt.common.options import stable_module

    assert stable_module(module) == named
