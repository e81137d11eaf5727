"""Helpers shared by the end-to-end tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

import trio_sogni
from trio_sogni import SocketOptions
from trio_sogni.localnet import LocalNetwork, ScriptFunction, Text, ToolCall, open_local_network
from trio_sogni.protocol import LLMJobRequest

MODEL = "test-model"


@asynccontextmanager
async def local_network(**kwargs: Any) -> AsyncIterator[LocalNetwork]:
    kwargs.setdefault("models", [MODEL])
    kwargs.setdefault("rebind_grace", 1.0)
    async with open_local_network(**kwargs) as net:
        yield net


@asynccontextmanager
async def client_for(
    net: LocalNetwork, engine: str = "fast", **kwargs: Any
) -> AsyncIterator[trio_sogni.SogniClient]:
    options = kwargs.pop("socket_options", None) or SocketOptions(
        engine=engine,  # type: ignore[arg-type]
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.2,
    )
    async with trio_sogni.open_sogni_client(
        api_key=kwargs.pop("api_key", net.api_key),
        socket_endpoint=net.socket_url,
        rest_endpoint=net.rest_url,
        socket_options=options,
        **kwargs,
    ) as client:
        yield client


LOCALNET_CLI = """
import argparse, trio
from trio_sogni._cli._localnet import add_serve_arguments, serve_from_args
parser = argparse.ArgumentParser()
add_serve_arguments(parser)
trio.run(serve_from_args, parser.parse_args())
"""
"""``trio-sogni localnet serve`` as a ``python -c`` program (no console script needed)."""


async def start_localnet_cli(
    nursery: trio.Nursery, options: list[str]
) -> tuple[trio.Process, dict[str, Any]]:
    """Start ``localnet serve`` with ``options``; return the process and its one JSON line
    (checked to be the only output so far)."""
    args = [sys.executable, "-c", LOCALNET_CLI, *options]
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


def tool_then_text(tool: str, arguments: Mapping[str, Any], text: str) -> ScriptFunction:
    """A localnet script: call ``tool`` first (call id ``call_img``), answer ``text`` once the
    conversation holds a tool result."""

    def script(request: LLMJobRequest) -> list[Any]:
        if any(m.role == "tool" for m in request.messages):
            return [Text(text)]
        return [ToolCall(tool, arguments, id="call_img")]

    return script
