"""Shared fixtures: real SB3 training at tiny budgets, everything inside pytest's tmp folders, and the
reports' browser (a real headless Chromium)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # tiny nets: threads cost more than they give on 2 cores


#: Flags of the headless browser: CI runs as root (no sandbox), and nothing may reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    """A real headless Chromium, Debian's ``chromium`` package driven by Playwright (never a downloaded one).

    Missing browser or Playwright: a skip whose reason says how to install it; with ``CI=true`` a failure.
    """
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = None
    if path is None:
        missing = "no chromium browser: apt-get update && apt-get install -y chromium"
    elif sync_playwright is None:
        missing = 'no playwright: pip install -e ".[tests]" (the browser is the system\'s chromium)'
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def _sb3_logdir(tmp_path_factory, monkeypatch):
    # SB3 creates /tmp/SB3-<date> at every learn() unless SB3_LOGDIR is set.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
    monkeypatch.delenv("SB3_ITER_CKPT_SIGNING_KEY", raising=False)


@pytest.fixture
def repo_root(tmp_path):
    return tmp_path / "results" / "1003"


@pytest.fixture
def make_ppo():
    """A tiny PPO on CartPole: ``make_ppo(n_envs=1, seed=0, **kw)``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    def factory(n_envs: int = 1, seed: int = 0, env_id: str = "CartPole-v1", **kwargs):
        env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
        params = dict(n_steps=32, batch_size=32, n_epochs=1, seed=seed, device="cpu")
        params.update(kwargs)
        return PPO("MlpPolicy", env, **params)

    return factory


@pytest.fixture(scope="session")
def two_iterations(tmp_path_factory):
    """Build a repository with iterations 0 and 1, trained for real: ``two_iterations(name, vecnormalize=True,
    metrics=None)`` -> its root.

    A tiny PPO on CartPole, evaluated every 32 steps (scores 1.0, 2.0, ... plus ``metrics``), committed by the
    callback every 64 steps: each iteration keeps its model (and VecNormalize statistics) and metrics record.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback

    def build(name: str, *, vecnormalize: bool = True, metrics: dict | None = None):
        root = tmp_path_factory.mktemp(name) / "repo"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
            env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
            env = VecNormalize(env, norm_reward=False) if vecnormalize else env
            model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
            scores = iter(range(1, 100))
            cb = IterationCheckpointCallback(
                CheckpointRepository(root),
                evaluator=lambda m, e: {"mean_reward": float(next(scores)), **(metrics or {})},
                eval_freq=32,
                iteration_timesteps=64,
            )
            model.learn(128, callback=cb)
            env.close()
        assert CheckpointRepository(root).iterations() == [0, 1]
        return root

    return build


@pytest.fixture(scope="session")
def prices():
    """Seeded synthetic prices: four walk-forward windows of 150 training and 60 validation days."""
    from sb3_iter_ckpt.data import synthetic_prices

    return synthetic_prices(420, seed=3)


@pytest.fixture(scope="session")
def tiny_algo():
    return dict(n_steps=64, batch_size=64, n_epochs=1)


@pytest.fixture(scope="session")
def make_runner(tiny_algo):
    """A walk-forward runner at tiny budgets: ``make_runner(prices, root, **overrides)`` (a pure factory: session
    fixtures that train a run once use it too). Sequential unless a test gives its ``executor``: a process pool
    starts its workers in seconds, far longer than these windows train."""
    from sb3_iter_ckpt.splitter import WalkForwardSplitter
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    def factory(prices, root, **kw):
        params = dict(total_timesteps=128, algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7)
        params.setdefault("executor", "sequential")
        params.update(kw)
        total = params.pop("total_timesteps")
        splitter = params.pop("splitter", WalkForwardSplitter(train_size=150, val_size=60))
        return WalkForwardRunner(prices, splitter, root, total, **params)

    return factory


@pytest.fixture(scope="session")
def candidates_run(tmp_path_factory, prices, tiny_algo):
    """One real run with two candidates on three windows with test parts, trained once per session (it trains six
    windows): ``(root, runner, result)``. PPO ``ppo-s0`` (seed 7) and A2C ``a2c-s1`` (seed 8); these seeds choose
    each candidate at least once. Tests read it; a test that changes it works on a copy (``shutil.copytree``).
    A test module that resumes a copy with its own runner states the same candidates: a difference is a
    ``ConfigMismatchError``, not a silently different run."""
    from sb3_iter_ckpt.common.candidates import Candidate
    from sb3_iter_ckpt.splitter import WalkForwardSplitter
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    candidates = (
        Candidate("ppo-s0", "ppo", 7, dict(n_steps=64, batch_size=64, n_epochs=1)),
        Candidate("a2c-s1", "a2c", 8, dict(n_steps=16)),
    )
    root = tmp_path_factory.mktemp("candidates-run") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        runner = WalkForwardRunner(
            prices, WalkForwardSplitter(150, 60, test_size=60), root, 128,
            algo_kwargs=tiny_algo, eval_freq=32, progress=False, seed=7, candidates=candidates,
            executor="sequential",
        )  # fmt: skip
        result = runner.run()
    return root, runner, result


def pytest_report_header(config):
    return f"SB3_LOGDIR isolated per test; torch threads={torch.get_num_threads()}; cpus={os.cpu_count()}"
