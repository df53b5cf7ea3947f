"""The walk-forward runner end to end: real PPO on the built-in trading env, tiny budgets."""

from __future__ import annotations

import pytest

from sb3_iter_ckpt import CheckpointRepository, ConfigMismatchError
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import RUN_FILE, run_walk_forward


def test_every_window_committed_with_window_bounds_and_trading_metrics(sequential_run):
    repo_root, result = sequential_run
    repo = CheckpointRepository(repo_root)
    assert result.trained == [0, 1, 2, 3] and result.skipped == []
    assert repo.iterations() == [0, 1, 2, 3]
    for ck in repo.list():
        meta = ck.record["metadata"]
        w = meta["window"]
        assert w["iteration"] == ck.iteration
        assert w["train_stop"] <= w["val_start"] and w["val_start_time"] is not None
        assert meta["seed"] == 7 + ck.iteration
        # the default: estimated from the business days' dates, and said so
        assert meta["periods_per_year"] == pytest.approx(260.7, abs=0.1)
        assert meta["periods_per_year_source"] == "estimated"
        assert set(ck.metrics) >= {"validation", "train", "combined"}
        assert {"sharpe", "max_drawdown", "total_return"} <= set(ck.metrics["validation"])
        assert ck.metrics["validation"]["n_periods"] == 59  # 60 validation prices -> 59 returns
        assert ck.record["selection"]["monitor"] == "validation.sharpe"
    assert (repo_root / RUN_FILE).is_file()
    assert repo.verify() == []


def test_resume_skips_completed_and_refuses_another_configuration(prices, repo_root, make_runner, tiny_algo):
    first = make_runner(prices, repo_root).run(max_iterations=2)
    assert first.trained == [0, 1]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (repo_root / "checkpoints").iterdir()}
    second = make_runner(prices, repo_root).run()
    assert second.skipped == [0, 1] and second.trained == [2, 3]
    for name, mtime in mtimes.items():
        assert (repo_root / "checkpoints" / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    with pytest.raises(ConfigMismatchError, match="seed"):
        make_runner(prices, repo_root, seed=8).run()
    with pytest.raises(ConfigMismatchError, match="data_sha256"):
        make_runner(synthetic_prices(420, seed=4), repo_root).run()
    with pytest.raises(ConfigMismatchError, match="algo_kwargs"):
        make_runner(prices, repo_root, algo_kwargs=dict(tiny_algo, n_epochs=2)).run()


def test_foreign_repository_is_refused(prices, repo_root, make_ppo, make_runner):
    from sb3_iter_ckpt import IterationCheckpointCallback

    make_ppo().learn(64, callback=IterationCheckpointCallback(str(repo_root), eval_freq=32))
    with pytest.raises(ConfigMismatchError, match="not written by this walk-forward"):
        make_runner(prices, repo_root).run()


def test_same_seeds_give_the_same_records(prices, tmp_path, tiny_algo):
    a, b = (
        run_walk_forward(
            prices,
            WalkForwardSplitter(150, 60),
            tmp_path / name,
            128,
            algo_kwargs=tiny_algo,
            eval_freq=64,
            progress=False,
            max_iterations=2,
            executor="sequential",
        )
        for name in ("a", "b")
    )
    assert [c.metrics for c in a.checkpoints] == [c.metrics for c in b.checkpoints]
    assert [c.timesteps for c in a.checkpoints] == [c.timesteps for c in b.checkpoints]


def test_warm_start_records_lineage(warm_run):
    _, result = warm_run
    assert result.trained == [0, 1, 2]
    lineage = [c.record["metadata"]["lineage"]["warm_start_from"] for c in result.checkpoints]
    models = [c.iteration for c in result.checkpoints if c.has_model]
    assert lineage[0] is None
    for i, parent in enumerate(lineage[1:], start=1):
        # the parent is the latest earlier iteration that has a model
        expected = max((m for m in models if m < i), default=None)
        assert parent == expected


def test_anchored_windows_and_dqn(prices, repo_root, make_runner):
    splitter = WalkForwardSplitter(train_size=200, val_size=100, mode="anchored")
    result = make_runner(
        prices,
        repo_root,
        splitter=splitter,
        algo="dqn",
        algo_kwargs=dict(learning_starts=32, buffer_size=500, policy_kwargs=dict(net_arch=[16])),
    ).run()
    starts = [c.record["metadata"]["window"]["train_start"] for c in result.checkpoints]
    assert starts == [0, 0]
    assert all(c.record["algorithm"].endswith("DQN") for c in result.checkpoints)


def test_bad_arguments(prices, repo_root, make_runner):
    from sb3_iter_ckpt import CheckpointError

    with pytest.raises(CheckpointError):
        make_runner(prices, repo_root, total_timesteps=0)
    with pytest.raises(CheckpointError, match="unknown algorithm"):
        make_runner(prices, repo_root, algo="nope").run()
    with pytest.raises(CheckpointError, match="no window"):
        make_runner(prices[:100], repo_root)
