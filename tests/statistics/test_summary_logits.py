"""PBO's CSCV logits in the summaries: counted into a histogram with quantiles, the raw logits on request.

On the session's real run with two candidates and test parts (``candidates_run``: 180 forward periods,
16 blocks, 12,870 combinations).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from sb3_iter_ckpt import CheckpointRepository, pbo_logits
from sb3_iter_ckpt.cli import main as cli_main
from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.stats.overfitting import logit_summary


@pytest.fixture
def run_copy(candidates_run, tmp_path):
    root = tmp_path / "exp"
    shutil.copytree(candidates_run[0], root)
    return root


def _summary_pbo(root):
    return json.loads((root / rec.CHECKPOINT_SUMMARY).read_bytes())["analysis"]["forward"]["pbo"]


def test_the_summary_analyze_and_forward_json_hold_the_logits_binned_not_listed(run_copy, capsys):
    repo = CheckpointRepository(run_copy)
    repo.write_summary()
    pbo = _summary_pbo(run_copy)
    assert "logits" not in pbo and pbo["n_combinations"] == 12_870
    summary = pbo["logit_summary"]
    assert summary["count"] == 12_870 == sum(summary["histogram"]["counts"])
    assert len(summary["histogram"]["edges"]) == len(summary["histogram"]["counts"]) <= 40
    assert list(summary["quantiles"]) == ["p05", "p25", "p50", "p75", "p95"]
    assert len(json.dumps(pbo)) < 1_500  # the 12,870 logits alone are about 250 KB of JSON
    assert repo.analyze()["forward"]["pbo"] == pbo
    assert cli_main(["forward", str(run_copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pbo"] == pbo


def test_the_raw_logits_on_request_give_the_same_pbo_and_summary(run_copy, capsys):
    repo = CheckpointRepository(run_copy)
    pbo = repo.forward_report()["pbo"]
    logits = pbo_logits(repo)
    assert len(logits) == 12_870
    assert np.mean(np.asarray(logits) <= 0) == pbo["pbo"]
    hist = pbo["logit_summary"]["histogram"]  # the overfit bins (right edge <= 0) hold the PBO's share
    overfit = sum(n for (_, hi), n in zip(hist["edges"], hist["counts"], strict=True) if hi <= 0)
    assert overfit / pbo["logit_summary"]["count"] == pbo["pbo"]
    assert logit_summary(logits) == pbo["logit_summary"]
    assert cli_main(["forward", str(run_copy), "--json", "--logits"]) == 0
    printed = json.loads(capsys.readouterr().out)["pbo"]
    assert printed == {**pbo, "logits": logits}
    assert cli_main(["forward", str(run_copy), "--logits"]) == 2  # only beside --json
    assert "pass --json too" in capsys.readouterr().err


def test_a_summary_with_the_raw_logits_is_read_and_rewritten_binned_at_the_next_refresh(run_copy):
    repo = CheckpointRepository(run_copy)
    repo.write_summary()
    path = run_copy / rec.CHECKPOINT_SUMMARY
    old = json.loads(path.read_bytes())
    pbo = old["analysis"]["forward"]["pbo"]
    # the previous version's form: the logits listed, no logit_summary
    pbo["logits"] = pbo_logits(repo)
    del pbo["logit_summary"]
    old["metadata"]["created_at"] = "2020-01-02T03:04:05.000+00:00"
    path.write_bytes(rec.dumps(old))
    assert len(path.read_bytes()) > 200_000
    repo.refresh()
    new = json.loads(path.read_bytes())
    assert new["metadata"]["created_at"] == "2020-01-02T03:04:05.000+00:00"  # read back and kept
    assert "logits" not in new["analysis"]["forward"]["pbo"]
    assert new["analysis"]["forward"]["pbo"]["logit_summary"]["count"] == 12_870
    assert len(path.read_bytes()) < 40_000  # 410 KB before, 25 KB now
    written = path.read_bytes()
    CheckpointRepository(run_copy).refresh()  # nothing changed: left as it is
    assert path.read_bytes() == written
