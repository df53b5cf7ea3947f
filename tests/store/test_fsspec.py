"""The object-storage backend's logic on ``memory://`` (fast); S3 itself in ``test_s3.py``."""

from __future__ import annotations

import io
import pickle
import threading
import time
import uuid
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointError, CheckpointExistsError, CheckpointRepository, CommitError
from sb3_iter_ckpt.store.index import attach
from sb3_iter_ckpt.store.storage import (
    STORAGE_OPTIONS_ENV,
    FsspecStorage,
    LocalStorage,
    RemoteRoot,
    Staged,
    storage_for,
    strip_attempt,
)
from sb3_iter_ckpt.store.storage.base import ATTEMPT_RE

NO_VERSIONS = {"versions": {}}  # commits without importing torch for the record's version list
HOURS = 3600 * 10**9


@pytest.fixture
def mem_url():
    url = f"memory://sb3-iter-ckpt-tests/{uuid.uuid4().hex}"
    yield url
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def commit(repo, i, score=1.0, model=b"model-bytes", **kw):
    return repo.commit(i, metrics={"mean_reward": score}, model=model, extra=NO_VERSIONS, **kw)


def ck_names(repo):
    return sorted(repo.storage.listdir("checkpoints"))


# -- choosing the backend ------------------------------------------------------------------------------------
def test_storage_for_keeps_local_paths_local(tmp_path, monkeypatch):
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, '{"anon": true}')  # ignored for local roots
    for root in (tmp_path / "a", str(tmp_path / "b"), f"file://{tmp_path / 'c'}"):
        assert isinstance(storage_for(root), LocalStorage)
    repo = CheckpointRepository(f"file://{tmp_path / 'c'}")
    assert isinstance(repo.root, Path) and repo.root == tmp_path / "c"
    with pytest.raises(CheckpointError, match="URL roots"):
        storage_for(tmp_path, {"key": "x"})


def test_url_roots_get_fsspec_storage_with_options_from_env(mem_url, monkeypatch):
    st = storage_for(mem_url)
    assert isinstance(st, FsspecStorage) and st.url == mem_url
    caps = st.capabilities
    assert (caps.atomic_rename, caps.create_only, caps.hard_links, caps.cross_process_lock) == (
        False,
        True,
        False,
        False,
    )
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "[1]")
    with pytest.raises(CheckpointError, match="JSON object"):
        storage_for(mem_url)
    with pytest.raises(CheckpointError, match="not both"):
        CheckpointRepository(mem_url, storage=st, storage_options={"a": 1})
    with pytest.raises(CheckpointError, match="fsspec"):
        storage_for("nosuchprotocol://x/y", {})
    assert isinstance(pickle.loads(pickle.dumps(st)), FsspecStorage)  # for process executors


# -- the commit protocol -------------------------------------------------------------------------------------
def test_round_trip_with_attempt_unique_artifacts(mem_url, make_ppo):
    repo = CheckpointRepository(mem_url)
    assert isinstance(repo.root, RemoteRoot) and repo.root / "x.json" == f"{mem_url}/x.json"
    assert repo.checkpoints_dir == f"{mem_url}/checkpoints"
    model = make_ppo()
    buf = io.BytesIO()
    model.save(buf)
    commit(repo, 0, 1.0, model=buf.getvalue())
    ck = commit(repo, 1, 2.0, model=lambda f: model.save(f), vecnormalize=b"vn")
    repo.commit(2, metrics={"mean_reward": 9.0}, reason="below_min_score", extra=NO_VERSIONS)
    art = ck.artifacts["model"].file
    assert ATTEMPT_RE.match(art) and strip_attempt(art) == "model_iter_1.zip"
    assert ck.model_path == f"{mem_url}/checkpoints/{art}"
    assert repo.iterations() == [0, 1, 2] and repo.best().iteration == 1
    assert type(repo.load(1)).__name__ == "PPO"
    repo.refresh()
    assert repo.storage.read_bytes("best_model.zip") == repo.storage.read_bytes(f"checkpoints/{art}")
    assert repo.storage.read_bytes("best_vecnormalize.pkl") == b"vn"
    assert repo.verify() == []
    other = CheckpointRepository(mem_url)  # a second object sees the same store at once
    assert other.get(1).sha256 == ck.sha256


def test_second_attempt_gets_a_clear_error_and_its_artifacts_go(mem_url):
    repo = CheckpointRepository(mem_url)
    first = commit(repo, 0, 1.0)
    with pytest.raises(CheckpointExistsError, match="already committed"):
        commit(repo, 0, 2.0)
    # an attempt that passed the pre-check (a racing writer) loses at the create-only record
    late = CheckpointRepository(mem_url)
    late._publisher.ensure_free = lambda *a, **k: None
    late._index.has = lambda i: False
    with pytest.raises(CheckpointExistsError, match="committed by another writer"):
        commit(late, 0, 3.0, model=b"loser")
    assert ck_names(repo) == ["metrics_iter_0.json", first.artifacts["model"].file]
    again = commit(late, 0, 4.0, model=b"retry", idempotent=True)
    assert again.metrics == {"mean_reward": 1.0} and again.sha256 == first.sha256
    assert commit(repo, 0, 5.0, idempotent=True).metrics == {"mean_reward": 1.0}
    assert ck_names(repo) == ["metrics_iter_0.json", first.artifacts["model"].file]


def test_racing_threads_make_exactly_one_record(mem_url):
    k = 6
    barrier = threading.Barrier(k)
    original = FsspecStorage._create

    def create_together(self, path, data):
        barrier.wait(timeout=10)
        return original(self, path, data)

    results: list[object] = [None] * k

    def attempt(j):
        repo = CheckpointRepository(mem_url)
        repo.storage._create = create_together.__get__(repo.storage)
        try:
            results[j] = commit(repo, 7, float(j), model=f"model {j}".encode())
        except CheckpointExistsError as exc:
            results[j] = exc

    threads = [threading.Thread(target=attempt, args=(j,)) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1 and sum(isinstance(r, CheckpointExistsError) for r in results) == k - 1
    repo = CheckpointRepository(mem_url)
    assert ck_names(repo) == ["metrics_iter_7.json", winners[0].artifacts["model"].file]
    assert repo.get(7).sha256 == winners[0].sha256 and repo.verify() == []


def test_a_lost_reply_retried_into_exists_is_our_own_success(mem_url, mocker):
    repo = CheckpointRepository(mem_url)
    original = FsspecStorage._create

    def created_then_retried(self, path, data):
        original(self, path, data)
        raise FileExistsError(path)  # the client retried a PUT whose reply was lost

    mocker.patch.object(FsspecStorage, "_create", created_then_retried)
    ck = commit(repo, 0)
    assert repo.get(0).sha256 == ck.sha256 and repo.verify() == []


def test_failed_record_create_leaves_nothing_listed(mem_url, mocker):
    repo = CheckpointRepository(mem_url)
    mocker.patch.object(FsspecStorage, "_create", side_effect=ConnectionResetError("connection reset"))
    with pytest.raises(CommitError, match="connection reset"):
        commit(repo, 0, model=lambda f: f.write(b"z" * 10_000), vecnormalize=b"vn")
    assert repo.iterations() == [] and ck_names(repo) == []  # the attempt's artifacts were discarded


def test_stale_uploads_are_refused_before_the_record(mem_url, mocker):
    repo = CheckpointRepository(mem_url, storage=FsspecStorage(mem_url, temp_grace=100))
    real = time.time
    staged = repo.storage.stage

    def stage_then_stall(name, source):
        s = staged(name, source)
        mocker.patch("sb3_iter_ckpt.store.storage.fsspec.time.time", lambda: real() + 60)
        return s

    repo.storage.stage = stage_then_stall
    with pytest.raises(CommitError, match="commit again"):
        commit(repo, 0)
    assert ck_names(repo) == []


def test_placeholder_withdraws_when_a_model_record_won(mem_url):
    repo = CheckpointRepository(mem_url)
    commit(repo, 3)
    st = repo.storage
    with pytest.raises(CheckpointExistsError):
        st.publish([], "checkpoints/no_model_iter_3.json", b"{}", conflicts=["checkpoints/metrics_iter_3.json"])
    # the race itself: the model record appears between the pre-check and the placeholder's create
    original = st.exists
    checked = []

    def exists_once_false(name):
        if name.endswith("metrics_iter_3.json") and not checked:
            checked.append(name)
            return False
        return original(name)

    st.exists = exists_once_false
    with pytest.raises(CheckpointExistsError):
        st.publish(
            [],
            "checkpoints/no_model_iter_3.json",
            b"{}",
            conflicts=["checkpoints/metrics_iter_3.json", "checkpoints/no_model_iter_3.json"],
        )
    assert "no_model_iter_3.json" not in ck_names(repo)


# -- sweep -----------------------------------------------------------------------------------------------------
def test_sweep_removes_only_unreferenced_artifacts_past_the_grace_period(mem_url, mocker):
    repo = CheckpointRepository(mem_url)
    kept = commit(repo, 0).artifacts["model"].file
    crashed = repo.storage.stage("checkpoints/model_iter_1.zip", b"crashed")  # a writer died here
    lost = repo.storage.stage("checkpoints/model_iter_0.zip", b"lost race, discard failed")
    before_ph = repo.storage.stage("checkpoints/model_iter_2.zip", b"save failed, then a placeholder")
    repo.commit(2, metrics={}, reason="save_failed", extra=NO_VERSIONS)
    retried = commit(repo, 1, model=b"second attempt").artifacts["model"].file
    young = repo.storage.stage("checkpoints/model_iter_4.zip", b"in flight")
    everything = ck_names(repo)
    assert repo.iterations() == [0, 1, 2]
    assert CheckpointRepository(mem_url).iterations() == [0, 1, 2]  # its sweep at open: all too young
    assert ck_names(repo) == everything
    now = time.time_ns()
    clock = mocker.patch("sb3_iter_ckpt.store.storage.fsspec.time.time_ns", return_value=now + 7 * HOURS)
    fresh = FsspecStorage(mem_url)
    assert fresh.sweep() == []  # told nothing of records: anything a record might name stays
    attach(fresh, sweep=False, verbose=0, where=mem_url)  # its hooks, as a repository opens it
    removed = fresh.sweep()
    gone = {s.final for s in (crashed, lost, before_ph, young)}
    assert set(removed) == gone
    assert ck_names(repo) == sorted(set(everything) - {p.split("/")[-1] for p in gone})
    assert kept in ck_names(repo) and retried in ck_names(repo) and repo.verify() == []
    clock.return_value = now + 100 * HOURS
    assert repo.storage.sweep() == []  # nothing a record names, however old


def test_the_sweep_reads_no_record_where_one_attempt_has_its_model_record(mem_url, mocker):
    repo = CheckpointRepository(mem_url)
    for i in range(3):
        commit(repo, i)
    repo.commit(3, metrics={}, reason="save_failed", extra=NO_VERSIONS)  # a placeholder: no artifact
    mocker.patch("sb3_iter_ckpt.store.storage.fsspec.time.time_ns", return_value=time.time_ns() + 7 * HOURS)
    reads = mocker.spy(repo.storage, "read_bytes")
    assert repo.storage.sweep() == []
    assert reads.call_count == 0  # the repository's record_of told which names are model records
    assert repo.verify() == []


def test_sweep_keeps_everything_of_an_iteration_with_an_unreadable_record(mem_url, mocker):
    repo = CheckpointRepository(mem_url)
    commit(repo, 0)
    extra = repo.storage.stage("checkpoints/model_iter_0.zip", b"other attempt")
    repo.storage.write_atomic("checkpoints/metrics_iter_0.json", b"{not json")
    mocker.patch("sb3_iter_ckpt.store.storage.fsspec.time.time_ns", return_value=time.time_ns() + 7 * HOURS)
    assert repo.storage.sweep() == []
    assert extra.final.split("/")[-1] in ck_names(repo)


def test_discard_never_removes_what_a_record_names(mem_url):
    repo = CheckpointRepository(mem_url)
    ck = commit(repo, 0)
    st = repo.storage
    unnamed = st.stage("checkpoints/model_iter_0.zip", b"x")
    path = f"checkpoints/{ck.artifacts['model'].file}"
    st.discard([Staged(final=path, temp=path, sha256=ck.sha256, size=11), unnamed])
    assert ck_names(repo) == ["metrics_iter_0.json", ck.artifacts["model"].file]


# -- prune, overwrite, analysis --------------------------------------------------------------------------------
def test_prune_overwrite_and_summaries_use_the_records_names(mem_url):
    repo = CheckpointRepository(mem_url)
    for i, score in enumerate([1.0, 5.0, 2.0, 3.0]):
        commit(repo, i, score, model=f"m{i}".encode())
    old = repo.get(3).artifacts["model"].file
    new = commit(repo, 3, 4.0, model=b"replaced", overwrite=True)
    assert old not in ck_names(repo) and new.artifacts["model"].file in ck_names(repo)
    result = repo.prune(keep_last_n=1)
    assert result.plan.remove == (0, 2)
    assert sorted(result.removed) == sorted(
        f"checkpoints/{repo.get(i).record['pruned']['artifacts']['model']['file']}" for i in (0, 2)
    )
    assert [n for n in ck_names(repo) if n.startswith("model_")] == sorted(
        repo.get(i).artifacts["model"].file for i in (1, 3)
    )
    assert repo.verify() == []
    summary = repo.write_summary()
    assert summary["analysis"]["counts"]["pruned"] == 2
    assert repo.training_summary()["best"]["model_file"] == f"checkpoints/{repo.get(1).artifacts['model'].file}"


def test_cli_reads_a_memory_root_in_process(mem_url, capsys):
    from sb3_iter_ckpt import cli

    repo = CheckpointRepository(mem_url)
    commit(repo, 0, 1.0)
    commit(repo, 1, 2.0)
    assert cli.main(["best", mem_url]) == 0 and "iteration 1" in capsys.readouterr().out
    assert (
        cli.main(["list", "--results-dir", mem_url.rsplit("/", 1)[0], "--experiment-id", mem_url.rsplit("/")[-1]]) == 0
    )
    assert "2 iteration(s)" in capsys.readouterr().out
    assert cli.main(["verify", f"{mem_url}-missing"]) == cli.EXIT_NOT_FOUND
    assert cli.main(["list", mem_url, "--storage-option", "oops"]) == cli.EXIT_USAGE
    assert "KEY=VALUE" in capsys.readouterr().err
