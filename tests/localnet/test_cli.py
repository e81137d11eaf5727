"""``localnet serve`` from the command line: one JSON line on stdout, then it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import httpx
import trio
import trio_websocket

from trio_sogni.localnet import DEFAULT_MODEL, firehose_text
from trio_sogni.protocol import (
    ChatCompletionChunk,
    ChatMessage,
    LLMJobRequest,
    LLMJobResult,
    SwarmLLMModels,
    decode_server_message,
    encode_client_message,
)

CODE = """
import argparse, trio
from trio_sogni.localnet._cli import add_serve_arguments, serve_from_args
parser = argparse.ArgumentParser()
add_serve_arguments(parser)
trio.run(serve_from_args, parser.parse_args())
"""


async def _start(nursery: trio.Nursery, options: list[str]) -> tuple[trio.Process, dict[str, str]]:
    """Start the CLI; return the process and its one JSON line (checked to be the only output)."""
    args = [sys.executable, "-c", CODE, *options]
    process: trio.Process = await nursery.start(
        partial(trio.run_process, args, stdout=subprocess.PIPE, check=False)
    )
    assert process.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        chunk = await process.stdout.receive_some()
        assert chunk, "the CLI exited before printing its line"
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    assert rest == b""
    return process, json.loads(line)


async def test_cli_prints_one_json_line_and_serves() -> None:
    options = ["--api-key", "cli-key", "--model", "m-a", "--model", "m-b"]
    options += ["--workers", "2", "--tokens-per-second", "100"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await _start(nursery, options)
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
                assert decode_server_message(await ws.get_message()).message_type == "authenticated"
                models = decode_server_message(await ws.get_message())
                assert isinstance(models, SwarmLLMModels)
                assert {k: v.workers for k, v in models.models.items()} == {"m-a": 2, "m-b": 2}
            process.terminate()
    assert process.returncode != 0


async def test_cli_firehose_streams_unpaced_chunks_beyond_the_default_limit() -> None:
    options = ["--api-key", "k", "--firehose", "--capacity", "4", "--max-output-tokens", "100000"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await _start(nursery, options)
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
