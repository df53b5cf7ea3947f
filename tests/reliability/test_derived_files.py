"""Derived files are never trusted as they are (issue 21, items 2 and 6).

``forward_returns.csv`` is recomputed from the signed forward files by every reader (``forward``,
``analyze``, the summaries, the report) and compared by ``verify``; ``walk_forward.json`` is shown only
when its configuration hashes to the fingerprint the signed records carry. No derived file crashes a
reader, and a rerun (or ``summary``) rewrites every derived file that is missing or disagrees.
Real tiny walk-forwards with test parts.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.repository import SIGNING_KEY_ENV
from sb3_iter_ckpt.splitter import WalkForwardSplitter

TEST = dict(splitter=WalkForwardSplitter(150, 60, test_size=60))
KEY = "derived-files key"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prices, tiny_algo):
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    root = tmp_path_factory.mktemp("derived") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(SIGNING_KEY_ENV, raising=False)
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        repo = CheckpointRepository(root, signing_key=KEY)
        params = dict(algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7, total_timesteps=128, **TEST)
        params["executor"] = "sequential"
        result = WalkForwardRunner(prices, repository=repo, **params).run()
    assert result.forward is not None
    return root, result.forward


@pytest.fixture
def run(finished, tmp_path, monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3log"))
    shutil.copytree(finished[0], tmp_path / "exp")
    return tmp_path / "exp", finished[1]


def _repo(root) -> CheckpointRepository:
    return CheckpointRepository(root, signing_key=KEY)


def _edit_csv(root, fn) -> None:
    path = root / "forward_returns.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    for row in rows:
        fn(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())


def test_edited_buy_and_hold_and_positions_change_no_number_and_verify_names_the_file(run):
    root, truth = run
    _edit_csv(root, lambda r: r.update(asset_return="-0.01", position="0.0"))
    repo = _repo(root)
    assert {p.file for p in repo.verify()} == {"forward_returns.csv"}
    report = repo.forward_report()
    assert report["baseline"] == truth["baseline"] and report["stitched"] == truth["stitched"]
    assert repo.analyze()["forward"]["baseline"] == truth["baseline"]
    repo.write_summary()
    summary = json.loads((root / "checkpoint_summary.json").read_text())
    assert summary["analysis"]["forward"]["baseline"] == json.loads(json.dumps(truth["baseline"]))
    assert repo.stitched_forward().asset_returns != (-0.01,) * len(repo.stitched_forward().rows)


@pytest.mark.parametrize("column", ["candidate", "date", "placeholder", "return", "iteration"])
def test_any_edited_column_is_reported_by_verify(run, column):
    root, _ = run
    changes = {"candidate": "ppo-s9", "date": "1999-01-01", "placeholder": "true", "return": "0.5", "iteration": "7"}

    def fn(row):
        if column in row:
            row[column] = changes[column]

    _edit_csv(root, fn)
    if column == "date" and "date" not in open(root / "forward_returns.csv").readline():
        pytest.skip("these prices have no dates")
    assert "forward_returns.csv" in {p.file for p in _repo(root).verify()}


def test_an_equity_cell_of_zero_crashes_no_reader(run, tmp_path):
    from sb3_iter_ckpt.report import write_report

    root, truth = run
    _edit_csv(root, lambda r: r.update(equity="0.0"))
    repo = _repo(root)
    assert repo.forward_report()["stitched"] == truth["stitched"]
    write_report(repo, tmp_path / "page.html")  # no ZeroDivisionError
    assert "forward_returns.csv" in (tmp_path / "page.html").read_text()  # verify's problem is on the page


def test_an_edited_walk_forward_json_is_not_shown_and_verify_names_it(run, tmp_path):
    from sb3_iter_ckpt.report import collect_report

    root, _ = run
    path = root / "walk_forward.json"
    run_file = json.loads(path.read_text())
    assert _repo(root).verify() == []

    def shown(repo):
        return " ".join(value for _, value in collect_report(repo).header)

    assert run_file["config"]["data_sha256"][:12] in shown(_repo(root))
    run_file["config"]["data_sha256"] = "0" * 64
    path.write_text(json.dumps(run_file))
    assert {p.file for p in _repo(root).verify()} == {"walk_forward.json"}
    assert "0" * 12 not in shown(_repo(root)), "never shown under 'verify: ok'"
    # rehashing it does not help: the records' signed fingerprint names the real configuration
    from sb3_iter_ckpt.common.options import config_fingerprint

    run_file["fingerprint"] = config_fingerprint(run_file["config"])
    path.write_text(json.dumps(run_file))
    problems = _repo(root).verify()
    assert [p.file for p in problems] == ["walk_forward.json"] and "records" in problems[0].message


def _rerun(root, prices, tiny_algo):
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    params = dict(algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7, total_timesteps=128, **TEST)
    params["executor"] = "sequential"
    return WalkForwardRunner(prices, repository=_repo(root), **params).run()


@pytest.mark.parametrize("damage", ["deleted", "stale"])
def test_a_rerun_with_nothing_to_train_rewrites_missing_or_stale_summaries(run, prices, tiny_algo, damage):
    root, truth = run
    summary = root / "checkpoint_summary.json"
    good = json.loads(summary.read_text())
    if damage == "deleted":
        summary.unlink()
        (root / "training_summary.json").unlink()
    else:  # what a run killed right after forward_returns.csv appeared left
        stale = dict(
            good, analysis=dict(good["analysis"], forward=None, forward_reason="forward_returns.csv is missing")
        )
        summary.write_text(json.dumps(stale))
    result = _rerun(root, prices, tiny_algo)
    assert result.trained == []
    again = json.loads(summary.read_text())
    assert again["analysis"]["forward"] == good["analysis"]["forward"] and again["analysis"]["forward"] is not None
    assert (root / "training_summary.json").is_file()
    assert _repo(root).verify() == []


def test_a_rerun_with_everything_up_to_date_rewrites_nothing(run, prices, tiny_algo):
    root, _ = run
    names = ("checkpoint_summary.json", "training_summary.json", "forward_returns.csv", "best_model.zip")
    _rerun(root, prices, tiny_algo)  # the copy gave best_model.zip another inode: the summary records ours
    before = {n: (root / n).stat().st_mtime_ns for n in names}
    _rerun(root, prices, tiny_algo)
    assert {n: (root / n).stat().st_mtime_ns for n in names} == before


def test_the_summary_command_writes_under_the_repository_lock(run, mocker):
    from sb3_iter_ckpt.cli import main
    from sb3_iter_ckpt.store import upkeep

    root, _ = run
    (root / "checkpoint_summary.json").unlink()
    locked = []
    real = upkeep.write_file

    def spy(storage, name, data, where):
        locked.append((name, storage._lock is not None and storage._lock.is_locked))
        return real(storage, name, data, where)

    mocker.patch.object(upkeep, "write_file", spy)
    mocker.patch.dict("os.environ", {SIGNING_KEY_ENV: KEY})
    assert main(["summary", str(root)]) == 0
    assert locked and all(ok for _, ok in locked), locked
    assert ("checkpoint_summary.json", True) in locked
