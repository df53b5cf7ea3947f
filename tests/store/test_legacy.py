"""Migration: a results folder written the way the seed's script does it, and the seed's five functions."""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointNotFound, CheckpointRepository, IntegrityError, IterationCheckpointCallback, legacy

PLACEHOLDER, ORPHAN = 2, 5  # no_model_iter_2.json; model_iter_5.zip has no metrics file
MODELS = [0, 1, 3, 4, 5]
VALIDATION = {0: 0.1, 1: 0.7, 3: 0.4, 4: 0.2}


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _write_seed_folder(root: Path) -> dict[int, torch.Tensor]:
    """What the seed's script leaves: plain model.save, free-form metrics JSON, no hashes, no schema."""
    ck = root / "checkpoints"
    ck.mkdir(parents=True)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    params: dict[int, torch.Tensor] = {}
    for i in range(6):
        model.learn(32, reset_num_timesteps=False)
        if i == PLACEHOLDER:
            (ck / f"no_model_iter_{i}.json").write_text(json.dumps({"iteration": i, "reason": "No model met criteria"}))
            continue
        model.save(str(ck / f"model_iter_{i}.zip"))
        params[i] = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()
        if i == ORPHAN:
            continue
        metrics = {
            "validation_performance": VALIDATION[i],
            "combined_performance": VALIDATION[i] * 2,
            "iteration": i,
            "timestamp": f"2024-03-0{i + 1}T12:00:00",
        }
        (ck / f"metrics_iter_{i}.json").write_text(json.dumps(metrics, indent=2))
    model.save(str(root / "best_model_no_early_stopping.zip"))
    return params


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed") / "results" / "1003"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        params = _write_seed_folder(root)
    return root, params


@pytest.fixture
def results_dir(seed_folder, tmp_path):
    root = tmp_path / "results" / "1003"
    shutil.copytree(seed_folder[0], root)
    return root


@pytest.fixture
def params(seed_folder):
    return seed_folder[1]


def _same_params(model, expected: torch.Tensor) -> bool:
    return torch.equal(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach(), expected)


# -- the seed's functions: names, arguments, delegation ------------------------------------------------


def test_seed_function_names_and_arguments():
    expected = {
        "list_checkpoints": ["results_dir"],
        "analyze_checkpoint_performance": ["results_dir"],
        "cleanup_checkpoints": ["results_dir", "keep_every_n", "keep_last_n"],
        "load_checkpoint_model": ["results_dir", "iteration"],
        "create_checkpoint_summary": ["results_dir"],
    }
    for name, args in expected.items():
        params = list(inspect.signature(getattr(legacy, name)).parameters)
        assert params[: len(args)] == args, name


def test_functions_delegate_to_the_repository(results_dir, mocker):
    spies = {n: mocker.spy(CheckpointRepository, n) for n in ("list", "analyze", "prune", "load", "write_summary")}
    legacy.list_checkpoints(results_dir)
    legacy.analyze_checkpoint_performance(results_dir)
    legacy.cleanup_checkpoints(results_dir, keep_every_n=2, keep_last_n=1)
    legacy.load_checkpoint_model(results_dir, 1)
    legacy.create_checkpoint_summary(results_dir)
    assert all(s.call_count >= 1 for s in spies.values())
    kwargs = spies["prune"].call_args.kwargs
    assert kwargs["keep_every_n"] == 2 and kwargs["keep_last_n"] == 1


# -- an unadopted seed folder: opens, lists, loads, never pruned ------------------------------------------


def test_seed_folder_opens_and_lists_unverified(results_dir):
    repo = CheckpointRepository(results_dir)
    cks = repo.list()
    assert [c.iteration for c in cks] == [0, 1, 2, 3, 4, 5]
    assert all(c.verified is False and c.legacy for c in cks)
    assert [c.iteration for c in cks if c.has_model] == MODELS
    ph = repo.get(PLACEHOLDER)
    assert not ph.has_model and ph.reason == "No model met criteria"
    assert repo.get(3).metrics["validation_performance"] == 0.4
    assert repo.get(3).metrics["combined_performance"] == 0.8
    assert (
        repo.get(ORPHAN).metrics == {} and repo.get(ORPHAN).model_path == results_dir / "checkpoints/model_iter_5.zip"
    )
    assert repo.best("validation_performance").iteration == 1
    assert repo.verify() == []

    listed = legacy.list_checkpoints(results_dir)
    assert [d["iteration"] for d in listed] == [0, 1, 2, 3, 4, 5]
    assert all(d["verified"] is False for d in listed)
    for d in listed:
        if d["has_model"]:
            assert Path(d["model_path"]).is_file() and d["size_mb"] > 0
        else:
            assert d["model_path"] is None and d["reason"] == "No model met criteria"


def test_seed_models_load(results_dir, params):
    for i in MODELS:
        model = legacy.load_checkpoint_model(results_dir, i)
        assert isinstance(model, PPO) and _same_params(model, params[i]), i
    with pytest.raises(CheckpointNotFound, match="placeholder"):
        legacy.load_checkpoint_model(results_dir, PLACEHOLDER)


def test_seed_analysis_and_summary(results_dir):
    report = legacy.analyze_checkpoint_performance(results_dir)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    counts = report["counts"]
    assert counts["total"] == 6 and counts["with_model"] == 5 and counts["placeholders"] == 1
    assert counts["unverified"] == 6 and counts["by_reason"] == {"No model met criteria": 1}
    assert report["stats"]["validation_performance"]["count"] == 4
    assert report["stats"]["combined_performance"]["max"] == pytest.approx(1.4)
    assert "iteration" not in report["stats"]
    by_validation = legacy.analyze_checkpoint_performance(results_dir, monitor="validation_performance")
    assert [b["iteration"] for b in by_validation["best"]] == [1, 3, 4, 0]
    # with no recorded selection rule, the seed's validation_performance is the default monitor
    assert legacy.analyze_checkpoint_performance(results_dir)["best"] == by_validation["best"]

    summary = legacy.create_checkpoint_summary(results_dir)
    assert json.loads((results_dir / "checkpoint_summary.json").read_text()) == summary
    assert summary["analysis"]["counts"]["total"] == 6


def test_prune_never_deletes_unadopted_seed_files(results_dir):
    before = _files(results_dir)
    result = legacy.cleanup_checkpoints(results_dir, keep_every_n=100, keep_last_n=1)
    assert result["remove"] == [] and result["removed_files"] == []
    # iteration 1 is the best by the seed's validation_performance; 3 is protected as unverified
    assert result["protected"]["1"] == "best" and result["protected"]["3"] == "unverified"
    after = _files(results_dir)
    assert {k: after.get(k) for k in before} == before, "every seed file is there, unchanged"


# -- adopt ------------------------------------------------------------------------------------------------


def test_adopt_records_hashes_then_verifies(results_dir, params, mocker):
    repo = CheckpointRepository(results_dir)
    assert repo.adopt() == [0, 1, 2, 3, 4, 5]
    assert repo.adopt() == [], "adopting twice changes nothing"
    ck_dir = results_dir / "checkpoints"
    for ck in repo.list():
        assert ck.verified and not ck.legacy
        if ck.has_model:
            data = (ck_dir / f"model_iter_{ck.iteration}.zip").read_bytes()
            assert ck.sha256 == hashlib.sha256(data).hexdigest() and ck.size_bytes == len(data)
    assert repo.get(3).metrics["validation_performance"] == 0.4, "metrics kept"
    assert repo.get(3).record["legacy_record"]["timestamp"] == "2024-03-04T12:00:00"
    assert repo.get(ORPHAN).has_model and (ck_dir / "metrics_iter_5.json").is_file()
    assert repo.get(PLACEHOLDER).reason == "No model met criteria"
    assert repo.verify() == []
    assert _same_params(repo.load(ORPHAN), params[ORPHAN])

    path = ck_dir / "model_iter_3.zip"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    spy = mocker.spy(PPO, "load")
    with pytest.raises(IntegrityError, match="sha256"):
        legacy.load_checkpoint_model(results_dir, 3)
    assert spy.call_count == 0, "refused before unpickling"
    problems = repo.verify()
    assert [p.iteration for p in problems] == [3]


def test_after_adopt_cleanup_prunes_by_the_rules(results_dir):
    CheckpointRepository(results_dir).adopt()
    seed_best = (results_dir / "best_model_no_early_stopping.zip").read_bytes()
    result = legacy.cleanup_checkpoints(results_dir, keep_every_n=2, keep_last_n=1)
    # every 2nd: 0 4; last: 5 (also latest); best by the seed's validation_performance: 1; 2 is a placeholder
    assert result["remove"] == [3]
    assert result["protected"]["1"] == "best"
    ck = results_dir / "checkpoints"
    assert sorted(p.name for p in ck.glob("model_iter_*.zip")) == [
        "model_iter_0.zip",
        "model_iter_1.zip",
        "model_iter_4.zip",
        "model_iter_5.zip",
    ]
    assert (ck / "metrics_iter_3.json").is_file()
    assert (results_dir / "best_model_no_early_stopping.zip").read_bytes() == seed_best
    assert CheckpointRepository(results_dir).verify() == []


# -- training goes on in a seed folder -----------------------------------------------------------------------


def test_new_training_continues_after_the_seed_iterations(results_dir, make_ppo):
    seed_files = _files(results_dir / "checkpoints")
    repo = CheckpointRepository(results_dir)
    assert repo.next_iteration() == 6, "the orphan model_iter_5.zip is never overwritten"
    cb = IterationCheckpointCallback(repo, eval_freq=32, evaluator=lambda m, e: {"mean_reward": 1.0})
    for _ in range(3):
        make_ppo().learn(32, callback=cb)
    assert repo.iterations() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert [c.verified for c in repo.list()] == [False] * 6 + [True] * 3
    result = repo.prune(keep_last_n=1)
    assert list(result.plan.remove) == [6, 7], "only our own files are candidates"
    after = _files(results_dir / "checkpoints")
    assert {k: after.get(k) for k in seed_files} == seed_files, "no seed file touched"
    assert isinstance(repo.load(8), PPO) and isinstance(repo.load(ORPHAN), PPO)
