"""Data beyond one column (issue 22 item 3): a DataFrame of OHLCV and indicator columns, the traded price one of
them, the user's env reading the features; the fingerprint covers the whole table; a bad table refused at once.

Real PPO at tiny budgets. Resume is checked with a ``max_iterations`` stop and a rerun (not a killed process).
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium import spaces

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.data import DataError, data_fingerprint, equal_weight_index, synthetic_prices
from sb3_iter_ckpt.envs import StepReader
from sb3_iter_ckpt.errors import CheckpointError, ConfigMismatchError, RecordError
from sb3_iter_ckpt.forward import ForwardResult
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import WalkForwardRunner

HISTORY = 3
FEATURES = ("close", "volume", "rsi", "sma_gap")


def ohlcv_table(n: int = 330) -> pd.DataFrame:
    close = synthetic_prices(n, seed=3)
    frame = pd.DataFrame(
        {
            "open": close.shift(1).fillna(close.iloc[0]),
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": np.linspace(1e5, 2e5, n),
            "rsi": np.linspace(30.0, 70.0, n),
            "sma_gap": np.sin(np.arange(n) / 7.0),
        },
        index=close.index,
    )
    frame["benchmark"] = close * (1.0 + 0.001 * np.arange(n)) / close.iloc[0] * 50.0
    return frame


class FeatureEnv(gym.Env):
    """A user's env on a table slice: observes the last rows of four feature columns, flat or long on ``close``."""

    seen: list[tuple[str, ...]] = []

    def __init__(self, table: pd.DataFrame):
        assert isinstance(table, pd.DataFrame), type(table)
        FeatureEnv.seen.append(tuple(table.columns))
        self.features = table[list(FEATURES)].to_numpy(dtype=np.float64)
        self.features = (self.features - self.features.mean(0)) / (self.features.std(0) + 1e-9)
        self.price = table["close"].to_numpy(dtype=np.float64)
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(HISTORY * len(FEATURES) + 1,), dtype=np.float32)

    def _obs(self):
        rows = self.features[self.t - HISTORY + 1 : self.t + 1].reshape(-1)
        return np.concatenate((rows, [self.position])).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.position = HISTORY, 0.0
        return self._obs(), {"return": 0.0, "position": 0.0}

    def step(self, action):
        self.position = float(int(np.asarray(action).reshape(-1)[0]))
        ret = self.position * (self.price[self.t + 1] / self.price[self.t] - 1.0)
        self.t += 1
        done = self.t >= len(self.price) - 1
        return self._obs(), ret, done, False, {"return": ret, "position": self.position}


def feature_env(table, seed):
    return FeatureEnv(table)


def _runner(table, root, **kw):
    settings = dict(
        total_timesteps=64,
        algo_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        make_env=feature_env,
        env_history=HISTORY,
        seed=1,
        progress=False,
        executor="sequential",  # FeatureEnv.seen records what this process's envs were given
    )
    settings.update(kw)
    return WalkForwardRunner(table, WalkForwardSplitter(120, 50, test_size=50), root, **settings)


def test_table_run_resumes_and_refuses_a_changed_feature(tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "logs"))
    table, root = ohlcv_table(), tmp_path / "exp"
    FeatureEnv.seen.clear()
    first = _runner(table, root).run(max_iterations=1)  # a run stopped after its first window
    assert first.trained == [0]
    assert FeatureEnv.seen and all(cols == tuple(table.columns) for cols in FeatureEnv.seen)

    again = _runner(table, root).run()  # the rerun resumes: window 0 is skipped, the rest trained
    assert again.skipped == [0] and again.trained == [1, 2]
    repo = CheckpointRepository(root)
    forward = repo.forward(1)
    dates = table.index
    assert forward.dates[0] == dates[forward.rows[0]].isoformat()
    close = table["close"].to_numpy()
    expected = close[list(forward.rows)] / close[[r - 1 for r in forward.rows]] - 1.0
    assert np.allclose(forward.asset_returns, expected)  # buy-and-hold: the traded price column
    assert again.forward is not None

    changed = table.copy()
    changed.iloc[200, changed.columns.get_loc("rsi")] += 1.0  # one feature value, the prices untouched
    with pytest.raises(ConfigMismatchError, match="data_sha256"):
        _runner(changed, root).run()


def test_benchmark_column_gives_buy_and_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "logs"))
    table = ohlcv_table()
    runner = _runner(table, tmp_path / "exp", benchmark_column="benchmark", make_env=None, env_history=None)
    result = runner.run(max_iterations=1)
    forward = CheckpointRepository(tmp_path / "exp").forward(0)
    bench = table["benchmark"].to_numpy()
    expected = bench[list(forward.rows)] / bench[[r - 1 for r in forward.rows]] - 1.0
    assert np.allclose(forward.asset_returns, expected)
    assert result.trained == [0]
    assert runner.config()["benchmark_column"] == "benchmark"


def test_several_price_columns_hold_their_equal_weight_portfolio_as_buy_and_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "logs"))
    table = ohlcv_table()
    runner = _runner(table, tmp_path / "exp", price_column=["close", "benchmark"])
    runner.run()
    assert CheckpointRepository(tmp_path / "exp").verify() == []  # forward_returns.csv agrees with the files
    assert runner.config()["price_column"] == ["close", "benchmark"]
    forward = CheckpointRepository(tmp_path / "exp").forward(0)
    prices = table[["close", "benchmark"]].to_numpy()
    rows = list(forward.rows)
    by_asset = prices[rows] / prices[[r - 1 for r in rows]] - 1.0
    assert np.allclose(forward.asset_returns, by_asset.mean(axis=1), rtol=0, atol=1e-12)  # 1/N, every period
    assert forward.dates == tuple(table.index[r].isoformat() for r in rows)
    # the index itself: from 1.0, each period the mean of the columns' returns
    index = equal_weight_index(table, ["close", "benchmark"])
    assert index.iloc[0] == 1.0 and index.index.equals(table.index)
    assert np.allclose(index.pct_change().iloc[1:], (prices[1:] / prices[:-1] - 1.0).mean(axis=1), atol=1e-12)


class WeightsEnv(FeatureEnv):
    """FeatureEnv reporting its portfolio's weight per asset: all of it in close when long, nothing otherwise."""

    def step(self, action):
        obs, reward, done, truncated, info = super().step(action)
        return obs, reward, done, truncated, {**info, "weights": {"close": self.position, "benchmark": 0.0}}


def weights_env(table, seed):
    return WeightsEnv(table)


def test_a_portfolio_envs_weights_per_asset_are_in_its_forward_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "logs"))
    reader = StepReader(weights_key="weights")
    runner = _runner(ohlcv_table(), tmp_path / "exp", make_env=weights_env, step_reader=reader)
    runner.run()
    repo = CheckpointRepository(tmp_path / "exp")
    assert repo.verify() == [] and runner.config()["step_reader"]["weights_key"] == "weights"
    for forward in repo.forwards():
        assert forward.version == 4 and forward.assets == ("close", "benchmark")
        assert forward.weights == tuple((p, 0.0) for p in forward.positions)  # the env's own, every period
        raw = json.loads(forward.to_json_bytes())
        assert raw["weights"] == [[p, 0.0] for p in forward.positions] and raw["assets"] == ["close", "benchmark"]
        assert ForwardResult.from_json_bytes(forward.to_json_bytes()) == forward
    assert "weights_key" not in RunOptions(100, step_reader=StepReader()).to_config().get("step_reader", {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(weights=r["weights"][:-1]), "weights must be"),
        (lambda r: r.update(assets=["close", "close"]), "distinct"),
        (lambda r: r.update(assets=[]), "distinct"),
        (lambda r: r["weights"][0].append(1.0), "weights must be"),
        (lambda r: r["weights"][0].__setitem__(0, True), "weights must be"),
        (lambda r: r.update(asset_returns=None), "asset_returns must be"),
        (lambda r: r.pop("assets"), "expected the fields"),
    ],
)
def test_a_forward_file_with_bad_weights_is_refused(change, message):
    rows = (11, 12)
    result = ForwardResult(
        0, None, 10, 12, False, rows, None, (0.01, -0.02), (1.0, 0.5), (1.01, 1.01 * 0.98), {}, 252.0,
        (0.01, -0.01), None, ("a", "b"), ((1.0, 0.0), (0.5, 0.5)),
    )  # fmt: skip
    raw = json.loads(result.to_json_bytes())
    assert raw["version"] == 4 and ForwardResult.from_json_bytes(result.to_json_bytes()) == result
    change(raw)
    with pytest.raises(RecordError, match=message):
        ForwardResult.from_json_bytes(json.dumps(raw).encode())


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"price_column": ["close", "benchmark"], "make_env": None}, CheckpointError, "built-in env trades one"),
        ({"price_column": ["close"]}, CheckpointError, "two or more distinct"),
        ({"price_column": ["close", "close"]}, CheckpointError, "two or more distinct"),
        ({"price_column": ["close", "spy"]}, DataError, "spy"),
        ({"price_column": ["close", "rsi"], "benchmark_column": "nope"}, DataError, "nope"),
    ],
)
def test_bad_price_columns_refused_at_construction(tmp_path, kw, error, message):
    settings = {"make_env": feature_env, "env_history": HISTORY, **kw}
    with pytest.raises(error, match=message) as info:
        WalkForwardRunner(ohlcv_table(), WalkForwardSplitter(120, 50), tmp_path / "x", 64, progress=False, **settings)
    assert "\n" not in str(info.value)


def test_table_fingerprint_covers_every_column_and_keeps_the_series_one():
    table = ohlcv_table(40)
    fp = data_fingerprint(table)
    assert len(fp) == 64 and fp != data_fingerprint(table["close"])
    changed = table.copy()
    changed.iloc[5, changed.columns.get_loc("volume")] += 1.0
    assert data_fingerprint(changed) != fp
    assert data_fingerprint(table.rename(columns={"rsi": "rsi14"})) != fp
    assert data_fingerprint(table[list(reversed(table.columns))]) != fp
    assert data_fingerprint(table.copy()) == fp
    # a Series hashes as before (the frozen fingerprints of tests/walkforward/test_options.py rely on it)
    series = table["close"]
    assert data_fingerprint(series) == data_fingerprint(pd.Series(series.to_numpy(), index=series.index))


def test_series_config_is_unchanged(tmp_path):
    prices = synthetic_prices(330, seed=3)
    config = WalkForwardRunner(prices, WalkForwardSplitter(120, 50), tmp_path / "x", 64, progress=False).config()
    assert "price_column" not in config and "benchmark_column" not in config and "make_env_kwargs" not in config


@pytest.mark.parametrize(
    ("change", "kw", "message"),
    [
        (lambda t: t.drop(columns="close"), {}, "price_column"),
        (lambda t: t, {"price_column": "adj_close"}, "adj_close"),
        (lambda t: t, {"benchmark_column": "spy"}, "spy"),
        (lambda t: t.assign(close="x"), {}, "numeric"),
        (lambda t: t.assign(close=-1.0), {}, "positive"),
        (lambda t: t.iloc[:0], {}, "no rows"),
        (lambda t: t.iloc[::-1], {}, "sorted"),
        (lambda t: pd.concat([t.iloc[:5], t.iloc[4:]]), {}, "duplicate"),
        (lambda t: t.rename(columns={"open": "Close"}), {}, "several columns"),
    ],
)
def test_bad_table_refused_at_construction(tmp_path, change, kw, message):
    table = change(ohlcv_table(330))
    with pytest.raises(DataError, match=message) as info:
        WalkForwardRunner(table, WalkForwardSplitter(120, 50), tmp_path / "x", 64, progress=False, **kw)
    assert "\n" not in str(info.value)


def test_column_names_need_a_table(tmp_path):
    with pytest.raises(CheckpointError, match="DataFrame"):
        WalkForwardRunner(synthetic_prices(330), WalkForwardSplitter(120, 50), tmp_path / "x", 64, price_column="close")


def test_a_date_column_becomes_the_index(tmp_path):
    table = ohlcv_table(330)
    flat = table.reset_index()  # a "date" column and a RangeIndex
    runner = WalkForwardRunner(flat, WalkForwardSplitter(120, 50), tmp_path / "x", 64, progress=False)
    assert runner.windows[0].to_dict().get("train_start_time", "").startswith(str(table.index[0].date()))
    assert runner.config()["data_sha256"] == data_fingerprint(table)
