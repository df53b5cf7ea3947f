"""The documentation is checked like code.

* Every ```python block of ``docs/**/*.md`` runs, one test per block. The blocks of one page run in
  order, in one namespace and one temporary working folder (a block may use what an earlier block of
  its page made), with ``SB3_LOGDIR`` inside that folder.
* Every ``sb3-iter-ckpt ...`` line of a ```bash block runs too, in place, through ``cli.main`` (no
  subprocess: the exit code and the output are the same, without a second interpreter start).
  ``walk-forward`` lines run with shrunken budgets (see ``_shrink``), everything else as written.
* The ```yaml RL Zoo block is parsed and its callbacks are built the way rl_zoo3 builds them.
* The README's Python example is the quickstart's.
* The Sphinx build runs with warnings as errors, and every public name has an API entry.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BUILD_COMMAND = "python -m sphinx -W --keep-going -b html docs docs/_build/html"

_ROLE = re.compile(r"\{(class|func|mod|data|meth|attr|exc)\}`([^`<]+)`")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.S | re.M)


@dataclass
class Block:
    page: str
    index: int  # position among the page's runnable blocks
    lang: str
    code: str
    line: int

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def _fences(text: str) -> list[tuple[str, str, int]]:
    return [(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]


def _cli_lines(code: str) -> list[str]:
    """The ``sb3-iter-ckpt`` commands of a bash block (comments stripped, ``\\`` continuations joined)."""
    joined = code.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("sb3-iter-ckpt "):
            out.append(line)
    return out


def _runnable(lang: str, code: str) -> bool:
    return lang == "python" or (lang in ("bash", "console", "shell") and bool(_cli_lines(code))) or lang == "yaml"


def _blocks() -> list[Block]:
    blocks = []
    for path in _pages():
        page = path.relative_to(DOCS).as_posix()
        n = 0
        for lang, code, line in _fences(path.read_text(encoding="utf-8")):
            if _runnable(lang, code):
                blocks.append(Block(page, n, lang, code, line))
                n += 1
    return blocks


BLOCKS = _blocks()


# -- running a page's blocks in order ---------------------------------------------------------------------
@dataclass
class _PageState:
    folder: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    done: int = 0  # blocks already run


_STATES: dict[str, _PageState] = {}


def _shrink(argv: list[str]) -> list[str]:
    """``walk-forward`` at test budgets: 128 timesteps per iteration, 2 iterations, 64-step rollouts,
    an evaluation every 64 timesteps (options the example sets itself are kept, budgets capped), sequential
    unless the example names its executor (auto's pool starts in seconds, longer than these windows train)."""
    if not argv or argv[0] != "walk-forward":
        return argv
    argv = list(argv)
    if "--executor" not in argv:
        argv += ["--executor", "sequential"]
    for option, cap in (("--total-timesteps", 128), ("--iterations", 2), ("--n-steps", 64), ("--eval-freq", 64)):
        if option in argv:
            i = argv.index(option) + 1
            argv[i] = str(min(int(argv[i]), cap))
        else:
            argv += [option, str(cap)]
    return argv


def _run_cli(line: str) -> str:
    from sb3_iter_ckpt import cli

    argv = _shrink(shlex.split(line)[1:])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse's --version and --help
            rc = exc.code or 0
    assert rc == 0, f"`{line}` exited {rc}:\n{out.getvalue()}\n{err.getvalue()}"
    return out.getvalue()


def _rl_zoo_callbacks(hyperparams: dict[str, Any]) -> list[Any]:
    """What ``rl_zoo3.utils.get_callback_list`` does with a ``callback:`` entry (class path + kwargs)."""
    entry = hyperparams.get("callback")
    names = entry if isinstance(entry, list) else [entry]
    callbacks = []
    for name in names:
        kwargs: dict[str, Any] = {}
        if isinstance(name, dict):
            assert len(name) == 1, f"YAML formatting error near {name}"
            ((name, kwargs),) = name.items()
        module, _, cls = name.rpartition(".")
        callbacks.append(getattr(importlib.import_module(module), cls)(**kwargs))
    return callbacks


def _run_yaml(code: str) -> None:
    yaml = pytest.importorskip("yaml")
    from stable_baselines3 import PPO

    from sb3_iter_ckpt import IterationCheckpointCallback

    config = yaml.safe_load(code)
    for env_id, hyperparams in config.items():
        callbacks = _rl_zoo_callbacks(hyperparams)
        assert any(isinstance(c, IterationCheckpointCallback) for c in callbacks)
        model = PPO(hyperparams.get("policy", "MlpPolicy"), env_id, n_steps=32, batch_size=32, n_epochs=1, device="cpu")
        model.learn(64, callback=callbacks)


def _run(block: Block, state: _PageState) -> None:
    if block.lang == "python":
        code = compile(block.code, f"docs/{block.page}:{block.line}", "exec")
        exec(code, state.namespace)  # noqa: S102 - the documentation's own examples
    elif block.lang == "yaml":
        _run_yaml(block.code)
    else:
        for line in _cli_lines(block.code):
            _run_cli(line)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_example_runs(block: Block, tmp_path_factory, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    state = _STATES.get(block.page)
    if state is None or state.done > block.index:  # first block of the page (or a rerun)
        state = _STATES[block.page] = _PageState(tmp_path_factory.mktemp("docs"))
        # A real module, so that dataclasses and pickle find the classes a page defines.
        module = types.ModuleType("docs_" + re.sub(r"\W", "_", block.page.removesuffix(".md")))
        sys.modules[module.__name__] = module
        state.namespace = module.__dict__
    monkeypatch.chdir(state.folder)
    monkeypatch.setenv("SB3_LOGDIR", str(state.folder / "sb3_logs"))
    # The console script next to this interpreter, for examples that run `sb3-iter-ckpt` as a program.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    while state.done < block.index:  # earlier blocks not run yet (e.g. with -k): run them first
        _run(page_blocks[state.done], state)
        state.done += 1
    _run(block, state)
    state.done += 1


def test_every_page_is_in_a_toctree_and_examples_were_found():
    assert len(BLOCKS) >= 20, "the example extractor found too few blocks; did the fence syntax change?"
    pages = {b.page for b in BLOCKS}
    assert {"quickstart.md", "guide/callback.md", "guide/repository.md", "guide/retention.md"} <= pages


# -- the README and the docs tell the same story ------------------------------------------------------------
def test_readme_example_is_the_quickstart():
    readme = [c for lang, c, _ in _fences((ROOT / "README.md").read_text(encoding="utf-8")) if lang == "python"]
    quick = [c for lang, c, _ in _fences((DOCS / "quickstart.md").read_text(encoding="utf-8")) if lang == "python"]
    assert readme and quick
    assert readme[0].strip() == quick[0].strip(), "README.md's Python example must be docs/quickstart.md's first"


def test_callback_guide_documents_every_argument():
    from sb3_iter_ckpt import IterationCheckpointCallback

    text = (DOCS / "guide" / "callback.md").read_text(encoding="utf-8")
    params = [p for p in inspect.signature(IterationCheckpointCallback.__init__).parameters if p != "self"]
    missing = [p for p in params if f"`{p}`" not in text]
    assert not missing, f"docs/guide/callback.md does not describe: {missing}"


def test_cli_guide_documents_every_verb_and_exit_code():
    from sb3_iter_ckpt import cli

    text = (DOCS / "guide" / "cli.md").read_text(encoding="utf-8")
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    missing = [v for v in verbs if f"sb3-iter-ckpt {v}" not in text]
    assert not missing, f"docs/guide/cli.md has no example of: {missing}"
    for verb, sub in verbs.items():
        options = [o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        undocumented = [o for o in options if f"`{o}" not in text]
        assert not undocumented, f"docs/guide/cli.md does not describe {verb} {undocumented}"
    codes = [v for k, v in vars(cli).items() if k.startswith("EXIT_")]
    assert all(f"| {c} |" in text for c in codes), "every exit code has a row in the exit code table"


def test_analysis_guide_documents_every_summary_field(tmp_path):
    from sb3_iter_ckpt import CheckpointRepository

    text = (DOCS / "guide" / "analysis.md").read_text(encoding="utf-8")
    repo = CheckpointRepository(tmp_path / "r")
    repo.commit(0, metrics={"mean_reward": 1.0}, reason="no_evaluation")
    fields = set(repo.write_summary()) | set(repo.write_summary()["metadata"]) | set(repo.analyze())
    fields |= set(repo.training_summary())
    from stable_baselines3 import PPO

    from sb3_iter_ckpt import IterationCheckpointCallback

    cb = IterationCheckpointCallback(repo, eval_freq=32, metadata={"x": 1})
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, device="cpu").learn(32, callback=cb)
    fields |= set(cb.committed[0].record)
    missing = sorted(f for f in fields if f"`{f}`" not in text)
    assert not missing, f"docs/guide/analysis.md does not describe: {missing}"


def test_install_page_lists_every_extra():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    text = (DOCS / "install.md").read_text(encoding="utf-8")
    missing = [e for e in cfg["options.extras_require"] if f"| `{e}` |" not in text]
    assert not missing, f"docs/install.md has no row for the extras {missing}"


# -- the site builds, warnings are errors ------------------------------------------------------------------
def test_documented_build_command():
    assert BUILD_COMMAND in (DOCS / "index.md").read_text(encoding="utf-8")


def _inventory_names(path: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    data = path.read_bytes()
    if hasattr(InventoryFile, "loads"):  # Sphinx >= 8.2
        inventory = InventoryFile.loads(data, uri="")
        inventory = getattr(inventory, "data", inventory)
    else:  # pragma: no cover - older Sphinx
        inventory = InventoryFile.load(io.BytesIO(data), "", lambda base, uri: uri)
    return {name for kind in inventory.values() for name in kind}


def test_sphinx_build_has_no_warnings(tmp_path):
    for module in ("sphinx", "myst_parser", "sphinx_rtd_theme"):
        pytest.importorskip(module, reason='the docs extra is not installed: pip install -e ".[docs]"')
    out = tmp_path / "html"
    argv = BUILD_COMMAND.split()[1:-1] + [str(out)]  # same flags, the output in tmp
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"sphinx build failed (warnings are errors):\n{proc.stdout[-3000:]}\n{proc.stderr}"

    import sb3_iter_ckpt

    documented = _inventory_names(out / "objects.inv")
    public = [n for n in sb3_iter_ckpt.__all__ if not n.startswith("__")]
    missing = [
        n for n in public if f"sb3_iter_ckpt.{n}" not in documented and f"sb3_iter_ckpt.errors.{n}" not in documented
    ]
    assert not missing, f"public names without an API entry: {missing}"

    # Cross-references of the guide pages must land (the build does not check them: nitpicky is off,
    # so that the docstrings' references to SB3, numpy or gymnasium types need no inventory).
    broken = []
    for path in _pages():
        for role, target in _ROLE.findall(path.read_text(encoding="utf-8")):
            if target.lstrip("~") not in documented:
                broken.append(f"{path.relative_to(DOCS)}: {{{role}}}`{target}`")
    assert not broken, "references to nothing in the API reference:\n" + "\n".join(broken)
