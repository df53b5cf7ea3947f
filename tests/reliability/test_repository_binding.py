"""A signed file belongs to one repository (issue 21, item 4): one key may sign several experiments, so a
record, model or forward file copied from another experiment signed with the same key must fail wherever it
is read (list, best, load, forward, verify), and a repository signed by the previous version keeps reading
as it did, its items bound by the first signed write of this version.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sb3_iter_ckpt import CheckpointRepository, SigningKeyError
from sb3_iter_ckpt.common.signing import MARKER, Signer
from sb3_iter_ckpt.forward import ForwardResult
from sb3_iter_ckpt.repository import SIGNING_KEY_ENV
from sb3_iter_ckpt.stats.metrics import trading_metrics

CK = "checkpoints"
KEY = "one key, two experiments"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


def _forward(i: int, returns: tuple[float, ...]) -> ForwardResult:
    positions = tuple(1.0 for _ in returns)
    equity = [1.0 + returns[0]]
    for r in returns[1:]:
        equity.append(equity[-1] * (1 + r))
    start = 10 * (i + 1)
    return ForwardResult(
        iteration=i,
        candidate=None,
        test_start=start,
        test_stop=start + len(returns),
        placeholder=False,
        rows=tuple(range(start + 1, start + 1 + len(returns))),
        dates=None,
        returns=returns,
        positions=positions,
        equity=tuple(equity),
        metrics=trading_metrics(list(returns), positions=list(positions), periods_per_year=252),
        periods_per_year=252,
    )


def _experiment(root, scores, tag: bytes) -> CheckpointRepository:
    repo = CheckpointRepository(root, signing_key=KEY)
    for i, score in enumerate(scores):
        repo.commit(i, metrics={"mean_reward": score}, model=tag + bytes([i]))
        repo.commit_forward(_forward(i, (0.01 * (i + 1), -0.005) if tag == b"A" else (-0.03, -0.04)))
    repo.refresh()
    return repo


@pytest.fixture
def two(tmp_path):
    a = _experiment(tmp_path / "a", [1.0, 3.0, 2.0, 1.5], b"A")
    b = _experiment(tmp_path / "b", [1.0, 1.0, 1.0, 9.0], b"B")
    return a.root, b.root


def _replay(src, dst, i: int, files=("metrics_iter_{i}.json", "model_iter_{i}.zip", "forward_iter_{i}.json")):
    for f in files:
        shutil.copyfile(src / CK / f.format(i=i), dst / CK / f.format(i=i))


@pytest.mark.filterwarnings("ignore:.*without a valid signature")
def test_a_record_model_and_forward_file_replayed_from_another_experiment_fail_everywhere(two):
    a, b = two
    assert CheckpointRepository(a, signing_key=KEY).best().iteration == 1
    _replay(b, a, 3)  # b's iteration 3 (score 9.0) would become the best
    repo = CheckpointRepository(a, signing_key=KEY)
    problems = {p.file for p in repo.verify()}
    assert {"metrics_iter_3.json"} <= problems, problems
    assert repo.iterations() == [0, 1, 2]
    assert repo.best().iteration == 1
    assert [r.iteration for r in repo.forwards()] == [0, 1, 2]


def test_a_forward_file_alone_from_another_experiment_is_refused_by_every_reader(two):
    a, b = two
    theirs = (b / CK / "forward_iter_2.json").read_bytes()
    (a / CK / "forward_iter_2.json").write_bytes(theirs)
    repo = CheckpointRepository(a, signing_key=KEY)
    assert "forward_iter_2.json" in {p.file for p in repo.verify()}
    with pytest.raises(Exception, match="another"):
        repo.forward(2)
    with pytest.raises(Exception, match="another"):
        repo.forwards()


def test_the_same_files_of_one_repository_still_verify_after_a_reopen(two):
    a, _ = two
    repo = CheckpointRepository(a, signing_key=KEY)
    assert repo.verify() == [] and repo.iterations() == [0, 1, 2, 3]
    marker = json.loads((a / MARKER).read_text())
    record = json.loads((a / CK / "metrics_iter_0.json").read_text())
    assert marker["format"] == 2 and record["repository"] == marker["repository_id"]
    other = json.loads((two[1] / MARKER).read_text())
    assert other["repository_id"] != marker["repository_id"], "each repository its own identity"


def _as_the_previous_version_left(root) -> None:
    """Records and forward files signed as the previous version did: no 'repository' field, marker format 1."""
    plain = Signer(KEY)
    for path in (root / CK).glob("*.json"):
        body = json.loads(path.read_text())
        body.pop("repository", None)
        body["signature"] = plain.sign(body)
        path.write_text(json.dumps(body))
    (root / MARKER).write_bytes(plain.marker())


@pytest.mark.filterwarnings("ignore:.*without a valid signature")
def test_a_repository_signed_by_the_previous_version_reads_as_before_and_is_bound_at_its_first_write(two):
    a, b = two
    _as_the_previous_version_left(a)
    _as_the_previous_version_left(b)
    repo = CheckpointRepository(a, signing_key=KEY)
    assert repo.verify() == [] and repo.iterations() == [0, 1, 2, 3], "nothing lost, nothing left out"
    assert "repository_id" not in json.loads((a / MARKER).read_text()), "reading writes nothing"
    repo.commit(4, metrics={"mean_reward": 0.5}, model=b"A4")  # the first signed write of this version
    marker = json.loads((a / MARKER).read_text())
    assert marker["format"] == 2 and len(marker["legacy"]) == 8, "4 records and 4 forward files bound"
    repo = CheckpointRepository(a, signing_key=KEY)
    assert repo.verify() == [] and repo.iterations() == [0, 1, 2, 3, 4]
    _replay(b, a, 3)  # an old-format item of another experiment, after the binding: refused
    repo = CheckpointRepository(a, signing_key=KEY)
    assert "metrics_iter_3.json" in {p.file for p in repo.verify()}
    assert repo.best().iteration == 1


def test_an_edited_marker_is_reported_and_refuses_writes(two):
    a, b = two
    _as_the_previous_version_left(b)
    marker = json.loads((a / MARKER).read_text())
    theirs = json.loads((b / CK / "metrics_iter_3.json").read_text())["signature"][:32]
    marker["legacy"].append(theirs)  # let b's old record in
    (a / MARKER).write_text(json.dumps(marker))
    repo = CheckpointRepository(a, signing_key=KEY)
    assert MARKER in {p.file for p in repo.verify()}
    with pytest.raises(SigningKeyError, match="edited"):
        repo.commit(9, metrics={"mean_reward": 0.0}, model=b"x")


@pytest.mark.filterwarnings("ignore:.*without a valid signature")
def test_a_deleted_marker_does_not_let_another_experiments_record_in(two):
    a, b = two
    (a / MARKER).unlink()
    _replay(b, a, 3)
    repo = CheckpointRepository(a, signing_key=KEY)
    problems = {p.file for p in repo.verify()}
    assert MARKER in problems and "metrics_iter_3.json" in problems
    assert repo.best().iteration == 1
    repo.commit(4, metrics={"mean_reward": 0.1}, model=b"A4")  # the key restores the marker, same identity
    assert (
        json.loads((a / MARKER).read_text())["repository_id"]
        == json.loads((a / CK / "metrics_iter_0.json").read_text())["repository"]
    )


def test_two_writers_upgrading_the_same_old_repository_agree_on_its_identity(two, tmp_path):
    # The upgrade overwrites a format-1 marker (no create-only write can guard it): the identity is derived
    # from the items it binds, so two writers that upgrade at once write the same marker.
    a, _ = two
    _as_the_previous_version_left(a)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    CheckpointRepository(a, signing_key=KEY).commit(4, metrics={"mean_reward": 0.5}, model=b"A4")
    CheckpointRepository(copy, signing_key=KEY).commit(4, metrics={"mean_reward": 0.6}, model=b"B4")
    ids = [json.loads((root / MARKER).read_text())["repository_id"] for root in (a, copy)]
    assert ids[0] == ids[1]
    assert CheckpointRepository(a, signing_key=KEY).verify() == []
