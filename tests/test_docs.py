"""The documentation: a README that is a front page, and a Sphinx site under docs/ that builds
with warnings as errors and has every page in a toctree."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 150
QUICK_START = (
    "pip install torch==2.13.0 && pip install -e . && pyro-vae train",
    'pip install torch==2.13.0 && pip install -e ".[test]" && PYRO_VAE_DATA=../shared/data python -m pytest',
)
needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None,
    reason='the docs extra is not installed (pip install -e ".[docs]")',
)


def test_readme_is_a_front_page_with_the_quick_start_commands():
    text = (ROOT / "README.md").read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the reference belongs in docs/"
    for command in QUICK_START:
        assert f"\n{command}\n" in text, command


def test_readme_links_point_at_files_that_exist():
    text = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in link]
    assert links, "the README links to no page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        str(source),
        str(out),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def copy_docs(dest: Path) -> Path:
    """docs/ without its build outputs: the build writes the API stubs into its source folder."""
    shutil.copytree(DOCS, dest, ignore=shutil.ignore_patterns("_build", "generated"))
    return dest


@needs_sphinx
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """What CI runs (sphinx-build -W), on a copy so that nothing is written into docs/."""
    result = sphinx_build(copy_docs(tmp_path / "docs"), tmp_path / "html")
    assert result.returncode == 0, result.stderr[-4000:]
    html = tmp_path / "html"
    for page in DOCS.glob("*.md"):
        assert (html / f"{page.stem}.html").is_file(), page.name
    # The API reference is generated from the docstrings: the VAE's own page has its methods.
    api = (html / "api" / "generated" / "pyro_vae.html").read_text()
    assert "pyro_vae.VAE" in api and "fit" in api


@needs_sphinx
def test_a_new_page_joins_the_toctree_and_a_page_outside_it_fails_the_build(tmp_path):
    """Every page in docs/ is in a toctree: new top-level pages by the glob, others not silently."""
    source = copy_docs(tmp_path / "docs")
    # The API pages import the whole package; a stub keeps this check to the toctree.
    shutil.rmtree(source / "api")
    (source / "api").mkdir()
    (source / "api" / "index.rst").write_text("API reference\n=============\n\n.. toctree::\n\n   modules\n")
    (source / "api" / "modules.rst").write_text("Modules\n=======\n")
    (source / "a_new_page.md").write_text("# A new page\n\nAdded without editing the index.\n")
    result = sphinx_build(source, tmp_path / "html")
    assert result.returncode == 0, result.stderr[-4000:]
    assert 'href="a_new_page.html"' in (tmp_path / "html" / "index.html").read_text()

    (source / "results").mkdir()
    (source / "results" / "stray.md").write_text("# Stray\n")
    result = sphinx_build(source, tmp_path / "html2")
    assert result.returncode != 0
    assert "stray" in result.stderr and "toctree" in result.stderr
