"""Fixtures for localnet tests: a loopback network and a raw trio-websocket client helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import pytest
import trio
import trio_websocket

from trio_sogni.localnet import DEFAULT_MODEL, LocalNetwork, open_local_network
from trio_sogni.protocol import (
    Authenticated,
    ChatMessage,
    ClientMessage,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
    SwarmLLMModels,
    UnknownMessage,
    decode_server_message,
    encode_client_message,
)


def make_request(
    job_id: str, text: str = "Hello there", *, model: str = DEFAULT_MODEL, **fields: object
) -> LLMJobRequest:
    """An ``llmJobRequest`` with one user message."""
    return LLMJobRequest(
        job_id=job_id,
        model=model,
        messages=[ChatMessage(role="user", content=text)],
        **fields,  # type: ignore[arg-type]
    )


async def close_client_stream(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the TCP stream under a trio-websocket client.

    trio-websocket 0.12.2 never closes the client's socket when the *server* closes the
    WebSocket (its ``aclose`` returns early once a close reason is recorded), so the socket is
    only freed by the garbage collector, with a ResourceWarning (an error under
    ``filterwarnings = error``). Closing an already-closed stream is a no-op.
    """
    await trio.aclose_forcefully(ws._stream)  # pyright: ignore[reportPrivateUsage]


class Wire:
    """A raw WebSocket client speaking the Sogni envelope, for tests."""

    def __init__(self, net: LocalNetwork) -> None:
        self.net = net

    def url(self, app_id: str | None = "test-app", **query: str) -> str:
        params: dict[str, str] = {}
        if app_id is not None:
            params["appId"] = app_id
        params.update(
            {"clientName": "localnet-tests", "clientType": "artist", "forceWorkerId": "fast"}
        )
        params.update(query)
        return f"{self.net.socket_url}?{urlencode(params)}"

    @asynccontextmanager
    async def connect(
        self,
        app_id: str | None = "test-app",
        *,
        api_key: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
        handshake: bool = True,
        max_message_size: int = 1024 * 1024,
        **query: str,
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """Open a socket; with ``handshake`` also read ``authenticated`` (+ the model map)."""
        key = self.net.api_key if api_key is None else api_key
        extra = list(headers) if headers is not None else [(b"api-key", key.encode())]
        async with trio_websocket.open_websocket_url(
            self.url(app_id, **query),
            extra_headers=extra,
            max_message_size=max_message_size,
            message_queue_size=1024,
            disconnect_timeout=5,
        ) as ws:
            try:
                if handshake:
                    assert isinstance(await self.recv(ws), Authenticated)
                    if query.get("socketEventSubscriptions") is None:
                        assert isinstance(await self.recv(ws), SwarmLLMModels)
                yield ws
            finally:
                await close_client_stream(ws)

    @staticmethod
    def decode(raw: bytes | str) -> ServerMessage:
        assert isinstance(raw, bytes), "localnet sends binary frames"
        message = decode_server_message(raw)
        assert not isinstance(message, UnknownMessage), message
        return message

    @staticmethod
    async def recv(ws: trio_websocket.WebSocketConnection) -> ServerMessage:
        return Wire.decode(await ws.get_message())

    @staticmethod
    async def drain(ws: trio_websocket.WebSocketConnection) -> tuple[list[ServerMessage], int]:
        """Receive until the server closes the socket: the messages and the close code."""
        messages: list[ServerMessage] = []
        try:
            while True:
                messages.append(Wire.decode(await ws.get_message()))
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
        assert reason is not None
        return messages, reason.code

    @staticmethod
    async def send(ws: trio_websocket.WebSocketConnection, message: ClientMessage) -> None:
        await ws.send_message(encode_client_message(message).decode())

    async def collect(
        self, ws: trio_websocket.WebSocketConnection, job_id: str
    ) -> list[ServerMessage]:
        """Receive frames until ``job_id`` ends; returns that job's frames in order."""
        frames: list[ServerMessage] = []
        while True:
            message = await self.recv(ws)
            if getattr(message, "job_id", None) != job_id:
                continue
            frames.append(message)
            if isinstance(message, LLMJobResult | LLMJobError):
                return frames


@pytest.fixture
async def net() -> AsyncIterator[LocalNetwork]:
    async with open_local_network(rebind_grace=30.0, close_timeout=1.0) as network:
        yield network


@pytest.fixture
def wire(net: LocalNetwork) -> Wire:
    return Wire(net)


@pytest.fixture
def wire_for() -> Callable[[LocalNetwork], Wire]:
    """Make a :class:`Wire` for a network a test opens itself."""
    return Wire


@pytest.fixture(name="close_client_stream")
def close_client_stream_fixture() -> Callable[
    [trio_websocket.WebSocketConnection], Awaitable[None]
]:
    return close_client_stream


@pytest.fixture(name="make_request")
def make_request_fixture() -> Callable[..., LLMJobRequest]:
    """The :func:`make_request` builder (fixtures are how test modules share helpers here)."""
    return make_request
