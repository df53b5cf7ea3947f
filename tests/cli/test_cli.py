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
    "--executor",  # the default, auto, would start a process pool: seconds, longer than these windows train
    "sequential",
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
    assert "3 window(s)" in out and "executor: sequential (1 worker)" in out.splitlines()
    for i in range(3):
        assert f"iteration {i} val " in out
        line = next(ln for ln in out.splitlines() if f"iteration {i} val " in ln)
        rel = Path("results", "1003", "checkpoints")  # as given (relative), models and placeholders alike
        assert f"-> {rel / f'model_iter_{i}.zip'}" in line or f") {rel / f'no_model_iter_{i}.json'}" in line, line
    root = work / "results" / "1003"
    assert (root / "training_summary.json").is_file() and (root / "checkpoint_summary.json").is_file()
    names = [p.name for p in (root / "checkpoints").glob("*_iter_*.json")]
    assert len([n for n in names if not n.startswith("forward_")]) == 3
    assert sorted(n for n in names if n.startswith("forward_")) == [f"forward_iter_{i}.json" for i in range(3)]
    # the run ends with its report, written and named (the page itself is tested in test_report.py)
    assert f"report: {Path('results', '1003', 'report.html')} (open it in a browser)" in out
    page = (root / "report.html").read_text()
    assert "Stitched forward equity curve" in page and "not available: no forward" not in page


def test_rerun_resumes_and_changed_config_is_refused(copy):
    proc = run("walk-forward", "--experiment-id", "1003", "--iterations", "3", *TINY, "--json", cwd=copy)
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)
    assert report["trained"] == [] and report["skipped"] == [0, 1, 2]
    assert report["executor"] == "executor: sequential (1 worker)"  # as the run's header line says
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


def test_walk_forward_trades_each_test_part_and_ends_with_the_forward_summary(experiment):
    work, proc = experiment
    assert "test parts of 60" in proc.stdout and "252 periods a year" in proc.stdout
    assert (work / "results/1003/forward_returns.csv").is_file()
    as_json = run("forward", "results/1003", "--json", cwd=work)
    assert as_json.returncode == EXIT_OK, as_json.stderr
    report = json.loads(as_json.stdout)
    assert {"iterations", "stitched", "baseline", "deflated_sharpe", "pbo"} <= set(report)
    assert set(report["baseline"]) == {"buy_and_hold", "flat"} and report["pbo"] is None
    assert [it["iteration"] for it in report["iterations"]] == [0, 1, 2]
    for it in report["iterations"]:
        assert {"iteration", "candidate", "selection_score", "forward", "placeholder"} <= set(it)
    # 400 prices, train 150, validation 60, test 60: three test parts tile rows 210..389
    assert (report["stitched"]["first_row"], report["stitched"]["last_row"]) == (211, 390)
    mine, hold = report["stitched"]["metrics"], report["baseline"]["buy_and_hold"]
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731 - the CLI's number format
    summary = proc.stdout[proc.stdout.index("forward (") :]
    assert f"sharpe={fmt(mine['sharpe'])} total_return={fmt(mine['total_return'])}" in summary
    assert f"buy-and-hold over the same periods: sharpe={fmt(hold['sharpe'])}" in summary
    assert f"deflated Sharpe ratio: {fmt(report['deflated_sharpe'])}" in summary
    text = run("forward", "results/1003", cwd=work)
    assert text.returncode == EXIT_OK and "fwd sharpe" in text.stdout and "buy-and-hold: sharpe=" in text.stdout
    assert "deflated Sharpe ratio" in text.stdout and "PBO: PBO compares candidates" in text.stdout


def test_forward_exit_codes(copy):
    (copy / "results/1003/forward_returns.csv").unlink()
    missing = run("forward", "results/1003", cwd=copy)
    assert missing.returncode == EXIT_NOT_FOUND and "forward_returns.csv is missing" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    path = copy / "results/1003/checkpoints/forward_iter_1.json"
    path.write_text(path.read_text().replace('"returns": [', '"returns": [0.5, ', 1))
    damaged = run("forward", "results/1003", cwd=copy)
    assert damaged.returncode == EXIT_INTEGRITY and "Traceback" not in damaged.stderr
    assert run("verify", "results/1003", cwd=copy).returncode == EXIT_INTEGRITY


#: Fingerprints of the walk-forward command before test parts existed (computed with that code):
#: ``--test-size 0`` must give them again, so that those repositories resume.
OLD_FINGERPRINTS = [
    (["--total-timesteps", "10000"], "f5de9acd01855ca92b25c750714280037d502e1771f386f2eae430f9218ddddb"),
    (
        ["--total-timesteps", "640", "--algo", "a2c", "--n-steps", "32", "--train-size", "300", "--val-size", "100"]
        + ["--step", "50", "--gap", "5", "--window-mode", "anchored", "--seed", "3", "--n-prices", "900"]
        + ["--data-seed", "2"],
        "0410a596ed21a5becefe87b2be3682b1f69744676abef590834b64b521ef2b4a",
    ),
    (
        ["--total-timesteps", "1000", "--data", "CSV", "--train-size", "300", "--val-size", "100"]
        + ["--periods-per-year", "252"],  # a CSV's dates are annualized from their calendar now
        "8e936604ab39b0c4c7d8bf7a64400e6d080680138fd8d6156c97a7dd795990c3",
    ),
]


@pytest.mark.parametrize("flags, fingerprint", OLD_FINGERPRINTS)
def test_test_size_0_keeps_the_fingerprint_of_earlier_runs(tmp_path, flags, fingerprint):
    from sb3_iter_ckpt import cli
    from sb3_iter_ckpt.data import synthetic_prices
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    synthetic_prices(900, seed=1).to_csv(tmp_path / "prices.csv")
    flags = [str(tmp_path / "prices.csv") if f == "CSV" else f for f in flags]

    def runner(*extra):
        args = cli.build_parser().parse_args(["walk-forward", "--experiment-id", "x", *flags, *extra])
        args.test_size = args.val_size if args.test_size is None else args.test_size
        prices = cli._prices(args)
        splitter, options = cli._splitter(args, len(prices)), cli._run_options(args)
        return WalkForwardRunner(prices, splitter, tmp_path / "r", options=options, progress=False)

    assert runner("--test-size", "0").fingerprint() == fingerprint
    assert runner().fingerprint() != fingerprint  # the default trades a test part: another configuration


def test_walk_forward_on_hourly_day_first_dates_annualizes_them_as_hours(tmp_path):
    import numpy as np
    import pandas as pd

    hours = pd.date_range("2017-01-13", periods=300, freq="h")
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.002, 300)))
    rows = [f"{t:%d.%m.%Y %H:%M:%S}.000,{float(c)!r}" for t, c in zip(hours, closes, strict=True)]
    (tmp_path / "fx.csv").write_text("Time,Close\n" + "\n".join(rows) + "\n")
    flags = ["--data", "fx.csv", "--date-column", "time", "--date-format", "%d.%m.%Y %H:%M:%S.%f"]
    flags += ["--iterations", "1", "--train-size", "150", "--val-size", "60", "--total-timesteps", "64"]
    proc = run("walk-forward", "--experiment-id", "fx", *flags, "--n-steps", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "8766 periods a year" in proc.stdout  # 24 x 365.25 hourly bars, not 252 days
    from sb3_iter_ckpt import CheckpointRepository

    repo = CheckpointRepository(tmp_path / "results/fx")
    assert repo.get(0).record["metadata"]["periods_per_year"] == pytest.approx(8766)
    assert repo.forward(0).periods_per_year == pytest.approx(8766)


def test_walk_forward_with_two_algorithms_chooses_per_window_and_reports_the_candidates(tmp_path):
    flags = [*TINY, "--iterations", "2", "--algo", "ppo,a2c", "--seeds", "2", "--n-steps", "32", "--json"]
    proc = run("walk-forward", "--experiment-id", "c", *flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    names = {"ppo-s0", "ppo-s1", "a2c-s0", "a2c-s1"}
    assert {p.name for p in (tmp_path / "results/c/candidates").iterdir()} == names
    assert out["forward"]["n_trials"] == 4 and out["forward"]["pbo"] is not None
    assert [ck["iteration"] for ck in out["checkpoints"]] == [0, 1]
    for ck in out["checkpoints"]:
        assert set(ck["candidate"]["scores"]) == names and ck["candidate"]["name"] in names
        assert ck["candidate"]["score"] == max(v for v in ck["candidate"]["scores"].values() if v is not None)
    table = run("forward", "results/c", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = [ln.split() for ln in table.stdout.splitlines()[2:4]]
    assert [r[0] for r in rows] == ["0", "1"] and all(r[1] in names for r in rows)
    text = run("walk-forward", "--experiment-id", "c", *flags[:-1], cwd=tmp_path)  # resumed: nothing trained
    assert text.returncode == 0, text.stderr
    assert "4 candidates per window (ppo-s0, ppo-s1, a2c-s0, a2c-s1)" in text.stdout
    assert (
        "(4 trial(s))" in text.stdout
        and "probability of backtest overfitting (PBO, over the 4 candidates)" in text.stdout
    )
    assert "report: " in text.stdout and "Traceback" not in text.stderr


def test_walk_forward_trains_the_finrl_ensemble_each_on_its_actions_and_reports_all_five(tmp_path):
    """``--algo a2c,ppo,ddpg,sac,td3``: A2C and PPO on the built-in env's discrete positions, DDPG, SAC and TD3 on
    its continuous ones, one choice per window; ``--algo-kwargs`` lets the off-policy ones learn at this budget."""
    from sb3_iter_ckpt import CheckpointRepository

    off = '{"learning_starts": 16, "batch_size": 16, "buffer_size": 256}'
    flags = [*TINY, "--iterations", "2", "--n-steps", "32", "--algo", "a2c,ppo,ddpg,sac,td3"]
    flags += [arg for algo in ("ddpg", "sac", "td3") for arg in ("--algo-kwargs", f"{algo}:{off}")]
    proc = run("walk-forward", "--experiment-id", "finrl", *flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = ["a2c-s0", "ppo-s0", "ddpg-s0", "sac-s0", "td3-s0"]
    assert f"5 candidates per window ({', '.join(names)})" in proc.stdout
    assert "(5 trial(s))" in proc.stdout and "PBO, over the 5 candidates" in proc.stdout
    root = CheckpointRepository(tmp_path / "results/finrl")
    assert sorted(p.name for p in (tmp_path / "results/finrl/candidates").iterdir()) == sorted(names)
    assert root.iterations() == [0, 1]
    for ck in root.list():  # a choice per window among the five
        assert set(ck.record["candidate"]["scores"]) == set(names) and ck.record["candidate"]["name"] in names
    config = root.read_metadata("walk_forward.json")["config"]
    kwargs = {c["name"]: c["algo_kwargs"] for c in config["candidates"]}
    assert kwargs["sac-s0"] == {"learning_starts": 16, "batch_size": 16, "buffer_size": 256}
    assert kwargs["ppo-s0"] == {"n_steps": 32, "batch_size": 32} and kwargs["a2c-s0"] == {"n_steps": 32}
    for name in names:  # the continuous ones held positions between short, flat and long
        positions = {p for f in root.candidate(name).forwards() for p in f.positions}
        assert (positions <= {-1.0, 0.0, 1.0}) is (name in ("a2c-s0", "ppo-s0")), name
    html = (tmp_path / "results/finrl/report.html").read_text()
    assert all(f"{name}: forward sharpe" in html for name in names)  # the report's candidates chart
