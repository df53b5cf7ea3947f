"""Collecting: a repository (and its forward data) read into a ``ReportData``, ``verify()`` run on the way.

Never raises for bad content: what is unreadable or missing becomes a note or a problem the page shows.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sb3_iter_ckpt.common.candidates import candidate_scores
from sb3_iter_ckpt.common.options import PERIODS_PER_YEAR_SOURCES
from sb3_iter_ckpt.common.record import Checkpoint, parse_record_name, utc_now
from sb3_iter_ckpt.common.steps import realized_caveat
from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.report.model import (
    FORWARD_MISSING,
    ForwardData,
    IterationRow,
    ReportData,
    _finite,
    forward_data,
    forward_metric,
)
from sb3_iter_ckpt.repository import CheckpointRepository, Problem, candidate_forwards, checked_run_file
from sb3_iter_ckpt.retention import is_pruned

#: The walk-forward runner's configuration file at the repository root.
RUN_FILE = "walk_forward.json"


def _open(repository: CheckpointRepository | str | os.PathLike[str]) -> CheckpointRepository:
    if isinstance(repository, CheckpointRepository):
        return repository
    return CheckpointRepository(repository if isinstance(repository, str) else Path(repository), sweep=False)


def _verify(repo: CheckpointRepository) -> tuple[list[Problem], list[str]]:
    try:
        problems = repo.verify()
    except (CheckpointError, OSError) as exc:  # e.g. object storage unreachable: say so, never hide it
        return [], [f"verify could not run: {exc}"]
    return problems, [str(p) for p in problems]


def _run_config(repo: CheckpointRepository, notes: list[str]) -> dict[str, Any] | None:
    try:
        run, why = checked_run_file(repo)
    except (CheckpointError, OSError) as exc:
        notes.append(f"{RUN_FILE} could not be read ({exc}): the run's configuration is not shown")
        return None
    if why is not None:  # never shown under "verify: ok" unless it is the configuration the records carry
        notes.append(f"{RUN_FILE} {why}: the run's configuration is not shown")
        return None
    if run is None:
        notes.append(
            f"no {RUN_FILE}: the data, splitter, algorithm and seed were not recorded "
            "(a repository written by the callback or another training loop)"
        )
        return None
    config = run.get("config")
    return config if isinstance(config, dict) else {}


def _window(ck: Checkpoint) -> dict[str, Any]:
    window = (ck.record.get("metadata") or {}).get("window")
    return window if isinstance(window, dict) else {}


def _row(ck: Checkpoint, monitor: str, best: int | None) -> IterationRow:
    window = _window(ck)
    validation = ""
    if window.get("val_start_time") or window.get("val_end_time"):
        validation = f"{str(window.get('val_start_time', ''))[:10]}..{str(window.get('val_end_time', ''))[:10]}"
    if is_pruned(ck):  # the record keeps the removed model's hash
        model = ((ck.record.get("pruned") or {}).get("artifacts") or {}).get("model")
        status, sha = "pruned", model.get("sha256") if isinstance(model, dict) else None
    else:
        status, sha = ("model" if ck.has_model else "placeholder"), ck.sha256
    return IterationRow(
        iteration=ck.iteration,
        status=status,
        reason=None if status == "model" else ck.reason,
        score=ck.score(monitor) if status != "placeholder" else None,
        validation=validation,
        timesteps=ck.timesteps,
        size_bytes=ck.size_bytes if ck.has_model else 0,
        sha256=sha,
        created_at=ck.created_at,
        best=ck.iteration == best,
    )


def _rows(cks: Sequence[Checkpoint], problems: Sequence[Problem], monitor: str, best: int | None) -> list[IterationRow]:
    rows = {ck.iteration: _row(ck, monitor, best) for ck in cks}
    for p in problems:  # a record list() could not read: still one row, saying why
        parsed = parse_record_name(p.file)
        if parsed is not None and parsed[0] not in rows:
            rows[parsed[0]] = IterationRow(iteration=parsed[0], status="unreadable", reason=p.message)
    return [rows[i] for i in sorted(rows)]


def _span(values: Sequence[Any], width: int = 100) -> str:
    found = sorted(str(v)[:width] for v in values if v)
    return f"{found[0]} … {found[-1]}" if found else "not recorded"


def _periods_per_year(config: dict[str, Any], cks: Sequence[Checkpoint]) -> str:
    """The run's annualization and where it came from (the latest record that says so)."""
    ppy = config.get("periods_per_year")
    if ppy is None or isinstance(ppy, bool):
        return "not recorded"
    shown = f"{ppy:g}" if isinstance(ppy, (int, float)) else str(ppy)[:100]
    sources = ((ck.record.get("metadata") or {}).get("periods_per_year_source") for ck in reversed(cks))
    source = next((s for s in sources if isinstance(s, str)), None)
    if source is None:  # written before the runner recorded it
        return shown
    return f"{shown}, {PERIODS_PER_YEAR_SOURCES.get(source, source[:100])}"


def _header(
    repo: CheckpointRepository,
    config: dict[str, Any] | None,
    cks: Sequence[Checkpoint],
    monitor: str,
    mode: str,
    forward: ForwardData | None = None,
) -> list[tuple[str, str]]:
    missing = "not recorded"
    c = config or {}
    data = f"{c['n_prices']} rows" if c.get("n_prices") is not None else missing
    if c.get("data_sha256"):
        data += f", sha256 {str(c['data_sha256'])[:12]}…"
    # From the first training day to the last day a window used: its test part's when it has one.
    bounds = [_window(ck).get(k) for ck in cks for k in ("train_start_time", "val_end_time", "test_end_time")]
    split = c.get("splitter")
    splitter = ", ".join(f"{k} {v}" for k, v in split.items() if v is not None) if isinstance(split, dict) else missing
    algos = sorted({str(ck.record["algorithm"]) for ck in cks if ck.record.get("algorithm")})
    algo = ", ".join(x for x in [str(c.get("algo") or ""), *algos] if x) or missing
    latest = next((v for ck in reversed(cks) if isinstance(v := ck.record.get("versions"), dict)), {})
    seed = f"{c['seed']} (iteration i trains with seed + i)" if c.get("seed") is not None else missing
    budget = f"{c['total_timesteps']} timesteps per iteration" if c.get("total_timesteps") else missing
    return [
        ("experiment", str(repo.root.name)),
        ("repository", str(repo.root)),
        ("data", data),
        ("dates used by the windows", _span(bounds, 10)),
        ("splitter", splitter),
        ("algorithm(s)", algo),
        ("candidates", _candidates_line(forward)),
        ("seed", seed),
        ("training budget", budget),
        ("periods per year", _periods_per_year(c, cks)),
        ("selection", f"{monitor} ({mode})"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(latest.items())) or missing),
        ("ran (first … last commit)", _span([ck.created_at for ck in cks], 19)),
    ]


def _input_notes(rows: Sequence[IterationRow]) -> list[str]:
    if not rows:
        return ["this repository has no committed iteration (no record under checkpoints/): nothing to show yet"]
    notes = []
    unreadable = [r.iteration for r in rows if r.status == "unreadable"]
    if unreadable:
        notes.append(f"record(s) of iteration(s) {unreadable} could not be read: see the problems above")
    if not any(r.status in ("model", "pruned") for r in rows):
        reasons = Counter(r.reason or "unknown" for r in rows if r.status == "placeholder")
        notes.append(
            "no iteration kept a model: every iteration is a placeholder or unreadable"
            + (f" ({', '.join(f'{k} ×{n}' for k, n in sorted(reasons.items()))})" if reasons else "")
        )
    return notes


def _forward_scores(forward: ForwardData | None, monitor: str) -> dict[int, float | None]:
    if forward is None or forward.report is None:
        return {}
    metric = forward_metric(monitor)
    return {
        int(it["iteration"]): _finite((it.get("forward") or {}).get(metric))
        for it in forward.report.get("iterations") or []
    }


def _candidates_line(forward: ForwardData | None) -> str:
    if forward is None or forward.report is None:
        return FORWARD_MISSING if forward is None or not forward.reason else f"not available: {forward.reason}"
    names = list(forward.candidates) or sorted(
        {str(it["candidate"]) for it in forward.report.get("iterations") or [] if it.get("candidate")}
    )
    if not names:
        return "one model per window (no candidates compared)"
    return f"{', '.join(names)}: the best by selection on each window trades its test part"


def _kept_forward(repo: CheckpointRepository) -> ForwardData:
    """The forward data a walk-forward run left in the repository, or the reason there is none."""
    try:
        report, reason = repo.forward_status()
        stitched = repo.stitched_forward() if report is not None else None
    except CheckpointError as exc:  # a damaged forward file: verify reports it, the page says why
        return forward_data(None, reason=f"the forward data cannot be read: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable records are reported through verify's problems
        selection = candidate_scores(repo.list()) if report is not None else {}
        try:  # only the candidates' chart needs them: the report's DSR and PBO say why they are missing
            candidates = candidate_forwards(repo) if report is not None else {}
        except CheckpointError:
            candidates = {}
    return forward_data(
        report, stitched=stitched, candidate_results=candidates, candidate_selection=selection, reason=reason
    )


def collect_report(
    repository: CheckpointRepository | str | os.PathLike[str], forward: ForwardData | None = None
) -> ReportData:
    """Read a repository into the page's data model, running ``verify()`` on the way.

    Never raises for bad content: an unreadable record, a missing configuration or a repository
    without iterations become ``notes``/``problems`` that the page shows.

    :param repository: A ``CheckpointRepository``, or the root of one (a path or an ``s3://`` URL).
    :param forward: The run's forward (out-of-sample) data (``forward_data`` or ``forward_data_from_results``);
        None: what the repository keeps (its forward results and ``forward_returns.csv``), or the reason
        it has none.
    :return: The ``ReportData``.
    """
    repo = _open(repository)
    problems, problem_lines = _verify(repo)
    if forward is None:
        forward = _kept_forward(repo)
    notes: list[str] = []
    config = _run_config(repo, notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable records are reported through verify's problems
        cks = repo.list()
        monitor, mode = repo.default_selection()
        best = repo.best()
        analysis = None
        if cks:
            try:
                analysis = repo.analyze()
            except (CheckpointError, OSError) as exc:
                notes.append(f"the analysis could not run: {exc}")
    rows = _rows(cks, problems, monitor, best.iteration if best else None)
    scores = _forward_scores(forward, monitor)
    rows = [replace(r, forward_score=scores.get(r.iteration)) for r in rows]
    header = _header(repo, config, cks, monitor, mode, forward)
    return ReportData(
        experiment=str(repo.root.name),
        location=str(repo.root),
        generated_at=utc_now(),
        header=header,
        monitor=monitor,
        mode=mode,
        rows=rows,
        analysis=analysis,
        problems=problem_lines,
        notes=_input_notes(rows) + notes,
        forward=forward,
        caveat=realized_caveat((config or {}).get("step_reader")),
    )
