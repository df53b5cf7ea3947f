"""What every command shares: the exit codes (what each means: the package's docstring), ``UsageError``,
the output helpers (a table, a number, JSON) and the repository a command works on (a PATH or
``--experiment-id``, its storage options and signing key). Imports neither torch nor SB3.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.errors import CheckpointError, CheckpointNotFound

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY, EXIT_MISMATCH = 0, 1, 2, 3, 4, 5


class UsageError(Exception):
    """A user mistake on the command line (exit code 2)."""


# -- output helpers -----------------------------------------------------------------------------------------
def _emit_json(obj: Any) -> None:
    from sb3_iter_ckpt.common.record import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _ck_dict(ck: Any) -> dict[str, Any]:
    return {
        "iteration": ck.iteration,
        "has_model": ck.has_model,
        "model_path": None if ck.model_path is None else str(ck.model_path),
        "metrics": ck.metrics,
        "size_bytes": ck.size_bytes,
        "created_at": ck.created_at,
        "sha256": ck.sha256,
        "reason": ck.reason,
        "timesteps": ck.timesteps,
        "verified": ck.verified,
        # In a run with candidates: which one this copy is, and every candidate's score on the window.
        **({"candidate": ck.record["candidate"]} if isinstance(ck.record.get("candidate"), dict) else {}),
    }


# -- repository location --------------------------------------------------------------------------------
def _open_repo(args: argparse.Namespace, *, must_exist: bool = True) -> Any:
    from sb3_iter_ckpt.repository import CheckpointRepository
    from sb3_iter_ckpt.store.storage import is_url

    if args.path is not None:
        if not args.path.strip():
            raise UsageError("the repository PATH is empty; give the experiment folder (results/ID)")
        root: Path | str = args.path if is_url(args.path) else Path(args.path)
    elif args.experiment_id is not None:
        root = _experiment_root(args.results_dir, args.experiment_id)
    else:
        raise UsageError(
            "say which repository: a PATH to the experiment folder, or --experiment-id ID [--results-dir DIR]"
        )
    options = _storage_options(args)
    key = _signing_key(args)
    if isinstance(root, str):  # a URL root (s3://...): options from --storage-option or the environment
        _check_url(root)
        try:
            repo = CheckpointRepository(root, storage_options=options, signing_key=key)
            found = repo.storage.listdir("checkpoints") if must_exist else True
        except ValueError as exc:  # raised by the filesystem's client, e.g. endpoint_url=notaurl
            if isinstance(exc, CheckpointError):
                raise
            raise UsageError(f"cannot open {root}: {exc}; check the URL and --storage-option values") from exc
        if not found:
            raise CheckpointNotFound(
                f"no checkpoint repository at {root} (nothing under checkpoints/); check the URL and storage options"
            )
        return repo
    if options is not None:
        raise UsageError("--storage-option applies to URL roots (s3://...), not to a local folder")
    if must_exist and not (root / "checkpoints").is_dir():
        raise CheckpointNotFound(f"no checkpoint repository at {root} (no checkpoints/ folder); check the path")
    return CheckpointRepository(root, signing_key=key)


def _signing_key(args: argparse.Namespace) -> bytes | None:
    """The key of ``--signing-key-file`` (trailing line breaks ignored); None: the repository reads the environment."""
    from sb3_iter_ckpt.common.signing import SIGNING_KEY_ENV

    if getattr(args, "signing_key_value", None) is not None:
        raise UsageError(
            "a signing key on the command line would show in the process list and shell history; "
            f"set {SIGNING_KEY_ENV} or pass --signing-key-file PATH"
        )
    path = getattr(args, "signing_key_file", None)
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read --signing-key-file {path}: {exc.strerror or exc}") from exc
    if not key:
        raise UsageError(f"--signing-key-file {path} is empty")
    return key


def _check_url(url: str) -> None:
    """A URL whose scheme no installed filesystem handles is bad usage, not an error of the repository."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UsageError(f"{url}: unknown URL scheme {protocol!r}; use a local folder or s3://bucket/prefix") from None
    except ImportError as exc:
        raise UsageError(f"{url}: {exc} (for s3:// run: pip install 'sb3-iter-ckpt[s3]')") from None


def _experiment_root(results_dir: str, experiment_id: Any) -> Path | str:
    from sb3_iter_ckpt.store.storage import is_url

    text = str(experiment_id)
    parts = text.replace("\\", "/").split("/")
    # An id names a folder inside RESULTS_DIR: never one above it or elsewhere (../x, /abs).
    if "\x00" in text or text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(
            f"--experiment-id {text!r} must be a folder name inside --results-dir (no '..', no absolute path)"
        )
    if is_url(results_dir):
        return f"{results_dir.rstrip('/')}/{experiment_id}"
    return Path(results_dir) / str(experiment_id)


def _storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--storage-option KEY=VALUE`` pairs over ``SB3_ITER_CKPT_STORAGE_OPTIONS``; None when no flag is given.

    A VALUE that parses as JSON is taken as such (``false``, ``3``, ``{"region_name": "eu-west-1"}``), else as text.
    """
    pairs = getattr(args, "storage_option", None)
    if not pairs:
        return None
    from sb3_iter_ckpt.store.storage import storage_options_from_env

    options = storage_options_from_env()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options
