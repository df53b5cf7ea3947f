"""Tests of sb3_iter_ckpt.envs.trading: the TradingEnv mechanics and the evaluate_trading evaluator."""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import pytest

from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import TradingEnv, evaluate_trading
from sb3_iter_ckpt.stats.metrics import METRIC_KEYS, trading_metrics

SHORT, FLAT, LONG = 0, 1, 2
PRICES = [100.0, 101.0, 102.0, 100.0, 105.0, 105.0]  # window_size=2 -> 3 steps: t = 2 -> 3 -> 4 -> 5


@pytest.fixture(autouse=True)
def _sb3_logdir(tmp_path, monkeypatch):
    # SB3 would otherwise create /tmp/SB3-<date> folders.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path))


def _run(env: TradingEnv, actions) -> tuple[list[float], list[dict], bool, bool]:
    env.reset(seed=0)
    rewards, infos = [], []
    terminated = truncated = False
    for a in actions:
        _, reward, terminated, truncated, info = env.step(a)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return rewards, infos, terminated, truncated


def test_check_env_passes():
    from stable_baselines3.common.env_checker import check_env

    check_env(TradingEnv(synthetic_prices(60, seed=0)), warn=True)
    check_env(TradingEnv(synthetic_prices(60, seed=0), allow_short=False, max_steps=5, random_start=True))


def test_spaces_and_observation():
    env = TradingEnv(PRICES, window_size=2)
    assert env.action_space.n == 3
    assert env.observation_space.shape == (3,) and env.observation_space.dtype == np.float32
    obs, info = env.reset()
    assert obs.shape == (3,) and obs.dtype == np.float32
    # the last two log returns up to price index 2, then the (flat) position
    np.testing.assert_allclose(obs, [math.log(101 / 100), math.log(102 / 101), 0.0], rtol=1e-6)
    assert info == {"equity": 1.0, "position": 0.0, "return": 0.0, "price": 102.0, "step": 0}
    obs, *_ = env.step(SHORT)
    np.testing.assert_allclose(obs, [math.log(102 / 101), math.log(100 / 102), -1.0], rtol=1e-6)
    assert env.observation_space.contains(obs)


def test_always_long_earns_the_price_returns_minus_one_entry_cost():
    cost = 0.001
    env = TradingEnv(PRICES, window_size=2, transaction_cost=cost)
    rewards, infos, terminated, truncated = _run(env, [LONG] * 10)
    simple = [100 / 102 - 1, 105 / 100 - 1, 105 / 105 - 1]
    expected = [simple[0] - cost, simple[1], simple[2]]
    assert rewards == pytest.approx(expected)
    assert len(rewards) == 3 and terminated and not truncated
    assert [i["return"] for i in infos] == pytest.approx(expected)
    assert [i["position"] for i in infos] == [1.0, 1.0, 1.0]
    assert [i["price"] for i in infos] == [100.0, 105.0, 105.0]
    assert [i["step"] for i in infos] == [1, 2, 3]
    assert infos[-1]["equity"] == pytest.approx(np.prod(1 + np.array(expected)))
    np.testing.assert_allclose(env.episode_returns(), expected)
    np.testing.assert_allclose(env.episode_positions(), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(env.episode_equity(), np.cumprod([1.0, *(1 + np.array(expected))]))
    # metrics of the whole episode ride on the last info
    assert "episode_metrics" not in infos[0]
    metrics = infos[-1]["episode_metrics"]
    assert metrics == trading_metrics(expected, positions=[1, 1, 1], periods_per_year=252)
    assert metrics["n_trades"] == 1 and metrics["exposure"] == 1.0


def test_short_earns_the_negative_return():
    env = TradingEnv(PRICES, window_size=2, transaction_cost=0.0)
    rewards, *_ = _run(env, [SHORT] * 3)
    assert rewards == pytest.approx([-(100 / 102 - 1), -(105 / 100 - 1), 0.0])


def test_flat_policy_has_zero_returns_and_unit_equity():
    env = TradingEnv(synthetic_prices(40, seed=1), window_size=5)
    rewards, infos, terminated, _ = _run(env, [FLAT] * 100)
    assert terminated and len(rewards) == 40 - 1 - 5
    assert all(r == 0.0 for r in rewards)
    assert all(i["equity"] == 1.0 for i in infos)
    metrics = infos[-1]["episode_metrics"]
    assert metrics["exposure"] == 0.0 and metrics["n_trades"] == 0
    assert metrics["total_return"] == 0.0 and metrics["sharpe"] is None


def test_cost_charged_on_each_position_change():
    cost = 0.01
    env = TradingEnv([100.0] * 10, window_size=2, transaction_cost=cost)  # flat prices: only costs remain
    rewards, *_ = _run(env, [LONG, LONG, SHORT, FLAT, FLAT, LONG, SHORT])
    # changes: 0->1 (1), none, 1->-1 (2), -1->0 (1), none, 0->1 (1), 1->-1 (2)
    assert rewards == pytest.approx([-cost, 0.0, -2 * cost, -cost, 0.0, -cost, -2 * cost])


def test_long_only_action_space():
    env = TradingEnv(PRICES, window_size=2, allow_short=False, transaction_cost=0.0)
    assert env.action_space.n == 2
    rewards, infos, *_ = _run(env, [1, 0, 1])
    assert [i["position"] for i in infos] == [1.0, 0.0, 1.0]
    assert rewards == pytest.approx([100 / 102 - 1, 0.0, 0.0])
    env.reset()
    with pytest.raises(ValueError, match="invalid action"):
        env.step(2)


def test_action_formats():
    env = TradingEnv(PRICES, window_size=2)
    env.reset()
    for action in (np.int64(LONG), np.array(LONG), np.array([LONG])):
        env.reset()
        _, _, _, _, info = env.step(action)
        assert info["position"] == 1.0
    for bad in (3, -1, np.array([0, 1]), 1.5):
        env.reset()
        with pytest.raises(ValueError):
            env.step(bad)


def test_step_after_end_raises():
    env = TradingEnv(PRICES, window_size=2)
    _run(env, [FLAT] * 3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(FLAT)


def test_max_steps_truncates():
    env = TradingEnv(synthetic_prices(100, seed=2), max_steps=7)
    rewards, infos, terminated, truncated = _run(env, [LONG] * 100)
    assert len(rewards) == 7 and truncated and not terminated
    assert infos[-1]["episode_metrics"]["n_periods"] == 7


def test_random_start_is_seeded():
    prices = synthetic_prices(300, seed=3)

    def starts(seed):
        env = TradingEnv(prices, random_start=True, max_steps=20)
        first = env.reset(seed=seed)[1]["price"]
        return [first] + [env.reset()[1]["price"] for _ in range(5)]

    assert starts(11) == starts(11)
    assert starts(11) != starts(12)
    assert len(set(starts(11))) > 1
    # every random start leaves room for a full max_steps episode
    env = TradingEnv(prices, random_start=True, max_steps=20)
    env.reset(seed=0)
    for _ in range(20):
        env.reset()
        assert 10 <= env._t <= 300 - 1 - 20


def test_periods_per_year_is_passed_to_metrics():
    env = TradingEnv(synthetic_prices(30, seed=0), periods_per_year=52)
    _, infos, *_ = _run(env, [LONG] * 100)
    assert infos[-1]["episode_metrics"]["periods_per_year"] == 52


def test_pandas_series_and_lists_agree():
    prices = synthetic_prices(50, seed=4)
    a, *_ = _run(TradingEnv(prices), [LONG, SHORT] * 30)
    b, *_ = _run(TradingEnv(list(prices.to_numpy())), [LONG, SHORT] * 30)
    assert a == b


@pytest.mark.parametrize(
    "prices, kwargs, match",
    [
        ([100.0] * 11, {"window_size": 10}, "at least 12"),
        ([100.0, 0.0, 100.0, 100.0], {"window_size": 1}, "strictly positive"),
        ([100.0, float("nan"), 100.0, 100.0], {"window_size": 1}, "finite"),
        ([[1.0, 2.0], [3.0, 4.0]], {"window_size": 1}, "one-dimensional"),
        ([100.0] * 20, {"window_size": 0}, "window_size"),
        ([100.0] * 20, {"transaction_cost": -0.1}, "transaction_cost"),
        ([100.0] * 20, {"max_steps": 0}, "max_steps"),
        ([100.0] * 20, {"periods_per_year": 0}, "periods_per_year"),
    ],
)
def test_bad_arguments(prices, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TradingEnv(prices, **kwargs)


# -- evaluate_trading ------------------------------------------------------------------------------------------


class _ConstantModel:
    """A stand-in for an SB3 model that always picks the same action."""

    def __init__(self, action: int) -> None:
        self.action = action

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(observation)
        shape = obs.shape[:-1]  # () for one observation, (n_envs,) for a VecEnv batch
        return np.full(shape, self.action), None


def test_evaluate_trading_matches_the_env_episode():
    prices = synthetic_prices(80, seed=5)
    result = evaluate_trading(_ConstantModel(LONG), TradingEnv(prices, periods_per_year=12))
    env = TradingEnv(prices)
    rewards, infos, *_ = _run(env, [LONG] * 1000)
    expected = trading_metrics(rewards, positions=[1.0] * len(rewards), periods_per_year=12)
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(expected[key]), key
    assert result["periods_per_year"] == 12
    assert result["mean_reward"] == pytest.approx(sum(rewards))
    assert result["n_episodes"] == 1


def test_evaluate_trading_wrappers_vecenv_and_partial():
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    prices = synthetic_prices(60, seed=6)
    direct = evaluate_trading(_ConstantModel(SHORT), TradingEnv(prices), n_episodes=2)
    wrapped = evaluate_trading(_ConstantModel(SHORT), Monitor(TradingEnv(prices)), n_episodes=2)
    vec = functools.partial(evaluate_trading, n_episodes=2)(
        _ConstantModel(SHORT), DummyVecEnv([lambda: Monitor(TradingEnv(prices))])
    )
    for result in (direct, wrapped, vec):
        assert result["n_episodes"] == 2
        assert result["n_periods"] == 2 * (60 - 1 - 10)
        assert result["n_trades"] == 2  # one entry per episode; each episode starts flat
        assert result["exposure"] == 1.0
    for key in ("total_return", "sharpe", "max_drawdown", "mean_reward"):
        assert wrapped[key] == pytest.approx(direct[key])
        assert vec[key] == pytest.approx(direct[key], rel=1e-5)  # VecEnv rewards are float32


def test_evaluate_trading_errors():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    prices = synthetic_prices(40, seed=0)
    with pytest.raises(ValueError, match="one environment"):
        evaluate_trading(_ConstantModel(FLAT), DummyVecEnv([lambda: TradingEnv(prices)] * 2))
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate_trading(_ConstantModel(FLAT), TradingEnv(prices), n_episodes=0)
    with pytest.raises(ValueError, match="periods_per_year"):
        evaluate_trading(_ConstantModel(0), gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="TradingEnv"):
        evaluate_trading(_ConstantModel(0), gym.make("CartPole-v1"), periods_per_year=252)


def test_tiny_ppo_trains_and_evaluates():
    from stable_baselines3 import PPO

    prices = synthetic_prices(200, seed=0)
    model = PPO("MlpPolicy", TradingEnv(prices), n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    evaluator = functools.partial(evaluate_trading, n_episodes=1)
    result = evaluator(model, TradingEnv(prices))
    assert set(result) == set(METRIC_KEYS) | {"mean_reward", "n_episodes"}
    for key, value in result.items():
        assert value is None or (isinstance(value, (int, float)) and math.isfinite(value)), key
    assert result["n_periods"] == 200 - 1 - 10
    assert 0.0 <= result["max_drawdown"] <= 1.0


def test_a_short_through_a_reverse_split_ruins_the_account_at_zero_and_it_stays_there():
    # An unadjusted 1:3 reverse split: the price triples in one bar. Short, the account would end at -1.
    prices = [10.0, 10.0, 10.0, 30.0, 31.0, 29.0, 30.0]
    env = TradingEnv(prices, window_size=1, transaction_cost=0.0)
    env.reset()
    infos = [env.step(0)[4] for _ in range(len(prices) - 2)]  # short every step
    returns = env.episode_returns()
    assert returns[1] == -1.0  # the loss is the whole account, not more
    assert [i["equity"] for i in infos] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert env.episode_returns()[2:].tolist() == [0.0, 0.0, 0.0]  # ruined: nothing earned or lost after
    assert env.episode_positions()[2:].tolist() == [0.0, 0.0, 0.0]  # and nothing held
    assert len(returns) == len(prices) - 2  # the episode goes on: one step per row
    m = infos[-1]["episode_metrics"]
    assert m["total_return"] == -1.0 and m["max_drawdown"] == 1.0
    assert all(v is None or math.isfinite(v) for v in m.values() if isinstance(v, float))


# -- continuous actions: the target position ---------------------------------------------------------------------


def _episode(env: TradingEnv, actions) -> tuple[list[float], list[dict], np.ndarray, np.ndarray]:
    rewards, infos, *_ = _run(env, actions)
    return rewards, infos, env.episode_returns(), env.episode_positions()


def _assert_infos_agree(a: list[dict], b: list[dict]) -> None:
    assert [sorted(i) for i in a] == [sorted(i) for i in b]
    for x, y in zip(a, b, strict=True):
        for key in ("equity", "position", "return", "price", "step"):
            assert x[key] == pytest.approx(y[key], abs=1e-12, rel=0)
    mx, my = a[-1]["episode_metrics"], b[-1]["episode_metrics"]
    assert mx.keys() == my.keys()
    for key, value in mx.items():
        assert value == pytest.approx(my[key], abs=1e-12, rel=0) if value is not None else my[key] is None


@pytest.mark.parametrize("allow_short", [True, False])
def test_continuous_actions_minus_one_zero_one_agree_with_the_discrete_mode_to_1e_12(allow_short):
    prices = synthetic_prices(120, seed=5)
    positions = [-1.0, 0.0, 1.0] if allow_short else [0.0, 1.0]
    indices = np.random.default_rng(0).integers(0, len(positions), size=200)
    kw = dict(window_size=4, transaction_cost=0.002, allow_short=allow_short)
    discrete = _episode(TradingEnv(prices, **kw), indices)
    # as SB3's predict gives a Box action: float32, shape (1,)
    actions = [np.array([positions[i]], dtype=np.float32) for i in indices]
    continuous = _episode(TradingEnv(prices, action_mode="continuous", **kw), actions)
    assert len(discrete[2]) == len(continuous[2]) == len(prices) - 5
    np.testing.assert_allclose(continuous[2], discrete[2], rtol=0, atol=1e-12)  # returns
    np.testing.assert_allclose(continuous[3], discrete[3], rtol=0, atol=1e-12)  # positions
    np.testing.assert_allclose(continuous[0], discrete[0], rtol=0, atol=1e-12)  # rewards
    _assert_infos_agree(continuous[1], discrete[1])
    assert len(set(discrete[3])) == len(positions)  # every position was held


def test_a_continuous_position_pays_the_cost_on_its_change_and_earns_its_fraction():
    cost = 0.01
    env = TradingEnv(PRICES, window_size=2, transaction_cost=cost, action_mode="continuous")
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    rewards, infos, terminated, _ = _run(env, [0.5, np.array([-0.25]), np.float32(1.75)])
    simple = [100 / 102 - 1, 105 / 100 - 1, 105 / 105 - 1]
    # 0 -> 0.5 (0.5 traded), 0.5 -> -0.25 (0.75), -0.25 -> 1.75 clipped to 1 (1.25)
    assert rewards == pytest.approx([0.5 * simple[0] - 0.5 * cost, -0.25 * simple[1] - 0.75 * cost, -1.25 * cost])
    assert [i["position"] for i in infos] == [0.5, -0.25, 1.0] and terminated
    long_only = TradingEnv(PRICES, window_size=2, allow_short=False, action_mode="continuous")
    assert long_only.action_space == gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    _, infos, *_ = _run(long_only, [-0.5, 0.25])
    assert [i["position"] for i in infos] == [0.0, 0.25]  # no short position in long-only mode
    for bad in (float("nan"), np.array([np.inf]), np.array([0.1, 0.2]), "long", None):
        long_only.reset()
        with pytest.raises(ValueError, match="invalid action"):
            long_only.step(bad)
    with pytest.raises(ValueError, match="action_mode"):
        TradingEnv(PRICES, window_size=2, action_mode="box")


def test_check_env_passes_in_continuous_mode():
    from stable_baselines3.common.env_checker import check_env

    check_env(TradingEnv(synthetic_prices(60, seed=0), action_mode="continuous"), warn=True)
    long_only = TradingEnv(synthetic_prices(60, seed=0), allow_short=False, action_mode="continuous", max_steps=5)
    with pytest.warns(UserWarning, match="symmetric"):  # SB3's advice for Box(0, 1); SAC rescales its tanh to it
        check_env(long_only, warn=True)
