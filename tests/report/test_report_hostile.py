"""The report page with hostile markup in every user-controlled string it shows: it still renders in full, and
shows each string as text.

A string reaches the page from the repository's folder name, its records (the selection monitor, metric names,
a placeholder's reason, the algorithm, the versions, the window dates, an unreadable record's content quoted by
verify), its unsigned forward files (the candidate), ``forward_returns.csv`` (its candidate and date columns),
``walk_forward.json`` (the header's configuration), or forward data given by hand (the candidates' names). Each
carries markup that breaks the page if one escaping is missing: ``<!--<script>`` (inside a ``<script>`` element
it keeps the element's own ``</script>`` from closing it), ``</script>``, an ``<img onerror>``, a ``<script>``,
a ``javascript:`` link, a quote that would end an attribute, an entity that must stay literal, Plotly's own
markup (``<b>``, ``<br>``), U+2028/U+2029.
Every payload that runs sets ``window.__pwned``.

The page opens in a real headless Chromium (the ``chromium`` fixture, conftest: Debian's browser): every
request other than the page's own file is recorded and refused, every dialog and console message recorded.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plotly")
pytestmark = pytest.mark.filterwarnings("ignore:1 unreadable record:UserWarning")  # verify reports it on the page

from sb3_iter_ckpt import CheckpointRepository  # noqa: E402
from sb3_iter_ckpt.common.options import config_fingerprint  # noqa: E402
from sb3_iter_ckpt.forward import ForwardResult, StitchedForward  # noqa: E402
from sb3_iter_ckpt.report import ForwardData, forward_data_from_results, plotly_bundle  # noqa: E402
from sb3_iter_ckpt.report import write_report as _write_report  # noqa: E402
from sb3_iter_ckpt.report.markup import json_for_script  # noqa: E402
from sb3_iter_ckpt.stats.metrics import trading_metrics  # noqa: E402

_PAYLOADS = (
    "<!--<script>",
    "\u2028\u2029",  # inside, not at an end: Plotly trims a title's ends, and JavaScript counts them as space
    "</script><img src=x onerror=\"window.__pwned='TAG'\">",
    "<script>window.__pwned='TAG'</script>",
    "<a href=\"javascript:window.__pwned='TAG'\">TAG</a>",
    "\" onmouseover=\"window.__pwned='TAG'\" x='",
    "&amp; <b>b</b><br>",
)


def hostile(tag: str) -> str:
    """``tag`` followed by every payload, each naming ``tag`` (so a payload that runs says where it came from)."""
    return f"{tag} " + "".join(p.replace("TAG", tag) for p in _PAYLOADS)


#: The experiment's folder name: no "/" in a file name, so no closing tags; the rest of the markup is there.
EXPERIMENT = "exp <!--<script>\u2028<img src=x onerror=window.__pwned=1><a href=javascript:window.__pwned=1>a<a>&amp;"
MONITOR = hostile("monitor")
METRIC = hostile("metric")
REASON = hostile("reason")
FORWARD_CANDIDATE = hostile("forward-candidate")
CSV_CANDIDATE = hostile("csv-candidate")
CANDIDATES = (hostile("candidate-a"), hostile("candidate-b"))
#: The window dates: the page shows their first 10 characters, which must carry markup too.
WINDOW = {k: "<!--<script>" + hostile(k) for k in ("train_start_time", "val_start_time", "val_end_time")}
SECTIONS = ["forward-curve", "scores", "numbers", "checkpoints"]
CHARTS = ["chart-forward", "chart-scores", "chart-selection-forward", "chart-candidates", "chart-logits"]
ITERATIONS, PLACEHOLDER, UNREADABLE, PERIODS = 4, 2, 5, 20


def test_json_for_script_escapes_the_five_characters_and_reads_back():
    value = {"<": "</script><!--<script>", "a&b": ["x > y", "\u2028", "\u2029", 1.5, None, True], "plain": "é"}
    text = json_for_script(value)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        assert char not in text and escape in text
    assert "\u2029" not in text and "\\u2029" in text
    assert json.loads(text) == value
    # ordinary JSON comes out as compact json.dumps: the page's bytes change only where those characters are
    ordinary = {"data": [{"x": [1, 2], "name": "selection score (validation.sharpe)"}], "layout": {"height": 380}}
    assert json_for_script(ordinary) == json.dumps(ordinary, separators=(",", ":"))
    # even a JSON text without ensure_ascii (raw U+2028 in it) is covered: the escape is on the text itself
    assert json_for_script("\u2028\u2029<>&") == '"\\u2028\\u2029\\u003c\\u003e\\u0026"'


def test_the_vendored_plotly_bundle_cannot_end_or_escape_its_own_script_element():
    _, source = plotly_bundle()
    lowered = source.lower()
    assert "</script" not in lowered and "<!--" not in lowered and "<script" not in lowered


# -- the hostile repository ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory) -> bytes:
    """A real SB3 model's zip (an untrained tiny PPO): the repository's models are real files."""
    from stable_baselines3 import PPO

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3log")))
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def _result(i: int, candidate: str, dates: tuple[str, ...] | None, returns: list[float], placeholder: bool):
    positions = [0.0 if placeholder else 1.0] * len(returns)
    start = 10 + PERIODS * i
    return ForwardResult(
        iteration=i, candidate=candidate, test_start=start, test_stop=start + PERIODS, placeholder=placeholder,
        rows=tuple(range(start + 1, start + 1 + PERIODS)), dates=dates, returns=tuple(returns),
        positions=tuple(positions), equity=tuple(np.cumprod(1.0 + np.asarray(returns)).tolist()),
        metrics=trading_metrics(returns, positions=positions, periods_per_year=252), periods_per_year=252,
    )  # fmt: skip


@dataclass
class Hostile:
    root: Path
    given: ForwardData  # forward data given by hand: the candidates (their names hostile), DSR, PBO


@pytest.fixture(scope="module")
def repository(tmp_path_factory, sb3_zip) -> Hostile:
    """4 iterations (one a placeholder), their forward files and ``forward_returns.csv``, ``walk_forward.json``
    and one unreadable record: every string the page shows from them hostile."""
    root = tmp_path_factory.mktemp("hostile") / EXPERIMENT
    repo = CheckpointRepository(root)
    results = []
    for i in range(ITERATIONS):
        extra = {
            "selection": {"monitor": MONITOR, "mode": "max", "score": 0.1 * i},
            "algorithm": hostile("algorithm"),
            "versions": {hostile("package"): hostile("version")},
            "metadata": {"window": WINDOW},
        }
        metrics = {MONITOR: 0.1 * i + 0.05, "validation": {"cagr": 0.1, METRIC: 1.0}}
        if i == PLACEHOLDER:
            repo.commit(i, metrics=metrics, reason=REASON, extra=extra)
        else:
            repo.commit(i, metrics=metrics, model=sb3_zip, extra=extra)
        returns = [0.0] * PERIODS if i == PLACEHOLDER else [0.01 * ((k % 3) - 1) for k in range(PERIODS)]
        start = 10 + PERIODS * i
        dates = tuple(f"{hostile('date')} {r}" for r in range(start + 1, start + 1 + PERIODS))
        results.append(_result(i, FORWARD_CANDIDATE, dates, returns, i == PLACEHOLDER))
        repo.commit_forward(results[-1])  # an unsigned forward file: its candidate and dates as given
    every = np.concatenate([r.returns for r in results])
    repo.write_forward_returns(
        StitchedForward(
            rows=tuple(x for r in results for x in r.rows),
            dates=tuple(f"{hostile('csv-date')} {x}" for r in results for x in r.rows),
            iterations=tuple(r.iteration for r in results for _ in r.rows),
            candidates=(CSV_CANDIDATE,) * len(every),
            placeholders=tuple(r.placeholder for r in results for _ in r.rows),
            positions=tuple(x for r in results for x in r.positions),
            returns=tuple(every.tolist()),
            equity=tuple(np.cumprod(1.0 + every).tolist()),
            asset_returns=(0.002,) * len(every),
            periods_per_year=252,
        )
    )
    config = {
        "n_prices": hostile("n_prices"), "data_sha256": hostile("sha"), "algo": hostile("algo"),
        "splitter": {hostile("split-key"): hostile("split-value")}, "seed": hostile("seed"),
        "total_timesteps": hostile("budget"),
    }  # fmt: skip
    # shown only when it hashes to its fingerprint (and the records' signed one, when they carry one)
    repo.write_metadata("walk_forward.json", {"config": config, "fingerprint": config_fingerprint(config)})
    # a record verify cannot read: its problem (and the table's row) quotes the iteration it records
    record = {"schema_version": 1, "iteration": hostile("iteration")}
    (root / "checkpoints" / f"metrics_iter_{UNREADABLE}.json").write_text(json.dumps(record))

    prices = 100 * np.cumprod(1 + 0.01 * np.sin(np.arange(10 + PERIODS * ITERATIONS + 10)))

    def traded(i: int, name: str, sign: float) -> ForwardResult:
        flat = name == CANDIDATES[0] and i == PLACEHOLDER
        start = 10 + PERIODS * i
        returns = [
            0.0 if flat else float(sign * (prices[r] / prices[r - 1] - 1))
            for r in range(start + 1, start + 1 + PERIODS)
        ]
        return _result(i, name, None, returns, flat)

    candidates = {
        name: [traded(i, name, sign) for i in range(ITERATIONS)] for name, sign in zip(CANDIDATES, (1, -1), strict=True)
    }
    given = forward_data_from_results(
        [candidates[CANDIDATES[i % 2]][i] for i in range(ITERATIONS)],
        prices,
        selection_scores={i: 0.1 * i for i in range(ITERATIONS)},
        candidate_results=candidates,
        candidate_selection={name: {i: 0.1 * k for i in range(ITERATIONS)} for k, name in enumerate(CANDIDATES)},
    )
    assert given.reason is None and given.report["pbo"] is not None, given.reason
    return Hostile(root, given)


def write_report(h: Hostile, source: str, path: Path) -> Path:
    """The page from the repository alone (``kept``) or with the hand-given forward data (``given``)."""
    return _write_report(h.root, path, forward=h.given if source == "given" else None)


# -- the page's source --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["kept", "given"])
def test_every_script_element_holds_no_markup_that_could_end_or_escape_it(repository, source, tmp_path):
    """Without a browser: each ``<script>`` the page writes ends at its own ``</script>`` and holds no ``<!--`` or
    ``<script`` that would put the HTML parser into the script-data escape states."""
    page = write_report(repository, source, tmp_path / "report.html").read_text(encoding="utf-8")
    opened = [m.end() for m in re.finditer(r"<script\b[^>]*>", page, re.IGNORECASE)]
    charts = re.findall(r'<div class="chart" id="([a-z-]+)"></div>', page)
    assert len(opened) == len(charts) + 2  # one JSON payload per chart, plotly.js, the page's script
    for start in opened:
        content = page[start : page.lower().index("</script", start)].lower()
        assert "<!--" not in content and "<script" not in content
    figures = re.findall(r'<script type="application/json" class="figure"[^>]*>(.*?)</script>', page, re.DOTALL)
    assert len(figures) == len(charts)
    assert all("<" not in f and ">" not in f and "&" not in f and json.loads(f)["data"] for f in figures)


# -- the page in a browser ----------------------------------------------------------------------------------------
@dataclass
class Opened:
    page: object
    own: str
    foreign: list[str]
    requests: list[str]
    dialogs: list[str]
    console: list[tuple[str, str]]


@pytest.fixture
def open_page(chromium):
    contexts = []

    def opener(path: Path, javascript: bool = True) -> Opened:
        context = chromium.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        opened = Opened(context.new_page(), path.resolve().as_uri(), [], [], [], [])

        def route(r):  # the page's own file loads; anything else it asks for is recorded and refused
            if r.request.url == opened.own:
                r.continue_()
            else:
                opened.foreign.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        context.on("request", lambda r: opened.requests.append(r.url))
        page = opened.page
        page.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: opened.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: opened.console.append(("pageerror", str(e))))
        page.goto(opened.own)
        return opened

    yield opener
    for context in contexts:
        context.close()


def _structure(page: str) -> tuple[list[str], list[str]]:
    """The sections and charts the page's source writes (``<section id=...>``, ``<div class="chart" ...>``)."""
    return re.findall(r'<section id="([a-z-]+)">', page), re.findall(r'<div class="chart" id="([a-z-]+)"></div>', page)


def _traded_by(source: str) -> list[str]:
    """Who traded each window of the stitched curve, as the page says it."""
    # kept: the curve is recomputed from the forward files, so theirs, never the CSV's (which verify reports)
    who = [FORWARD_CANDIDATE] * ITERATIONS if source == "kept" else [CANDIDATES[i % 2] for i in range(ITERATIONS)]
    return ["placeholder (flat)" if i == PLACEHOLDER else name for i, name in enumerate(who)]


def _texts(page, selector: str) -> list[str]:
    """The exact text (``textContent``) of every element ``selector`` matches."""
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


def _untouched(opened: Opened) -> None:
    """No payload ran or became markup: no flag, no dialog, no request, no element or attribute it would make."""
    page = opened.page
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert opened.dialogs == [] and opened.foreign == []
    assert [u for u in opened.requests if u != opened.own and not u.startswith(("data:", "blob:"))] == []
    made = page.evaluate(
        """() => ({
        img: document.querySelectorAll('img').length,
        handlers: document.querySelectorAll('[onerror], [onmouseover], [onclick], [onload]').length,
        links: Array.from(document.querySelectorAll('a, [href]')).filter(a =>
            /javascript/i.test(a.getAttribute('href') || a.getAttribute('xlink:href') || '')).length,
        bold: document.querySelectorAll('main b, svg tspan[style*="bold"]').length,
    })"""
    )
    assert made == {"img": 0, "handlers": 0, "links": 0, "bold": 0}
    assert [m for m in opened.console if m[0] in ("error", "pageerror")] == []


@pytest.mark.parametrize("source", ["kept", "given"])
def test_hostile_strings_break_nothing_and_show_as_text(repository, source, open_page, tmp_path):
    out = write_report(repository, source, tmp_path / "report.html")
    sections, charts = _structure(out.read_text(encoding="utf-8"))
    assert sections == SECTIONS
    assert charts == (CHARTS if source == "given" else CHARTS[:3])  # kept: no candidates' folders, no PBO
    opened = open_page(out)
    page = opened.page

    # every section, every chart, every table row the source writes is in the document
    assert page.eval_on_selector_all("main > header", "els => els.length") == 1
    assert page.eval_on_selector_all("main > section", "els => els.map(s => s.id)") == sections
    page.wait_for_function(
        "ids => ids.every(id => document.getElementById(id)?._fullLayout !== undefined)", arg=charts, timeout=20_000
    )
    drawn = page.evaluate(
        "ids => ids.map(id => document.querySelectorAll("
        "`#${id}.js-plotly-plot .scatterlayer .trace, #${id}.js-plotly-plot .barlayer .trace`).length)",
        charts,
    )
    assert all(n > 0 for n in drawn), dict(zip(charts, drawn, strict=True))
    assert page.evaluate("() => document.scripts.length") == len(charts) + 2
    rows = page.eval_on_selector_all("#checkpoint-table tbody tr", "rs => rs.map(r => +r.dataset.iteration)")
    assert rows == [*range(ITERATIONS), UNREADABLE]

    # the strings, each shown as it is
    assert page.title() == f"{EXPERIMENT}: walk-forward report"
    assert _texts(page, "header h1") == [EXPERIMENT]
    header = dict(zip(_texts(page, "table.meta th"), _texts(page, "table.meta td"), strict=True))
    assert header["experiment"] == EXPERIMENT and header["repository"].endswith(f"/{EXPERIMENT}")
    assert header["data"].startswith(f"{hostile('n_prices')} rows, sha256 {hostile('sha')[:12]}")
    assert header["dates used by the windows"] == f"{WINDOW['train_start_time'][:10]} … {WINDOW['val_end_time'][:10]}"
    assert header["splitter"] == f"{hostile('split-key')} {hostile('split-value')}"
    assert header["algorithm(s)"] == f"{hostile('algo')}, {hostile('algorithm')}"
    assert header["seed"].startswith(hostile("seed")) and header["training budget"].startswith(hostile("budget"))
    assert header["selection"] == f"{MONITOR} (max)"
    assert header["versions"] == f"{hostile('package')} {hostile('version')}"
    named = CANDIDATES if source == "given" else (FORWARD_CANDIDATE,)
    assert header["candidates"].startswith(", ".join(named) + ":")
    problems = _texts(page, "#verify li")
    (problem,) = [p for p in problems if repr(hostile("iteration")) in p]
    assert any(p.startswith("forward_returns.csv") for p in problems), "the hostile CSV disagrees with the files"

    table = page.locator("#checkpoint-table")
    assert _texts(page, "#checkpoint-table thead th")[2] == MONITOR
    status = table.locator(f"tr[data-iteration='{PLACEHOLDER}'] td").nth(1)
    assert status.text_content() == status.get_attribute("data-sort") == f"placeholder: {REASON}"
    unreadable = table.locator(f"tr[data-iteration='{UNREADABLE}'] td").nth(1)
    assert unreadable.text_content() == unreadable.get_attribute("data-sort")
    assert unreadable.text_content().startswith("unreadable: ") and repr(hostile("iteration")) in problem
    validation = table.locator("tr[data-iteration='0'] td").nth(4).text_content()
    assert validation == f"{WINDOW['val_start_time'][:10]}..{WINDOW['val_end_time'][:10]}"

    scores = page.text_content("#scores")
    assert f"({MONITOR}, max)" in scores
    numbers = page.text_content("#numbers")
    assert f"best by {MONITOR} (max)" in numbers and f"reasons: {REASON} 1" in numbers
    assert f"validation.{METRIC}" in _texts(page, "#numbers details table.stats tbody th")
    traded = [t for t in _texts(page, "#forward-iterations tbody td:nth-child(2)") if t != "placeholder (flat)"]
    assert traded and set(traded) <= set(named)
    if source == "kept":
        assert f"Periods {hostile('date')} 11 … {hostile('date')} {10 + PERIODS * ITERATIONS}." in numbers
        assert "csv-candidate" not in page.content() and "csv-date" not in page.content()

    # the charts' own text (Plotly's legends, titles, annotations) shows them too, never as its markup
    legend = _texts(page, "#chart-scores .legendtext")
    assert f"selection score ({MONITOR})" in legend
    assert _texts(page, "#chart-scores .ytitle") == [MONITOR]
    assert f"selection score ({MONITOR}, validation)" in _texts(page, "#chart-selection-forward .legendtext")
    marks = [t for t in _texts(page, "#chart-forward .annotation-text") if t.startswith("#")]
    assert marks == [f"#{i} {who}" for i, who in enumerate(_traded_by(source))]
    if source == "given":
        candidates = _texts(page, "#chart-candidates .legendtext")
        assert all(f"{name}: forward sharpe" in candidates for name in CANDIDATES)
    _untouched(opened)


@pytest.mark.parametrize("source", ["kept", "given"])
def test_with_javascript_off_the_hostile_page_shows_its_tables(repository, source, open_page, tmp_path):
    out = write_report(repository, source, tmp_path / "report.html")
    sections, charts = _structure(out.read_text(encoding="utf-8"))
    opened = open_page(out, javascript=False)
    page = opened.page
    assert page.eval_on_selector_all("main > section", "els => els.map(s => s.id)") == sections == SECTIONS
    assert page.eval_on_selector_all("main noscript table.fallback", "ts => ts.length") == len(charts)
    assert page.eval_on_selector_all("#checkpoint-table tbody tr", "rs => rs.length") == ITERATIONS + 1
    # the scores chart's table: its columns are the traces, named as the chart names them
    assert f"selection score ({MONITOR})" in _texts(page, "#scores table.fallback thead th")
    assert _texts(page, "#forward-curve table.windows tbody td:nth-child(2)") == _traded_by(source)
    if source == "kept":
        periods = _texts(page, "#forward-curve table.windows tbody td:nth-child(3)")[0]
        assert periods == f"{hostile('date')} 11 … {hostile('date')} {10 + PERIODS}"
    else:
        assert all(f"{name}: forward sharpe" in _texts(page, "#scores table.fallback thead th") for name in CANDIDATES)
    _untouched(opened)
