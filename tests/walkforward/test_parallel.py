"""Parallel walk-forward on a local process pool: same records as sequential, resume, warm-started chains.

The pool of two ``spawn`` workers is the folder's (``pool`` in this folder's conftest: a worker start costs
seconds, torch and SB3 are imported once per worker). Ray has its own module, ``test_parallel_ray.py``.
"""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from sb3_iter_ckpt import CheckpointError, CheckpointRepository
from sb3_iter_ckpt.envs import TradingEnv
from sb3_iter_ckpt.runner.executors import ProcessExecutor, make_executor
from sb3_iter_ckpt.walkforward import run_many


def _records(root):
    """What must not depend on the executor: each iteration's metrics, selection, timesteps, metadata."""
    repo = CheckpointRepository(root)
    out = {}
    for ck in repo.list():
        rec = ck.record
        out[ck.iteration] = (ck.has_model, ck.metrics, ck.timesteps, rec["selection"], rec["metadata"], _weights(ck))
    return out


def _weights(ck):
    """The policy's parameters as saved (the zip itself differs: it stamps the save time)."""
    if not ck.has_model:
        return None
    with zipfile.ZipFile(ck.model_path) as z:
        return hashlib.sha256(z.read("policy.pth")).hexdigest()


def _best(root):
    repo = CheckpointRepository(root)
    best = repo.best()
    linked = hashlib.sha256((root / "best_model.zip").read_bytes()).hexdigest()
    assert linked == best.sha256, "best_model.zip is not the best iteration's model"
    return best.iteration


def test_pool_gives_the_sequential_records_and_a_resume_trains_only_missing_windows(
    prices, tmp_path, pool, make_runner, sequential_run
):
    import os

    seq_root, seq = sequential_run
    assert seq.trained == [0, 1, 2, 3]

    first = make_runner(prices, tmp_path / "par", executor=pool).run(max_iterations=2)
    assert first.trained == [0, 1]
    assert {o["pid"] for o in first.outcomes.values()}.isdisjoint({os.getpid()}), "windows ran in the driver"
    ckdir = tmp_path / "par" / "checkpoints"
    mtimes = {p.name: p.stat().st_mtime_ns for p in ckdir.iterdir()}

    again = make_runner(prices, tmp_path / "par", executor=pool).run()
    assert again.skipped == [0, 1] and again.trained == [2, 3]
    for name, mtime in mtimes.items():
        assert (ckdir / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"

    # same seeds, same records: metrics, chosen snapshot, metadata (fingerprint included), model bytes
    assert _records(tmp_path / "par") == _records(seq_root)
    assert _best(tmp_path / "par") == _best(seq_root) == seq.best.iteration
    assert CheckpointRepository(tmp_path / "par").verify() == []
    assert not [p.name for p in ckdir.iterdir() if ".tmp" in p.name], "leftover temporary files"


def test_warm_started_chains_run_in_order_within_and_in_parallel_across(prices, tmp_path, pool, make_runner, warm_run):
    seq_root, _ = warm_run
    chains = [make_runner(prices, tmp_path / f"chain{s}", warm_start=True, seed=s) for s in (7, 8)]
    results = run_many(chains, executor=pool, max_iterations=3, progress=False)
    for result in results:
        lineage = [c.record["metadata"]["lineage"]["warm_start_from"] for c in result.checkpoints]
        models = [c.iteration for c in result.checkpoints if c.has_model]
        assert result.trained == [0, 1, 2]
        assert lineage == [None] + [max((m for m in models if m < i), default=None) for i in (1, 2)]
    assert _records(tmp_path / "chain7") == _records(seq_root)  # seed 7 is the sequential chain
    assert _records(tmp_path / "chain8") != _records(seq_root)


def test_bad_parallel_configurations_are_refused_before_training(prices, tmp_path, pool, make_runner):
    with pytest.raises(CheckpointError, match="module-level functions"):
        make_runner(prices, tmp_path / "a", executor=pool, make_env=lambda seg, seed: TradingEnv(seg)).run()
    assert not (tmp_path / "a" / "checkpoints").exists() or not any((tmp_path / "a" / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(CheckpointError, match="needs executor"):
        make_executor("sequential", 2)
    with pytest.raises(CheckpointError, match="own repository"):
        run_many([make_runner(prices, tmp_path / "b"), make_runner(prices, tmp_path / "b", seed=1)], progress=False)
    with pytest.raises(CheckpointError, match="fork"):
        ProcessExecutor(2, mp_context="fork")


def test_cli_executor_options(tmp_path, capsys):
    from sb3_iter_ckpt import cli

    common = ["walk-forward", "--experiment-id", "x", "--results-dir", str(tmp_path), "--total-timesteps", "64"]
    args = cli.build_parser().parse_args([*common, "--executor", "ray", "--workers", "3", "--ray-address", "auto"])
    assert (args.executor, args.workers, args.ray_address) == ("ray", 3, "auto")
    assert cli.build_parser().parse_args(common).executor == "auto"
    assert cli.main([*common, "--executor", "sequential", "--workers", "2"]) == cli.EXIT_USAGE
    assert cli.main([*common, "--executor", "process", "--ray-address", "auto"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--workers needs --executor" in err and "--ray-address needs --executor ray" in err
    assert not (tmp_path / "x").exists()
