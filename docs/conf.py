"""Sphinx configuration: the pyro_vae documentation site (``sphinx-build -W -b html docs OUT``).

The pages are the Markdown files in this folder, read by MyST; the API reference is generated
from the package's Google-style docstrings (autodoc + napoleon + autosummary), as Pyro and
scvi-tools build theirs.
"""

from __future__ import annotations

import pyro_vae

project = "pyro_vae"
author = "the pyro_vae authors"
copyright = "2026, the pyro_vae authors"
release = pyro_vae.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Run output and build folders are never pages.
exclude_patterns = ["_build", "generated/*.md", "**/.ipynb_checkpoints"]

# Markdown pages: $...$ maths, heading anchors for [text](page.md#section) links.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference: one page per module, written into docs/generated/ (ignored by git).
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The public names (pyro_vae.VAE, ...) are documented at the top level and again in their modules,
# so an unqualified name in a type hint has two targets, both the same object: Sphinx takes the
# first. Only that ambiguity is silenced; missing targets and every other warning still fail -W.
suppress_warnings = ["ref.python"]


html_theme = "alabaster"
html_title = f"pyro_vae {release}"
