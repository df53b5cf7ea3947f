#!/usr/bin/env python
"""Kill a real walk-forward at random instants and check the repository after every kill.

Usage::

    python tools/kill_harness.py --trials 500 --seed 1
    python tools/kill_harness.py --trials 50 --seed 0 --json     # the figures as JSON
    python tools/kill_harness.py --scenario walk-forward --trials 200 --seed 1

Two scenarios (``--scenario``; ``all`` runs both). **callback** (the default): each trial starts a
worker that trains a tiny PPO on CartPole with ``IterationCheckpointCallback``
(``iteration=None``: it continues where the repository ends), committing a new iteration every 64
timesteps, and sends it SIGKILL at a random instant: anywhere (start-up, training, sweeping), or a
random delay after it entered a commit, the best-model/summary refresh or a retention prune. Trials
vary: most run a retention policy after every commit, half commit asynchronously
(``async_commit=True``), and half run two writer processes on the same root (explicit, interleaved
iteration numbers), both killed. After every kill:

- the repository opens (which sweeps the dead writer's leftovers) and ``verify()`` reports nothing;
- every listed iteration loads (the model, and its VecNormalize statistics);
- no temporary or intent file is visible;
- no record seen after an earlier kill is lost or changed (nothing overwritten; a record that
  retention marked ``pruned``, with nothing else changed, is allowed);
- the next worker's first commit is the repository's next free iteration.

Starting Python with torch and SB3 costs seconds, so workers are forked from one *zygote* process
that imported everything once; a worker costs about 0.1 s. Workers report where they are with
one-line markers on a pipe (``B i``/``E i`` around ``commit``, ``R``/``r`` around ``refresh``,
``P``/``p`` around ``prune``), written before and after the call, so the last markers read after the
kill tell where it died. The markers come from a subclass of ``CheckpointRepository`` defined here:
the package has no test hook.

**walk-forward** (``run_walk_forward_trials``): a real ``WalkForwardRunner`` with test parts (three windows,
the sequential executor), with two candidates (PPO and A2C: each trains every window into
``candidates/<name>/``, ``publish_choice`` copies each window's choice into the root) or one algorithm,
signed with a key in half the trials, is killed once per trial in a fresh root: at a random delay, or
inside the n-th window's training, commit, forward commit, refresh, ``publish_choice``, stitch or a run's
close (``candidates`` and ``single`` pick one variant). Right after the kill, the root opens and
``verify()`` is empty; then a fresh worker reruns it to its end, and ``check_walk_forward`` requires:
``verify()`` empty (the root, which descends into the candidates); ``forward_returns.csv``, both
summaries, ``walk_forward.json`` and ``best_model.zip`` present in the root and in every candidate's
folder; the summaries equal to what the repository computes now (times and size on disk aside), with a
forward analysis; ``best_model.zip`` the best iteration's model; the curve the stitch of the forward
results; and the records, forward results and curve those of an uninterrupted reference run of the same
variant (the run is deterministic; a model zip's bytes are not, so they are not compared). Markers for
this scenario are patched onto the package's classes in the forked worker (``_mark_walk_forward``).

The same zygote also runs the concurrent-writer scenarios of ``tests/reliability/test_reliability_kill.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TRIALS_ENV = "SB3_ITER_CKPT_KILL_TRIALS"
#: The number of trials of the test suite's short walk-forward run (tests/reliability/test_reliability_kill.py).
WF_TRIALS_ENV = "SB3_ITER_CKPT_KILL_WF_TRIALS"
_LEFTOVER_RE = re.compile(r"(\.sb3ckpt-tmp-.+-\d+-[0-9a-f]{8}$)|(^\.sb3ckpt-intent-)")


# ------------------------------------------------------------------------------------------------
# Worker side (runs in processes forked from the zygote)
# ------------------------------------------------------------------------------------------------
def _emit(line: str) -> None:
    """One marker line, written with a single ``write`` (atomic on a pipe below PIPE_BUF)."""
    os.write(1, f"M {os.getpid()} {line}\n".encode())


def _marked_repository_class() -> type:
    from sb3_iter_ckpt import CheckpointRepository

    class MarkedRepository(CheckpointRepository):
        """Announces commits and refreshes on the marker pipe; changes nothing else."""

        def commit(self, iteration: int, **kwargs: Any):  # type: ignore[override]
            _emit(f"B {iteration}")
            ck = super().commit(iteration, **kwargs)
            _emit(f"E {iteration}")
            return ck

        def refresh(self, monitor: str | None = None, mode: str | None = None) -> None:
            _emit("R")
            super().refresh(monitor, mode)
            _emit("r")

        def prune(self, *args: Any, **kwargs: Any):  # type: ignore[override]
            _emit("P")
            result = super().prune(*args, **kwargs)
            _emit("p")
            return result

    return MarkedRepository


def _retention(spec: dict[str, int] | None):
    """A retention policy from ``{"keep_last_n": 2, "keep_every_n": 3}`` (None: no retention)."""
    from sb3_iter_ckpt.retention import policy_from_args

    return policy_from_args(**spec) if spec else None


def _die_after_pruning(repo: Any) -> None:
    """SIGKILL this process right after ``prune()`` deleted its first model file: the exact point
    between deleting and refreshing that an unlucky kill can hit (a deterministic regression test)."""
    storage_delete = repo.storage.delete
    inner_prune = repo.prune
    armed = [False]

    def delete(name: str, *args: Any, **kwargs: Any) -> Any:
        result = storage_delete(name, *args, **kwargs)
        if armed[0] and name.startswith("checkpoints/model_iter_"):
            _emit(f"KILLED after deleting {name}")
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def prune(*args: Any, **kwargs: Any) -> Any:
        armed[0] = True
        try:
            return inner_prune(*args, **kwargs)
        finally:
            armed[0] = False

    repo.storage.delete = delete
    repo.prune = prune


def _make_model(seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=seed), norm_reward=False)
    return PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=seed,
        device="cpu",
        policy_kwargs=dict(net_arch=[16]),
    )


def _task_walk(task: dict[str, Any]) -> dict[str, Any]:
    """A walk-forward that never ends by itself: iteration=None, an iteration every 64 timesteps."""
    from sb3_iter_ckpt import IterationCheckpointCallback

    repo = _marked_repository_class()(task["root"])
    _emit("OPEN")
    model = _make_model(task["seed"])
    cb = IterationCheckpointCallback(
        repo,
        iteration=None,
        eval_freq=32,
        iteration_timesteps=64,
        on_error="raise",
        retention=_retention(task.get("retention")),
        async_commit=task.get("async_commit", False),
    )
    _emit("START")
    for _ in range(task.get("rounds", 10**9)):
        model.learn(64 * 8, callback=cb, reset_num_timesteps=False)
    return {"committed": [c.iteration for c in cb.committed]}


def _task_iterations(task: dict[str, Any]) -> dict[str, Any]:
    """Parallel walk-forward worker: one ``learn()`` per given iteration number, in order."""
    from sb3_iter_ckpt import IterationCheckpointCallback

    repo = _marked_repository_class()(task["root"])
    model = _make_model(task["seed"])
    start_at = task.get("start_at")
    if start_at:
        time.sleep(max(0.0, start_at - time.time()))
    done = []
    for i in task["iterations"]:
        cb = IterationCheckpointCallback(
            repo,
            iteration=i,
            eval_freq=32,
            on_error="raise",
            metadata={"writer": os.getpid()},
            retention=_retention(task.get("retention")),
            async_commit=task.get("async_commit", False),
        )
        model.learn(task.get("timesteps", 96), callback=cb, reset_num_timesteps=False)
        done += [c.iteration for c in cb.committed]
    return {"committed": done}


def _task_commits(task: dict[str, Any]) -> dict[str, Any]:
    """Many commits and refreshes, no training between them: the most contention on the lock."""
    import io

    repo = _marked_repository_class()(task["root"])
    buf = io.BytesIO()
    _make_model(task["seed"]).save(buf)
    model = buf.getvalue()
    start_at = task.get("start_at")
    if start_at:
        time.sleep(max(0.0, start_at - time.time()))
    for i in task["iterations"]:
        repo.commit(
            i,
            metrics={"mean_reward": float(task["scores"][str(i)])},
            model=model,
            extra={"algorithm": "stable_baselines3.ppo.ppo.PPO", "metadata": {"writer": os.getpid()}},
        )
        repo.refresh()
    return {"committed": list(task["iterations"])}


def _task_prune_window(task: dict[str, Any]) -> dict[str, Any]:
    """Iteration 0 is the best and named by the summaries; iteration 1 scores better; retention keeps
    only the last one, so pruning deletes the model the summaries named. The worker kills itself right
    after that delete (``_die_after_pruning``). ``how``: ``prune`` (a user's ``repository.prune()``
    while the writer of iteration 1 has not refreshed yet), ``callback`` or ``callback_async``."""
    import io

    from sb3_iter_ckpt import IterationCheckpointCallback
    from sb3_iter_ckpt.retention import KeepLastN

    repo = _marked_repository_class()(task["root"])
    buf = io.BytesIO()
    model = _make_model(task["seed"])
    model.save(buf)
    extra = {"algorithm": "stable_baselines3.ppo.ppo.PPO"}
    repo.commit(0, metrics={"mean_reward": 10.0}, model=buf.getvalue(), extra=extra)
    repo.refresh()
    _die_after_pruning(repo)
    if task["how"] == "prune":
        repo.commit(1, metrics={"mean_reward": 20.0}, model=buf.getvalue(), extra=extra)
        repo.prune(keep_last_n=1)
    else:
        cb = IterationCheckpointCallback(
            repo,
            iteration=1,
            eval_freq=32,
            evaluator=lambda model, env: {"mean_reward": 20.0},
            on_error="raise",
            retention=KeepLastN(1),
            async_commit=task["how"] == "callback_async",
        )
        model.learn(64, callback=cb, reset_num_timesteps=False)
    return {"survived": True}


# -- the walk-forward scenario: WalkForwardRunner with test parts (and candidates), killed, rerun --------------
#: The signed variants' key: a test key that protects nothing.
WF_KEY = "kill-harness signing key"
WF_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
#: Begin markers of the walk-forward scenario (the end marker is the same letter in lower case):
#: a window's train_window, a commit, a forward result's commit, a refresh, publish_choice, the stitch,
#: a run's close (each member's, then the root's).
WF_PHASES = ("W", "B", "F", "R", "C", "S", "X")


def walk_forward_data() -> tuple[Any, Any]:
    """The prices and the splitter of the scenario: three windows of 150 train, 60 validation, 60 test days."""
    from sb3_iter_ckpt.data import synthetic_prices
    from sb3_iter_ckpt.splitter import WalkForwardSplitter

    return synthetic_prices(420, seed=3), WalkForwardSplitter(150, 60, test_size=60)


def walk_forward_runner(root: str | os.PathLike[str], candidates: bool, key: str | None) -> Any:
    """The scenario's runner: 128 timesteps per window, the sequential executor; with ``candidates``,
    a PPO and an A2C candidate (their windows in ``candidates/<name>/``, the choice copied into the root)."""
    from sb3_iter_ckpt import CheckpointRepository
    from sb3_iter_ckpt.walkforward import Candidate, SequentialExecutor, WalkForwardRunner

    prices, splitter = walk_forward_data()
    settings: dict[str, Any] = dict(algo_kwargs=WF_PPO, eval_freq=32, progress=False, seed=7)
    if candidates:
        settings["candidates"] = (
            Candidate("ppo-s0", "ppo", 7, WF_PPO),
            Candidate("a2c-s1", "a2c", 8, {"n_steps": 16}),
        )
    repo = CheckpointRepository(root, signing_key=key)
    return WalkForwardRunner(prices, splitter, repo, 128, executor=SequentialExecutor(), **settings)


def _mark_walk_forward() -> None:
    """Markers around the walk-forward's steps, patched onto the package's classes and functions in this
    worker only (a fork of the zygote: nothing else sees them). The candidates' repositories are plain
    ``CheckpointRepository`` objects the runner opens itself, so a subclass would not reach them."""
    from sb3_iter_ckpt import walkforward
    from sb3_iter_ckpt.repository import CheckpointRepository
    from sb3_iter_ckpt.runner import ensemble, executors

    def who(repo: Any) -> str:
        path = Path(str(repo.root))
        return path.name if path.parent.name == "candidates" else "root"

    def marked(kind: str, fn: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            text = label(*args, **kwargs)
            _emit(f"{kind} {text}")
            try:
                return fn(*args, **kwargs)
            finally:
                _emit(f"{kind.lower()} {text}")

        return wrapper

    repo_cls = CheckpointRepository
    repo_cls.commit = marked("B", repo_cls.commit, lambda self, i, *a, **k: f"{who(self)} {i}")  # type: ignore[method-assign]
    repo_cls.commit_forward = marked("F", repo_cls.commit_forward, lambda self, r: f"{who(self)} {r.iteration}")  # type: ignore[method-assign]
    repo_cls.refresh = marked("R", repo_cls.refresh, lambda self, *a, **k: who(self))  # type: ignore[method-assign]
    ensemble.publish_choice = marked("C", ensemble.publish_choice, lambda root, i, *a, **k: f"root {i}")
    executors.train_window = marked(
        "W", executors.train_window, lambda spec: f"{spec.candidate or 'root'} {spec.iteration}"
    )
    run_cls = walkforward._Run
    run_cls.stitch = marked("S", run_cls.stitch, lambda self: who(self.runner.repository))  # type: ignore[method-assign]
    run_cls.close = marked("X", run_cls.close, lambda self: who(self.runner.repository))  # type: ignore[method-assign]


def _task_walk_forward(task: dict[str, Any]) -> dict[str, Any]:
    """A walk-forward with test parts (and candidates) run to its end, signed with ``key`` when given."""
    from sb3_iter_ckpt.repository import SIGNING_KEY_ENV

    os.environ.pop(SIGNING_KEY_ENV, None)  # signed exactly when the task says so
    _mark_walk_forward()
    runner = walk_forward_runner(task["root"], task["candidates"], task.get("key"))
    _emit("START")
    result = runner.run()
    members = {name: sorted(r.trained) for name, r in result.candidates.items()}
    return {"trained": sorted(result.trained), "members": members, "forward": result.forward is not None}


_TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "walk": _task_walk,
    "iterations": _task_iterations,
    "commits": _task_commits,
    "prune_window": _task_prune_window,
    "walk_forward": _task_walk_forward,
}


def _worker(task: dict[str, Any]) -> int:
    import torch

    torch.set_num_threads(1)
    try:
        result = _TASKS[task["task"]](task)
    except BaseException as exc:  # reported to the parent, which decides whether it was expected
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:1500]
        _emit("FAIL " + msg)
        sys.stderr.write(traceback.format_exc())
        sys.stderr.flush()
        return 1
    _emit("DONE " + json.dumps(result))
    return 0


def _zygote_main() -> None:
    """Import everything once, then fork a worker per ``fork <task json>`` line on stdin."""
    import gymnasium  # noqa: F401
    import stable_baselines3  # noqa: F401
    import torch

    import sb3_iter_ckpt  # noqa: F401
    import sb3_iter_ckpt.repository  # noqa: F401
    import sb3_iter_ckpt.walkforward  # noqa: F401  (the walk-forward scenario: runner, ensemble, forward)
    from sb3_iter_ckpt.forward import stitching, trade  # noqa: F401
    from sb3_iter_ckpt.runner import ensemble, window  # noqa: F401

    torch.set_num_threads(1)
    # Warm up what a worker's first model would pay for (lazy imports, env registration, torch
    # initialization), so that a forked worker starts training in milliseconds.
    _make_model(0).get_env().close()
    out = sys.stdout.fileno()
    os.write(out, b"READY\n")
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "fork":
            task = json.loads(arg)
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    code = _worker(task)
                finally:
                    os._exit(code)
            os.write(out, f"PID {pid}\n".encode())
        elif cmd == "reap":
            pid = int(arg)
            _, status = os.waitpid(pid, 0)
            os.write(out, f"REAPED {pid} {status}\n".encode())
        elif cmd == "quit":
            break


# ------------------------------------------------------------------------------------------------
# Parent side
# ------------------------------------------------------------------------------------------------
@dataclass
class WorkerLog:
    pid: int
    markers: list[tuple[float, str]] = field(default_factory=list)
    status: int | None = None

    @property
    def done(self) -> dict[str, Any] | None:
        for _, m in self.markers:
            if m.startswith("DONE "):
                return json.loads(m[5:])
        return None

    @property
    def failure(self) -> str | None:
        for _, m in self.markers:
            if m.startswith("FAIL "):
                return m[5:]
        return None

    def last(self, kinds: tuple[str, ...]) -> str | None:
        for _, m in reversed(self.markers):
            if m.split(" ", 1)[0] in kinds:
                return m
        return None


class Zygote:
    """A Python process with torch/SB3 imported, forking cheap workers on request."""

    def __init__(self, stderr_path: str | os.PathLike[str] | None = None, startup_timeout: float = 180.0) -> None:
        self._stderr = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(os.environ),
            bufsize=0,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        self.workers: dict[int, WorkerLog] = {}
        self._replies: list[str] = []
        self._expect("READY", startup_timeout)

    # -- the pipe ---------------------------------------------------------------------------------
    def poll(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; route markers to their workers. True if read."""
        got = False
        if self._sel.select(timeout):
            assert self.proc.stdout is not None
            try:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                chunk = b""
            if not chunk and self.proc.poll() is not None:
                raise RuntimeError(f"the zygote exited with {self.proc.returncode}")
            self._buf += chunk
            got = bool(chunk)
        now = time.monotonic()
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            line = raw.decode(errors="replace")
            if line.startswith("M "):
                _, pid, marker = line.split(" ", 2)
                self.workers.setdefault(int(pid), WorkerLog(int(pid))).markers.append((now, marker))
            else:
                self._replies.append(line)
        return got

    def _expect(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for k, r in enumerate(self._replies):
                if r.startswith(prefix):
                    return self._replies.pop(k)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {prefix!r} from the zygote within {timeout} s")
            self.poll(min(left, 0.5))

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    # -- workers ----------------------------------------------------------------------------------
    def fork(self, task: dict[str, Any]) -> int:
        self._send("fork " + json.dumps(task))
        pid = int(self._expect("PID ").split()[1])
        self.workers.setdefault(pid, WorkerLog(pid))
        return pid

    def reap(self, pid: int, timeout: float = 120.0) -> WorkerLog:
        """Wait for the worker to end; every marker it wrote has been read when this returns."""
        self._send(f"reap {pid}")
        status = int(self._expect(f"REAPED {pid} ", timeout).split()[2])
        log = self.workers.setdefault(pid, WorkerLog(pid))
        log.status = status
        return log

    def kill(self, pid: int) -> WorkerLog:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.reap(pid)

    def wait_for(self, pid: int, predicate: Callable[[WorkerLog], bool], timeout: float) -> bool:
        """Poll until ``predicate(log)`` holds (True) or the worker ended / ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        log = self.workers.setdefault(pid, WorkerLog(pid))
        while time.monotonic() < deadline:
            if predicate(log):
                return True
            if log.failure is not None or log.done is not None:
                return False
            self.poll(min(0.05, max(0.0, deadline - time.monotonic())))
        return predicate(log)

    def close(self) -> None:
        try:
            self._send("quit")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        self._sel.close()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def leftovers(root: str | os.PathLike[str]) -> list[str]:
    """Temporary and intent files visible in the repository (root and ``checkpoints/``)."""
    found = []
    for folder in (Path(root), Path(root) / "checkpoints"):
        if folder.is_dir():
            found += [str(p.relative_to(root)) for p in folder.iterdir() if _LEFTOVER_RE.search(p.name)]
    return sorted(found)


@dataclass
class RepoState:
    """What the checker has seen of one repository, to detect lost or overwritten records."""

    records: dict[str, bytes] = field(default_factory=dict)
    loaded: set[int] = field(default_factory=set)


def check_repository(root: str | os.PathLike[str], state: RepoState, venv: Any = None) -> tuple[list[str], int]:
    """Open, verify, load new iterations, look for leftovers and lost records.

    :return: (problems as text, the repository's next free iteration).
    """
    import warnings

    from sb3_iter_ckpt import CheckpointError, CheckpointRepository

    problems: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            repo = CheckpointRepository(root)
            problems += [f"verify: {p}" for p in repo.verify()]
            cks = repo.list()
        problems += [f"warning: {w.message}" for w in caught]
    except CheckpointError as exc:
        return [f"the repository does not open: {exc!r}"], -1
    problems += [f"leftover after reopening: {n}" for n in leftovers(root)]
    ck_dir = Path(root) / "checkpoints"
    current = {p.name: p.read_bytes() for p in ck_dir.glob("*_iter_*.json")} if ck_dir.is_dir() else {}
    for name, data in state.records.items():
        if name not in current:
            problems.append(f"record lost: {name}")
        elif current[name] != data and not _pruned_from(data, current[name]):
            problems.append(f"record changed (overwritten): {name}")
    state.records.update(current)
    for ck in cks:
        if ck.iteration in state.loaded or not ck.has_model:
            continue
        try:
            repo.load(ck.iteration, device="cpu")
            if venv is not None and "vecnormalize" in ck.artifacts:
                repo.load_vecnormalize(ck.iteration, venv)
            state.loaded.add(ck.iteration)
        except Exception as exc:  # any failure to load is a corrupt load
            problems.append(f"corrupt load: iteration {ck.iteration}: {exc!r}")
    summary_file = Path(root) / "training_summary.json"
    if summary_file.is_file():
        try:
            best = json.loads(summary_file.read_bytes()).get("best") or {}
        except ValueError as exc:
            problems.append(f"training_summary.json unreadable: {exc}")
            best = {}
        for key in ("model_file", "best_model_file"):
            if best.get(key) and not (Path(root) / best[key]).is_file():
                problems.append(f"training_summary.json names a missing file: {best[key]}")
            elif key == "best_model_file" and best.get(key):
                # verify() leaves best_model.zip's content alone (another tool may own the name): check it here
                if hashlib.sha256((Path(root) / best[key]).read_bytes()).hexdigest() != best.get("sha256"):
                    problems.append(f"training_summary.json names {best[key]}, which holds another model")
    return problems, repo.next_iteration()


def _pruned_from(old: bytes, new: bytes) -> bool:
    """True when ``new`` is ``old`` marked pruned by retention: its artifacts moved under ``pruned``."""
    try:
        before, after = json.loads(old), json.loads(new)
    except ValueError:
        return False
    if not isinstance(before, dict) or not isinstance(after, dict) or not isinstance(after.get("pruned"), dict):
        return False
    moved = {k: {f: a.get(f) for f in ("file", "sha256", "size")} for k, a in before.get("artifacts", {}).items()}
    rest = ("artifacts", "pruned", "signature")
    return (
        after.get("artifacts") == {}
        and after["pruned"].get("artifacts") == moved
        and {k: v for k, v in before.items() if k not in rest} == {k: v for k, v in after.items() if k not in rest}
    )


@dataclass
class Figures:
    trials: int = 0
    retention_trials: int = 0
    async_trials: int = 0
    two_writer_trials: int = 0
    kills: int = 0
    kills_in_commit: int = 0
    kills_in_commit_completed: int = 0
    kills_in_refresh: int = 0
    kills_in_prune: int = 0
    kills_elsewhere: int = 0
    iterations_committed: int = 0
    records_lost: int = 0
    corrupt_loads: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0

    def line(self) -> str:
        return (
            f"kill harness: {self.trials} trials (seed {self.seed}; {self.retention_trials} with retention, "
            f"{self.async_trials} with async commit, {self.two_writer_trials} with two writers), {self.kills} kills: "
            f"{self.kills_in_commit} inside a commit ({self.kills_in_commit_completed} after the record was "
            f"published), {self.kills_in_refresh} inside the best/summary refresh, {self.kills_in_prune} inside a "
            f"retention prune, {self.kills_elsewhere} elsewhere; {self.iterations_committed} iterations committed; "
            f"records lost {self.records_lost}, corrupt loads {self.corrupt_loads}, problems {len(self.problems)}; "
            f"{self.seconds:.0f} s"
        )


def run_kill_trials(
    trials: int,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    *,
    trials_per_repo: int = 50,
    log: Callable[[str], None] | None = None,
    zygote: Zygote | None = None,
) -> Figures:
    """Run ``trials`` kill trials; return the figures (``problems`` must be empty).

    :param zygote: A running ``Zygote`` to fork workers from (default: one started for this run).
    """
    from stable_baselines3.common.env_util import make_vec_env

    t0 = time.monotonic()
    rng = random.Random(seed)
    fig = Figures(seed=seed)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="sb3-kill-")
        workdir = own_tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SB3_LOGDIR", str(workdir / "sb3log"))
    venv = make_vec_env("CartPole-v1", n_envs=1)
    commit_s: list[float] = [0.02]
    refresh_s: list[float] = [0.05]
    prune_s: list[float] = [0.1]
    try:
        with contextlib.nullcontext(zygote) if zygote else Zygote(stderr_path=workdir / "workers.stderr") as zyg:
            root = workdir / "repo-0"
            state = RepoState()
            expected_next = 0
            for trial in range(trials):
                if trial and trial % trials_per_repo == 0:  # keep each repository (and each check) small
                    root, state, expected_next = workdir / f"repo-{trial // trials_per_repo}", RepoState(), 0
                retention = rng.choice([{"keep_last_n": 2}, {"keep_last_n": 1, "keep_every_n": 3}])
                retention = retention if rng.random() < 0.75 else None
                options = {"retention": retention, "async_commit": rng.random() < 0.5}
                two = rng.random() < 0.5
                fig.retention_trials += retention is not None
                fig.async_trials += options["async_commit"]
                fig.two_writer_trials += two
                if two:  # two processes on one root, interleaved explicit iterations (never the same one)
                    its = [list(range(expected_next + w, expected_next + 400, 2)) for w in (0, 1)]
                    pids = [
                        zyg.fork(
                            {"task": "iterations", "root": str(root), "seed": rng.randrange(2**31), "iterations": it}
                            | {"timesteps": 64}
                            | options
                        )
                        for it in its
                    ]
                else:
                    pids = [zyg.fork({"task": "walk", "root": str(root), "seed": rng.randrange(2**31)} | options)]
                pid = pids[0]
                where = rng.random()
                if where < 0.3:  # anywhere: start-up, sweep at open, training, commit, refresh, prune
                    time.sleep(rng.uniform(0.0, 0.6))
                elif where < 0.65 or (where >= 0.85 and retention is None):  # inside the n-th commit
                    n = rng.randint(1, 3)
                    zyg.wait_for(pid, lambda w, n=n: sum(m.startswith("B ") for _, m in w.markers) >= n, 60)
                    time.sleep(rng.uniform(0.0, 1.2 * statistics.median(commit_s[-20:])))
                elif where < 0.85:  # inside the n-th refresh (best model link, summaries)
                    n = rng.randint(1, 2)
                    zyg.wait_for(pid, lambda w, n=n: sum(m == "R" for _, m in w.markers) >= n, 60)
                    time.sleep(rng.uniform(0.0, 1.2 * statistics.median(refresh_s[-20:])))
                else:  # inside the n-th retention prune (refresh, deletions, refresh)
                    n = rng.randint(1, 3)
                    zyg.wait_for(pid, lambda w, n=n: sum(m == "P" for _, m in w.markers) >= n, 60)
                    time.sleep(rng.uniform(0.0, 1.2 * statistics.median(prune_s[-20:])))
                logs = [zyg.kill(p) for p in pids]  # the second writer dies wherever it happens to be
                last = None
                for k, w in enumerate(logs):
                    commit_s += _durations(w, "B", "E")
                    refresh_s += _durations(w, "R", "r")
                    prune_s += _durations(w, "P", "p")
                    if w.failure is not None:
                        fig.problems.append(f"trial {trial}: worker {k} failed before the kill: {w.failure}")
                    first = next((m for _, m in w.markers if m.startswith("B ")), None)
                    if not two and first is not None and int(first.split()[1]) != expected_next:
                        fig.problems.append(
                            f"trial {trial}: restarted with iteration=None at {first.split()[1]}, "
                            f"expected {expected_next}"
                        )
                    where_killed = _where(w)
                    last = last or w.last(("B", "E", "R", "r", "P", "p"))
                    fig.kills += 1
                    if where_killed == "commit":
                        fig.kills_in_commit += 1
                        it = int(w.last(("B",)).split()[1])
                        if (Path(root) / "checkpoints" / f"metrics_iter_{it}.json").exists():
                            fig.kills_in_commit_completed += 1
                    elif where_killed == "prune":
                        fig.kills_in_prune += 1
                    elif where_killed == "refresh":
                        fig.kills_in_refresh += 1
                    else:
                        fig.kills_elsewhere += 1
                    fig.iterations_committed += sum(m.startswith("E ") for _, m in w.markers)
                problems, expected_next = check_repository(root, state, venv)
                fig.trials += 1
                fig.records_lost += sum(p.startswith("record lost") for p in problems)
                fig.corrupt_loads += sum(p.startswith("corrupt load") for p in problems)
                fig.problems += [f"trial {trial} (last marker {last!r}): {p}" for p in problems]
                if log is not None and (trial + 1) % 10 == 0:
                    log(f"{trial + 1}/{trials} trials, {fig.kills_in_commit} in a commit, {len(fig.problems)} problems")
    finally:
        venv.close()
        if own_tmp is not None:
            own_tmp.cleanup()
    fig.seconds = time.monotonic() - t0
    return fig


def _where(w: WorkerLog) -> str:
    """Where a killed worker died, from its last markers: commit, prune, refresh or elsewhere."""
    open_prune = False
    last = None
    for _, m in w.markers:
        kind = m.split(" ", 1)[0]
        if kind in ("P", "p"):
            open_prune = kind == "P"
        if kind in ("B", "E", "R", "r"):
            last = kind
    if last == "B":
        return "commit"
    if open_prune:
        return "prune"
    return "refresh" if last == "R" else "elsewhere"


def _durations(w: WorkerLog, begin: str, end: str) -> list[float]:
    """Seconds between ``begin`` and ``end`` markers (first token), as seen by the parent."""
    out, t_begin = [], None
    for t, m in w.markers:
        kind = m.split(" ", 1)[0]
        if kind == begin:
            t_begin = t
        elif kind == end and t_begin is not None:
            out.append(t - t_begin)
            t_begin = None
    return out


# ------------------------------------------------------------------------------------------------
# The walk-forward scenario, parent side
# ------------------------------------------------------------------------------------------------
#: The variants the trials cycle through: (with candidates, signing key). Two in three have candidates,
#: one in two is signed.
WF_VARIANTS: tuple[tuple[bool, str | None], ...] = (
    (True, None),
    (False, WF_KEY),
    (True, WF_KEY),
    (True, None),
    (False, None),
    (True, WF_KEY),
)
#: Where a trial aims its kill, with its weight: ``anywhere`` (a random delay within the uninterrupted run's
#: duration); a begin marker (``WF_PHASES``): a random instant inside the n-th such step; an end marker:
#: right after the n-th such step (``s``: the curve written, the summaries not yet refreshed).
WF_TARGETS = {"anywhere": 0.25, "W": 0.15, "B": 0.15, "F": 0.1, "R": 0.1, "C": 0.1, "S": 0.05, "s": 0.04, "X": 0.06}
_TIMES = ("updated_at", "created_at")


def _jsonable(obj: Any) -> Any:
    """``obj`` as the package writes it to a file and reads it back (tuples -> lists, NaN -> null...)."""
    from sb3_iter_ckpt.common import record as rec

    return json.loads(rec.dumps(obj))


def _without_times(summary: Any) -> Any:
    """A summary without what changes with the moment: its times (top level and ``metadata``) and the
    analysis's size on disk. Written here, not taken from the package: the checker must not share its code."""
    if not isinstance(summary, dict):
        return summary
    out = {k: v for k, v in summary.items() if k not in _TIMES and k != "size_on_disk_bytes"}
    for key in ("metadata", "analysis"):
        if isinstance(out.get(key), dict):
            out[key] = _without_times(out[key])
    return out


def _difference(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON values first differ (a key path), for a problem's text."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k, ...) != b.get(k, ...):
                return _difference(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _difference(x, y, f"{path}[{k}]")
    return f"{path or '.'}: {str(a)[:80]} != {str(b)[:80]}"


def _record_essence(record: dict[str, Any]) -> dict[str, Any]:
    """What a rerun must reproduce of a record: all but the times, the artifacts' hashes (an SB3 zip holds
    its moment of saving), the signature, a signed repository's identity and the candidates' hashes the root
    records."""
    out = {k: v for k, v in record.items() if k not in ("artifacts", "created_at", "signature", "repository")}
    out["artifacts"] = sorted(record.get("artifacts") or {})
    if isinstance(out.get("candidate"), dict):
        out["candidate"] = {k: v for k, v in out["candidate"].items() if k != "members"}
    return out


def walk_forward_snapshot(repo: Any) -> dict[str, Any]:
    """What a finished run's repository holds that a rerun after a kill must reproduce exactly: the records
    (``_record_essence``), the forward results' payloads and ``forward_returns.csv``."""
    from sb3_iter_ckpt.common import record as rec

    csv = repo.storage.read_bytes(rec.FORWARD_RETURNS) if repo.storage.exists(rec.FORWARD_RETURNS) else None
    return {
        "records": {ck.iteration: _record_essence(ck.record) for ck in repo.list()},
        "forwards": {r.iteration: r.to_json_bytes() for r in repo.forwards()},
        "csv": csv,
    }


def _derived_problems(repo: Any, prices: Any) -> list[str]:
    """Every derived file of one repository (the root or a candidate's) present and agreeing with its records."""
    from sb3_iter_ckpt.common import record as rec
    from sb3_iter_ckpt.forward.stitching import stitch
    from sb3_iter_ckpt.store import summaries
    from sb3_iter_ckpt.walkforward import RUN_FILE

    root = Path(str(repo.root))
    names = (rec.FORWARD_RETURNS, rec.CHECKPOINT_SUMMARY, rec.TRAINING_SUMMARY, RUN_FILE, rec.BEST_MODEL)
    missing = [n for n in names if not (root / n).is_file()]
    problems = [f"{n} is missing" for n in missing]
    if rec.CHECKPOINT_SUMMARY not in missing:
        written = _without_times(json.loads((root / rec.CHECKPOINT_SUMMARY).read_bytes()))
        expected = _without_times(_jsonable(summaries.checkpoint_summary(repo.analyze(), None)))
        if written != expected:
            problems.append(f"{rec.CHECKPOINT_SUMMARY} disagrees with the records at {_difference(written, expected)}")
        analysis = written.get("analysis") or {}
        if analysis.get("forward") is None:
            problems.append(f"{rec.CHECKPOINT_SUMMARY} has no forward analysis ({analysis.get('forward_reason')})")
    if rec.TRAINING_SUMMARY not in missing:
        written = _without_times(json.loads((root / rec.TRAINING_SUMMARY).read_bytes()))
        expected = _without_times(_jsonable(repo.training_summary()))
        if written != expected:
            problems.append(f"{rec.TRAINING_SUMMARY} disagrees with the records at {_difference(written, expected)}")
        elif (written.get("best") or {}).get("best_model_file") != rec.BEST_MODEL:
            problems.append(f"{rec.TRAINING_SUMMARY} does not name {rec.BEST_MODEL}")
    best = repo.best()
    if best is None:
        problems.append("no best iteration")
    else:
        for kind, name in (("model", rec.BEST_MODEL), ("vecnormalize", rec.BEST_VECNORMALIZE)):
            if kind in best.artifacts and (root / name).is_file():
                if (root / name).read_bytes() != repo.read_artifact(best.iteration, kind):
                    problems.append(f"{name} is not the best iteration's ({best.iteration}) {kind}")
    if rec.FORWARD_RETURNS not in missing:
        if (root / rec.FORWARD_RETURNS).read_bytes() != stitch(repo.forwards(), prices).to_csv_bytes():
            problems.append(f"{rec.FORWARD_RETURNS} is not the stitched curve of the forward results")
    return problems


def _compared(got: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """What differs between a snapshot and the uninterrupted reference run's."""
    problems = []
    if sorted(got["records"]) != sorted(ref["records"]):
        problems.append(f"iterations {sorted(got['records'])}, the reference run has {sorted(ref['records'])}")
    for i in sorted(set(got["records"]) & set(ref["records"])):
        if got["records"][i] != ref["records"][i]:
            where = _difference(_jsonable(got["records"][i]), _jsonable(ref["records"][i]))
            problems.append(f"record of iteration {i} differs from the reference run's at {where}")
    if sorted(got["forwards"]) != sorted(ref["forwards"]):
        problems.append(f"forward results {sorted(got['forwards'])}, the reference run has {sorted(ref['forwards'])}")
    problems += [
        f"forward result of iteration {i} differs from the reference run's"
        for i in sorted(set(got["forwards"]) & set(ref["forwards"]))
        if got["forwards"][i] != ref["forwards"][i]
    ]
    if got["csv"] != ref["csv"]:
        problems.append("forward_returns.csv differs from the reference run's")
    return problems


def check_walk_forward(
    root: str | os.PathLike[str], reference: dict[str, dict[str, Any]], key: str | None = None
) -> list[str]:
    """A finished walk-forward (after a kill and a rerun): ``verify()`` empty (the root, which descends into
    the candidates), no warning, no leftover, every derived file present and agreeing with the records
    (``_derived_problems``), and the records, forward results and curve those of the reference run.

    :param reference: ``walk_forward_snapshot`` of the reference run's root (``"root"``) and candidates.
    :return: the problems, as text.
    """
    import warnings

    from sb3_iter_ckpt import CheckpointRepository
    from sb3_iter_ckpt.common.candidates import CANDIDATES_DIR

    prices, _ = walk_forward_data()
    root = Path(root)
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            repo = CheckpointRepository(root, signing_key=key)
            problems += [f"verify: {p}" for p in repo.verify()]
            for name in reference:
                member = repo if name == "root" else repo.candidate(name)
                problems += [f"{name}: {p}" for p in _derived_problems(member, prices)]
                problems += [f"{name}: {p}" for p in _compared(walk_forward_snapshot(member), reference[name])]
        except Exception as exc:  # whatever a check meets is a problem to report, not a crash of the harness
            problems.append(f"check failed: {exc!r}")
    problems += [f"warning: {w.message}" for w in caught]
    folders = {"root": root} | {n: root / CANDIDATES_DIR / n for n in reference if n != "root"}
    problems += [f"leftover: {name}: {p}" for name, folder in folders.items() for p in leftovers(folder)]
    found = {p.name for p in (root / CANDIDATES_DIR).iterdir()} if (root / CANDIDATES_DIR).is_dir() else set()
    problems += [f"unexpected folder {CANDIDATES_DIR}/{n}" for n in sorted(found - set(folders))]
    return problems


def _after_kill(root: Path, key: str | None) -> list[str]:
    """Right after the kill, before anything repairs it: the root opens, ``verify()`` is empty, no leftover."""
    import warnings

    from sb3_iter_ckpt import CheckpointRepository

    if not root.exists():
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            problems = [f"verify: {p}" for p in CheckpointRepository(root, signing_key=key).verify()]
        except Exception as exc:
            problems = [f"the repository does not open: {exc!r}"]
    return problems + [f"warning: {w.message}" for w in caught] + [f"leftover: {p}" for p in leftovers(root)]


def _wf_where(w: WorkerLog) -> str:
    """Where a killed walk-forward worker died, from the steps still open in its markers."""
    stack: list[str] = []
    for _, m in w.markers:
        kind = m.split(" ", 1)[0]
        if kind in WF_PHASES:
            stack.append(kind)
        elif kind.upper() in WF_PHASES and kind.upper() in stack:
            del stack[len(stack) - 1 - stack[::-1].index(kind.upper()) :]
    if not stack:
        return "start-up or between steps"
    if "X" in stack:  # a run's close: a candidate's, or the root's after the choices
        return "close: stitch" if "S" in stack else "close: final refresh" if "R" in stack else "close: other"
    scope = "choice" if "C" in stack else "window"
    step = {"W": "training, evaluation", "B": "commit", "F": "forward commit", "R": "refresh", "C": "publish_choice"}
    return f"{scope}: {step[stack[-1]]}"


@dataclass
class WalkForwardFigures:
    trials: int = 0
    candidate_trials: int = 0
    signed_trials: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    finished_before_kill: int = 0
    windows_redone: int = 0  # windows a rerun trained (a candidate's or the run's), or published into the root
    reruns_without_training: int = 0
    reference_seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0

    def line(self) -> str:
        where = ", ".join(f"{n} {k}" for k, n in sorted(self.kills.items(), key=lambda kv: (-kv[1], kv[0])))
        return (
            f"walk-forward kill harness: {self.trials} trials (seed {self.seed}; {self.candidate_trials} with two "
            f"candidates, {self.trials - self.candidate_trials} with one algorithm; {self.signed_trials} signed), "
            f"{sum(self.kills.values())} kills: {where or 'none'}; {self.finished_before_kill} runs ended before "
            f"their kill; reruns redid {self.windows_redone} windows (trained, or chosen into the "
            f"root; {self.reruns_without_training} reruns had nothing to train); problems {len(self.problems)}; "
            f"{self.seconds:.0f} s"
        )


def _reference(zyg: Zygote, root: Path, candidates: bool) -> dict[str, Any]:
    """One uninterrupted run of a variant: its snapshot, how long it took, its steps' counts and durations."""
    import shutil

    from sb3_iter_ckpt import CheckpointRepository

    shutil.rmtree(root, ignore_errors=True)
    t = time.monotonic()
    w = zyg.reap(zyg.fork({"task": "walk_forward", "root": str(root), "candidates": candidates}), timeout=600)
    seconds = time.monotonic() - t
    if w.done is None:
        raise RuntimeError(f"the reference run did not finish: {w.failure}")
    repo = CheckpointRepository(root)
    names = ["root", *(sorted(p.name for p in (root / "candidates").iterdir()) if candidates else [])]
    snapshot = {n: walk_forward_snapshot(repo if n == "root" else repo.candidate(n)) for n in names}
    counts = {k: sum(m.split(" ", 1)[0] == k for _, m in w.markers) for p in WF_PHASES for k in (p, p.lower())}
    durations = {k: _durations(w, k, k.lower()) or [0.01] for k in WF_PHASES}
    return {"snapshot": snapshot, "seconds": seconds, "counts": counts, "durations": durations, "root": root}


def run_walk_forward_trials(
    trials: int,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    *,
    variants: tuple[tuple[bool, str | None], ...] = WF_VARIANTS,
    targets: tuple[str, ...] | None = None,
    log: Callable[[str], None] | None = None,
    zygote: Zygote | None = None,
) -> WalkForwardFigures:
    """Kill a walk-forward with test parts (and candidates) once per trial, rerun it to its end, check it.

    Each trial runs the variant ``variants[trial % len(variants)]`` (with candidates, signing key) in a fresh
    root, kills it at a target (``targets[trial % len(targets)]``, else drawn from ``WF_TARGETS``), checks the
    root right after the kill (``_after_kill``), reruns it to its end in a fresh worker and checks it against
    an uninterrupted reference run of the same variant (``check_walk_forward``; the reference itself first).
    The roots of trials without problems are removed.
    """
    import shutil

    t0 = time.monotonic()
    rng = random.Random(seed)
    fig = WalkForwardFigures(seed=seed)
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="sb3-kill-wf-")
        workdir = own_tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SB3_LOGDIR", str(workdir / "sb3log"))
    try:
        with contextlib.nullcontext(zygote) if zygote else Zygote(stderr_path=workdir / "workers.stderr") as zyg:
            refs = {}
            for candidates in sorted({c for c, _ in variants[:trials]}):
                name = "candidates" if candidates else "single"
                refs[candidates] = ref = _reference(zyg, workdir / f"reference-{name}", candidates)
                fig.reference_seconds[name] = round(ref["seconds"], 2)
                problems = check_walk_forward(ref["root"], ref["snapshot"])
                fig.problems += [f"reference run ({name}): {p}" for p in problems]
            for trial in range(trials):
                candidates, key = variants[trial % len(variants)]
                ref = refs[candidates]
                fig.trials += 1
                fig.candidate_trials += candidates
                fig.signed_trials += key is not None
                root = workdir / f"trial-{trial}"
                shutil.rmtree(root, ignore_errors=True)
                task = {"task": "walk_forward", "root": str(root), "candidates": candidates, "key": key}
                drawn = rng.choices(list(WF_TARGETS), list(WF_TARGETS.values()))[0]
                target = targets[trial % len(targets)] if targets else drawn
                if target.upper() == "C" and not candidates:  # no publish_choice without candidates
                    target = "anywhere"
                pid = zyg.fork(task)
                if target == "anywhere":
                    zyg.wait_for(pid, lambda w: False, rng.uniform(0.0, ref["seconds"]))
                else:
                    n = rng.randint(1, max(1, ref["counts"][target]))
                    reached = zyg.wait_for(
                        pid, lambda w, k=target, n=n: sum(m.split(" ", 1)[0] == k for _, m in w.markers) >= n, 300
                    )
                    if reached and target.isupper():
                        time.sleep(rng.uniform(0.0, 1.2 * statistics.median(ref["durations"][target])))
                w = zyg.kill(pid)
                if w.failure is not None:
                    where = "failed"
                    fig.problems.append(f"trial {trial}: the worker failed before the kill: {w.failure}")
                elif w.done is not None:
                    where = "ended before the kill"
                    fig.finished_before_kill += 1
                else:
                    where = _wf_where(w)
                    fig.kills[where] = fig.kills.get(where, 0) + 1
                aim = target if target == "anywhere" else f"{target} #{n}"
                label = f"trial {trial} ({'candidates' if candidates else 'one algorithm'}"
                label += f"{', signed' if key else ''}; aimed at {aim}, killed in {where})"
                fig.problems += [f"{label} after the kill: {p}" for p in _after_kill(root, key)]
                rerun = zyg.reap(zyg.fork(task), timeout=600)
                if rerun.done is None:
                    fig.problems.append(f"{label}: the rerun did not finish: {rerun.failure}")
                else:
                    again = len(rerun.done["trained"]) + sum(len(t) for t in rerun.done["members"].values())
                    fig.windows_redone += again
                    fig.reruns_without_training += again == 0
                problems = check_walk_forward(root, ref["snapshot"], key)
                fig.problems += [f"{label}: {p}" for p in problems]
                if not problems and not any(p.startswith(label) for p in fig.problems):
                    shutil.rmtree(root, ignore_errors=True)
                if log is not None and (trial + 1) % 10 == 0:
                    log(f"{trial + 1}/{trials} trials, {len(fig.problems)} problems, {time.monotonic() - t0:.0f} s")
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    fig.seconds = time.monotonic() - t0
    return fig


SCENARIOS = ("callback", "walk-forward", "candidates", "single", "all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=int(os.environ.get(TRIALS_ENV, "50")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="callback",
        help="callback: IterationCheckpointCallback writers (retention, async, two writers); walk-forward: "
        "WalkForwardRunner with test parts, two candidates or one algorithm, signed or not, killed and rerun; "
        "candidates / single: only those variants; all: callback, then walk-forward (--trials each)",
    )
    parser.add_argument("--workdir", help="keep the repositories here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.zygote:
        _zygote_main()
        return 0
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    figures: dict[str, Figures | WalkForwardFigures] = {}
    workdir = Path(args.workdir) if args.workdir else None
    with contextlib.ExitStack() as stack:
        logs = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sb3-kill-")))
        logs.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("SB3_LOGDIR", str(logs / "sb3log"))  # before the zygote: its workers inherit it
        zyg = stack.enter_context(Zygote(stderr_path=logs / "workers.stderr"))
        if args.scenario in ("callback", "all"):
            where = workdir / "callback" if workdir and args.scenario == "all" else workdir
            figures["callback"] = run_kill_trials(args.trials, args.seed, where, log=log, zygote=zyg)
        if args.scenario != "callback":
            variants = {
                "candidates": tuple(v for v in WF_VARIANTS if v[0]),
                "single": tuple(v for v in WF_VARIANTS if not v[0]),
            }.get(args.scenario, WF_VARIANTS)
            where = workdir / "walk-forward" if workdir and args.scenario == "all" else workdir
            figures["walk_forward"] = run_walk_forward_trials(
                args.trials, args.seed, where, variants=variants, log=log, zygote=zyg
            )
    problems = [p for fig in figures.values() for p in fig.problems]
    if args.json:
        out = {name: asdict(fig) for name, fig in figures.items()}
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=2))
    else:
        for fig in figures.values():
            print(fig.line())
        for p in problems[:50]:
            print("  problem:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
