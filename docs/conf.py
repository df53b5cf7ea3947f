"""Sphinx configuration of the sb3-iter-ckpt documentation.

Build (from the repository root, warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

# The package is installed editable in development and CI; this also lets a plain checkout build.
sys.path.insert(0, os.path.abspath(".."))

from sb3_iter_ckpt.common.version import __version__  # noqa: E402

project = "sb3-iter-ckpt"
author = "sb3-iter-ckpt contributors"
copyright = "sb3-iter-ckpt contributors"
version = __version__
release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{eval-rst}`` for the odd directive, anchors on h1-h3 for ``[text](page.md#anchor)`` links.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Autodoc, in SB3's style: reST ``:param:`` fields, type hints shown in the descriptions.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True
autoclass_content = "class"
nitpicky = False

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-iter-ckpt {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
