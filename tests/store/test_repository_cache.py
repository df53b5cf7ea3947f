"""The listing cache: a settled ``checkpoints/`` folder is not re-stat'ed per record, yet every change
made by this package (or by a tool that creates, replaces or removes names) is seen at the next call."""

from __future__ import annotations

import json
import os
import shutil
import time
import types
from pathlib import Path

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.store import index as index_mod
from sb3_iter_ckpt.store.storage import LocalStorage
from sb3_iter_ckpt.store.storage.local import _has_local_folder_times


@pytest.fixture
def settle(monkeypatch):
    """Shorten the settling delay (2 s) to 50 ms, still well above any file system's clock tick here."""
    monkeypatch.setattr(index_mod, "_SETTLED_NS", 50_000_000)

    def wait() -> None:
        time.sleep(0.1)

    return wait


def _commit(repo: CheckpointRepository, i: int, score: float) -> None:
    repo.commit(i, metrics={"mean_reward": score}, model=f"model {i}".encode())


def _scores(repo: CheckpointRepository) -> dict[int, float | None]:
    return {c.iteration: c.metrics.get("mean_reward") for c in repo.list()}


def test_a_settled_folder_is_served_without_a_listing(tmp_path, settle, mocker):
    repo = CheckpointRepository(tmp_path)
    for i in range(3):
        _commit(repo, i, float(i))
    settle()
    assert _scores(repo) == {0: 0.0, 1: 1.0, 2: 2.0}  # a full scan, remembered: the folder has settled
    spy = mocker.spy(repo.storage, "listdir")
    assert _scores(repo) == {0: 0.0, 1: 1.0, 2: 2.0}
    assert repo.best().iteration == 2 and len(repo) == 3
    assert spy.call_count == 0


def test_a_recently_changed_folder_is_checked_record_by_record(tmp_path, mocker):
    repo = CheckpointRepository(tmp_path)
    _commit(repo, 0, 1.0)
    repo.list()
    spy = mocker.spy(repo.storage, "listdir")
    repo.list()  # changed less than 2 s ago: the change time cannot yet be trusted to move again
    assert spy.call_count == 1


def test_every_change_of_another_writer_is_seen_after_settling(tmp_path, settle):
    reader = CheckpointRepository(tmp_path)
    writer = CheckpointRepository(tmp_path)
    _commit(writer, 0, 1.0)
    _commit(writer, 1, 2.0)
    settle()
    assert _scores(reader) == {0: 1.0, 1: 2.0}

    _commit(writer, 2, 3.0)  # a new record
    assert _scores(reader) == {0: 1.0, 1: 2.0, 2: 3.0}
    settle()
    reader.list()

    writer.prune(keep_last_n=1, remove_records=True)  # records removed (best and latest are 2)
    assert _scores(reader) == {2: 3.0}
    settle()
    reader.list()

    writer.commit(2, metrics={"mean_reward": 0.5}, model=b"replaced", overwrite=True)  # a record replaced
    assert _scores(reader) == {2: 0.5}
    settle()
    reader.list()

    ck = tmp_path / "checkpoints"
    shutil.copy2(ck / "metrics_iter_2.json", tmp_path / "copy.json")
    (ck / "metrics_iter_2.json").unlink()
    assert _scores(reader) == {}
    settle()
    reader.list()
    os.replace(tmp_path / "copy.json", ck / "metrics_iter_2.json")  # restored by a rename from outside
    assert _scores(reader) == {2: 0.5}


def test_a_folder_whose_mtime_is_restored_is_still_seen_changed(tmp_path, settle):
    repo = CheckpointRepository(tmp_path)
    _commit(repo, 0, 1.0)
    settle()
    repo.list()
    ck = tmp_path / "checkpoints"
    before = os.stat(ck)
    _commit(CheckpointRepository(tmp_path), 1, 2.0)
    os.utime(ck, ns=(before.st_atime_ns, before.st_mtime_ns))  # as rsync -a or cp -p would leave it
    assert os.stat(ck).st_mtime_ns == before.st_mtime_ns
    assert _scores(repo) == {0: 1.0, 1: 2.0}


def test_verify_rechecks_a_record_edited_in_place(tmp_path, settle):
    repo = CheckpointRepository(tmp_path)
    _commit(repo, 0, 1.0)
    _commit(repo, 1, 2.0)
    settle()
    assert len(repo.list()) == 2
    path = tmp_path / "checkpoints" / "metrics_iter_1.json"
    with open(path, "r+b") as f:  # in place: no name in the folder changes
        f.seek(0)
        f.write(b"not json")
    problems = repo.verify()
    assert [(p.iteration, p.file) for p in problems] == [(1, "metrics_iter_1.json")]
    # The stat-checked scan of verify() is the one list() reuses from then on.
    with pytest.warns(UserWarning, match="unreadable record"):
        assert [c.iteration for c in repo.list()] == [0]
    assert len(CheckpointRepository(tmp_path).verify()) == 1


def test_a_record_edited_in_place_is_seen_by_a_new_repository(tmp_path, settle):
    repo = CheckpointRepository(tmp_path)
    _commit(repo, 0, 1.0)
    settle()
    repo.list()
    path = tmp_path / "checkpoints" / "metrics_iter_0.json"
    data = json.loads(path.read_text())
    data["metrics"]["mean_reward"] = 7.0
    with open(path, "r+") as f:
        f.write(json.dumps(data))
        f.truncate()
    assert _scores(CheckpointRepository(tmp_path)) == {0: 7.0}


def test_commit_has_and_get_cost_no_listing_of_the_folder(tmp_path, mocker):
    """Their cost must not grow with the number of iterations already committed."""
    repo = CheckpointRepository(tmp_path)
    for i in range(5):
        _commit(repo, i, float(i))
    spy = mocker.spy(repo.storage, "listdir")
    _commit(repo, 5, 5.0)
    assert repo.has(5) and not repo.has(6) and 6 not in repo
    assert repo.get(5).metrics == {"mean_reward": 5.0}
    assert spy.call_count == 0


def test_a_scan_is_settled_by_the_clock_read_before_the_folder(tmp_path, monkeypatch):
    """A change landing after the listing, in the same timestamp tick, during a scan longer than 2 s."""
    clock = {"ns": 10 * 10**9}
    monkeypatch.setattr(index_mod, "time", types.SimpleNamespace(time_ns=lambda: clock["ns"]))

    class OneTick(LocalStorage):  # coarse timestamps: both commits below leave the folder's version as is
        def folder_version(self, folder):
            return (1,), 9 * 10**9  # changed 1 s before the clock

    writer = CheckpointRepository(tmp_path)
    reader = CheckpointRepository(tmp_path, storage=OneTick(tmp_path))
    _commit(writer, 0, 1.0)
    scan = reader._index.scan_records

    def slow_scan():
        result = scan()
        _commit(writer, 1, 2.0)
        clock["ns"] += 2_100_000_000
        return result

    reader._index.scan_records = slow_scan
    assert [c.iteration for c in reader.list()] == [0]
    reader._index.scan_records = scan
    assert [c.iteration for c in reader.list()] == [0, 1]


def test_folder_times_are_trusted_only_on_local_file_systems(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/nfs nfs4 rw 0 0\n"
        "s3fs /mnt/my\\040bucket fuse.s3fs rw 0 0\n"
        "tmpfs /mnt/nfs/scratch tmpfs rw 0 0\n"
    )
    assert _has_local_folder_times(Path("/home/user/results"), str(mounts))
    assert not _has_local_folder_times(Path("/mnt/nfs/results"), str(mounts))
    assert not _has_local_folder_times(Path("/mnt/my bucket/results"), str(mounts))
    assert _has_local_folder_times(Path("/mnt/nfs/scratch/results"), str(mounts))  # the longest mount point wins
    assert not _has_local_folder_times(Path("/"), str(tmp_path / "no-such-file"))  # unknown: not trusted


def test_without_trusted_folder_times_every_call_stat_checks_the_records(tmp_path, settle, mocker):
    storage = LocalStorage(tmp_path)
    storage._local_times = False  # as on NFS or a FUSE mount
    repo = CheckpointRepository(tmp_path, storage=storage)
    _commit(repo, 0, 1.0)
    settle()
    repo.list()
    spy = mocker.spy(storage, "listdir")
    assert _scores(repo) == {0: 1.0}
    assert spy.call_count == 1


def test_a_checkpoints_file_instead_of_a_folder_is_a_clear_error(tmp_path):
    from sb3_iter_ckpt import CheckpointError

    (tmp_path / "checkpoints").write_text("not a folder")
    repo = CheckpointRepository(tmp_path)
    for call in (lambda: repo.has(0), lambda: repo.get(0), repo.list):
        with pytest.raises(CheckpointError, match="checkpoints"):
            call()
