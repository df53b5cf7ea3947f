"""Bytes of a committed iteration -> a verified SB3 model, VecNormalize statistics, a replay buffer.

Nothing is unpickled before its bytes match the record's sha256 and size (and, with a key, the
record's signature verifies). The algorithm class comes from the record, or for a seed's zip from
the policy's module named in its JSON ``data`` (read as JSON, nothing unpickled).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
import re
import zipfile
from typing import TYPE_CHECKING, Any, cast

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.signing import Signer
from sb3_iter_ckpt.errors import CheckpointError, CheckpointNotFound, IntegrityError, SignatureError
from sb3_iter_ckpt.store.storage import Storage

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

_CK = rec.CHECKPOINTS_DIR

#: What SB3's ``load`` raises on a corrupt zip. AssertionError: no "data" entry; AttributeError and
#: TypeError: wrong JSON types in "data", or a zip of another algorithm than the recorded one.
_LOAD_ERRORS = (
    zipfile.BadZipFile,
    KeyError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    RuntimeError,
    AssertionError,
    AttributeError,
    TypeError,
)


def read_verified(storage: Storage, ck: Checkpoint, kind: str, verify: bool, signer: Signer | None) -> bytes:
    """The bytes of ``ck``'s ``kind`` artifact, checked against the record (and its signature) when ``verify``."""
    art = ck.artifacts.get(kind)
    if art is None:
        raise CheckpointNotFound(f"iteration {ck.iteration} has no {kind} artifact")
    name = f"{_CK}/{art.file}"
    data = storage.read_bytes(name)
    if verify and ck.verified:
        if art.size is not None and len(data) != art.size:
            raise IntegrityError(
                f"{name} has {len(data)} bytes, the record says {art.size}: truncated or replaced; not loaded"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != art.sha256:
            raise IntegrityError(f"{name} does not match its recorded sha256 (tampered or corrupt); not loaded")
    if verify and signer is not None:
        try:
            signer.check(ck.record, ck.iteration)
        except SignatureError as exc:
            raise SignatureError(f"{exc}; not loaded") from None
    return data


def _algorithm_class(path: str) -> type[BaseAlgorithm]:
    from stable_baselines3.common.base_class import BaseAlgorithm

    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"cannot import the recorded algorithm class {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseAlgorithm)):
        raise CheckpointError(f"recorded algorithm {path!r} is not an SB3 algorithm class")
    return cls


def _guess_algorithm(data: bytes) -> str:
    """For legacy zips: the policy's module names the algorithm family (read as JSON, no unpickling)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            meta = json.loads(zf.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IntegrityError(f"not a valid SB3 model zip: {exc}") from exc
    module = str((meta.get("policy_class") or {}).get("__module__", ""))
    m = re.match(r"stable_baselines3\.(\w+)\.policies", module)
    family = m.group(1) if m and m.group(1) != "common" else "ppo"
    return f"stable_baselines3.{family.upper()}"


def model_class(ck: Checkpoint, data: bytes, algo: type[BaseAlgorithm] | str | None) -> type[BaseAlgorithm]:
    """The class to load ``ck``'s model with: ``algo``, else the recorded one, else guessed from ``data``."""
    algo_path = algo if algo is not None else ck.record.get("algorithm")
    if algo_path is None:
        algo_path = _guess_algorithm(data)
    if not isinstance(algo_path, (str, type)):
        raise CheckpointError(f"iteration {ck.iteration}: algorithm {algo_path!r} is not a class path; pass algo=")
    return _algorithm_class(algo_path) if isinstance(algo_path, str) else cast("type[BaseAlgorithm]", algo_path)


def load_model(cls: type[BaseAlgorithm], data: bytes, iteration: int, **kwargs: Any) -> BaseAlgorithm:
    """``cls.load`` of verified bytes; a corrupt zip is an ``IntegrityError``."""
    try:
        return cls.load(io.BytesIO(data), **kwargs)
    except _LOAD_ERRORS as exc:
        if isinstance(exc, ValueError) and "observation" in str(exc).lower():
            raise  # an env mismatch is the caller's to see as SB3 reports it
        raise IntegrityError(f"iteration {iteration}'s model cannot be loaded (corrupt zip?): {exc}") from exc


def inner_venv(env: Any) -> Any:
    """The VecEnv to wrap in saved statistics: ``env`` vectorized, without a VecNormalize of its own."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

    venv = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
    if isinstance(venv, VecNormalize):
        venv = venv.venv
    return venv


def vecnormalize(data: bytes, iteration: int, venv: Any) -> Any:
    """The pickled ``VecNormalize`` statistics around ``venv``, frozen for evaluation."""
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        vn = pickle.loads(data)
    except Exception as exc:
        raise IntegrityError(f"iteration {iteration}'s VecNormalize statistics cannot be read: {exc}") from exc
    if not isinstance(vn, VecNormalize):
        raise IntegrityError(
            f"iteration {iteration}'s VecNormalize file holds a {type(vn).__name__}, not VecNormalize "
            "statistics; restore the file or load without env="
        )
    vn.set_venv(venv)
    vn.training = False
    vn.norm_reward = False
    return vn


def load_checkpoint(
    storage: Storage,
    ck: Checkpoint,
    signer: Signer | None,
    *,
    env: Any,
    verify: bool,
    algo: type[BaseAlgorithm] | str | None,
    **kwargs: Any,
) -> BaseAlgorithm:
    """``ck``'s verified model as its SB3 class; given an ``env``, wrapped in ``ck``'s VecNormalize statistics."""
    if not ck.has_model:
        raise CheckpointNotFound(f"iteration {ck.iteration} is a placeholder ({ck.reason}): it has no model")
    data = read_verified(storage, ck, "model", verify, signer)
    cls = model_class(ck, data, algo)
    if env is not None and "vecnormalize" in ck.artifacts:
        stats = read_verified(storage, ck, "vecnormalize", verify, signer)
        env = vecnormalize(stats, ck.iteration, inner_venv(env))
    return load_model(cls, data, ck.iteration, env=env, **kwargs)
