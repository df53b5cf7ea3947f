"""The package's shape, checked from its source with ``ast`` (nothing is imported).

* The import graph (every ``import``, inside functions and under ``TYPE_CHECKING`` too) has no cycle
  between modules, and every import follows the direction documented in ``DEVELOPERS.md``'s layout
  table: each row is a *unit*, a top-level module (``callback.py``) or a folder (``store/``, whose
  modules may import each other freely), and its "may import" column lists units, read transitively.
  A module with a row of its own inside a folder (a module-level exception) follows its own row.
  Two rules of the project hold on the table itself: the pure units reach nothing above them, and
  ``store/storage/`` never reaches the record format.
* Every module has a line in ``DEVELOPERS.md``'s module index.
* The top of the package holds only the public modules and the concern folders; no module is over
  ``MAX_MODULE_LINES`` lines, no folder holds over ``MAX_FOLDER_MODULES`` modules, no function is over
  ``MAX_FUNCTION_LINES`` lines and no class over ``MAX_CLASS_LINES``.
"""

from __future__ import annotations

import ast
import graphlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "sb3_iter_ckpt"
DEVELOPERS = ROOT / "DEVELOPERS.md"

#: The project's rule, independent of the table: these units reach nothing but each other.
PURE = {
    "common/",
    "stats/",
    "retention.py",
    "splitter.py",
    "errors.py",
    "metrics.py",
    "overfitting.py",
}
#: The direction of the layers named in the project's rules, top to bottom.
CHAIN = [
    "cli/",
    "walkforward.py",
    "runner/",
    "callback.py",
    "repository.py",
    "store/",
    "store/storage/",
    "errors.py",
]
#: What the top of the package may hold: the public modules (what users import) and the concern folders.
PUBLIC_MODULES = {
    "__init__.py",
    "callback.py",
    "repository.py",
    "retention.py",
    "walkforward.py",
    "splitter.py",
    "data.py",
    "metrics.py",
    "overfitting.py",
    "legacy.py",
    "errors.py",
    "py.typed",
}
FOLDERS = {"capture", "cli", "common", "envs", "forward", "report", "runner", "stats", "store"}

MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600
MAX_FOLDER_MODULES = 15


# -- the import graph ----------------------------------------------------------------------------------------
def modules(package_dir: Path) -> dict[str, Path]:
    """``{"storage/base.py": path, "__init__.py": path, ...}`` for every module of the package."""
    return {p.relative_to(package_dir).as_posix(): p for p in sorted(package_dir.rglob("*.py"))}


def _module_of(dotted: str, known: dict[str, Path]) -> str | None:
    """``sb3_iter_ckpt.store.storage.local`` -> ``storage/local.py`` (a package -> its ``__init__.py``)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    rel = "/".join(parts[1:])
    for candidate in (f"{rel}.py", f"{rel}/__init__.py" if rel else "__init__.py"):
        if candidate in known:
            return candidate
    return None


def _dotted(module: str) -> str:
    """``storage/local.py`` -> ``sb3_iter_ckpt.store.storage.local``; ``storage/__init__.py`` -> ``...storage``."""
    parts = [PACKAGE, *module.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, tree: ast.AST) -> Iterator[tuple[str, ...]]:
    """Every import of ``module``, as the dotted names it may resolve to, first match wins."""
    package = _dotted(module) if module.endswith("__init__.py") else _dotted(module).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                yield f"{source}.{alias.name}", source  # the submodule if it is one, else the module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "import_module" and isinstance(node.args[0].value, str):
                yield (node.args[0].value,)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: {modules it imports}}`` within the package, from the source."""
    known = modules(package_dir)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        deps: set[str] = set()
        for names in _imported(module, ast.parse(path.read_text(encoding="utf-8"), str(path))):
            target = next(filter(None, (_module_of(n, known) for n in names)), None)
            if target is not None and target != module:
                deps.add(target)
        graph[module] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


# -- the documented direction --------------------------------------------------------------------------------
_ROW = re.compile(r"^\|\s*`(?P<unit>[^`]+(?:\.py|/))`\s*\|")
_INDEX_ROW = re.compile(r"^\|\s*`(?P<module>[^`]+\.py)`\s*\|[^|]*\|\s*$")


def _rows(text: str, heading: str) -> Iterator[list[str]]:
    """The table rows under ``## heading`` (up to the next heading of that level), as lists of cells."""
    section = ("\n" + text).split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if line.startswith("| `"):
            yield [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def documented_layers(text: str) -> dict[str, set[str]]:
    """``{unit: {units it may import directly}}`` from the layout table of ``DEVELOPERS.md``."""
    table: dict[str, set[str]] = {}
    for cells in _rows(text, "Layout: folders by concern"):
        assert len(cells) == 3, f"DEVELOPERS.md: a layout row needs 3 cells (unit, job, may import): {cells}"
        unit = cells[0].strip("`")
        assert unit not in table, f"DEVELOPERS.md lists {unit} twice"
        table[unit] = set(re.findall(r"`([^`]+(?:\.py|/))`", cells[2]))
    return table


def documented_modules(text: str) -> set[str]:
    """The modules named in ``DEVELOPERS.md``'s module index (``| `store/index.py` | job |``)."""
    return {cells[0].strip("`") for cells in _rows(text, "Module index")}


def unit_of(module: str, table: dict[str, set[str]]) -> str:
    """The row that governs ``module``: its own row, else the deepest folder row above it."""
    if module in table:
        return module
    parts = module.split("/")[:-1]
    for depth in range(len(parts), 0, -1):
        folder = "/".join(parts[:depth]) + "/"
        if folder in table:
            return folder
    return module


def reachable(table: dict[str, set[str]], unit: str) -> set[str]:
    seen: set[str] = set()
    todo = list(table.get(unit, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(table.get(m, ()))
    return seen


def allowed(a: str, b: str, table: dict[str, set[str]]) -> bool:
    ua, ub = unit_of(a, table), unit_of(b, table)
    if ua.endswith("/") and b.startswith(ua) and "/" not in b[len(ua) :]:
        return True  # a folder's modules may import each other (the cycle check still applies)
    return ub in reachable(table, ua)


def violations(graph: dict[str, set[str]], table: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, deps in graph.items() for b in deps if not allowed(a, b, table)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT / PACKAGE)


@pytest.fixture(scope="module")
def table() -> dict[str, set[str]]:
    return documented_layers(DEVELOPERS.read_text(encoding="utf-8"))


def test_the_package_has_no_import_cycle(graph):
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_every_module_is_governed_by_a_row_and_listed_in_the_index(graph, table):
    ungoverned = sorted(m for m in graph if unit_of(m, table) not in table)
    assert not ungoverned, f"modules under no row of DEVELOPERS.md's layout table: {ungoverned}"
    units = {unit_of(m, table) for m in graph}
    assert set(table) - units == set(), (
        f"DEVELOPERS.md's layout table names units that do not exist: {set(table) - units}"
    )
    named = set().union(*table.values())
    assert named <= set(table), f"'may import' names units without a row: {sorted(named - set(table))}"
    index = documented_modules(DEVELOPERS.read_text(encoding="utf-8"))
    assert set(graph) - index == set(), "modules missing from DEVELOPERS.md's module index"
    assert index - set(graph) == set(), "DEVELOPERS.md's module index names modules that do not exist"


def test_the_documented_layers_keep_the_projects_direction(table):
    assert find_cycle(table) is None, f"DEVELOPERS.md allows a cycle: {find_cycle(table)}"
    for upper, lower in itertools.pairwise(CHAIN):
        assert lower in reachable(table, upper), f"DEVELOPERS.md: {upper} should reach {lower}"
    for unit in PURE:
        assert reachable(table, unit) <= PURE, f"DEVELOPERS.md lets pure {unit} reach {reachable(table, unit)}"
    storage = {u for u in table if u.startswith("store/storage/")}
    for unit in storage:
        assert reachable(table, unit) <= storage | {"errors.py"}, f"{unit} may reach the record format"


def test_every_import_follows_the_documented_direction(graph, table):
    found = sorted(f"{a} imports {b}" for a, b in violations(graph, table))
    assert not found, "imports against DEVELOPERS.md's direction (fix the import, or the table if it is right):\n" + (
        "\n".join(found)
    )


#: The record format's file names (``metrics_iter_{i}.json``, ``no_model_iter_{i}.json``); "no_model" alone also
#: catches a pattern such as ``(metrics|no_model)_iter_``.
RECORD_NAMES = ("metrics_iter", "no_model")


def test_storage_never_names_the_record_files():
    # The table cannot show this: a copied regex imports nothing. The repository tells storage what it
    # needs of records through the Storage hooks (references, record_of).
    found = sorted(
        f"{path.relative_to(ROOT).as_posix()}: {name!r}"
        for path in (ROOT / PACKAGE / "store" / "storage").rglob("*.py")
        for name in RECORD_NAMES
        if name in path.read_text(encoding="utf-8")
    )
    assert not found, f"storage code names the record files (ask the repository's hooks instead): {found}"


# -- the checker itself --------------------------------------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_the_top_of_the_package_holds_the_public_modules_and_the_concern_folders():
    top = {p.name for p in (ROOT / PACKAGE).iterdir() if p.name != "__pycache__"}
    assert top == PUBLIC_MODULES | FOLDERS, (
        f"unexpected at the package's top: {sorted(top ^ (PUBLIC_MODULES | FOLDERS))}"
    )


def test_no_module_or_folder_is_too_large():
    found = {
        m: n for m, p in modules(ROOT / PACKAGE).items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split them by job): {found}"
    folders: dict[str, int] = {}
    for m in modules(ROOT / PACKAGE):
        if m.rsplit("/", 1)[-1] != "__init__.py":
            folders[m.rpartition("/")[0]] = folders.get(m.rpartition("/")[0], 0) + 1
    big = {f or "(top)": n for f, n in folders.items() if n > MAX_FOLDER_MODULES}
    assert not big, f"folders over {MAX_FOLDER_MODULES} modules (group them): {big}"


def test_the_graph_resolves_every_form_of_import(tmp_path):
    root = _package(
        tmp_path,
        {
            "a.py": "from . import b\nfrom .sub import c\n",
            "b.py": "def f():\n    from sb3_iter_ckpt.sub import d  # a submodule, inside a function\n",
            "sub/__init__.py": "from .c import X\nfrom .. import e\n",
            "sub/c.py": "import sb3_iter_ckpt.e\nfrom sb3_iter_ckpt.sub import thing  # a name: the package\n",
            "sub/d.py": "import importlib\nimportlib.import_module('sb3_iter_ckpt.e')\nimport numpy\n",
            "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sb3_iter_ckpt import a\n",
        },
    )
    assert import_graph(root) == {
        "__init__.py": set(),
        "a.py": {"b.py", "sub/c.py"},
        "b.py": {"sub/d.py"},
        "sub/__init__.py": {"sub/c.py", "e.py"},
        "sub/c.py": {"e.py", "sub/__init__.py"},
        "sub/d.py": {"e.py"},
        "e.py": {"a.py"},
    }
    assert find_cycle(import_graph(root))  # e -> a -> b -> sub/d -> e


def test_a_cyclic_import_fails_and_so_does_an_upward_one(graph, table):
    cyclic = {m: set(d) for m, d in graph.items()}
    cyclic["store/storage/base.py"].add("repository.py")
    assert find_cycle(cyclic)
    assert ("store/storage/base.py", "repository.py") in violations(cyclic, table)
    upward = {m: set(d) for m, d in graph.items()}
    upward["common/record.py"].add("stats/metrics.py")  # no cycle, but against the table
    upward["store/index.py"].add("runner/algorithms.py")  # a folder importing a folder above it
    upward["store/bestfiles.py"].add("store/loading.py")  # within a folder: allowed
    assert find_cycle(upward) is None
    assert violations(upward, table) - violations(graph, table) == {
        ("common/record.py", "stats/metrics.py"),
        ("store/index.py", "runner/algorithms.py"),
    }


def test_the_table_parser_reads_folders_modules_and_escaped_pipes():
    text = (
        "## Layout: folders by concern\n| unit | job | may import |\n| --- | --- | --- |\n"
        "| `a.py` | union with `\\|` | `b/`, `c/d.py` |\n| `b/` | x | nothing |\n| `b/e.py` | y | nothing |\n"
        "## Module index\n| `b/f.py` | z |\n"
    )
    table = documented_layers(text)
    assert table == {"a.py": {"b/", "c/d.py"}, "b/": set(), "b/e.py": set()}
    assert documented_modules(text) == {"b/f.py"}
    assert unit_of("b/f.py", table) == "b/" and unit_of("b/e.py", table) == "b/e.py"
    assert allowed("b/f.py", "b/e.py", table)  # same folder
    assert not allowed("b/e.py", "b/f.py", table)  # an exception follows its own row
    assert allowed("a.py", "b/f.py", table) and not allowed("b/f.py", "a.py", table)


# -- sizes ---------------------------------------------------------------------------------------------------
def oversized(package_dir: Path) -> dict[str, int]:
    """``{"module.py::Class.method": lines}`` of every function or class over its limit (nested ones too)."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, module: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if lines > (MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES):
                    out[f"{module}::{name}"] = lines
                visit(child, module, f"{name}.")
            else:
                visit(child, module, prefix)

    for module, path in modules(package_dir).items():
        visit(ast.parse(path.read_text(encoding="utf-8")), module, "")
    return out


def test_no_function_or_class_is_too_long():
    found = oversized(ROOT / PACKAGE)
    assert not found, f"over {MAX_FUNCTION_LINES} lines (function) or {MAX_CLASS_LINES} (class): {found}; split it"


def test_the_size_check_sees_methods_nested_functions_and_classes(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    methods = "".join(f"    def m{i}(self):\n{body.replace('    x', '        x')}" for i in range(7))
    root = _package(
        tmp_path,
        {
            "a.py": f"def short():\n    pass\n\n\ndef outer():\n    def inner():\n{body.replace('    x', '        x')}",
            "b.py": f"class Big:\n{methods}",
        },
    )
    assert oversized(root) == {
        "a.py::outer": MAX_FUNCTION_LINES + 2,
        "a.py::outer.inner": MAX_FUNCTION_LINES + 1,
        "b.py::Big": 1 + 7 * (MAX_FUNCTION_LINES + 1),
        **{f"b.py::Big.m{i}": MAX_FUNCTION_LINES + 1 for i in range(7)},
    }
