"""Bad input: each case raises a clear error from the package's own hierarchy and damages nothing.

One real walk-forward (two iterations, model + VecNormalize) is trained once per module; every case
works on a copy of it, breaks one thing, and checks that the refused call changed no file and that
the iteration it did not touch still loads (where the damage is the whole folder's, that iteration is
refused with a package error too).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_iter_ckpt import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFound,
    CheckpointRepository,
    IntegrityError,
    IterationCheckpointCallback,
    RecordError,
    SignatureError,
    UnsafePathError,
)

CK = "checkpoints"


@pytest.fixture(scope="module")
def template(two_iterations):
    """A repository with iterations 0 and 1 (model + VecNormalize), trained for real."""
    return two_iterations("template", metrics={"regime": "bull"})


@pytest.fixture
def repo_copy(template, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(template, root, symlinks=True)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if rel != ".lock":
                out[rel] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out


def _record(root: Path, i: int, placeholder: bool = False) -> Path:
    return root / CK / (f"no_model_iter_{i}.json" if placeholder else f"metrics_iter_{i}.json")


def _edit_record(root: Path, i: int, fn: Callable[[dict], Any]) -> None:
    path = _record(root, i)
    rec = json.loads(path.read_bytes())
    fn(rec)
    path.write_text(json.dumps(rec))


def _rehash(root: Path, i: int, kind: str = "model") -> None:
    """Make the record match the artifact's current bytes (as a re-adopted or forged record would)."""
    path = root / CK / f"{'model' if kind == 'model' else kind}_iter_{i}.{'zip' if kind == 'model' else 'pkl'}"
    data = path.read_bytes()

    def fn(rec):
        rec["artifacts"][kind]["sha256"] = hashlib.sha256(data).hexdigest()
        rec["artifacts"][kind]["size"] = len(data)

    _edit_record(root, i, fn)


def _model_path(root: Path, i: int = 1) -> Path:
    return root / CK / f"model_iter_{i}.zip"


def _rezip(root: Path, drop: str | None = None, replace: tuple[str, bytes] | None = None) -> None:
    path = _model_path(root)
    zin = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for n in zin.namelist():
            if n != drop:
                zout.writestr(n, replace[1] if replace and replace[0] == n else zin.read(n))
    path.write_bytes(out.getvalue())
    _rehash(root, 1)


def _write(root: Path, rel: str, data: bytes) -> None:
    (root / rel).write_bytes(data)


def _env():
    return make_vec_env("CartPole-v1", n_envs=1, seed=3)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], Any]
    action: Callable[[CheckpointRepository], Any]
    error: type[CheckpointError]
    match: str | None = None
    #: The bytes match their record (or verify=False): the loader runs and must fail cleanly.
    hash_matches: bool = False
    #: Iteration 0 is untouched by the damage and must still load (False: the whole folder is damaged).
    untouched: bool = True


def _no_setup(root: Path) -> None:
    pass


def _flip_byte(root: Path) -> None:
    data = bytearray(_model_path(root).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _model_path(root).write_bytes(bytes(data))


def _symlink_model_outside(root: Path) -> None:
    outside = root.parent / "outside.zip"
    shutil.copy(_model_path(root), outside)  # an intact copy: only the link is wrong
    _model_path(root).unlink()
    _model_path(root).symlink_to(outside)


def _symlink_record_outside(root: Path) -> None:
    outside = root.parent / "outside.json"
    shutil.copy(_record(root, 1), outside)
    _record(root, 1).unlink()
    _record(root, 1).symlink_to(outside)


def _symlink_checkpoints_outside(root: Path) -> None:
    outside = root.parent / "elsewhere"
    shutil.move(str(root / CK), outside)
    (root / CK).symlink_to(outside)


def _load1(repo: CheckpointRepository) -> Any:
    return repo.load(1, device="cpu")


def _commit(i: Any) -> Callable[[CheckpointRepository], Any]:
    return lambda repo: repo.commit(i, metrics={"mean_reward": 1.0}, model=b"PK")


CASES = [
    # -- model files ---------------------------------------------------------------------------
    Case("model-truncated", lambda r: _write(r, f"{CK}/model_iter_1.zip", _model_path(r).read_bytes()[:500]),
         _load1, IntegrityError, "truncated"),
    Case("model-byte-flipped", _flip_byte, _load1, IntegrityError, "sha256"),
    Case("model-empty-file", lambda r: _write(r, f"{CK}/model_iter_1.zip", b""), _load1, IntegrityError),
    Case("model-not-a-zip-hash-matching", lambda r: (_write(r, f"{CK}/model_iter_1.zip", b"garbage"), _rehash(r, 1)),
         _load1, IntegrityError, "cannot be loaded", hash_matches=True),
    Case("model-truncated-zip-hash-matching",
         lambda r: (_write(r, f"{CK}/model_iter_1.zip", _model_path(r).read_bytes()[:-200]), _rehash(r, 1)),
         _load1, IntegrityError, "cannot be loaded", hash_matches=True),
    Case("model-zip-without-data", lambda r: _rezip(r, drop="data"), _load1, IntegrityError, "cannot be loaded",
         hash_matches=True),
    Case("model-zip-data-not-json", lambda r: _rezip(r, replace=("data", b"{oops")), _load1, IntegrityError,
         hash_matches=True),
    Case("model-zip-data-wrong-type", lambda r: _rezip(r, replace=("data", b"[1, 2]")), _load1, IntegrityError,
         hash_matches=True),
    Case("model-zip-policy-garbage", lambda r: _rezip(r, replace=("policy.pth", b"xx")), _load1, IntegrityError,
         hash_matches=True),
    Case("model-corrupt-unverified-load", lambda r: _write(r, f"{CK}/model_iter_1.zip", b"garbage"),
         lambda repo: repo.load(1, verify=False), IntegrityError, "cannot be loaded", hash_matches=True),
    Case("model-missing-behind-record", lambda r: _model_path(r).unlink(), _load1, IntegrityError, "missing"),
    Case("model-is-a-folder", lambda r: (_model_path(r).unlink(), _model_path(r).mkdir()), _load1, IntegrityError),
    Case("vecnormalize-missing", lambda r: (r / CK / "vecnormalize_iter_1.pkl").unlink(),
         lambda repo: repo.load(1, env=_env()), IntegrityError, "missing"),
    Case("vecnormalize-corrupt-hash-matching",
         lambda r: (_write(r, f"{CK}/vecnormalize_iter_1.pkl", b"\x80\x04junk"), _rehash(r, 1, "vecnormalize")),
         lambda repo: repo.load(1, env=_env()), IntegrityError, "VecNormalize", hash_matches=True),
    Case("record-algorithm-not-a-string", lambda r: _edit_record(r, 1, lambda d: d.update(algorithm=5)),
         _load1, CheckpointError, "not a class path"),
    Case("record-algorithm-not-sb3", lambda r: _edit_record(r, 1, lambda d: d.update(algorithm="os.system")),
         _load1, CheckpointError, "not an SB3 algorithm"),
    Case("record-algorithm-of-another-zip",
         lambda r: _edit_record(r, 1, lambda d: d.update(algorithm="stable_baselines3.sac.sac.SAC")),
         _load1, IntegrityError, hash_matches=True),
    # -- metrics records -----------------------------------------------------------------------
    Case("record-not-json", lambda r: _write(r, f"{CK}/metrics_iter_1.json", b"{not json"),
         lambda repo: repo.get(1), RecordError, "not valid JSON"),
    Case("record-empty", lambda r: _write(r, f"{CK}/metrics_iter_1.json", b""), _load1, RecordError),
    Case("record-not-utf8", lambda r: _write(r, f"{CK}/metrics_iter_1.json", b'{"a": "\xff"}'), _load1, RecordError),
    Case("record-a-json-list", lambda r: _write(r, f"{CK}/metrics_iter_1.json", b"[1, 2]"), _load1, RecordError),
    Case("record-nan-token", lambda r: _write(r, f"{CK}/metrics_iter_1.json",
                                              _record(r, 1).read_bytes().replace(b'"regime"', b'"x": NaN, "regime"')),
         _load1, RecordError, "NaN"),
    Case("record-infinity-token", lambda r: _write(r, f"{CK}/metrics_iter_1.json",
                                                   _record(r, 1).read_bytes().replace(b'"regime"', b'"x": -Infinity,'
                                                                                      b' "regime"')),
         _load1, RecordError, "Infinity"),
    Case("record-future-schema", lambda r: _edit_record(r, 1, lambda d: d.update(schema_version=99)),
         _load1, RecordError, "upgrade"),
    Case("record-schema-version-string", lambda r: _edit_record(r, 1, lambda d: d.update(schema_version="1")),
         _load1, RecordError),
    Case("record-metrics-a-list", lambda r: _edit_record(r, 1, lambda d: d.update(metrics=[1])), _load1, RecordError),
    Case("record-artifacts-a-string", lambda r: _edit_record(r, 1, lambda d: d.update(artifacts="x")),
         _load1, RecordError),
    Case("record-sha256-not-hex",
         lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(sha256="z" * 64)), _load1, RecordError),
    Case("record-size-a-string", lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(size="10")),
         _load1, RecordError),
    Case("record-size-negative", lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(size=-1)),
         _load1, RecordError),
    Case("record-timesteps-a-float", lambda r: _edit_record(r, 1, lambda d: d.update(timesteps=1.5)),
         _load1, RecordError),
    Case("record-iteration-mismatch", lambda r: _edit_record(r, 1, lambda d: d.update(iteration=7)),
         _load1, RecordError, "not 1"),
    Case("record-artifact-parent-escape",
         lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(file="../../outside.zip")),
         _load1, RecordError, "plain file name"),
    Case("record-artifact-absolute",
         lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(file="/etc/passwd")),
         _load1, RecordError, "plain file name"),
    Case("record-artifact-dot", lambda r: _edit_record(r, 1, lambda d: d["artifacts"]["model"].update(file=".")),
         _load1, RecordError),
    # -- iteration numbers ---------------------------------------------------------------------
    Case("commit-duplicate-iteration", _no_setup, _commit(1), CheckpointExistsError, "already committed"),
    Case("commit-negative-iteration", _no_setup, _commit(-1), CheckpointError, "non-negative"),
    Case("commit-iteration-a-string", _no_setup, _commit("2"), CheckpointError),
    Case("commit-iteration-a-float", _no_setup, _commit(2.0), CheckpointError),
    Case("commit-iteration-a-bool", _no_setup, _commit(True), CheckpointError),
    Case("commit-iteration-a-path", _no_setup, _commit("../2"), CheckpointError),
    Case("get-negative-iteration", _no_setup, lambda repo: repo.get(-1), CheckpointError),
    Case("load-absolute-path-iteration", _no_setup, lambda repo: repo.load("/etc/passwd"), CheckpointError),
    Case("get-missing-iteration", _no_setup, lambda repo: repo.get(9), CheckpointNotFound, "no checkpoint"),
    Case("placeholder-without-reason", _no_setup, lambda repo: repo.commit(2, metrics={}), CheckpointError),
    # -- names and symlinks ----------------------------------------------------------------------
    Case("storage-name-parent", _no_setup, lambda repo: repo.storage.write_atomic("../x.json", b"{}"), UnsafePathError),
    Case("storage-name-absolute", _no_setup, lambda repo: repo.storage.read_bytes("/etc/passwd"), UnsafePathError),
    Case("storage-delete-escape", _no_setup, lambda repo: repo.storage.delete("checkpoints/../../x"), UnsafePathError),
    Case("symlinked-model-outside", _symlink_model_outside, _load1, UnsafePathError, "not followed"),
    Case("symlinked-record-outside", _symlink_record_outside, lambda repo: repo.get(1), UnsafePathError),
    Case("symlinked-checkpoints-outside-commit", _symlink_checkpoints_outside, _commit(2), UnsafePathError, "outside",
         untouched=False),
    # -- selection -------------------------------------------------------------------------------
    Case("best-unknown-mode", _no_setup, lambda repo: repo.best(mode="up"), CheckpointError, "mode"),
    Case("load-best-empty-repository", lambda r: shutil.rmtree(r / CK), lambda repo: repo.load_best(),
         CheckpointNotFound, untouched=False),
    Case("load-best-non-numeric-monitor", _no_setup, lambda repo: repo.load_best(monitor="regime"),
         CheckpointNotFound),
    # -- signing ---------------------------------------------------------------------------------
    Case("signature-missing", _no_setup, lambda repo: CheckpointRepository(repo.root, signing_key="k").load(1),
         SignatureError, "not signed"),
    Case("signature-non-ascii", lambda r: _edit_record(r, 1, lambda d: d.update(signature="é" * 64)),
         lambda repo: CheckpointRepository(repo.root, signing_key="k").load(1), SignatureError, "wrong signature"),
]  # fmt: skip


def test_the_table_covers_enough_inputs():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, repo_copy: Path, mocker):
    case.setup(repo_copy)
    repo = CheckpointRepository(repo_copy)
    before = _snapshot(repo_copy)
    load_spy = mocker.spy(PPO, "load")
    with pytest.raises(case.error, match=case.match) as info:
        case.action(repo)
    assert isinstance(info.value, CheckpointError) and type(info.value).__module__ == "sb3_iter_ckpt.errors"
    if not case.hash_matches:
        assert load_spy.call_count == 0, "refused before anything was unpickled"
    assert _snapshot(repo_copy) == before, "the refused call changed files"
    if case.untouched:
        assert isinstance(repo.load(0, device="cpu"), PPO), "the untouched iteration still loads"
        assert CheckpointRepository(repo_copy).get(0).has_model, "and a new repository object sees it too"
    else:  # the damage is to the whole folder: iteration 0 is refused the same clean way
        with pytest.raises(CheckpointError):
            repo.load(0, device="cpu")


# Damage that verify() can see without loading (files that match their record need a load to tell).
DETECTABLE = [
    c
    for c in CASES
    if c.id.startswith(("record-", "model-", "vecnormalize-"))
    and not c.hash_matches
    and not c.id.startswith("record-algorithm")
]


@pytest.mark.filterwarnings("ignore:.*unreadable record")
@pytest.mark.parametrize("case", DETECTABLE, ids=lambda c: c.id)
def test_bad_iteration_is_reported_and_the_rest_stays_usable(case: Case, repo_copy: Path):
    case.setup(repo_copy)
    with pytest.warns(UserWarning, match="unreadable") if case.id.startswith("record-") else _nothing():
        repo = CheckpointRepository(repo_copy)
        listed = [c.iteration for c in repo.list()]
    problems = repo.verify()
    assert problems and problems[0].iteration == 1, problems
    # the report names the damaged file and says what is wrong with it
    damaged = {"record": "metrics_iter_1.json", "model": "model_iter_1.zip", "vecnormalize": "vecnormalize_iter_1.pkl"}
    assert problems[0].file == damaged[case.id.split("-")[0]], problems
    assert isinstance(problems[0].message, str) and len(problems[0].message) > 10, problems
    assert 0 in listed and isinstance(repo.load(0, device="cpu"), PPO)
    assert repo.best().iteration == 0 if case.id.startswith("record-") else repo.best() is not None
    assert repo.next_iteration() == 2, "a damaged record still holds its iteration number"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_duplicate_records_of_one_iteration_are_reported(repo_copy: Path):
    rec = json.loads(_record(repo_copy, 1).read_bytes())
    rec.update(kind="placeholder", reason="nan_metric", artifacts={})
    _record(repo_copy, 1, placeholder=True).write_text(json.dumps(rec))
    repo = CheckpointRepository(repo_copy)
    assert repo.get(1).has_model, "the model record wins over a placeholder of the same iteration"
    dups = [p for p in repo.verify() if "more than one record" in p.message]
    assert [(p.iteration, sorted(p.file.split(", "))) for p in dups] == [
        (1, ["metrics_iter_1.json", "no_model_iter_1.json"])
    ]  # in listing order, which the file system chooses


def test_non_numeric_and_nan_metrics_never_make_the_best(repo_copy: Path):
    repo = CheckpointRepository(repo_copy)
    repo.commit(2, metrics={"mean_reward": float("nan")}, model=_model_path(repo_copy, 0).read_bytes())
    repo.commit(3, metrics={"mean_reward": float("inf")}, model=_model_path(repo_copy, 0).read_bytes())
    repo.commit(4, metrics={"mean_reward": "high"}, model=_model_path(repo_copy, 0).read_bytes())
    assert repo.get(2).metrics["mean_reward"] is None, "stored as strict JSON (null), never NaN"
    assert repo.best().iteration == 1
    assert repo.best(monitor="regime") is None
    assert repo.verify() == []


def test_non_numeric_monitor_in_training_is_a_clear_error(repo_copy: Path):
    repo = CheckpointRepository(repo_copy)
    cb = IterationCheckpointCallback(repo, evaluator=lambda m, e: {"sharpe": "high"}, monitor="sharpe", eval_freq=32)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    with pytest.raises(CheckpointError, match="not numeric"):
        model.learn(64, callback=cb)
    assert repo.iterations() == [0, 1]


def test_empty_repository(tmp_path):
    repo = CheckpointRepository(tmp_path / "nothing")
    assert repo.best() is None and repo.list() == [] and repo.verify() == []
    with pytest.raises(CheckpointNotFound, match="no checkpoint"):
        repo.load_best()
    assert not (tmp_path / "nothing").exists(), "reading creates nothing"


def test_symlink_at_an_artifact_name_is_replaced_not_followed(repo_copy: Path):
    outside = repo_copy.parent / "precious.zip"
    outside.write_bytes(b"precious")
    (repo_copy / CK / "model_iter_2.zip").symlink_to(outside)
    repo = CheckpointRepository(repo_copy)
    with pytest.raises(CheckpointExistsError, match="without a record"):  # a file we did not commit
        repo.commit(2, metrics={"mean_reward": 0.5}, model=_model_path(repo_copy, 0).read_bytes())
    repo.commit(2, metrics={"mean_reward": 0.5}, model=_model_path(repo_copy, 0).read_bytes(), overwrite=True)
    assert not (repo_copy / CK / "model_iter_2.zip").is_symlink()
    assert outside.read_bytes() == b"precious"
    assert repo.verify() == []
    # pruning an iteration whose artifact is a symlink removes the link only
    _model_path(repo_copy, 0).unlink()
    _model_path(repo_copy, 0).symlink_to(outside)
    repo.prune(keep_last_n=1)
    assert outside.read_bytes() == b"precious"
