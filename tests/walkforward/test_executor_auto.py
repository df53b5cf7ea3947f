"""``executor="auto"``, the default: the process pool when more than one CPU and more than one window at once, else
sequential, said in one line; a run whose settings cannot reach a ``spawn`` worker falls back instead of failing.

Real runs at tiny budgets: an auto run with candidates and test parts against the sequential one of the same
settings (the conftest's ``candidates_run``), and scripts run as a user runs them (guarded, unguarded, ``python -c``,
one CPU by affinity). CI has two cores; on a one-CPU machine the tests that need the pool are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate
from sb3_iter_ckpt.common.record import FORWARD_RETURNS
from sb3_iter_ckpt.envs import TradingEnv
from sb3_iter_ckpt.runner.auto import available_cpus, cgroup_cpus, choose, unsendable
from sb3_iter_ckpt.runner.executors import ProcessExecutor, SequentialExecutor
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import WalkForwardRunner

ROOT = Path(__file__).resolve().parents[2]
two_cpus = pytest.mark.skipif(available_cpus() < 2, reason="auto chooses the pool only with two CPUs or more")


def _same_but_times(value):
    """A record without what two identical runs differ in: the commit time and the hashes of SB3's zips (they
    stamp the save time), wherever they are named (the root's records name each candidate's model hash)."""
    if isinstance(value, dict):
        return {k: _same_but_times(v) for k, v in value.items() if k != "created_at" and "sha256" not in k}
    if isinstance(value, list):
        return [_same_but_times(v) for v in value]
    return value


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(root.rglob("*_iter_*.json")):
        if not path.name.startswith("forward_"):
            out[str(path.relative_to(root))] = _same_but_times(json.loads(path.read_bytes()))
    return out


def _forwards(root: Path) -> dict[str, list[bytes]]:
    """Every forward result's content, the root's and each candidate's."""
    repo = CheckpointRepository(root)
    out = {"root": [f.to_json_bytes() for f in repo.forwards()]}
    for name in ("ppo-s0", "a2c-s1"):
        out[name] = [f.to_json_bytes() for f in repo.candidate(name).forwards()]
    return out


@two_cpus
def test_auto_trains_the_candidates_in_a_pool_and_gives_the_sequential_forward_results(
    candidates_run, prices, tiny_algo, tmp_path
):
    """The conftest's run with two candidates and test parts, sequential, against the same settings with the default
    executor: the pool is chosen (two CPUs, two candidates per window), windows train in its workers, and the
    forward results, ``forward_returns.csv`` and the records are the same but for times and zip hashes."""
    seq_root, _, seq = candidates_run
    candidates = (
        Candidate("ppo-s0", "ppo", 7, dict(n_steps=64, batch_size=64, n_epochs=1)),
        Candidate("a2c-s1", "a2c", 8, dict(n_steps=16)),
    )  # the conftest's, as its docstring asks
    root = tmp_path / "auto"
    runner = WalkForwardRunner(
        prices, WalkForwardSplitter(150, 60, test_size=60), root, 128,
        algo_kwargs=tiny_algo, eval_freq=32, progress=False, seed=7, candidates=candidates,
    )  # fmt: skip
    result = runner.run()
    assert result.executor is not None and result.executor.startswith("executor: process (2 workers x 1 torch thread")
    assert "2 candidates per window" in result.executor, result.executor
    pids = {o["pid"] for r in result.candidates.values() for o in r.outcomes.values()}
    assert pids and os.getpid() not in pids, "auto trained in the driver"
    assert seq.executor == "executor: sequential (1 worker)"
    assert (root / FORWARD_RETURNS).read_bytes() == (seq_root / FORWARD_RETURNS).read_bytes()
    assert _forwards(root) == _forwards(seq_root)
    assert _records(root) == _records(seq_root)
    assert result.trained == seq.trained == [0, 1, 2] and result.best.iteration == seq.best.iteration
    assert CheckpointRepository(root).verify() == []


def test_the_choice_follows_the_cpus_the_windows_and_the_threads():
    def refuse() -> str | None:
        raise AssertionError("the settings are checked only when the pool would be chosen")

    sequential = {
        "executor: sequential (1 CPU, 2 candidates per window)": choose(1, 14, 1, shape="2 candidates per window"),
        "executor: sequential (2 CPUs, 1 window can train at a time)": choose(2, 1, 1, why_not=refuse),
        "executor: sequential (2 CPUs, no window to train)": choose(2, 0, 1, why_not=refuse),
        "executor: sequential (1 worker asked)": choose(4, 14, 1, n_jobs=1, why_not=refuse),
        "executor: sequential (2 CPUs, 2 torch threads per window: no CPUs left for a second worker)": choose(2, 9, 2),
    }
    for line, choice in sequential.items():
        assert isinstance(choice.executor, SequentialExecutor) and choice.line == line and choice.fallback is None
    # workers x torch threads never exceed the CPUs; torch's own setting (None) shares the CPUs out
    for cpus, concurrent, threads, n_jobs, workers, per_worker in [
        (2, 14, 1, None, 2, 1),
        (16, 3, 1, None, 3, 1),
        (16, 2, None, None, 2, 8),
        (16, 14, None, None, 14, 1),
        (8, 14, 2, None, 4, 2),
        (8, 14, 1, 3, 3, 1),
    ]:
        choice = choose(cpus, concurrent, threads, n_jobs=n_jobs)
        pool = choice.executor
        assert isinstance(pool, ProcessExecutor), choice.line
        assert (pool.workers, pool.torch_threads) == (workers, per_worker), choice.line
        assert workers * per_worker <= cpus
    line = choose(2, 14, 1, shape="2 candidates per window").line
    expected = "2 workers x 1 torch thread: 2 CPUs, 14 windows can train at once, 2 candidates per window"
    assert line == f"executor: process ({expected})"
    fallback = choose(2, 14, 1, why_not=lambda: "make_env cannot be pickled")
    assert isinstance(fallback.executor, SequentialExecutor) and fallback.fallback == "make_env cannot be pickled"
    assert fallback.line == "executor: sequential (make_env cannot be pickled)"


@two_cpus
def test_settings_that_cannot_reach_a_worker_fall_back_to_sequential_with_a_warning(prices, tmp_path, tiny_algo):
    splitter = WalkForwardSplitter(150, 60, max_windows=2)
    runner = WalkForwardRunner(
        prices, splitter, tmp_path / "lambda", 128, algo_kwargs=tiny_algo, eval_freq=64, progress=False,
        make_env=lambda segment, seed: TradingEnv(segment),
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"in this process: .*make_env \(.*<lambda>\) cannot be pickled"):
        result = runner.run()
    assert result.trained == [0, 1] and {o["pid"] for o in result.outcomes.values()} == {os.getpid()}
    assert result.executor.startswith("executor: sequential (the run's settings cannot be sent to a worker process")
    assert "\n" not in result.executor


_SCRIPT = """
import os, sys
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.envs import TradingEnv
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.walkforward import WalkForwardRunner


def make_env(segment, seed):
    return TradingEnv(segment)


def run(root):
    runner = WalkForwardRunner(
        synthetic_prices(420, seed=3), WalkForwardSplitter(150, 60, max_windows=2), root, 64,
        algo_kwargs=dict(n_steps=32, batch_size=32, n_epochs=1), progress=False, make_env=make_env,
    )
    result = runner.run()
    print("LINE", result.executor)
    print("IN DRIVER", {o["pid"] for o in result.outcomes.values()} == {os.getpid()})
"""


def _script(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``python ARGV`` in ``tmp_path``, as a user runs a script; it must succeed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SB3_LOGDIR": str(tmp_path / "logs")}
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@two_cpus
@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_a_script_trains_in_the_pool_only_under_its_main_guard(tmp_path, guarded):
    """A guarded script's ``make_env`` (defined in ``__main__``) reaches the workers; an unguarded script would be
    run again from its top by every worker, so auto trains it in its own process and says why."""
    entry = 'if __name__ == "__main__":\n    run("exp")\n' if guarded else 'run("exp")\n'
    (tmp_path / "wf.py").write_text(_SCRIPT + "\n\n" + entry)
    proc = _script(tmp_path, "wf.py")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("LINE "))
    if guarded:
        assert line.startswith("LINE executor: process (2 workers"), line
        assert "IN DRIVER False" in proc.stdout
    else:
        assert "not under `if __name__ == '__main__':`" in line and "wf.py line" in line, line
        assert "IN DRIVER True" in proc.stdout
        assert "UserWarning: executor='auto' trains the windows in this process" in proc.stderr


@two_cpus
def test_functions_of_a_main_without_a_file_stay_in_the_driver(tmp_path):
    """``python -c`` (as a notebook): a worker cannot import ``__main__.make_env``; auto trains in the driver."""
    proc = _script(tmp_path, "-c", textwrap.dedent(_SCRIPT) + '\nrun("exp")\n')
    assert "IN DRIVER True" in proc.stdout
    assert "name make_env from __main__, which a worker process cannot import" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # cgroup v2, docker --cpus=1.5
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_containers_cpu_quota_caps_the_cpus(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpus(str(tmp_path)) == quota
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cpus(str(tmp_path)) == min(affinity, quota or affinity)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="an affinity mask")
def test_the_process_pools_default_workers_are_the_cpus_auto_counts(monkeypatch):
    """``--executor process`` without ``--workers`` in a container or a pinned process: the CPUs it may use,
    as ``auto`` counts them, not the host's."""
    from sb3_iter_ckpt.runner.executors import ProcessExecutor

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert ProcessExecutor().workers == 1 == available_cpus()
    assert ProcessExecutor(3).workers == 3


def test_settings_from_a_module_made_at_run_time_stay_in_the_driver(monkeypatch):
    """A module built at run time (``types.ModuleType``, as a docs runner or a notebook tool does) pickles here,
    but a worker cannot import it by its name."""
    module = types.ModuleType("made_at_run_time")
    exec("def make_env(segment, seed):\n    return None", module.__dict__)  # noqa: S102 - the module's only code
    monkeypatch.setitem(sys.modules, module.__name__, module)
    why = unsendable({"make_env": module.make_env})
    assert why is not None and "name make_env from made_at_run_time, a module made at run time" in why
    assert unsendable({"make_env": TradingEnv}) is None  # an installed module's class is imported by its name


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_the_cli_defaults_to_auto_and_says_one_cpu_means_sequential(tmp_path):
    """The command on one CPU (its affinity set as ``taskset`` would): the header names the executor and why."""
    cpu = min(os.sched_getaffinity(0))
    exe = str(Path(sys.executable).with_name("sb3-iter-ckpt"))
    args = [exe, "walk-forward", "--experiment-id", "one", "--n-prices", "400", "--train-size", "150"]
    args += ["--val-size", "60", "--iterations", "2", "--total-timesteps", "64", "--n-steps", "32", "--algo", "ppo,a2c"]
    env = {**os.environ, "SB3_LOGDIR": str(tmp_path / "logs")}
    proc = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "executor: sequential (1 CPU, 2 candidates per window)" in proc.stdout.splitlines(), proc.stdout
