"""Automatic numbering between writers, and names and paths (issue 13, items 7 and 8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.cli import main as cli_main
from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, UnsafePathError
from sb3_iter_ckpt.store.storage import FsspecStorage, LocalStorage

CK = "checkpoints"


def _scores():
    n = iter(range(1000))
    return lambda model, env: {"mean_reward": float(next(n))}


class _RunInside(BaseCallback):
    """Runs ``fn`` once, at the first step: another writer's whole training inside ours."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def _on_step(self) -> bool:
        if self.fn is not None:
            fn, self.fn = self.fn, None
            fn()
        return True


# -- 7. two callbacks with iteration=None on one root ---------------------------------------------
@pytest.mark.parametrize("async_commit", [False, True], ids=["sync", "async"])
def test_two_automatic_callbacks_on_one_root_both_commit(make_ppo, repo_root, async_commit):
    first = IterationCheckpointCallback(
        repo_root, evaluator=_scores(), eval_freq=32, on_error="raise", async_commit=async_commit
    )
    second = IterationCheckpointCallback(repo_root, evaluator=_scores(), eval_freq=32, on_error="raise")
    other = make_ppo(seed=1)
    # `first` chose its number at training start; `second` chooses the same one and commits it first.
    make_ppo().learn(64, callback=CallbackList([first, _RunInside(lambda: other.learn(64, callback=second))]))
    assert [c.iteration for c in second.committed] == [0]
    assert [c.iteration for c in first.committed] == [1] and not first.errors
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [0, 1] and repo.verify() == []
    ck = repo.get(1)
    assert ck.record["iteration"] == 1 and ck.artifacts["model"].file == "model_iter_1.zip"
    for i in (0, 1):
        repo.load(i, device="cpu")
    assert repo.best().iteration == 1  # the summaries follow the renumbered commit
    assert json.loads((repo_root / "training_summary.json").read_bytes())["iterations"] == [0, 1]


def test_explicit_numbers_are_still_refused_before_training(make_ppo, repo_root):
    CheckpointRepository(repo_root).commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    model = make_ppo()
    with pytest.raises(CheckpointExistsError, match="already committed"):
        model.learn(64, callback=IterationCheckpointCallback(repo_root, iteration=0, evaluator=_scores()))
    assert model.num_timesteps == 0


_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from sb3_iter_ckpt import IterationCheckpointCallback

    root, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Barrier(BaseCallback):  # both have chosen their number before either commits
        def _on_training_start(self):
            (root.parent / me).touch()
            while not (root.parent / other).exists():
                time.sleep(0.01)
        def _on_step(self):
            return True

    n = iter(range(100))
    ours = IterationCheckpointCallback(str(root), evaluator=lambda m, e: {"mean_reward": float(next(n))},
                                       eval_freq=32, on_error="raise")
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, device="cpu", seed=0)
    model.learn(64, callback=CallbackList([ours, Barrier()]))
    print("COMMITTED", ours.committed[0].iteration)
    """
)


def test_two_processes_with_automatic_numbering_on_one_root(tmp_path):
    root = tmp_path / "results" / "exp"
    root.parent.mkdir(parents=True)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), me, other], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    got = sorted(int(out.decode().split("COMMITTED")[1]) for out, _ in outs)
    assert got == [0, 1]
    repo = CheckpointRepository(root)
    assert repo.iterations() == [0, 1] and repo.verify() == []


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_a_commit_that_loses_its_number_takes_the_next_free_one(tmp_path, mocker, backend):
    if backend == "local":
        a, b = CheckpointRepository(tmp_path / "r"), CheckpointRepository(tmp_path / "r")
        storage_cls = LocalStorage
    else:
        import fsspec

        fs = fsspec.filesystem("memory")
        url = f"memory://names-{tmp_path.name}"
        a = CheckpointRepository(url, storage=FsspecStorage(url, fs=fs))
        b = CheckpointRepository(url, storage=FsspecStorage(url, fs=fs))
        storage_cls = FsspecStorage
    real = storage_cls.publish
    calls = []

    def other_writer_first(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            b.commit(0, metrics={"mean_reward": 5.0}, model=b"b0", vecnormalize=b"bv")
        return real(self, *args, **kwargs)

    mocker.patch.object(storage_cls, "publish", other_writer_first)
    ck = a.commit(0, metrics={"mean_reward": 1.0}, model=b"a0", vecnormalize=b"av", next_free=True)
    mocker.stopall()
    assert ck.iteration == 1 and a.iterations() == [0, 1] and a.verify() == []
    assert a.storage.read_bytes(f"{CK}/{a.get(1).artifacts['model'].file}") == b"a0"
    assert a.storage.read_bytes(f"{CK}/{a.get(0).artifacts['vecnormalize'].file}") == b"bv"
    names = a.storage.listdir(CK)
    assert len(names) == 6, f"two iterations of three files, no leftover: {sorted(names)}"
    with pytest.raises(CheckpointExistsError):  # explicit numbers: still refused
        a.commit(1, metrics={"mean_reward": 1.0}, model=b"x")


# -- 8. names and paths -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["metrics_iter_\uff15.json", "metrics_iter_\u0665.json", "metrics_iter_5.json\n", "metrics_iter_05.json"]
)
def test_record_names_take_only_ascii_digits_without_leading_zeros(repo_root, name):
    repo = CheckpointRepository(repo_root)
    repo.commit(5, metrics={"mean_reward": 1.0}, model=b"m5")
    ck = repo_root / CK
    os.rename(ck / "metrics_iter_5.json", ck / name)
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [] and not repo.has(5)
    assert all(repo.has(i) for i in repo.iterations())


def test_a_model_with_leading_zeros_is_not_a_legacy_iteration(repo_root):
    ck = repo_root / CK
    ck.mkdir(parents=True)
    (ck / "metrics_iter_1.json").write_text('{"iteration": 1, "mean_reward": 1.0}')  # a seed folder
    (ck / "model_iter_1.zip").write_bytes(b"seed model")
    (ck / "model_iter_0099.zip").write_bytes(b"someone's file")
    (ck / "model_iter_\uff17.zip").write_bytes(b"someone's file")
    repo = CheckpointRepository(repo_root)
    assert repo.iterations() == [1] and repo.next_iteration() == 2


def test_an_explicit_iteration_never_overwrites_a_stray_model(make_ppo, repo_root):
    ck = repo_root / CK
    ck.mkdir(parents=True)
    (ck / "model_iter_3.zip").write_bytes(b"a model this package never committed")
    model = make_ppo()
    with pytest.raises(CheckpointExistsError, match="without a record"):
        model.learn(64, callback=IterationCheckpointCallback(repo_root, iteration=3, evaluator=_scores()))
    assert model.num_timesteps == 0, "refused before training"
    with pytest.raises(CheckpointExistsError, match="without a record"):
        CheckpointRepository(repo_root).commit(3, metrics={"mean_reward": 1.0}, model=b"m")
    assert (ck / "model_iter_3.zip").read_bytes() == b"a model this package never committed"
    # automatic numbering goes past it; overwrite=True replaces it on purpose
    cb = IterationCheckpointCallback(repo_root, evaluator=_scores(), eval_freq=32)
    model.learn(64, callback=cb)
    assert [c.iteration for c in cb.committed] == [4]
    CheckpointRepository(repo_root).commit(3, metrics={"mean_reward": 1.0}, model=b"m3", overwrite=True)
    assert (ck / "model_iter_3.zip").read_bytes() == b"m3"


def test_another_writers_commit_in_flight_is_not_a_stray_model(repo_root, mocker):
    # Writer A is between renaming its model into place and linking its record; writer B asks for the same
    # iteration: it is taken (B is refused as for a committed one), not "a file without a record".
    real_link = os.link
    seen = []

    def look_then_link(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "metrics_iter_3.json":
            with pytest.raises(CheckpointExistsError) as info:
                CheckpointRepository(repo_root, sweep=False).ensure_free([3])
            seen.append(str(info.value))
        return real_link(src, dst, *args, **kwargs)

    mocker.patch("os.link", look_then_link)
    CheckpointRepository(repo_root).commit(3, metrics={"mean_reward": 1.0}, model=b"m3")
    mocker.stopall()
    assert len(seen) == 1 and "iteration(s) 3 already committed" in seen[0], seen


def test_local_url_roots_get_local_storage_with_its_lock_and_symlink_checks(tmp_path):
    root = tmp_path / "exp"
    repo = CheckpointRepository(f"local://{root}")
    assert isinstance(repo.storage, LocalStorage)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    assert (root / ".lock").exists() and repo.iterations() == [0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / CK / "model_iter_0.zip").unlink()
    (root / CK / "model_iter_0.zip").symlink_to(outside / "x.zip")
    (outside / "x.zip").write_bytes(b"m0")
    with pytest.raises(UnsafePathError):
        CheckpointRepository(f"local://{root}").storage.read_bytes(f"{CK}/model_iter_0.zip")


def test_opening_never_sweeps_a_users_file_that_looks_temporary(repo_root):
    repo = CheckpointRepository(repo_root)
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    ck = repo_root / CK
    host, dead = socket.gethostname(), _dead_pid()
    users = [
        ck / f".notes.tmp-{host}-{dead}-0123abcd",  # the old temporary pattern
        ck / f".model_iter_1.zip.tmp-{host}-{dead}-0123abcd",
        repo_root / ".intent-iter-1.json",
        ck / ".intent-iter-1.json",
    ]
    for p in users:
        p.write_bytes(b"the user's")
    ours = ck / f".model_iter_1.zip.sb3ckpt-tmp-{host}-{dead}-0123abcd"
    ours.write_bytes(b"a dead writer's temporary")
    CheckpointRepository(repo_root)
    assert [p.name for p in users if not p.exists()] == [], "a user's file was swept"
    assert not ours.exists(), "our own leftover is still swept"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("bad", ["../x", "/abs/x", "a/../../x", "..", "."])
@pytest.mark.parametrize("verb", ["list", "walk-forward"])
def test_cli_experiment_id_cannot_leave_the_results_dir(tmp_path, capsys, bad, verb):
    results = tmp_path / "results"
    results.mkdir()
    args = [verb, "--experiment-id", bad, "--results-dir", str(results)]
    if verb == "walk-forward":
        args += ["--total-timesteps", "64"]
    before = sorted(tmp_path.rglob("*"))
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--experiment-id" in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before, "nothing written anywhere"


def test_cli_experiment_id_inside_the_results_dir_still_works(tmp_path, capsys):
    repo = CheckpointRepository(tmp_path / "results" / "2024-01-01T10:00")
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m0")
    assert cli_main(["list", "--experiment-id", "2024-01-01T10:00", "--results-dir", str(tmp_path / "results")]) == 0


@pytest.mark.parametrize("bad", [-2, "3", 1.5, True])
def test_callback_refuses_a_bad_iteration_at_construction(repo_root, bad):
    with pytest.raises(CheckpointError, match="iteration"):
        IterationCheckpointCallback(repo_root, iteration=bad)
