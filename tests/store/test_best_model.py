"""``best_model.zip`` is a copy that SB3's own writers cannot reach the committed models through.

SB3's ``EvalCallback(best_model_save_path=root)`` and ``model.save(root / "best_model.zip")`` open that
name for writing in place. When it was a hard link to ``checkpoints/model_iter_k.zip`` they overwrote
the committed model. Now it is a copy; a file there that we did not write is the user's: never
replaced, never deleted; ``verify()`` reports only a summary that still names it as ours.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.store.storage import FsspecStorage, LocalStorage

CK = "checkpoints"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scores():
    n = iter(range(1000))
    return lambda model, env: {"mean_reward": float(next(n))}  # every evaluation better: the best moves


def _assert_every_model_intact(repo: CheckpointRepository, stale_best: bool = False) -> None:
    """``stale_best``: best_model.zip was written after the summary named it (reported until the next refresh)."""
    assert [p.file for p in repo.verify()] == (["best_model.zip"] if stale_best else [])
    for ck in repo.list():
        assert _sha(repo.root / CK / ck.artifacts["model"].file) == ck.sha256
        repo.load(ck.iteration, device="cpu")


class _RecordSaves(BaseCallback):
    """EvalCallback's ``callback_on_new_best``: runs right after it saved best_model.zip."""

    def __init__(self, path):
        super().__init__()
        self.path, self.hashes = path, []

    def _on_step(self) -> bool:
        self.hashes.append(_sha(self.path))
        return True


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "eval-first"])
def test_eval_callback_sharing_the_folder_loses_nothing(make_ppo, repo_root, ours_first):
    model = make_ppo()
    repo = CheckpointRepository(repo_root)
    ours = IterationCheckpointCallback(repo, evaluator=_scores(), eval_freq=32, iteration_timesteps=64)
    saves = _RecordSaves(repo_root / "best_model.zip")
    # Its first evaluation (always a "new best") comes after our first commit, at 64 timesteps.
    theirs = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=5),
        best_model_save_path=str(repo_root),
        eval_freq=96,
        n_eval_episodes=1,
        callback_on_new_best=saves,
        verbose=0,
    )
    model.learn(320, callback=CallbackList([ours, theirs] if ours_first else [theirs, ours]))
    assert len(repo.list()) == 5 and saves.hashes, "five commits, and EvalCallback saved at least once"
    _assert_every_model_intact(repo)
    assert _sha(repo_root / "best_model.zip") == saves.hashes[-1], "EvalCallback's file untouched"
    summary = json.loads((repo_root / "training_summary.json").read_bytes())
    best = summary["best"]
    assert best["best_model_file"] is None and best["model_file"] == f"{CK}/model_iter_4.zip"
    assert "another tool's file" in best["best_model_note"]
    # The user's file goes away: ours comes back at the next refresh.
    (repo_root / "best_model.zip").unlink()
    repo.refresh()
    assert _sha(repo_root / "best_model.zip") == repo.best().sha256
    assert repo.training_summary()["best"]["best_model_file"] == "best_model.zip"


def test_model_save_over_best_model_zip_after_a_commit(make_ppo, repo_root):
    model = make_ppo()
    repo = CheckpointRepository(repo_root)
    model.learn(64, callback=IterationCheckpointCallback(repo, evaluator=_scores(), eval_freq=32))
    assert _sha(repo_root / "best_model.zip") == repo.get(0).sha256
    assert not os.path.samefile(repo_root / "best_model.zip", repo_root / CK / "model_iter_0.zip")
    make_ppo(seed=1).save(repo_root / "best_model.zip")  # written in place by SB3
    theirs = _sha(repo_root / "best_model.zip")
    _assert_every_model_intact(repo, stale_best=True)
    model.learn(64, callback=IterationCheckpointCallback(repo, evaluator=_scores(), eval_freq=32))
    _assert_every_model_intact(repo)
    assert _sha(repo_root / "best_model.zip") == theirs
    assert CheckpointRepository(repo_root).verify() == []


def test_best_vecnormalize_of_the_user_is_never_deleted(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0", vecnormalize=b"v0")
    repo.refresh()
    assert (repo_root / "best_vecnormalize.pkl").read_bytes() == b"v0"
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1")  # the new best has no statistics
    repo.refresh()
    assert not (repo_root / "best_vecnormalize.pkl").exists(), "our stale copy removed"
    (repo_root / "best_vecnormalize.pkl").write_bytes(b"the user's statistics")
    repo.commit(2, metrics={"mean_reward": 3.0}, model=b"m2", vecnormalize=b"v2")
    repo.refresh()
    repo.commit(3, metrics={"mean_reward": 4.0}, model=b"m3")
    repo.refresh()
    assert (repo_root / "best_vecnormalize.pkl").read_bytes() == b"the user's statistics"
    assert (repo_root / "best_model.zip").read_bytes() == b"m3"
    assert CheckpointRepository(repo_root).verify() == []


def test_a_fresh_process_recognizes_our_copy_even_when_touched(repo_root):
    CheckpointRepository(repo_root).commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    CheckpointRepository(repo_root).refresh()
    os.utime(repo_root / "best_model.zip", (1, 1))  # same bytes, another mtime: read, and still ours
    repo = CheckpointRepository(repo_root)
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1")
    repo.refresh()
    assert (repo_root / "best_model.zip").read_bytes() == b"m1"


@pytest.mark.parametrize("when", ["before-the-rename", "after-the-rename"])
def test_an_interrupted_refresh_leaves_a_copy_the_next_one_still_owns(repo_root, mocker, when):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    repo.refresh()
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1")
    real = LocalStorage.copy_file

    def dies(self, src, dst):
        if when == "after-the-rename":
            real(self, src, dst)
        raise OSError(5, "killed here")

    mocker.patch.object(LocalStorage, "copy_file", dies)
    with pytest.raises(Exception, match="killed here"):
        repo.refresh()
    mocker.stopall()
    summary = json.loads((repo_root / "training_summary.json").read_bytes())
    assert summary["best"]["best_model_file"] is None, "no summary names a file in transition"
    fresh = CheckpointRepository(repo_root)
    assert fresh.verify() == []
    fresh.refresh()
    assert (repo_root / "best_model.zip").read_bytes() == b"m1"
    assert fresh.training_summary()["best"]["best_model_file"] == "best_model.zip"


def _as_an_earlier_version_left(root, iteration):
    """What an earlier version left: best_model.zip a hard link to a model, a summary without "best_files"."""
    (root / "best_model.zip").unlink()
    os.link(root / CK / f"model_iter_{iteration}.zip", root / "best_model.zip")
    summary = json.loads((root / "training_summary.json").read_bytes())
    del summary["best_files"]
    (root / "training_summary.json").write_text(json.dumps(summary))


def test_a_hard_link_left_by_an_earlier_version_is_replaced_by_a_copy(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    repo.refresh()
    _as_an_earlier_version_left(repo_root, 0)
    repo = CheckpointRepository(repo_root)
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1")
    repo.refresh()
    assert (repo_root / "best_model.zip").read_bytes() == b"m1"
    assert (repo_root / CK / "model_iter_0.zip").read_bytes() == b"m0"
    with open(repo_root / "best_model.zip", "r+b") as f:
        f.write(b"XX")
    assert (repo_root / CK / "model_iter_1.zip").read_bytes() == b"m1"
    assert [p.file for p in repo.verify()] == ["best_model.zip"], "only the summary's claim is stale"


def test_object_storage_leaves_a_foreign_best_model_alone():
    import fsspec

    fs = fsspec.filesystem("memory")
    repo = CheckpointRepository("memory://best-foreign", storage=FsspecStorage("memory://best-foreign", fs=fs))
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    repo.refresh()
    assert fs.cat_file("/best-foreign/best_model.zip") == b"m0"
    fs.pipe_file("/best-foreign/best_model.zip", b"EvalCallback's model")
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1")
    repo.refresh()
    assert fs.cat_file("/best-foreign/best_model.zip") == b"EvalCallback's model"
    assert repo.verify() == []
    assert repo.training_summary()["best"]["best_model_file"] is None


def test_a_hard_link_left_by_an_earlier_version_is_replaced_even_when_the_best_stays(make_ppo, repo_root):
    repo = CheckpointRepository(repo_root)
    for i, m in enumerate((b"m0", b"m1", b"m2")):
        repo.commit(i, metrics={"mean_reward": float(i)}, model=m)
    repo.refresh()
    _as_an_earlier_version_left(repo_root, 2)
    committed = _sha(repo_root / CK / "model_iter_2.zip")
    for _ in range(2):  # the first refresh breaks the link; it never records the link as ours
        CheckpointRepository(repo_root).refresh()
        assert os.stat(repo_root / "best_model.zip").st_nlink == 1
        assert not os.path.samefile(repo_root / "best_model.zip", repo_root / CK / "model_iter_2.zip")
    make_ppo().save(repo_root / "best_model.zip")  # SB3 writes the name in place
    assert _sha(repo_root / CK / "model_iter_2.zip") == committed
    assert [p.file for p in CheckpointRepository(repo_root).verify()] == ["best_model.zip"], "no committed model"


def test_a_hard_link_recorded_as_ours_by_inode_is_replaced_at_the_next_refresh(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0", vecnormalize=b"v0")
    repo.refresh()
    # the state the first refresh of the unfixed code left: the links recorded as ours by inode
    for name, art in (("best_model.zip", "model_iter_0.zip"), ("best_vecnormalize.pkl", "vecnormalize_iter_0.pkl")):
        (repo_root / name).unlink()
        os.link(repo_root / CK / art, repo_root / name)
    summary = json.loads((repo_root / "training_summary.json").read_bytes())
    for name in ("best_model.zip", "best_vecnormalize.pkl"):
        st = os.stat(repo_root / name)
        summary["best_files"][name] = [
            {
                "sha256": _sha(repo_root / name),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "inode": st.st_ino,
                "etag": "",
            }
        ]
    (repo_root / "training_summary.json").write_text(json.dumps(summary))
    CheckpointRepository(repo_root).refresh()
    for name in ("best_model.zip", "best_vecnormalize.pkl"):
        assert os.stat(repo_root / name).st_nlink == 1, name
    with open(repo_root / "best_vecnormalize.pkl", "r+b") as f:
        f.write(b"XX")
    assert (repo_root / CK / "vecnormalize_iter_0.pkl").read_bytes() == b"v0"


@pytest.mark.parametrize("key", [None, "k"], ids=["unsigned", "signed"])
def test_a_best_model_replaced_after_the_summary_named_it_is_reported(repo_root, key):
    from sb3_iter_ckpt.cli import main

    repo = CheckpointRepository(repo_root, signing_key=key)
    for i in range(3):
        repo.commit(i, metrics={"mean_reward": float(i)}, model=b"m%d" % i)
    repo.refresh()
    (repo_root / "best_model.zip").write_bytes(b"planted")  # after the summary named our copy
    problems = CheckpointRepository(repo_root, signing_key=key).verify()
    assert [(p.iteration, p.file) for p in problems] == [(2, "best_model.zip")]
    assert "replaced after training_summary.json named it" in problems[0].message
    assert f"{CK}/model_iter_2.zip" in problems[0].message
    if key is not None:
        key_file = repo_root.parent / "key"
        key_file.write_text(key)
        assert main(["verify", str(repo_root), "--signing-key-file", str(key_file)]) == 4
    # the next refresh sees the user's file, stops naming it, and leaves it alone
    CheckpointRepository(repo_root, signing_key=key).refresh()
    assert json.loads((repo_root / "training_summary.json").read_bytes())["best"]["best_model_file"] is None
    assert CheckpointRepository(repo_root, signing_key=key).verify() == []
    assert (repo_root / "best_model.zip").read_bytes() == b"planted"


def test_a_best_model_named_but_missing_is_reported(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    repo.refresh()
    (repo_root / "best_model.zip").unlink()
    problems = repo.verify()
    assert [(p.iteration, p.file) for p in problems] == [(0, "best_model.zip")]
    assert "missing" in problems[0].message
    repo.refresh()  # our copy comes back
    assert repo.verify() == [] and (repo_root / "best_model.zip").read_bytes() == b"m0"


@pytest.mark.parametrize("name", ["best_model.zip", "best_vecnormalize.pkl"])
def test_a_symlink_at_a_best_file_name_is_never_ours_and_is_replaced_by_a_copy(repo_root, name):
    # `ln -s checkpoints/model_iter_1.zip best_model.zip`: hashing follows the link, so it looked like
    # our copy; a later model.save("best_model.zip") would then write through it into the committed model.
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0", vecnormalize=b"v0")
    repo.commit(1, metrics={"mean_reward": 2.0}, model=b"m1", vecnormalize=b"v1")
    target = {"best_model.zip": "model_iter_1.zip", "best_vecnormalize.pkl": "vecnormalize_iter_1.pkl"}[name]
    repo.refresh()  # the summary names our copies
    (repo_root / name).unlink()
    (repo_root / name).symlink_to(f"{CK}/{target}")
    assert [p.file for p in repo.verify()] == [name], "verify reports the link the summary names as ours"
    repo.refresh()
    assert repo.verify() == []
    assert not (repo_root / name).is_symlink(), "replaced by a real copy"
    assert (repo_root / name).read_bytes() == (repo_root / CK / target).read_bytes()
    with open(repo_root / name, "r+b") as f:  # SB3 writes the name in place
        f.write(b"XX")
    assert (repo_root / CK / target).read_bytes() in (b"m1", b"v1"), "the committed file is untouched"


def test_a_symlink_at_a_best_file_name_is_never_recorded_as_ours(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    (repo_root / "best_model.zip").symlink_to(f"{CK}/model_iter_0.zip")
    from sb3_iter_ckpt.store.bestfiles import BestFiles

    found = BestFiles(repo.storage, repo._index).found()["best_model.zip"]
    assert found.linked and found.sha256 is None, "a link is replaced at the next refresh, never recorded"
