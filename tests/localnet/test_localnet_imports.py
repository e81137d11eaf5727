"""localnet's import rules, checked in fresh interpreters and over the source's AST.

* localnet is an independent implementation: it may use trio, h11, wsproto, msgspec,
  ``trio_sogni.protocol`` and ``trio_sogni._groups`` only, never the client;
* its layer packages import downwards only (``_server`` imports no domain code at all);
* no two localnet modules import each other, directly or around a loop, counting
  ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import importgraph
import pytest

import trio_sogni.localnet


def test_localnet_imports_nothing_of_the_client() -> None:
    code = "import sys, trio_sogni.localnet; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    modules = set(out.stdout.split())
    ours = {m for m in modules if m.startswith("trio_sogni.")}
    allowed = ("trio_sogni.localnet", "trio_sogni.protocol", "trio_sogni._groups")
    assert all(m.startswith(allowed) for m in ours), ours
    assert not {m.split(".")[0] for m in modules} & {"trio_websocket", "httpx", "websockets"}


# -- the layers inside localnet ----------------------------------------------------------------

LOCALNET = Path(trio_sogni.localnet.__file__).parent
DOMAIN = ("_workers", "_jobs", "_accounts", "_hosted", "_runs", "_media", "_creative")

# Each layer package and the localnet packages it must never load. Lower layers first:
# _server < _workers, _accounts < _jobs < _media < _creative < _hosted, _runs < the composition
# root (_creative, the hosted creative tools' execution, runs tool calls as media projects for
# both hosted completions and runs).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "_server": DOMAIN,
    "_workers": ("_jobs", "_accounts", "_hosted", "_runs", "_media", "_creative"),
    "_accounts": ("_workers", "_jobs", "_hosted", "_runs", "_media", "_creative"),
    "_jobs": ("_hosted", "_runs", "_media", "_creative"),
    "_media": ("_hosted", "_runs", "_creative"),
    "_creative": ("_hosted", "_runs"),
    "_hosted": ("_runs",),
    "_runs": ("_hosted",),
}

# Imports one layer package and every module in it, with trio_sogni and trio_sogni.localnet
# registered as bare packages so that neither __init__ runs (they import everything).
_LOAD_LAYER = """
import importlib, importlib.util, pkgutil, sys, types
for name in ("trio_sogni", "trio_sogni.localnet"):
    spec = importlib.util.find_spec(name) if name == "trio_sogni" else None
    path = list(spec.submodule_search_locations) if spec else [sys.argv[2]]
    stub = types.ModuleType(name)
    stub.__path__ = path
    sys.modules[name] = stub
package = importlib.import_module("trio_sogni.localnet." + sys.argv[1])
for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
print("\\n".join(sorted(sys.modules)))
"""


def _loaded_by_layer(layer: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_LAYER, layer, str(LOCALNET)],
        check=True,
        capture_output=True,
        text=True,
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_loads_no_higher_layer(layer: str) -> None:
    modules = _loaded_by_layer(layer)
    assert f"trio_sogni.localnet.{layer}" in modules
    forbidden = {f"trio_sogni.localnet.{name}" for name in FORBIDDEN[layer]}
    loaded = {m for m in modules if m.startswith(tuple(forbidden))}
    assert not loaded, f"{layer} loads {sorted(loaded)}"


def test_media_layer_loads_no_http_client_and_no_media_library() -> None:
    """``_media`` talks to upstreams over h11 itself (no httpx), and Pillow and PyAV (the
    ``media`` extra) are imported on first use only, so localnet runs without them."""
    roots = {m.split(".")[0] for m in _loaded_by_layer("_media")}
    assert not roots & {"httpx", "httpcore", "trio_websocket", "PIL", "av"}, roots


def test_server_layer_loads_no_domain_code() -> None:
    """The server layer: stdlib, trio, h11, wsproto, msgspec and trio_sogni._groups only; not
    even the Sogni protocol messages."""
    ours = {m for m in _loaded_by_layer("_server") if m.startswith("trio_sogni.")}
    allowed = ("trio_sogni.localnet._server", "trio_sogni._groups")
    assert all(m.startswith(allowed) or m == "trio_sogni.localnet" for m in ours), ours


# -- no import cycles --------------------------------------------------------------------------


def test_no_import_cycles_inside_localnet() -> None:
    graph = importgraph.graph(LOCALNET, "trio_sogni.localnet")
    assert graph["trio_sogni.localnet._jobs._manager"], "the import scan found nothing"
    assert importgraph.cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert importgraph.cycles(graph) == [["a", "b", "c"], ["e"]]
