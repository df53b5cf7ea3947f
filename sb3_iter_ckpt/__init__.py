"""sb3-iter-ckpt: keep every walk-forward iteration's best Stable-Baselines3 model.

The callback (which imports SB3 and torch) is loaded on first use, so reading a repository
(``sb3-iter-ckpt list``) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.version import __version__
from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFound,
    CommitError,
    ConfigMismatchError,
    IntegrityError,
    RecordError,
    SignatureError,
    SigningKeyError,
    UnsafePathError,
)
from sb3_iter_ckpt.repository import (
    CheckpointRepository,
    Problem,
    PruneResult,
    VerifyReport,
    pbo_logits,
    trade_forward,
)

if TYPE_CHECKING:
    from sb3_iter_ckpt.callback import IterationCheckpointCallback


def __getattr__(name: str) -> Any:
    if name == "IterationCheckpointCallback":
        from sb3_iter_ckpt.callback import IterationCheckpointCallback

        return IterationCheckpointCallback
    raise AttributeError(f"module 'sb3_iter_ckpt' has no attribute {name!r}")


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFound",
    "CheckpointRepository",
    "CommitError",
    "ConfigMismatchError",
    "IntegrityError",
    "IterationCheckpointCallback",
    "Problem",
    "PruneResult",
    "RecordError",
    "SignatureError",
    "SigningKeyError",
    "UnsafePathError",
    "VerifyReport",
    "__version__",
    "pbo_logits",
    "trade_forward",
]
