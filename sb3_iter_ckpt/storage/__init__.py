"""Every byte of file I/O of a checkpoint repository goes through a ``Storage``.

The commit protocol (``LocalStorage``):

1. ``stage``: each artifact is streamed to a temporary name *next to* its final name
   (``.model_iter_3.zip.tmp-<host>-<pid>-<rand>``), hashed while written, flushed and fsynced.
2. ``publish`` (under a cross-process lock, held only for renames): refuse if the iteration is
   already committed, write an intent file naming the final artifacts, rename the artifacts into
   place, then publish the record with ``os.link`` (create-only: it fails if the name exists,
   where ``os.replace`` would overwrite silently), fsync the folder, drop the intent.
   The record is the commit marker: without it nothing of the iteration is listed.
3. ``sweep`` (at open, under the lock): roll back intents left by a dead writer and remove
   temporaries whose writer process is gone (same host) or that are older than a grace period.
"""

from sb3_iter_ckpt.storage.base import (
    Capabilities,
    FileStat,
    Source,
    Staged,
    Storage,
    check_name,
    sha256_bytes,
)
from sb3_iter_ckpt.storage.local import LocalStorage

__all__ = ["Capabilities", "FileStat", "LocalStorage", "Source", "Staged", "Storage", "check_name", "sha256_bytes"]
