"""Every byte of file I/O of a checkpoint repository goes through a ``Storage``.

The commit protocol (``LocalStorage``):

1. ``stage``: each artifact is streamed to a temporary name *next to* its final name
   (``.model_iter_3.zip.sb3ckpt-tmp-<host>-<pid>-<rand>``), hashed while written, flushed and fsynced.
2. ``publish`` (under a cross-process lock, held only for renames): refuse if the iteration is
   already committed, write an intent file naming the final artifacts, rename the artifacts into
   place, then publish the record with ``os.link`` (create-only: it fails if the name exists,
   where ``os.replace`` would overwrite silently), fsync the folder, drop the intent.
   The record is the commit marker: without it nothing of the iteration is listed.
3. ``sweep`` (at open, under the lock): roll back intents left by a dead writer and remove
   temporaries whose writer process is gone (same host) or that are older than a grace period.

``FsspecStorage`` (``s3://``, ``memory://``, any fsspec URL) has no rename and no lock: artifacts
go to attempt-unique keys and the record is created create-only (see ``storage.fsspec``).
``storage_for(root)`` picks the backend: plain paths, ``file://`` and ``local://`` are local.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.store.storage.base import (
    Capabilities,
    FileStat,
    References,
    Source,
    Staged,
    Storage,
    check_name,
    iteration_of,
    sha256_bytes,
    strip_attempt,
)
from sb3_iter_ckpt.store.storage.fsspec import FsspecStorage, RemoteRoot
from sb3_iter_ckpt.store.storage.local import LocalStorage
from sb3_iter_ckpt.store.storage.rollback import intent_name

#: Environment variable holding storage options (a JSON object) for URL roots opened without any.
STORAGE_OPTIONS_ENV = "SB3_ITER_CKPT_STORAGE_OPTIONS"

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")


def is_url(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a URL (``s3://...``, ``file://...``) rather than a plain path."""
    return isinstance(root, str) and _URL_RE.match(root) is not None


def storage_options_from_env() -> dict[str, Any]:
    """The options in ``SB3_ITER_CKPT_STORAGE_OPTIONS`` (a JSON object), or ``{}``."""
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{STORAGE_OPTIONS_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(opts, dict):
        raise CheckpointError(f"{STORAGE_OPTIONS_ENV} must be a JSON object of storage options, not {text[:40]!r}")
    return opts


def storage_for(root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Storage:
    """The storage of a root: ``LocalStorage`` for a path, ``file://`` or ``local://``, else ``FsspecStorage``.

    :param storage_options: For URL roots (credentials, ``endpoint_url``...); None: from the
        ``SB3_ITER_CKPT_STORAGE_OPTIONS`` environment variable. Refused for a local path.
    """
    text = os.fspath(root)
    # fsspec's local:// is a local folder too: it gets LocalStorage's lock and symlink checks.
    local = next((p for p in ("file://", "local://") if text.startswith(p)), None)
    if not is_url(text) or local is not None:
        if storage_options:
            raise CheckpointError(f"storage_options apply to URL roots (s3://...), not to the local path {text}")
        return LocalStorage(text[len(local) :] if local is not None else text)
    return FsspecStorage(text, storage_options if storage_options is not None else storage_options_from_env())


def display_root(storage: Storage, given: str | os.PathLike[str] | None = None) -> Path | RemoteRoot:
    """What ``CheckpointRepository.root`` shows: a ``Path`` for local roots, a ``RemoteRoot`` URL else."""
    if isinstance(storage, LocalStorage):
        return Path(os.fspath(given)) if given is not None and not is_url(given) else Path(storage.url)
    return RemoteRoot(storage.url)


__all__ = [
    "STORAGE_OPTIONS_ENV",
    "Capabilities",
    "FileStat",
    "FsspecStorage",
    "LocalStorage",
    "References",
    "RemoteRoot",
    "Source",
    "Staged",
    "Storage",
    "check_name",
    "display_root",
    "intent_name",
    "is_url",
    "iteration_of",
    "sha256_bytes",
    "storage_for",
    "storage_options_from_env",
    "strip_attempt",
]
