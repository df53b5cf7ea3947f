"""The ``sb3-iter-ckpt`` command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_iter_ckpt.cli import EXIT_INTEGRITY, EXIT_MISMATCH, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

EXE = str(Path(sys.executable).with_name("sb3-iter-ckpt"))
TINY = [
    "--n-prices",
    "400",
    "--train-size",
    "150",
    "--val-size",
    "60",
    "--total-timesteps",
    "128",
    "--n-steps",
    "64",
    "--eval-freq",
    "64",
]


def run(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """One real walk-forward, made by the CLI itself; tests that modify it work on a copy."""
    work = tmp_path_factory.mktemp("cli")
    proc = run(
        "walk-forward",
        "--experiment-id",
        "1003",
        "--iterations",
        "3",
        *TINY,
        cwd=work,
        env_extra={"SB3_LOGDIR": str(work / "sb3log")},
    )
    assert proc.returncode == 0, proc.stderr
    return work, proc


@pytest.fixture
def copy(experiment, tmp_path):
    work, _ = experiment
    shutil.copytree(work / "results", tmp_path / "results")
    return tmp_path


def test_walk_forward_prints_where_every_checkpoint_went(experiment):
    work, proc = experiment
    out = proc.stdout
    assert "3 window(s)" in out
    for i in range(3):
        assert f"iteration {i} val " in out
        line = next(ln for ln in out.splitlines() if f"iteration {i} val " in ln)
        rel = Path("results", "1003", "checkpoints")  # as given (relative), models and placeholders alike
        assert f"-> {rel / f'model_iter_{i}.zip'}" in line or f") {rel / f'no_model_iter_{i}.json'}" in line, line
    root = work / "results" / "1003"
    assert (root / "training_summary.json").is_file() and (root / "checkpoint_summary.json").is_file()
    assert len(list((root / "checkpoints").glob("*_iter_*.json"))) == 3


def test_rerun_resumes_and_changed_config_is_refused(copy):
    proc = run("walk-forward", "--experiment-id", "1003", "--iterations", "3", *TINY, "--json", cwd=copy)
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)
    assert report["trained"] == [] and report["skipped"] == [0, 1, 2]
    proc = run("walk-forward", "--experiment-id", "1003", "--iterations", "3", *TINY, "--seed", "9", cwd=copy)
    assert proc.returncode == EXIT_MISMATCH
    assert "seed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["path", "experiment-id"])
def test_reading_verbs(experiment, where):
    work, _ = experiment
    loc = ["results/1003"] if where == "path" else ["--results-dir", "results", "--experiment-id", "1003"]
    listing = run("list", *loc, "--json", cwd=work)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    show = run("show", *loc, "1", cwd=work)
    assert show.returncode == 0 and "iteration 1" in show.stdout and "validation.sharpe" in show.stdout
    assert json.loads(run("show", *loc, "1", "--json", cwd=work).stdout)["record"]["iteration"] == 1
    analyze = json.loads(run("analyze", *loc, "--json", cwd=work).stdout)
    assert analyze["counts"]["total"] == 3 and analyze["monitor"] == "validation.sharpe"
    text = run("analyze", *loc, cwd=work)
    assert text.returncode == 0 and "validation.sharpe" in text.stdout
    verify = run("verify", *loc, "--json", cwd=work)
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and (report["ok"], report["complete"], report["problems"]) == (True, True, [])
    assert report["hashed"] == [c["iteration"] for c in rows if c["has_model"]]


def test_best_and_summary(copy):
    best = run("best", "results/1003", "--json", cwd=copy)
    if best.returncode == EXIT_NOT_FOUND:  # every window a placeholder: possible with tiny budgets
        assert "no checkpoint" in best.stderr
    else:
        assert best.returncode == 0 and json.loads(best.stdout)["has_model"]
    summary = run("summary", "results/1003", cwd=copy)
    assert summary.returncode == 0 and "checkpoint_summary.json" in summary.stdout


def test_prune_dry_run_then_real(copy):
    dry = run("prune", "results/1003", "--keep-last-n", "1", "--dry-run", "--json", cwd=copy)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and plan["removed_files"] == []
    before = sorted(p.name for p in (copy / "results/1003/checkpoints").iterdir())
    assert sorted(p.name for p in (copy / "results/1003/checkpoints").iterdir()) == before
    real = json.loads(run("prune", "results/1003", "--keep-last-n", "1", "--json", cwd=copy).stdout)
    for i in real["remove"]:
        assert not (copy / f"results/1003/checkpoints/model_iter_{i}.zip").exists()
        assert (copy / f"results/1003/checkpoints/metrics_iter_{i}.json").exists(), "records stay"
    assert run("verify", "results/1003", cwd=copy).returncode == 0


def test_plot_writes_a_png(copy):
    proc = run("plot", "results/1003", "--out", "p.png", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    assert (copy / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exit_codes_for_user_mistakes(copy):
    missing = run("list", "results/nothere", cwd=copy)
    assert missing.returncode == EXIT_NOT_FOUND and "no checkpoint repository" in missing.stderr
    assert run("show", "results/1003", "99", cwd=copy).returncode == EXIT_NOT_FOUND
    usage = run("prune", "results/1003", cwd=copy)
    assert usage.returncode == EXIT_USAGE and "--keep" in usage.stderr
    assert run("list", cwd=copy).returncode == EXIT_USAGE
    assert run("bogus-verb", cwd=copy).returncode == EXIT_USAGE
    (copy / "bad.csv").write_text("when,price\n2020-01-01,1\n")
    bad = run("walk-forward", "--experiment-id", "x", "--total-timesteps", "10", "--data", "bad.csv", cwd=copy)
    assert bad.returncode == EXIT_USAGE and "date" in bad.stderr and "--date-column" in bad.stderr
    for proc in (missing, usage, bad):
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_tampered_file_gives_integrity_exit_code(copy):
    root = copy / "results/1003/checkpoints"
    target = next(root.glob("model_iter_*.zip"), None)
    if target is None:
        pytest.skip("no model in this tiny run")
    target.write_bytes(target.read_bytes()[:-10])
    proc = run("verify", "results/1003", cwd=copy)
    assert proc.returncode == EXIT_INTEGRITY and "PROBLEM" in proc.stdout


def test_walk_forward_on_a_user_csv(tmp_path):
    from sb3_iter_ckpt.data import synthetic_prices

    synthetic_prices(300, seed=1).rename("Adj Close").to_frame().rename_axis("Day").to_csv(tmp_path / "prices.csv")
    proc = run(
        "walk-forward",
        "--experiment-id",
        "csv",
        "--data",
        "prices.csv",
        "--iterations",
        "1",
        "--date-column",
        "day",
        "--close-column",
        "adj close",
        "--train-size",
        "150",
        "--val-size",
        "60",
        "--total-timesteps",
        "64",
        "--n-steps",
        "64",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prices.csv" in proc.stdout and (tmp_path / "results/csv/checkpoints").is_dir()
