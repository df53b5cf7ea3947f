#!/usr/bin/env python
"""Kill a real walk-forward at random instants and check the repository after every kill.

Usage::

    python tools/kill_harness.py --trials 500 --seed 1
    python tools/kill_harness.py --trials 50 --seed 0 --json     # the figures as JSON

Each trial starts a worker that trains a tiny PPO on CartPole with ``IterationCheckpointCallback``
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


_TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "walk": _task_walk,
    "iterations": _task_iterations,
    "commits": _task_commits,
    "prune_window": _task_prune_window,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=int(os.environ.get(TRIALS_ENV, "50")))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the repositories here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.zygote:
        _zygote_main()
        return 0
    fig = run_kill_trials(args.trials, args.seed, args.workdir, log=lambda s: print(s, file=sys.stderr))
    if args.json:
        print(json.dumps(asdict(fig), indent=2))
    else:
        print(fig.line())
        for p in fig.problems[:50]:
            print("  problem:", p)
    return 1 if fig.problems else 0


if __name__ == "__main__":
    sys.exit(main())
