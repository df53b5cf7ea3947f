"""Checks of the files derived from signed data that are not themselves signed.

The rule (``docs/reliability.md``): a derived file is never trusted as it is. A reader either recomputes
what it shows from the signed files, or checks the file against them first; ``verify`` reports any that
disagrees. ``forward_returns.csv`` is recomputed from the forward files (``forwardfiles.stitched``) and
compared (``forwardfiles.csv_problem``); ``walk_forward.json`` (the run's configuration: data sha256,
number of prices, splitter, algorithm...) is checked here against the fingerprint every signed record of
the run carries (``metadata.fingerprint``): the sha256 of the configuration it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.options import config_fingerprint
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.errors import RecordError
from sb3_iter_ckpt.store.storage import Storage

#: The walk-forward runner's file at the repository root.
RUN_FILE = "walk_forward.json"


def run_file_problem(run: Any, records: Mapping[int, Checkpoint]) -> str | None:
    """Why ``walk_forward.json``'s content ``run`` cannot be shown as the run's configuration (None: it can).

    :param run: the file's JSON object.
    :param records: the records that count (signed ones, with a key).
    """
    if (
        not isinstance(run, dict)
        or not isinstance(run.get("config"), dict)
        or not isinstance(run.get("fingerprint"), str)
    ):
        return "is not a walk-forward configuration (config and fingerprint)"
    if set(run) != {"config", "fingerprint"}:  # the runner writes these two only: anything else was added
        return f"holds fields the walk-forward never writes ({', '.join(sorted(set(run) - {'config', 'fingerprint'}))})"
    try:
        computed = config_fingerprint(run["config"])
    except (TypeError, ValueError) as exc:
        return f"holds a configuration that is not JSON ({exc})"
    if computed != run["fingerprint"]:
        return "its configuration does not hash to its fingerprint: edited?"
    recorded = {
        fp for ck in records.values() if isinstance(fp := (ck.record.get("metadata") or {}).get("fingerprint"), str)
    }
    if recorded and run["fingerprint"] not in recorded:
        return "is not the configuration the records were trained with (their metadata.fingerprint differs): replaced?"
    return None


def _fingerprint(ck: Checkpoint) -> Any:
    metadata = ck.record.get("metadata")
    return metadata.get("fingerprint") if isinstance(metadata, dict) else None


def read_json_object(storage: Storage, name: str) -> dict[str, Any] | None:
    """The JSON object ``name`` (a file at the root kept by a tool, e.g. ``walk_forward.json``), or None."""
    if not storage.exists(name):
        return None
    data = rec.loads(storage.read_bytes(name), name)
    if not isinstance(data, dict):
        raise RecordError(f"{name} is not a JSON object")
    return data
