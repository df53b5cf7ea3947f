"""``executor="auto"``, the default: the process pool when it can help, sequential otherwise, and why in one line.

The pool is chosen when more than one CPU is available to this process and more than one window can train at
once (the candidates of a window, or the windows of a run without ``warm_start``), and when the run's settings
can reach a ``spawn`` worker: the window's spec pickles, whatever it names from ``__main__`` a worker can import,
and the script is not one a worker would run again from its top (an entry point without
``if __name__ == "__main__":``). Otherwise the windows train in this process, as ``"sequential"`` does; a run whose
settings cannot be sent says so in a warning. Workers times torch threads never exceed the CPUs.

Scheduling only: the choice changes where a window trains, never what it trains (not part of the fingerprint).
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_iter_ckpt.runner.executors import (
    Executor,
    ProcessExecutor,
    SequentialExecutor,
    available_cpus,
    cgroup_cpus,
)

__all__ = ["AutoChoice", "available_cpus", "cgroup_cpus", "choose", "choose_for_runs", "unsendable"]


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` chose: the executor, its header line, and the reason for falling back (None: no fallback)."""

    executor: Executor
    line: str
    fallback: str | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def choose(
    cpus: int,
    concurrent: int,
    threads: int | None,
    *,
    n_jobs: int | None = None,
    shape: str = "",
    why_not: Callable[[], str | None] = lambda: None,
) -> AutoChoice:
    """The executor for ``cpus`` CPUs and ``concurrent`` windows that could train at once.

    :param threads: Torch threads each window asks for (``RunOptions.torch_threads``); None: torch's own setting,
        here the CPUs shared out among the workers.
    :param n_jobs: At most this many workers (None: no limit but the CPUs).
    :param shape: What makes the windows concurrent, in words (``"2 candidates per window"``).
    :param why_not: Why the settings cannot reach a worker process (``unsendable``), or None; asked only when
        the pool would be chosen.
    """
    shape = f", {shape}" if shape else ""
    workers = min(concurrent, cpus // (threads or 1), n_jobs or cpus)
    why = None
    if cpus <= 1:
        why = f"1 CPU{shape}"
    elif concurrent <= 1:
        why = f"{cpus} CPUs, {'1 window can train at a time' if concurrent == 1 else 'no window to train'}{shape}"
    elif workers <= 1 and n_jobs == 1:
        why = f"1 worker asked{shape}"
    elif workers <= 1:
        why = f"{cpus} CPUs, {_plural(threads or 1, 'torch thread')} per window: no CPUs left for a second worker"
    if why is not None:
        return AutoChoice(SequentialExecutor(), f"executor: sequential ({why})")
    fallback = why_not()
    if fallback is not None:
        return AutoChoice(SequentialExecutor(), f"executor: sequential ({fallback})", fallback=fallback)
    per_worker = threads or max(1, cpus // workers)
    line = (
        f"executor: process ({workers} workers x {_plural(per_worker, 'torch thread')}: {cpus} CPUs, "
        f"{concurrent} windows can train at once{shape})"
    )
    return AutoChoice(ProcessExecutor(workers, torch_threads=per_worker), line)


def choose_for_runs(runners: Sequence[Any], runs: Sequence[Any], n_jobs: int | None = None) -> AutoChoice:
    """``choose`` for the driver's runs (``walkforward._Run``: ``runner``, ``todo``, ``fingerprint``) of
    ``runners``: a warm-started run trains one window at a time, the others all their windows at once."""
    concurrent = sum(min(1, len(r.todo)) if r.runner.options.warm_start else len(r.todo) for r in runs)
    requested = [r.options.torch_threads for r in runners]
    threads = None if None in requested else max(requested, default=1)
    shape = []
    if len(runners) > 1:
        shape.append(f"{len(runners)} runs")
    candidates = max((len(r.options.candidates) for r in runners), default=0)
    if candidates:
        shape.append(f"{candidates} candidates per window")
    if any(r.options.warm_start for r in runners):
        shape.append("warm start: each window starts from the one before")

    def why_not() -> str | None:
        for run in runs:
            if run.todo:
                reason = unsendable(run.runner._spec(run.todo[0], run.fingerprint, None, False))
                if reason is not None:
                    return reason
        return None

    return choose(available_cpus(), concurrent, threads, n_jobs=n_jobs, shape=", ".join(shape), why_not=why_not)


# -- can the run's settings reach a spawn worker? -------------------------------------------------------------
class _ModuleFinder(pickle.Pickler):
    """A pickler that notes the functions and classes it pickles by reference (an instance's class included),
    by module: a worker imports each of those modules by name."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.names: dict[str, set[str]] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.names.setdefault(module, set()).add(str(getattr(obj, "__qualname__", obj)))
        return NotImplemented


def _first_unpicklable(spec: Any) -> str:
    """The setting that does not pickle, in words (the spec as a whole when no single field is to blame)."""
    for owner, prefix in ((spec.options, ""), (spec, "spec.")):
        for name, value in vars(owner).items():
            try:
                pickle.dumps(value)
            except Exception as exc:  # noqa: BLE001 - pickle raises many types
                return f"{prefix}{name} ({_short(value)}) cannot be pickled: {_one_line(exc)}"
    return "the window's spec cannot be pickled"


def _short(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _main_rerun() -> tuple[bool, str | None]:
    """Whether a spawn worker imports ``__main__`` again (``multiprocessing.spawn``'s rule), and from which file."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:  # run with -m: the worker imports the module by name, unless it is a __main__ itself
        rerun = name != "__main__" and not name.endswith(".__main__")
        return rerun, getattr(main, "__file__", None)
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return False, None
    return True, path


def _guarded(path: str, line: int) -> bool | None:
    """Whether ``line`` of the script at ``path`` is inside an ``if __name__ == "__main__":`` block (None: unknown)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            if node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno):
                return True
    return False


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    values = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


def _unguarded_call(path: str | None) -> str | None:
    """Why a worker would run this walk-forward again: called from the script's top level, outside the guard."""
    main = getattr(sys.modules.get("__main__"), "__dict__", None)
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is main):
        frame = frame.f_back
    if frame is None or path is None:
        return None  # not called from the script's top-level code: importing it again starts nothing
    guarded = _guarded(path, frame.f_lineno)
    if guarded:
        return None
    where = f"{os.path.basename(path)} line {frame.f_lineno}"
    if guarded is None:
        return f"cannot read the script ({where}) to see that its run is under `if __name__ == '__main__':`"
    return (
        f"the run starts at the top level of {where}, not under `if __name__ == '__main__':` (each worker process "
        "imports the script again and would start it again)"
    )


def unsendable(spec: Any) -> str | None:
    """Why ``spec`` (a ``WindowSpec``) cannot be trained in a ``spawn`` worker, in one line; None when it can."""
    finder = _ModuleFinder(io.BytesIO())
    try:
        finder.dump(spec)
    except Exception:  # noqa: BLE001 - pickle raises many types
        return f"the run's settings cannot be sent to a worker process: {_first_unpicklable(spec)}"
    rerun, path = _main_rerun()
    for module, names in sorted(finder.names.items()):
        shown = ", ".join(sorted(names))
        if module == "__main__" and not rerun:
            return (
                f"the run's settings name {shown} from __main__, which a worker process cannot import (an "
                "interactive session, a notebook, python -c or a package's __main__): define them in a module"
            )
        if module != "__main__" and getattr(sys.modules.get(module), "__spec__", None) is None:
            return (
                f"the run's settings name {shown} from {module}, a module made at run time that a worker process "
                "cannot import: define them in a module on the path"
            )
    return _unguarded_call(path if rerun else None)
