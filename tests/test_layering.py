"""The import rules of house style §8.2, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import importgraph
import pytest

import trio_sogni


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_protocol_imports_only_msgspec_and_the_stdlib() -> None:
    baseline = loaded_after("import msgspec")
    added = loaded_after("import trio_sogni.protocol") - baseline
    third_party = {m.split(".")[0] for m in added} - set(sys.stdlib_module_names)
    assert third_party == {"trio_sogni"}, third_party
    ours = {m for m in added if m.startswith("trio_sogni.")}
    assert all(m.startswith("trio_sogni.protocol") for m in ours), ours


def test_toolschema_imports_only_the_stdlib() -> None:
    # the client's JSON Schema checker (media tool arguments) is a leaf: no trio_sogni module,
    # no third-party package, and in particular not localnet's own checker
    path = Path(trio_sogni.__file__).parent / "_toolschema.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in _toolschema"
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_media_tools_load_no_localnet() -> None:
    modules = loaded_after("import trio_sogni._tools, trio_sogni._mediatools")
    assert not {m for m in modules if m.startswith("trio_sogni.localnet")}


def test_localnet_is_independent_of_the_client() -> None:
    modules = loaded_after("import trio_sogni.localnet")
    forbidden = {
        "trio_websocket",
        "httpx",
        "trio_sogni._client",
        "trio_sogni._chat",
        "trio_sogni._stream",
        "trio_sogni._transport",
        "trio_sogni._request",
    }
    assert not (modules & forbidden), modules & forbidden


def test_transport_knows_no_chat_semantics() -> None:
    modules = loaded_after("import trio_sogni._transport")
    assert not {"trio_sogni._chat", "trio_sogni._stream", "trio_sogni._tools"} & modules


@pytest.mark.parametrize("name", sorted(trio_sogni.__all__))
def test_public_names_are_exported(name: str) -> None:
    assert hasattr(trio_sogni, name)


def test_all_is_sorted() -> None:
    names = [n for n in trio_sogni.__all__ if n != "__version__"]
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))


def test_eth_account_is_imported_only_when_signing() -> None:
    """eth-account takes ~0.4 s to import and raises the recursion limit; API-key users skip it."""
    code = (
        "import sys, trio_sogni\n"
        "trio_sogni.open_sogni_client, trio_sogni.ChatStream, trio_sogni.SogniClient\n"
        "import trio_sogni._client, trio_sogni._chat, trio_sogni._auth, trio_sogni._eip712\n"
        "assert 'eth_account' not in sys.modules, 'eth_account was imported'\n"
        "assert sys.getrecursionlimit() == 1000\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


PACKAGE_ROOT = Path(trio_sogni.__file__).parent
CLIENT_USERS = ("fanout", "_cli", "bench")
"""Sub-packages built on the client that may use only its public names."""
ALLOWED_PRIVATE = ("trio_sogni._cli", "trio_sogni.fanout", "trio_sogni.bench", "trio_sogni._groups")
"""Private ``trio_sogni._x`` modules they may import anyway: themselves, and the stdlib-only
exception-group helper."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (the text of ``module``),
    at any depth (under ``if TYPE_CHECKING:`` and inside functions too). ``from X import y``
    yields ``X`` and, when ``y`` is private (``_y``, possibly a module), ``X._y``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield node.lineno, f"{target}.{alias.name}"


def private_client_imports(source: str, module: str, *, is_package: bool) -> list[str]:
    """The imports of private client modules (``trio_sogni._x`` outside `ALLOWED_PRIVATE`)."""
    found: list[str] = []
    for line, name in imported_modules(source, module, is_package=is_package):
        parts = name.split(".")
        if len(parts) < 2 or parts[0] != "trio_sogni" or not parts[1].startswith("_"):
            continue
        if name == "trio_sogni.__version__":
            continue
        if not any(name == a or name.startswith(a + ".") for a in ALLOWED_PRIVATE):
            found.append(f"{module}:{line}: {name}")
    return found


CLIENT_USER_MODULES = sorted(
    path for package in CLIENT_USERS for path in (PACKAGE_ROOT / package).rglob("*.py")
)


def test_the_client_users_are_found() -> None:
    names = {module_name(p) for p in CLIENT_USER_MODULES}
    assert {
        "trio_sogni.fanout._runner",
        "trio_sogni._cli",
        "trio_sogni._cli._batch",
        "trio_sogni.bench._run",
    } <= names


@pytest.mark.parametrize("path", CLIENT_USER_MODULES, ids=module_name)
def test_fanout_and_the_cli_use_only_public_client_names(path: Path) -> None:
    found = private_client_imports(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )
    assert not found, "import these from `trio_sogni` (public names) instead: " + ", ".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .._errors import SogniError", ["trio_sogni.fanout._x:1: trio_sogni._errors"]),
        ("from .. import _chat", ["trio_sogni.fanout._x:1: trio_sogni._chat"]),
        ("import trio_sogni._stream", ["trio_sogni.fanout._x:1: trio_sogni._stream"]),
        (
            "if TYPE_CHECKING:\n    from trio_sogni._client import SogniClient",
            ["trio_sogni.fanout._x:2: trio_sogni._client"],
        ),
        ("from .. import SogniClient, SogniError", []),
        ("from ._types import FanoutItem", []),
        ("from .._groups import unwrap_group", []),
        ("from ..localnet import open_local_network", []),
        ("from trio_sogni._cli._connect import DEFAULT_MODEL", []),
        ("import trio_sogni.protocol", []),
    ],
)
def test_the_private_import_check_itself(source: str, expected: list[str]) -> None:
    assert private_client_imports(source, "trio_sogni.fanout._x", is_package=False) == expected


def test_no_import_cycles_anywhere_in_the_package() -> None:
    """No module of trio_sogni imports itself around a loop, counting ``TYPE_CHECKING`` imports
    (the session's starting tree had one: localnet's scheduler, workers and WebSocket driver)."""
    root = Path(trio_sogni.__file__).parent
    graph = importgraph.graph(root, "trio_sogni")
    assert graph["trio_sogni._client"], "the import scan found nothing"
    assert importgraph.cycles(graph) == []


MEDIA_MODULES = sorted((PACKAGE_ROOT / "_media").rglob("*.py"))
MEDIA_MAY_IMPORT = (
    "trio_sogni._media",
    "trio_sogni._transport",
    "trio_sogni._errors",
    "trio_sogni.protocol",
)
"""The client's media leaves are facade-level: the transport, the errors and the protocol."""


def media_layer_violations(source: str, module: str, *, is_package: bool) -> list[str]:
    found: list[str] = []
    for line, name in imported_modules(source, module, is_package=is_package):
        if name.split(".")[0] != "trio_sogni" or name == "trio_sogni":
            continue
        if not any(name == a or name.startswith(a + ".") for a in MEDIA_MAY_IMPORT):
            found.append(f"{module}:{line}: {name}")
    return found


def test_the_media_modules_are_found() -> None:
    names = {module_name(p) for p in MEDIA_MODULES}
    assert {
        "trio_sogni._media._models",
        "trio_sogni._media._request",
        "trio_sogni._media._inputs",
        "trio_sogni._media._results",
    } <= names


@pytest.mark.parametrize("path", MEDIA_MODULES, ids=module_name)
def test_media_uses_only_the_transport_errors_and_protocol(path: Path) -> None:
    found = media_layer_violations(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )
    assert not found, "trio_sogni._media may not import: " + ", ".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .._router import JobRouter", ["trio_sogni._media._x:1: trio_sogni._router"]),
        ("from .. import _driver", ["trio_sogni._media._x:1: trio_sogni._driver"]),
        ("import trio_sogni._chat", ["trio_sogni._media._x:1: trio_sogni._chat"]),
        ("from .._client import SogniClient", ["trio_sogni._media._x:1: trio_sogni._client"]),
        ("from .._transport import RestClient", []),
        ("from .._errors import ProjectError", []),
        ("from ..protocol import decode_json", []),
        ("from ._request import ProjectOptions", []),
    ],
)
def test_the_media_import_check_itself(source: str, expected: list[str]) -> None:
    assert media_layer_violations(source, "trio_sogni._media._x", is_package=False) == expected


def test_media_loads_no_router_driver_chat_or_client() -> None:
    modules = loaded_after(
        "import trio_sogni._media._models, trio_sogni._media._request, "
        "trio_sogni._media._inputs, trio_sogni._media._results"
    )
    forbidden = {
        "trio_sogni._router",
        "trio_sogni._driver",
        "trio_sogni._chat",
        "trio_sogni._client",
        "trio_sogni._stream",
        "trio_sogni._jobstate",
    }
    assert "trio_sogni._media._results" in modules
    assert not (modules & forbidden), modules & forbidden


BENCH_MAY_NOT_IMPORT = ("trio_sogni._cli", "trio_sogni.localnet")
"""`trio_sogni.bench` sits beside the CLI, above fan-out: it measures any network through a
client, so it never builds one (localnet) and never reaches into the command line."""


def bench_layer_violations(source: str, module: str, *, is_package: bool) -> list[str]:
    found: list[str] = []
    for line, name in imported_modules(source, module, is_package=is_package):
        if module.startswith("trio_sogni.bench"):
            forbidden = BENCH_MAY_NOT_IMPORT
        else:
            forbidden = ("trio_sogni.bench",)  # nothing below the bench level imports it
        if any(name == f or name.startswith(f + ".") for f in forbidden):
            found.append(f"{module}:{line}: {name}")
    return found


BENCH_CHECKED_MODULES = sorted(
    path
    for path in PACKAGE_ROOT.rglob("*.py")
    if path.relative_to(PACKAGE_ROOT).parts[0] not in ("_cli", "__main__.py")
)


def test_the_bench_modules_are_found() -> None:
    names = {module_name(p) for p in BENCH_CHECKED_MODULES}
    assert {
        "trio_sogni.bench._run",
        "trio_sogni.bench._sweep",
        "trio_sogni.fanout._runner",
    } <= names
    assert "trio_sogni._cli._bench" not in names


@pytest.mark.parametrize("path", BENCH_CHECKED_MODULES, ids=module_name)
def test_bench_sits_above_fanout_and_beside_the_cli(path: Path) -> None:
    found = bench_layer_violations(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )
    assert not found, "layering: " + ", ".join(found)


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        (
            "from ..localnet import open_local_network",
            "trio_sogni.bench._x",
            ["trio_sogni.localnet"],
        ),
        (
            "from .._cli import _bench",
            "trio_sogni.bench._x",
            ["trio_sogni._cli", "trio_sogni._cli._bench"],
        ),
        ("from ..fanout import open_fanout", "trio_sogni.bench._x", []),
        ("from .. import SogniClient", "trio_sogni.bench._x", []),
        ("from ..bench import run_point", "trio_sogni.fanout._x", ["trio_sogni.bench"]),
        ("import trio_sogni.bench._run", "trio_sogni._chat", ["trio_sogni.bench._run"]),
    ],
)
def test_the_bench_import_check_itself(source: str, module: str, expected: list[str]) -> None:
    assert bench_layer_violations(source, module, is_package=False) == [
        f"{module}:1: {name}" for name in expected
    ]


def test_the_client_and_fanout_load_no_bench() -> None:
    modules = loaded_after("import trio_sogni, trio_sogni.fanout, trio_sogni.localnet")
    assert not {m for m in modules if m.startswith("trio_sogni.bench")}
