"""Durability: every file a commit, a refresh or ``write_atomic`` leaves was made durable, by WHAT was synced.

Counting ``fsync`` calls cannot tell a missing one (it only shrinks the count with the code). Here
``os.fsync`` is wrapped (a lost page cache cannot be made real in a test) to map each descriptor to
its file (``/proc/self/fd``) and inode; renames, links and ``mkdir`` are logged in order. Then, for
each file the operation published, the test follows the names its bytes had (staging temporary,
rename, link) and asserts that:

- its bytes were fsynced before it got its final name (a crash never shows a name over lost bytes);
- its folder was fsynced after it got that name (the name itself survives a power cut);
- every folder created on the way was made durable in its parent.

A commit's artifacts must also be durable, with their names, before the record (the commit marker)
appears.
"""

from __future__ import annotations

import os
import pickle
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.retention import KeepLastN
from sb3_iter_ckpt.store.storage import LocalStorage
from sb3_iter_ckpt.store.storage.rollback import intent_name

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps descriptors through /proc")

CK = "checkpoints"


def _real(path) -> str:
    """The path with its folder resolved (the last component kept, even when it is a symlink or gone)."""
    p = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))


@dataclass(frozen=True)
class Event:
    kind: str  # "fsync", "place" (a rename or a link), "mkdir"
    path: str  # fsync: the descriptor's file; place: the destination; mkdir: the folder
    src: str = ""  # place: the source name
    inode: tuple[int, int] = (0, 0)
    is_dir: bool = False


class SyncLog:
    """The ordered fsyncs, renames, links and folder creations under ``root``'s parent."""

    def __init__(self, monkeypatch, under: Path) -> None:
        self.under = _real(under)
        self.events: list[Event] = []
        real_fsync, real_replace, real_rename, real_link, real_mkdir = (
            os.fsync,
            os.replace,
            os.rename,
            os.link,
            os.mkdir,
        )

        def fsync(fd):
            real_fsync(fd)  # only a completed fsync counts
            st = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
            if self._mine(path):
                self.events.append(Event("fsync", path, inode=(st.st_dev, st.st_ino), is_dir=stat.S_ISDIR(st.st_mode)))

        def placing(real):
            def call(src, dst, *args, **kwargs):
                out = real(src, dst, *args, **kwargs)
                if self._mine(_real(dst)):
                    self.events.append(Event("place", _real(dst), src=_real(src)))
                return out

            return call

        def mkdir(path, *args, **kwargs):
            out = real_mkdir(path, *args, **kwargs)
            if self._mine(_real(path)):
                self.events.append(Event("mkdir", _real(path)))
            return out

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", placing(real_replace))
        monkeypatch.setattr(os, "rename", placing(real_rename))
        monkeypatch.setattr(os, "link", placing(real_link))
        monkeypatch.setattr(os, "mkdir", mkdir)

    def _mine(self, path: str) -> bool:
        return path == self.under or path.startswith(self.under + os.sep)

    def clear(self) -> None:
        self.events.clear()

    # -- queries ---------------------------------------------------------------------------------
    def placed(self, path, before: int | None = None) -> int | None:
        """Index of the last rename or link that gave ``path`` its bytes (before ``before``)."""
        path = _real(path)
        end = len(self.events) if before is None else before
        for k in range(end - 1, -1, -1):
            e = self.events[k]
            if e.kind == "place" and e.path == path:
                return k
        return None

    def names(self, path) -> tuple[list[str], int | None]:
        """The names the bytes at ``path`` had, latest first, and the index of the last placement."""
        names, k = [_real(path)], self.placed(path)
        last, cursor = k, k
        while cursor is not None:
            src = self.events[cursor].src
            names.append(src)
            cursor = self.placed(src, before=cursor)
        return names, last

    def data_synced(self, path) -> int | None:
        """Index of an fsync of ``path``'s bytes (its inode, under one of the names it had), or None."""
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
        names = set(self.names(path)[0])
        hits = [k for k, e in enumerate(self.events) if e.kind == "fsync" and e.inode == inode and e.path in names]
        return hits[0] if hits else None

    def folder_synced_after(self, folder, index: int) -> int | None:
        folder = os.path.realpath(folder)
        for k in range(index + 1, len(self.events)):
            e = self.events[k]
            if e.kind == "fsync" and e.is_dir and e.path == folder:
                return k
        return None

    # -- assertions ------------------------------------------------------------------------------
    def assert_durable(self, path) -> tuple[int, int]:
        """``path``'s bytes were fsynced before its final name appeared, and its folder after."""
        path = Path(path)
        data = self.data_synced(path)
        assert data is not None, f"{path.name}: its bytes were never fsynced"
        _, placed = self.names(path)
        if placed is not None:
            assert data < placed, f"{path.name}: renamed into place before its bytes were fsynced"
        named = placed if placed is not None else data
        assert self.folder_synced_after(path.parent, named) is not None, (
            f"{path.name}: its folder {path.parent.name}/ was not fsynced after the file got its name"
        )
        return data, named

    def assert_folders_durable(self) -> None:
        """Every folder created was fsynced into its parent afterwards."""
        for k, e in enumerate(self.events):
            if e.kind == "mkdir":
                parent = os.path.dirname(e.path)
                assert self.folder_synced_after(parent, k) is not None, (
                    f"{os.path.basename(e.path)}/ was created but its parent folder was not fsynced"
                )


@pytest.fixture
def sync_log(monkeypatch, tmp_path) -> SyncLog:
    return SyncLog(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def artifacts():
    """A real tiny PPO's zip and its VecNormalize pickle."""
    from stable_baselines3 import PPO

    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0), norm_reward=False)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    venv.close()
    return model, pickle.dumps(venv)


def _commit(repo: CheckpointRepository, i: int, artifacts, score: float = 1.0):
    model, vn = artifacts
    return repo.commit(
        i,
        metrics={"mean_reward": score},
        model=lambda f: model.save(f),  # a writer, as the callback stages it
        vecnormalize=vn,
        replay_buffer=b"replay buffer bytes",
    )


def test_commit_makes_each_artifact_the_record_and_their_folders_durable(tmp_path, sync_log, artifacts):
    root = tmp_path / "results" / "1003"  # nothing exists yet: the commit creates three folders
    repo = CheckpointRepository(root)
    _commit(repo, 0, artifacts)
    ck = root / CK
    files = ["model_iter_0.zip", "vecnormalize_iter_0.pkl", "replay_buffer_iter_0.pkl"]
    record_data, record_named = sync_log.assert_durable(ck / "metrics_iter_0.json")
    for name in files:
        data, named = sync_log.assert_durable(ck / name)
        assert data < record_named, f"{name}: fsynced only after the record appeared"
        # the artifact's name itself is durable before the record that points at it exists
        synced = sync_log.folder_synced_after(ck, named)
        assert synced is not None and synced < record_named, f"{name}: its name was not durable before the record"
    sync_log.assert_folders_durable()
    assert {e.path for e in sync_log.events if e.kind == "mkdir"} >= {_real(root), _real(ck)}


def test_on_a_slow_disk_each_name_still_waits_for_the_sync_it_needs(tmp_path, sync_log, monkeypatch, artifacts):
    """The bytes' syncs run in a background thread: a slow one must still complete before the name it guards."""
    logged = os.fsync

    def slow_fsync(fd):
        # Far longer than the renames, the folder's sync and the link that follow; the record's the longest.
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            time.sleep(0.6 if "metrics_iter" in os.readlink(f"/proc/self/fd/{fd}") else 0.1)
        logged(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    repo = CheckpointRepository(tmp_path / "repo")
    _commit(repo, 0, artifacts)
    ck = tmp_path / "repo" / CK
    _, record_named = sync_log.assert_durable(ck / "metrics_iter_0.json")
    for name in ("model_iter_0.zip", "vecnormalize_iter_0.pkl", "replay_buffer_iter_0.pkl"):
        _, named = sync_log.assert_durable(ck / name)
        synced = sync_log.folder_synced_after(ck, named)
        assert synced is not None and synced < record_named, f"{name}: its name was not durable before the record"


def test_commit_into_an_existing_folder(tmp_path, sync_log, artifacts):
    repo = CheckpointRepository(tmp_path / "repo")
    _commit(repo, 0, artifacts)
    sync_log.clear()
    _commit(repo, 1, artifacts)
    for name in ("model_iter_1.zip", "vecnormalize_iter_1.pkl", "replay_buffer_iter_1.pkl", "metrics_iter_1.json"):
        sync_log.assert_durable(tmp_path / "repo" / CK / name)
    assert not [e for e in sync_log.events if e.kind == "mkdir"]


def test_placeholder_record_is_durable(tmp_path, sync_log):
    repo = CheckpointRepository(tmp_path / "repo")
    repo.commit(0, metrics={"mean_reward": None}, reason="nan_metric")
    sync_log.assert_durable(tmp_path / "repo" / CK / "no_model_iter_0.json")
    sync_log.assert_folders_durable()


@pytest.mark.parametrize("name", ["training_summary.json", f"{CK}/metrics_iter_0.json", "new/folder/x.json"])
def test_write_atomic_makes_the_file_and_its_folder_durable(tmp_path, sync_log, name):
    storage = LocalStorage(tmp_path / "repo")
    (tmp_path / "repo" / CK).mkdir(parents=True)
    (tmp_path / "repo" / CK / "metrics_iter_0.json").write_bytes(b"{}")  # replaced, as prune rewrites a record
    sync_log.clear()
    storage.write_atomic(name, b'{"a": 1}')
    sync_log.assert_durable(tmp_path / "repo" / name)
    sync_log.assert_folders_durable()
    assert (tmp_path / "repo" / name).read_bytes() == b'{"a": 1}'


def test_copy_file_makes_the_new_name_durable(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "repo")
    storage.write_atomic(f"{CK}/model_iter_0.zip", b"model bytes")
    log = SyncLog(monkeypatch, tmp_path)
    storage.copy_file(f"{CK}/model_iter_0.zip", "best_model.zip")
    dst = tmp_path / "repo" / "best_model.zip"
    # A copy (never a second name of the committed file): its bytes and its folder entry must be synced.
    assert os.stat(dst).st_ino != os.stat(tmp_path / "repo" / CK / "model_iter_0.zip").st_ino
    log.assert_durable(dst)
    assert dst.read_bytes() == b"model bytes"


def test_refresh_makes_the_best_model_and_the_summaries_durable(tmp_path, monkeypatch, artifacts):
    """best_model.zip and best_vecnormalize.pkl are copies: each needs its own bytes synced, then its folder."""
    root = tmp_path / "repo"
    repo = CheckpointRepository(root)
    _commit(repo, 0, artifacts, score=1.0)
    _commit(repo, 1, artifacts, score=2.0)
    log = SyncLog(monkeypatch, tmp_path)  # after the commits: only what the refresh does
    repo.refresh()
    best = repo.best()
    assert best is not None and best.iteration == 1
    pairs = {rec.BEST_MODEL: "model_iter_1.zip", rec.BEST_VECNORMALIZE: "vecnormalize_iter_1.pkl"}
    for name, committed in pairs.items():
        path, source = root / name, root / CK / committed
        assert path.read_bytes() == source.read_bytes()
        assert os.stat(path).st_ino != os.stat(source).st_ino, f"{name} is a second name of {committed}"
        log.assert_durable(path)
    for name in (rec.TRAINING_SUMMARY, rec.CHECKPOINT_SUMMARY):
        log.assert_durable(root / name)


def test_every_file_a_training_run_leaves_is_durable(tmp_path, sync_log):
    """The whole callback path (stage, publish, retention's record rewrites, best model, summaries)."""
    root = tmp_path / "results" / "run"
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0), norm_reward=False)
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    scores = iter([1.0, 3.0, 2.0, 5.0, 4.0, 0.0])
    cb = IterationCheckpointCallback(
        CheckpointRepository(root),
        evaluator=lambda m, e: {"mean_reward": next(scores)},
        eval_freq=32,
        iteration_timesteps=64,
        retention=KeepLastN(1),
    )
    model.learn(192, callback=cb)
    venv.close()
    assert CheckpointRepository(root).iterations() == [0, 1, 2]
    files = [p for p in root.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {p.name for p in files} >= {"metrics_iter_0.json", "model_iter_2.zip", rec.BEST_MODEL, rec.TRAINING_SUMMARY}
    for path in files:
        sync_log.assert_durable(path)
    sync_log.assert_folders_durable()


# -- what a writer killed mid-publish leaves, and the next open's clean-up -----------------------------------
def test_writer_killed_between_its_renames_and_its_record_is_rolled_back(tmp_path):
    """The intent ``publish`` writes is what lets the next open remove the artifacts of a killed writer.

    A forked writer dies (``os._exit``, no clean-up runs) right when it would create the record: its
    artifacts are already under their final names.
    """
    root = tmp_path / "repo"
    CheckpointRepository(root).commit(0, metrics={"mean_reward": 1.0}, model=b"model 0")
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            real_link = os.link

            def die_at_the_record(src, dst, *args, **kwargs):
                if os.fspath(dst).endswith("metrics_iter_1.json"):
                    os._exit(9)
                return real_link(src, dst, *args, **kwargs)

            os.link = die_at_the_record
            CheckpointRepository(root).commit(1, metrics={"mean_reward": 2.0}, model=b"model 1", vecnormalize=b"vn 1")
        finally:
            os._exit(3)  # never reached unless the record was not attempted
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 9
    ck = root / CK
    assert (ck / "model_iter_1.zip").is_file() and (ck / "vecnormalize_iter_1.pkl").is_file()
    intent = root / intent_name(f"{CK}/metrics_iter_1.json")
    assert intent.is_file() and not (ck / "metrics_iter_1.json").exists()
    repo = CheckpointRepository(root)  # opening sweeps
    assert repo.iterations() == [0] and repo.verify() == []
    assert sorted(p.name for p in ck.iterdir()) == ["metrics_iter_0.json", "model_iter_0.zip"]
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"model 1")  # the iteration is free again
