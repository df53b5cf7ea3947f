"""Walk-forward windows as Ray tasks: same records as sequential, a killed worker retried, resume.

One local Ray instance serves the module (start-up costs seconds): two CPUs, no dashboard, a small
object store, bound to the loopback address with usage statistics off; ``ray.shutdown()`` at the end.
Skipped when Ray is not installed (``pip install -e ".[ray]"``).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

# Before Ray is imported (its constants are read at import): a loopback-only, private local instance.
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use 127.0.0.1 as the node address instead of probing the
# network for one, and its servers bind to it; no usage statistics are sent.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)
ray = pytest.importorskip("ray")

from sb3_iter_ckpt import CheckpointError, CheckpointRepository  # noqa: E402
from sb3_iter_ckpt.envs.trading import TradingEnv  # noqa: E402
from sb3_iter_ckpt.runner.executors import RayExecutor  # noqa: E402


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc, Linux only)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                out.append(fields[1])
    return out


def _is_loopback(hex_address: str) -> bool:
    ip = hex_address.split(":")[0]
    if len(ip) == 8 or ip.startswith("0000000000000000FFFF0000"):  # IPv4, or IPv4-mapped IPv6
        return ip.endswith("7F")  # 127.x.x.x, little-endian
    return ip == "00000000000000000000000001000000"  # ::1


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80]
    except OSError:
        return "?"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    from ray._private import ray_constants

    os.environ.update(RAY_ENV)  # the Ray processes started now inherit it
    assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    # the test module's own functions (the dying env below) travel by value: workers cannot import tests/
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        pids = _descendants(os.getpid())
        listening = _listening_addresses(pids)
        wide = {pid: got for pid in pids if (got := [a for a in _listening_addresses({pid}) if not _is_loopback(a)])}
        assert listening and not wide, f"Ray listens beyond loopback: {[(p, _cmd(p), a) for p, a in wide.items()]}"
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


def _metrics(root):
    return {ck.iteration: (ck.metrics, ck.timesteps, ck.record["metadata"]) for ck in CheckpointRepository(root).list()}


def test_ray_gives_the_sequential_records(prices, tmp_path, ray_cluster, make_runner):
    seq = make_runner(prices, tmp_path / "seq").run(max_iterations=3)
    executor = RayExecutor(2)
    par = make_runner(prices, tmp_path / "ray", executor=executor).run(max_iterations=3)
    executor.close()  # joined the fixture's Ray: leaves it running
    assert ray.is_initialized()
    assert par.trained == [0, 1, 2]
    assert {o["pid"] for o in par.outcomes.values()}.isdisjoint({os.getpid()})
    # where each window ran: the instance's one node (the cluster test sees two), nothing of it outside Ray
    assert {o["node_id"] for o in par.outcomes.values()} == {ray.get_runtime_context().get_node_id()}
    assert not any("node_id" in o for o in seq.outcomes.values())
    assert _metrics(tmp_path / "ray") == _metrics(tmp_path / "seq")
    assert par.best.iteration == seq.best.iteration
    assert par.best.metrics == seq.best.metrics


class _DyingEnv(TradingEnv):
    """Kills its worker process (``os._exit``) mid-window, on the first attempt of one iteration only."""

    def __init__(self, segment, *, marker: str, die: bool, **kwargs):
        super().__init__(segment, **kwargs)
        self._marker, self._die, self._steps = Path(marker), die, 0

    def step(self, action):
        self._steps += 1
        if self._die and self._steps == 100:
            if not self._marker.exists():
                self._marker.write_text(str(os.getpid()))
                os._exit(1)
        return super().step(action)


def dying_env(segment, seed, *, marker: str, kill_seed: int):
    return _DyingEnv(segment, marker=marker, die=seed == kill_seed)


def test_killed_worker_is_retried_once_and_resume_trains_only_missing(prices, tmp_path, ray_cluster, make_runner):
    marker = tmp_path / "killed"
    make_env = functools.partial(dying_env, marker=str(marker), kill_seed=7 + 2)  # dies in iteration 2
    root = tmp_path / "run"
    first = make_runner(prices, root, make_env=make_env, executor=RayExecutor(2)).run(max_iterations=2)
    assert first.trained == [0, 1] and not marker.exists()
    ckdir = root / "checkpoints"
    mtimes = {p.name: p.stat().st_mtime_ns for p in ckdir.iterdir()}

    again = make_runner(prices, root, make_env=make_env, executor=RayExecutor(2, max_retries=2)).run()
    assert again.skipped == [0, 1] and again.trained == [2, 3]
    assert marker.exists(), "the worker was not killed"
    assert again.outcomes[2]["pid"] != int(marker.read_text()), "iteration 2 was not retried in a new worker"
    for name, mtime in mtimes.items():
        assert (ckdir / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    repo = CheckpointRepository(root)
    assert repo.iterations() == [0, 1, 2, 3]
    records = sorted(p.name for p in ckdir.iterdir() if p.suffix == ".json")
    assert len(records) == 4, records  # one record per iteration: nothing lost, nothing duplicated
    assert not [p.name for p in ckdir.iterdir() if ".tmp" in p.name], "leftovers of the killed attempt"
    assert repo.verify() == []


def test_a_window_lost_on_every_attempt_stops_the_run_with_what_to_do(prices, tmp_path, ray_cluster, make_runner):
    """No retry left: the run stops with a ``CheckpointError`` in words, not Ray's own error; a rerun completes."""
    marker = tmp_path / "killed"
    make_env = functools.partial(dying_env, marker=str(marker), kill_seed=7 + 1)  # dies in iteration 1
    root = tmp_path / "run"
    lost = r"window 1 was lost by Ray after 0 retries \(WorkerCrashedError: .*\); .* run again to train only the"
    with pytest.raises(CheckpointError, match=lost):
        make_runner(prices, root, make_env=make_env, executor=RayExecutor(2, max_retries=0)).run(max_iterations=2)
    assert marker.exists(), "the worker was not killed"
    again = make_runner(prices, root, make_env=make_env, executor=RayExecutor(2)).run(max_iterations=2)
    assert 1 in again.trained and sorted(again.trained + again.skipped) == [0, 1]
    repo = CheckpointRepository(root)
    assert repo.iterations() == [0, 1] and repo.verify() == []
