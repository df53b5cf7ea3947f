"""The README's two set-up commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = _bash_blocks(readme)[1].strip()
    assert test_cmd.endswith("python -m pytest")
    # .ci/run creates its own venv, then runs the rest of the README command verbatim
    rest = test_cmd.split("&& ", 2)[2]
    assert rest in ci


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in _bash_blocks(setup)]
    assert len(commands) == 2
    assert "sb3-iter-ckpt walk-forward" in commands[0]
    assert "pytest" in commands[1]
    assert all("pip install torch==2.13.0" in c for c in commands)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's Python blocks, in order, in one namespace, as a new user would paste them."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    repo = namespace["repo"]
    assert repo.iterations() == [0, 1, 2] and namespace["report"]["counts"]["total"] == 3
    assert (tmp_path / "results" / "1003" / "checkpoint_summary.json").is_file()
