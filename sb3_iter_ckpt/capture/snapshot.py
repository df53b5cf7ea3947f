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
capture time, the entries of SB3's ``save_to_zip_file`` in its order (see ``write_sb3_zip``); it touches
no live object, so it may run in a background thread. Anything unexpected at capture time falls back
to the bytes of ``model.save``.
"""

from __future__ import annotations

import copy
import functools
import io
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

import torch

__all__ = ["ModelSnapshot", "clone_state", "copy_replay_buffer", "write_sb3_zip"]

#: Torch entries up to this size are serialized in memory and written whole; larger ones are streamed.
_WHOLE_ENTRY_BYTES = 1 << 20


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
        write_sb3_zip(f, self.data, self.params, self.pytorch_variables)

    __call__ = write  # a writer ``Source`` for ``CheckpointRepository.commit`` / ``Storage.stage``

    def to_bytes(self) -> bytes:
        """The SB3 zip as bytes (built once, then kept)."""
        if self._zip is None:
            buf = io.BytesIO()
            self.write(buf)
            self._zip = buf.getvalue()
        return self._zip


@functools.lru_cache(maxsize=1)
def _system_info() -> str:
    # SB3 recomputes it at every save (platform calls, a failed ``import gym`` searching sys.path): it
    # names this process's platform and packages, which do not change while it runs.
    from stable_baselines3.common.utils import get_system_info

    return get_system_info(print_info=False)[1]


def write_sb3_zip(
    f: BinaryIO, data: dict[str, Any] | None, params: dict[str, Any] | None, pytorch_variables: dict[str, Any] | None
) -> None:
    """The zip of SB3's ``save_to_zip_file`` (``stable_baselines3.common.save_util``, SB3 2.x): the same entries
    in the same order, each loaded by ``BaseAlgorithm.load`` as SB3's own.

    A small model's commit pays for what SB3 does per save: its torch entries are streamed through
    ``zipfile``'s writer in hundreds of small Python-level writes, and the system info is recomputed. Here
    each torch entry up to 1 MB is serialized in memory and written whole, and the system info is taken
    once per process (``tests/store/test_snapshot.py`` compares every entry with ``model.save``'s).
    """
    import stable_baselines3 as sb3
    from stable_baselines3.common.save_util import data_to_json

    serialized = data_to_json(data) if data is not None else None

    def add(archive: zipfile.ZipFile, name: str, obj: Any) -> None:
        if _nbytes(obj) > _WHOLE_ENTRY_BYTES:
            with archive.open(name, mode="w", force_zip64=True) as entry:
                torch.save(obj, entry)
            return
        buf = io.BytesIO()
        torch.save(obj, buf)
        archive.writestr(zipfile.ZipInfo(name), buf.getbuffer())  # dated 1980 as SB3's streamed entries

    with zipfile.ZipFile(cast(io.BufferedIOBase, f), mode="w") as archive:
        if serialized is not None:
            archive.writestr("data", serialized)
        if pytorch_variables is not None:
            add(archive, "pytorch_variables.pth", pytorch_variables)
        for file_name, state in (params or {}).items():
            add(archive, file_name + ".pth", state)
        archive.writestr("_stable_baselines3_version", sb3.__version__)
        archive.writestr("system_info.txt", _system_info())


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
