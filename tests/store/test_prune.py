"""Pruning (issue 4) on repositories written by real, tiny SB3 training; a property test on synthetic ones."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.cli import main as cli_main
from sb3_iter_ckpt.retention import KeepBestK, KeepEveryN, KeepLastN, RetentionPolicy

# Iteration k's evaluation: a placeholder where the score is not positive (min_score rule).
SCORES = [1.0, 5.0, -1.0, 3.0, 2.0, -2.0, 4.0, 6.0, 0.5, 2.5]
DRAWDOWN = [0.30, 0.10, 0.50, 0.15, 0.25, 0.40, 0.05, 0.35, 0.12, 0.20]
MODELS = [0, 1, 3, 4, 6, 7, 8, 9]
PLACEHOLDERS = [2, 5]
BEST, LATEST = 7, 9


def _evaluator(model, env):
    k = model.num_timesteps // 32 - 1
    return {"mean_reward": SCORES[k], "risk": {"max_drawdown": DRAWDOWN[k]}}


def _train(root: Path, n: int = len(SCORES), **callback_kwargs) -> IterationCheckpointCallback:
    """One PPO run, one iteration per rollout of 32 steps, VecNormalize statistics saved with each model."""
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    cb = IterationCheckpointCallback(
        CheckpointRepository(root) if "repository" not in callback_kwargs else callback_kwargs.pop("repository"),
        evaluator=_evaluator,
        eval_freq=32,
        iteration_timesteps=32,
        min_score=lambda m: m["mean_reward"] > 0,
        **callback_kwargs,
    )
    model.learn(32 * n, callback=cb)
    return cb


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "results" / "1003"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        _train(root)
    return root


@pytest.fixture
def repo_dir(template, tmp_path):
    root = tmp_path / "results" / "1003"
    shutil.copytree(template, root)
    return root


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _model_files(root: Path, i: int) -> list[Path]:
    return [root / "checkpoints" / f"model_iter_{i}.zip", root / "checkpoints" / f"vecnormalize_iter_{i}.pkl"]


@dataclass(frozen=True)
class KeepLowDrawdown(RetentionPolicy):
    """The documented customization: keep iterations whose drawdown is under a bound."""

    bound: float = 0.2

    def keep(self, checkpoints):
        return {
            c.iteration
            for c in checkpoints
            if c.has_model and (dd := c.score("risk.max_drawdown")) is not None and dd < self.bound
        }


class KeepNothing(RetentionPolicy):
    def keep(self, checkpoints):
        return set()


# -- the template repository itself ---------------------------------------------------------------


def test_template_is_what_training_wrote(template):
    repo = CheckpointRepository(template)
    cks = repo.list()
    assert [c.iteration for c in cks if c.has_model] == MODELS
    assert [c.iteration for c in cks if not c.has_model] == PLACEHOLDERS
    assert all(set(c.artifacts) == {"model", "vecnormalize"} for c in cks if c.has_model)
    assert repo.best().iteration == BEST and repo.latest().iteration == LATEST


# -- built-in policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "removed"),
    [
        ({"keep_last_n": 3}, [0, 1, 3, 4, 6]),  # keeps 7 8 9
        ({"keep_every_n": 5}, [1, 3, 4, 6, 8]),  # keeps 0 (5 is a placeholder); 7 best, 9 latest
        ({"keep_every_n": 3}, [1, 4, 8]),  # keeps 0 3 6 (9 anyway)
        ({"keep_best_k": 2}, [0, 3, 4, 6, 8]),  # keeps 7 and 1
        ({"keep_every_n": 5, "keep_last_n": 3}, [1, 3, 4, 6]),  # union
    ],
)
def test_builtin_shortcuts_remove_model_artifacts_keep_records(repo_dir, kwargs, removed):
    repo = CheckpointRepository(repo_dir)
    before = repo.list()
    result = repo.prune(**kwargs)
    assert list(result.plan.remove) == removed
    assert sorted(set(result.plan.keep) | set(result.plan.remove)) == list(range(10))
    assert result.plan.protected == {2: "placeholder", 5: "placeholder", 7: "best", 9: "latest"}
    expected_files = sorted(f"checkpoints/{p.name}" for i in removed for p in _model_files(repo_dir, i))
    assert sorted(result.removed) == expected_files
    assert result.freed_bytes == sum(c.size_bytes for c in before if c.iteration in removed) > 0
    for i in MODELS:
        gone = i in removed
        assert all(p.exists() != gone for p in _model_files(repo_dir, i))
    # every metrics record stays, marked pruned, so the history is complete
    after = repo.list()
    assert [c.iteration for c in after] == list(range(10))
    assert [c.metrics for c in after] == [c.metrics for c in before]
    for c in after:
        if c.iteration in removed:
            assert not c.has_model and c.reason == "pruned" and "pruned" in c.record
            assert set(c.record["pruned"]["artifacts"]) == {"model", "vecnormalize"}
    assert repo.verify() == []
    assert isinstance(repo.load(BEST), PPO) and isinstance(repo.load(LATEST), PPO)
    assert repo.analyze()["counts"]["pruned"] == len(removed)
    assert repo.analyze()["stats"]["mean_reward"]["count"] == 10


def test_keep_best_k_min_mode_on_nested_metric(repo_dir):
    repo = CheckpointRepository(repo_dir)
    policy = KeepBestK(2, monitor="risk.max_drawdown", mode="min")  # 6 (0.05) and 1 (0.10)
    result = repo.prune(policy)
    assert list(result.plan.remove) == [0, 3, 4, 8]
    assert {i for i in MODELS if (repo_dir / "checkpoints" / f"model_iter_{i}.zip").exists()} == {1, 6, 7, 9}


def test_union_policy_object_equals_the_shortcuts(template, tmp_path):
    plans = []
    for k, how in enumerate(
        [
            {"policy": KeepLastN(3) | KeepEveryN(5)},
            {"keep_every_n": 5, "keep_last_n": 3},
            {"policy": KeepLastN(3), "keep_every_n": 5},  # a policy and a shortcut combine by union
        ]
    ):
        root = tmp_path / str(k)
        shutil.copytree(template, root)
        result = CheckpointRepository(root).prune(**how)
        plans.append((result.plan, sorted(p.name for p in (root / "checkpoints").iterdir())))
    assert plans[0] == plans[1] == plans[2]


def test_dry_run_deletes_nothing_and_plans_the_same(repo_dir, tmp_path):
    before = _files(repo_dir)
    repo = CheckpointRepository(repo_dir)
    dry = repo.prune(keep_last_n=2, dry_run=True)
    assert dry.dry_run and dry.removed == () and dry.freed_bytes == 0
    assert _files(repo_dir) == before, "a dry run changes no byte"
    real = repo.prune(keep_last_n=2)
    assert real.plan == dry.plan and len(real.removed) == 2 * len(dry.plan.remove)


def test_remove_records_too(repo_dir):
    repo = CheckpointRepository(repo_dir)
    result = repo.prune(keep_last_n=1, remove_records=True)
    assert list(result.plan.remove) == [0, 1, 3, 4, 6, 8]
    assert {f"checkpoints/metrics_iter_{i}.json" for i in result.plan.remove} <= set(result.removed)
    assert repo.iterations() == [2, 5, 7, 9], "placeholders, best and latest keep their records"
    assert sorted(p.name for p in (repo_dir / "checkpoints").iterdir()) == sorted(
        ["no_model_iter_2.json", "no_model_iter_5.json"]
        + [
            f"{k}_iter_{i}.{e}"
            for i in (7, 9)
            for k, e in (("metrics", "json"), ("model", "zip"), ("vecnormalize", "pkl"))
        ]
    )
    assert repo.verify() == []


def test_no_policy_and_no_hook_removes_nothing(repo_dir):
    before = _files(repo_dir)
    result = CheckpointRepository(repo_dir).prune()
    assert result.plan.remove == () and result.removed == ()
    assert _files(repo_dir) == before


def test_prune_is_idempotent(repo_dir):
    repo = CheckpointRepository(repo_dir)
    first = repo.prune(keep_every_n=4)
    snapshot = _files(repo_dir)
    second = repo.prune(keep_every_n=4)
    assert first.plan.remove and second.plan.remove == () and second.removed == ()
    assert _files(repo_dir) == snapshot


def test_best_model_link_and_training_summary_survive_pruning(repo_dir):
    repo = CheckpointRepository(repo_dir)
    repo.prune(KeepNothing())
    best_zip = repo_dir / "best_model.zip"
    assert best_zip.read_bytes() == (repo_dir / "checkpoints" / f"model_iter_{BEST}.zip").read_bytes()
    assert isinstance(repo.load_best(), PPO)
    summary = json.loads((repo_dir / "training_summary.json").read_text())
    assert summary["best"]["iteration"] == BEST and summary["total_checkpoints"] == 2


# -- protection, whatever the policy --------------------------------------------------------------


def test_a_policy_that_keeps_nothing_still_keeps_best_latest_placeholders(repo_dir):
    repo = CheckpointRepository(repo_dir)
    result = repo.prune(KeepNothing())
    assert list(result.plan.remove) == [0, 1, 3, 4, 6, 8]
    assert result.plan.protected == {2: "placeholder", 5: "placeholder", 7: "best", 9: "latest"}
    for i in (BEST, LATEST):
        assert all(p.is_file() for p in _model_files(repo_dir, i))
    for i in PLACEHOLDERS:
        assert (repo_dir / "checkpoints" / f"no_model_iter_{i}.json").is_file()


def test_latest_record_is_a_placeholder_then_latest_model_is_protected_too(template, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(template, root)
    repo = CheckpointRepository(root)
    repo.commit(10, metrics={"mean_reward": -5.0}, reason="below_min_score")
    result = repo.prune(KeepNothing())
    assert result.plan.protected[10] == "latest" and result.plan.protected[9] == "latest"
    assert 9 not in result.plan.remove and (root / "checkpoints" / "model_iter_9.zip").is_file()


# -- custom policies: the documented customization ----------------------------------------------------


def test_custom_policy_subclass(repo_dir):
    repo = CheckpointRepository(repo_dir)
    result = repo.prune(KeepLowDrawdown(0.2))
    # under 0.2: 1 3 6 8; protected: 7 (best), 9 (latest), 2 5 (placeholders)
    assert list(result.plan.remove) == [0, 4]
    assert [c.iteration for c in repo.list() if c.has_model] == [1, 3, 6, 7, 8, 9]
    # and it composes with the built-ins
    assert isinstance(KeepLowDrawdown(0.1) | KeepLastN(2), RetentionPolicy)


def test_custom_policy_via_repository_subclass_hook(repo_dir):
    class LowDrawdownRepository(CheckpointRepository):
        def retention_policy(self):
            return KeepLowDrawdown(0.2)

    repo = LowDrawdownRepository(repo_dir)
    dry = repo.prune(dry_run=True)
    assert list(dry.plan.remove) == [0, 4]
    result = repo.prune()
    assert list(result.plan.remove) == [0, 4]
    assert not (repo_dir / "checkpoints" / "model_iter_0.zip").exists()
    assert (repo_dir / "checkpoints" / "model_iter_1.zip").exists()
    # explicit arguments take over from the hook
    assert list(repo.prune(keep_last_n=1, dry_run=True).plan.remove) == [1, 3, 6, 8]


# -- files that are not the repository's ---------------------------------------------------------------


def test_strangers_files_are_left_alone(repo_dir):
    ck = repo_dir / "checkpoints"
    (ck / "notes.txt").write_text("my notes")
    shutil.copy(ck / "model_iter_1.zip", ck / "model_iter_99.zip")  # no record names it
    shutil.copy(ck / "model_iter_3.zip", ck / "model_iter_3.zip.bak")  # a user's backup
    (ck / "vecnormalize_iter_4.pkl.orig").write_bytes(b"user")
    (repo_dir / "README.txt").write_text("experiment 1003")
    strangers = {k: v for k, v in _files(repo_dir).items() if k.endswith((".txt", "_99.zip", ".bak", ".orig"))}
    assert len(strangers) == 5
    repo = CheckpointRepository(repo_dir)
    assert 99 not in repo.iterations(), "a file without a record is not a checkpoint of ours"
    result = repo.prune(KeepNothing(), remove_records=True)
    assert 3 in result.plan.remove and 99 not in result.plan.remove
    after = _files(repo_dir)
    assert {k: after.get(k) for k in strangers} == strangers
    assert all("99" not in f and not f.endswith((".bak", ".orig", ".txt")) for f in result.removed)


# -- the callback's retention= ----------------------------------------------------------------------


@pytest.mark.parametrize("async_commit", [False, True])
def test_callback_retention_runs_only_after_each_durable_commit(repo_root, monkeypatch, async_commit):
    repo = CheckpointRepository(repo_root)
    events: list[tuple[str, int]] = []
    real_commit, real_prune = repo.commit, repo.prune

    def commit(iteration, **kwargs):
        ck = real_commit(iteration, **kwargs)
        events.append(("commit", iteration))
        return ck

    def prune(*args, **kwargs):
        assert events and events[-1][0] == "commit", "prune only right after a commit"
        just = events[-1][1]
        ck_dir = repo_root / "checkpoints"
        assert (ck_dir / f"metrics_iter_{just}.json").is_file() or (ck_dir / f"no_model_iter_{just}.json").is_file()
        result = real_prune(*args, **kwargs)
        assert just not in result.plan.remove, "the just-committed iteration is never pruned"
        assert repo.get(just).has_model == (SCORES[just] > 0)
        events.append(("prune", just))
        return result

    monkeypatch.setattr(repo, "commit", commit)
    monkeypatch.setattr(repo, "prune", prune)
    cb = _train(repo_root, n=8, repository=repo, retention=KeepLastN(1), async_commit=async_commit)
    assert cb.errors == []
    assert events == [(kind, i) for i in range(8) for kind in ("commit", "prune")]
    # models left: the best so far (7) and the latest (7); placeholders 2 5 untouched
    assert [c.iteration for c in repo.list() if c.has_model] == [7]
    assert [c.iteration for c in repo.list() if not c.has_model and c.reason == "below_min_score"] == [2, 5]
    assert repo.iterations() == list(range(8)) and repo.verify() == []


def test_callback_retention_keeps_best_as_it_changes(repo_root):
    cb = _train(repo_root, n=10, retention=KeepEveryN(5))
    repo = cb.repository
    # kept by the rule: 0 (5 is a placeholder); best 7; latest 9
    assert [c.iteration for c in repo.list() if c.has_model] == [0, 7, 9]
    assert repo.best().iteration == BEST
    assert (repo_root / "best_model.zip").read_bytes() == (repo_root / "checkpoints" / "model_iter_7.zip").read_bytes()


# -- command line ------------------------------------------------------------------------------------


def test_cli_prune_dry_run_then_prune(repo_dir, capsys):
    before = _files(repo_dir)
    assert cli_main(["prune", str(repo_dir), "--keep-every-n", "5", "--keep-last-n", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and "[1, 3, 4, 6]" in out
    assert _files(repo_dir) == before
    assert cli_main(["prune", str(repo_dir), "--keep-every-n", "5", "--keep-last-n", "3"]) == 0
    assert not (repo_dir / "checkpoints" / "model_iter_1.zip").exists()
    assert (repo_dir / "checkpoints" / "model_iter_0.zip").exists()


# -- property: protection holds under every built-in and a custom policy ------------------------------

_entries = st.lists(
    st.tuples(
        st.booleans(),  # has a model
        st.one_of(st.floats(-10, 10), st.just(math.nan), st.none()),  # mean_reward
        st.floats(0, 1),  # drawdown
    ),
    min_size=1,
    max_size=10,
)
_base = st.one_of(
    st.builds(KeepLastN, st.integers(1, 4)),
    st.builds(KeepEveryN, st.integers(1, 4)),
    st.builds(KeepBestK, st.integers(1, 4), st.just("mean_reward"), st.sampled_from(["max", "min"])),
    st.builds(KeepLowDrawdown, st.floats(0, 1)),
    st.just(KeepNothing()),
)
_policies = st.one_of(_base, st.tuples(_base, _base).map(lambda ab: ab[0] | ab[1]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=_entries,
    gaps=st.lists(st.integers(1, 3), min_size=10, max_size=10),
    policy=_policies,
    remove_records=st.booleans(),
    dry_run=st.booleans(),
)
def test_protection_rules_hold_for_any_policy(entries, gaps, policy, remove_records, dry_run):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        repo = CheckpointRepository(root)
        iterations, it = [], 0
        for (has_model, reward, dd), gap in zip(entries, gaps[: len(entries)], strict=True):
            metrics = {"mean_reward": reward, "risk": {"max_drawdown": dd}}
            if has_model:
                repo.commit(it, metrics=metrics, model=b"fake-zip-%d" % it, vecnormalize=b"vn", replay_buffer=b"rb")
            else:
                repo.commit(it, metrics=metrics, reason="below_min_score")
            iterations.append(it)
            it += gap
        (root / "checkpoints" / "notes.txt").write_text("not ours")
        models = [i for i, (m, _, _) in zip(iterations, entries, strict=True) if m]
        placeholders = [i for i, (m, _, _) in zip(iterations, entries, strict=True) if not m]
        best = repo.best()
        before = _files(root)

        result = repo.prune(policy, remove_records=remove_records, dry_run=dry_run)

        ck = root / "checkpoints"
        wanted = policy.keep(repo.list()) if dry_run else None
        protected = {
            i for i in (best.iteration if best else None, iterations[-1], (models or [None])[-1]) if i is not None
        }
        protected |= set(placeholders)
        assert set(result.plan.remove).isdisjoint(protected)
        assert set(result.plan.remove) <= set(models)
        assert sorted(set(result.plan.keep) | set(result.plan.remove)) == iterations
        if dry_run:
            assert _files(root) == before and result.removed == ()
            assert set(result.plan.remove) == set(models) - wanted - protected
            return
        for i in models:
            artifacts = [
                ck / f"model_iter_{i}.zip",
                ck / f"vecnormalize_iter_{i}.pkl",
                ck / f"replay_buffer_iter_{i}.pkl",
            ]
            removed = i in result.plan.remove
            assert all(p.exists() != removed for p in artifacts)
            assert (ck / f"metrics_iter_{i}.json").exists() == (not (removed and remove_records))
        for i in placeholders:
            assert before[f"checkpoints/no_model_iter_{i}.json"] == _files(root)[f"checkpoints/no_model_iter_{i}.json"]
        assert (ck / "notes.txt").read_text() == "not ours"
        if best is not None:
            assert repo.best().iteration == best.iteration
            assert (ck / f"model_iter_{best.iteration}.zip").read_bytes() == b"fake-zip-%d" % best.iteration
        latest = repo.latest()
        assert latest is not None and latest.iteration == iterations[-1]
        assert repo.verify() == []


def test_keep_best_k_on_another_metric_does_not_unprotect_the_recorded_best(repo_dir):
    repo = CheckpointRepository(repo_dir)
    result = repo.prune(keep_best_k=1, monitor="risk.max_drawdown", mode="min")
    # best by drawdown: 6; the recorded selection's best (mean_reward, max): 7; latest: 9
    assert list(result.plan.remove) == [0, 1, 3, 4, 8]
    assert result.plan.protected[6] == "best" and result.plan.protected[7] == "best"
    assert repo.best().iteration == BEST
    best_zip = (repo_dir / "best_model.zip").read_bytes()
    assert best_zip == (repo_dir / "checkpoints" / f"model_iter_{BEST}.zip").read_bytes()
    summary = json.loads((repo_dir / "training_summary.json").read_text())
    assert (summary["monitor"], summary["mode"], summary["best"]["iteration"]) == ("mean_reward", "max", BEST)


def test_a_record_naming_a_strangers_file_does_not_get_it_deleted(repo_dir):
    ck = repo_dir / "checkpoints"
    (ck / "notes.txt").write_text("my notes")
    record = json.loads((ck / "metrics_iter_4.json").read_text())
    record["artifacts"]["vecnormalize"] = {
        "file": "notes.txt",
        "sha256": hashlib.sha256(b"my notes").hexdigest(),
        "size": 8,
    }
    (ck / "metrics_iter_4.json").write_text(json.dumps(record))  # hand-edited
    result = CheckpointRepository(repo_dir).prune(KeepNothing())
    assert 4 in result.plan.remove and "checkpoints/notes.txt" not in result.removed
    assert (ck / "notes.txt").read_text() == "my notes"
    assert not (ck / "model_iter_4.zip").exists()
