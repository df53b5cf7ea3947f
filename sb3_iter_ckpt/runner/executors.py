"""Where the walk-forward windows train: in this process, in a local process pool, or as Ray tasks.

Scheduling only. The unit of work is ``sb3_iter_ckpt.runner.window.train_window``: it takes a ``WindowSpec``
(plain, picklable data), trains that one window and commits its iteration to the repository itself.
The driver (``WalkForwardRunner.run``) only schedules windows, gathers what the workers committed
and shows the progress bar. ``WindowSpec``, ``train_window`` and ``RepositoryRef`` are importable
from here too (they lived here before ``window`` took them).

Executors share one small interface: ``submit(spec) -> concurrent.futures.Future`` (the future's
result is :func:`train_window`'s outcome dict), ``workers`` (how many windows may run at once) and
``close()``. Three are built in:

* :class:`SequentialExecutor` (``"sequential"``): in this process, one window at a time. The runner's default,
  ``"auto"``, is this one or the next, chosen per run (``sb3_iter_ckpt.runner.auto``).
* :class:`ProcessExecutor` (``"process"``, ``n_jobs`` workers): a ``concurrent.futures`` process pool
  with the ``spawn`` start method (no ``fork`` of a process that holds torch threads); each worker
  pins torch to ``torch_threads`` threads. A worker that dies breaks the pool: the run stops, and a
  rerun trains only the windows that have no record.
* :class:`RayExecutor` (``"ray"``, the ``[ray]`` extra): one Ray task per window (``num_cpus=1``),
  retried up to ``max_retries`` times when its worker process or node is lost. Without ``address``
  it starts a local Ray instance on the loopback address; with one it joins that cluster (every
  node must see the same repository, e.g. a shared file system or object storage). Its outcomes
  also name the Ray node each window ran on (``node_id``).

A retried or duplicated window is committed exactly once: the record is published create-only, and
``train_window`` returns the existing record when its iteration is already committed.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.runner.window import RepositoryRef, WindowSpec, train_window

__all__ = [
    "EXECUTORS",
    "Executor",
    "ProcessExecutor",
    "RayExecutor",
    "RepositoryRef",
    "SequentialExecutor",
    "WindowSpec",
    "available_cpus",
    "cgroup_cpus",
    "forwarded_env",
    "make_executor",
    "train_window",
]

#: Environment variables a worker takes over from the driver (where SB3 writes its logs).
FORWARDED_ENV = ("SB3_LOGDIR",)

#: Defaults (``setdefault``) for a local Ray instance started by ``RayExecutor`` before Ray is imported.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def forwarded_env() -> dict[str, str]:
    """The driver's ``FORWARDED_ENV`` variables, paths made absolute (a worker's folder may differ)."""
    return {k: os.path.abspath(os.environ[k]) for k in FORWARDED_ENV if os.environ.get(k)}


# -- executors -------------------------------------------------------------------------------------------------


def available_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may run on: its affinity mask where the platform has one (else the CPU count), at
    most its cgroup's CPU quota (a container started with ``--cpus``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus(cgroup)
    return max(1, min(cpus, quota or cpus))


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """The CPU quota of the cgroup at ``root`` rounded up (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    without one. The root's own files: inside a container they are the container's."""
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(root, quota_file)) as f:
                fields = f.read().split()
            if period_file is not None:
                with open(os.path.join(root, period_file)) as f:
                    fields.append(f.read().strip())
            quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):  # no such file, or "max" / "-1": no quota
            continue
        if quota > 0 and period > 0:
            return max(1, -(-quota // period))
    return None


class Executor:
    """Interface: ``submit(spec) -> Future`` of ``train_window``'s outcome; ``workers``; ``close()``.

    ``in_process`` executors receive the driver's live repository in ``spec.repository`` (nothing is
    pickled); the others receive a ``RepositoryRef``.
    """

    name = "executor"
    workers = 1
    in_process = False

    def start(self) -> Executor:
        """Start the workers now (or join the cluster), so that ``workers`` is known; idempotent."""
        return self

    def submit(self, spec: WindowSpec) -> cf.Future:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (only what this executor started)."""

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SequentialExecutor(Executor):
    """In this process, one window at a time."""

    name = "sequential"
    in_process = True

    def submit(self, spec: WindowSpec) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(train_window(spec))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver through the future
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and friends stop the run here
            future.set_exception(exc)
        return future


def _init_worker(threads: int | None, env: Mapping[str, str]) -> None:
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    os.environ.update(env)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _check_picklable(spec: WindowSpec, where: str) -> None:
    try:
        pickle.dumps(spec)
    except Exception as exc:  # noqa: BLE001 - pickle raises many types
        raise CheckpointError(
            f"window {spec.iteration} cannot be sent to {where}: {exc}. Every worker gets the configuration "
            "by pickle, so make_env, make_model, a callable min_score and the retention policy must be "
            "module-level functions or objects (not lambdas or local functions), and the script's "
            "entry point must be guarded by `if __name__ == '__main__':`"
        ) from exc


class ProcessExecutor(Executor):
    """A local process pool of ``n_jobs`` workers (``spawn`` start method; torch pinned per worker).

    :param n_jobs: Number of worker processes (default: the CPU count).
    :param mp_context: ``"spawn"`` (default) or ``"forkserver"``; ``"fork"`` is refused (torch).
    :param torch_threads: Torch threads of each worker (default 1).
    """

    name = "process"

    def __init__(self, n_jobs: int | None = None, *, mp_context: str = "spawn", torch_threads: int | None = 1):
        import multiprocessing

        if mp_context not in ("spawn", "forkserver"):
            raise CheckpointError(
                f"mp_context must be 'spawn' or 'forkserver' (torch and fork do not mix), got {mp_context!r}"
            )
        n = int(n_jobs) if n_jobs else available_cpus()
        if n <= 0:
            raise CheckpointError(f"n_jobs must be positive, got {n_jobs}")
        self.workers = n
        self.torch_threads = torch_threads
        self._context = multiprocessing.get_context(mp_context)
        self._pool: cf.ProcessPoolExecutor | None = None

    def _ensure(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            env = forwarded_env()
            self._pool = cf.ProcessPoolExecutor(
                self.workers, mp_context=self._context, initializer=_init_worker, initargs=(self.torch_threads, env)
            )
        return self._pool

    def submit(self, spec: WindowSpec) -> cf.Future:
        _check_picklable(spec, "a worker process")
        return self._ensure().submit(train_window, spec)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _train_on_ray(spec: WindowSpec) -> dict[str, Any]:
    """:func:`train_window` as a Ray task: its outcome also names the node it ran on (``node_id``, hex).

    Of the attempt that returned: a window retried after its node died names the node of the retry.
    """
    import ray

    outcome = train_window(spec)
    outcome["node_id"] = ray.get_runtime_context().get_node_id()
    return outcome


class RayExecutor(Executor):
    """One Ray task per window, retried when its worker or node is lost (``pip install sb3-iter-ckpt[ray]``).

    :param workers: Windows in flight at once; default: the cluster's CPUs. Without ``address`` it is
        also the ``num_cpus`` of the local instance started here.
    :param address: A running cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        None: use the already initialized Ray, else start a local instance on 127.0.0.1.
    :param max_retries: Retries of a window whose worker process or node dies (not of Python errors).
    :param init_kwargs: More ``ray.init`` arguments (e.g. ``runtime_env``, ``object_store_memory``).
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        max_retries: int = 3,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if workers is not None and int(workers) <= 0:
            raise CheckpointError(f"workers must be positive, got {workers}")
        self._requested = None if workers is None else int(workers)
        self.workers = self._requested or 1
        self.address = address
        self.max_retries = int(max_retries)
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False
        self._remote: Any = None
        self._ray: Any = None
        #: Seconds ``ray.init`` took (0 when Ray was already running).
        self.startup_seconds = 0.0

    def start(self) -> RayExecutor:
        """Initialize Ray (or join ``address``) now; otherwise it happens at the first ``submit``."""
        if self._remote is not None:
            return self
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        if local and "ray" not in sys.modules:
            # Read by Ray at import: a private instance on 127.0.0.1 that probes no network for its address
            # (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and sends no usage statistics. Set them yourself to change.
            for var, value in LOCAL_RAY_ENV.items():
                os.environ.setdefault(var, value)
        try:
            import ray
        except ImportError as exc:
            raise CheckpointError("the Ray executor needs Ray: pip install 'sb3-iter-ckpt[ray]'") from exc
        if not ray.is_initialized():
            t0 = time.perf_counter()
            kwargs: dict[str, Any] = dict(self.init_kwargs)
            if not local:
                ray.init(address=self.address, **kwargs)
            else:
                kwargs.setdefault("include_dashboard", False)
                kwargs.setdefault("_node_ip_address", "127.0.0.1")
                if self._requested is not None:
                    kwargs.setdefault("num_cpus", self._requested)
                if len(tempfile.gettempdir()) > 40:
                    # Ray's unix sockets live under its temp dir and must fit in 107 bytes.
                    kwargs.setdefault("_temp_dir", os.path.join("/tmp", f"ray-{os.getuid()}"))
                ray.init(**kwargs)
            self._started = True
            self.startup_seconds = time.perf_counter() - t0
        if self._requested is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._ray = ray
        self._remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_train_on_ray)
        return self

    def submit(self, spec: WindowSpec) -> cf.Future:
        self.start()
        attempts = self._remote.remote(spec).future()
        window: cf.Future = cf.Future()
        attempts.add_done_callback(functools.partial(self._settle, spec, window))
        return window

    def _settle(self, spec: WindowSpec, window: cf.Future, attempts: cf.Future) -> None:
        """The window's future from Ray's: a Python error of the window as it is, a lost window (its
        worker or node died on every attempt) as a ``CheckpointError`` that says what to do."""
        if attempts.cancelled():
            window.cancel()
            return
        exc = attempts.exception()
        if exc is None:
            window.set_result(attempts.result())
            return
        errors = self._ray.exceptions
        if isinstance(exc, errors.RayError) and not isinstance(exc, errors.RayTaskError):
            who = f" of candidate {spec.candidate}" if spec.candidate else ""
            first = (str(exc).strip().splitlines() or [""])[0]
            exc = CheckpointError(
                f"window {spec.iteration}{who} was lost by Ray after {self.max_retries} retries "
                f"({type(exc).__name__}: {first}); the windows committed so far are kept: run again to train "
                "only the missing ones"
            )
        window.set_exception(exc)

    def close(self) -> None:
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._started = False
        self._remote = None


#: Executor names accepted by ``WalkForwardRunner(executor=...)`` and ``--executor``; ``"auto"`` (the default)
#: is chosen per run by the runner (``sb3_iter_ckpt.runner.auto``), ``make_executor`` builds the others.
EXECUTORS = ("auto", "sequential", "process", "ray")


def make_executor(
    executor: str | Executor | None = None,
    n_jobs: int | None = None,
    *,
    address: str | None = None,
    torch_threads: int | None = 1,
) -> Executor:
    """An executor by name (``"sequential"``, ``"process"``, ``"ray"``; None: ``"sequential"``), or ``executor``
    itself. ``"auto"`` depends on the run (its CPUs, its windows, its settings): the runner chooses it."""
    if isinstance(executor, Executor):
        return executor
    name = (executor or "sequential").lower()
    if name == "auto":
        raise CheckpointError("executor='auto' is chosen per run: give it to WalkForwardRunner or run_many")
    if address is not None and name != "ray":
        raise CheckpointError(f"a cluster address needs executor='ray', not {executor!r}")
    if name == "sequential":
        if n_jobs not in (None, 1):
            raise CheckpointError(f"n_jobs={n_jobs} needs executor='process' or 'ray'")
        return SequentialExecutor()
    if name == "process":
        return ProcessExecutor(n_jobs, torch_threads=torch_threads)
    if name == "ray":
        return RayExecutor(n_jobs, address=address)
    raise CheckpointError(f"unknown executor {executor!r}; use one of {list(EXECUTORS)} or an Executor")
