"""The import rules of house style §8.2, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

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
