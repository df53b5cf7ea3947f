"""The package's exception hierarchy: every failure a user can cause or meet is a ``CheckpointError``."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every error raised by sb3-iter-ckpt."""


class CheckpointNotFound(CheckpointError, LookupError):
    """The requested iteration (or the best one) has no checkpoint."""


class CheckpointExistsError(CheckpointError):
    """An iteration is already committed and ``overwrite`` was not asked for."""


class IntegrityError(CheckpointError):
    """A file is missing, truncated or does not match its recorded sha256."""


class SignatureError(IntegrityError):
    """A record is unsigned or wrongly signed while a signing key is configured."""


class SigningKeyError(SignatureError):
    """A signed repository was opened without its key for a write, or with another key."""


class RecordError(CheckpointError):
    """A metrics record is not valid JSON, has wrong types or an unknown schema version."""


class UnsafePathError(CheckpointError):
    """A name or path would escape the repository root (``..``, absolute path, outward symlink)."""


class CommitError(CheckpointError):
    """Writing an iteration failed (disk full, I/O error, permission denied)."""


class ConfigMismatchError(CheckpointError):
    """A resumed walk-forward run does not match the configuration that wrote the repository."""


class EnvContractError(CheckpointError, ValueError):
    """An environment does not report what the run reads from it (see ``sb3_iter_ckpt.envs.StepReader``)."""
