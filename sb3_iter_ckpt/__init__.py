"""sb3-iter-ckpt: keep every walk-forward iteration's best Stable-Baselines3 model."""

from sb3_iter_ckpt.callback import IterationCheckpointCallback
from sb3_iter_ckpt.errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFound,
    CommitError,
    ConfigMismatchError,
    IntegrityError,
    RecordError,
    SignatureError,
    UnsafePathError,
)
from sb3_iter_ckpt.record import Checkpoint
from sb3_iter_ckpt.repository import CheckpointRepository, Problem
from sb3_iter_ckpt.version import __version__

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
    "RecordError",
    "SignatureError",
    "UnsafePathError",
    "__version__",
]
