"""The runner's forward evaluation: every committed iteration's kept model trades its window's test part.

Real PPO on the built-in trading env at tiny budgets, real files, a real process pool, a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.forward import evaluate_forward
from sb3_iter_ckpt.retention import KeepLastN
from sb3_iter_ckpt.splitter import WalkForwardSplitter

ROOT = Path(__file__).resolve().parents[2]
TEST = dict(splitter=WalkForwardSplitter(150, 60, test_size=60))


def _forward_bytes(root) -> list[bytes]:
    return [r.to_json_bytes() for r in CheckpointRepository(root).forwards()]


def _records(root) -> dict[str, dict]:
    """Every record's content but what differs between two identical runs (the commit time, SB3's zip times)."""
    out = {}
    for path in sorted((Path(root) / "checkpoints").glob("*_iter_*.json")):
        if path.name.startswith("forward_"):
            continue
        body = json.loads(path.read_bytes())
        body.pop("created_at")
        for art in body["artifacts"].values():
            art.pop("sha256")
        out[path.name] = body
    return out


@pytest.fixture(scope="module")
def forward_run(tmp_path_factory, prices, make_runner):
    """The default run with test parts (three windows), sequential, trained once: ``(root, runner, result)``. The
    tests below only read it."""
    root = tmp_path_factory.mktemp("forward") / "seq"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        runner = make_runner(prices, root, **TEST)
        return root, runner, runner.run()


def test_every_kept_model_trades_its_test_part_once(prices, forward_run):
    repo_root, runner, result = forward_run
    repo = CheckpointRepository(repo_root)
    assert result.trained == [0, 1, 2] and repo.iterations() == [0, 1, 2]
    forwards = repo.forwards()
    assert [f.iteration for f in forwards] == [0, 1, 2]
    # the test parts tile rows 210..389: each return dated on the row it is realized, every row once
    rows = [r for f in forwards for r in f.rows]
    assert rows == list(range(211, 391))
    for window, f in zip(runner.windows, forwards, strict=True):
        ck = repo.get(window.iteration)
        assert (f.test_start, f.test_stop) == (window.test_start, window.test_stop)
        assert f.placeholder is (not ck.has_model) and f.periods_per_year == runner.options.periods_per_year
        assert f.dates is not None and f.dates[0] == prices.index[f.rows[0]].isoformat()
        if ck.has_model:  # the same as the kept model trading the full price series
            i, ppy = window.iteration, runner.options.periods_per_year
            alone = evaluate_forward(repo.load(i), prices, window, iteration=i, periods_per_year=ppy)
            assert f.to_json_bytes() == alone.to_json_bytes()
    assert repo.verify() == []


def test_the_forward_step_changes_no_record_nor_what_a_later_window_sees(prices, tmp_path, make_runner, monkeypatch):
    """Records (selection, metrics, lineage, models' sizes) are the same whether or not the forward step runs;
    with warm start too: a later window reads the previous model, never its forward result."""
    make_runner(prices, tmp_path / "with", warm_start=True, **TEST).run()
    monkeypatch.setattr("sb3_iter_ckpt.runner.window._forward", lambda spec, repo: None)
    make_runner(prices, tmp_path / "without", warm_start=True, **TEST).run()
    assert len(_forward_bytes(tmp_path / "with")) == 3 and _forward_bytes(tmp_path / "without") == []
    assert _records(tmp_path / "with") == _records(tmp_path / "without")


def test_a_process_pool_gives_the_same_forward_bytes(prices, tmp_path, make_runner, forward_run, pool):
    seq_root, _, _ = forward_run
    result = make_runner(prices, tmp_path / "pool", executor=pool, **TEST).run()
    assert {o["pid"] for o in result.outcomes.values()}.isdisjoint({os.getpid()}), "windows ran in the driver"
    assert _forward_bytes(tmp_path / "pool") == _forward_bytes(seq_root)
    assert len(_forward_bytes(seq_root)) == 3


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from sb3_iter_ckpt.data import synthetic_prices
    from sb3_iter_ckpt.forward import trade
    from sb3_iter_ckpt.splitter import WalkForwardSplitter
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    real = trade.evaluate_forward  # where runner/window.py looks it up

    def killed_at_one(model, prices, window, *, iteration, **kw):
        if iteration == 1:  # iteration 1 is committed; its forward result is not
            os.kill(os.getpid(), signal.SIGKILL)
        return real(model, prices, window, iteration=iteration, **kw)

    trade.evaluate_forward = killed_at_one
    WalkForwardRunner(
        synthetic_prices(420, seed=3), WalkForwardSplitter(150, 60, test_size=60), sys.argv[1], 128,
        algo_kwargs=dict(n_steps=64, batch_size=64, n_epochs=1), eval_freq=64, progress=False, seed=7,
        executor="sequential",  # the patched evaluate_forward is this process's
    ).run()
    """
)


def test_a_run_killed_between_a_commit_and_its_forward_evaluation_completes_it_on_resume(
    prices, tmp_path, make_runner, forward_run
):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(killed)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    repo = CheckpointRepository(killed)
    assert repo.iterations() == [0, 1] and [f.iteration for f in repo.forwards()] == [0]
    resumed = make_runner(prices, killed, **TEST).run()
    assert resumed.skipped == [0, 1] and resumed.trained == [2]
    assert [f.iteration for f in CheckpointRepository(killed).forwards()] == [0, 1, 2]
    assert _forward_bytes(killed) == _forward_bytes(forward_run[0])  # the same as a run never killed
    assert CheckpointRepository(killed).verify() == []


def test_placeholders_trade_flat_and_retention_still_prunes(prices, repo_root, make_runner):
    runner = make_runner(prices, repo_root, min_score=1e9, **TEST)
    runner.run(max_iterations=1)
    f = CheckpointRepository(repo_root).forward(0)
    assert f.placeholder and not any(f.returns) and not any(f.positions) and len(f.rows) == 60
    other = repo_root.parent / "kept"
    make_runner(prices, other, retention=KeepLastN(1), **TEST).run()
    repo = CheckpointRepository(other)
    assert [f.iteration for f in repo.forwards()] == [0, 1, 2]
    assert not all(ck.has_model for ck in repo.list())  # retention did prune, after the forward evaluation
    assert repo.verify() == []


def test_periods_per_year_none_is_estimated_from_the_dates(repo_root, make_runner):
    hours = pd.date_range("2024-01-01", periods=420, freq="h")
    prices = pd.Series(100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 420))), index=hours)
    runner = make_runner(prices, repo_root, periods_per_year=None, **TEST)
    assert runner.options.periods_per_year == pytest.approx(8766, rel=1e-3)
    runner.run(max_iterations=1)
    repo = CheckpointRepository(repo_root)
    assert repo.get(0).record["metadata"]["periods_per_year"] == runner.options.periods_per_year
    assert repo.forward(0).periods_per_year == runner.options.periods_per_year
    plain = make_runner(prices.to_numpy(), repo_root.parent / "plain", periods_per_year=None, **TEST)
    assert plain.options.periods_per_year == 252  # no dates: the default
    assert plain.periods_per_year_source == "assumed" and "no dates" in plain.annualization


def test_a_run_of_the_earlier_default_252_resumes_with_it(prices, repo_root, make_runner):
    """A run an earlier version wrote (its default: 252 periods a year, not the dates' 261) is resumed by a
    rerun with the defaults: the windows left train with 252, the forward results stitch as one run."""
    make_runner(prices, repo_root, periods_per_year=252, **TEST).run(max_iterations=1)
    runner = make_runner(prices, repo_root, **TEST)
    assert runner.options.periods_per_year == pytest.approx(260.7, abs=0.1)
    result = runner.run()
    assert result.skipped == [0] and result.trained == [1, 2]
    assert runner.options.periods_per_year == 252 and "earlier version" in (result.annualization or "")
    repo = CheckpointRepository(repo_root)
    assert {ck.record["metadata"]["fingerprint"] for ck in repo.list()} == {runner.fingerprint()}
    assert [ck.record["metadata"]["periods_per_year"] for ck in repo.list()] == [252, 252, 252]
    assert [f.periods_per_year for f in repo.forwards()] == [252, 252, 252]
    assert result.forward is not None and repo.verify() == []


def test_test_part_settings_are_checked(prices, repo_root, make_runner):
    with pytest.raises(CheckpointError, match="test_size must be"):
        RunOptions(100, test_size=-1)
    with pytest.raises(CheckpointError, match="needs a test part"):
        RunOptions(100, test_gap=3)
    with pytest.raises(CheckpointError, match="periods_per_year"):
        RunOptions(100, periods_per_year=0)
    with pytest.raises(CheckpointError, match="differ from the splitter"):
        make_runner(prices, repo_root, test_size=30, **TEST)
    runner = make_runner(prices, repo_root, test_size=60, **TEST)  # the same as the splitter's: fine
    assert runner.options.test_size == 60
    assert make_runner(prices, repo_root, **TEST).options.test_size == 60


def test_the_end_of_a_run_stitches_forward_returns_and_reports_them_everywhere(prices, repo_root, make_runner):
    from sb3_iter_ckpt.forward import stitch

    first = make_runner(prices, repo_root, **TEST).run(max_iterations=2)
    csv = repo_root / "forward_returns.csv"
    assert first.forward is not None and first.forward["stitched"]["last_row"] == 330
    first_csv = csv.read_bytes()
    result = make_runner(prices, repo_root, **TEST).run()  # resumes: the curve grows to the third window
    repo = CheckpointRepository(repo_root)
    assert csv.read_bytes() == stitch(repo.forwards(), prices).to_csv_bytes()
    report = result.forward
    assert result.forward_reason is None and report == repo.forward_report()
    assert {"iterations", "stitched", "baseline", "deflated_sharpe", "pbo"} <= set(report)
    assert set(report["baseline"]) == {"buy_and_hold", "flat"}
    assert report["stitched"]["first_row"] == 211 and report["stitched"]["last_row"] == 390
    for row, ck in zip(report["iterations"], repo.list(), strict=True):
        assert {"iteration", "candidate", "selection_score", "forward", "placeholder"} <= set(row)
        assert row["selection_score"] == ck.record["selection"]["score"]
        assert row["selection_return"] == ck.metrics["validation"]["cagr"]
        assert row["forward"] == repo.forward(ck.iteration).metrics
    assert repo.analyze()["forward"] == report
    summary = json.loads((repo_root / "checkpoint_summary.json").read_bytes())
    assert summary["analysis"]["forward"] == json.loads(json.dumps(report))
    # a rerun with nothing to do leaves the curve as it is
    stamp = csv.stat().st_mtime_ns
    again = make_runner(prices, repo_root, **TEST).run()
    assert again.trained == [] and csv.stat().st_mtime_ns == stamp and again.forward == report
    csv.write_bytes(first_csv)  # a curve older than the forward results is not reported as theirs
    assert repo.forward_report() is None and "covers other periods" in repo.forward_status()[1]
    assert "forward_returns.csv" in {p.file for p in repo.verify()}
    csv.unlink()
    assert repo.forward_report() is None and "forward_returns.csv is missing" in repo.forward_status()[1]


def test_a_run_without_test_parts_has_no_forward_data_and_says_why(sequential_run):
    repo_root, result = sequential_run
    repo = CheckpointRepository(repo_root)
    assert result.forward is None and repo.forwards() == [] and not (repo_root / "forward_returns.csv").exists()
    summary = json.loads((repo_root / "checkpoint_summary.json").read_bytes())
    assert summary["analysis"]["forward"] is None
    assert "no test part" in summary["analysis"]["forward_reason"]
