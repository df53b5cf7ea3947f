"""analyze(), the two summary files and table() on a repository written by real SB3 training."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_iter_ckpt import CheckpointRepository, CommitError, IterationCheckpointCallback
from sb3_iter_ckpt.cli import main as cli_main

# Iteration k's evaluation; a placeholder (below_min_score) where mean_reward <= 0: 1, 2 and 5.
REWARD = [1.0, -1.0, -2.0, 3.0, 2.0, -0.5, 4.0, 0.5]
SHARPE = [0.2, -0.1, -0.3, 0.9, 0.4, 0.0, 1.1, 0.05]
DRAWDOWN = [0.30, 0.45, 0.50, 0.15, 0.25, 0.40, 0.05, 0.35]
MODELS, PLACEHOLDERS, BEST = [0, 3, 4, 6, 7], [1, 2, 5], 6


def _evaluator(model, env):
    k = model.num_timesteps // 32 - 1
    return {"mean_reward": REWARD[k], "validation": {"sharpe": SHARPE[k], "max_drawdown": DRAWDOWN[k]}}


def _train(repo: CheckpointRepository, n: int = len(REWARD)) -> IterationCheckpointCallback:
    model = PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=1, seed=0),
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    cb = IterationCheckpointCallback(
        repo, evaluator=_evaluator, eval_freq=32, iteration_timesteps=32, min_score=lambda m: m["mean_reward"] > 0
    )
    model.learn(32 * n, callback=cb)
    return cb


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "results" / "1003"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        _train(CheckpointRepository(root))
    return root


@pytest.fixture
def repo_dir(template, tmp_path):
    root = tmp_path / "results" / "1003"
    shutil.copytree(template, root)
    return root


def _disk_bytes(root: Path) -> int:
    seen, total = set(), 0
    for folder in (root, root / "checkpoints"):
        for p in folder.iterdir():
            if p.is_file():
                st = p.stat()
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total


# -- analyze ---------------------------------------------------------------------------------------


def test_analyze_report(repo_dir):
    repo = CheckpointRepository(repo_dir)
    report = repo.analyze()
    assert json.loads(json.dumps(report, allow_nan=False)) == report, "strict JSON, round-trips"
    assert report["counts"] == {
        "total": 8,
        "with_model": 5,
        "placeholders": 3,
        "pruned": 0,
        "by_reason": {"below_min_score": 3},
        "unverified": 0,
    }
    assert report["monitor"] == "mean_reward" and report["mode"] == "max"  # as the callback recorded
    assert [b["iteration"] for b in report["best"]] == [6, 3, 4, 0, 7]
    assert report["best"][0]["score"] == 4.0
    assert report["best"][0]["metrics"] == {
        "mean_reward": 4.0,
        "validation.sharpe": 1.1,
        "validation.max_drawdown": 0.05,
    }
    # statistics of every numeric metric, nested ones by dotted key, placeholders' evaluations included
    assert set(report["stats"]) == {"mean_reward", "validation.sharpe", "validation.max_drawdown"}
    for key, values in (("mean_reward", REWARD), ("validation.sharpe", SHARPE), ("validation.max_drawdown", DRAWDOWN)):
        s = report["stats"][key]
        assert s["count"] == 8 and s["min"] == min(values) and s["max"] == max(values)
        assert s["mean"] == pytest.approx(np.mean(values)) and s["std"] == pytest.approx(np.std(values, ddof=1))
        assert s["median"] == pytest.approx(np.median(values))
        assert (s["first_iteration"], s["last_iteration"]) == (0, 7)
    slope = np.polyfit(np.arange(8), REWARD, 1)[0]
    assert report["trend"]["slope"] == pytest.approx(slope) and report["trend"]["n"] == 8
    assert -1 <= report["trend"]["spearman"] <= 1
    assert report["longest_placeholder_run"] == {"length": 2, "start": 1, "end": 2}
    assert report["size_on_disk_bytes"] == _disk_bytes(repo_dir), "hard-linked best_model.zip counted once"
    assert report["iterations"] == list(range(8))


def test_analyze_other_monitor_min_mode_top_k(repo_dir):
    report = CheckpointRepository(repo_dir).analyze("validation.max_drawdown", "min", top_k=2)
    assert [b["iteration"] for b in report["best"]] == [6, 3]
    assert list(report["stats"])[0] == "validation.max_drawdown"


def test_analysis_stays_complete_after_pruning(repo_dir):
    repo = CheckpointRepository(repo_dir)
    before = repo.analyze()
    repo.prune(keep_last_n=1)  # removes 0 3 4; keeps 6 (best) 7 (latest)
    after = repo.analyze()
    assert after["counts"]["pruned"] == 3 and after["counts"]["with_model"] == 2
    assert after["counts"]["placeholders"] == 3 and after["counts"]["total"] == 8
    assert after["stats"] == before["stats"] and after["trend"] == before["trend"]
    assert after["longest_placeholder_run"] == before["longest_placeholder_run"]
    assert after["size_on_disk_bytes"] < before["size_on_disk_bytes"]


# -- checkpoint_summary.json -------------------------------------------------------------------------


def test_write_summary(repo_dir):
    repo = CheckpointRepository(repo_dir)
    path = repo_dir / "checkpoint_summary.json"
    created = json.loads(path.read_text())["metadata"]["created_at"]  # written by the callback
    summary = repo.write_summary()
    assert json.loads(path.read_text()) == summary
    assert summary["schema_version"] == 1
    meta = summary["metadata"]
    assert meta["created_at"] == created, "created_at is preserved across rewrites"
    assert meta["updated_at"] >= created
    assert {"sb3_iter_ckpt", "stable_baselines3", "torch", "gymnasium", "numpy", "python"} <= set(meta["versions"])
    expected = repo.analyze()
    for report in (summary["analysis"], expected):
        report.pop("size_on_disk_bytes")
    assert summary["analysis"] == expected
    again = repo.write_summary()
    assert again["metadata"]["created_at"] == created and again["metadata"]["updated_at"] >= meta["updated_at"]


def test_write_summary_is_atomic(repo_dir, monkeypatch):
    repo = CheckpointRepository(repo_dir)
    path = repo_dir / "checkpoint_summary.json"
    old = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # a disk failure cannot be made real
    with pytest.raises(CommitError, match="I/O error"):  # the package's error, as for every write
        repo.write_summary()
    monkeypatch.undo()
    assert path.read_bytes() == old, "the previous summary is intact"
    assert not [p.name for p in repo_dir.iterdir() if ".tmp" in p.name], "no temporary left behind"


def test_write_summary_on_a_fresh_folder_creates_it(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"fake-bytes")
    summary = repo.write_summary()
    assert summary["metadata"]["created_at"] == summary["metadata"]["updated_at"]
    assert (repo_root / "checkpoint_summary.json").is_file()


# -- training_summary.json and the callback's refresh at each boundary ------------------------------------


def test_training_summary_contents(template):
    repo = CheckpointRepository(template)
    summary = json.loads((template / "training_summary.json").read_text())  # as the callback left it
    assert summary["total_checkpoints"] == 5 and summary["placeholders"] == 3
    assert summary["checkpoints_dir"] == "checkpoints" and (template / summary["checkpoints_dir"]).is_dir()
    assert summary["iterations"] == list(range(8))
    best = summary["best"]
    assert best["iteration"] == BEST and best["metrics"] == repo.get(BEST).metrics and best["score"] == 4.0
    assert best["model_file"] == "checkpoints/model_iter_6.zip" and best["best_model_file"] == "best_model.zip"
    assert best["sha256"] == repo.get(BEST).sha256
    # like the analysis: every record with a finite value, the below-min-score placeholder at 2 included
    assert summary["performance_range"] == {"min": -2.0, "min_iteration": 2, "max": 4.0, "max_iteration": 6}
    from sb3_iter_ckpt.stats.analysis import performance_range

    assert summary["performance_range"] == performance_range(repo.list(), "mean_reward")
    assert summary["monitor"] == "mean_reward" and summary["mode"] == "max"


def test_callback_refreshes_both_summaries_at_each_boundary(repo_root, monkeypatch):
    repo = CheckpointRepository(repo_root)
    seen: list[tuple[list[int], list[int], int | None]] = []
    real_commit = repo.commit

    def commit(iteration, **kwargs):
        if iteration > 0:  # what the previous boundary left on disk
            training = json.loads((repo_root / "training_summary.json").read_text())
            checkpoint = json.loads((repo_root / "checkpoint_summary.json").read_text())
            best = training["best"]["iteration"] if training["best"] else None
            seen.append((training["iterations"], checkpoint["analysis"]["iterations"], best))
        return real_commit(iteration, **kwargs)

    monkeypatch.setattr(repo, "commit", commit)
    _train(repo, n=4)
    assert seen == [([0], [0], 0), ([0, 1], [0, 1], 0), ([0, 1, 2], [0, 1, 2], 0)]
    final = json.loads((repo_root / "training_summary.json").read_text())
    assert final["iterations"] == [0, 1, 2, 3] and final["best"]["iteration"] == 3


# -- table --------------------------------------------------------------------------------------------


def test_table_dataframe(template):
    pd = pytest.importorskip("pandas")
    df = CheckpointRepository(template).table()
    assert isinstance(df, pd.DataFrame)
    assert list(df.index) == list(range(8))
    assert {"has_model", "reason", "mean_reward", "validation.sharpe", "validation.max_drawdown"} <= set(df.columns)
    assert list(df["mean_reward"]) == REWARD and list(df["validation.sharpe"]) == SHARPE
    assert [i for i in df.index if not df.loc[i, "has_model"]] == PLACEHOLDERS


def test_table_without_pandas_is_a_list_of_dicts(template, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # "import pandas" now raises ImportError
    rows = CheckpointRepository(template).table()
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    assert [r["iteration"] for r in rows] == list(range(8))
    assert [r["mean_reward"] for r in rows] == REWARD
    assert [r["validation.max_drawdown"] for r in rows] == DRAWDOWN
    assert len({tuple(r) for r in rows}) == 1, "every row has the same columns"
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows


# -- command line -------------------------------------------------------------------------------------


def test_cli_analyze(template, capsys):
    assert cli_main(["analyze", str(template)]) == 0
    out = capsys.readouterr().out
    assert "8 iterations: 5 with a model, 3 placeholders" in out and "validation.sharpe" in out
    assert cli_main(["analyze", str(template), "--json", "--monitor", "validation.sharpe"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["best"][0]["iteration"] == 6 and report["monitor"] == "validation.sharpe"


def test_training_summary_from_a_fresh_repository_object_names_best_model(repo_dir):
    # e.g. `sb3-iter-ckpt summary` in a new process: best_model.zip was linked by the training process
    summary = CheckpointRepository(repo_dir).write_training_summary()
    assert summary["best"]["best_model_file"] == "best_model.zip"
    (repo_dir / "best_model.zip").unlink()
    (repo_dir / "best_model.zip").write_bytes(b"something else")
    assert CheckpointRepository(repo_dir).training_summary()["best"]["best_model_file"] is None
