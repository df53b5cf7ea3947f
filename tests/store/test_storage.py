"""``LocalStorage``: the commit protocol, rollback, sweep, paths and symlinks, locking. No training here."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from sb3_iter_ckpt import CheckpointError, CheckpointExistsError, CommitError, IntegrityError, UnsafePathError
from sb3_iter_ckpt.store.index import referenced
from sb3_iter_ckpt.store.storage import LocalStorage, check_name, sha256_bytes
from sb3_iter_ckpt.store.storage import local as local_mod

CK = "checkpoints"


def _files(root):
    """Every file under ``root`` (relative names), hidden ones included, but not the lock file."""
    out = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if rel != ".lock":
                out.append(rel)
    return sorted(out)


def _commit(st: LocalStorage, i: int, payload: bytes = b"model", **kw):
    staged = [st.stage(f"{CK}/model_iter_{i}.zip", payload)]
    st.publish(staged, f"{CK}/metrics_iter_{i}.json", b'{"i": %d}' % i, **kw)
    return staged


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "checkpoints/model_iter_0.zip", "x/y/z.json", ".hidden"])
def test_check_name_accepts_relative_names(name):
    assert str(check_name(name)) == name


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/../../x", "checkpoints/../../x", "/etc/passwd", "//x", "~/x", "~root", "a\\b", "a\x00b", None, 3],
)
def test_check_name_refuses_escapes(name):
    with pytest.raises(UnsafePathError):
        check_name(name)


@pytest.mark.parametrize("verb", ["read_bytes", "hash_file", "delete", "exists", "write_atomic", "stage"])
def test_every_verb_refuses_escaping_names(tmp_path, verb):
    st = LocalStorage(tmp_path / "repo")
    (tmp_path / "secret").write_bytes(b"keep")
    args = {"write_atomic": (b"x",), "stage": (b"x",)}.get(verb, ())
    for name in ("../secret", str(tmp_path / "secret")):
        with pytest.raises(UnsafePathError):
            getattr(st, verb)(name, *args)
    assert (tmp_path / "secret").read_bytes() == b"keep"


# -- the commit protocol ---------------------------------------------------------------------------
def test_stage_then_publish(tmp_path):
    st = LocalStorage(tmp_path)
    s = st.stage(f"{CK}/model_iter_0.zip", lambda f: f.write(b"abc" * 1000))
    assert s.sha256 == sha256_bytes(b"abc" * 1000) and s.size == 3000
    assert _files(tmp_path) == [f"{CK}/{os.path.basename(s.temp)}"], "staged under a hidden temporary name"
    st.publish([s], f"{CK}/metrics_iter_0.json", b"{}")
    assert _files(tmp_path) == [f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]
    assert st.read_bytes(f"{CK}/model_iter_0.zip") == b"abc" * 1000
    assert st.hash_file(f"{CK}/model_iter_0.zip") == (s.sha256, 3000)


def test_publish_refuses_a_committed_iteration_and_discards_nothing_else(tmp_path):
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"first")
    staged = [st.stage(f"{CK}/model_iter_0.zip", b"second")]
    with pytest.raises(CheckpointExistsError, match="already exists"):
        st.publish(staged, f"{CK}/metrics_iter_0.json", b"{}", conflicts=[f"{CK}/metrics_iter_0.json"])
    assert st.read_bytes(f"{CK}/model_iter_0.zip") == b"first"
    # the staged file is left to the caller (automatic numbering publishes it under the next number)
    assert st.read_bytes(staged[0].temp) == b"second"
    st.discard(staged)
    assert _files(tmp_path) == [f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"], "temporaries discarded"


def test_record_publication_is_create_only(tmp_path):
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"first")
    # without a conflicts list (as a writer bypassing the check would), os.link still refuses
    with pytest.raises(CheckpointExistsError, match="another writer"):
        st.publish([], f"{CK}/metrics_iter_0.json", b'{"other": 1}')
    assert st.read_bytes(f"{CK}/metrics_iter_0.json") == b'{"i": 0}'
    assert not [n for n in _files(tmp_path) if "tmp-" in n or "intent" in n]


@pytest.mark.parametrize("failing_call", [1, 2])  # folder fsyncs: after the renames, after the link
def test_fsync_failure_anywhere_in_publish_rolls_everything_back(tmp_path, mocker, failing_call):
    """Regression: an fsync error *after* the record was linked left a record naming removed artifacts."""
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"keep")
    before = {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)}
    real = LocalStorage._fsync_dir
    calls = {"n": 0}

    def flaky(self, folder):
        calls["n"] += 1
        if calls["n"] == failing_call:
            raise OSError(errno.EIO, "Input/output error")
        return real(self, folder)

    staged = [st.stage(f"{CK}/model_iter_1.zip", b"new")]
    mocker.patch.object(LocalStorage, "_fsync_dir", flaky)
    with pytest.raises(OSError):
        st.publish(staged, f"{CK}/metrics_iter_1.json", b"{}")
    mocker.stopall()
    assert {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)} == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors through /proc")
@pytest.mark.parametrize("failing", ["model_iter_1.zip", "metrics_iter_1.json"])
def test_a_failed_sync_of_the_bytes_fails_the_publish_and_leaves_nothing(tmp_path, mocker, failing):
    """The bytes sync in a background thread: its error still fails the publish, before any name is given."""
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"keep")
    before = {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)}
    real = os.fsync

    def failing_sync(fd):
        if failing in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)

    mocker.patch.object(local_mod.os, "fsync", failing_sync)
    staged = [st.stage(f"{CK}/model_iter_1.zip", b"new")]
    with pytest.raises(OSError, match="Input/output error"):
        st.publish(staged, f"{CK}/metrics_iter_1.json", b"{}")
    mocker.stopall()
    assert {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)} == before


def _commit_in_child(root: str) -> None:
    _commit(LocalStorage(root), 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_commits_after_its_parent_did(tmp_path):
    """A process pool's forked worker has none of its parent's threads, the background syncs' included."""
    _commit(LocalStorage(tmp_path / "parent"), 0)  # the parent's sync thread exists, idle
    child = multiprocessing.get_context("fork").Process(target=_commit_in_child, args=(str(tmp_path / "child"),))
    child.start()
    child.join(60)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung and child.exitcode == 0
    assert (tmp_path / "child" / CK / "metrics_iter_0.json").read_bytes() == b'{"i": 0}'


def test_link_failure_rolls_back_renamed_artifacts(tmp_path, mocker):
    st = LocalStorage(tmp_path)
    staged = [st.stage(f"{CK}/model_iter_0.zip", b"m"), st.stage(f"{CK}/vecnormalize_iter_0.pkl", b"v")]
    mocker.patch.object(local_mod.os, "link", side_effect=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError):
        st.publish(staged, f"{CK}/metrics_iter_0.json", b"{}")
    mocker.stopall()
    assert _files(tmp_path) == []


def test_write_atomic_failure_keeps_the_old_content(tmp_path, mocker):
    st = LocalStorage(tmp_path)
    st.write_atomic("training_summary.json", b"old")
    mocker.patch.object(local_mod.os, "replace", side_effect=OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        st.write_atomic("training_summary.json", b"new")
    mocker.stopall()
    assert st.read_bytes("training_summary.json") == b"old"
    assert _files(tmp_path) == ["training_summary.json"]


def test_explicit_replace_deletes_first(tmp_path):
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"old")
    st.stage(f"{CK}/model_iter_0.zip", b"new")  # a stray temporary of ours: not touched by replace
    staged = [st.stage(f"{CK}/model_iter_0.zip", b"new")]
    st.publish(
        staged, f"{CK}/metrics_iter_0.json", b"{}", replace=[f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]
    )
    assert st.read_bytes(f"{CK}/model_iter_0.zip") == b"new" and st.read_bytes(f"{CK}/metrics_iter_0.json") == b"{}"


def test_copy_file_makes_an_independent_copy(tmp_path):
    """best_model.zip is a copy, never a hard link: writing it in place cannot reach the committed model."""
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"model bytes")
    (tmp_path / "best_model.zip").write_bytes(b"an older copy")
    held = open(tmp_path / "best_model.zip", "r+b")  # a writer that opened the old file keeps its own inode
    st.copy_file(f"{CK}/model_iter_0.zip", "best_model.zip")
    held.write(b"late write")
    held.close()
    assert (tmp_path / "best_model.zip").read_bytes() == b"model bytes"
    assert not os.path.samefile(tmp_path / "best_model.zip", tmp_path / CK / "model_iter_0.zip")
    with open(tmp_path / "best_model.zip", "r+b") as f:  # what model.save(root / "best_model.zip") does
        f.write(b"overwritten")
    assert (tmp_path / CK / "model_iter_0.zip").read_bytes() == b"model bytes"
    assert sorted(_files(tmp_path)) == ["best_model.zip", f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]


def test_copy_file_onto_an_earlier_copy_leaves_no_temporary(tmp_path):
    """A refresh copies the same best again (a fresh repository object does at every refresh): no temporary
    may stay behind, and the copy never becomes a second name of the committed file."""
    st = LocalStorage(tmp_path)
    _commit(st, 0, b"model bytes")
    for _ in range(2):
        st.copy_file(f"{CK}/model_iter_0.zip", "best_model.zip")
    assert (tmp_path / "best_model.zip").stat().st_ino != (tmp_path / CK / "model_iter_0.zip").stat().st_ino
    assert sorted(_files(tmp_path)) == ["best_model.zip", f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]


# -- reading -------------------------------------------------------------------------------------
def test_read_errors_are_integrity_errors(tmp_path):
    st = LocalStorage(tmp_path)
    (tmp_path / CK).mkdir()
    (tmp_path / "file").write_bytes(b"x")
    for name in (f"{CK}/missing.zip", CK, "file/below"):
        with pytest.raises(IntegrityError):
            st.read_bytes(name)
        with pytest.raises(IntegrityError):
            st.hash_file(name)


def test_listdir_of_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    st = LocalStorage(tmp_path / "afile")
    with pytest.raises(CheckpointError, match="cannot list"):
        st.listdir(CK)
    assert LocalStorage(tmp_path / "absent").listdir(CK) == {}


def _as_listed(st: LocalStorage, folder: str, prefixes: tuple[str, ...]) -> dict:
    """What ``read_listing`` must answer: ``listdir``'s stats and ``read_bytes``'s bytes, or its error's type."""
    out = {}
    for name, stat in st.listdir(folder, prefixes=prefixes).items():
        try:
            out[name] = (stat, stat.links, st.read_bytes(f"{folder}/{name}"))
        except CheckpointError as exc:
            out[name] = (stat, stat.links, type(exc))
    return out


def test_read_listing_is_listdir_and_read_bytes_in_one_pass(tmp_path):
    """The cold scan's one pass sees what a listing and one read per file would: symlinks, odd entries included."""
    secret = _outside_file(tmp_path, "secret.json", b"outside")
    root = tmp_path / "repo"
    st = LocalStorage(root)
    for i in range(3):
        _commit(st, i)
    ck = root / CK
    (ck / "metrics_iter_7.json").symlink_to(ck / "metrics_iter_0.json")  # inward: read through it
    (ck / "metrics_iter_8.json").symlink_to(secret)  # outward: its error, never its bytes
    (ck / "metrics_iter_9.json").symlink_to(ck / "absent.json")  # dangling
    (ck / "metrics_iter_10.json").mkdir()  # a folder holding a record's name: not a file
    os.mkfifo(ck / "metrics_iter_11.json")  # opened, a FIFO would block: never opened
    os.link(ck / "metrics_iter_1.json", ck / "metrics_iter_12.json")  # a second link: links counted
    (ck / "metrics_iter_13.json").write_bytes(b"x" * 200_000)  # more than one read
    prefixes = ("metrics_iter_", "no_model_iter_")
    got = {n: (stat, stat.links, b if isinstance(b, bytes) else type(b)) for n, (stat, b) in
           st.read_listing(CK, prefixes).items()}  # fmt: skip
    assert got == _as_listed(st, CK, prefixes)
    assert got["metrics_iter_8.json"][2] is UnsafePathError and got["metrics_iter_12.json"][1] == 2
    assert "metrics_iter_11.json" not in got and "model_iter_0.zip" not in got
    assert LocalStorage(tmp_path / "absent").read_listing(CK, prefixes) == {}


def test_read_listing_reads_only_the_names_wanted(tmp_path, mocker):
    """A file that only starts like a record (a backup, another tool's file of any size) is never read."""
    st = LocalStorage(tmp_path)
    _commit(st, 0)
    (tmp_path / CK / "metrics_iter_0.json.bak").write_bytes(b"x" * 100_000)
    read = mocker.spy(local_mod, "_read_regular")
    got = st.read_listing(CK, ("metrics_iter_",), wanted=lambda name: name.endswith(".json"))
    assert list(got) == ["metrics_iter_0.json"]
    assert [call.args[0] for call in read.call_args_list] == ["metrics_iter_0.json"]


# -- symlinks ------------------------------------------------------------------------------------
def _outside_file(tmp_path, name: str, data: bytes):
    """A file in a folder next to (outside) the repository root."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / name).write_bytes(data)
    return outside / name


def test_outward_symlinks_are_not_followed(tmp_path):
    outside = _outside_file(tmp_path, "target.zip", b"precious").parent
    root = tmp_path / "repo"
    st = LocalStorage(root)
    _commit(st, 0)
    link = root / CK / "model_iter_5.zip"
    link.symlink_to(outside / "target.zip")
    with pytest.raises(UnsafePathError, match="not followed"):
        st.read_bytes(f"{CK}/model_iter_5.zip")
    with pytest.raises(UnsafePathError):
        st.hash_file(f"{CK}/model_iter_5.zip")
    # a write to that name replaces the link itself
    st.publish([st.stage(f"{CK}/model_iter_5.zip", b"ours")], f"{CK}/metrics_iter_5.json", b"{}")
    assert not link.is_symlink() and link.read_bytes() == b"ours"
    assert (outside / "target.zip").read_bytes() == b"precious"
    # a delete removes the link, never the target
    (root / "best_model.zip").symlink_to(outside / "target.zip")
    assert st.delete("best_model.zip") and not os.path.lexists(root / "best_model.zip")
    st2 = root / "x.json"
    st2.symlink_to(outside / "target.zip")
    st.write_atomic("x.json", b"summary")
    assert not st2.is_symlink() and (outside / "target.zip").read_bytes() == b"precious"


def test_outward_symlinked_folder_refused_for_reads_and_writes(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "repo"
    root.mkdir()
    (root / CK).symlink_to(outside)
    st = LocalStorage(root)
    for call in (
        lambda: st.stage(f"{CK}/model_iter_0.zip", b"x"),
        lambda: st.write_atomic(f"{CK}/metrics_iter_0.json", b"x"),
        lambda: st.delete(f"{CK}/anything"),
        lambda: st.read_bytes(f"{CK}/anything"),
        lambda: st.listdir(CK),
    ):
        with pytest.raises(UnsafePathError, match="outside"):
            call()
    assert list(outside.iterdir()) == []


def test_inward_symlinks_and_a_symlinked_root_are_fine(tmp_path):
    real = tmp_path / "real"
    st0 = LocalStorage(real)
    _commit(st0, 0, b"m0")
    (real / "alias.zip").symlink_to(real / CK / "model_iter_0.zip")
    (tmp_path / "via-link").symlink_to(real)
    st = LocalStorage(tmp_path / "via-link")
    assert st.read_bytes("alias.zip") == b"m0"
    _commit(st, 1, b"m1")
    assert (real / CK / "model_iter_1.zip").read_bytes() == b"m1"


# -- sweep ---------------------------------------------------------------------------------------
def _opened(st: LocalStorage) -> LocalStorage:
    """``st`` as a repository opens it: told which files a committed record names."""
    st.references = referenced
    return st


def test_sweep_rolls_back_a_dead_writers_intent(tmp_path):
    st = _opened(LocalStorage(tmp_path))
    _commit(st, 0, b"keep")
    dead = _dead_pid()
    ck = tmp_path / CK
    (ck / "model_iter_1.zip").write_bytes(b"renamed, no record yet")
    (ck / ".sb3ckpt-intent-iter-1.json").write_text(
        json.dumps({"record": f"{CK}/metrics_iter_1.json", "artifacts": [f"{CK}/model_iter_1.zip"], "pid": dead})
    )
    host = socket.gethostname()
    (ck / f".vecnormalize_iter_1.pkl.sb3ckpt-tmp-{host}-{dead}-0123abcd").write_bytes(b"staged")
    (ck / f".metrics_iter_1.json.sb3ckpt-tmp-{host}-{dead}-89abcdef").write_bytes(b"{}")
    (tmp_path / f".best_model.zip.sb3ckpt-tmp-{host}-{dead}-00000000").write_bytes(b"")
    removed = st.sweep()
    assert f"{CK}/model_iter_1.zip" in removed and len(removed) == 5
    assert _files(tmp_path) == [f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]


def test_sweep_keeps_a_committed_iteration_named_by_a_leftover_intent(tmp_path):
    st = _opened(LocalStorage(tmp_path))
    _commit(st, 1, b"committed")
    (tmp_path / CK / ".sb3ckpt-intent-iter-1.json").write_text(
        json.dumps({"record": f"{CK}/metrics_iter_1.json", "artifacts": [f"{CK}/model_iter_1.zip"], "pid": 1})
    )
    assert st.sweep() == [f"{CK}/.sb3ckpt-intent-iter-1.json"]
    assert st.read_bytes(f"{CK}/model_iter_1.zip") == b"committed"


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"record": 3}', b'{"record": "../../x", "artifacts": []}'])
def test_sweep_removes_a_corrupt_intent_and_nothing_else(tmp_path, content):
    st = LocalStorage(tmp_path)
    _commit(st, 0)
    (tmp_path / CK / ".sb3ckpt-intent-iter-0.json").write_bytes(content)
    st.sweep()
    assert _files(tmp_path) == [f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]


def test_sweep_spares_live_and_recent_foreign_temporaries(tmp_path):
    st = LocalStorage(tmp_path, temp_grace=3600)
    ck = tmp_path / CK
    ck.mkdir()
    host = socket.gethostname()
    live = ck / f".model_iter_0.zip.sb3ckpt-tmp-{host}-{os.getpid()}-0123abcd"
    foreign_new = ck / ".model_iter_1.zip.sb3ckpt-tmp-other-host-1-0123abcd"
    foreign_old = ck / ".model_iter_2.zip.sb3ckpt-tmp-other-host-1-0123abce"
    unrelated = ck / ".notes"
    for p in (live, foreign_new, foreign_old, unrelated):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(foreign_old, (old, old))
    assert st.sweep() == [f"{CK}/{foreign_old.name}"]
    assert live.exists() and foreign_new.exists() and unrelated.exists()


def test_without_references_a_rollback_keeps_every_artifact(tmp_path):
    """Storage never reads a record: until a repository tells it what records name, nothing named is removed."""
    st = LocalStorage(tmp_path)
    (tmp_path / CK).mkdir()
    (tmp_path / CK / "model_iter_1.zip").write_bytes(b"renamed, no record yet")
    (tmp_path / CK / ".sb3ckpt-intent-iter-1.json").write_text(
        json.dumps({"record": f"{CK}/metrics_iter_1.json", "artifacts": [f"{CK}/model_iter_1.zip"]})
    )
    assert st.sweep() == [f"{CK}/.sb3ckpt-intent-iter-1.json"]
    assert (tmp_path / CK / "model_iter_1.zip").exists()


def test_a_forged_intent_cannot_delete_a_committed_record(tmp_path):
    from sb3_iter_ckpt import CheckpointRepository

    repo = CheckpointRepository(tmp_path)
    repo.commit(3, metrics={}, reason="no_evaluation")
    repo.commit(4, metrics={"mean_reward": 1.0}, model=b"model 4")
    for i, names in ((3, ["no_model_iter_3.json", "model_iter_3.zip"]), (4, ["metrics_iter_4.json"])):
        body = {"record": f"{CK}/metrics_iter_{i}.json" if i == 3 else f"{CK}/no_model_iter_4.json"}
        body["artifacts"] = [f"{CK}/{n}" for n in names]
        (tmp_path / CK / f".sb3ckpt-intent-iter-{i}.json").write_text(json.dumps(body))
    CheckpointRepository(tmp_path)  # its sweep rolls the intents back
    assert repo.iterations() == [3, 4] and repo.verify() == []
    assert not list((tmp_path / CK).glob(".sb3ckpt-intent-*"))


def test_sweep_removes_the_intent_of_a_writer_killed_right_after_publishing_signing_json(tmp_path):
    """Found by the kill harness (walk-forward scenario, signed): a writer killed between the marker's
    create-only link and dropping its intent left ``.sb3ckpt-intent-signing.json``, which no sweep removed
    (only iteration intents were recognized) and no later write replaced (the marker exists by then)."""
    from sb3_iter_ckpt import CheckpointRepository

    root = tmp_path / "repo"
    child = textwrap.dedent(
        """
        import os, signal, sys
        from sb3_iter_ckpt import CheckpointRepository

        unlink = os.unlink

        def killed_before_dropping_the_intent(path, *args, **kwargs):
            if str(path).endswith(".sb3ckpt-intent-signing.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return unlink(path, *args, **kwargs)

        os.unlink = killed_before_dropping_the_intent
        CheckpointRepository(sys.argv[1], signing_key="k").commit(0, metrics={"mean_reward": 1.0}, model=b"m")
        """
    )
    proc = subprocess.run([sys.executable, "-c", child, str(root)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert _files(root) == [".sb3ckpt-intent-signing.json", "signing.json"]
    repo = CheckpointRepository(root, signing_key="k")  # its sweep
    assert _files(root) == ["signing.json"]
    repo.commit(0, metrics={"mean_reward": 1.0}, model=b"m")
    assert repo.verify() == [] and not list(root.rglob(".sb3ckpt-intent-*"))


def test_an_intent_of_a_record_that_is_no_iterations_removes_only_itself(tmp_path):
    """The signing marker's intent names no artifact; a forged one that does costs nothing but itself."""
    st = _opened(LocalStorage(tmp_path))
    _commit(st, 0, b"committed 0")
    st.write_atomic("best_model.zip", b"best")
    st.write_atomic("notes.txt", b"a user's file")
    forged = {"record": "signing.json", "artifacts": ["best_model.zip", "notes.txt", f"{CK}/model_iter_0.zip"]}
    (tmp_path / ".sb3ckpt-intent-signing.json").write_text(json.dumps(forged))
    (tmp_path / ".sb3ckpt-intent-notes.json").write_text(json.dumps({"record": "notes.txt", "artifacts": []}))
    assert sorted(st.sweep()) == [".sb3ckpt-intent-notes.json", ".sb3ckpt-intent-signing.json"]
    assert _files(tmp_path) == ["best_model.zip", f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip", "notes.txt"]


def test_sweep_of_a_missing_root_does_nothing(tmp_path):
    assert LocalStorage(tmp_path / "nope").sweep() == []
    assert not (tmp_path / "nope").exists()


def test_opening_a_clean_folder_writes_nothing_not_even_a_lock(tmp_path):
    from sb3_iter_ckpt import CheckpointRepository

    ck = tmp_path / CK
    ck.mkdir()
    (ck / "model_iter_0.zip").write_bytes(b"a seed script's model")
    (ck / "metrics_iter_0.json").write_text('{"iteration": 0}')
    (ck / ".notes").write_text("a user's hidden file")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    repo = CheckpointRepository(tmp_path)
    assert [c.iteration for c in repo.list()] == [0]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # no .lock, nothing touched


def test_a_leftover_is_still_swept_at_open_under_the_lock(tmp_path, mocker):
    from sb3_iter_ckpt import CheckpointRepository

    ck = tmp_path / CK
    ck.mkdir()
    leftover = ck / f".model_iter_0.zip.sb3ckpt-tmp-{socket.gethostname()}-{_dead_pid()}-0123abcd"
    leftover.write_bytes(b"partial")
    lock = mocker.spy(LocalStorage, "lock")
    CheckpointRepository(tmp_path)
    assert not leftover.exists() and lock.call_count == 1


# -- locking -------------------------------------------------------------------------------------
def test_lock_excludes_another_process(tmp_path):
    st = LocalStorage(tmp_path, lock_timeout=0.3)
    st.sweep()  # creates the root
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from filelock import FileLock
                with FileLock({str(tmp_path / ".lock")!r}):
                    print("held", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        staged = [st.stage(f"{CK}/model_iter_0.zip", b"m")]
        with pytest.raises(CommitError, match="could not lock"):
            st.publish(staged, f"{CK}/metrics_iter_0.json", b"{}")
        st.discard(staged)
    finally:
        holder.communicate("go\n", timeout=30)
    _commit(st, 0)  # released: the commit goes through
    assert st.exists(f"{CK}/metrics_iter_0.json")


def test_a_forged_intent_cannot_delete_committed_or_foreign_files(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    root = tmp_path / "repo"
    st = _opened(LocalStorage(root))
    _commit(st, 0, b"committed 0")
    st.write_atomic("best_model.zip", b"best")
    forged = {
        "record": f"{CK}/metrics_iter_7.json",
        "artifacts": [
            f"{CK}/model_iter_0.zip",  # another iteration's committed model
            f"{CK}/metrics_iter_0.json",
            "best_model.zip",  # another folder
            "../outside.txt",  # outside the root
            f"{CK}/../best_model.zip",
            17,
        ],
    }
    (root / CK / ".sb3ckpt-intent-iter-7.json").write_text(json.dumps(forged))
    # and an intent whose record is not its own iteration's
    (root / CK / ".sb3ckpt-intent-iter-8.json").write_text(
        json.dumps({"record": f"{CK}/metrics_iter_0.json", "artifacts": [f"{CK}/model_iter_0.zip"]})
    )
    assert sorted(st.sweep()) == [f"{CK}/.sb3ckpt-intent-iter-7.json", f"{CK}/.sb3ckpt-intent-iter-8.json"]
    assert _files(root) == ["best_model.zip", f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]
    assert outside.read_bytes() == b"keep"


def test_a_close_reporting_a_write_error_leaves_no_intent(tmp_path, monkeypatch):
    """On NFS ``close`` may be where ENOSPC or EIO is reported: the intent is removed, nothing is committed."""
    st = LocalStorage(tmp_path)
    _commit(st, 0)
    intents: set[int] = set()
    real_open, real_close = os.open, os.close

    def fake_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if ".sb3ckpt-intent-" in os.fspath(path):
            intents.add(fd)
        return fd

    def fake_close(fd):
        real_close(fd)  # closed, as close(2) leaves it even when it reports an error
        if fd in intents:
            intents.discard(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(local_mod.os, "open", fake_open)
    monkeypatch.setattr(local_mod.os, "close", fake_close)
    staged = [st.stage(f"{CK}/model_iter_1.zip", b"model")]
    with pytest.raises(OSError, match="Input/output error"):
        st.publish(staged, f"{CK}/metrics_iter_1.json", b'{"i": 1}')
    monkeypatch.undo()
    # the intent gone with the staged model and the record's temporary: only iteration 0 is there
    assert _files(tmp_path) == [f"{CK}/metrics_iter_0.json", f"{CK}/model_iter_0.zip"]


def test_a_symlink_planted_at_the_intents_name_is_replaced_never_followed(tmp_path):
    """Another program's link at ``.sb3ckpt-intent-iter-1.json`` while a writer runs: the commit goes through,
    the file it points at is untouched, and neither the link nor the intent is left."""
    st = LocalStorage(tmp_path / "repo")
    _commit(st, 0)
    outside = tmp_path / "someone_elses.txt"
    outside.write_text("not the repository's")
    planted = tmp_path / "repo" / CK / ".sb3ckpt-intent-iter-1.json"
    planted.symlink_to(outside)
    _commit(st, 1)
    assert outside.read_text() == "not the repository's"
    assert not os.path.lexists(planted)
    assert _files(tmp_path / "repo") == [f"{CK}/metrics_iter_{i}.json" for i in (0, 1)] + [
        f"{CK}/model_iter_{i}.zip" for i in (0, 1)
    ]
