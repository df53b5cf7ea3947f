"""Authenticity: with a signing key, records carry an HMAC and ``load`` refuses what the key did not sign.

Also shows what sha256 alone does not protect against: whoever can write the folder can replace
a model *and* its record's hash, and the repository without a key loads the substitute.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest
from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointRepository, IntegrityError, SignatureError
from sb3_iter_ckpt.repository import SIGNING_KEY_ENV

CK = "checkpoints"


def _model_bytes(seed: int) -> bytes:
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=seed, device="cpu")
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def models():
    return _model_bytes(0), _model_bytes(1)


def _commit(repo: CheckpointRepository, i: int, model: bytes, score: float = 1.0):
    return repo.commit(i, metrics={"mean_reward": score}, model=model, extra={"algorithm": "stable_baselines3.PPO"})


def _edit(root, i: int, fn) -> None:
    path = root / CK / f"metrics_iter_{i}.json"
    rec = json.loads(path.read_bytes())
    fn(rec)
    path.write_text(json.dumps(rec))


def _substitute(root, i: int, model: bytes) -> None:
    """What an attacker with write access does: replace the model and fix the record's sha256/size."""
    (root / CK / f"model_iter_{i}.zip").write_bytes(model)

    def fn(rec):
        rec["artifacts"]["model"].update(sha256=hashlib.sha256(model).hexdigest(), size=len(model))

    _edit(root, i, fn)


def test_signed_records_load_with_the_key(repo_root, models):
    repo = CheckpointRepository(repo_root, signing_key=b"secret")
    ck = _commit(repo, 0, models[0])
    assert len(ck.record["signature"]) == 64
    assert isinstance(repo.load(0, device="cpu"), PPO)
    assert repo.verify() == []
    # str and bytes keys are the same key; a repository without a key ignores signatures
    assert isinstance(CheckpointRepository(repo_root, signing_key="secret").load(0, device="cpu"), PPO)
    assert isinstance(CheckpointRepository(repo_root).load(0, device="cpu"), PPO)


def test_key_from_the_environment(repo_root, models, monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, "from-env")
    _commit(CheckpointRepository(repo_root), 0, models[0])
    assert CheckpointRepository(repo_root, signing_key="from-env").load(0, device="cpu")
    monkeypatch.setenv(SIGNING_KEY_ENV, "another")
    with pytest.raises(SignatureError, match="wrong signature"):
        CheckpointRepository(repo_root).load(0)
    assert CheckpointRepository(repo_root, signing_key="from-env").load(0, device="cpu"), "the argument wins"


def test_unsigned_record_refused_before_unpickling(repo_root, models, mocker):
    _commit(CheckpointRepository(repo_root), 0, models[0])
    spy = mocker.spy(PPO, "load")
    repo = CheckpointRepository(repo_root, signing_key="k")
    with pytest.raises(SignatureError, match="not signed"):
        repo.load(0)
    with pytest.raises(SignatureError):
        repo.load_best()
    assert spy.call_count == 0
    assert [p.iteration for p in repo.verify()] == [0]


def test_wrong_key_refused(repo_root, models):
    _commit(CheckpointRepository(repo_root, signing_key="right"), 0, models[0])
    with pytest.raises(SignatureError, match="wrong signature"):
        CheckpointRepository(repo_root, signing_key="wrong").load(0)


@pytest.mark.parametrize(
    "forgery",
    [
        "substituted-model-and-hash",
        "signature-copied-from-another-iteration",
        "record-moved-to-another-iteration",
        "signature-removed",
        "signature-not-a-string",
        "signature-non-ascii",
        "artifact-renamed",
        "metric-edited",
    ],
)
def test_forgeries_without_the_key_are_refused(tmp_path, models, forgery, mocker):
    root = tmp_path / "repo"
    repo = CheckpointRepository(root, signing_key="k")
    _commit(repo, 0, models[0], 1.0)
    _commit(repo, 1, models[1], 2.0)
    sig0 = json.loads((root / CK / "metrics_iter_0.json").read_bytes())["signature"]
    target = 1
    if forgery == "substituted-model-and-hash":
        _substitute(root, 1, models[0])
    elif forgery == "signature-copied-from-another-iteration":
        _edit(root, 1, lambda r: r.update(signature=sig0))
    elif forgery == "record-moved-to-another-iteration":
        # iteration 0's record and model presented as iteration 5 (its own hashes, its own signature)
        shutil.copy(root / CK / "model_iter_0.zip", root / CK / "model_iter_5.zip")
        rec = json.loads((root / CK / "metrics_iter_0.json").read_bytes())
        rec["iteration"] = 5
        rec["artifacts"]["model"]["file"] = "model_iter_5.zip"
        (root / CK / "metrics_iter_5.json").write_text(json.dumps(rec))
        target = 5
    elif forgery == "signature-removed":
        _edit(root, 1, lambda r: r.pop("signature"))
    elif forgery == "signature-not-a-string":
        _edit(root, 1, lambda r: r.update(signature=12))
    elif forgery == "signature-non-ascii":
        _edit(root, 1, lambda r: r.update(signature="ü" * 64))
    elif forgery == "metric-edited":
        # promoting iteration 1 by editing its score must not pass as genuine
        _edit(root, 1, lambda r: r["metrics"].update(mean_reward=1e9))
    elif forgery == "artifact-renamed":
        shutil.copy(root / CK / "model_iter_1.zip", root / CK / "model_iter_1b.zip")
        _edit(root, 1, lambda r: r["artifacts"]["model"].update(file="model_iter_1b.zip"))
    spy = mocker.spy(PPO, "load")
    with pytest.raises(SignatureError):
        CheckpointRepository(root, signing_key="k").load(target)
    assert spy.call_count == 0
    assert target in [p.iteration for p in CheckpointRepository(root, signing_key="k").verify()]
    assert isinstance(CheckpointRepository(root, signing_key="k").load(0, device="cpu"), PPO)


def test_sha256_alone_detects_corruption_not_substitution(repo_root, models):
    """Documented limit (docs/reliability.md): integrity is not authenticity."""
    repo = CheckpointRepository(repo_root)
    _commit(repo, 0, models[0])
    data = bytearray(models[0])
    data[len(data) // 3] ^= 0xFF
    (repo_root / CK / "model_iter_0.zip").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        repo.load(0)  # accidental damage: caught
    _substitute(repo_root, 0, models[1])
    loaded = CheckpointRepository(repo_root).load(0, device="cpu")  # deliberate substitution: not caught
    assert isinstance(loaded, PPO) and repo.verify() == []


def test_pruned_and_adopted_records_stay_signed(repo_root, models):
    repo = CheckpointRepository(repo_root, signing_key="k")
    for i in range(4):
        _commit(repo, i, models[i % 2], float(i))
    repo.prune(keep_last_n=1)
    assert repo.verify() == []
    assert repo.get(0).record["pruned"] and isinstance(repo.get(0).record["signature"], str)
    assert isinstance(repo.load(3, device="cpu"), PPO)
