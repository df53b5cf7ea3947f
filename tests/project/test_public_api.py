"""The public surface: the import paths users rely on, and every name the API pages document.

The package's internals (``common/``, ``store/``, ``runner/``, ``stats/``) may move; these may not.
``PUBLIC_NAMES`` is what each public path exported before the layout change (issue 20), frozen:
a name removed from a public path fails here, so it is a decision, not an accident.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api"

PUBLIC_NAMES: dict[str, list[str]] = {
    "sb3_iter_ckpt": [
        "Checkpoint",
        "CheckpointError",
        "CheckpointExistsError",
        "CheckpointNotFound",
        "CheckpointRepository",
        "CommitError",
        "ConfigMismatchError",
        "IntegrityError",
        "IterationCheckpointCallback",
        "Problem",
        "PruneResult",
        "RecordError",
        "SignatureError",
        "SigningKeyError",
        "UnsafePathError",
        "VerifyReport",
        "__version__",
    ],
    "sb3_iter_ckpt.callback": ["IterationCheckpointCallback"],
    "sb3_iter_ckpt.repository": [
        "CheckpointRepository",
        "LEGACY_MONITORS",
        "Problem",
        "PruneResult",
        "SIGNING_KEY_ENV",
        "Signer",
        "VerifyReport",
        "candidate_forwards",
        "versions",
    ],
    "sb3_iter_ckpt.retention": [
        "AnyOf",
        "KeepAll",
        "KeepBestK",
        "KeepEveryN",
        "KeepLastN",
        "PROTECT_BEST",
        "PROTECT_LATEST",
        "PROTECT_PLACEHOLDER",
        "PROTECT_PRUNED",
        "RetentionPlan",
        "RetentionPolicy",
        "is_pruned",
        "plan",
        "policy_from_args",
        "ranked",
    ],
    "sb3_iter_ckpt.walkforward": [
        "ALGORITHMS",
        "RUN_FILE",
        "WalkForwardResult",
        "WalkForwardRunner",
        "run_many",
        "run_walk_forward",
    ],
    "sb3_iter_ckpt.splitter": ["SplitError", "WalkForwardSplitter", "Window"],
    "sb3_iter_ckpt.forward": [
        "FORMAT",
        "FORMAT_VERSION",
        "ForwardResult",
        "StitchedForward",
        "evaluate_forward",
        "forward_report",
        "forward_statistics",
        "pbo_partitions",
        "placeholder_forward",
        "selection_vs_forward",
        "stitch",
    ],
    "sb3_iter_ckpt.overfitting": [
        "BacktestOverfitting",
        "EULER_GAMMA",
        "deflated_sharpe_ratio",
        "expected_max_sharpe_ratio",
        "probabilistic_sharpe_ratio",
        "probability_of_backtest_overfitting",
        "sharpe_ratio",
        "walk_forward_efficiency",
    ],
    "sb3_iter_ckpt.metrics": [
        "METRIC_KEYS",
        "cagr",
        "calmar",
        "exposure",
        "max_drawdown",
        "n_trades",
        "returns_from_equity",
        "sharpe",
        "sortino",
        "total_return",
        "trading_metrics",
        "volatility",
        "win_rate",
    ],
    "sb3_iter_ckpt.envs": ["TradingEnv", "evaluate_trading"],
    "sb3_iter_ckpt.report": [
        "FORWARD_MISSING",
        "ForwardCurve",
        "ForwardData",
        "ForwardWindow",
        "IterationRow",
        "MAX_FALLBACK_ROWS",
        "MAX_HISTOGRAM_BINS",
        "MAX_LINE_POINTS",
        "RUN_FILE",
        "ReportData",
        "bin_logits",
        "collect_report",
        "decimate_line",
        "default_report_path",
        "forward_curve",
        "forward_data",
        "forward_data_from_results",
        "forward_metric",
        "plotly_bundle",
        "render_report",
        "write_report",
    ],
    "sb3_iter_ckpt.legacy": [
        "CHECKPOINTS_DIR",
        "analyze_checkpoint_performance",
        "cleanup_checkpoints",
        "create_checkpoint_summary",
        "list_checkpoints",
        "load_checkpoint_model",
    ],
    "sb3_iter_ckpt.errors": [
        "CheckpointError",
        "CheckpointExistsError",
        "CheckpointNotFound",
        "CommitError",
        "ConfigMismatchError",
        "IntegrityError",
        "RecordError",
        "SignatureError",
        "SigningKeyError",
        "UnsafePathError",
    ],
    "sb3_iter_ckpt.data": [
        "DEFAULT_REGIMES",
        "DataError",
        "data_fingerprint",
        "estimate_periods_per_year",
        "load_prices_csv",
        "synthetic_prices",
    ],
    "sb3_iter_ckpt.cli": ["main"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_every_public_path_still_exports_its_names(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC_NAMES[module] if not hasattr(mod, name)]
    assert not missing, f"{module} no longer exports {missing}"


_DIRECTIVE = re.compile(r"^\.\. (auto\w+|currentmodule):: (\S+)\s*$")
_MEMBERS = re.compile(r"^\s+:members:(.*)$")


def documented_names(text: str) -> list[str]:
    """Dotted names an API page documents: each ``auto*`` target (resolved against ``currentmodule``)
    and each name of an explicit ``:members:`` list."""
    names: list[str] = []
    current = ""
    last = ""
    for line in text.splitlines():
        if m := _DIRECTIVE.match(line):
            kind, target = m.groups()
            if kind == "currentmodule":
                current = target
                continue
            last = target if kind == "automodule" or "." in target else f"{current}.{target}"
            names.append(last)
        elif (m := _MEMBERS.match(line)) and last:
            names += [f"{last}.{n.strip()}" for n in m.group(1).split(",") if n.strip()]
    return names


def resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if isinstance(obj, type) and not hasattr(obj, attr) and f"self.{attr}:" in inspect.getsource(obj):
                return obj  # an instance attribute documented with ``#:`` in ``__init__``
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


PAGES = sorted(API.glob("*.rst"))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_name_an_api_page_documents_imports(page):
    names = documented_names(page.read_text(encoding="utf-8"))
    if page.name != "index.rst":
        assert names, f"{page.name} documents nothing"
    for name in names:
        resolve(name)  # raises if the page names something that moved or vanished


def test_the_page_parser_reads_targets_currentmodule_and_member_lists():
    text = (
        ".. currentmodule:: pkg\n\n.. autoclass:: Repo\n   :members:\n\n"
        ".. automodule:: pkg.report\n   :members: a, b\n\n.. autodata:: pkg.x.Y\n"
    )
    assert documented_names(text) == ["pkg.Repo", "pkg.report", "pkg.report.a", "pkg.report.b", "pkg.x.Y"]


def test_a_moved_name_fails_to_resolve():
    with pytest.raises((ModuleNotFoundError, AttributeError)):
        resolve("sb3_iter_ckpt.record.Checkpoint")  # the module moved to common/ in issue 20
