"""``verify`` says what it checked and how: hashed, only opened (the seed's format), or a problem.

Real repositories: one trained with the callback (records with hashes) and one written the way the
seed's script does it (plain ``model.save`` and free-form metrics JSON, no hashes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointError, CheckpointRepository, VerifyReport
from sb3_iter_ckpt.cli import main
from sb3_iter_ckpt.store.storage import LocalStorage, intent_name

CK = "checkpoints"
SEED_MODELS = [0, 1, 3, 4]  # no_model_iter_2.json is the seed's placeholder


@pytest.fixture(scope="module")
def ours(two_iterations):
    """Iterations 0 and 1 with model and metrics, committed by the callback."""
    return two_iterations("ours", vecnormalize=False)


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The seed script's layout: model_iter_{i}.zip, metrics_iter_{i}.json without hashes, a placeholder."""
    root = tmp_path_factory.mktemp("seed") / "results" / "7"
    ck = root / CK
    ck.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
        for i in range(5):
            if i == 2:
                (ck / f"no_model_iter_{i}.json").write_text(json.dumps({"iteration": i, "reason": "No model"}))
                continue
            model.save(str(ck / f"model_iter_{i}.zip"))
            (ck / f"metrics_iter_{i}.json").write_text(json.dumps({"validation_performance": 0.1 * i, "iteration": i}))
    return root


@pytest.fixture
def ours_copy(ours, tmp_path):
    root = tmp_path / "ours"
    shutil.copytree(ours, root)
    return root


@pytest.fixture
def seed_copy(seed, tmp_path):
    root = tmp_path / "seed"
    shutil.copytree(seed, root)
    return root


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue() + err.getvalue()


# -- the seed's format: no hashes, so the model must at least open as an SB3 zip ----------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"not a zip at all")


def _drop_policy(path: Path) -> None:
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            if name != "policy.pth":
                z.writestr(name, src.read(name))
    path.write_bytes(out.getvalue())


def _flip_inside_a_member(path: Path) -> None:
    """Damage policy.pth's stored bytes, keeping the zip's structure intact: only its CRC tells."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("policy.pth")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # local header is 30 bytes
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [_truncate, _not_a_zip, _drop_policy, _flip_inside_a_member], ids=lambda f: f.__name__.strip("_")
)
def test_a_damaged_seed_format_model_is_a_problem(seed_copy, damage):
    damage(seed_copy / CK / "model_iter_1.zip")
    report = CheckpointRepository(seed_copy).verify_report()
    assert [(p.iteration, p.file) for p in report.problems] == [(1, "model_iter_1.zip")]
    assert 1 not in report.opened_only
    assert CheckpointRepository(seed_copy).verify() == list(report.problems)  # the API keeps its list
    rc, out = _cli("verify", str(seed_copy))
    assert rc == 4
    assert "PROBLEM iteration 1: model_iter_1.zip" in out
    assert "ok:" not in out


def test_a_healthy_seed_folder_is_reported_as_not_verified(seed_copy):
    report = CheckpointRepository(seed_copy).verify_report()
    assert report.ok and not report.complete
    assert report.hashed == ()
    assert report.opened_only == tuple(SEED_MODELS)
    assert report.unchecked == (2,)
    rc, out = _cli("verify", str(seed_copy))
    assert rc == 0  # nothing is wrong, but it must not say "ok" for files it could not hash
    assert not out.startswith("ok") and "verified" not in out.replace("NOT verified", "").replace(
        "not everything is verified", ""
    )
    assert "4 seed-format model(s) with no recorded sha256" in out and "adopt" in out
    rc, out = _cli("verify", str(seed_copy), "--json")
    doc = json.loads(out)
    assert (rc, doc["ok"], doc["complete"], doc["opened_only"], doc["hashed"]) == (0, True, False, SEED_MODELS, [])


def test_adopting_the_seed_folder_makes_it_hashed(seed_copy):
    repo = CheckpointRepository(seed_copy)
    repo.adopt()
    report = repo.verify_report()
    assert report.complete and report.hashed == tuple(SEED_MODELS) and report.records_only == (2,)
    rc, out = _cli("verify", str(seed_copy))
    assert rc == 0 and out.startswith("ok: 4 iteration(s) hashed")


# -- a folder of ours ----------------------------------------------------------------------------------
def test_a_healthy_repository_is_hashed_and_complete(ours_copy):
    report = CheckpointRepository(ours_copy).verify_report()
    assert isinstance(report, VerifyReport)
    assert report.complete and report.hashed == (0, 1)
    rc, out = _cli("verify", str(ours_copy), "--json")
    assert rc == 0 and json.loads(out)["complete"] is True


def test_a_record_deleted_by_hand_is_a_problem(ours_copy):
    (ours_copy / CK / "metrics_iter_0.json").unlink()
    report = CheckpointRepository(ours_copy).verify_report()
    assert [(p.iteration, p.file) for p in report.problems] == [(0, "model_iter_0.zip")]
    assert report.hashed == (1,)
    rc, out = _cli("verify", str(ours_copy))
    assert rc == 4 and "model_iter_0.zip" in out


def test_a_record_replaced_by_a_folder_is_a_problem(ours_copy):
    record = ours_copy / CK / "metrics_iter_0.json"
    record.unlink()
    record.mkdir()
    problems = CheckpointRepository(ours_copy).verify()
    assert (0, "metrics_iter_0.json") in [(p.iteration, p.file) for p in problems]
    rc, out = _cli("verify", str(ours_copy))
    assert rc == 4 and "metrics_iter_0.json: is not a regular file" in out


def test_a_commit_in_progress_is_not_a_model_without_record(ours_copy, mocker):
    # A real commit, looked at between renaming its model into place and linking its record (the
    # commit marker): the storage's intent names the model, so verify knows it is not a lost record.
    real_link = os.link
    seen = []

    def look_then_link(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "metrics_iter_2.json":
            names = os.listdir(ours_copy / CK)
            seen.append(
                (
                    "model_iter_2.zip" in names,
                    intent_name(f"{CK}/metrics_iter_2.json").rpartition("/")[2] in names,
                    CheckpointRepository(ours_copy, sweep=False).verify(),
                )
            )
        return real_link(src, dst, *args, **kwargs)

    mocker.patch("os.link", look_then_link)
    CheckpointRepository(ours_copy).commit(
        2, metrics={"mean_reward": 0.5}, model=(ours_copy / CK / "model_iter_1.zip").read_bytes()
    )
    mocker.stopall()
    assert seen == [(True, True, [])], "in flight: the model in place, its intent present, no problem"
    assert CheckpointRepository(ours_copy).verify() == []


def test_a_planted_seed_format_record_does_not_hide_a_deleted_record(ours_copy):
    (ours_copy / CK / "metrics_iter_1.json").unlink()
    (ours_copy / CK / "no_model_iter_7.json").write_text(json.dumps({"iteration": 7, "reason": "x"}))
    report = CheckpointRepository(ours_copy).verify_report()
    assert [(p.iteration, p.file) for p in report.problems] == [(1, "model_iter_1.zip")]
    assert 1 not in report.opened_only
    rc, out = _cli("verify", str(ours_copy))
    assert rc == 4 and "model_iter_1.zip: a model without a record" in out


def test_a_seed_folder_lists_its_models_without_records_but_a_signed_one_does_not(seed_copy):
    from sb3_iter_ckpt.common.signing import MARKER, Signer

    shutil.copy(seed_copy / CK / "model_iter_4.zip", seed_copy / CK / "model_iter_5.zip")  # the seed lost its metrics
    report = CheckpointRepository(seed_copy).verify_report()
    assert report.ok and report.opened_only == (*SEED_MODELS, 5)
    (seed_copy / MARKER).write_bytes(Signer("k").marker())  # a signing marker: a folder of this package
    problems = CheckpointRepository(seed_copy).verify_report().problems
    assert (5, "model_iter_5.zip") in [(p.iteration, p.file) for p in problems]


def test_records_removed_by_prune_are_not_problems(ours_copy):
    repo = CheckpointRepository(ours_copy)
    result = repo.prune(keep_last_n=1, remove_records=True)
    assert result.plan.remove == (0,)
    assert not (ours_copy / CK / "model_iter_0.zip").exists()
    report = repo.verify_report()
    assert report.complete and report.hashed == (1,)


def test_an_interrupted_prune_never_leaves_a_model_without_record(ours_copy, mocker):
    """remove_records: the record is marked pruned, the files go, the record goes last; a failure in between
    leaves a pruned record, never a model that no record names."""
    real_delete = LocalStorage.delete

    def failing(self, name):
        if name.endswith("model_iter_0.zip"):
            raise OSError(5, "Input/output error")
        return real_delete(self, name)

    mocker.patch.object(LocalStorage, "delete", failing)
    with pytest.raises(CheckpointError):
        CheckpointRepository(ours_copy).prune(keep_last_n=1, remove_records=True)
    mocker.stopall()
    repo = CheckpointRepository(ours_copy)
    assert repo.verify() == []
    assert repo.get(0).reason == "pruned"


def test_placeholders_and_pruned_records_name_no_file(ours_copy):
    repo = CheckpointRepository(ours_copy)
    repo.commit(2, metrics={"mean_reward": 0.5}, reason="below_min_score")
    repo.prune(keep_last_n=1)
    report = repo.verify_report()
    assert report.complete
    assert (report.hashed, report.records_only) == ((1,), (0, 2))
    rc, out = _cli("verify", str(ours_copy))
    assert rc == 0 and "2 placeholder/pruned record(s) naming no file" in out
