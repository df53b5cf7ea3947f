"""A cheap in-memory snapshot of an SB3 model, serialized to the SB3 zip only when needed.

``model.save(io.BytesIO())`` at every new in-iteration best pays for the zip, ``torch.save`` of
every state dict and the cloudpickling of the model's attributes each time, although only the last
snapshot of an iteration is ever written. ``ModelSnapshot.capture`` instead copies what
``BaseAlgorithm.save`` would serialize at that moment:

- the state dicts of ``get_parameters()`` (policy, optimizers), tensors cloned;
- the torch variables of ``_get_torch_save_params()`` (e.g. SAC's ``log_ent_coef``), cloned;
- the model's other saved attributes (``num_timesteps``, ``_last_obs``, spaces with their RNG,
  ``ep_info_buffer``...), deep-copied.

``write(f)`` (or calling the snapshot) produces the zip ``model.save`` would have produced at
capture time, through SB3's own ``save_to_zip_file``; it touches no live object, so it may run in
a background thread. Anything unexpected at capture time falls back to the bytes of ``model.save``.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

import torch

__all__ = ["ModelSnapshot", "clone_state", "copy_replay_buffer"]


def _tensor_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device)


def clone_state(obj: Any, memo: dict[tuple[Any, ...], torch.Tensor] | None = None) -> Any:
    """Copy a (nested) state dict: tensors cloned (detached), containers rebuilt, the rest deep-copied.

    Tensors that are the same view of the same storage (a shared features extractor listed under
    several names) stay shared in the copy, as ``torch.save`` would have stored them once.
    """
    if memo is None:
        memo = {}
    if isinstance(obj, torch.Tensor):
        key = _tensor_key(obj)
        hit = memo.get(key)
        if hit is None:
            hit = obj.detach().clone()
            if isinstance(obj, torch.nn.Parameter):
                hit = torch.nn.Parameter(hit, requires_grad=obj.requires_grad)
            elif obj.requires_grad:  # e.g. SAC's log_ent_coef, saved as a leaf that requires grad
                hit.requires_grad_(True)
            memo[key] = hit
        return hit
    if isinstance(obj, dict):
        out = obj.copy()  # keeps the type (OrderedDict) and its _metadata attribute, if any
        for k, v in obj.items():
            out[k] = clone_state(v, memo)
        meta = getattr(obj, "_metadata", None)
        if meta is not None:
            out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [clone_state(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_state(v, memo) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return copy.deepcopy(obj)


def _nbytes(obj: Any, seen: set[int] | None = None) -> int:
    if seen is None:
        seen = set()
    if isinstance(obj, torch.Tensor):
        ptr = obj.untyped_storage().data_ptr()
        if ptr in seen:
            return 0
        seen.add(ptr)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, Mapping):
        return sum(_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v, seen) for v in obj)
    return 0


class ModelSnapshot:
    """What ``model.save`` would write now, held in memory; a ``Source`` for ``repository.commit``.

    :param data: The model's saved attributes (deep copies).
    :param params: ``get_parameters()`` with cloned tensors.
    :param pytorch_variables: Torch variables by name (cloned), or None.
    :param raw: The finished zip (the fallback path); when set, the other fields are unused.
    """

    __slots__ = ("data", "params", "pytorch_variables", "raw", "_zip")

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        pytorch_variables: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.data = data
        self.params = params
        self.pytorch_variables = pytorch_variables
        self.raw = raw
        self._zip: bytes | None = raw

    @classmethod
    def capture(cls, model: Any) -> ModelSnapshot:
        """Copy ``model``'s savable state now (same selection of attributes as ``BaseAlgorithm.save``)."""
        try:
            return cls._capture(model)
        except Exception:  # an exotic attribute that cannot be deep-copied: fall back to a real save
            buf = io.BytesIO()
            model.save(buf)
            return cls(raw=buf.getvalue())

    @classmethod
    def _capture(cls, model: Any) -> ModelSnapshot:
        # Mirrors stable_baselines3.common.base_class.BaseAlgorithm.save (SB3 2.x).
        from stable_baselines3.common.base_class import BaseAlgorithm

        if type(model).save is not BaseAlgorithm.save:
            raise TypeError("the algorithm overrides save(): take its bytes")
        data = model.__dict__.copy()
        exclude = set(model._excluded_save_params())
        state_dicts_names, torch_variable_names = model._get_torch_save_params()
        for name in list(state_dicts_names) + list(torch_variable_names or []):
            exclude.add(name.split(".")[0])
        for name in exclude:
            data.pop(name, None)
        data = copy.deepcopy(data)
        memo: dict[tuple[Any, ...], torch.Tensor] = {}
        pytorch_variables = None
        if torch_variable_names is not None:
            from stable_baselines3.common.save_util import recursive_getattr

            pytorch_variables = {
                name: clone_state(recursive_getattr(model, name), memo) for name in torch_variable_names
            }
        params = clone_state(model.get_parameters(), memo)
        return cls(data=data, params=params, pytorch_variables=pytorch_variables)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor storage held (or of the zip, on the fallback path)."""
        if self.raw is not None:
            return len(self.raw)
        return _nbytes(self.params) + _nbytes(self.pytorch_variables or {})

    @property
    def num_timesteps(self) -> int | None:
        return None if self.data is None else self.data.get("num_timesteps")

    def write(self, f: BinaryIO) -> None:
        """Write the SB3 zip to the binary file object ``f``."""
        if self._zip is not None:
            f.write(self._zip)
            return
        from stable_baselines3.common.save_util import save_to_zip_file

        save_to_zip_file(
            cast(io.BufferedIOBase, f), data=self.data, params=self.params, pytorch_variables=self.pytorch_variables
        )

    __call__ = write  # a writer ``Source`` for ``CheckpointRepository.commit`` / ``Storage.stage``

    def to_bytes(self) -> bytes:
        """The SB3 zip as bytes (built once, then kept)."""
        if self._zip is None:
            buf = io.BytesIO()
            self.write(buf)
            self._zip = buf.getvalue()
        return self._zip


def copy_replay_buffer(buffer: Any) -> Any:
    """A copy of an SB3 replay buffer as of now, safe to pickle in another thread while training goes on.

    Every numpy array is copied (for a buffer that is not full yet only the filled prefix: the rest
    is still the zeros it was created with, so it is allocated lazily as zeros); everything else is
    deep-copied, which goes through the buffer's own ``__getstate__`` (HER drops its env).
    """
    import numpy as np

    size = getattr(buffer, "buffer_size", None)
    pos = int(getattr(buffer, "pos", 0))
    prefix_only = size is not None and not getattr(buffer, "full", True)

    def copy_array(a: np.ndarray) -> np.ndarray:
        if prefix_only and a.ndim >= 1 and a.shape[0] == size:
            end = min(pos + 1, size)  # +1: optimize_memory_usage keeps the last next_obs at pos
            out = np.zeros_like(a)
            out[:end] = a[:end]
            return out
        return a.copy()

    memo: dict[int, Any] = {}
    for value in vars(buffer).values():
        values = value.values() if isinstance(value, dict) else (value,)
        for v in values:
            if isinstance(v, np.ndarray):
                memo[id(v)] = copy_array(v)
    return copy.deepcopy(buffer, memo)
