"""Faults: disk full, I/O error and permission denied on every write and rename of a commit.

The faults are injected with pytest-mock (a full disk cannot be made real in a test). Every storage
call that writes (``open`` and ``os.open`` for writing, the data ``write`` and ``os.write``, ``fsync``,
``os.replace``, ``os.link``) is counted during one commit and during one refresh (best-model copy and
summaries); then each of those calls in turn fails with each errno, and the repository must be exactly
as before the commit
(or, for the refresh, consistent and repairable). The callback's side: training goes on with a
warning and a ``save_failed`` placeholder, or stops with ``on_error="raise"``.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_iter_ckpt import CheckpointRepository, CommitError, IterationCheckpointCallback
from sb3_iter_ckpt.store.storage import LocalStorage
from sb3_iter_ckpt.store.storage import base as base_mod
from sb3_iter_ckpt.store.storage import local as local_mod

CK = "checkpoints"
ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EIO: "EIO", errno.EACCES: "EACCES"}
OPS = ("open", "write", "fsync", "replace", "link")


class Faults:
    """Count the storage's write calls per kind; make the ``nth`` call of ``op`` fail with ``err``."""

    def __init__(self, mocker, op: str | None = None, nth: int = 0, err: int = 0) -> None:
        self.op, self.nth, self.err = op, nth, err
        self.counts: Counter[str] = Counter()
        self.fired = False
        real_open = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wxa+"):
                self._tick("open")
            return real_open(file, mode, *args, **kwargs)

        real_write = base_mod._HashingFile.write

        def fake_write(writer, b):
            self._tick("write")
            return real_write(writer, b)

        mocker.patch.object(local_mod, "open", fake_open, create=True)
        mocker.patch.object(base_mod._HashingFile, "write", fake_write)
        for name in ("fsync", "replace", "link"):
            mocker.patch.object(local_mod.os, name, self._wrap(name, getattr(os, name)))
        # Descriptors opened for writing and written without a file object (the intent, the lock file).
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT
        mocker.patch.object(local_mod.os, "open", self._wrap("open", os.open, lambda a, k: a[1] & writing))
        mocker.patch.object(local_mod.os, "write", self._wrap("write", os.write))

    def _wrap(self, name, real, counts=lambda args, kwargs: True):
        def call(*args, **kwargs):
            # only the storage's own calls count (os is one module for everybody)
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("sb3_iter_ckpt.store.storage") and counts(args, kwargs):
                self._tick(name)
            return real(*args, **kwargs)

        return call

    def _tick(self, op: str) -> None:
        self.counts[op] += 1
        if op == self.op and self.counts[op] == self.nth:
            self.fired = True
            raise OSError(self.err, os.strerror(self.err))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Iterations 0 and 1 (model + VecNormalize) from a real walk-forward, plus the bytes of a third."""
    root = tmp_path_factory.mktemp("faults") / "repo"
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
    model = _ppo()
    scores = iter(range(100))
    cb = IterationCheckpointCallback(
        CheckpointRepository(root),
        evaluator=lambda m, e: {"mean_reward": float(next(scores))},
        eval_freq=32,
        iteration_timesteps=64,
    )
    model.learn(128, callback=cb)
    model.get_env().close()
    ck = root / CK
    return root, (ck / "model_iter_0.zip").read_bytes(), (ck / "vecnormalize_iter_0.pkl").read_bytes()


def _ppo(seed: int = 0) -> PPO:
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=seed), norm_reward=False)
    return PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=seed, device="cpu")


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.name != ".lock":
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(".*") if p.name != ".lock"]


def _assert_summaries_truthful(root: Path) -> None:
    """The summaries and best_model.zip never point at a file that is not there (or holds another model)."""
    repo = CheckpointRepository(root)
    assert repo.verify() == []
    path = root / "training_summary.json"
    if not path.exists():
        return
    best = json.loads(path.read_bytes())["best"]
    if best is None:
        return
    assert (root / best["model_file"]).is_file()
    if best["best_model_file"]:
        digest = hashlib.sha256((root / best["best_model_file"]).read_bytes()).hexdigest()
        assert digest == best["sha256"]


def _commit(repo: CheckpointRepository, model: bytes, vn: bytes):
    return repo.commit(2, metrics={"mean_reward": 99.0}, model=model, vecnormalize=vn)


@pytest.fixture(scope="module")
def call_counts(template, tmp_path_factory, module_mocker):
    """How many write calls of each kind one commit and one refresh make (nothing fails)."""
    root0, model, vn = template
    root = tmp_path_factory.mktemp("count") / "repo"
    shutil.copytree(root0, root)
    repo = CheckpointRepository(root)
    counts = {}
    for phase in ("commit", "refresh"):
        faults = Faults(module_mocker)
        if phase == "commit":
            _commit(repo, model, vn)
        else:
            repo.refresh()
        module_mocker.stopall()
        counts[phase] = dict(faults.counts)
    return counts


def _points(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(op, n) for op in OPS for n in range(1, counts.get(op, 0) + 1)]


def test_every_kind_of_write_is_exercised(call_counts):
    assert set(call_counts["commit"]) == set(OPS), call_counts
    # a refresh copies the best model (temporary, write, fsync, rename), never a hard link
    assert set(call_counts["refresh"]) == set(OPS) - {"link"}, call_counts
    assert len(_points(call_counts["commit"])) >= 15


@pytest.mark.parametrize("err", list(ERRNOS), ids=list(ERRNOS.values()))
def test_fault_in_any_write_of_a_commit_leaves_nothing(template, call_counts, tmp_path, mocker, err):
    root0, model, vn = template
    points = _points(call_counts["commit"])
    for k, (op, nth) in enumerate(points):
        root = tmp_path / f"r{k}"
        shutil.copytree(root0, root)
        repo = CheckpointRepository(root)
        before = _snapshot(root)
        faults = Faults(mocker, op, nth, err)
        with pytest.raises(CommitError, match=ERRNOS[err]) as info:
            _commit(repo, model, vn)
        mocker.stopall()
        assert faults.fired, (op, nth)
        assert "iteration 2" in str(info.value)
        assert _snapshot(root) == before, f"{op} #{nth}: the failed commit left or changed files"
        reopened = CheckpointRepository(root)
        assert reopened.iterations() == [0, 1] and reopened.verify() == []
        # the fault gone, the same iteration commits cleanly
        _commit(reopened, model, vn)
        assert reopened.verify() == []
        shutil.rmtree(root)
    print(f"\n{len(points)} faults injected into a commit with {ERRNOS[err]}")


@pytest.mark.parametrize("err", list(ERRNOS), ids=list(ERRNOS.values()))
def test_fault_in_any_write_of_a_refresh_keeps_the_summaries_truthful(template, call_counts, tmp_path, mocker, err):
    root0, model, vn = template
    points = _points(call_counts["refresh"])
    for k, (op, nth) in enumerate(points):
        root = tmp_path / f"r{k}"
        shutil.copytree(root0, root)
        repo = CheckpointRepository(root)
        _commit(repo, model, vn)  # a new best: the refresh must move best_model.zip
        faults = Faults(mocker, op, nth, err)
        with pytest.raises(CommitError, match=ERRNOS[err]):
            repo.refresh()
        mocker.stopall()
        assert faults.fired, (op, nth)
        assert _leftovers(root) == []
        _assert_summaries_truthful(root)
        assert CheckpointRepository(root).iterations() == [0, 1, 2], "the commit itself stays"
        CheckpointRepository(root).refresh()  # the next refresh repairs everything
        summary = json.loads((root / "training_summary.json").read_bytes())
        assert summary["best"]["iteration"] == 2 and summary["best"]["best_model_file"] == "best_model.zip"
        assert (root / "best_model.zip").read_bytes() == model
        assert (root / "best_vecnormalize.pkl").read_bytes() == vn
        _assert_summaries_truthful(root)
        shutil.rmtree(root)
    print(f"\n{len(points)} faults injected into a refresh with {ERRNOS[err]}")


# -- the callback: training goes on, or stops with on_error="raise" ----------------------------------
def _fail_stage_of(mocker, suffix: str, err: int, times: int = 1) -> list[int]:
    """Disk full (or other) half-way through writing ``...suffix``; ``times`` attempts fail."""
    real = LocalStorage.stage
    left = [times]

    def stage(self, name, source):
        if name.endswith(suffix) and left[0] > 0:
            left[0] -= 1
            data = source if isinstance(source, bytes) else b"x" * 1000

            def half(f):
                f.write(data[: len(data) // 2])
                raise OSError(err, os.strerror(err))

            return real(self, name, half)
        return real(self, name, source)

    mocker.patch.object(LocalStorage, "stage", stage)
    return left


def _fail_os_call(mocker, name: str, suffix: str, err: int, times: int = 1) -> list[int]:
    """``os.replace``/``os.link`` into a destination ending with ``suffix`` fails ``times`` times."""
    real = getattr(os, name)
    left = [times]

    def call(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix) and left[0] > 0:
            left[0] -= 1
            raise OSError(err, os.strerror(err))
        return real(src, dst, *args, **kwargs)

    mocker.patch.object(local_mod.os, name, call)
    return left


FAULTS = {
    "ENOSPC-writing-the-model": lambda m: _fail_stage_of(m, "model_iter_1.zip", errno.ENOSPC),
    "EIO-renaming-the-vecnormalize": lambda m: _fail_os_call(m, "replace", "vecnormalize_iter_1.pkl", errno.EIO),
    "EACCES-publishing-the-record": lambda m: _fail_os_call(m, "link", "metrics_iter_1.json", errno.EACCES),
}


def _walk_forward(root: Path, on_error: str = "warn", async_commit: bool = False):
    scores = iter([1.0, 5.0, 3.0, 2.0, 9.0, 4.0, 6.0, 7.0, 8.0, 0.0])
    model = _ppo()
    cb = IterationCheckpointCallback(
        CheckpointRepository(root),
        evaluator=lambda m, e: {"mean_reward": next(scores)},
        eval_freq=32,
        iteration_timesteps=64,
        on_error=on_error,
        async_commit=async_commit,
    )
    return model, cb


@pytest.mark.parametrize("async_commit", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_training_goes_on_with_a_save_failed_placeholder(repo_root, mocker, fault, async_commit):
    FAULTS[fault](mocker)
    model, cb = _walk_forward(repo_root, async_commit=async_commit)
    with pytest.warns(UserWarning, match="iteration 1 could not be committed, training goes on"):
        model.learn(192, callback=cb)
    mocker.stopall()
    assert model.num_timesteps == 192
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [0, 1, 2]
    ck = repo.get(1)
    assert not ck.has_model and ck.reason == "save_failed"
    assert fault.split("-")[0] in ck.record["error"]
    assert ck.metrics == {"mean_reward": 3.0}, "the placeholder keeps the metrics of the snapshot it lost"
    assert not list((repo_root / CK).glob("*_iter_1.zip")) and not list((repo_root / CK).glob("*_iter_1.pkl"))
    assert _leftovers(repo_root) == []
    assert [type(e) for e in cb.errors] == [CommitError]
    assert repo.best().iteration == 2
    _assert_summaries_truthful(repo_root)
    assert json.loads((repo_root / "training_summary.json").read_bytes())["best"]["iteration"] == 2


def test_no_placeholder_when_even_that_cannot_be_written(repo_root, mocker):
    _fail_os_call(mocker, "link", "_iter_1.json", errno.EACCES, times=2)  # the record, then the placeholder
    model, cb = _walk_forward(repo_root)
    with pytest.warns(UserWarning) as caught:
        model.learn(192, callback=cb)
    mocker.stopall()
    messages = [str(w.message) for w in caught]
    assert any("not even a placeholder for iteration 1" in m for m in messages), messages
    assert model.num_timesteps == 192
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [0, 2]
    assert _leftovers(repo_root) == [] and not list((repo_root / CK).glob("*_iter_1.*"))
    _assert_summaries_truthful(repo_root)


def _slow_disk_for_iteration_1(mocker, cb: IterationCheckpointCallback) -> None:
    """The worst case of a slow disk, made deterministic: iteration 1's background write starts only
    once training has reached the next boundary's evaluation (192 timesteps)."""
    reached = threading.Event()
    evaluator, background_commit = cb.evaluator, cb._committer._background_commit

    def evaluate(model, env):
        if model.num_timesteps >= 192:
            reached.set()
        return evaluator(model, env)

    def slow(p):
        if p.iteration == 1:
            assert reached.wait(timeout=120), "training never reached the next boundary"
        return background_commit(p)

    cb.evaluator = evaluate
    mocker.patch.object(cb._committer, "_background_commit", slow)


@pytest.mark.parametrize("async_commit", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_on_error_raise_stops_training_with_a_clear_error(repo_root, mocker, fault, async_commit):
    FAULTS[fault](mocker)
    model, cb = _walk_forward(repo_root, on_error="raise", async_commit=async_commit)
    if async_commit:
        _slow_disk_for_iteration_1(mocker, cb)
    with pytest.raises(CommitError, match=f"iteration 1 .*{fault.split('-')[0]}"):
        model.learn(320, callback=cb)
    mocker.stopall()
    # synchronous: at the failing boundary; asynchronous: at the next one, where the error surfaces
    # (however long the failing write took), before anything of a later iteration is written
    assert model.num_timesteps == (192 if async_commit else 128)
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [0]
    assert _leftovers(repo_root) == [] and not list((repo_root / CK).glob("*_iter_1.*"))
    _assert_summaries_truthful(repo_root)
