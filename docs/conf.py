"""Sphinx configuration: the Markdown pages (MyST) plus an API reference from docstrings.

No intersphinx: the build must not touch the network. Every cross-reference must resolve
(``nitpicky``, and CI builds with ``-W``), except the narrow list of external packages below.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing

import trio_sogni

if typing.TYPE_CHECKING:
    from sphinx.application import Sphinx

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

# `name` in a docstring or an {eval-rst} block is a cross-reference to a Python object (not
# emphasis), and nitpicky mode turns every reference that does not resolve into a warning, which
# ``-W`` makes an error. Literal values and parameter names are written ``like this``.
default_role = "py:obj"
nitpicky = True

# Without intersphinx, names from other packages cannot resolve. Ignore exactly those packages
# (and the standard library modules our signatures use); a ``trio_sogni`` name never matches here,
# so a broken reference to one of ours always fails the build.
_EXTERNAL_PACKAGES = (
    "trio",
    "httpx",
    "msgspec",
    "h11",
    "wsproto",
    "eth_account",
    "typing_extensions",
    "collections",
    "contextlib",
    "datetime",
    "decimal",
    "enum",
    "json",
    "os",
    "pathlib",
    "sqlite3",
    "types",
    "typing",
)
_EXTERNAL = "|".join(re.escape(name) for name in _EXTERNAL_PACKAGES)
nitpick_ignore_regex = [(r"py:.*", rf"(?:{_EXTERNAL})(?:\..+)?")]

# Public names are documented where users import them (``trio_sogni.ChatStream``, not
# ``trio_sogni._stream.ChatStream``), so signatures, base classes and type hints must name and
# link to the public name. Sphinx takes that name from ``__module__``, so rewrite it here, for
# the docs build only, on every class and function a public package exports from one of its own
# private modules. The runtime keeps the defining modules (trio rewrites them at import time
# instead): doing it in the package ``__init__`` would either import every lazily loaded module
# of ``trio_sogni`` up front, or make ``__module__`` depend on which names were touched first,
# and it would change reprs and pickles for users. Order matters for re-exports:
# ``trio_sogni.ChatMessage`` is defined in ``trio_sogni.protocol._openai`` and keeps its home
# under ``trio_sogni.protocol``.
PUBLIC_PACKAGES = ("trio_sogni", "trio_sogni.protocol", "trio_sogni.fanout", "trio_sogni.localnet")


def _public_objects() -> list[tuple[object, str]]:
    """Each class and function a public package exports from its own private modules."""
    found: list[tuple[object, str]] = []
    for package_name in PUBLIC_PACKAGES:
        package = importlib.import_module(package_name)
        for name in package.__all__:
            obj = getattr(package, name)
            defined_in = getattr(obj, "__module__", None)
            if (
                isinstance(defined_in, str)
                and defined_in.startswith(f"{package_name}._")
                and getattr(obj, "__qualname__", None) == name
            ):
                found.append((obj, package_name))
    return found


def _document_public_names_under_their_package() -> None:
    public = _public_objects()
    # Class annotations are strings (``from __future__ import annotations``) that Python and
    # msgspec evaluate in ``sys.modules[cls.__module__]``, which is about to become the public
    # package. Evaluate them first, in the defining module, so signatures and field types still
    # resolve after the rewrite.
    for obj, _ in public:
        own = inspect.get_annotations(obj) if isinstance(obj, type) else {}
        if own:
            try:
                hints = typing.get_type_hints(obj, include_extras=True)
            except NameError:  # a name imported only under TYPE_CHECKING: left as written
                continue
            obj.__annotations__ = {attribute: hints[attribute] for attribute in own}
    for obj, package_name in public:
        obj.__module__ = package_name  # type: ignore[attr-defined]


_document_public_names_under_their_package()


def _drop_docstrings_of_value_types(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    # A constant (``SUBSCRIPTION_ERROR_CODES``) or a type alias (``JSONObject = dict[str, Any]``)
    # has no docstring of its own, so autodoc shows the docstring of its type or origin
    # (``dict``). Drop that; the reference page describes the value instead.
    if what != "data":
        return
    words = "\n".join(lines).split()
    for source in (type(obj), typing.get_origin(obj)):
        doc = getattr(source, "__doc__", None)
        if isinstance(doc, str) and words == doc.split():
            lines.clear()
            return


def _hide_constructor_of_handed_out_classes(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> None:
    # ``.. autoclass:: trio_sogni.ChatStream()`` (an explicit empty signature) marks a class that
    # users receive but never construct: its ``__init__`` takes internal parts (the job driver,
    # the REST client...). Drop the parameter types autodoc recorded for that ``__init__``, or
    # ``autodoc_typehints = "description"`` would list them under a signature that has none.
    if what in {"class", "exception"} and signature == "()":
        app.env.current_document.autodoc_annotations.pop(name, None)


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _drop_docstrings_of_value_types)
    app.connect("autodoc-process-signature", _hide_constructor_of_handed_out_classes)
