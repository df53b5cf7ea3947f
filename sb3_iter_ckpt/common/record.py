"""The metrics record: the one file that makes an iteration visible, and its in-memory view ``Checkpoint``.

Pure code: names, (de)serialization and validation. No file I/O here (that is the ``storage`` package).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from sb3_iter_ckpt.errors import RecordError

#: Version of the record layout this package writes; readers refuse newer ones.
SCHEMA_VERSION = 1

#: Placeholder reasons written by the callback ("pruned": a model record whose artifacts were pruned).
REASONS = ("below_min_score", "nan_metric", "no_evaluation", "save_failed", "pruned")

CHECKPOINTS_DIR = "checkpoints"
BEST_MODEL = "best_model.zip"
BEST_VECNORMALIZE = "best_vecnormalize.pkl"
TRAINING_SUMMARY = "training_summary.json"
CHECKPOINT_SUMMARY = "checkpoint_summary.json"
#: The stitched out-of-sample curve of a run with test parts, at the experiment root.
FORWARD_RETURNS = "forward_returns.csv"

# [0-9] and \Z: no other script's digits (int() reads "５" as 5), no leading zeros, no trailing newline.
_RECORD_RE = re.compile(r"^(metrics|no_model)_iter_(0|[1-9][0-9]*)\.json\Z")
_ARTIFACT_RE = re.compile(r"^(?P<kind>model|vecnormalize|replay_buffer)_iter_(?P<iteration>0|[1-9][0-9]*)\.(zip|pkl)\Z")
_FORWARD_RE = re.compile(r"^forward_iter_(0|[1-9][0-9]*)\.json\Z")
#: Prefix of the forward result files (``forward_iter_{i}.json``), for filtered listings.
FORWARD_PREFIX = "forward_iter_"

#: Artifact kind -> file name pattern (the seed's layout for model and metrics).
ARTIFACT_NAMES = {
    "model": "model_iter_{i}.zip",
    "vecnormalize": "vecnormalize_iter_{i}.pkl",
    "replay_buffer": "replay_buffer_iter_{i}.pkl",
}


def record_name(iteration: int) -> str:
    return f"metrics_iter_{iteration}.json"


def placeholder_name(iteration: int) -> str:
    return f"no_model_iter_{iteration}.json"


def artifact_name(kind: str, iteration: int) -> str:
    return ARTIFACT_NAMES[kind].format(i=iteration)


def forward_name(iteration: int) -> str:
    """The forward (out-of-sample) result of an iteration, next to its record."""
    return f"forward_iter_{iteration}.json"


def parse_forward_name(name: str) -> int | None:
    """``forward_iter_3.json`` -> 3; any name that is not exactly a forward result's name -> None."""
    m = _FORWARD_RE.match(name)
    return None if m is None else int(m.group(1))


def parse_record_name(name: str) -> tuple[int, bool] | None:
    """``metrics_iter_3.json`` -> ``(3, False)``; ``no_model_iter_3.json`` -> ``(3, True)``; else None."""
    m = _RECORD_RE.match(name)
    if m is None:
        return None
    return int(m.group(2)), m.group(1) == "no_model"


def parse_artifact_name(name: str) -> tuple[str, int] | None:
    """``model_iter_3.zip`` -> ``("model", 3)``; any name that is not exactly an artifact name -> None."""
    m = _ARTIFACT_RE.match(name)
    if m is None or artifact_name(m["kind"], int(m["iteration"])) != name:
        return None
    return m["kind"], int(m["iteration"])


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats (-> None) into strict JSON values."""
    # JSON's own types first, by exact type: a record (signed at each commit, verified at each open) is mostly
    # these, and the general checks below (an ABC's isinstance first) cost several times more per value.
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else None
    if kind is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if kind is list or isinstance(obj, (list, tuple)):
        # A forward result's series (thousands of numbers) as they are: ints, or floats whose sum is finite
        # (then none is inf or NaN). Anything else is converted one by one.
        if all(type(v) is int for v in obj) or (all(type(v) is float for v in obj) and math.isfinite(sum(obj))):
            return list(obj)
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def dumps(obj: Any) -> bytes:
    """Strict JSON (no NaN/Infinity tokens), stable key order, UTF-8."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


#: Deepest nesting of arrays/objects a JSON file may have (a record has 3-4 levels; this leaves room for
#: nested metrics while keeping every recursive reader far from Python's recursion limit).
MAX_JSON_DEPTH = 64


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token!r}")


def _parse_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):  # "1e400" would parse as inf
        raise ValueError(f"number {token[:20]!r} is outside the float range")
    return value


def _parse_int(token: str) -> int:
    value = int(token)
    if abs(value) >= 2**1024:  # float() of it overflows: no metric, size or count is that large
        raise ValueError(f"integer {token[:20]}... is outside the float range")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


#: Decoders built once (``json.loads`` with hooks builds one per call): the exact one checks every number.
_EXACT = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int)
_PLAIN = json.JSONDecoder(parse_constant=_reject_constant)
#: A JSON text's shape for ``_plain``: every ASCII digit "0", "E" "e", "+" "-", "[" "{", and each character
#: that may follow a number ("," "]" "}" and JSON's whitespace) ",".
_SHAPE = bytes.maketrans(b"0123456789E+[]} \t\n\r", b"0000000000e-{,,,,,,")
_LONG_DIGITS = b"0" * 20
_BIG_EXPONENT = re.compile(rb"e-?000+(?:,|\Z)")


def _plain(data: bytes) -> bool:
    """Whether ``data`` can hold no number outside the float range and no nesting past ``MAX_JSON_DEPTH``.

    True only when that is certain from the text alone, so that ``json`` may parse it without the hooks
    (a record's usual case, at under half the cost): at most ``MAX_JSON_DEPTH`` opening brackets, no run
    of 20 digits (an integer below 10**20, a float's integer part too) and no exponent of 3 digits or more
    ending where a number ends (a float below 10**20 * 10**99). Brackets, digits or an "e" inside strings
    (a hash's hex) can only make it False: the exact parse then decides.
    """
    shape = data.translate(_SHAPE)
    return shape.count(b"{") <= MAX_JSON_DEPTH and _LONG_DIGITS not in shape and not _BIG_EXPONENT.search(shape)


def loads(data: bytes, what: str) -> Any:
    """Parse strict JSON; any failure is a ``RecordError`` naming ``what``.

    Refused too: numbers outside the float range and nesting deeper than ``MAX_JSON_DEPTH``.
    """
    plain = _plain(data)
    try:
        value = (_PLAIN if plain else _EXACT).decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"{what} is not valid JSON ({exc}); restore it or remove the iteration") from exc
    except RecursionError as exc:
        raise RecordError(f"{what} is nested too deeply to be a record; restore it or remove the iteration") from exc
    if not plain and _depth_exceeds(value, MAX_JSON_DEPTH):
        raise RecordError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels; restore it or remove the iteration")
    return value


def get_metric(metrics: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Look up ``key`` in nested dicts, ``"a.b"`` meaning ``metrics["a"]["b"]`` (an exact flat key wins);
    ``default`` when it is not there."""
    if key in metrics:
        return metrics[key]
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def as_score(value: Any) -> float | None:
    """A finite float, or None for missing / NaN / inf / non-numeric values."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        return None  # a numeric-looking string is not a score (the callback refuses them too)
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond the float range
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class ArtifactInfo:
    """One file of a checkpoint, as recorded: its name inside ``checkpoints/``, sha256 and size."""

    file: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class Checkpoint:
    """One committed iteration: a saved best model with its metrics, or a placeholder.

    :param iteration: The walk-forward iteration number.
    :param has_model: False for placeholders (no model met the selection rule, or saving failed).
    :param model_path: Where the model zip is, or None.
    :param metrics: The metrics of the chosen snapshot (nested dicts allowed).
    :param size_bytes: Total bytes of the recorded artifacts.
    :param created_at: ISO-8601 UTC time of the commit.
    :param sha256: sha256 of the model zip (None for placeholders and unadopted legacy files).
    :param reason: Why there is no model (placeholders only).
    :param timesteps: ``model.num_timesteps`` when the chosen snapshot was taken.
    :param artifacts: Every recorded file by kind (``model``, ``vecnormalize``, ``replay_buffer``).
    :param record_file: Name of the record inside ``checkpoints/``.
    :param verified: Whether hashes are recorded (False for a legacy folder not yet adopted).
    :param record: The raw record, for fields not surfaced here.
    """

    iteration: int
    has_model: bool
    model_path: Path | str | None
    metrics: dict[str, Any]
    size_bytes: int
    created_at: str | None
    sha256: str | None
    reason: str | None
    timesteps: int | None
    artifacts: dict[str, ArtifactInfo] = field(default_factory=dict)
    record_file: str = ""
    verified: bool = True
    record: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_placeholder(self) -> bool:
        return not self.has_model

    @property
    def legacy(self) -> bool:
        return "schema_version" not in self.record

    def metric(self, key: str) -> Any:
        """The (possibly dotted) metric ``key``, or None."""
        return get_metric(self.metrics, key)

    def score(self, key: str) -> float | None:
        """The metric ``key`` as a finite float, or None (missing, NaN, non-numeric)."""
        return as_score(self.metric(key))

    @property
    def selection(self) -> dict[str, Any]:
        sel = self.record.get("selection")
        return dict(sel) if isinstance(sel, Mapping) else {}


def _fail(what: str, msg: str) -> NoReturn:
    raise RecordError(f"{what}: {msg}")


#: Fields the package reads back from a record (of any schema, the seed's included), and the JSON
#: type each must have when present and not null: a record of other types is unreadable, not a crash.
#: (``algorithm`` is checked where it is used: ``load`` names it in its error.)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "selection": (dict,),
    "metadata": (dict,),
    "versions": (dict,),
    "evaluation": (dict,),
    "pruned": (dict,),
    "legacy_record": (dict,),
    "policy_class": (str,),
    "kind": (str,),
    "error": (str,),
    "window_timesteps": (list,),
}
_FIELDS = tuple(_FIELD_TYPES.items())
_SHA256_RE = re.compile(r"[0-9a-f]{64}")

# The checks below run for every record of a cold open: a message is built only for a record that fails.


def _check_fields(name: str, raw: Mapping[str, Any]) -> None:
    for key, types in _FIELDS:
        value = raw.get(key)
        if value is not None and not isinstance(value, types):
            _fail(name, f"{key!r} is not a {types[0].__name__}")
    selection = raw.get("selection") or {}
    for key in ("monitor", "mode"):
        value = selection.get(key)
        if value is not None and not isinstance(value, str):
            _fail(name, f"selection {key!r} is not a string")


def _check_version(name: str, version: Any) -> None:
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(name, "schema_version is not an integer")
    if version > SCHEMA_VERSION:
        _fail(
            name,
            f"schema_version {version} is newer than this package understands ({SCHEMA_VERSION}); "
            "upgrade sb3-iter-ckpt",
        )
    if version < 1:
        _fail(name, f"invalid schema_version {version}")


def _parse_artifacts(name: str, artifacts_raw: Any) -> dict[str, ArtifactInfo]:
    """A record's ``artifacts``, each a plain file name with a sha256 and a size."""
    if not isinstance(artifacts_raw, dict):
        _fail(name, "'artifacts' is not an object")
    artifacts: dict[str, ArtifactInfo] = {}
    for kind, info in artifacts_raw.items():
        if not isinstance(info, dict):
            _fail(name, f"artifact {kind!r} is not an object")
        file, sha, size = info.get("file"), info.get("sha256"), info.get("size")
        if not isinstance(file, str) or file == "":
            _fail(name, f"artifact {kind!r} has no file name")
        # a plain name inside checkpoints/: a record can never make load/prune reach another folder
        if "/" in file or "\\" in file or "\x00" in file or file in (".", ".."):
            _fail(name, f"artifact {kind!r} file {file!r} is not a plain file name")
        if not isinstance(sha, str) or _SHA256_RE.fullmatch(sha) is None:
            _fail(name, f"artifact {kind!r} has no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            _fail(name, f"artifact {kind!r} size")
        artifacts[kind] = ArtifactInfo(file, sha, size)
    return artifacts


def parse(name: str, data: bytes, *, model_path_for: Any = None) -> Checkpoint:
    """Parse and validate one record file's bytes into a ``Checkpoint``.

    :param name: The record's file name (``metrics_iter_{i}.json`` or ``no_model_iter_{i}.json``).
    :param data: Its bytes.
    :param model_path_for: ``callable(file_name) -> path`` used to build ``model_path``.
    """
    parsed = parse_record_name(name)
    if parsed is None:
        _fail(name, "not a record file name")
    iteration, placeholder = parsed
    raw = loads(data, name)
    if not isinstance(raw, dict):
        _fail(name, "the record is not a JSON object")
    _check_fields(name, raw)
    if "schema_version" not in raw:
        return _parse_legacy(name, iteration, placeholder, raw, model_path_for)
    _check_version(name, raw["schema_version"])
    if raw.get("iteration") != iteration:
        _fail(name, f"records iteration {raw.get('iteration')!r}, not {iteration}")
    metrics = raw.get("metrics", {})
    if not isinstance(metrics, dict):
        _fail(name, "'metrics' is not an object")
    artifacts = _parse_artifacts(name, raw.get("artifacts", {}))
    model = artifacts.get("model")
    has_model = model is not None
    pruned = raw.get("pruned")
    # A model record whose artifacts were pruned keeps its metrics but no longer has a model.
    if has_model == placeholder and (pruned is None or placeholder):
        _fail(name, "placeholder/model kind does not match the file name")
    timesteps = raw.get("timesteps")
    if timesteps is not None and (not isinstance(timesteps, int) or isinstance(timesteps, bool)):
        _fail(name, "timesteps")
    reason = raw.get("reason")
    if reason is not None and not isinstance(reason, str):
        _fail(name, "'reason' is not a string")
    created = raw.get("created_at")
    if created is not None and not isinstance(created, str):
        _fail(name, "'created_at' is not a string")
    return Checkpoint(
        iteration=iteration,
        has_model=has_model,
        model_path=model_path_for(model.file) if (model and model_path_for) else None,
        metrics=metrics,
        size_bytes=sum(a.size or 0 for a in artifacts.values()),
        created_at=created,
        sha256=model.sha256 if model else None,
        reason=reason if pruned is None else (reason or "pruned"),
        timesteps=timesteps,
        artifacts=artifacts,
        record_file=name,
        verified=True,
        record=raw,
    )


def orphan_model(iteration: int, model_path_for: Any = None) -> Checkpoint:
    """A ``model_iter_{i}.zip`` that no record names, as the seed's script listed it: no metrics, unverified.

    :param iteration: The iteration of the model file.
    :param model_path_for: ``callable(file_name) -> path`` used to build ``model_path``.
    """
    return _parse_legacy(record_name(iteration), iteration, False, {}, model_path_for)


def _parse_legacy(name: str, iteration: int, placeholder: bool, raw: dict[str, Any], model_path_for: Any) -> Checkpoint:
    """A record written by the seed's script: any keys, no hashes. Listed, loadable, marked unverified."""
    artifacts: dict[str, ArtifactInfo] = {}
    if not placeholder:
        artifacts["model"] = ArtifactInfo(artifact_name("model", iteration), None, None)
    reason = raw.get("reason") if placeholder else None
    metrics = {k: v for k, v in raw.items() if k not in ("iteration", "reason")} if placeholder else dict(raw)
    model = artifacts.get("model")
    return Checkpoint(
        iteration=iteration,
        has_model=not placeholder,
        model_path=model_path_for(model.file) if (model and model_path_for) else None,
        metrics=metrics,
        size_bytes=0,
        created_at=raw.get("timestamp") if isinstance(raw.get("timestamp"), str) else None,
        sha256=None,
        reason=str(reason) if reason is not None else ("legacy_placeholder" if placeholder else None),
        timesteps=None,
        artifacts=artifacts,
        record_file=name,
        verified=False,
        record=raw,
    )


def build(
    iteration: int,
    *,
    metrics: Mapping[str, Any],
    artifacts: Mapping[str, ArtifactInfo],
    reason: str | None = None,
    timesteps: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a schema-``SCHEMA_VERSION`` record (a plain dict ready for ``dumps``)."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "iteration": int(iteration),
        "kind": "checkpoint" if "model" in artifacts else "placeholder",
        "created_at": utc_now(),
        "reason": reason,
        "timesteps": None if timesteps is None else int(timesteps),
        "metrics": to_jsonable(dict(metrics)),
        "artifacts": {k: {"file": a.file, "sha256": a.sha256, "size": a.size} for k, a in artifacts.items()},
    }
    if extra:
        for k, v in extra.items():
            rec.setdefault(k, to_jsonable(v))
    return rec
