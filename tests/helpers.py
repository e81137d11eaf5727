"""Helpers shared by the end-to-end tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import httpx
import trio
import wsproto
import wsproto.events

import trio_sogni
from trio_sogni import SocketOptions
from trio_sogni.localnet import LocalNetwork, ScriptFunction, Text, ToolCall, open_local_network
from trio_sogni.protocol import Authenticated, LLMJobRequest, encode_server_message

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


IN_MEMORY_SOCKET = "ws://localnet.in-memory"
IN_MEMORY_REST = "http://localnet.in-memory"


class _InMemoryBody(httpx.AsyncByteStream):
    """A response body read from an in-memory connection as the caller asks for it."""

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self._stream = stream
        self._conn = conn

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(bytes(await self._stream.receive_some(65536)))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


class InMemoryHTTP(httpx.AsyncBaseTransport):
    """httpx over localnet's in-memory connections (one per request): REST with no socket, in
    virtual time under ``MockClock``."""

    def __init__(self, net: LocalNetwork) -> None:
        self._net = net

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = self._net.connect_in_memory()
        conn = h11.Connection(h11.CLIENT)
        body = await request.aread()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"connection"]
        headers.append((b"connection", b"close"))
        if body and b"content-length" not in {k.lower() for k, _ in headers}:
            headers.append((b"content-length", str(len(body)).encode()))
        out = conn.send(
            h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
        )
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
                continue
            if isinstance(event, h11.Response):
                return httpx.Response(
                    event.status_code,
                    headers=[(bytes(k), bytes(v)) for k, v in event.headers],
                    stream=_InMemoryBody(stream, conn),
                    request=request,
                )
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the server closed the connection", request=request)


@asynccontextmanager
async def client_in_memory(
    net: LocalNetwork, engine: str = "fast", **kwargs: Any
) -> AsyncIterator[trio_sogni.SogniClient]:
    """A real client on localnet's in-memory connections (socket and REST): no TCP anywhere,
    so it runs in virtual time under ``MockClock(autojump_threshold=0)``."""

    async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        return net.connect_in_memory()

    options = kwargs.pop("socket_options", None) or SocketOptions(
        engine=engine,  # type: ignore[arg-type]
    )
    if "api_key" not in kwargs and not {"tokens", "username", "wallet_private_key"} & set(kwargs):
        kwargs["api_key"] = net.api_key
    async with (
        httpx.AsyncClient(transport=InMemoryHTTP(net)) as http,
        trio_sogni.open_sogni_client(
            socket_endpoint=IN_MEMORY_SOCKET,
            rest_endpoint=IN_MEMORY_REST,
            socket_options=options,
            open_stream=open_stream,
            http_client=http,
            **kwargs,
        ) as client,
    ):
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


async def accept_and_authenticate(stream: trio.abc.Stream) -> None:
    """Play a bare socket server on ``stream``: accept the WebSocket upgrade and send an empty
    ``authenticated`` (no ``jobResume``, like the real network). Then it is the caller's peer."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(e, wsproto.events.Request) for e in conn.events()):
            break
    await stream.send_all(conn.send(wsproto.events.AcceptConnection()))
    message = wsproto.events.BytesMessage(data=encode_server_message(Authenticated()))
    await stream.send_all(conn.send(message))
