"""``localnet serve`` from the command line: one JSON line on stdout, then it serves."""

from __future__ import annotations

import httpx
import trio
import trio_websocket
from helpers import start_localnet_cli

from trio_sogni.localnet import DEFAULT_MODEL, firehose_text
from trio_sogni.protocol import (
    Authenticated,
    ChatCompletionChunk,
    ChatMessage,
    LLMJobRequest,
    LLMJobResult,
    SwarmLLMModels,
    decode_server_message,
    encode_client_message,
)


async def test_cli_prints_one_json_line_and_serves() -> None:
    options = ["--api-key", "cli-key", "--model", "m-a", "--model", "m-b"]
    options += ["--workers", "2", "--tokens-per-second", "100"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            assert set(info) == {"rest_url", "socket_url", "api_key"}
            assert info["api_key"] == "cli-key"
            assert info["rest_url"].startswith("http://127.0.0.1:")
            assert info["socket_url"] == info["rest_url"].replace("http://", "ws://") + "/"
            async with httpx.AsyncClient(base_url=info["rest_url"]) as http:
                me = await http.get("/v1/account/me", headers={"api-key": "cli-key"})
            assert me.status_code == 200
            url = info["socket_url"] + "?appId=cli"
            headers = [(b"api-key", b"cli-key")]
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                assert isinstance(decode_server_message(await ws.get_message()), Authenticated)
                models = decode_server_message(await ws.get_message())
                assert isinstance(models, SwarmLLMModels)
                assert {k: v.workers for k, v in models.models.items()} == {"m-a": 2, "m-b": 2}
            process.terminate()
    assert process.returncode != 0


async def test_cli_firehose_streams_unpaced_chunks_beyond_the_default_limit() -> None:
    options = ["--api-key", "k", "--firehose", "--capacity", "4", "--max-output-tokens", "100000"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            url = info["socket_url"] + "?appId=fh"
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[(b"api-key", b"k")], message_queue_size=100_000
            ) as ws:
                models = None
                while not isinstance(models, SwarmLLMModels):
                    models = decode_server_message(await ws.get_message())
                assert models.models[DEFAULT_MODEL].workers == 1
                request = LLMJobRequest(
                    job_id="fh-1",
                    model=DEFAULT_MODEL,
                    messages=[ChatMessage(role="user", content="go")],
                    max_tokens=50_000,
                )
                await ws.send_message(encode_client_message(request))
                parts: list[str] = []
                while True:
                    message = decode_server_message(await ws.get_message())
                    if isinstance(message, ChatCompletionChunk):
                        parts.append(message.content or "")
                    elif isinstance(message, LLMJobResult):
                        break
            assert "".join(parts) == firehose_text(50_000)
            assert len(parts) == 50_001
            assert message.usage is not None
            assert message.usage.completion_tokens == 50_000
            process.terminate()
