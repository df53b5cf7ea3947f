"""Which model is kept: the best of several finite scores inside a window, the best across iterations
(ties to the later iteration), and what a warm-started window really starts from.

Evaluators here return a known sequence of scores, so the expected winner is fixed in advance, and
they record the policy's parameters at each evaluation so the committed model can be matched to the
snapshot it must be.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from stable_baselines3 import PPO

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.common import record as rec


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Scripted:
    """An evaluator returning ``scores`` in order and keeping the parameters it evaluated."""

    def __init__(self, scores: list[float], key: str = "mean_reward") -> None:
        self.scores, self.key = list(scores), key
        self.seen: list[dict[str, torch.Tensor]] = []
        self.timesteps: list[int] = []

    def __call__(self, model, env):
        self.seen.append(_params(model))
        self.timesteps.append(model.num_timesteps)
        return {self.key: self.scores[len(self.seen) - 1]}


# Five evaluations (every 32 of 160 timesteps, one PPO update between each). The best appears once
# early, is tied later (the earlier snapshot stays: "beats" is strict in a window), and neither the
# first nor the last evaluation is the best.
WINDOW_CASES = {
    "max": ([3.0, 9.0, 1.0, 9.0, 7.0], 1),
    "min": ([4.0, 6.0, 2.0, 8.0, 2.0], 2),
}


@pytest.mark.parametrize("mode", list(WINDOW_CASES))
def test_the_window_keeps_its_best_of_several_finite_scores(repo_root, make_ppo, mode):
    scores, best = WINDOW_CASES[mode]
    evaluator = Scripted(scores, key="score")
    model = make_ppo()
    cb = IterationCheckpointCallback(repo_root, evaluator=evaluator, eval_freq=32, monitor="score", mode=mode)
    model.learn(160, callback=cb)
    assert evaluator.timesteps == [32, 64, 96, 128, 160]
    assert not _same(evaluator.seen[best], evaluator.seen[-1]), "training changed the policy between evaluations"
    repo = CheckpointRepository(repo_root)
    ck = repo.get(0)
    assert ck.metrics == {"score": scores[best]}
    assert ck.timesteps == evaluator.timesteps[best]
    assert ck.record["selection"] == {"monitor": "score", "mode": mode, "min_score": None, "score": scores[best]}
    # the committed model is the snapshot taken at that evaluation, not the final or the tied later one
    committed = _params(repo.load(0, device="cpu"))
    assert _same(committed, evaluator.seen[best])
    assert not _same(committed, evaluator.seen[3])


@pytest.mark.parametrize("mode", ["max", "min"])
def test_min_score_and_nan_do_not_hide_a_later_better_score(repo_root, make_ppo, mode):
    sign = 1.0 if mode == "max" else -1.0
    nan = float("nan")
    # 1.0 and 0.5 fail min_score=2 (-2 in min mode); 2.0 reaches it exactly; 7.0 is the best
    scores = [sign * 2.0, nan, sign * 1.0, sign * 7.0, nan, sign * 0.5]
    evaluator = Scripted(scores, key="score")
    cb = IterationCheckpointCallback(
        repo_root, evaluator=evaluator, eval_freq=32, monitor="score", mode=mode, min_score=sign * 2.0
    )
    make_ppo().learn(192, callback=cb)
    ck = CheckpointRepository(repo_root).get(0)
    assert ck.metrics == {"score": sign * 7.0} and ck.timesteps == 128
    assert ck.record["n_evaluations"] == 6
    assert ck.record["n_nan_evaluations"] == 2 and ck.record["n_below_min_score"] == 2


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_score_exactly_at_min_score_is_accepted(repo_root, make_ppo, mode):
    """``min_score`` is a level to reach (``>=`` for max, ``<=`` for min), as documented."""
    sign = 1.0 if mode == "max" else -1.0
    evaluator = Scripted([sign * 2.0, sign * 1.0], key="score")
    cb = IterationCheckpointCallback(
        repo_root, evaluator=evaluator, eval_freq=32, monitor="score", mode=mode, min_score=sign * 2.0
    )
    make_ppo().learn(64, callback=cb)
    ck = CheckpointRepository(repo_root).get(0)
    assert ck.has_model and ck.metrics == {"score": sign * 2.0} and ck.record["n_below_min_score"] == 1


# -- across iterations: the repository's best and its tie rule ----------------------------------------------
@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    """Four real (untrained) PPO zips that differ, so each iteration's model is recognisable."""
    out = []
    for seed in range(4):
        path = tmp_path_factory.mktemp("m") / "m.zip"
        PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=seed, device="cpu").save(path)
        out.append(path.read_bytes())
    assert len({hashlib.sha256(b).digest() for b in out}) == 4
    return out


TIE_CASES = {
    # mode: scores of iterations 0..3; 1 and 2 tie for the best, 2 (the later) must win
    "max": [5.0, 7.0, 7.0, 6.0],
    "min": [3.0, 1.0, 1.0, 2.0],
}


@pytest.mark.parametrize("mode", list(TIE_CASES))
def test_best_ties_go_to_the_later_iteration(repo_root, model_bytes, mode):
    repo = CheckpointRepository(repo_root)
    for i, score in enumerate(TIE_CASES[mode]):
        repo.commit(
            i, metrics={"loss": score}, model=model_bytes[i], extra={"selection": {"monitor": "loss", "mode": mode}}
        )
    best = repo.best()
    assert best is not None and best.iteration == 2, "ties go to the later iteration (documented)"
    assert repo.best(monitor="loss", mode=mode).iteration == 2
    # the opposite mode picks the other end, with the same tie rule
    other = "min" if mode == "max" else "max"
    assert repo.best(monitor="loss", mode=other).iteration == 0
    # what the files say agrees: best_model.zip holds iteration 2's model, and the summary names it
    repo.refresh()
    assert (repo_root / rec.BEST_MODEL).read_bytes() == model_bytes[2]
    assert repo.training_summary()["best"]["iteration"] == 2
    assert repo.analyze(top_k=2)["best"][0]["iteration"] == 2


def test_best_tie_rule_holds_whatever_the_commit_order(repo_root, model_bytes):
    repo = CheckpointRepository(repo_root)
    for i in (3, 1, 2, 0):  # committed out of order (parallel workers)
        repo.commit(i, metrics={"mean_reward": 4.0 if i in (1, 3) else 2.0}, model=model_bytes[i])
    assert repo.best().iteration == 3
    assert repo.best(mode="min").iteration == 2


# -- warm start: the window starts from its parent's committed model ------------------------------------------
def test_warm_started_window_starts_from_the_parents_committed_model(prices, repo_root, make_runner, monkeypatch):
    """Observed through a real run: the parameters each window's ``learn`` starts from."""
    starts: dict[int, dict[str, torch.Tensor]] = {}
    real_learn = PPO.learn

    def learn(self, *args, **kwargs):
        callback = kwargs.get("callback")
        starts[callback.iteration] = _params(self)
        return real_learn(self, *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", learn)
    # evaluations at 128 and 256 timesteps, after PPO updates (every 64): each committed model has
    # trained away from the parameters its window started from, so parents are told apart
    runner = make_runner(prices, repo_root, warm_start=True, total_timesteps=256, eval_freq=128)
    result = runner.run(max_iterations=3)
    repo = CheckpointRepository(repo_root)
    lineage = {c.iteration: c.record["metadata"]["lineage"]["warm_start_from"] for c in result.checkpoints}
    assert sorted(starts) == [0, 1, 2]
    assert lineage[0] is None
    warm = [i for i in (1, 2) if lineage[i] is not None]
    assert warm, f"no window was warm-started: {lineage}"
    for i in lineage:
        assert not _same(starts[i], _params(repo.load(i, device="cpu"))), f"window {i} kept its start"
    for i in warm:
        parent = _params(repo.load(lineage[i], device="cpu"))
        assert _same(starts[i], parent), f"window {i} did not start from iteration {lineage[i]}'s committed model"
