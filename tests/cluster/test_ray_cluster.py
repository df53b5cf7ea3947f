"""A real two-node Ray cluster on this machine, driven through the command line as a user drives one.

``ray start --head`` and ``ray start --address`` run as separate processes, each with its own temp dir
and one CPU. ``--block`` keeps each ``ray start`` in the foreground: its process group and their
descendants are that node's processes, and only those are stopped (never ``ray stop``, which stops
every Ray instance of the machine). A walk-forward with two candidates and test parts runs on the
cluster through ``walk-forward --executor ray --ray-address``, into an ``s3://`` repository on moto's
server, signed with a key that only the driver holds: its windows run on both nodes and give the
sequential run's forward results. Then the worker node's raylet is killed while it trains a window:
Ray retries the window on the head, and a rerun finds nothing to train and nothing lost.

Network: moto listens on 127.0.0.1; Ray runs without the dashboard and with its usage statistics off.
A second node needs ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``, and with it Ray (2.60) replaces 127.0.0.1
by the machine's own address (``services.resolve_ip_for_localhost``) and its servers listen on every
interface; a node whose address is exactly 127.0.0.1 listens on loopback alone. So every Python process
of the test imports ``loopback/sitecustomize.py``, which keeps 127.0.0.1 as given, and both nodes are
started with ``--node-ip-address=127.0.0.1``: the test checks each node's address, and that every TCP
socket its nodes, their task workers and the driver listen on is on 127.0.0.1 (``/proc/net/tcp``). The
cluster also uses Ray's token authentication (as docs/cluster.md asks), a fresh random token per module.
Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the test finds its Ray processes in /proc", allow_module_level=True)
if importlib.util.find_spec("ray") is None:  # not importorskip: importing Ray here would fix its settings for
    pytest.skip("needs ray", allow_module_level=True)  # this process (tests/walkforward/test_parallel_ray.py)
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server]")

from sb3_iter_ckpt import CheckpointRepository  # noqa: E402
from sb3_iter_ckpt.repository import candidate_forwards  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = Path(__file__).with_name("loopback")  # its sitecustomize.py keeps Ray's nodes on 127.0.0.1
RAY = str(Path(sys.executable).with_name("ray"))
BUCKET = "cluster"
KEY = b"cluster-test-signing-key"
TASK_TITLE = "ray::_train_on_ray"  # a Ray worker's process title while it runs a window
# Two windows with test parts (60 prices each), two candidates: four tasks for two CPUs.
RUN = ["--n-prices", "300", "--train-size", "120", "--val-size", "60", "--iterations", "2", "--algo", "ppo,a2c"]
RUN += ["--total-timesteps", "128", "--n-steps", "32", "--eval-freq", "32", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short_dir(tmp_path_factory, name: str) -> Path:
    # Ray's unix sockets live under --temp-dir, in a session folder, and must fit in 107 bytes.
    folder = tmp_path_factory.mktemp(name)
    assert len(str(folder)) <= 50, f"pytest's temp folder {folder} is too long for Ray's sockets"
    return folder


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    started: int  # clock ticks after boot: with the pid, names one process (pids are reused)
    cmd: str  # the command line, or the process title a Ray worker sets (``ray::<task>``)


def _table() -> dict[int, Proc]:
    """Every live process of the machine (zombies left out: gone, only not yet reaped)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            cmd = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            out[int(entry)] = Proc(int(entry), int(fields[1]), int(fields[2]), int(fields[19]), cmd)
    return out


def _descendants(table: dict[int, Proc], roots: set[int]) -> set[int]:
    """``roots`` (those alive) and every live descendant of theirs."""
    mine = roots & table.keys()
    todo = list(mine)
    while todo:
        parent = todo.pop()
        for child in (p.pid for p in table.values() if p.ppid == parent and p.pid not in mine):
            mine.add(child)
            todo.append(child)
    return mine


def _tcp_listeners() -> dict[str, tuple[str, int]]:
    """Every listening TCP socket of this network namespace: its inode -> (address, port), an IPv4-mapped
    IPv6 address written as IPv4 (``::`` stays: every interface)."""
    out = {}
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            raw = bytes.fromhex(host)  # 32-bit words, each printed in the machine's byte order
            if sys.byteorder == "little":
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out[fields[9]] = (str(ip), int(port, 16))
    return out


def _assert_listening_on_loopback_only(processes: dict[int, str]) -> set[tuple[str, int]]:
    """Every TCP address that ``processes`` (pid -> command) listen on, each checked to be on 127.0.0.1."""
    sockets = _tcp_listeners()
    listening: dict[int, set[tuple[str, int]]] = {}
    for pid in processes:
        with contextlib.suppress(OSError):  # a process that just ended
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    inode = os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").removesuffix("]")
                    if inode in sockets:
                        listening.setdefault(pid, set()).add(sockets[inode])
    exposed = {f"{pid} {processes[pid][:80]}": addresses for pid, addresses in listening.items() if any(
        host != "127.0.0.1" for host, _ in addresses)}  # fmt: skip
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"
    return {address for addresses in listening.values() for address in addresses}


@dataclass
class RayNode:
    """One ``ray start --block`` and every process it started: its process group (``start_new_session``) and
    their descendants (a Ray worker makes a process group of its own). Each process seen is remembered, so
    that one orphaned by a killed raylet is stopped too, by its pid and start time: nothing else is touched."""

    proc: subprocess.Popen
    log: Path
    seen: set[tuple[int, int]] = field(default_factory=set)

    @classmethod
    def start(cls, args: list[str], env: dict[str, str], temp_dir: Path) -> RayNode:
        log = temp_dir / "ray-start.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [RAY, "start", *args, "--num-cpus=1", "--object-store-memory=100000000", f"--temp-dir={temp_dir}"]
                + ["--block"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        node = cls(proc, log)
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                node.stop()
                raise AssertionError(f"ray start failed:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        return node

    def processes(self) -> dict[int, str]:
        """This node's live processes: pid -> command line or title."""
        table = _table()
        mine = {p.pid for p in table.values() if p.pgid == self.proc.pid}
        mine |= {pid for pid, started in self.seen if pid in table and table[pid].started == started}
        mine = _descendants(table, mine)
        self.seen |= {(pid, table[pid].started) for pid in mine}
        return {pid: table[pid].cmd for pid in mine}

    def raylet(self) -> tuple[int, dict[str, str]]:
        """The raylet's pid and its ``--name=value`` arguments (``node_id``, ``node_ip_address``...)."""
        for pid, cmd in self.processes().items():
            if cmd.split(" ", 1)[0].endswith("/raylet"):
                return pid, dict(a[2:].split("=", 1) for a in cmd.split() if a.startswith("--") and "=" in a)
        raise AssertionError(f"no raylet among {self.processes()}")

    def stop(self) -> None:
        """SIGTERM to ``ray start`` (it stops its processes in order), then SIGKILL to each one left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        time.sleep(0.5)
        assert not self.processes(), f"processes left behind: {self.processes()}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """Moto's S3 server on 127.0.0.1 with one bucket; the environment every process of the test gets."""
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
    }
    boto3.client("s3", endpoint_url=endpoint, **_boto(env)).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, env
    finally:
        server.stop()


def _boto(env: dict[str, str]) -> dict[str, str]:
    return dict(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="module")
def base_env(s3, tmp_path_factory):
    """What the nodes, their workers and the driver share: Ray's settings, the S3 credentials, this checkout."""
    _, aws = s3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "SB3_ITER_CKPT_"))}
    env.update(aws)
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # 0 refuses a second node
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        PYTHONPATH=os.pathsep.join(p for p in (str(LOOPBACK), str(ROOT), os.environ.get("PYTHONPATH")) if p),
        SB3_LOGDIR=str(tmp_path_factory.mktemp("sb3log")),
    )
    return env


@pytest.fixture(scope="module")
def head(base_env, tmp_path_factory):
    port = _free_port()
    node = RayNode.start(
        ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false"],
        base_env,
        _short_dir(tmp_path_factory, "rh"),
    )
    try:
        assert b"Usage stats collection is disabled" in node.log.read_bytes()
        yield node, f"127.0.0.1:{port}"
    finally:
        node.stop()


@pytest.fixture
def worker(head, base_env, tmp_path_factory):
    """A second node joining the head, stopped after the test."""
    _, address = head
    node = RayNode.start(
        [f"--address={address}", "--node-ip-address=127.0.0.1"], base_env, _short_dir(tmp_path_factory, "rw")
    )
    try:
        yield node
    finally:
        node.stop()


def _walk_forward(endpoint: str, results: str, key_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sb3_iter_ckpt.cli", "walk-forward", "--experiment-id", "wf", "--results-dir", results,
        f"--storage-option=endpoint_url={endpoint}", "--signing-key-file", str(key_file), "--json", *RUN, *extra,
    ]  # fmt: skip


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> dict:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "signing.key"
    path.write_bytes(KEY)
    return path


@pytest.fixture(scope="module")
def sequential(s3, base_env, key_file, tmp_path_factory):
    """The same walk-forward in one process: what the cluster's runs must reproduce."""
    endpoint, _ = s3
    results = f"s3://{BUCKET}/sequential"
    out = _run(_walk_forward(endpoint, results, key_file), base_env, tmp_path_factory.mktemp("seq"))
    assert out["trained"] == [0, 1]
    return f"{results}/wf"


def _repo(endpoint: str, root: str) -> CheckpointRepository:
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    return CheckpointRepository(
        root, storage_options={**options, "client_kwargs": {"region_name": "us-east-1"}}, signing_key=KEY
    )


def _results(endpoint: str, root: str) -> dict:
    """What must not depend on where the windows ran: every forward result (root and candidates), each
    window's choice, the stitched curve's bytes. Model hashes differ only by the zips' timestamps."""
    repo = _repo(endpoint, root)
    choices = {}
    for ck in repo.list():
        entry = dict(ck.record["candidate"])
        entry["members"] = {n: m["forward_sha256"] for n, m in entry["members"].items()}
        choices[ck.iteration] = entry
    return {
        "forward": [f.to_json_bytes() for f in repo.forwards()],
        "candidates": {n: [f.to_json_bytes() for f in fs] for n, fs in candidate_forwards(repo).items()},
        "choices": choices,
        "forward_returns.csv": repo.storage.read_bytes("forward_returns.csv"),
    }


def test_a_two_node_cluster_runs_the_candidates_on_both_nodes_with_the_sequential_results(
    s3, base_env, head, worker, key_file, sequential, tmp_path
):
    endpoint, _ = s3
    head_node, address = head
    raylets = [node.raylet()[1] for node in (head_node, worker)]
    assert [r["node_ip_address"] for r in raylets] == ["127.0.0.1", "127.0.0.1"]
    gcs_port = int(address.rsplit(":", 1)[1])
    assert ("127.0.0.1", gcs_port) in _assert_listening_on_loopback_only(head_node.processes() | worker.processes())
    results = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    argv = _walk_forward(endpoint, results, key_file, "--executor", "ray", "--ray-address", address)
    out = _run([*argv, "--workers", "2"], base_env, tmp_path)
    assert out["trained"] == [0, 1]
    outcomes = out["outcomes"]
    assert sorted((o["iteration"], o["candidate"]) for o in outcomes) == [
        (0, "a2c-s0"), (0, "ppo-s0"), (1, "a2c-s0"), (1, "ppo-s0"),
    ]  # fmt: skip
    assert {o["node_id"] for o in outcomes} == {r["node_id"] for r in raylets}, "not on both nodes"
    root = f"{results}/wf"
    repo = _repo(endpoint, root)
    assert repo.iterations() == [0, 1] and repo.verify() == []
    assert _results(endpoint, root) == _results(endpoint, sequential)


def _committed(endpoint: str, aws: dict[str, str], prefix: str):
    """A check whether any window of the run under ``prefix`` has committed its record (asks the server)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto(aws))
    record = re.compile(r"/checkpoints/(metrics|no_model)_iter_\d+\.json$")

    def check() -> bool:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        return any(record.search(o["Key"]) for o in listed.get("Contents", []))

    return check


def _kill_raylet_while_it_trains(node: RayNode, head: RayNode, committed, run: subprocess.Popen) -> None:
    """SIGKILL the node's raylet once a window is committed (anywhere) and this node is running a window;
    just before, every process of the cluster and the run (its task workers too) listens on 127.0.0.1 only."""
    pid, _ = node.raylet()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before the worker node could be killed mid-window"
        processes = node.processes()
        if any(cmd.startswith(TASK_TITLE) for cmd in processes.values()) and committed():
            table = _table()
            processes |= head.processes() | {p: table[p].cmd for p in _descendants(table, {run.pid})}
            _assert_listening_on_loopback_only(processes)
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no window was running on the worker node")
    while any(cmd.startswith(TASK_TITLE) for cmd in node.processes().values()):  # the window's attempt is lost
        assert time.monotonic() < deadline, "the worker process outlived its raylet"
        time.sleep(0.2)


def test_a_worker_node_killed_mid_run_loses_nothing(s3, base_env, head, worker, key_file, sequential, tmp_path):
    endpoint, aws = s3
    head_node, address = head
    head_id, worker_id = (node.raylet()[1]["node_id"] for node in (head_node, worker))
    prefix = uuid.uuid4().hex[:8]
    results = f"s3://{BUCKET}/{prefix}"
    argv = _walk_forward(endpoint, results, key_file, "--executor", "ray", "--ray-address", address)
    argv += ["--workers", "2"]
    out, err = tmp_path / "stdout", tmp_path / "stderr"  # files: a full pipe would block the run
    with out.open("w") as stdout_file, err.open("w") as stderr_file:
        run = subprocess.Popen(argv, env=base_env, cwd=tmp_path, stdout=stdout_file, stderr=stderr_file)
    try:
        _kill_raylet_while_it_trains(worker, head_node, _committed(endpoint, aws, prefix), run)
        run.wait(timeout=600)
    finally:
        run.kill()
        run.wait()
    stdout, stderr = out.read_text(), err.read_text()
    # Ray retried the lost window (max_retries, 3 by default) on the head; with no retry left the run would stop
    # with a CheckpointError in one line (tests/walkforward/test_parallel_ray.py).
    assert run.returncode == 0, stderr[-4000:]
    outcomes = json.loads(stdout)["outcomes"]
    assert len(outcomes) == 4 and {o["node_id"] for o in outcomes} <= {head_id, worker_id}
    again = _run(argv, base_env, tmp_path)  # the head alone now: nothing left to train
    assert again["trained"] == [] and again["skipped"] == [0, 1]
    root = f"{results}/wf"
    repo = _repo(endpoint, root)
    assert repo.iterations() == [0, 1] and repo.verify() == []
    for name in ("ppo-s0", "a2c-s0"):
        assert repo.candidate(name).iterations() == [0, 1] and repo.candidate(name).verify() == []
    assert _results(endpoint, root) == _results(endpoint, sequential)
