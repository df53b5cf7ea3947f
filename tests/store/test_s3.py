"""Repositories on S3, against a real S3-compatible server: moto's ``ThreadedMotoServer`` on 127.0.0.1.

Nothing else is contacted: every client gets an explicit ``endpoint_url`` and dummy credentials,
the instance metadata service is disabled and no AWS config or credentials file is read.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server]")

from stable_baselines3 import PPO  # noqa: E402

from sb3_iter_ckpt import (  # noqa: E402
    CheckpointExistsError,
    CheckpointRepository,
    CommitError,
    IterationCheckpointCallback,
)
from sb3_iter_ckpt.store.storage import STORAGE_OPTIONS_ENV, FsspecStorage  # noqa: E402
from sb3_iter_ckpt.store.storage.base import ATTEMPT_RE  # noqa: E402

BUCKET = "sb3-iter-ckpt-tests"
NO_VERSIONS = {"versions": {}}
HOURS = 3600 * 10**9


def _aws_env(mp: pytest.MonkeyPatch, endpoint: str, nowhere: str) -> None:
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_CONFIG_FILE", nowhere)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", STORAGE_OPTIONS_ENV):
        mp.delenv(var, raising=False)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as mp:
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        _aws_env(mp, endpoint, str(tmp_path_factory.mktemp("aws") / "none"))
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(autouse=True)
def _isolated_aws(s3_endpoint, monkeypatch, tmp_path):
    _aws_env(monkeypatch, s3_endpoint, str(tmp_path / "no-aws-config"))


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Any name lookup but the test server's (AWS, the metadata service) fails the test."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise AssertionError(f"the S3 tests tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def opts(s3_endpoint):
    """Storage options of the test server (dummy credentials, explicit endpoint)."""
    return {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": s3_endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }


@pytest.fixture
def url():
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def fresh(opts):
    """Options for a filesystem object of its own (its own listing cache), like another process's."""
    return {**opts, "skip_instance_cache": True}


def keys(repo) -> list[str]:
    """Every object under the repository root, straight from the server (no cache)."""
    fs = repo.storage.fs
    fs.invalidate_cache()
    root = repo.storage.url.removeprefix("s3://")
    return sorted(k.removeprefix(root + "/") for k in fs.find(root))


def commit(repo, i, score=1.0, model=b"model-bytes", **kw):
    return repo.commit(i, metrics={"mean_reward": score}, model=model, extra=NO_VERSIONS, **kw)


def test_round_trip_through_the_callback(url, opts, make_ppo, eval_env):
    repo = CheckpointRepository(url, storage_options=opts)
    assert repo.storage.capabilities.create_only and not repo.storage.capabilities.cross_process_lock
    for it in range(2):
        cb = IterationCheckpointCallback(repo, eval_env=eval_env, eval_freq=32, n_eval_episodes=1)
        make_ppo(seed=it).learn(64, callback=cb)
        assert [c.iteration for c in cb.committed] == [it]
    reader = CheckpointRepository(url, storage_options=fresh(opts))
    cks = reader.list()
    assert [c.iteration for c in cks] == [0, 1]
    for ck in cks:
        assert ck.has_model and ATTEMPT_RE.match(ck.artifacts["model"].file)
        assert ck.model_path == f"{url}/checkpoints/{ck.artifacts['model'].file}"
    best = reader.best()
    assert best.score("mean_reward") == max(c.score("mean_reward") for c in cks)
    assert isinstance(reader.load(best.iteration), PPO)
    assert reader.verify() == []
    model_key = f"checkpoints/{best.artifacts['model'].file}"
    assert reader.storage.read_bytes("best_model.zip") == reader.storage.read_bytes(model_key)
    assert json.loads(reader.storage.read_bytes("training_summary.json"))["best"]["best_model_file"] == "best_model.zip"
    assert keys(reader) == sorted(
        ["best_model.zip", "checkpoint_summary.json", "training_summary.json"]
        + [f"checkpoints/{c.record_file}" for c in cks]
        + [f"checkpoints/{c.artifacts['model'].file}" for c in cks]
    )


def test_a_killed_writer_leaves_nothing_listed_and_the_sweep_removes_only_its_orphans(url, opts, mocker):
    script = textwrap.dedent(
        """
        import json, os, signal, sys
        from sb3_iter_ckpt.repository import CheckpointRepository
        from sb3_iter_ckpt.store.storage import FsspecStorage

        def die(self, path, data):  # killed after the uploads, before the record
            os.kill(os.getpid(), signal.SIGKILL)

        FsspecStorage._create = die
        repo = CheckpointRepository(sys.argv[1], storage_options=json.loads(sys.argv[2]))
        repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m" * 5000, vecnormalize=b"v", extra={"versions": {}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, url, json.dumps(opts)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    repo = CheckpointRepository(url, storage_options=opts)
    orphans = keys(repo)
    assert len(orphans) == 2 and all(ATTEMPT_RE.match(k.split("/")[-1]) for k in orphans)
    assert repo.list() == [] and not repo.has(0) and repo.next_iteration() == 0
    ck = commit(repo, 0, model=b"second attempt")  # the iteration is free: nothing was committed
    assert repo.storage.sweep() == []  # the orphans are younger than the grace period
    mocker.patch("sb3_iter_ckpt.store.storage.fsspec.time.time_ns", return_value=time.time_ns() + 7 * HOURS)
    assert sorted(repo.storage.sweep()) == orphans
    assert keys(repo) == ["checkpoints/metrics_iter_0.json", f"checkpoints/{ck.artifacts['model'].file}"]
    assert repo.verify() == [] and repo.storage.sweep() == []


def test_an_exception_before_the_record_leaves_nothing(url, opts, mocker):
    repo = CheckpointRepository(url, storage_options=opts)
    mocker.patch.object(FsspecStorage, "_create", side_effect=ConnectionResetError("connection reset by peer"))
    with pytest.raises(CommitError, match="connection reset"):
        commit(repo, 0, model=lambda f: f.write(b"z" * 10_000), vecnormalize=b"vn")
    assert repo.list() == [] and keys(repo) == []


def test_racing_writers_of_one_iteration_make_exactly_one_record(url, opts):
    k = 4
    barrier = threading.Barrier(k)
    original = FsspecStorage._create
    results: list[object] = [None] * k

    def attempt(j: int) -> None:
        repo = CheckpointRepository(url, storage_options=fresh(opts))  # a filesystem object each
        repo.storage._create = lambda path, data: (barrier.wait(timeout=30), original(repo.storage, path, data))
        try:  # half of the writers ask for idempotent retries: they get the winner's record
            results[j] = commit(repo, 5, float(j), model=f"model {j}".encode(), idempotent=j % 2 == 1)
        except CheckpointExistsError as exc:
            results[j] = exc

    threads = [threading.Thread(target=attempt, args=(j,)) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    repo = CheckpointRepository(url, storage_options=opts)
    winner = repo.get(5)
    assert [k for k in keys(repo) if "metrics_iter" in k] == ["checkpoints/metrics_iter_5.json"]
    assert keys(repo) == ["checkpoints/metrics_iter_5.json", f"checkpoints/{winner.artifacts['model'].file}"]
    for j, r in enumerate(results):
        if isinstance(r, CheckpointExistsError):
            assert j % 2 == 0 and "another writer" in str(r)
        else:
            assert r.sha256 == winner.sha256 and r.metrics == winner.metrics
    assert sum(isinstance(r, CheckpointExistsError) for r in results) in (k // 2 - 1, k // 2)
    assert repo.verify() == []


def test_another_writers_commit_is_seen_at_once_despite_the_listing_cache(url, opts):
    writer = CheckpointRepository(url, storage_options=fresh(opts))
    reader = CheckpointRepository(url, storage_options=fresh(opts))
    assert writer.storage.fs is not reader.storage.fs
    commit(writer, 0)
    assert reader.iterations() == [0]
    folder = f"{url.removeprefix('s3://')}/checkpoints"
    assert len(reader.storage.fs.ls(folder)) == 2  # the reader's filesystem has this listing cached now
    commit(writer, 1, 2.0)
    assert len(reader.storage.fs.ls(folder)) == 2, "fsspec's cached listing is stale..."
    assert reader.iterations() == [0, 1] and reader.has(1)  # ...the repository's is not
    assert reader.latest().iteration == 1 and reader.best().iteration == 1
    with pytest.raises(CheckpointExistsError):
        commit(reader, 1, 3.0)


def test_prune_and_verify(url, opts):
    repo = CheckpointRepository(url, storage_options=opts)
    for i, score in enumerate([1.0, 5.0, 2.0, 3.0]):
        commit(repo, i, score, model=f"model {i}".encode() * 100)
    repo.refresh()
    best_key = f"checkpoints/{repo.get(1).artifacts['model'].file}"
    assert repo.storage.read_bytes("best_model.zip") == repo.storage.read_bytes(best_key)  # server-side copy
    doomed = [f"checkpoints/{repo.get(i).artifacts['model'].file}" for i in (0, 2)]
    result = repo.prune(keep_last_n=1)
    assert result.plan.remove == (0, 2) and sorted(result.removed) == sorted(doomed)
    assert result.freed_bytes == 2 * 700
    assert not set(doomed) & set(keys(repo)) and best_key in keys(repo)
    assert [repo.get(i).reason for i in range(4)] == ["pruned", None, "pruned", None]
    assert repo.verify() == []
    kept = f"checkpoints/{repo.get(3).artifacts['model'].file}"
    repo.storage.fs.pipe_file(f"{url.removeprefix('s3://')}/{kept}", b"tampered")
    problems = CheckpointRepository(url, storage_options=fresh(opts)).verify()
    assert [(p.iteration, p.file) for p in problems] == [(3, kept.split("/")[-1])]


def test_cli_on_an_s3_root(url, opts, s3_endpoint, capsys, tmp_path):
    from sb3_iter_ckpt import cli

    repo = CheckpointRepository(url, storage_options=opts)
    for i, score in enumerate([1.0, 3.0, 2.0]):
        commit(repo, i, score)
    # a real process: storage options from SB3_ITER_CKPT_STORAGE_OPTIONS, credentials from the AWS variables
    env = dict(os.environ, **{STORAGE_OPTIONS_ENV: json.dumps({"endpoint_url": s3_endpoint})})
    env.pop("AWS_ENDPOINT_URL")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sb3_iter_ckpt.cli", *argv], env=env, capture_output=True, text=True, timeout=120
        )

    listed = run("list", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["iteration"] for c in json.loads(listed.stdout)] == [0, 1, 2]
    assert json.loads(listed.stdout)[1]["model_path"].startswith(f"{url}/checkpoints/model_iter_1.")
    verified = run("verify", url)
    assert verified.returncode == cli.EXIT_OK
    assert verified.stdout.startswith("ok: ") and "iteration(s) hashed" in verified.stdout
    assert run("verify", f"{url}-nothing-here").returncode == cli.EXIT_NOT_FOUND
    # in this process: --storage-option flags (JSON values) instead of the environment variable
    flags = [f"--storage-option=endpoint_url={s3_endpoint}", "--storage-option=key=testing"]
    flags += ["--storage-option=secret=testing", '--storage-option=client_kwargs={"region_name": "us-east-1"}']
    capsys.readouterr()
    assert cli.main(["best", url, "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["iteration"] == 1
    assert cli.main(["prune", url, "--keep-last-n", "1", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["remove"] == [0]
    assert cli.main(["analyze", url, "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["pruned"] == 1
    assert cli.main(["summary", url, *flags]) == 0
    assert f"{url}/checkpoint_summary.json" in capsys.readouterr().out
    assert cli.main(["show", url, "1", *flags]) == 0 and f"model {url}/checkpoints/" in capsys.readouterr().out
    assert cli.main(["verify", str(tmp_path), "--storage-option=key=x"]) == cli.EXIT_USAGE


def test_walk_forward_on_an_s3_root_trains_resumes_and_prints_urls(s3_endpoint, capsys, tmp_path, monkeypatch):
    from sb3_iter_ckpt import cli

    monkeypatch.chdir(tmp_path)  # the report of a URL root is written locally, in the working folder

    results = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    tiny = ["--n-prices", "300", "--train-size", "120", "--val-size", "60", "--iterations", "2"]
    tiny += ["--executor", "sequential"]
    tiny += ["--total-timesteps", "64", "--n-steps", "32", "--eval-freq", "32"]
    argv = ["walk-forward", "--experiment-id", "7", "--results-dir", results, *tiny]
    argv.append(f"--storage-option=endpoint_url={s3_endpoint}")
    assert cli.main(argv) == cli.EXIT_OK
    out = capsys.readouterr().out
    root = f"{results}/7"
    assert f"-> {root}/checkpoints/" in out and f"summaries: {root}/training_summary.json" in out
    assert "report: 7-report.html (open it in a browser)" in out and (tmp_path / "7-report.html").is_file()
    repo = CheckpointRepository(root, storage_options={"endpoint_url": s3_endpoint})
    assert repo.iterations() == [0, 1] and repo.verify() == []
    assert cli.main([*argv, "--json"]) == cli.EXIT_OK  # the same configuration again: nothing retrained
    report = json.loads(capsys.readouterr().out)
    assert report["trained"] == [] and report["skipped"] == [0, 1]


def test_walk_forward_with_candidates_on_an_s3_root(s3_endpoint, capsys, tmp_path, monkeypatch):
    """Each candidate's repository is a prefix under the root, opened with the root's storage options."""
    from sb3_iter_ckpt import cli
    from sb3_iter_ckpt.repository import candidate_forwards

    monkeypatch.chdir(tmp_path)
    results = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    tiny = ["--n-prices", "300", "--train-size", "120", "--val-size", "60", "--iterations", "2"]
    tiny += ["--executor", "sequential"]
    tiny += ["--total-timesteps", "64", "--n-steps", "32", "--eval-freq", "32", "--algo", "ppo,a2c"]
    argv = ["walk-forward", "--experiment-id", "c", "--results-dir", results, *tiny, "--json"]
    argv.append(f"--storage-option=endpoint_url={s3_endpoint}")
    assert cli.main(argv) == cli.EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["forward"]["n_trials"] == 2
    repo = CheckpointRepository(f"{results}/c", storage_options={"endpoint_url": s3_endpoint})
    assert repo.iterations() == [0, 1] and repo.verify() == []
    for i in (0, 1):
        chosen = repo.get(i).record["candidate"]["name"]
        member = repo.candidate(chosen)
        assert member.storage.url == f"{results}/c/candidates/{chosen}"
        assert member.get(i).sha256 == repo.get(i).sha256 and member.verify() == []
        assert repo.forward(i).returns == member.forward(i).returns
    assert sorted(candidate_forwards(repo)) == ["a2c-s0", "ppo-s0"]


class _Always:
    """A stand-in policy that always takes one action (the forward file's storage is what is tested here)."""

    def __init__(self, action):
        self.action = action

    def predict(self, obs, deterministic=True):
        return [self.action], None


def test_forward_results_are_created_once_on_s3_and_verified(url, opts):
    from sb3_iter_ckpt.data import synthetic_prices
    from sb3_iter_ckpt.forward import evaluate_forward
    from sb3_iter_ckpt.splitter import Window

    prices = synthetic_prices(300, seed=1)
    window = Window(0, 0, 150, 150, 200, test_start=200, test_stop=300)
    long_, short = (evaluate_forward(_Always(a), prices, window, iteration=0) for a in (2, 0))
    repo = CheckpointRepository(url, storage_options=opts, signing_key=b"k")
    commit(repo, 0)
    record = repo.storage.read_bytes("checkpoints/metrics_iter_0.json")
    repos = [CheckpointRepository(url, storage_options=fresh(opts), signing_key=b"k") for _ in range(2)]
    outcomes: list = [None, None]

    def race(k, result):
        try:
            outcomes[k] = repos[k].commit_forward(result)
        except CheckpointExistsError as exc:
            outcomes[k] = exc
        except Exception as exc:  # noqa: BLE001  any other error fails the test below, named
            outcomes[k] = ("unexpected", repr(exc))

    threads = [threading.Thread(target=race, args=(k, r)) for k, r in enumerate((long_, short))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [o for o in outcomes if isinstance(o, tuple)], outcomes
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    assert "checkpoints/forward_iter_0.json" in keys(repo)
    reader = CheckpointRepository(url, storage_options=fresh(opts), signing_key=b"k")
    assert reader.forward(0) == winners[0]
    reader.commit_forward(winners[0])  # the same bytes again: a resumed run
    assert repo.storage.read_bytes("checkpoints/metrics_iter_0.json") == record
    assert reader.verify() == []
    swept = CheckpointRepository(url, storage=FsspecStorage(url, fresh(opts), temp_grace=0), signing_key=b"k")
    assert "checkpoints/forward_iter_0.json" in keys(swept)
    path = f"{url.removeprefix('s3://')}/checkpoints/forward_iter_0.json"
    body = json.loads(repo.storage.fs.cat_file(path))
    body["forward"]["returns"][0] += 0.5
    repo.storage.fs.pipe_file(path, json.dumps(body).encode())
    problems = CheckpointRepository(url, storage_options=fresh(opts), signing_key=b"k").verify()
    assert [(p.iteration, p.file) for p in problems] == [(0, "forward_iter_0.json")]
