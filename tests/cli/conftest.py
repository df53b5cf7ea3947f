"""The command line's fixtures: a user's module importable by ``--env module:callable``."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``user_module(name, source)``: the module written into ``tmp_path`` (the working folder, ``SB3_LOGDIR`` inside
    it), importable by its name for this test only."""
    names = []
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "logs"))
    monkeypatch.chdir(tmp_path)

    def write(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return tmp_path

    yield write
    for name in names:
        sys.modules.pop(name, None)  # each test imports its own copy
