"""Hostile or damaged records: every reader raises the package's own errors, never a crash.

A real repository (two iterations, model + VecNormalize, trained once per module) is copied for each
case; one record or file is replaced by something hostile. Then every reading call of the API and
every verb of the CLI (in-process, ``sb3_iter_ckpt.cli.main``) may only raise a ``CheckpointError``
(the CLI: return a documented exit code, no traceback), the hostile record is left out with a
warning, and the untouched iteration stays usable. The last test fuzzes record contents and file
names with hypothesis.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_iter_ckpt import (
    CheckpointError,
    CheckpointRepository,
    CommitError,
    IntegrityError,
    IterationCheckpointCallback,
    RecordError,
)
from sb3_iter_ckpt.cli import main

CK = "checkpoints"
#: Exit codes the CLI documents for the repository verbs (5, a configuration mismatch, is walk-forward's).
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4}
HUGE = "1" + "0" * 400  # an integer literal beyond the float range: float() of it overflows


@pytest.fixture(scope="module")
def template(two_iterations):
    return two_iterations("template")


@pytest.fixture
def repo_copy(template, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(template, root)
    return root


def _record_text(root: Path, i: int = 1) -> str:
    return (root / CK / f"metrics_iter_{i}.json").read_text()


def _set(path: str, value_json: str) -> Callable[[Path], None]:
    """Replace the JSON value at ``path`` (dotted) of record 1 by the literal text ``value_json``."""

    def edit(root: Path) -> None:
        rec = json.loads(_record_text(root))
        node = rec
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        marker = "@@HOSTILE@@"
        node[last] = marker
        text = json.dumps(rec).replace(json.dumps(marker), value_json)
        (root / CK / "metrics_iter_1.json").write_text(text)

    return edit


def _legacy_with(key: str, value: Any) -> Callable[[Path], None]:
    """Record 1 in the seed's format (no schema_version) with one reserved key of a wrong type."""

    def edit(root: Path) -> None:
        (root / CK / "metrics_iter_1.json").write_text(json.dumps({"mean_reward": 9.0, key: value}))

    return edit


HOSTILE: dict[str, Callable[[Path], None]] = {
    "metrics-nested-100000-deep": _set("metrics", "[" * 100_000 + "]" * 100_000),
    "metrics-nested-past-the-limit": _set("metrics.deep", "[" * 200 + "]" * 200),
    "metric-huge-integer": _set("metrics.mean_reward", HUGE),
    "metric-float-literal-overflow": _set("metrics.mean_reward", "1e400"),
    "timesteps-huge-integer": _set("timesteps", HUGE),
    "artifact-size-huge-integer": _set("artifacts.model.size", HUGE),
    "selection-a-number": _set("selection", "5"),
    "selection-a-string": _set("selection", '"max"'),
    "selection-monitor-a-list": _set("selection.monitor", "[1, 2]"),
    "metadata-a-list": _set("metadata", "[1]"),
    "versions-a-string": _set("versions", '"2.0"'),
    "evaluation-a-list": _set("evaluation", "[]"),
    "artifact-entry-a-list": _set("artifacts.model", "[]"),
    "legacy-selection-a-number": _legacy_with("selection", 5),
    "legacy-metadata-a-string": _legacy_with("metadata", "x"),
}


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue() + err.getvalue()


def _package_errors_only(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a ``CheckpointError`` is an allowed outcome, anything else fails the test."""
    try:
        return fn()
    except CheckpointError as exc:
        return exc


def _every_reader(root: Path, plot: bool = True) -> None:
    """Every reading call of the API and every repository verb of the CLI: package errors only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        repo = CheckpointRepository(root)
        for call in (
            repo.list,
            repo.iterations,
            repo.latest,
            repo.default_selection,
            repo.next_iteration,
            lambda: [repo.get(i) for i in (0, 1, 2)],
            repo.best,
            repo.verify,
            repo.verify_report,
            repo.analyze,
            repo.training_summary,
            repo.write_training_summary,
            repo.write_summary,
            repo.table,
        ):
            _package_errors_only(call)
        for argv in (
            ["list"],
            ["list", "--json"],
            ["show", "0"],
            ["show", "1"],
            ["show", "1", "--json"],
            ["best"],
            ["best", "--json"],
            ["analyze"],
            ["verify"],
            ["verify", "--json"],
            ["summary"],
            ["prune", "--keep-last-n", "1", "--dry-run"],
            *([["plot", "--out", str(root / "p.png")]] if plot else []),
            ["adopt"],
            ["prune", "--keep-last-n", "1"],
        ):
            rc, out = _cli(argv[0], str(root), *argv[1:])
            assert rc in DOCUMENTED_EXIT_CODES, (argv, rc, out)
            assert "Traceback" not in out, (argv, out)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_record_is_left_out_and_the_rest_still_works(case, repo_copy):
    HOSTILE[case](repo_copy)
    repo = CheckpointRepository(repo_copy)
    with pytest.warns(UserWarning, match="unreadable record"):
        assert [c.iteration for c in repo.list()] == [0]
    with pytest.raises(RecordError):
        repo.get(1)
    assert {p.iteration for p in repo.verify()} == {1}  # the record, and the summary naming it as the best
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert repo.best().iteration == 0
        assert repo.analyze()["counts"]["total"] == 1
        assert repo.write_summary()["analysis"]["counts"]["total"] == 1
        assert repo.write_training_summary()["best"]["iteration"] == 0
        assert repo.next_iteration() == 2  # the damaged iteration keeps its number
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=3), training=False)
    assert repo.load(0, env=venv).predict(venv.reset())[0].shape == (1,)  # the untouched iteration loads
    assert _cli("show", str(repo_copy), "1")[0] == 4
    assert _cli("best", str(repo_copy), "--json")[0] == 0
    _every_reader(repo_copy)


@pytest.mark.parametrize("case", ["metric-huge-integer", "selection-a-number", "metrics-nested-100000-deep"])
def test_a_bad_old_record_never_stops_learn(case, repo_copy):
    """on_error="warn": training goes on and commits its iteration; the bad record is only left out."""
    HOSTILE[case](repo_copy)
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=1), norm_reward=False)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=1, device="cpu")
    cb = IterationCheckpointCallback(
        CheckpointRepository(repo_copy),
        evaluator=lambda m, e: {"mean_reward": 0.5},
        eval_freq=32,
        on_error="warn",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(64, callback=cb)
        repo = CheckpointRepository(repo_copy)
        assert [c.iteration for c in cb.committed] == [2]
        assert repo.iterations() == [0, 2]
        assert repo.best().iteration == 0  # iteration 0's mean_reward 2.0 beats the new 0.5
    venv.close()


def test_a_vecnormalize_file_of_another_type_is_an_integrity_error(repo_copy):
    """A valid pickle, matching its recorded hash, that is not VecNormalize statistics."""
    path = repo_copy / CK / "vecnormalize_iter_1.pkl"
    data = pickle.dumps({"obs_rms": [1, 2, 3]})
    path.write_bytes(data)
    rec = json.loads(_record_text(repo_copy))
    rec["artifacts"]["vecnormalize"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (repo_copy / CK / "metrics_iter_1.json").write_text(json.dumps(rec))
    repo = CheckpointRepository(repo_copy)
    venv = make_vec_env("CartPole-v1", n_envs=1, seed=3)
    with pytest.raises(IntegrityError, match="holds a dict, not VecNormalize"):
        repo.load_vecnormalize(1, venv)
    with pytest.raises(IntegrityError, match="not VecNormalize"):
        repo.load(1, env=venv)
    assert repo.load(0, env=venv) is not None


def test_plot_shows_a_math_like_monitor_as_text(repo_copy):
    """Matplotlib parses "$...$" as math: a monitor name from a record must not make plot crash."""
    rec = json.loads(_record_text(repo_copy))
    rec["selection"]["monitor"] = "$\\foo$"
    rec["metrics"]["$\\foo$"] = 1.0
    (repo_copy / CK / "metrics_iter_1.json").write_text(json.dumps(rec))
    rc, out = _cli("plot", str(repo_copy), "--out", str(repo_copy / "p.png"))
    assert rc == 0 and "Traceback" not in out and (repo_copy / "p.png").stat().st_size > 0


def test_a_commit_refuses_a_record_it_could_not_read_back(repo_copy):
    deep: Any = 1.0
    for _ in range(70):
        deep = [deep]
    before = sorted(p.name for p in (repo_copy / CK).iterdir())
    repo = CheckpointRepository(repo_copy)
    with pytest.raises(RecordError, match="nested deeper"):
        repo.commit(2, metrics={"mean_reward": 1.0}, model=b"zip bytes", extra={"metadata": {"deep": deep}})
    assert sorted(p.name for p in (repo_copy / CK).iterdir()) == before
    assert repo.iterations() == [0, 1] and repo.verify() == []


# -- a read-only folder ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _read_only(folders: list[Path], mocker) -> Iterator[None]:
    """Make ``folders`` read-only: for real (chmod) where that binds, i.e. not as root; as root (CI), no
    permission bit stops a write, so the calls that would need write access to them fail with EACCES
    exactly as the kernel would (creating, renaming, linking or removing a name in them)."""
    if os.geteuid() != 0:
        modes = {f: f.stat().st_mode for f in folders}
        for f in folders:
            f.chmod(0o555)
        try:
            yield
        finally:
            for f, mode in modes.items():
                f.chmod(mode)
        return
    real = {str(f.resolve()) for f in folders}

    def in_folder(path: Any) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.dirname(os.path.abspath(os.fspath(path))) in real

    def denied(path: Any) -> OSError:
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def guard(fn: Callable[..., Any], *, writes_name: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = writes_name(*args, **kwargs)
            if target is not None and "dir_fd" not in kwargs and in_folder(target):
                raise denied(target)
            return fn(*args, **kwargs)

        return wrapper

    def creates(path: Any, flags: int = 0, *a: Any, **k: Any) -> Any:
        return path if flags & os.O_CREAT and not os.path.exists(path) else None

    def opens_new(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        new = any(c in mode for c in "wxa") and isinstance(file, (str, os.PathLike)) and not os.path.exists(file)
        return file if new else None

    mocker.patch.object(os, "open", guard(os.open, writes_name=creates))
    mocker.patch.object(builtins, "open", guard(builtins.open, writes_name=opens_new))
    for name in ("replace", "rename", "link"):
        mocker.patch.object(os, name, guard(getattr(os, name), writes_name=lambda src, dst, *a, **k: dst))
    for name in ("unlink", "remove", "mkdir", "rmdir"):
        mocker.patch.object(os, name, guard(getattr(os, name), writes_name=lambda path, *a, **k: path))
    try:
        yield
    finally:
        mocker.stopall()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.prune(keep_last_n=1),
        lambda r: r.prune(keep_last_n=1, remove_records=True),
        lambda r: r.write_summary(),
        lambda r: r.write_training_summary(),
        lambda r: r.refresh(),
        lambda r: r.write_metadata("walk_forward.json", {"a": 1}),
    ],
    ids=["prune", "prune-remove-records", "write_summary", "write_training_summary", "refresh", "write_metadata"],
)
def test_a_read_only_folder_is_a_commit_error(call, repo_copy, mocker):
    (repo_copy / "checkpoint_summary.json").unlink(missing_ok=True)
    (repo_copy / "training_summary.json").unlink(missing_ok=True)
    before = sorted(str(p.relative_to(repo_copy)) for p in repo_copy.rglob("*"))
    repo = CheckpointRepository(repo_copy)
    with _read_only([repo_copy, repo_copy / CK], mocker), pytest.raises(CommitError, match="permission denied"):
        call(repo)
    assert sorted(str(p.relative_to(repo_copy)) for p in repo_copy.rglob("*")) == before
    assert CheckpointRepository(repo_copy).verify() == []


def test_the_cli_on_a_read_only_folder_says_so(repo_copy, mocker):
    with _read_only([repo_copy, repo_copy / CK], mocker):
        rc, out = _cli("prune", str(repo_copy), "--keep-last-n", "1")
        rc2, out2 = _cli("summary", str(repo_copy))
    assert (rc, rc2) == (1, 1)
    assert "permission denied" in out and "permission denied" in out2 and "Traceback" not in out + out2


# -- fuzz ----------------------------------------------------------------------------------------------
_KEYS = [
    "schema_version", "iteration", "kind", "metrics", "artifacts", "selection", "metadata", "versions", "timesteps",
    "reason", "created_at", "pruned", "signature", "evaluation", "window_timesteps", "algorithm", "policy_class",
    "legacy_record", "n_evaluations", "error",
]  # fmt: skip
_PATHS = [
    "metrics.mean_reward", "selection.monitor", "selection.mode", "metadata.window", "metadata.window.val_start_time",
    "metadata.fingerprint", "artifacts.model", "artifacts.model.file", "artifacts.model.sha256",
    "artifacts.model.size", "artifacts.vecnormalize", "pruned.artifacts",
]  # fmt: skip
_NAMES = [
    "metrics_iter_1.json", "no_model_iter_1.json", "metrics_iter_0.json", "metrics_iter_2.json",
    "no_model_iter_3.json", "metrics_iter_01.json", "metrics_iter_\u0663.json", "metrics_iter_1.json\n",
    "metrics_iter_99999999999999999999999.json", "model_iter_4.zip", "vecnormalize_iter_1.pkl",
    "training_summary.json", "checkpoint_summary.json", "best_model.zip",
]  # fmt: skip
_ROOT_FILES = {"training_summary.json", "checkpoint_summary.json", "best_model.zip"}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**1024, 2**64, -1, 0, "$\\foo$", "../x", "max", "min"]),
    st.floats(),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _hostile_file(draw: st.DrawFn) -> tuple[str, str, Any]:
    """(file name, kind, what to write): a mutated copy of a real record, raw bytes, deep nesting, a folder."""
    other = st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=12)
    name = draw(st.sampled_from(_NAMES) | other.filter(lambda n: n not in (".", "..")))
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "legacy", "deep", "bytes", "folder"]))
    if kind == "bytes":
        return name, kind, draw(st.binary(max_size=64))
    if kind == "deep":
        return name, kind, draw(st.sampled_from([63, 65, 500, 5000, 200_000]))
    edits = draw(st.lists(st.tuples(st.sampled_from(_KEYS) | st.text(max_size=6), st.booleans(), _json), max_size=3))
    nested = draw(st.lists(st.tuples(st.sampled_from(_PATHS), _json), max_size=2))
    return name, kind, (draw(st.sampled_from([0, 1])), edits, nested)


def _contents(kind: str, plan: Any, records: list[dict[str, Any]]) -> bytes | None:
    """The bytes ``_hostile_file`` described; None: a folder in place of the file."""
    if kind == "folder":
        return None
    if kind == "bytes":
        return bytes(plan)
    if kind == "deep":
        return ('{"metrics": ' + "[" * plan + "]" * plan + "}").encode()
    index, edits, nested = plan
    rec = json.loads(json.dumps(records[index]))
    for key, delete, value in edits:
        if delete:
            rec.pop(key, None)
        else:
            rec[key] = value
    for path, value in nested:
        node = rec
        *parents, last = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    if kind == "legacy":
        rec.pop("schema_version", None)
    return json.dumps(rec).encode()  # big ints as integer literals, NaN/inf as tokens: hostile as they are


@settings(max_examples=100, deadline=None)  # about 30-60 s: each example runs every reader and verb
@given(files=st.lists(_hostile_file(), min_size=1, max_size=2), plot=st.integers(0, 4))
def test_fuzz_records_and_names_only_raise_package_errors(template, tmp_path_factory, files, plot):
    records = [json.loads(_record_text(template, i)) for i in (0, 1)]
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "repo"
    shutil.copytree(template, root)
    for name, kind, plan in files:
        path = (root if name in _ROOT_FILES else root / CK) / name
        data = _contents(kind, plan, records)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            if data is None:
                path.mkdir()
            else:
                path.write_bytes(data)
        except (OSError, ValueError):  # a name this file system refuses (too long, ".", not encodable)
            continue
    _every_reader(root, plot=plot == 0)  # a plot costs as much as all the rest: one example in five
    shutil.rmtree(root.parent)
