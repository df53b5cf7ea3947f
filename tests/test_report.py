"""The HTML report, as a person sees it: written from real repositories, opened in a real headless Chromium.

The browser (the ``chromium`` fixture, conftest) records every request the page makes and every console
message; a page that reaches anything but its own file (or a ``data:``/``blob:`` URI) fails, and so does
one that logs an error.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("plotly")

from sb3_iter_ckpt import CheckpointError, CheckpointRepository  # noqa: E402
from sb3_iter_ckpt.cli import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK, main  # noqa: E402
from sb3_iter_ckpt.report import (  # noqa: E402
    FORWARD_MISSING,
    MAX_LINE_POINTS,
    IterationRow,
    ReportData,
    collect_report,
    decimate_line,
    plotly_bundle,
    render_report,
    write_report,
)

SCORES = "#chart-scores"


@dataclass
class Opened:
    page: object
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)

    def foreign_requests(self, own: str) -> list[str]:
        return [u for u in self.requests if u != own and not u.startswith(("data:", "blob:"))]

    def errors(self) -> list[tuple[str, str]]:
        return [m for m in self.console if m[0] in ("error", "pageerror")]


@pytest.fixture
def open_page(chromium):
    """``open_page(path, javascript=True)``: the page, with its requests and console recorded."""
    contexts = []

    def opener(path: Path, javascript: bool = True) -> Opened:
        context = chromium.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        opened = Opened(page)
        context.on("request", lambda r: opened.requests.append(r.url))
        page.on("console", lambda m: opened.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: opened.console.append(("pageerror", str(e))))
        page.goto(path.resolve().as_uri())
        if javascript:
            page.wait_for_function("() => typeof Plotly !== 'undefined'")
        return opened

    yield opener
    for context in contexts:
        context.close()


def _wait_for_chart(page, selector: str = SCORES) -> list[dict]:
    """Wait until Plotly has drawn the chart; its traces as ``{name, x, y}`` read from ``gd.data``."""
    page.wait_for_function(f"() => document.querySelector('{selector}')?._fullLayout !== undefined")
    return page.evaluate(
        f"() => document.querySelector('{selector}').data.map(t => ({{name: t.name, x: t.x, y: t.y}}))"
    )


def _points_drawn(page, selector: str = SCORES) -> int:
    """Markers Plotly drew as SVG paths (one per non-null point)."""
    return page.evaluate(f"() => document.querySelectorAll('{selector} .scatterlayer .points path').length")


def _table_iterations(page) -> list[int]:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#checkpoint-table tbody tr')).map(r => +r.dataset.iteration)"
    )


# -- repositories -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, prices, tiny_algo):
    """A real walk-forward (4 windows, tiny PPO), then the oldest model pruned: models, placeholders, pruned."""
    from sb3_iter_ckpt.splitter import WalkForwardSplitter
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    root = tmp_path_factory.mktemp("report") / "results" / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        splitter = WalkForwardSplitter(train_size=150, val_size=60)
        # min_score 0: windows whose best validation Sharpe is not positive commit a placeholder
        WalkForwardRunner(
            prices, splitter, root, 128, algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7, min_score=0.0
        ).run()
    repo = CheckpointRepository(root)
    kinds = {c.has_model for c in repo.list()}
    assert kinds == {True, False}, "the fixture needs models and placeholders: change the seed or min_score"
    repo.prune(keep_last_n=1)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "results" / root.name
    shutil.copytree(root, dst)
    return dst


def _synthetic(root: Path, n: int, placeholders: set[int] = frozenset(), model: bytes = b"m" * 2000) -> Path:
    """``n`` committed iterations without training (small model bytes), the selection rule recorded."""
    repo = CheckpointRepository(root)
    extra = {"selection": {"monitor": "validation.sharpe", "mode": "max"}, "versions": {}}
    for i in range(n):
        metrics = {"validation": {"sharpe": round(((i * 37) % 23) / 10 - 1, 3)}}
        if i in placeholders:
            repo.commit(i, metrics=metrics, reason="below_min_score", extra=extra)
        else:
            repo.commit(i, metrics=metrics, model=model, extra=extra)
    return root


# -- the page in a browser --------------------------------------------------------------------------------------
def test_the_report_renders_in_a_real_browser(trained, open_page, tmp_path):
    repo = CheckpointRepository(trained)
    cks = repo.list()
    out = write_report(repo, tmp_path / "report.html")
    opened = open_page(out)
    page = opened.page
    traces = _wait_for_chart(page)

    # the selection-score chart: one point per iteration with a score, the best ringed, placeholders marked
    by_name = {t["name"]: t for t in traces}
    assert len(traces) == 3, list(by_name)
    scores = by_name["selection score (validation.sharpe)"]
    expected = {c.iteration: c.score("validation.sharpe") for c in cks if c.has_model or c.reason == "pruned"}
    assert {x: y for x, y in zip(scores["x"], scores["y"], strict=True) if y is not None} == pytest.approx(expected)
    best = repo.best()
    assert by_name[f"best (iteration {best.iteration})"]["x"] == [best.iteration]
    holes = [c.iteration for c in cks if not c.has_model and c.reason != "pruned"]
    assert by_name["no model (placeholder or unreadable)"]["x"] == holes
    assert _points_drawn(page) == len(expected) + 1 + len(holes)

    # the table: a row per iteration; a click on a column header sorts by it, a second click reverses
    assert _table_iterations(page) == [c.iteration for c in cks]
    page.click("#checkpoint-table th:nth-child(3) button")  # validation.sharpe
    with_score = sorted(expected, key=expected.get)
    assert _table_iterations(page) == with_score + holes
    page.click("#checkpoint-table th:nth-child(3) button")
    assert _table_iterations(page) == with_score[::-1] + holes
    page.click("#checkpoint-table th:nth-child(1) button")
    assert _table_iterations(page) == [c.iteration for c in cks]

    # what the page says: verify's verdict, the pruned model, the forward sections not yet available
    assert page.inner_text("#verify").startswith("verify: ok")
    pruned = [c.iteration for c in cks if c.reason == "pruned"]
    assert pruned and "pruned" in page.inner_text(f"tr[data-iteration='{pruned[0]}']")
    assert page.locator("#forward-curve .unavailable").inner_text() == FORWARD_MISSING
    assert page.locator("#numbers .unavailable").count() == 4
    kept = next(c for c in cks if c.has_model)
    kept_row = page.inner_text(f"tr[data-iteration='{kept.iteration}']")
    assert kept.sha256[:12] in kept_row and f"{kept.size_bytes / 1000:.2f} kB" in kept_row

    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert opened.foreign_requests(out.resolve().as_uri()) == []
    assert opened.errors() == []


def test_with_javascript_off_the_chart_is_a_table_and_the_checkpoint_table_is_plain_html(trained, open_page, tmp_path):
    repo = CheckpointRepository(trained)
    cks = repo.list()
    out = write_report(repo, tmp_path / "report.html")
    page = open_page(out, javascript=False).page
    assert page.locator(".js-plotly-plot").count() == 0  # nothing drew
    fallback = page.locator("#scores table.fallback")
    assert fallback.is_visible()
    assert fallback.locator("tbody tr").count() == len(cks)
    best = repo.best()
    assert f"{best.score('validation.sharpe'):.4g}" in fallback.inner_text()
    assert _table_iterations(page) == [c.iteration for c in cks]


def test_a_verify_problem_is_shown_in_red_and_the_cli_exits_4_with_the_page_written(
    trained, open_page, tmp_path, capsys
):
    root = _copy(trained, tmp_path)
    model = next(c for c in CheckpointRepository(root).list() if c.has_model)
    with open(model.model_path, "ab") as f:
        f.write(b"tampered")
    out = tmp_path / "page.html"
    assert main(["report", str(root), "--out", str(out)]) == EXIT_INTEGRITY
    assert "verify found 1 problem(s)" in capsys.readouterr().out
    page = open_page(out).page
    _wait_for_chart(page)
    problem = page.locator("#verify.problem")
    assert model.model_path.name in problem.inner_text()
    red, green, blue = map(int, re.findall(r"\d+", problem.evaluate("e => getComputedStyle(e).color"))[:3])
    assert red > 100 and red > 3 * green and red > 3 * blue


# -- bad input --------------------------------------------------------------------------------------------------
def _only_placeholders(root: Path) -> Path:
    return _synthetic(root, 3, placeholders={0, 1, 2})


def _corrupt_record(root: Path) -> Path:
    _synthetic(root, 3)
    (root / "checkpoints" / "metrics_iter_1.json").write_text('{"schema_version": 1, "iteration": ')
    return root


def _no_iterations(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("build", "says", "rows", "exit_code"),
    [
        (_no_iterations, "no committed iteration", 0, EXIT_OK),
        (_only_placeholders, "no iteration kept a model", 3, EXIT_OK),
        (_corrupt_record, "metrics_iter_1.json", 3, EXIT_INTEGRITY),
    ],
    ids=["no-iterations", "only-placeholders", "corrupt-record"],
)
def test_bad_input_still_renders_and_says_what_is_wrong(build, says, rows, exit_code, open_page, tmp_path, capsys):
    root = build(tmp_path / "results" / "bad")
    out = tmp_path / "report.html"
    assert main(["report", str(root), "--out", str(out)]) == exit_code
    capsys.readouterr()
    opened = open_page(out)
    page = opened.page
    if rows:
        _wait_for_chart(page)
    assert says in page.inner_text("header")
    assert len(_table_iterations(page)) == rows
    assert opened.errors() == []
    assert opened.foreign_requests(out.resolve().as_uri()) == []


def test_a_corrupt_record_is_an_unreadable_row_with_its_reason(tmp_path):
    data = collect_report(_corrupt_record(tmp_path / "exp"))
    row = next(r for r in data.rows if r.iteration == 1)
    assert row.status == "unreadable" and "not valid JSON" in (row.reason or "")
    assert any("metrics_iter_1.json" in p for p in data.problems)


def test_a_repository_without_walk_forward_json_says_the_configuration_was_not_recorded(tmp_path):
    data = collect_report(_synthetic(tmp_path / "exp", 2))
    assert any("no walk_forward.json" in n for n in data.notes)
    assert dict(data.header)["splitter"] == "not recorded"


def test_the_header_reads_the_run_configuration(trained):
    header = dict(collect_report(trained).header)
    assert header["data"].startswith("420 rows, sha256 ")
    assert header["splitter"] == "gap 0, mode rolling, step 60, train_size 150, val_size 60"
    assert header["seed"].startswith("7 ")
    assert header["algorithm(s)"].startswith("ppo")
    assert header["dates used by the windows"] == "2015-01-01 … 2016-06-29"
    assert header["candidates"] == FORWARD_MISSING


# -- size, large series, the bundle ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    root = tmp_path_factory.mktemp("hundred") / "exp"
    return write_report(_synthetic(root, 100, placeholders={5, 50, 51}), root.parent / "report.html")


def test_the_page_at_100_iterations_is_under_6_mb(hundred):
    assert hundred.stat().st_size < 6_000_000
    assert hundred.read_text(encoding="utf-8").count("<tr class=") == 100


def test_the_page_at_100_iterations_draws_every_point(hundred, open_page):
    page = open_page(hundred).page
    traces = {t["name"]: t for t in _wait_for_chart(page)}
    assert sum(y is not None for y in traces["selection score (validation.sharpe)"]["y"]) == 97
    assert traces["no model (placeholder or unreadable)"]["x"] == [5, 50, 51]
    assert len(_table_iterations(page)) == 100


def test_a_long_series_is_pre_binned_keeping_its_extremes():
    x = list(range(20_000))
    y = [((i * 7919) % 10_007) / 10_007 for i in x]
    y[12_345], y[777] = 5.0, -5.0
    bx, by = decimate_line(x, y)
    assert len(bx) <= MAX_LINE_POINTS and bx == sorted(bx)
    assert max(by) == 5.0 and min(by) == -5.0
    assert decimate_line(x[:100], y[:100]) == (x[:100], y[:100])  # short series unchanged


def test_the_page_bins_a_long_score_series(tmp_path):
    rows = [IterationRow(iteration=i, status="model", score=(i % 97) / 10) for i in range(20_000)]
    data = ReportData("big", "nowhere", "now", [], "validation.sharpe", "max", rows, None, [])
    page = render_report(data)
    spec = json.loads(re.search(r'<script type="application/json" class="figure"[^>]*>(.*?)</script>', page)[1])
    assert len(spec["data"][0]["x"]) <= MAX_LINE_POINTS
    assert page.count('<tr class="model"') == 20_000  # the table keeps every iteration


def test_the_vendored_plotly_js_is_the_major_version_the_python_package_builds_for():
    import plotly.offline

    vendored, source = plotly_bundle()
    assert vendored.split(".")[0] == plotly.offline.get_plotlyjs_version().split(".")[0], (
        "update sb3_iter_ckpt/_vendor to the plotly.js version of the installed plotly (see its README)"
    )
    assert len(source) < 2_000_000  # the partial bundle, not the full 4.8 MB one


def test_without_plotly_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    root = _synthetic(tmp_path / "exp", 1)
    monkeypatch.setitem(sys.modules, "plotly", None)  # what an environment without the package gives
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(CheckpointError, match=re.escape('pip install "sb3-iter-ckpt[report]"')):
        write_report(root, tmp_path / "r.html")
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == EXIT_ERROR
    assert 'pip install "sb3-iter-ckpt[report]"' in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_the_default_path_is_report_html_in_the_experiment_folder(tmp_path, capsys):
    root = _synthetic(tmp_path / "exp", 2)
    assert main(["report", str(root), "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(root / "report.html") and (root / "report.html").is_file()
    assert out["iterations"] == 2 and out["problems"] == []


def test_an_s3_repository_is_reported_into_a_local_file(tmp_path, open_page, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "no-aws-config"))
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server]")
    pytest.importorskip("s3fs")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="reports")
        opts = {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
        }
        repo = CheckpointRepository("s3://reports/exp", storage_options=opts)
        extra = {"selection": {"monitor": "validation.sharpe", "mode": "max"}, "versions": {}}
        for i in range(3):
            repo.commit(i, metrics={"validation": {"sharpe": i / 2}}, model=b"model", extra=extra)
        out = write_report(repo, tmp_path / "s3-report.html")
    finally:
        server.stop()
    assert out.is_file()
    page = open_page(out).page
    traces = _wait_for_chart(page)
    assert traces[0]["y"] == [0.0, 0.5, 1.0]
    assert "s3://reports/exp" in page.inner_text("header")
