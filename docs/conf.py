"""Sphinx configuration: the Markdown pages (MyST) plus an API reference from docstrings.

No intersphinx: the build must not touch the network. Every cross-reference must resolve
(``nitpicky``, and CI builds with ``-W``), except the narrow list of external packages below.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import re
import sys
import typing
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.typing import stringify_annotation

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
# Every documented member. (With ``"members": True`` here, Sphinx ignores a directive's own
# ``:members: a, b`` list; select with ``:exclude-members:`` or ``:no-members:`` instead.)
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"

# `name` in a docstring or an {eval-rst} block is a cross-reference to a Python object (not
# emphasis), and nitpicky mode turns every reference that does not resolve into a warning, which
# ``-W`` makes an error. Literal values and parameter names are written ``like this``.
default_role = "py:obj"
nitpicky = True

# Without intersphinx, names from other packages cannot resolve. Ignore exactly those: the
# project's runtime dependencies and the standard library modules our signatures use (add one
# here when a signature starts using it). A ``trio_sogni`` name never matches, so a broken
# reference to one of ours always fails the build. (``typing`` names and builtins resolve.)
_EXTERNAL_PACKAGES = (
    # pyproject.toml [project] dependencies
    "trio",
    "trio_websocket",
    "httpx",
    "msgspec",
    "typing_extensions",
    "eth_account",
    "h11",
    "wsproto",
    # the standard library
    "collections",
    "decimal",
    "os",
    "pathlib",
    "random",
    "ssl",
)
_EXTERNAL = "|".join(re.escape(name) for name in _EXTERNAL_PACKAGES)
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{_EXTERNAL})(?:\..+)?"),
    # Type variables have no page of their own (``T`` of a generic class or function).
    (r"py:(?:class|obj)", r"trio_sogni(?:\.\w+)*\._?T"),
    # msgspec ``Meta`` constraints shown in ``Annotated`` types (``ge=...``), not references.
    (r"py:class", r"(?:ge|le|gt|lt|min_length|max_length|pattern)=.*"),
]

# Public names are documented where users import them (``trio_sogni.ChatStream``, not
# ``trio_sogni._stream.ChatStream``), and signatures, base classes and type hints must name and
# link to them. Sphinx takes an object's name from ``__module__``, so this build rewrites it on
# every class and function a public package exports from one of its own private modules
# (``trio_sogni.ChatMessage``, defined in ``trio_sogni.protocol._openai``, belongs to
# ``trio_sogni.protocol``).
#
# Only the docs build does this; the runtime keeps the defining modules (trio rewrites them at
# import time instead). ``trio_sogni`` loads its names lazily, so a rewrite at import time would
# either load every module up front (``tests/test_layering.py`` forbids that) or depend on which
# names were touched first. And Python (``typing.get_type_hints``), msgspec (decoding a Struct)
# and dataclasses evaluate string annotations in ``sys.modules[cls.__module__]``: at runtime a
# rewrite would break them. So before the rewrite, this build evaluates what would otherwise be
# looked up in the defining module (class and ``__init__`` annotations, our type aliases, names
# imported under ``TYPE_CHECKING``), and then merges Sphinx's source analysis of each private
# module (attribute docstrings, member order, ``@final``, ``@overload``) into the public
# package's.
PUBLIC_PACKAGES = ("trio_sogni", "trio_sogni.protocol", "trio_sogni.fanout", "trio_sogni.localnet")


def _public_objects() -> list[tuple[Any, str]]:
    """Each class and function a public package exports from its own private modules."""
    found: list[tuple[Any, str]] = []
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


def _evaluate(annotation: object, module_name: str) -> object:
    """``annotation`` (a string, or a type holding forward references) evaluated in a module."""
    holder = type("Holder", (), {"__module__": module_name, "__annotations__": {"a": annotation}})
    return typing.get_type_hints(holder, include_extras=True)["a"]


def _evaluate_class_annotations(cls: type) -> None:
    # The class's own annotations (fields), and those of its own ``__init__``: Sphinx resolves
    # a class's signature with the class's annotations, so a plain class's ``__init__``
    # parameters would otherwise stay the strings written in the source (``"str | Path"``).
    own = inspect.get_annotations(cls)
    if own:
        hints = typing.get_type_hints(cls, include_extras=True)
        cls.__annotations__ = {attribute: hints[attribute] for attribute in own}
    init = cls.__dict__.get("__init__")
    if inspect.isfunction(init):
        init.__annotations__ = typing.get_type_hints(init, include_extras=True)


def _merge_source_analysis(package_name: str, defined_in: str, qualname: str) -> None:
    # ``ModuleAnalyzer.for_module`` caches one analyzer per module: extend the package's.
    target = ModuleAnalyzer.for_module(package_name)
    target.analyze()
    source = ModuleAnalyzer.for_module(defined_in)
    source.analyze()

    def ours(scope: str) -> bool:
        return scope == qualname or scope.startswith(f"{qualname}.")

    target.attr_docs.update({k: v for k, v in source.attr_docs.items() if ours(k[0])})
    target.tagorder.update({k: v for k, v in source.tagorder.items() if ours(k)})
    target.overloads.update({k: v for k, v in source.overloads.items() if ours(k)})
    target.finals.extend(name for name in source.finals if ours(name))
    # Annotations of attributes set in ``__init__`` (``self.errors: deque[str] = ...``) are
    # source text: qualify them, so that they link like every other type.
    for key, text in source.annotations.items():
        if ours(key[0]):
            evaluated = _evaluate(text, defined_in)
            target.annotations[key] = stringify_annotation(evaluated, "smart")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _see_what_the_type_checker_sees() -> None:
    """Make the names our modules import only under ``TYPE_CHECKING`` (``LocalAccount``,
    ``ssl``...) real in the docs build, and evaluate our type aliases (``Signer`` is the string
    ``"LocalAccount | str | bytes"``), so every public signature resolves to real types."""
    ours = {
        name: module
        for name, module in sys.modules.items()
        if name == "trio_sogni" or name.startswith("trio_sogni.")
    }
    for module in ours.values():
        tree = ast.parse(inspect.getsource(module))
        for node in tree.body:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for statement in node.body:
                    if isinstance(statement, ast.Import | ast.ImportFrom):
                        code = compile(ast.Module(body=[statement], type_ignores=[]), "", "exec")
                        # A module of an extra that is not installed stays unresolved (and
                        # nitpicky reports any reference that needed it).
                        with contextlib.suppress(ModuleNotFoundError):
                            exec(code, module.__dict__)
    for name, module in ours.items():
        for alias, annotation in inspect.get_annotations(module).items():
            if annotation not in ("TypeAlias", "typing.TypeAlias"):
                continue
            value = module.__dict__[alias]
            resolved = _evaluate(value, name)
            for other in ours.values():  # and wherever the alias was imported
                if other.__dict__.get(alias) is value:
                    setattr(other, alias, resolved)


def _document_public_names_under_their_package() -> None:
    public = [(obj, obj.__module__, package) for obj, package in _public_objects()]
    _see_what_the_type_checker_sees()
    for obj, _, _ in public:
        if isinstance(obj, type):
            _evaluate_class_annotations(obj)
    for obj, _, package_name in public:
        obj.__module__ = package_name
    for obj, defined_in, package_name in public:  # after the rewrite: it names types
        _merge_source_analysis(package_name, defined_in, obj.__qualname__)


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


def _public_bases_only(
    app: Sphinx, name: str, obj: object, options: object, bases: list[Any]
) -> None:
    # A private base class (``WorkerIdentity`` under the bundled workers) is an implementation
    # detail: show its bases instead, up to the public ones.
    index = 0
    while index < len(bases):
        base = bases[index]
        if isinstance(base, type) and _is_private(base):
            bases[index : index + 1] = [b for b in base.__bases__ if b not in bases]
        else:
            index += 1


def _is_private(cls: type) -> bool:
    parts = [*cls.__module__.split("."), *cls.__qualname__.split(".")]
    return parts[0] == "trio_sogni" and any(part.startswith("_") for part in parts)


def _link_types_after_literals(app: Sphinx, doctree: nodes.document) -> None:
    # In a type field, Sphinx stops linking at ``Literal[...]``: the rest of
    # ``Literal['auto'] | ~trio_sogni.protocol.ToolChoiceFunction`` stays text, tilde included.
    # Make those names references like the others (so nitpicky checks them too).
    for node in list(doctree.findall(nodes.emphasis)):
        match = re.fullmatch(r"~([\w.]+)", node.astext())
        if match is not None:
            target = match.group(1)
            shown = nodes.emphasis(text=target.rpartition(".")[2])
            node.replace_self(
                addnodes.pending_xref("", shown, refdomain="py", reftype="class", reftarget=target)
            )


def setup(app: Sphinx) -> None:
    app.connect("doctree-read", _link_types_after_literals)
    app.connect("autodoc-process-bases", _public_bases_only)
    app.connect("autodoc-process-docstring", _drop_docstrings_of_value_types)
    app.connect("autodoc-process-signature", _hide_constructor_of_handed_out_classes)
