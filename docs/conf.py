"""Sphinx configuration: the Markdown pages (MyST) plus an API reference from docstrings.

No intersphinx: the build must not touch the network.
"""

from __future__ import annotations

import trio_sogni

project = "trio_sogni"
copyright = "trio_sogni developers"  # noqa: A001
release = trio_sogni.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "benchmarks.json"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"
