"""Sphinx configuration: the pyro_vae documentation site (``sphinx-build -W -b html docs OUT``).

The pages are the Markdown files in this folder, read by MyST; the API reference is generated
from the package's Google-style docstrings (autodoc + napoleon + autosummary), as Pyro and
scvi-tools build theirs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Parser as RSTParser
from docutils.utils import new_document
from sphinx.util.docutils import SphinxDirective

import pyro_vae
from pyro_vae.app.cli import BETA_FLAGS
from pyro_vae.infer.objectives import BetaSchedule

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


def _value(field: dataclasses.Field) -> Any:
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _default(field: dataclasses.Field) -> str:
    """A setting's default as ``config.json`` writes it."""
    value = _value(field)
    value = value.to_dict() if hasattr(value, "to_dict") else value
    return value if isinstance(value, str) else json.dumps(value)


def _flags(field: dataclasses.Field) -> str:
    """The command-line flags the CLI generates for a setting (the KL weight's schedule has three)."""
    if isinstance(_value(field), BetaSchedule):
        return ", ".join(BETA_FLAGS)
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


class SettingsTable(SphinxDirective):
    """``settings-table`` *module.Class*: a table of a settings class's fields, from their definitions.

    Each setting is defined once (``pyro_vae.settings.setting``: default, help text, flag); the
    table is built from that definition when the docs are built, so a page never repeats a
    default or a help text that may change.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module, _, name = self.arguments[0].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        rows = [
            (f"{f.name} ({_flags(f)})", _default(f), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
        ]
        return [_table(("setting (flag)", "default", "what it does"), rows, widths=(25, 15, 60))]


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], widths: tuple[int, ...]) -> nodes.table:
    """A docutils table of literal cells: help texts are not parsed as reStructuredText."""
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=w) for w in widths]

    def row(cells: tuple[str, ...], literal_first: bool) -> nodes.row:
        out = nodes.row()
        for i, text in enumerate(cells):
            para = nodes.paragraph()
            para += nodes.literal(text=text) if literal_first and i < 2 else nodes.Text(text)
            out += nodes.entry("", para)
        return out

    group += nodes.thead("", row(header, literal_first=False))
    group += nodes.tbody("", *(row(r, literal_first=True) for r in rows))
    return nodes.table("", group)


class RegistryTable(SphinxDirective):
    """``registry-table`` *module*: every name in a plug-in module's ``REGISTRY`` with its class.

    Each row is the registered name, a link to the class's API entry and the first paragraph of
    its docstring, so a plug-in registered later appears without an edit of the page.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 20 25 55", ""]
        lines += ["   * - name", "     - class", "     - what it is"]
        for name in module.REGISTRY.names():
            cls = module.REGISTRY.get(name)
            summary = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
            lines += [
                f"   * - ``{name}``",
                f"     - :class:`~{cls.__module__}.{cls.__qualname__}`",
                f"     - {summary}",
            ]
        # Parsed as reStructuredText (the docstrings' language) also inside a MyST page, whose own
        # nested parse would read the table as Markdown.
        document = new_document(f"registry-table {self.arguments[0]}", self.state.document.settings)
        RSTParser().parse("\n".join(lines), document)
        return document.children


def setup(app: Any) -> dict[str, bool]:
    """The ``settings-table`` and ``registry-table`` directives for the pages."""
    app.add_directive("settings-table", SettingsTable)
    app.add_directive("registry-table", RegistryTable)
    return {"parallel_read_safe": True}
