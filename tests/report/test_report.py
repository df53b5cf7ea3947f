"""The HTML report, as a person sees it: written from real repositories, opened in a real headless Chromium.

The browser (the ``chromium`` fixture, conftest) records every request the page makes and every console
message; a page that reaches anything but its own file (or a ``data:``/``blob:`` URI) fails, and so does
one that logs an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plotly")

from sb3_iter_ckpt import CheckpointError, CheckpointRepository  # noqa: E402
from sb3_iter_ckpt.cli import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK, main  # noqa: E402
from sb3_iter_ckpt.forward import evaluate_forward, placeholder_forward, stitch  # noqa: E402
from sb3_iter_ckpt.report import (  # noqa: E402
    MAX_HISTOGRAM_BINS,
    MAX_LINE_POINTS,
    IterationRow,
    ReportData,
    bin_logits,
    collect_report,
    decimate_line,
    forward_curve,
    forward_data,
    forward_data_from_results,
    plotly_bundle,
    render_report,
    write_report,
)
from sb3_iter_ckpt.splitter import WalkForwardSplitter  # noqa: E402

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
            prices, splitter, root, 128, algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=7, min_score=0.0,
            executor="sequential",
        ).run()  # fmt: skip
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
    # (a run without test parts: the repository's own reason, shown as it says it)
    why = repo.forward_status()[1]
    assert why and "no test part" in why
    assert page.locator("#forward-curve .unavailable").inner_text() == f"not available: {why}"
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
    # the default annualization, estimated from the business days' dates, says so
    assert header["periods per year"].startswith("260.7") and header["periods per year"].endswith("prices' dates")
    assert header["candidates"].startswith("not available: no forward results: the run has no test part")


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
        "update sb3_iter_ckpt/report/_vendor to the plotly.js version of the installed plotly (see its README)"
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


# -- the forward sections ---------------------------------------------------------------------------------------
FORWARD = "#chart-forward"
SHORT, LONG = 0, 2  # TradingEnv's actions


def _figure(page, selector: str) -> dict:
    """Wait until Plotly has drawn ``selector``; its traces (with the points Plotly computed), shapes, annotations."""
    page.wait_for_function(f"() => document.querySelector('{selector}')?._fullLayout !== undefined")
    return page.evaluate(
        f"""() => {{
        const gd = document.querySelector('{selector}');
        return {{
            traces: gd.data.map((t, i) => ({{name: t.name, type: t.type, x: t.x, y: t.y, text: t.text,
                                            points: gd.calcdata[i].length}})),
            shapes: (gd.layout.shapes || []).map(s => ({{type: s.type, name: s.name, x0: s.x0}})),
            annotations: (gd.layout.annotations || []).map(a => ({{name: a.name, text: a.text}})),
            drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
        }};
    }}"""
    )


def _by_name(figure: dict) -> dict[str, dict]:
    return {t["name"]: t for t in figure["traces"]}


def _real_forward(root: Path, prices, windows, name: str) -> list:
    """Every iteration of a real run trades its test part: the committed model loaded through the repository
    (hash-verified, with its VecNormalize), or flat for a placeholder."""
    repo = CheckpointRepository(root)
    env_kwargs = repo.read_metadata("walk_forward.json")["config"]["env_kwargs"]
    results = []
    for w in windows:
        ck = repo.get(w.iteration)
        if not ck.has_model:
            results.append(placeholder_forward(prices, w, iteration=w.iteration, candidate=name))
            continue
        vecnormalize = (
            functools.partial(repo.load_vecnormalize, w.iteration) if "vecnormalize" in ck.artifacts else None
        )
        model = repo.load(w.iteration)
        results.append(
            evaluate_forward(
                model,
                prices,
                w,
                iteration=w.iteration,
                candidate=name,
                env_kwargs=env_kwargs,
                vecnormalize=vecnormalize,
            )
        )
    return results


@dataclass
class Traded:
    root: Path
    prices: object
    chosen: list
    candidates: dict
    selection: dict
    selection_returns: dict
    scores: dict


@pytest.fixture(scope="module")
def traded(tmp_path_factory, prices, tiny_algo):
    """Two real tiny walk-forwards with test parts (two seeds: two candidates); per window the candidate with
    the better validation Sharpe (a model beats a placeholder) is chosen, as the candidates' run does."""
    from sb3_iter_ckpt.walkforward import WalkForwardRunner

    base = tmp_path_factory.mktemp("traded") / "results" / "exp"
    splitter = WalkForwardSplitter(train_size=150, val_size=60, test_size=60)
    windows = list(splitter.split(prices))
    candidates, selection, returns = {}, {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        for k, seed in enumerate((7, 9)):
            name, root = f"ppo-s{k}", base / "candidates" / f"ppo-s{k}"
            WalkForwardRunner(
                prices, splitter, root, 128, algo_kwargs=tiny_algo, eval_freq=64, progress=False, seed=seed,
                min_score=0.0, executor="sequential",
            ).run()  # fmt: skip
            candidates[name] = _real_forward(root, prices, windows, name)
            cks = {c.iteration: c for c in CheckpointRepository(root).list()}
            selection[name] = {i: c.score("validation.sharpe") if c.has_model else None for i, c in cks.items()}
            returns[name] = {i: c.score("validation.cagr") if c.has_model else None for i, c in cks.items()}
    chosen, scores, chosen_returns = [], {}, {}
    for w in windows:
        known = {n: s[w.iteration] for n, s in selection.items() if s[w.iteration] is not None}
        name = max(known, key=known.get) if known else "ppo-s0"
        chosen.append(candidates[name][w.iteration])
        scores[w.iteration], chosen_returns[w.iteration] = known.get(name), returns[name][w.iteration]
    assert len(windows) >= 3 and any(not r.placeholder for r in chosen)
    return Traded(base / "candidates" / "ppo-s0", prices, chosen, candidates, selection, chosen_returns, scores)


def _traded_forward(t: Traded, **kw):
    args = dict(
        selection_scores=t.scores, selection_returns=t.selection_returns, candidate_results=t.candidates,
        candidate_selection=t.selection,
    )  # fmt: skip
    return forward_data_from_results(t.chosen, t.prices, **{**args, **kw})


def test_the_forward_sections_draw_real_forward_data_in_a_real_browser(traded, open_page, tmp_path):
    fwd = _traded_forward(traded)
    assert fwd.reason is None and fwd.report is not None
    report = fwd.report
    stitched = stitch(traded.chosen, traded.prices)
    out = write_report(traded.root, tmp_path / "report.html", forward=fwd)
    opened = open_page(out)
    page = opened.page

    # (2) the stitched curve against buy-and-hold and flat; one marker and one label per window; drawdown under it
    curve = _figure(page, FORWARD)
    traces = _by_name(curve)
    assert len(curve["traces"]) == 4 and curve["drawn"] == 4, list(traces)
    equity = traces["forward equity (stitched test parts)"]
    assert equity["points"] == len(stitched.rows) == len(equity["x"])
    assert equity["x"] == list(stitched.dates)
    assert equity["y"] == pytest.approx(stitched.equity, abs=1e-6)
    hold = traces["buy-and-hold (same periods)"]
    assert hold["points"] == len(stitched.rows)
    assert hold["y"] == pytest.approx(np.cumprod(1 + np.asarray(stitched.asset_returns)), abs=1e-6)
    assert traces["flat (no position)"]["y"] == [1.0, 1.0]
    drawdown = traces["drawdown of the forward equity"]
    peak = np.maximum.accumulate(np.concatenate([[1.0], stitched.equity]))[1:]
    assert drawdown["y"] == pytest.approx(np.asarray(stitched.equity) / peak - 1, abs=1e-6)
    lines = [s for s in curve["shapes"] if s["type"] == "line"]
    starts = [stitched.dates[stitched.iterations.index(r.iteration)] for r in traded.chosen]
    assert [s["x0"] for s in lines] == starts  # one boundary marker per window, where its first period is
    labels = [a["text"] for a in curve["annotations"] if (a["name"] or "").startswith("window")]
    expected = [f"#{r.iteration} {'placeholder (flat)' if r.placeholder else r.candidate}" for r in traded.chosen]
    assert labels == expected
    assert len([s for s in curve["shapes"] if s["type"] == "rect"]) == sum(r.placeholder for r in traded.chosen)

    # (3) selection score next to forward score, and every candidate per window
    its = report["iterations"]
    pairs = _by_name(_figure(page, "#chart-selection-forward"))
    assert pairs["selection score (validation.sharpe, validation)"]["y"] == [traded.scores[i["iteration"]] for i in its]
    assert pairs["forward sharpe (test part, unseen)"]["y"] == [r.metrics["sharpe"] for r in traded.chosen]
    assert pairs["forward sharpe (test part, unseen)"]["points"] == len(traded.chosen)
    cands = _figure(page, "#chart-candidates")
    assert len(cands["traces"]) == 2 * len(traded.candidates) + 1
    by = _by_name(cands)
    for name, results in traded.candidates.items():
        assert by[f"{name}: forward sharpe"]["y"] == [r.metrics["sharpe"] for r in results]
    chosen = [r for r in traded.chosen if r.candidate in traded.candidates]
    assert by["chosen: traded the stitched curve"]["text"] == [r.candidate for r in chosen]

    # (4) the numbers, each with its sentence; the CSCV logits pre-binned into a histogram
    numbers = page.inner_text("#numbers")
    assert numbers.count("How to read it:") == 4
    bh = report["baseline"]["buy_and_hold"]
    assert f"{bh['total_return']:.2%}" in page.inner_text("#numbers table.baseline")
    assert f"{report['deflated_sharpe']:.3f}" in page.inner_text("#numbers")
    pbo = report["pbo"]
    assert pbo is not None and pbo["logit_summary"]["count"] == pbo["n_combinations"] == 12_870
    assert f"{pbo['pbo']:.3f} over 12870 combinations" in numbers
    hist = _figure(page, "#chart-logits")
    bars = [t for t in hist["traces"] if t["type"] == "bar"]
    assert len(bars) == 2 and sum(len(t["x"]) for t in bars) <= MAX_HISTOGRAM_BINS
    assert sum(sum(t["y"]) for t in bars) == 12_870
    assert sum(_by_name(hist)[bars[0]["name"]]["y"]) / 12_870 == pytest.approx(pbo["pbo"])
    assert page.locator("#forward-iterations tbody tr").count() == len(its)

    # the header names the candidates; the checkpoint table has the forward score
    assert "ppo-s0, ppo-s1" in page.inner_text("header")
    kept = next(r for r in traded.chosen if r.candidate == "ppo-s0" and not r.placeholder)
    row = page.inner_text(f"tr[data-iteration='{kept.iteration}']")
    assert f"{kept.metrics['sharpe']:.4g}" in row

    page.screenshot(path=str(tmp_path / "forward.png"), full_page=True)
    assert (tmp_path / "forward.png").stat().st_size > 10_000
    assert opened.foreign_requests(out.resolve().as_uri()) == []
    assert opened.errors() == []


def test_with_javascript_off_the_forward_charts_are_tables(traded, open_page, tmp_path):
    fwd = _traded_forward(traded)
    out = write_report(traded.root, tmp_path / "report.html", forward=fwd)
    page = open_page(out, javascript=False).page
    assert page.locator(".js-plotly-plot").count() == 0
    assert not page.locator(FORWARD).is_visible()  # no empty chart area above the table
    windows = page.locator("#forward-curve table.windows")
    assert windows.is_visible() and windows.locator("tbody tr").count() == len(traded.chosen)
    assert f"{traded.chosen[0].metrics['total_return']:.2%}" in windows.locator("tbody tr").first.inner_text()
    logits = page.locator("#numbers table.fallback")  # the histogram's bins
    assert logits.count() == 1
    assert logits.locator("tbody tr").count() == len(fwd.report["pbo"]["logit_summary"]["histogram"]["counts"])


def test_without_forward_data_each_forward_section_says_why(traded, open_page, tmp_path):
    why = "no forward results: this run has no test parts (test_size 0)"
    out = write_report(traded.root, tmp_path / "report.html", forward=forward_data(None, reason=why))
    opened = open_page(out)
    page = opened.page
    _wait_for_chart(page)
    assert page.locator("#forward-curve .unavailable").inner_text() == f"not available: {why}"
    assert page.locator("#numbers .unavailable").count() == 4
    assert all(why in t for t in page.locator("#numbers .unavailable").all_inner_texts())
    assert page.locator("#scores .unavailable").count() == 2
    assert page.locator("#chart-forward, #chart-selection-forward, #chart-logits").count() == 0
    assert opened.errors() == []
    # results that do not fit together: the page says why instead of failing
    assert "no iteration traded a test part" in (forward_data_from_results([], traded.prices).reason or "")
    overlap = forward_data_from_results([traded.chosen[0], traded.chosen[0]], traded.prices)
    assert overlap.report is None and "could not be combined" in (overlap.reason or "")


def test_pbo_null_shows_its_reason_and_no_histogram(traded, open_page, tmp_path):
    # a run without candidates: one model per window, so no PBO (it compares candidates)
    plain = [dataclasses.replace(r, candidate=None) for r in traded.chosen]
    fwd = forward_data_from_results(plain, traded.prices, selection_scores=traded.scores)
    assert fwd.report["pbo"] is None
    out = write_report(traded.root, tmp_path / "report.html", forward=fwd)
    opened = open_page(out)
    page = opened.page
    _figure(page, FORWARD)
    assert page.locator("#chart-logits, #chart-candidates").count() == 0
    assert fwd.report["pbo_reason"] in page.inner_text("#numbers")
    assert "this run compared no candidates" in page.inner_text("#scores")
    assert "one model per window" in page.inner_text("header")
    assert opened.errors() == []


def test_placeholder_only_windows_render_a_flat_curve_and_say_why_there_is_no_dsr(traded, open_page, tmp_path):
    windows = list(WalkForwardSplitter(train_size=150, val_size=60, test_size=60).split(traded.prices))
    flat = [placeholder_forward(traded.prices, w, iteration=w.iteration) for w in windows]
    fwd = forward_data_from_results(flat, traded.prices)
    out = write_report(traded.root, tmp_path / "report.html", forward=fwd)
    opened = open_page(out)
    page = opened.page
    curve = _figure(page, FORWARD)
    assert set(_by_name(curve)["forward equity (stitched test parts)"]["y"]) == {1.0}
    assert len([s for s in curve["shapes"] if s["type"] == "rect"]) == len(windows)
    labels = [a["text"] for a in curve["annotations"] if (a["name"] or "").startswith("window")]
    assert labels == [f"#{w.iteration} placeholder (flat)" for w in windows]
    assert f"iteration(s) {[w.iteration for w in windows]} kept no model" in page.inner_text("#forward-curve")
    assert fwd.report["deflated_sharpe_reason"] in page.inner_text("#deflated-sharpe ~ p.unavailable")
    flats = _by_name(_figure(page, "#chart-selection-forward"))["placeholder: no model, flat on its test part"]
    assert flats["x"] == [w.iteration for w in windows]
    assert opened.errors() == []


class _Rule:
    """A model double: long after a rise (``sign=1``) or after a fall (``sign=-1``)."""

    def __init__(self, sign: int):
        self.sign = sign

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        last = float(np.asarray(obs).reshape(-1)[-2]) * self.sign  # the observation ends with the position
        return np.array([LONG if last > 0 else SHORT]), None


@pytest.fixture(scope="module")
def hundred_forward(tmp_path_factory):
    """100 iterations with forward data over 13,125 prices (12,499 forward periods), two candidates,
    placeholders at 5, 50 and 51."""
    from sb3_iter_ckpt.data import synthetic_prices

    root = tmp_path_factory.mktemp("hundred-forward") / "exp"
    placeholders = {5, 50, 51}
    _synthetic(root, 100, placeholders=placeholders)
    prices = synthetic_prices(500 + 125 + 100 * 125, seed=5)
    windows = list(WalkForwardSplitter(train_size=500, val_size=125, test_size=125).split(prices))
    assert len(windows) == 100
    cands = {}
    for name, sign in (("momentum", 1), ("contrarian", -1)):
        cands[name] = [
            placeholder_forward(prices, w, iteration=w.iteration, candidate=name)
            if w.iteration in placeholders
            else evaluate_forward(_Rule(sign), prices, w, iteration=w.iteration, candidate=name)
            for w in windows
        ]
    chosen = [cands["momentum" if w.iteration % 3 else "contrarian"][w.iteration] for w in windows]
    scores = {c.iteration: c.score("validation.sharpe") for c in CheckpointRepository(root).list()}
    fwd = forward_data_from_results(chosen, prices, selection_scores=scores, candidate_results=cands)
    return write_report(root, root.parent / "report.html", forward=fwd), fwd


def test_the_page_at_100_iterations_with_forward_data_is_under_6_mb_and_binned(hundred_forward, open_page):
    path, fwd = hundred_forward
    assert path.stat().st_size < 6_000_000
    # 100 test parts of 125 rows, the last one period short (it ends on the last row of the data)
    assert len(fwd.curve.x) == 12_499 and fwd.report["pbo"]["logit_summary"]["count"] == 12_870
    opened = open_page(path)
    page = opened.page
    curve = _figure(page, FORWARD)
    for t in curve["traces"]:
        assert len(t["x"]) <= MAX_LINE_POINTS, t["name"]  # pre-binned
    assert len([s for s in curve["shapes"] if s["type"] == "line"]) == 100
    assert len([s for s in curve["shapes"] if s["type"] == "rect"]) == 3
    hist = _figure(page, "#chart-logits")
    assert sum(len(t["x"]) for t in hist["traces"] if t["type"] == "bar") <= MAX_HISTOGRAM_BINS
    assert sum(sum(t["y"]) for t in hist["traces"] if t["type"] == "bar") == 12_870
    assert len(_figure(page, "#chart-candidates")["traces"]) == 3
    assert opened.errors() == []


def test_bin_logits_keeps_distinct_values_and_bins_many_with_zero_on_the_overfit_side():
    assert bin_logits([-0.69, 0.69, 0.69, 0.0]) == [(-0.69, -0.69, 1), (0.0, 0.0, 1), (0.69, 0.69, 2)]
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0.3, 1.0, 12_869), [0.0]])
    bins = bin_logits(logits)
    assert len(bins) == MAX_HISTOGRAM_BINS and sum(n for _, _, n in bins) == len(logits)
    assert any(hi == 0.0 for _, hi, _ in bins)  # 0 is an edge: every bin lies on one side of it
    overfit = sum(count for _, hi, count in bins if hi <= 0)
    assert overfit == int(np.sum(logits <= 0))
    assert bin_logits([]) == []


def test_the_logit_histogram_is_drawn_the_same_from_the_summary_as_from_the_raw_logits(candidates_run):
    """The forward report keeps the CSCV logits binned (``pbo.logit_summary``); a report of the previous form
    (``pbo.logits``, every logit) draws the same page, with a few distinct logits (two candidates) or many."""
    from sb3_iter_ckpt import pbo_logits
    from sb3_iter_ckpt.stats.overfitting import logit_summary

    root = candidates_run[0]
    data = collect_report(root)
    report = data.forward.report
    raw = {k: v for k, v in report["pbo"].items() if k != "logit_summary"}
    raw["logits"] = pbo_logits(CheckpointRepository(root))

    def page(pbo):
        forward = dataclasses.replace(data.forward, report={**report, "pbo": pbo})
        return render_report(dataclasses.replace(data, forward=forward))

    assert "chart-logits" in page(report["pbo"]) and page(raw) == page(report["pbo"])
    many = np.random.default_rng(1).normal(0.2, 1.0, 12_870)  # more distinct values than bars: binned
    binned = {**raw, "logits": list(many)}
    summarized = {**raw, "logit_summary": logit_summary(many)}
    del summarized["logits"]
    assert page(binned) == page(summarized) != page(raw)


def test_forward_curve_by_hand():
    from sb3_iter_ckpt.forward import StitchedForward

    returns = (-0.1, 0.2, -0.25, 0.5)
    equity = tuple(np.cumprod(1 + np.asarray(returns)))
    stitched = StitchedForward(
        rows=(3, 4, 5, 6), dates=None, iterations=(0, 0, 1, 1), candidates=("a", "a", None, None),
        placeholders=(False, False, True, True), positions=(1, 1, 0, 0), returns=returns, equity=equity,
        asset_returns=(0.1, -0.1, 0.0, 0.1), periods_per_year=252,
    )  # fmt: skip
    curve = forward_curve(stitched)
    assert curve.x == [3, 4, 5, 6] and not curve.dated
    assert curve.equity == pytest.approx([0.9, 1.08, 0.81, 1.215])
    assert curve.drawdown == pytest.approx([-0.1, 0.0, -0.25, 0.0])  # the peak starts at 1.0
    assert curve.buy_and_hold == pytest.approx([1.1, 0.99, 0.99, 1.089])
    assert [(w.iteration, w.candidate, w.placeholder, w.first, w.last) for w in curve.windows] == [
        (0, "a", False, 0, 1),
        (1, None, True, 2, 3),
    ]


def test_the_header_dates_include_the_test_parts(candidates_run):
    """The dates used by the windows run to the last test part's end, not the last validation day."""
    root, runner, _ = candidates_run
    first = runner.windows[0].train_start_time[:10]
    last = max(w.test_end_time for w in runner.windows)[:10]
    assert last > max(w.val_end_time for w in runner.windows)[:10]
    assert dict(collect_report(root).header)["dates used by the windows"] == f"{first} … {last}"


def test_a_real_candidates_run_reports_its_candidates_from_the_repository_alone(candidates_run, tmp_path, open_page):
    """``walk-forward --algo ppo,a2c``'s repository (the conftest's run, PPO and A2C): the page reads the
    candidates' forward results and scores from the root's records and ``candidates/`` (nothing passed by hand),
    draws them and the CSCV histogram."""
    root, runner, result = candidates_run
    cands = runner.options.candidates
    assert sorted(c.algo for c in cands) == ["a2c", "ppo"]
    out = write_report(root, tmp_path / "report.html")
    opened = open_page(out)
    page = opened.page
    by = _by_name(_figure(page, "#chart-candidates"))
    assert len(by) == 2 * 2 + 1
    repo = CheckpointRepository(root)
    for c in cands:
        member = repo.candidate(c.name)
        assert by[f"{c.name}: forward sharpe"]["y"] == pytest.approx([f.metrics["sharpe"] for f in member.forwards()])
        assert by[f"{c.name}: selection score"]["y"] == pytest.approx(
            [member.get(i).score("validation.sharpe") for i in member.iterations()]
        )
    chosen = [repo.get(i).record["candidate"]["name"] for i in repo.iterations()]
    assert by["chosen: traded the stitched curve"]["text"] == chosen
    header = page.inner_text("header")
    assert all(c.name in header for c in cands)
    pbo = result.forward["pbo"]
    assert f"{pbo['pbo']:.3f} over {pbo['n_combinations']} combinations" in page.inner_text("#numbers")
    assert page.locator("#chart-logits").count() == 1
    page.screenshot(path=str(tmp_path / "candidates.png"), full_page=True)
    assert opened.foreign_requests(out.resolve().as_uri()) == [] and opened.errors() == []
