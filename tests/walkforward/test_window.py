"""``RepositoryRef``: how a worker process reopens the driver's repository."""

from __future__ import annotations

import pickle
import uuid

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.runner.window import RepositoryRef
from sb3_iter_ckpt.store.storage.local import LocalStorage

NO_VERSIONS = {"versions": {}}  # commits without importing torch for the record's version list


def _commit(repo, i):
    repo.commit(i, metrics={"mean_reward": 1.0}, model=b"model-bytes", extra=NO_VERSIONS)


def _reopened(ref):
    return pickle.loads(pickle.dumps(ref)).open()  # what a spawned worker does


def test_a_local_repository_travels_as_its_root_and_key(tmp_path):
    repo = CheckpointRepository(tmp_path / "r", signing_key=b"secret")
    _commit(repo, 0)
    ref = RepositoryRef.of(repo)
    assert ref.storage is None and ref.root == str((tmp_path / "r").resolve())
    assert ref.signing_key == b"secret"
    other = _reopened(ref)
    assert isinstance(other.storage, LocalStorage) and other.has(0)
    assert other.verify() == []  # the key came along: the signature checks out


def test_a_local_storage_subclass_travels_as_itself(tmp_path):
    class Custom(LocalStorage):
        pass

    storage = Custom(tmp_path / "r")
    ref = RepositoryRef.of(CheckpointRepository(tmp_path / "r", storage=storage))
    assert ref.storage is storage  # reopening by path would build a plain LocalStorage


def test_an_object_store_repository_travels_with_its_storage():
    pytest.importorskip("fsspec")
    import fsspec

    url = f"memory://sb3-iter-ckpt-tests/{uuid.uuid4().hex}"
    try:
        repo = CheckpointRepository(url)
        _commit(repo, 3)
        ref = RepositoryRef.of(repo)
        assert ref.storage is repo.storage and ref.root == url
        assert _reopened(ref).has(3)
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


def test_the_moved_names_stay_importable_from_their_old_modules():
    from sb3_iter_ckpt import walkforward
    from sb3_iter_ckpt.runner import algorithms, executors, window

    for name in ("RepositoryRef", "WindowSpec", "train_window"):
        assert name in executors.__all__ and getattr(executors, name) is getattr(window, name)
    assert "ALGORITHMS" in walkforward.__all__ and walkforward.ALGORITHMS is algorithms.ALGORITHMS


def test_an_unknown_algorithm_is_a_clear_error():
    from sb3_iter_ckpt.errors import CheckpointError
    from sb3_iter_ckpt.runner.algorithms import algorithm_class

    assert algorithm_class("PPO").__name__ == "PPO"
    with pytest.raises(CheckpointError, match="unknown algorithm 'nope'"):
        algorithm_class("nope")
