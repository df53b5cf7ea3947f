"""Authenticity: with a signing key, records carry an HMAC and ``load`` refuses what the key did not sign.

Also shows what sha256 alone does not protect against: whoever can write the folder can replace
a model *and* its record's hash, and the repository without a key loads the substitute.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointRepository, IntegrityError, SignatureError, SigningKeyError
from sb3_iter_ckpt.common.signing import MARKER, Signer
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


# -- issue 13, items 2 and 3: a key protects every decision, and signing is not optional per command ---------


@pytest.fixture
def no_env_key(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


def _signed_repo(root, models, n: int = 3) -> CheckpointRepository:
    repo = CheckpointRepository(root, signing_key="k")
    for i in range(n):
        _commit(repo, i, models[i % 2], float(i))
    repo.refresh()
    return repo


def _plant(root, i: int, model: bytes, score: float, signature=None) -> None:
    """A forged record: a planted model with a correct sha256/size, and no (or a made-up) signature."""
    (root / CK / f"model_iter_{i}.zip").write_bytes(model)
    rec = json.loads((root / CK / "metrics_iter_0.json").read_bytes())
    rec["iteration"] = i
    rec["metrics"] = {"mean_reward": score}
    rec["artifacts"]["model"] = {
        "file": f"model_iter_{i}.zip",
        "sha256": hashlib.sha256(model).hexdigest(),
        "size": len(model),
    }
    rec.pop("signature")
    if signature is not None:
        rec["signature"] = signature
        rec["selection"] = {"monitor": "mean_reward", "mode": "min"}  # a forged rule, on the latest record
    (root / CK / f"metrics_iter_{i}.json").write_text(json.dumps(rec))


def test_forged_record_is_not_best_not_linked_not_protected(tmp_path, models, no_env_key):
    root = tmp_path / "repo"
    _signed_repo(root, models, 3)
    real_best = (root / CK / "model_iter_2.zip").read_bytes()
    planted = _model_bytes(7)
    _plant(root, 7, planted, 1e9)  # unsigned
    _plant(root, 8, planted, 1e9, signature="0" * 64)  # a made-up signature
    repo = CheckpointRepository(root, signing_key="k")
    with pytest.warns(UserWarning, match="without a valid signature"):
        assert [c.iteration for c in repo.list()] == [0, 1, 2]
    with pytest.warns(UserWarning):
        assert repo.best().iteration == 2
        assert repo.latest().iteration == 2 and 7 not in repo.iterations() and len(repo) == 3
        repo.refresh()
        summary = json.loads((root / "training_summary.json").read_bytes())
        assert summary["best"]["iteration"] == 2 and summary["iterations"] == [0, 1, 2]
        analysis = json.loads((root / "checkpoint_summary.json").read_bytes())["analysis"]
        assert [b["iteration"] for b in analysis["best"]][0] == 2
        assert all(b["iteration"] not in (7, 8) for b in analysis["best"])
        assert repo.analyze()["counts"]["total"] == 3
        result = repo.prune(keep_last_n=1)
    # the real best is kept, the forged ones are neither protected nor counted as the latest
    assert 2 in result.plan.keep and set(result.plan.keep) | set(result.plan.remove) == {0, 1, 2}
    assert (root / CK / "model_iter_2.zip").read_bytes() == real_best
    assert (root / "best_model.zip").read_bytes() == real_best
    # plain SB3 loading best_model.zip gets the genuine model
    loaded = PPO.load(root / "best_model.zip", device="cpu")
    genuine = PPO.load(io.BytesIO(real_best), device="cpu")
    forged = PPO.load(io.BytesIO(planted), device="cpu")
    p_loaded, p_genuine, p_forged = (next(iter(m.policy.state_dict().values())) for m in (loaded, genuine, forged))
    assert (p_loaded == p_genuine).all() and not (p_loaded == p_forged).all()
    problems = CheckpointRepository(root, signing_key="k").verify()
    assert {p.iteration for p in problems if "signature" in p.message or "not signed" in p.message} == {7, 8}
    with pytest.raises(SignatureError):
        repo.load(7)


def test_load_best_without_any_signed_record_is_a_signature_error(repo_root, models, no_env_key):
    _commit(CheckpointRepository(repo_root), 0, models[0])
    with pytest.warns(UserWarning):
        with pytest.raises(SignatureError, match="fail the signature check"):
            CheckpointRepository(repo_root, signing_key="k").load_best()


def test_signed_repository_has_a_marker_with_a_fingerprint_not_the_key(repo_root, models, no_env_key):
    _signed_repo(repo_root, models, 1)
    marker = (repo_root / MARKER).read_bytes()
    assert json.loads(marker)["key_fingerprint"] == Signer("k").fingerprint
    assert Signer("k").fingerprint != Signer("k2").fingerprint and Signer("k").fingerprint == Signer(b"k").fingerprint
    long_key = "correct horse battery staple"
    assert long_key.encode() not in Signer(long_key).marker()


@pytest.mark.parametrize("op", ["commit", "prune", "adopt", "refresh", "write_summary", "write_training_summary"])
def test_writes_without_the_key_are_refused(repo_root, models, op, no_env_key):
    _signed_repo(repo_root, models, 3)
    if op == "refresh":
        CheckpointRepository(repo_root).refresh()  # nothing to write: no key needed (a rerun with nothing to do)
        (repo_root / "checkpoint_summary.json").unlink()  # now it has something to write
    before = {p.name: p.read_bytes() for p in (repo_root / CK).iterdir()}
    repo = CheckpointRepository(repo_root)  # no key
    call = {
        "commit": lambda: _commit(repo, 3, models[0], 9.0),
        "prune": lambda: repo.prune(keep_last_n=1),
        "adopt": repo.adopt,
        "refresh": repo.refresh,
        "write_summary": repo.write_summary,
        "write_training_summary": repo.write_training_summary,
    }[op]
    with pytest.raises(SigningKeyError, match=f"{SIGNING_KEY_ENV}.*--signing-key-file"):
        call()
    assert {p.name: p.read_bytes() for p in (repo_root / CK).iterdir()} == before
    assert repo.prune(keep_last_n=1, dry_run=True).plan.remove == (0, 1)  # a dry run writes nothing


def test_verify_without_the_key_is_not_ok(repo_root, models, no_env_key):
    _signed_repo(repo_root, models, 2)
    _substitute(repo_root, 1, models[0])  # rehashed tampering: sha256 alone cannot see it
    problems = CheckpointRepository(repo_root).verify()
    assert [p.file for p in problems] == [MARKER] and "could not be checked" in problems[0].message
    assert 1 in [p.iteration for p in CheckpointRepository(repo_root, signing_key="k").verify()]


def test_deleted_marker_is_detected(repo_root, models, no_env_key):
    _signed_repo(repo_root, models, 2)
    (repo_root / MARKER).unlink()
    with pytest.raises(SigningKeyError, match="deleted"):
        CheckpointRepository(repo_root).prune(keep_last_n=1)
    assert CheckpointRepository(repo_root).verify(), "no key: not ok"
    problems = CheckpointRepository(repo_root, signing_key="k").verify()
    assert [p.file for p in problems] == [MARKER] and "missing" in problems[0].message
    with pytest.raises(SigningKeyError, match="wrong signature key"):
        _commit(CheckpointRepository(repo_root, signing_key="wrong"), 5, models[0])
    CheckpointRepository(repo_root, signing_key="k").refresh()  # a write with the right key restores it
    assert CheckpointRepository(repo_root, signing_key="k").verify() == []


@pytest.mark.parametrize("how", ["callback", "commit-next-free", "commit", "ensure_free"])
def test_deleted_marker_writes_without_the_key_are_refused_before_training_and_publishing(
    repo_root, models, how, no_env_key
):
    from sb3_iter_ckpt import IterationCheckpointCallback

    _signed_repo(repo_root, models, 3)
    (repo_root / MARKER).unlink()
    before = {p.name: p.read_bytes() for p in repo_root.rglob("*") if p.is_file()}
    repo = CheckpointRepository(repo_root)  # no key
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu")
    calls = {
        "callback": lambda: model.learn(64, callback=IterationCheckpointCallback(repo, eval_freq=32)),
        "commit-next-free": lambda: repo.commit(3, metrics={"mean_reward": 9.0}, model=models[0], next_free=True),
        "commit": lambda: _commit(repo, 3, models[0], 9.0),
        "ensure_free": lambda: repo.ensure_free([3]),
    }
    with pytest.raises(SigningKeyError, match="deleted"):
        calls[how]()
    assert model.num_timesteps == 0, "refused before any training time is spent"
    assert {p.name: p.read_bytes() for p in repo_root.rglob("*") if p.is_file()} == before, "nothing published"


def test_wrong_key_refused_up_front(repo_root, models, no_env_key):
    _signed_repo(repo_root, models, 1)
    before = sorted(p.name for p in repo_root.rglob("*"))
    with pytest.raises(SigningKeyError, match="another key"):
        CheckpointRepository(repo_root, signing_key="wrong")
    assert sorted(p.name for p in repo_root.rglob("*")) == before


def test_signer_is_pure_and_replaces_the_repository_blocks():
    import ast
    import inspect

    from sb3_iter_ckpt import repository
    from sb3_iter_ckpt.common import signing

    tree = ast.parse(inspect.getsource(signing))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if "repository" in m or "storage" in m or m in ("os", "pathlib", "io")}
    assert "hmac" not in inspect.getsource(repository)
    with pytest.raises(SignatureError):
        Signer("")
    s = Signer("k")
    record = {"iteration": 1, "metrics": {"x": 1.0}}
    signed = s.signed(record)
    assert s.verifies(signed) and not Signer("k2").verifies(signed) and not s.verifies(record)
    assert "k" not in repr(s).replace("fingerprint", "")
    repo = CheckpointRepository("unused-root", signing_key=s, sweep=False)
    assert repo.signing_key == b"k"


def test_worker_processes_get_the_key(repo_root, no_env_key):
    from sb3_iter_ckpt.runner.executors import RepositoryRef

    ref = RepositoryRef.of(CheckpointRepository(repo_root, signing_key="k"))
    assert ref.signing_key == b"k" and ref.open().signing_key == b"k"


# -- the command line: the key from the environment or a key file, never as a value -------------------------

CLI = str(Path(sys.executable).with_name("sb3-iter-ckpt"))


def _cli(*args: str, cwd, key_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != SIGNING_KEY_ENV}
    if key_env is not None:
        env[SIGNING_KEY_ENV] = key_env
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_takes_the_key_from_the_environment_or_a_key_file(tmp_path, models, no_env_key):
    from sb3_iter_ckpt.cli import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE

    root = tmp_path / "repo"
    _signed_repo(root, models, 3)
    key_file = tmp_path / "key"
    key_file.write_text("k\n")  # as `echo k > key` writes it
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("wrong")

    assert _cli("verify", str(root), cwd=tmp_path, key_env="k").returncode == EXIT_OK
    assert _cli("verify", str(root), "--signing-key-file", str(key_file), cwd=tmp_path).returncode == EXIT_OK
    no_key = _cli("verify", str(root), cwd=tmp_path)
    assert no_key.returncode == EXIT_INTEGRITY and "could not be checked" in no_key.stdout, no_key.stdout
    wrong = _cli("verify", str(root), "--signing-key-file", str(wrong_file), cwd=tmp_path)
    assert wrong.returncode == EXIT_USAGE and "another key" in wrong.stderr and "Traceback" not in wrong.stderr

    before = {p.name: p.read_bytes() for p in (root / CK).iterdir()}
    refused = _cli("prune", str(root), "--keep-last-n", "1", cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE, refused.stderr
    assert SIGNING_KEY_ENV in refused.stderr and "--signing-key-file" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {p.name: p.read_bytes() for p in (root / CK).iterdir()} == before

    # a key as a command-line value is refused, never used (it would show in ps and the shell history)
    on_line = _cli("prune", str(root), "--keep-last-n", "1", "--signing-key", "k", cwd=tmp_path)
    assert on_line.returncode == EXIT_USAGE and "command line" in on_line.stderr, on_line.stderr
    assert {p.name: p.read_bytes() for p in (root / CK).iterdir()} == before

    pruned = _cli("prune", str(root), "--keep-last-n", "1", "--signing-key-file", str(key_file), cwd=tmp_path)
    assert pruned.returncode == EXIT_OK, pruned.stderr
    assert CheckpointRepository(root, signing_key="k").verify() == []
    assert _cli("summary", str(root), cwd=tmp_path, key_env="k").returncode == EXIT_OK


def test_cli_walk_forward_signs_with_a_key_file(tmp_path, no_env_key):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"walk-forward-key")
    tiny = ["--n-prices", "300", "--train-size", "150", "--val-size", "60", "--total-timesteps", "64"]
    tiny += ["--n-steps", "64", "--eval-freq", "64", "--iterations", "1"]
    args = ["walk-forward", "--experiment-id", "s", *tiny, "--signing-key-file", str(key_file)]
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "results" / "s"
    assert json.loads((root / MARKER).read_bytes())["key_fingerprint"] == Signer("walk-forward-key").fingerprint
    assert CheckpointRepository(root, signing_key="walk-forward-key").verify() == []
    record = json.loads((root / CK / "metrics_iter_0.json").read_bytes())
    assert Signer("walk-forward-key").verifies(record)
    # a resume with nothing left to train writes nothing, so it needs no key
    before = {p.name: p.read_bytes() for p in (root / CK).iterdir()}
    again = _cli("walk-forward", "--experiment-id", "s", *tiny, cwd=tmp_path)
    assert again.returncode == 0 and "(resumed)" in again.stdout, again.stderr
    assert {p.name: p.read_bytes() for p in (root / CK).iterdir()} == before
    # a run that died before its commit (so before its forward evaluation), resumed without the key:
    # refused before any training
    for name in ("metrics_iter_0.json", "model_iter_0.zip", "forward_iter_0.json"):
        (root / CK / name).unlink()
    refused = _cli("walk-forward", "--experiment-id", "s", *tiny, cwd=tmp_path)
    assert refused.returncode == 2 and SIGNING_KEY_ENV in refused.stderr, refused.stderr
    assert "walk-forward: 100%" not in refused.stderr and not (root / CK / "metrics_iter_0.json").exists()
    resumed = _cli("walk-forward", "--experiment-id", "s", *tiny, cwd=tmp_path, key_env="walk-forward-key")
    assert resumed.returncode == 0, resumed.stderr
    assert CheckpointRepository(root, signing_key="walk-forward-key").verify() == []


def test_a_record_strict_json_cannot_sign_is_just_wrongly_signed():
    """A value strict JSON refuses (inf, a cycle) was never signed by us: wrong, never a crash."""
    s = Signer("k")
    assert not s.verifies({"iteration": 1, "metrics": {"x": float("inf")}, "signature": "ab" * 32})
    cyclic: dict = {"iteration": 1}
    cyclic["self"] = cyclic
    assert not s.verifies({**cyclic, "signature": "ab" * 32})
    with pytest.raises(SignatureError, match="wrong signature"):
        s.check({"metrics": {"x": float("nan")}, "signature": "ab" * 32}, 3)
