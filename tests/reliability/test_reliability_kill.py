"""Kill at any instant, and concurrent writers: real walk-forwards in separate processes.

The harness lives in ``tools/kill_harness.py`` (runnable on its own, see docs/reliability.md).
Workers are forked from one process that imported torch and SB3 once, so a trial costs well
under a second. ``SB3_ITER_CKPT_KILL_TRIALS`` raises the number of trials of the default test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository

_PATH = Path(__file__).resolve().parents[2] / "tools" / "kill_harness.py"
_spec = importlib.util.spec_from_file_location("kill_harness", _PATH)
harness = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("kill_harness", harness)  # dataclasses look their module up there
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    # SB3_LOGDIR is set per test by conftest; the workers need one from the start
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
    with harness.Zygote(stderr_path=tmp_path_factory.mktemp("zygote") / "workers.stderr") as z:
        yield z


@pytest.fixture(scope="module")
def walked(zygote, tmp_path_factory):
    """A worker's finished walk (seed 0, one round: iterations 0..7), made once; tests damage copies of it."""
    root = tmp_path_factory.mktemp("walked") / "repo"
    assert zygote.reap(zygote.fork({"task": "walk", "root": str(root), "seed": 0, "rounds": 1})).done is not None
    return root


def _report(capsys, line: str) -> None:
    with capsys.disabled():
        print("\n" + line)


def test_kill_at_any_instant(zygote, tmp_path, capsys):
    trials = int(os.environ.get(harness.TRIALS_ENV, "50"))
    fig = harness.run_kill_trials(trials, seed=0, workdir=tmp_path, zygote=zygote)
    _report(capsys, fig.line())
    assert fig.problems == [], "\n".join(fig.problems[:20])
    assert fig.trials == trials
    assert fig.records_lost == 0 and fig.corrupt_loads == 0
    assert fig.kills_in_commit >= trials // 5, "the harness must hit commits often"
    assert fig.iterations_committed >= trials
    # retention, async commit and two writers on one root are part of the trials, and kills land in prunes
    assert min(fig.retention_trials, fig.async_trials, fig.two_writer_trials) >= trials // 5
    assert fig.kills > fig.trials and fig.kills_in_prune >= 1


@pytest.mark.slow
def test_kill_at_any_instant_long(zygote, tmp_path, capsys):
    fig = harness.run_kill_trials(200, seed=1, workdir=tmp_path, zygote=zygote)
    _report(capsys, fig.line())
    assert fig.problems == [], "\n".join(fig.problems[:20])


#: The short run's kills: right after a stitch (the curve written, the summaries not yet refreshed), inside
#: a forward commit, inside publish_choice, inside a window's training (one target per trial, in turn).
WALK_FORWARD_TARGETS = ("s", "F", "C", "W")


def test_kill_a_walk_forward_with_test_parts_and_candidates(zygote, tmp_path, capsys):
    """A real ``WalkForwardRunner`` with test parts (two candidates, or one algorithm; signed or not) killed,
    rerun to its end: verify() clean, every derived file present and agreeing with the records, the results
    those of an uninterrupted run. A handful of trials (``SB3_ITER_CKPT_KILL_WF_TRIALS`` raises them); the long
    run is ``tools/kill_harness.py --scenario walk-forward``, outside the suite (docs/reliability.md)."""
    trials = int(os.environ.get(harness.WF_TRIALS_ENV, "4"))
    fig = harness.run_walk_forward_trials(trials, seed=0, workdir=tmp_path, targets=WALK_FORWARD_TARGETS, zygote=zygote)
    _report(capsys, fig.line())
    assert fig.problems == [], "\n".join(fig.problems[:20])
    assert fig.trials == trials and fig.candidate_trials >= trials // 2 and fig.signed_trials >= trials // 3
    assert sum(fig.kills.values()) + fig.finished_before_kill == trials and sum(fig.kills.values()) >= trials // 2
    assert fig.windows_redone >= 1, "a kill before the end leaves windows to redo"


def test_the_walk_forward_checker_notices_stale_and_wrong_derived_files(zygote, tmp_path):
    """The checks after a rerun are not blind: a stale summary, a curve that is not the forward results'
    stitch, another model at best_model.zip and a changed forward result are each reported."""
    root = tmp_path / "run"
    assert zygote.reap(zygote.fork({"task": "walk_forward", "root": str(root), "candidates": True})).done is not None
    repo = CheckpointRepository(root)
    reference = {
        name: harness.walk_forward_snapshot(repo if name == "root" else repo.candidate(name))
        for name in ("root", "ppo-s0", "a2c-s1")
    }
    assert harness.check_walk_forward(root, reference) == []
    summary = json.loads((root / "checkpoint_summary.json").read_bytes())
    summary["analysis"]["forward"] = None  # what a run killed before its final refresh left
    (root / "checkpoint_summary.json").write_text(json.dumps(summary))
    member = root / "candidates" / "a2c-s1"
    (member / "best_model.zip").write_bytes((member / "checkpoints" / "model_iter_0.zip").read_bytes())
    other = dict(reference, root=dict(reference["root"], forwards={**reference["root"]["forwards"], 1: b"{}"}))
    text = "\n".join(harness.check_walk_forward(root, other))
    assert "root: checkpoint_summary.json disagrees with the records at .analysis.forward" in text
    assert "root: checkpoint_summary.json has no forward analysis" in text
    assert "a2c-s1: best_model.zip is not the best iteration's" in text or "a2c-s1: training_summary" in text
    assert "root: forward result of iteration 1 differs from the reference run's" in text
    (root / "forward_returns.csv").write_text("not, the curve\n")
    text = "\n".join(harness.check_walk_forward(root, reference))
    assert "root: forward_returns.csv is not the stitched curve" in text and "verify: " in text


def test_harness_notices_damage(walked, tmp_path):
    """The checker is not blind: a lost record, a leftover and a corrupt model are all reported."""
    root = tmp_path / "repo"
    shutil.copytree(walked, root)
    state = harness.RepoState()
    problems, nxt = harness.check_repository(root, state)
    assert problems == [] and nxt == 8
    ck = root / "checkpoints"
    (ck / "metrics_iter_7.json").unlink()
    (ck / ".model_iter_9.zip.sb3ckpt-tmp-otherhost-1-0123abcd").write_bytes(b"x")
    data = bytearray((ck / "model_iter_3.zip").read_bytes())
    data[100] ^= 1
    (ck / "model_iter_3.zip").write_bytes(bytes(data))
    problems, _ = harness.check_repository(root, state)
    text = "\n".join(problems)
    assert "record lost: metrics_iter_7.json" in text
    assert "leftover after reopening: checkpoints/.model_iter_9.zip.sb3ckpt-tmp-otherhost-1-0123abcd" in text
    assert "model_iter_3.zip" in text


def test_harness_accepts_only_a_pruned_record_as_changed(walked, tmp_path):
    """A record marked ``pruned`` by retention is not "overwritten"; any other change still is."""
    from sb3_iter_ckpt.retention import KeepLastN

    root = tmp_path / "repo"
    shutil.copytree(walked, root)
    state = harness.RepoState()
    assert harness.check_repository(root, state)[0] == []
    CheckpointRepository(root).prune(KeepLastN(2))
    assert harness.check_repository(root, state)[0] == []
    record = root / "checkpoints" / "metrics_iter_0.json"
    data = json.loads(record.read_bytes())
    assert "pruned" in data
    data["metrics"]["mean_reward"] = 1e6
    record.write_text(json.dumps(data))
    assert "record changed (overwritten): metrics_iter_0.json" in harness.check_repository(root, state)[0]


@pytest.mark.parametrize("how", ["prune", "callback", "callback_async"])
def test_kill_between_prune_and_refresh(zygote, tmp_path, how):
    """SIGKILL right after retention deleted the model the summaries named as best: the repository is
    consistent at that very moment (``verify`` exits 0 before anything repairs it)."""
    import subprocess

    root = tmp_path / "repo"
    log = zygote.reap(zygote.fork({"task": "prune_window", "root": str(root), "seed": 0, "how": how}))
    assert log.status is not None and os.WIFSIGNALED(log.status), (log.failure, log.markers)
    assert any(m == "KILLED after deleting checkpoints/model_iter_0.zip" for _, m in log.markers), log.markers
    assert not (root / "checkpoints" / "model_iter_0.zip").exists(), "killed after the delete"
    verify = subprocess.run(
        [sys.executable, "-m", "sb3_iter_ckpt.cli", "verify", str(root)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    summary = json.loads((root / "training_summary.json").read_bytes())
    assert summary["best"]["iteration"] == 1 and (root / summary["best"]["model_file"]).is_file()


# -- concurrent writers ------------------------------------------------------------------------------
def _run_all(zygote, tasks: list[dict]) -> list[harness.WorkerLog]:
    pids = [zygote.fork(t) for t in tasks]
    return [zygote.reap(pid) for pid in pids]


def _overlaps(logs: list[harness.WorkerLog]) -> int:
    """Commits of different workers that were in flight at the same time (as the parent saw them)."""
    spans = []
    for w in logs:
        begin = None
        for t, m in w.markers:
            if m.startswith("B "):
                begin = t
            elif m.startswith("E ") and begin is not None:
                spans.append((begin, t, w.pid))
                begin = None
    return sum(1 for a in spans for b in spans if a[2] < b[2] and a[0] < b[1] and b[0] < a[1])


def _check_one_best(root: Path, expected: list[int]) -> CheckpointRepository:
    repo = CheckpointRepository(root)
    assert repo.iterations() == expected, "no record lost"
    assert repo.verify() == []
    assert harness.leftovers(root) == []
    best = repo.best()
    summary = json.loads((root / "training_summary.json").read_bytes())
    assert summary["iterations"] == expected, "the last refresh saw every commit"
    assert summary["best"]["iteration"] == best.iteration
    assert hashlib.sha256((root / "best_model.zip").read_bytes()).hexdigest() == best.sha256
    analysis = json.loads((root / "checkpoint_summary.json").read_bytes())["analysis"]
    assert json.dumps(analysis).count(str(best.iteration)) > 0
    return repo


def test_parallel_walk_forward_workers(zygote, tmp_path, capsys):
    root = tmp_path / "repo"
    n = 4
    start_at = time.time() + 0.5
    tasks = [
        {"task": "iterations", "root": str(root), "seed": w, "iterations": list(range(w, 12, n)), "start_at": start_at}
        for w in range(n)
    ]
    logs = _run_all(zygote, tasks)
    assert [w.failure for w in logs] == [None] * n
    repo = _check_one_best(root, list(range(12)))
    for w, log in zip(range(n), logs, strict=True):
        for i in range(w, 12, n):
            assert repo.get(i).record["metadata"]["writer"] == log.pid
    for ck in repo.list():
        repo.load(ck.iteration, device="cpu")
    _report(capsys, f"parallel walk-forward: {n} workers, 12 iterations, {_overlaps(logs)} overlapping commits")


def test_many_concurrent_commits(zygote, tmp_path, capsys):
    """No training between commits: the lock is contended all the time."""
    root = tmp_path / "repo"
    n, per = 4, 10
    rng = random.Random(0)
    scores = {str(i): rng.uniform(-10, 10) for i in range(n * per)}
    start_at = time.time() + 0.5
    tasks = [
        {
            "task": "commits",
            "root": str(root),
            "seed": w,
            "iterations": list(range(w, n * per, n)),
            "scores": scores,
            "start_at": start_at,
        }
        for w in range(n)
    ]
    logs = _run_all(zygote, tasks)
    assert [w.failure for w in logs] == [None] * n
    repo = _check_one_best(root, list(range(n * per)))
    assert repo.best().iteration == max(range(n * per), key=lambda i: scores[str(i)])
    _report(capsys, f"concurrent commits: {n} writers, {n * per} iterations, {_overlaps(logs)} overlapping commits")


def test_two_writers_of_the_same_iteration(zygote, tmp_path):
    root = tmp_path / "repo"
    for i in (3, 4, 5):
        start_at = time.time() + 0.3
        tasks = [
            {"task": "iterations", "root": str(root), "seed": s, "iterations": [i], "start_at": start_at}
            for s in (10, 11)
        ]
        logs = _run_all(zygote, tasks)
        winners = [w for w in logs if w.done is not None]
        losers = [w for w in logs if w.failure is not None]
        assert len(winners) == 1 and len(losers) == 1, [w.markers for w in logs]
        assert losers[0].failure.startswith("CheckpointExistsError")
        assert f"iteration(s) {i} already committed" in losers[0].failure or "already exists" in losers[0].failure
        repo = CheckpointRepository(root)
        assert repo.get(i).record["metadata"]["writer"] == winners[0].pid, "the winner's record, intact"
        assert repo.verify() == [] and harness.leftovers(root) == []
    assert CheckpointRepository(root).iterations() == [3, 4, 5]
