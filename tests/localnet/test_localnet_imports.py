"""localnet is an independent implementation: it may use trio, h11, wsproto, msgspec and
``trio_sogni.protocol`` only (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys


def test_localnet_imports_nothing_of_the_client() -> None:
    code = "import sys, trio_sogni.localnet; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    modules = set(out.stdout.split())
    ours = {m for m in modules if m.startswith("trio_sogni.")}
    assert all(
        m.startswith(("trio_sogni.localnet", "trio_sogni.protocol", "trio_sogni._groups"))
        for m in ours
    ), ours
    assert not {m.split(".")[0] for m in modules} & {"trio_websocket", "httpx", "websockets"}
