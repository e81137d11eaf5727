"""Docs that cannot drift: the API reference covers every public name (and only public names),
and the README's example is a file that runs.

The reference check reads the Markdown sources (no Sphinx build), so it runs with the suite;
``nox -s docs`` then proves every entry and cross-reference resolves.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_PACKAGES = (
    "trio_sogni",
    "trio_sogni.protocol",
    "trio_sogni.localnet",
    "trio_sogni.fanout",
    "trio_sogni.bench",
)
EXAMPLE = DOCS / "examples" / "readme_example.py"

# ``.. autoclass:: trio_sogni.ChatStream()``, ``.. autodata:: trio_sogni.__version__``,
# ``.. py:class:: trio_sogni.ChatMessage``, ``.. automodule:: trio_sogni.protocol``...
_ENTRY = re.compile(r"^\s*\.\. (?:auto\w+|py:\w+):: *(trio_sogni[\w.]*)", re.MULTILINE)


@functools.cache
def reference_entries() -> dict[str, Path]:
    """Every object a docs page declares, with the page that declares it."""
    entries: dict[str, Path] = {}
    for page in sorted(DOCS.glob("*.md")):
        for name in _ENTRY.findall(page.read_text(encoding="utf-8")):
            entries.setdefault(name, page)
    return entries


@functools.cache
def public_names() -> tuple[str, ...]:
    return tuple(
        f"{package}.{name}"
        for package in PUBLIC_PACKAGES
        for name in importlib.import_module(package).__all__
    )


def test_the_reference_pages_declare_entries() -> None:
    # The parser itself: a page with no entries would make the checks below vacuous.
    entries = reference_entries()
    assert entries["trio_sogni.open_sogni_client"].name == "api.md"
    assert entries["trio_sogni.localnet.open_local_network"].name == "api-localnet.md"
    assert entries["trio_sogni.protocol.ChatCompletionChunk"].name == "api-protocol.md"
    assert entries["trio_sogni.fanout.open_fanout"].name == "api-fanout.md"
    assert entries["trio_sogni.bench.run_point"].name == "api-bench.md"


@pytest.mark.parametrize("name", public_names())
def test_public_name_is_in_the_api_reference(name: str) -> None:
    assert name in reference_entries(), (
        f"{name} is public (in __all__) but no docs/api*.md page has an entry for it: add "
        f"`.. autoclass:: {name}` (or autofunction/autodata/autoexception) to the reference"
    )


def test_the_reference_documents_public_names_only() -> None:
    # An entry under a private module (``trio_sogni._stream.ChatStream``) or for a name that is
    # no longer exported would document what users cannot import.
    public = {*public_names(), *PUBLIC_PACKAGES}
    stray = {name: page.name for name, page in reference_entries().items() if name not in public}
    assert not stray, f"reference entries that are not public names: {stray}"


def first_python_block(markdown: bytes) -> bytes:
    match = re.search(rb"^```python\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no ```python block"
    return match.group(1)


def test_readme_example_is_the_example_file() -> None:
    readme = first_python_block((ROOT / "README.md").read_bytes())
    assert readme == EXAMPLE.read_bytes(), (
        "the first ```python block of README.md and docs/examples/readme_example.py differ: "
        "change both"
    )


def test_readme_example_runs() -> None:
    # The example's open_local_network() uses the default: simulated test-double workers, which
    # reply "Simulated reply to: <last user message>" (no model, no llama.cpp), over loopback.
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    streamed, _, final = result.stdout.partition("\n")
    assert streamed == "Simulated reply to: Hello from Trio"
    assert "content='Simulated reply to: Hello from Trio'" in final
    assert "finish_reason='stop'" in final


def test_the_media_picture_in_the_docs_is_the_test_doubles_drawing() -> None:
    """docs/media.md shows a picture made by localnet's SimulatedMediaWorker (a test double):
    the committed file decodes, says what made it, and the example that makes it still draws
    one of the same size, for the same prompt."""
    import io

    import trio
    from PIL import Image

    picture = DOCS / "_static" / "simulated-fox.png"
    committed = Image.open(io.BytesIO(picture.read_bytes()))
    assert committed.format == "PNG"
    assert "simulated test double" in committed.info["Software"]
    assert "_static/simulated-fox.png" in (DOCS / "media.md").read_text()
    spec = importlib.util.spec_from_file_location(
        "media_picture", DOCS / "examples" / "media_picture.py"
    )
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    fresh = Image.open(io.BytesIO(trio.run(example.render)))
    assert fresh.size == committed.size == (example.SPEC.width, example.SPEC.height)
    assert fresh.info["Description"] == committed.info["Description"] == example.SPEC.prompt
