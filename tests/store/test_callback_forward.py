"""The callback's own loop: ``IterationCheckpointCallback(..., test_env=)`` trades each kept model on the test env
and commits its forward result, so ``forward``, the stitched curve, the DSR, the command and the page work for a
hand-written loop; ``sb3_iter_ckpt.trade_forward`` does the same after the fact.

A real PPO trains on the built-in env in three hand-written iterations; each trades the next 100 days.
"""

from __future__ import annotations

import shutil

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback, trade_forward
from sb3_iter_ckpt.cli import main
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs.trading import TradingEnv
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward import ForwardEnv, trade_env
from sb3_iter_ckpt.report import collect_report, render_report
from sb3_iter_ckpt.stats.overfitting import deflated_sharpe_ratio

PRICES = synthetic_prices(520, seed=3)
HISTORY = 10  # TradingEnv's default window_size


class Dated(gym.Wrapper):
    """The built-in env on a dated segment, each step's info with its ``date`` (and, optionally, no ``price``)."""

    def __init__(self, segment: pd.Series, prices: bool = True, dates: bool = True) -> None:
        super().__init__(TradingEnv(segment.to_numpy()))
        self.index, self.prices, self.dates = segment.index, prices, dates

    def _info(self, info):
        info = dict(info)
        if self.dates:
            info["date"] = self.index[self.env.unwrapped._t]
        if not self.prices:
            info.pop("price")
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(info)


def _test_part(k: int) -> pd.Series:
    """Iteration k trades rows 200 + 100k .. 300 + 100k (the decisions), with the history before them."""
    start = 200 + 100 * k
    return PRICES.iloc[start - HISTORY : start + 101]


def _constant(model, env):
    return {"mean_reward": 1.0}


def _loop(root, make_test_env, n=3, **kw):
    from stable_baselines3 import PPO

    repo = CheckpointRepository(root)
    for k in range(n):  # a hand-written walk-forward loop
        train = PRICES.iloc[100 * k : 100 * k + 200].to_numpy()
        model = PPO("MlpPolicy", TradingEnv(train), n_steps=64, batch_size=64, n_epochs=1, seed=k, device="cpu")
        cb = IterationCheckpointCallback(repo, evaluator=_constant, eval_freq=64, test_env=make_test_env(k), **kw)
        model.learn(128, callback=cb)
    return repo


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop") / "exp"
    return _loop(root, lambda k: Dated(_test_part(k)))


def test_each_iteration_of_a_hand_written_loop_has_a_forward_result(dated):
    results = dated.forwards()
    assert [r.iteration for r in results] == [0, 1, 2]
    assert all(not r.placeholder and len(r.returns) == 100 for r in results)
    # test parts numbered in iteration order, dated by the env's info["date"]
    assert [(r.test_start, r.test_stop) for r in results] == [(0, 100), (100, 200), (200, 300)]
    assert results[1].dates[0] == PRICES.index[301].isoformat()
    # buy-and-hold from the env's info["price"]
    values = PRICES.to_numpy()
    np.testing.assert_allclose(results[0].asset_returns, values[201:301] / values[200:300] - 1.0)


def test_forward_status_gives_the_stitched_curve_its_dsr_and_buy_and_hold(dated):
    report, why = dated.forward_status()
    assert why is None and report is not None
    assert report["n_trials"] == 1  # one model per iteration, nothing else compared
    assert report["deflated_sharpe"] is not None or report["deflated_sharpe_reason"]
    assert report["stitched"]["metrics"]["n_periods"] == 300
    assert report["stitched"]["first_date"] == PRICES.index[201].isoformat()
    values = PRICES.to_numpy()
    assert report["baseline"]["buy_and_hold"]["total_return"] == pytest.approx(values[500] / values[200] - 1.0)
    assert dated.verify() == []  # forward_returns.csv agrees with the signed forward files


def test_the_forward_command_and_the_report_page_work_for_a_callback_folder(dated, capsys):
    assert main(["forward", str(dated.root)]) == 0
    out = capsys.readouterr().out
    assert "buy-and-hold: sharpe=" in out and "deflated Sharpe ratio" in out
    page = render_report(collect_report(dated))
    assert 'id="forward-metrics"' in page and "Stitched forward equity curve" in page
    assert "not available: no forward" not in page


def test_a_hand_written_loop_names_the_trials_it_compared(dated, capsys):
    """DSR over one trial unless the user names the trials compared (and their Sharpe ratios' variance):
    the API, the ``forward`` command and the report page deflate by what was named."""
    curve = np.asarray(dated.stitched_forward().returns)
    one, _ = dated.forward_status()
    named, why = dated.forward_status(10, 0.01)
    assert why is None and named["trials_named"] and not one["trials_named"]
    assert one["deflated_sharpe"] == pytest.approx(deflated_sharpe_ratio(curve, 1, 0.0), abs=1e-15)
    assert named["deflated_sharpe"] == pytest.approx(deflated_sharpe_ratio(curve, 10, 0.01), abs=1e-15)
    assert (named["n_trials"], named["trials_variance"]) == (10, 0.01)
    assert named["deflated_sharpe"] < one["deflated_sharpe"]  # ten tries: a haircut
    # naming more trials without their variance: not a DSR of one trial passed off as ten, but the reason
    unknown, _ = dated.forward_status(10)
    assert unknown["deflated_sharpe"] is None and "trials_variance" in unknown["deflated_sharpe_reason"]
    assert "n_trials must be an integer >= 1" in dated.forward_status(0)[1]
    assert "trials_variance must be a finite number" in dated.forward_status(10, -1.0)[1]

    assert main(["forward", str(dated.root), "--trials", "10", "--trials-variance", "0.01"]) == 0
    assert f"{named['deflated_sharpe']:.4f}" in capsys.readouterr().out.replace("(10 trial(s), as named)", "")
    assert main(["forward", str(dated.root), "--trials-variance", "0.01"]) == 2
    assert "--trials" in capsys.readouterr().err
    page = render_report(collect_report(dated, n_trials=10, trials_variance=0.01))
    assert f"<strong>{named['deflated_sharpe']:.3f}</strong> with 10 trial(s) (the trials compared, as named)" in page


def test_trading_after_the_fact_gives_the_callbacks_result(dated, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dated.root, copy)
    for f in (copy / "checkpoints").glob("forward_iter_*.json"):
        f.unlink()
    (copy / "forward_returns.csv").unlink()
    repo = CheckpointRepository(copy)
    assert "trade_forward" in repo.forward_status()[1]
    for k in range(3):
        assert trade_forward(repo, k, Dated(_test_part(k))) == dated.forward(k)
    assert trade_forward(repo, 2, Dated(_test_part(2))) == dated.forward(2)  # again: the same, a no-op
    assert (copy / "forward_returns.csv").read_bytes() == (dated.root / "forward_returns.csv").read_bytes()
    (copy / "checkpoints" / "forward_iter_0.json").unlink()
    with pytest.raises(CheckpointError, match=r"iterations \[1, 2\] already have forward results"):
        trade_forward(repo, 0, Dated(_test_part(0)))  # its test part comes before theirs


def test_without_dates_and_prices_the_curve_is_in_iteration_order_and_buy_and_hold_not_available(tmp_path, capsys):
    repo = _loop(tmp_path / "exp", lambda k: Dated(_test_part(k), prices=False, dates=False), n=2)
    results = repo.forwards()
    assert [r.dates for r in results] == [None, None]
    assert all(r.asset_returns is None and "no prices" in r.asset_returns_reason for r in results)
    report, why = repo.forward_status()
    assert why is None and report["baseline"]["buy_and_hold"] is None
    assert "gave no prices" in report["baseline"]["buy_and_hold_reason"]
    assert report["baseline"]["flat"]["total_return"] == 0.0
    assert main(["forward", str(repo.root)]) == 0
    assert "buy-and-hold: not available: iteration 0: the test env gave no prices" in capsys.readouterr().out
    page = render_report(collect_report(repo))
    assert "buy-and-hold: not available" in page and 'id="forward-metrics"' in page
    assert repo.verify() == []


def test_prices_and_dates_given_with_the_test_env(tmp_path):
    class Long:
        def predict(self, obs, deterministic=True):
            return np.array([2]), None  # long every step

    part = _test_part(0)
    env = Dated(part, prices=False, dates=False)
    given = ForwardEnv(env, dates=part.index[HISTORY + 1 :], prices=part.to_numpy()[HISTORY:])
    result = given.trade(Long(), iteration=0, first_row=7)
    assert result.rows[0] == 8 and result.test_stop == 107 and result.dates[-1] == part.index[-1].isoformat()
    values = part.to_numpy()[HISTORY:]
    np.testing.assert_allclose(result.asset_returns, values[1:] / values[:-1] - 1.0)
    with pytest.raises(CheckpointError, match="102 prices given for 100 steps"):
        trade_env(Long(), env, iteration=0, prices=part.to_numpy()[HISTORY - 1 :])
    with pytest.raises(CheckpointError, match="not increasing"):
        trade_env(Long(), env, iteration=0, dates=part.index[HISTORY + 1 :][::-1])


def test_a_callback_folder_without_a_test_env_names_the_call(tmp_path):
    from stable_baselines3 import PPO

    repo = CheckpointRepository(tmp_path / "exp")
    model = PPO("MlpPolicy", TradingEnv(PRICES.iloc[:200].to_numpy()), n_steps=64, batch_size=64, n_epochs=1)
    model.learn(64, callback=IterationCheckpointCallback(repo, evaluator=_constant, eval_freq=64))
    report, why = repo.forward_status()
    assert report is None
    assert (
        "IterationCheckpointCallback(repo, test_env=env)" in why
        and "sb3_iter_ckpt.trade_forward(repo, iteration, env)" in why
    )
