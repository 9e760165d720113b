"""Sphinx configuration for scimpute."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))

project = "scimpute"
author = "scimpute developers"
copyright = f"{date.today().year}, {author}"
release = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = False
# The tutorials are rendered from executed notebooks stored in docs/tutorials/*.ipynb
# (python docs/execute_tutorials.py); the build executes nothing (see tutorials/index).
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# No intersphinx: CI builds the docs offline with warnings as errors.
nitpicky = False

html_theme = "sphinx_book_theme"
html_title = "scimpute"
html_theme_options = {"repository_url": "https://github.com/scverse/scimpute", "use_repository_button": True}
