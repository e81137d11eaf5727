"""The official Python SDK (``sogni-client``, asyncio), unmodified, against localnet.

The SDK runs in a worker thread with its own asyncio loop; localnet runs in the test's Trio loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import trio
from sogni_client import SogniClient

from trio_sogni.localnet import DEFAULT_MODEL, default_reply_text, open_local_network


async def run_sdk(rest_url: str, socket_url: str, api_key: str) -> dict[str, Any]:
    client = await SogniClient.create(
        app_id="official-sdk-test",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        models = await client.chat.wait_for_models()
        messages = [{"role": "user", "content": "Hello from the official SDK"}]
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=messages, stream=True
        )
        pieces = [chunk["content"] async for chunk in stream]
        final = stream.final_result
        result = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "And without streaming"}],
            stream=False,
        )
        return {"models": models, "pieces": pieces, "final": final, "result": result}
    finally:
        await client.aclose()


async def test_official_python_sdk_chat() -> None:
    with trio.fail_after(60):
        async with open_local_network(rebind_grace=0) as net:
            out = await trio.to_thread.run_sync(
                asyncio.run, run_sdk(net.rest_url, net.socket_url, net.api_key)
            )
            await net.wait_until(lambda: net.connected_sockets == 0)
    assert out["models"][DEFAULT_MODEL]["workers"] == 1
    expected_stream = default_reply_text(
        [{"role": "user", "content": "Hello from the official SDK"}]
    )
    assert "".join(out["pieces"]) == expected_stream
    assert len(out["pieces"]) > 1
    final = out["final"]
    assert final["content"] == expected_stream
    assert final["finishReason"] == "stop"
    assert final["workerName"] == "localnet-worker-1"
    assert final["usage"]["completion_tokens"] == len(out["pieces"])
    result = out["result"]
    assert result["content"] == "Simulated reply to: And without streaming"
    assert result["finishReason"] == "stop"
    assert result["timeTaken"] >= 0
    assert isinstance(result["cost"]["costInToken"], str)
    # localnet saw nothing it had to reject, and the SDK's REST calls succeeded.
    assert not net.rejected_frames
    assert not net.errors
    assert [h.outcome for h in net.handshakes] == ["accepted"]
    assert net.handshakes[0].client_name == "Sogni/3.0.0 (sogni-client) 5.70.0"
    assert {r.path: r.status for r in net.http_requests}["/v1/account/me"] == 200
    assert [r.outcome for r in net.job_records] == ["completed", "completed"]
