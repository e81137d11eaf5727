"""A raw protocol socket to localnet over an in-memory connection, for hostile-client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from trio_sogni.localnet import LocalNetwork
from trio_sogni.protocol import (
    Authenticated,
    ClientMessage,
    ServerMessage,
    SwarmLLMModels,
    UnknownMessage,
    decode_server_message,
    encode_client_message,
)


@asynccontextmanager
async def connect(
    net: LocalNetwork, key: str, app_id: str, *, queue: int = 4096
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Authenticated]]:
    """A socket authenticated with API key ``key`` as ``app_id``; yields it with its
    ``authenticated`` frame (the ``swarmLLMModels`` after it is read too)."""
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            net.connect_in_memory(),  # type: ignore[arg-type]
            "localnet",
            f"/?appId={app_id}",
            extra_headers=[(b"api-key", key.encode())],
            message_queue_size=queue,
        )
        try:
            authenticated = await recv(ws)
            assert isinstance(authenticated, Authenticated)
            assert isinstance(await recv(ws), SwarmLLMModels)
            yield ws, authenticated
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def recv(ws: trio_websocket.WebSocketConnection) -> ServerMessage:
    """The next server message (an unknown type fails the test)."""
    message = decode_server_message(await ws.get_message())
    assert not isinstance(message, UnknownMessage)
    return message


async def send(ws: trio_websocket.WebSocketConnection, message: ClientMessage) -> None:
    """Send one client message."""
    await ws.send_message(encode_client_message(message))
