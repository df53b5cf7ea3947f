"""Forward results stored in the repository: ``checkpoints/forward_iter_{i}.json`` beside the record.

A real PPO trained on the built-in trading env, committed to a real folder, trades its test part; the
result is committed create-only, read back checked, verified (sha256, model, HMAC), pruned with its
record only, kept by the sweep, and never rewrites the selection record.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.data import synthetic_prices
from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, CheckpointNotFound, IntegrityError
from sb3_iter_ckpt.forward import evaluate_forward, placeholder_forward
from sb3_iter_ckpt.splitter import Window
from sb3_iter_ckpt.store.storage import sha256_bytes

PRICES = synthetic_prices(500, seed=9)
WINDOWS = [
    Window(0, 0, 250, 250, 300, test_start=300, test_stop=400),
    Window(1, 100, 350, 350, 400, test_start=400, test_stop=500),
]


@pytest.fixture(scope="module")
def model_bytes():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_iter_ckpt.envs.trading import TradingEnv

    venv = DummyVecEnv([lambda: TradingEnv(PRICES.iloc[:250].to_numpy())])
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def _repo(root, model_bytes, **kw):
    repo = CheckpointRepository(root, **kw)
    algo = {"algorithm": "stable_baselines3.ppo.ppo.PPO"}
    repo.commit(0, metrics={"validation": {"sharpe": 1.0}}, model=model_bytes, extra=algo)
    repo.commit(1, metrics={}, reason="below_min_score")
    return repo


def _results(repo):
    return [
        evaluate_forward(repo.load(0), PRICES, WINDOWS[0], iteration=0),
        placeholder_forward(PRICES, WINDOWS[1], iteration=1),
    ]


def test_commit_forward_stores_a_file_beside_the_record_and_reads_it_back(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes)
    ck = repo_root / "checkpoints"
    records = {p.name: p.read_bytes() for p in ck.iterdir()}
    results = _results(repo)
    assert not repo.has_forward(0)
    with pytest.raises(CheckpointNotFound, match="no forward result"):
        repo.forward(0)
    for r in results:
        assert repo.commit_forward(r) is r
    assert (ck / "forward_iter_0.json").is_file() and (ck / "forward_iter_1.json").is_file()
    assert repo.has_forward(0) and repo.forward(0) == results[0]
    assert [r.to_json_bytes() for r in repo.forwards()] == [r.to_json_bytes() for r in results]
    # the selection records are untouched, and nothing else was written
    for name, data in records.items():
        assert (ck / name).read_bytes() == data, name
    assert sorted(p.name for p in ck.iterdir()) == sorted([*records, "forward_iter_0.json", "forward_iter_1.json"])
    envelope = json.loads((ck / "forward_iter_0.json").read_bytes())
    assert envelope["sha256"] == sha256_bytes(results[0].to_json_bytes())
    assert envelope["model_sha256"] == repo.get(0).sha256 and "signature" not in envelope
    assert repo.verify() == []


def test_commit_forward_is_idempotent_and_create_only(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes)
    result = _results(repo)[0]
    repo.commit_forward(result)
    path = repo_root / "checkpoints" / "forward_iter_0.json"
    before = path.read_bytes(), path.stat().st_mtime_ns
    again = evaluate_forward(repo.load(0), PRICES, WINDOWS[0], iteration=0)
    repo.commit_forward(again)  # the same bytes: fine (a resumed run)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    other = evaluate_forward(repo.load(0), PRICES, WINDOWS[1], iteration=0)
    with pytest.raises(CheckpointExistsError, match="create-only"):
        repo.commit_forward(other)
    assert path.read_bytes() == before[0]


def test_the_loser_of_a_create_race_reads_the_winners_file_again_before_judging_it(repo_root, model_bytes):
    """An object store may answer a key as missing just after its create won (seen with s3fs and moto):
    the loser of the race, whose create was refused, reads again instead of failing. The store's lag is
    what cannot be made real here: a local storage that hides the file for its first reads."""
    from sb3_iter_ckpt.store.storage import LocalStorage

    class Lagging(LocalStorage):
        hidden = 0

        def exists(self, name):
            return False if self.hidden and name.endswith("forward_iter_0.json") else super().exists(name)

        def read_bytes(self, name):
            if self.hidden and name.endswith("forward_iter_0.json"):
                self.hidden -= 1
                raise IntegrityError(f"{name} is missing")
            return super().read_bytes(name)

    result = _results(_repo(repo_root, model_bytes))[0]
    CheckpointRepository(repo_root).commit_forward(result)  # the winner
    lagging = Lagging(repo_root)
    lagging.hidden = 3  # the loser's first check sees nothing; two more reads miss after its create is refused
    loser = CheckpointRepository(repo_root, storage=lagging)
    assert loser.commit_forward(result) == result
    assert lagging.hidden == 0


def test_commit_forward_refuses_what_does_not_belong_to_the_iteration(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes)
    model_result, placeholder = _results(repo)
    with pytest.raises(CheckpointNotFound):
        repo.commit_forward(placeholder_forward(PRICES, WINDOWS[1], iteration=5))
    with pytest.raises(CheckpointError, match="is a placeholder"):
        repo.commit_forward(evaluate_forward(repo.load(0), PRICES, WINDOWS[1], iteration=1))
    with pytest.raises(CheckpointError, match="has a model"):
        repo.commit_forward(placeholder_forward(PRICES, WINDOWS[0], iteration=0))
    assert not any(p.name.startswith("forward_") for p in (repo_root / "checkpoints").iterdir())


def test_verify_reports_an_edited_an_orphaned_and_another_models_forward_file(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes)
    for r in _results(repo):
        repo.commit_forward(r)
    path = repo_root / "checkpoints" / "forward_iter_0.json"
    good = path.read_bytes()
    body = json.loads(good)
    body["forward"]["returns"][0] += 0.01
    body["forward"]["equity"] = body["forward"]["equity"]  # an edit that keeps the file parseable
    path.write_text(json.dumps(body))
    problems = repo.verify()
    assert [(p.iteration, p.file) for p in problems] == [(0, "forward_iter_0.json")]
    assert "sha256" in problems[0].message
    with pytest.raises(IntegrityError, match="sha256"):
        repo.forward(0)
    assert repo.forward_report() is None and "run verify" in repo.forward_status()[1]
    # a consistent edit (sha256 recomputed) of the model hash: traded another model
    body = json.loads(good)
    body["model_sha256"] = "0" * 64
    path.write_text(json.dumps(body))
    assert any("another model" in p.message for p in repo.verify())
    path.write_bytes(good)
    assert repo.verify() == []
    (repo_root / "checkpoints" / "no_model_iter_1.json").unlink()
    problems = repo.verify()
    assert [(p.iteration, p.file) for p in problems] == [(1, "forward_iter_1.json")]
    assert "without a record" in problems[0].message


def test_signed_forward_files_carry_an_hmac_that_verify_checks(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes, signing_key=b"k1")
    result = _results(repo)[0]
    repo.commit_forward(result)
    path = repo_root / "checkpoints" / "forward_iter_0.json"
    body = json.loads(path.read_bytes())
    assert isinstance(body["signature"], str)
    assert repo.verify() == [] and repo.forward(0) == result
    # an edit with a recomputed sha256 still fails: the HMAC covers the whole envelope
    body["forward"]["returns"][0] += 0.01
    body["forward"]["equity"] = [1.0 + body["forward"]["returns"][0]] + body["forward"]["equity"][1:]
    body["sha256"] = sha256_bytes(json.dumps(body["forward"], indent=2, sort_keys=True).encode())
    path.write_text(json.dumps(body))
    problems = CheckpointRepository(repo_root, signing_key=b"k1").verify()
    assert any(p.file == "forward_iter_0.json" and "signature" in p.message for p in problems), problems
    del body["signature"]
    path.write_text(json.dumps(body))
    problems = CheckpointRepository(repo_root, signing_key=b"k1").verify()
    assert any(p.file == "forward_iter_0.json" and "not signed" in p.message for p in problems), problems


@pytest.mark.parametrize("remove_records", [False, True])
def test_prune_keeps_the_forward_file_and_remove_records_removes_it_with_its_record(
    repo_root, model_bytes, remove_records
):
    repo = _repo(repo_root, model_bytes)
    algo = {"algorithm": "stable_baselines3.ppo.ppo.PPO"}
    repo.commit(2, metrics={"validation": {"sharpe": 2.0}}, model=model_bytes, extra=algo)
    for r in _results(repo):
        repo.commit_forward(r)
    ck = repo_root / "checkpoints"
    result = repo.prune(keep_last_n=1, monitor="validation.sharpe", remove_records=remove_records)
    assert list(result.plan.remove) == [0] and not (ck / "model_iter_0.zip").exists()
    assert (ck / "metrics_iter_0.json").exists() is not remove_records
    assert (ck / "forward_iter_0.json").exists() is not remove_records
    assert ("checkpoints/forward_iter_0.json" in result.removed) is remove_records
    assert (ck / "forward_iter_1.json").is_file()  # a placeholder is never pruned
    assert repo.verify() == []  # a pruned record still names its model's sha256


def test_an_overwritten_iteration_loses_its_stale_forward_file(repo_root, model_bytes):
    repo = _repo(repo_root, model_bytes)
    repo.commit_forward(_results(repo)[0])
    repo.commit(0, metrics={}, reason="below_min_score", overwrite=True)
    assert not repo.has_forward(0)
    repo.commit_forward(placeholder_forward(PRICES, WINDOWS[0], iteration=0))
    assert repo.forward(0).placeholder


def test_the_sweep_and_intent_rollback_keep_forward_files(repo_root, model_bytes):
    from sb3_iter_ckpt.store.index import referenced

    repo = _repo(repo_root, model_bytes)
    repo.commit_forward(_results(repo)[0])
    assert referenced(repo.storage, "checkpoints/forward_iter_0.json")
    # a dead writer's intent naming the forward file among its artifacts: the rollback keeps it
    ck = repo_root / "checkpoints"
    intent = {"record": "checkpoints/metrics_iter_0.json", "artifacts": ["checkpoints/forward_iter_0.json"], "pid": 1}
    (ck / ".sb3ckpt-intent-iter-0.json").write_text(json.dumps(intent))
    stale = ck / ".forward_iter_0.json.sb3ckpt-tmp-otherhost-1-0123abcd"
    stale.write_bytes(b"{}")
    os.utime(stale, (0, 0))
    removed = CheckpointRepository(repo_root).storage.sweep()
    assert "checkpoints/forward_iter_0.json" not in removed and (ck / "forward_iter_0.json").is_file()
    assert not stale.exists() and not (ck / ".sb3ckpt-intent-iter-0.json").exists()
