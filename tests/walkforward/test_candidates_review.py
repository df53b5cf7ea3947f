"""Review of candidates per window: what a user with real runs meets (damaged or missing candidate data,
hand-edited root records, pruning the root, the Python API's mistakes).

Real PPO and A2C at tiny budgets, real files; each test works on its own copy of one shared run.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.splitter import WalkForwardSplitter

PPO_KW = dict(n_steps=64, batch_size=64, n_epochs=1)
TWO = (Candidate("ppo-s0", "ppo", 7, PPO_KW), Candidate("a2c-s1", "a2c", 8, dict(n_steps=16)))
SPLIT = WalkForwardSplitter(150, 60, test_size=60)


def _runner(prices, root, tiny_algo, **kw):
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    params = dict(algo_kwargs=tiny_algo, eval_freq=32, progress=False, seed=7, candidates=TWO, executor="sequential")
    params.update(kw)
    return WalkForwardRunner(prices, SPLIT, root, 128, **params)


@pytest.fixture
def run_copy(candidates_run, tmp_path):
    """A copy of the conftest's finished run with these two candidates on three windows (these seeds choose each
    candidate once or more): ``(root, its forward report)``."""
    root, runner, result = candidates_run
    assert runner.options.candidates == TWO and runner.splitter == SPLIT
    assert result.forward is not None and result.forward["n_trials"] == 2
    copy = tmp_path / "exp"
    shutil.copytree(root, copy)
    return copy, result.forward


def _chosen(root, i):
    return json.loads((root / "checkpoints" / f"metrics_iter_{i}.json").read_text())["candidate"]["name"]


# -- the root's forward report when the candidates' data is missing or damaged ---------------------------------
def test_a_root_without_its_candidates_folder_keeps_its_own_forward_report(run_copy):
    """Copying only the root (or deleting candidates/ to save space) must not lose the chosen curve's report:
    only the statistics that need every candidate (DSR's trials, PBO) become unavailable, saying why."""
    root, full = run_copy
    shutil.rmtree(root / "candidates")
    report, reason = CheckpointRepository(root).forward_status()
    assert report is not None, reason
    assert report["stitched"] == full["stitched"] and report["baseline"] == full["baseline"]
    assert report["iterations"] == full["iterations"]
    # Never a DSR computed as if one trial had been made: that would hide the choice among two.
    assert report["deflated_sharpe"] is None and "candidates/" in report["deflated_sharpe_reason"]
    assert report["pbo"] is None and "candidates/" in report["pbo_reason"]
    assert report["n_trials"] == 2


def test_a_damaged_candidate_forward_file_is_named_and_the_root_report_survives(run_copy):
    root, full = run_copy
    path = root / "candidates" / "a2c-s1" / "checkpoints" / "forward_iter_0.json"
    data = json.loads(path.read_text())
    data["forward"]["returns"][5] += 0.05  # an edit the file's sha256 catches
    path.write_text(json.dumps(data))
    repo = CheckpointRepository(root)
    # The root's own files are intact; its verify descends into candidates/ and names that one's file.
    problems = repo.verify()
    assert problems and all(p.file.startswith("candidates/a2c-s1/") for p in problems), problems
    assert any(p.file == "candidates/a2c-s1/forward_iter_0.json" for p in problems)
    report, reason = repo.forward_status()
    assert report is not None, reason
    assert report["stitched"] == full["stitched"]
    # The reason points at the candidate's file, not at the root's checkpoints/forward_iter_0.json.
    assert "candidates/a2c-s1" in report["deflated_sharpe_reason"]
    assert report["deflated_sharpe"] is None and report["pbo"] is None


@pytest.mark.parametrize("damage", ["folder gone", "file edited"])
def test_the_report_of_a_root_without_its_candidates_data_still_has_its_forward_sections(run_copy, damage):
    from sb3_iter_ckpt.report import collect_report

    root, _ = run_copy
    if damage == "folder gone":
        shutil.rmtree(root / "candidates")
    else:
        (root / "candidates" / "ppo-s0" / "checkpoints" / "forward_iter_1.json").write_text("{}")
    data = collect_report(root)
    assert data.forward.report is not None, data.forward.reason
    assert data.forward.curve is not None


# -- hand-edited root records -----------------------------------------------------------------------------------
@pytest.mark.parametrize("edit", ["not a dict", "wrong name"])
def test_a_resumed_root_publishes_the_forward_result_of_the_model_it_holds(run_copy, prices, tiny_algo, edit):
    """The root's forward result is the one of the model it holds (same sha256), whatever its record's
    ``candidate`` field says: a hand-edited field must neither crash the resume nor credit another model."""
    root, _ = run_copy
    i = next(i for i in (0, 1, 2) if _chosen(root, i) != TWO[0].name)  # chosen: not the first candidate
    expected = (root / "checkpoints" / f"forward_iter_{i}.json").read_bytes()
    record = root / "checkpoints" / f"metrics_iter_{i}.json"
    data = json.loads(record.read_text())
    data["candidate"] = "a2c-s1" if edit == "not a dict" else {**data["candidate"], "name": TWO[0].name}
    record.write_text(json.dumps(data))
    (root / "checkpoints" / f"forward_iter_{i}.json").unlink()  # killed between the root commit and its forward
    _runner(prices, root, tiny_algo).run()
    repo = CheckpointRepository(root)
    chosen = repo.candidate(TWO[1].name)
    assert repo.forward(i).returns == chosen.forward(i).returns
    assert (root / "checkpoints" / f"forward_iter_{i}.json").read_bytes() == expected


# -- pruning the root -------------------------------------------------------------------------------------------
def test_prune_remove_records_on_the_root_then_run_again(run_copy, prices, tiny_algo):
    """The user prunes every repository's old models and the root's old records, then runs again (what
    ``forward`` asks for: forward_returns.csv no longer matches the root's forward results)."""
    root, _ = run_copy
    repo = CheckpointRepository(root)
    repo.prune(keep_last_n=1, remove_records=True)
    for c in TWO:
        repo.candidate(c.name).prune(keep_last_n=1)
    assert len(repo.iterations()) < 3 and repo.forward_status()[0] is None
    result = _runner(prices, root, tiny_algo).run()
    assert result.forward is not None, result.forward_reason
    # the removed windows were trained again by every candidate whose model was gone, then chosen again
    retrained = {name: r.trained for name, r in result.candidates.items()}
    assert retrained and all(t == result.trained for t in retrained.values()) and result.trained
    assert repo.iterations() == [0, 1, 2] and repo.verify() == []


# -- the Python API ---------------------------------------------------------------------------------------------
def test_one_candidate_not_in_a_list_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="candidates"):
        RunOptions(100, candidates=Candidate("ppo-s0"))


def test_reading_a_roots_forward_report_leaves_a_candidates_leftovers_alone(run_copy):
    """``forward``/``report``/``analyze`` read the candidates; only a writer (the run) sweeps their leftovers."""
    root, _ = run_copy
    folder = root / "candidates" / TWO[0].name / "checkpoints"
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # a writer of this host that is gone: what an opening sweep removes
    stray = folder / f".model_iter_9.zip.sb3ckpt-tmp-{socket.gethostname()}-{dead.stdout.strip()}-deadbeef"
    stray.write_bytes(b"half-written by a writer that died")
    assert CheckpointRepository(root, sweep=False).forward_report() is not None
    assert stray.exists()
