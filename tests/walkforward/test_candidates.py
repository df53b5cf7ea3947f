"""Candidates per window: several models trained on every window, the best on validation copied into the root.

Real PPO and A2C on the built-in trading env at tiny budgets, real files, a real process pool.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sb3_iter_ckpt import CheckpointRepository
from sb3_iter_ckpt.common.candidates import Candidate, candidate_scores, check_candidates, choose, make_candidates
from sb3_iter_ckpt.common.options import RunOptions
from sb3_iter_ckpt.common.selection import SelectionRule
from sb3_iter_ckpt.errors import CheckpointError, ConfigMismatchError
from sb3_iter_ckpt.forward import StitchedForward
from sb3_iter_ckpt.runner.ensemble import publish_choice
from sb3_iter_ckpt.splitter import WalkForwardSplitter
from sb3_iter_ckpt.stats.overfitting import deflated_sharpe_ratio

PPO_KW = dict(n_steps=64, batch_size=64, n_epochs=1)
A2C_KW = dict(n_steps=16)
TWO = (Candidate("ppo-s0", "ppo", 7, PPO_KW), Candidate("a2c-s1", "a2c", 8, A2C_KW))
SPLIT = WalkForwardSplitter(150, 60, test_size=60)


def _run(make_runner, prices, root, candidates=TWO, **kw):
    return make_runner(prices, root, splitter=SPLIT, candidates=candidates, **kw)


# -- pure parts -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "a/b", "..", ".", ".hidden", "-x", "a b", "a\\b", "x" * 65, "é", 3, None])
def test_a_candidate_name_that_is_no_folder_name_is_refused(name):
    with pytest.raises(CheckpointError, match="not a valid folder name"):
        Candidate(name)


def test_two_candidates_with_one_name_are_refused_even_by_case():
    with pytest.raises(CheckpointError, match="two candidates are named"):
        check_candidates([Candidate("ppo-s0"), Candidate("a2c-s0", "a2c"), Candidate("PPO-s0")])
    with pytest.raises(CheckpointError, match="two candidates are named"):
        RunOptions(100, candidates=(Candidate("x"), Candidate("x", "a2c")))
    with pytest.raises(CheckpointError, match="two candidates"):
        make_candidates(["ppo", "PPO"])


def test_make_candidates_is_the_product_of_algorithms_and_seeds():
    cands = make_candidates(["ppo", "a2c"], n_seeds=2, seed=10, algo_kwargs=lambda a: {"n_steps": len(a)})
    assert [(c.name, c.algo, c.seed) for c in cands] == [
        ("ppo-s0", "ppo", 10),
        ("ppo-s1", "ppo", 11),
        ("a2c-s0", "a2c", 10),
        ("a2c-s1", "a2c", 11),
    ]
    assert cands[0].algo_kwargs == {"n_steps": 3}
    assert make_candidates(["my_pkg.algos.MyPPO"])[0].name == "myppo-s0"
    for bad in ([], ["ppo", ""]):
        with pytest.raises(CheckpointError, match="at least one algorithm"):
            make_candidates(bad)
    with pytest.raises(CheckpointError, match="seeds"):
        make_candidates(["ppo"], n_seeds=0)


def test_choose_takes_the_best_score_by_mode_ties_to_the_first_and_skips_placeholders():
    high, low = SelectionRule("s", "max"), SelectionRule("s", "min")
    assert choose({"a": 1.0, "b": 3.0, "c": 2.0}, high) == "b"
    assert choose({"a": 1.0, "b": 3.0, "c": 2.0}, low) == "a"
    assert choose({"a": None, "b": -5.0}, high) == "b"  # a placeholder never wins
    assert choose({"a": 2.0, "b": 2.0}, high) == "a" and choose({"b": 2.0, "a": 2.0}, high) == "b"
    assert choose({"a": None, "b": None}, high) is None and choose({}, high) is None


def test_candidates_and_make_model_are_refused_and_a_run_without_them_keeps_its_fingerprint():
    with pytest.raises(CheckpointError, match="make_model"):
        RunOptions(100, candidates=TWO, make_model=lambda env, seed: None)
    assert "candidates" not in RunOptions(100).to_config()
    config = RunOptions(100, candidates=TWO).to_config()["candidates"]
    assert [c["name"] for c in config] == ["ppo-s0", "a2c-s1"] and config[1]["algo_kwargs"] == A2C_KW
    opts = RunOptions(100, algo_kwargs={"n_steps": 5}, candidates=(Candidate("x", "a2c", 3),))
    member = opts.for_candidate(opts.candidates[0])
    assert (member.algo, member.seed, member.algo_kwargs, member.candidates) == ("a2c", 3, {"n_steps": 5}, ())


def test_candidate_scores_ignores_malformed_fields():
    class Ck:
        def __init__(self, i, record):
            self.iteration, self.record = i, record

    cks = [
        Ck(0, {"candidate": {"scores": {"a": 1.5, "b": None, "../x": 2.0, "c": float("nan")}}}),
        Ck(1, {"candidate": "not a dict"}),
        Ck(2, {}),
        Ck(3, {"candidate": {"scores": {"a": True}}}),
    ]
    assert candidate_scores(cks) == {"a": {0: 1.5, 3: None}, "b": {0: None}, "c": {0: None}}


# -- a real run ---------------------------------------------------------------------------------------------------
def test_each_window_keeps_the_copy_of_the_candidate_with_the_best_selection_score(candidates_run):
    root, runner, result = candidates_run  # the conftest's run: these candidates on SPLIT
    assert runner.options.candidates == TWO and runner.splitter == SPLIT
    repo = CheckpointRepository(root)
    members = {c.name: CheckpointRepository(root / "candidates" / c.name) for c in TWO}
    assert result.trained == [0, 1, 2] and repo.iterations() == [0, 1, 2]
    assert sorted(result.candidates) == ["a2c-s1", "ppo-s0"]
    assert {ck.record["algorithm"].rsplit(".", 1)[-1] for ck in members["a2c-s1"].list()} == {"A2C"}
    chosen_names = set()
    for i in repo.iterations():
        ck = repo.get(i)
        scores = {name: m.get(i).score("validation.sharpe") for name, m in members.items()}
        best = max(scores, key=lambda n: (scores[n], n == "ppo-s0"))  # ties: the first candidate (ppo-s0)
        entry = ck.record["candidate"]
        assert entry["name"] == best and entry["scores"] == pytest.approx(scores)
        assert entry["score"] == scores[best] == ck.score("validation.sharpe")
        assert entry["record"] == f"candidates/{best}/checkpoints/metrics_iter_{i}.json"
        source = members[best].get(i)
        assert ck.sha256 == source.sha256 and ck.metrics == source.metrics
        assert ck.record["metadata"]["fingerprint"] == runner.fingerprint()
        mine, theirs = Path(ck.model_path), Path(source.model_path)
        assert mine.read_bytes() == theirs.read_bytes() and mine.stat().st_ino != theirs.stat().st_ino
        chosen_names.add(best)
    assert chosen_names == {"ppo-s0", "a2c-s1"}  # these seeds choose each candidate at least once
    assert repo.verify() == [] and all(m.verify() == [] for m in members.values())
    assert repo.load_best() is not None


def test_the_root_trades_with_the_chosen_model_and_the_statistics_use_every_candidate(candidates_run):
    root, runner, result = candidates_run
    repo = CheckpointRepository(root)
    members = {c.name: CheckpointRepository(root / "candidates" / c.name) for c in TWO}
    for f in repo.forwards():
        chosen = repo.get(f.iteration).record["candidate"]["name"]
        theirs = members[chosen].forward(f.iteration)
        assert f.candidate == chosen and theirs.candidate == chosen
        assert f.returns == theirs.returns and f.rows == theirs.rows
    curve = StitchedForward.from_csv_bytes((root / "forward_returns.csv").read_bytes(), 252)
    by_iteration = {i: repo.get(i).record["candidate"]["name"] for i in repo.iterations()}
    assert list(curve.candidates) == [by_iteration[i] for i in curve.iterations]
    assert curve.rows == tuple(range(curve.rows[0], curve.rows[0] + len(curve.rows)))  # contiguous
    report = result.forward
    assert report is not None and report["n_trials"] == 2
    # DSR: trials = the candidates, variance (ddof=1) of their per-period forward Sharpe ratios, by hand
    sharpes = []
    for m in members.values():
        r = np.concatenate([f.returns for f in m.forwards()])
        sharpes.append(r.mean() / r.std(ddof=1))
    assert report["candidate_sharpes"] == pytest.approx(dict(zip(members, sharpes, strict=True)))
    variance = float(np.var(sharpes, ddof=1))
    assert report["trials_variance"] == pytest.approx(variance)
    assert report["deflated_sharpe"] == pytest.approx(deflated_sharpe_ratio(curve.returns, 2, variance))
    assert report["pbo"] is not None and 0.0 <= report["pbo"]["pbo"] <= 1.0
    assert report["pbo"]["n_strategies"] == 2
    assert repo.forward_report() == report  # read back from the files alone
    # analyze() and checkpoint_summary.json give the same statistics (the candidates' trials and PBO)
    assert repo.analyze()["forward"] == report
    summary = json.loads((root / "checkpoint_summary.json").read_text())
    assert summary["analysis"]["forward"]["n_trials"] == 2 and summary["analysis"]["forward"]["pbo"] is not None
    assert [it["candidate"] for it in report["iterations"]] == [by_iteration[i] for i in (0, 1, 2)]


def test_a_second_run_changes_nothing_and_a_lost_root_iteration_is_copied_again(
    candidates_run, tmp_path, make_runner, prices
):
    root = tmp_path / "exp"
    shutil.copytree(candidates_run[0], root)  # the shared run stays as trained
    runner = _run(make_runner, prices, root, eval_freq=32)
    before = {p.name: p.read_bytes() for p in (root / "checkpoints").iterdir()}
    curve = (root / "forward_returns.csv").read_bytes()
    again = runner.run()
    assert again.trained == [] and again.skipped == [0, 1, 2]
    assert {p.name: p.read_bytes() for p in (root / "checkpoints").iterdir()} == before
    assert (root / "forward_returns.csv").read_bytes() == curve
    # A run killed after the candidates committed window 2 but before the root got its copy.
    repo = CheckpointRepository(root)
    for name in ("metrics_iter_2.json", "forward_iter_2.json", "model_iter_2.zip"):
        (root / "checkpoints" / name).unlink()
    assert repo.iterations() == [0, 1]
    resumed = runner.run()
    assert resumed.trained == [2] and all(r.trained == [] for r in resumed.candidates.values())
    assert (root / "checkpoints" / "model_iter_2.zip").read_bytes() == before["model_iter_2.zip"]
    assert (root / "checkpoints" / "forward_iter_2.json").read_bytes() == before["forward_iter_2.json"]
    assert (root / "forward_returns.csv").read_bytes() == curve


def test_adding_a_candidate_is_a_configuration_change(candidates_run, make_runner, prices):
    root, _, _ = candidates_run
    three = (*TWO, Candidate("ppo-s2", "ppo", 9, PPO_KW))
    with pytest.raises(ConfigMismatchError, match="candidates"):
        _run(make_runner, prices, root, candidates=three).run()


def test_writing_to_the_roots_model_never_reaches_the_candidates_file(candidates_run):
    # on the run itself, not a copy (a copy would separate linked files): the bytes are put back below
    root, _, _ = candidates_run
    ck = CheckpointRepository(root).get(0)
    source = root / ck.record["candidate"]["record"].replace("metrics_iter_0.json", "model_iter_0.zip")
    kept = source.read_bytes()
    with open(ck.model_path, "r+b") as f:  # an in-place write, as a tool writing the root's file would
        f.write(b"XXXX")
    try:
        assert source.read_bytes() == kept
    finally:
        with open(ck.model_path, "r+b") as f:
            f.write(kept[:4])


def test_no_candidate_with_a_model_gives_a_root_placeholder_that_stays_flat(prices, tmp_path, make_runner):
    root = tmp_path / "exp"
    result = _run(make_runner, prices, root, min_score=1e9).run(max_iterations=1)
    ck = CheckpointRepository(root).get(0)
    assert not ck.has_model and ck.reason.startswith("no candidate kept a model (ppo-s0: ")
    assert ck.record["candidate"]["name"] is None and set(ck.record["candidate"]["scores"]) == {"ppo-s0", "a2c-s1"}
    f = CheckpointRepository(root).forward(0)
    assert f.placeholder and f.candidate is None and set(f.returns) == {0.0}
    assert result.forward is not None and result.forward["iterations"][0]["placeholder"] is True


def test_publish_choice_picks_by_mode_skips_placeholders_and_refuses_a_missing_window(tmp_path, make_ppo):
    """The choice on hand-made candidate repositories (real SB3 zips, real commits): min mode, a placeholder."""
    model = make_ppo()
    data = tmp_path / "m.zip"
    model.save(data)
    root = CheckpointRepository(tmp_path / "root")
    members = {n: root.candidate(n) for n in ("a", "b", "c")}
    members["a"].commit(0, metrics={"loss": 0.5}, model=data.read_bytes())
    members["b"].commit(0, metrics={"loss": 0.2}, model=data.read_bytes())
    members["c"].commit(0, metrics={"loss": 0.1}, reason="min_score not met")
    ck = publish_choice(root, 0, members, SelectionRule("loss", "min"), "fp")
    assert ck.record["candidate"]["name"] == "b" and ck.record["candidate"]["scores"]["c"] is None
    assert ck.metrics == {"loss": 0.2} and root.load(0).num_timesteps == model.num_timesteps
    members["a"].commit(1, metrics={"loss": 0.5}, model=data.read_bytes())
    with pytest.raises(CheckpointError, match=r"window 1 is not committed by candidate\(s\) \['b', 'c'\]"):
        publish_choice(root, 1, members, SelectionRule("loss", "min"), "fp")
    assert not root.has(1)
    with pytest.raises(CheckpointError, match="not a valid folder name"):
        root.candidate("../escape")
    # A candidate's model pruned before its copy: refused, not a silently different choice.
    from sb3_iter_ckpt.retention import KeepLastN

    for name in ("b", "c"):
        members[name].commit(1, metrics={"loss": 0.5}, model=data.read_bytes())
    members["b"].commit(2, metrics={"loss": 0.9}, model=data.read_bytes())
    members["b"].prune(KeepLastN(1), monitor="loss", mode="min")
    assert members["b"].get(1).has_model is False
    with pytest.raises(CheckpointError, match=r"candidate\(s\) \['b'\] was pruned before it was copied"):
        publish_choice(root, 1, members, SelectionRule("loss", "min"), "fp")
    assert not root.has(1)


def test_a_process_pool_trains_the_candidates_in_workers_and_gives_the_same_result(
    candidates_run, tmp_path, prices, tiny_algo, pool
):
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    root, _, _ = candidates_run
    other = tmp_path / "pool"
    runner = WalkForwardRunner(
        prices, SPLIT, other, 128, algo_kwargs=tiny_algo, eval_freq=32, progress=False, seed=7, candidates=TWO,
        executor=pool,
    )  # fmt: skip
    result = runner.run()
    assert result.trained == [0, 1, 2]
    pids = {name: {o["pid"] for o in r.outcomes.values()} for name, r in result.candidates.items()}
    assert all(os.getpid() not in p for p in pids.values())
    assert (other / "forward_returns.csv").read_bytes() == (root / "forward_returns.csv").read_bytes()
    for i in (0, 1, 2):
        mine, theirs = (json.loads((r / "checkpoints" / f"metrics_iter_{i}.json").read_text()) for r in (other, root))
        assert mine["metrics"] == theirs["metrics"]
        # the same choice, scores and forward results; model hashes differ only by the zips' timestamps
        forwards = [{n: m["forward_sha256"] for n, m in r["candidate"].pop("members").items()} for r in (mine, theirs)]
        assert mine["candidate"] == theirs["candidate"] and forwards[0] == forwards[1]


def test_the_candidates_of_one_window_are_submitted_together(prices, tmp_path, make_runner):
    """With two workers, window 0 of both candidates goes out before any window 1 (they train side by side)."""
    from sb3_iter_ckpt.runner.executors import SequentialExecutor

    order = []

    class TwoAtOnce(SequentialExecutor):
        workers = 2

        def submit(self, spec):
            order.append((spec.candidate, spec.iteration))
            return super().submit(spec)

    _run(make_runner, prices, tmp_path / "exp", executor=TwoAtOnce()).run(max_iterations=2)
    assert order[:2] == [("ppo-s0", 0), ("a2c-s1", 0)] and sorted(order[2:]) == [("a2c-s1", 1), ("ppo-s0", 1)]


def _choice(ck) -> dict:
    """A root record's choice across two runs: the model hashes it ties differ only by the zips' timestamps."""
    entry = dict(ck.record["candidate"])
    entry["members"] = {n: m["forward_sha256"] for n, m in entry["members"].items()}
    return entry


def test_retention_prunes_the_root_and_the_candidates_after_every_copy_and_forward_result(
    prices, tmp_path, make_runner
):
    from sb3_iter_ckpt.retention import KeepLastN, is_pruned

    root, plain = tmp_path / "exp", tmp_path / "plain"
    _run(make_runner, prices, root, retention=KeepLastN(1)).run()
    _run(make_runner, prices, plain).run()
    repo = CheckpointRepository(root)
    # The same choices and forward results as without retention: nothing was pruned before it was copied
    # and traded (a candidate pruned too early would leave the root a placeholder for that window).
    choices = [_choice(ck) for ck in repo.list()]
    assert choices == [_choice(ck) for ck in CheckpointRepository(plain).list()]
    assert all(c["name"] is not None for c in choices)
    assert [(f.candidate, f.returns) for f in repo.forwards()] == [
        (f.candidate, f.returns) for f in CheckpointRepository(plain).forwards()
    ]
    for r in (repo, *(repo.candidate(c.name) for c in TWO)):
        kept = [ck.iteration for ck in r.list() if ck.has_model and not is_pruned(ck)]
        best = r.best()
        assert set(kept) <= {2, best.iteration if best else 2}, (r.root, kept)
        assert any(is_pruned(ck) for ck in r.list()), r.root
        assert r.verify() == []


def test_two_candidates_with_identical_model_bytes_give_the_root_the_chosen_ones_forward_result(tmp_path):
    """The root's forward result is found by the model's sha256; when two candidates saved the same bytes, it
    is the one the record names (the chosen one), not the first in the run's order."""
    import dataclasses

    from sb3_iter_ckpt.data import synthetic_prices
    from sb3_iter_ckpt.forward import evaluate_forward
    from sb3_iter_ckpt.splitter import Window

    class Always:
        def predict(self, obs, deterministic=True):
            return [2], None

    prices = synthetic_prices(300, seed=1)
    window = Window(0, 0, 150, 150, 200, test_start=200, test_stop=300)
    traded = evaluate_forward(Always(), prices, window, iteration=0)
    root = CheckpointRepository(tmp_path / "root")
    members = {n: root.candidate(n) for n in ("a", "b")}
    for name, loss in (("a", 0.5), ("b", 0.2)):
        members[name].commit(0, metrics={"loss": loss}, model=b"the same model bytes")
        members[name].commit_forward(dataclasses.replace(traded, candidate=name))
    ck = publish_choice(root, 0, members, SelectionRule("loss", "min"), "fp")
    assert ck.record["candidate"]["name"] == "b"
    assert root.forward(0).candidate == "b"
