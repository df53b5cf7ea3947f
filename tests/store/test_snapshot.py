"""The in-memory snapshot: what ModelSnapshot writes loads and predicts like ``model.save`` at that time."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO, SAC

from sb3_iter_ckpt import CheckpointRepository, IterationCheckpointCallback
from sb3_iter_ckpt.capture.snapshot import ModelSnapshot, clone_state, copy_replay_buffer


def _model(algo):
    if algo is PPO:
        return PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    if algo is SAC:
        return SAC("MlpPolicy", "Pendulum-v1", buffer_size=500, learning_starts=32, batch_size=16, seed=0, device="cpu")
    return DQN("MlpPolicy", "CartPole-v1", buffer_size=500, learning_starts=32, batch_size=16, seed=0, device="cpu")


def _assert_same_model(a, b, obs):
    assert a.get_parameters().keys() == b.get_parameters().keys()
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.num_timesteps == b.num_timesteps
    assert a._n_updates == b._n_updates
    assert a.observation_space == b.observation_space and a.action_space == b.action_space
    np.testing.assert_array_equal(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("algo", [PPO, SAC, DQN])
def test_snapshot_writes_what_model_save_wrote_at_capture_time(algo):
    model = _model(algo)
    model.learn(96)
    saved = io.BytesIO()
    model.save(saved)
    snap = ModelSnapshot.capture(model)
    assert snap.raw is None, "the cheap path, not the fallback"
    assert snap.num_timesteps == model.num_timesteps
    model.learn(96, reset_num_timesteps=False)  # training goes on and changes everything
    zs, zr = zipfile.ZipFile(io.BytesIO(snap.to_bytes())), zipfile.ZipFile(saved)
    assert zs.namelist() == zr.namelist()
    for name in zr.namelist():
        if name.endswith(".pth"):
            a = torch.load(io.BytesIO(zs.read(name)), weights_only=False)
            b = torch.load(io.BytesIO(zr.read(name)), weights_only=False)
            assert repr(a) == repr(b), name
    for name in ("_stable_baselines3_version", "system_info.txt"):
        assert zs.read(name) == zr.read(name), name
    ds, dr = json.loads(zs.read("data")), json.loads(zr.read("data"))
    assert ds.keys() == dr.keys()
    for key in ("num_timesteps", "_n_updates", "_current_progress_remaining", "_episode_num"):
        assert ds[key] == dr[key], key
    obs = model.observation_space.sample()
    from_snap = algo.load(io.BytesIO(snap.to_bytes()), device="cpu")
    from_save = algo.load(io.BytesIO(saved.getvalue()), device="cpu")
    _assert_same_model(from_snap, from_save, obs)
    assert from_snap.num_timesteps == 96 and model.num_timesteps == 192


def test_snapshot_keeps_sac_entropy_coefficient_and_optimizer_state():
    model = _model(SAC)
    model.learn(64)
    snap = ModelSnapshot.capture(model)
    before = model.log_ent_coef.detach().clone()
    opt_before = {k: v.clone() for k, v in model.actor.optimizer.state_dict()["state"][0].items()}
    model.learn(64, reset_num_timesteps=False)
    assert not torch.equal(model.log_ent_coef.detach(), before)
    loaded = SAC.load(io.BytesIO(snap.to_bytes()), device="cpu")
    assert torch.equal(loaded.log_ent_coef.detach(), before)
    assert loaded.log_ent_coef.requires_grad
    opt_loaded = loaded.actor.optimizer.state_dict()["state"][0]
    for k, v in opt_before.items():
        assert torch.equal(opt_loaded[k], v), k


def test_clone_state_keeps_shared_tensors_shared_and_copies():
    t = torch.arange(4.0)
    state = {"a": t, "b": t, "nested": [{"c": t}]}
    out = clone_state(state)
    assert out["a"] is out["b"] is out["nested"][0]["c"]
    t += 1
    assert out["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_an_algorithm_that_overrides_save_falls_back_to_its_bytes():
    class Custom(PPO):
        def save(self, path, exclude=None, include=None):
            super().save(path, exclude=exclude, include=include)

    model = Custom("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, device="cpu")
    snap = ModelSnapshot.capture(model)
    assert snap.raw is not None and snap.to_bytes() == snap.raw
    assert snap.nbytes == len(snap.raw)


def test_callback_commit_of_a_snapshot_round_trips_through_repo_load(repo_root, eval_env):
    repo = CheckpointRepository(repo_root)
    model = _model(PPO)
    seen = {}

    def evaluator(m, env):
        # remember what model.save would have written at each evaluation
        buf = io.BytesIO()
        m.save(buf)
        seen[m.num_timesteps] = buf.getvalue()
        return {"mean_reward": float(-abs(m.num_timesteps - 64))}  # best at 64 timesteps

    cb = IterationCheckpointCallback(repo, evaluator=evaluator, eval_env=eval_env, eval_freq=32)
    model.learn(160, callback=cb)
    ck = repo.get(0)
    assert ck.timesteps == 64
    loaded = repo.load(0, device="cpu")
    reference = PPO.load(io.BytesIO(seen[64]), device="cpu")
    obs = np.stack([eval_env.observation_space.sample() for _ in range(8)])
    _assert_same_model(loaded, reference, obs)


def test_copy_replay_buffer_is_independent_and_pickles_like_the_original():
    model = _model(SAC)
    model.learn(64)
    rb = model.replay_buffer
    copied = copy_replay_buffer(rb)
    ref = pickle.loads(pickle.dumps(rb))
    model.learn(64, reset_num_timesteps=False)
    assert rb.pos != copied.pos
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(copied, name), getattr(ref, name))
    assert copied.pos == ref.pos and copied.full == ref.full


def test_a_large_torch_entry_is_streamed_into_the_same_zip(monkeypatch):
    from sb3_iter_ckpt.capture import snapshot

    model = _model(PPO)
    model.learn(32)
    whole = zipfile.ZipFile(io.BytesIO(ModelSnapshot.capture(model).to_bytes()))
    snap = ModelSnapshot.capture(model)
    streamed = io.BytesIO()
    monkeypatch.setattr(snapshot, "_WHOLE_ENTRY_BYTES", -1)  # every entry counts as large
    written = []
    real_open = zipfile.ZipFile.open

    def spy_open(self, name, mode="r", **kw):
        if mode == "w" and isinstance(name, str):  # writestr passes a ZipInfo
            written.append((name, kw.get("force_zip64")))
        return real_open(self, name, mode, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    snap.write(streamed)
    monkeypatch.undo()
    assert [n for n, _ in written if n.endswith(".pth")] == [n for n in whole.namelist() if n.endswith(".pth")]
    assert all(zip64 for n, zip64 in written if n.endswith(".pth")), "streamed entries as SB3 writes them"
    zs = zipfile.ZipFile(io.BytesIO(streamed.getvalue()))
    assert zs.namelist() == whole.namelist()
    for name in whole.namelist():
        if name.endswith(".pth"):
            assert zs.read(name) == whole.read(name), name
    _assert_same_model(PPO.load(io.BytesIO(streamed.getvalue()), device="cpu"), model, model.observation_space.sample())
