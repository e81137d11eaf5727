"""Hostile or failing servers, from the client's side: close code 4021 in the middle of a session
is an `AuthenticationError` for the running jobs and for later calls (as during the handshake),
and a REST response body is never read past ``max_response_size``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network

import trio_sogni
from trio_sogni import AuthenticationError, InvalidRequestError, TransportError
from trio_sogni._transport import RestClient
from trio_sogni.localnet import Stall


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("engine", ["fast", "trio-websocket"])
async def test_close_code_4021_during_a_session_is_an_authentication_error(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    def script(request: Any) -> Any:
        return [Stall()]

    async with (
        local_network(listen=False, script=script) as net,
        client_in_memory(net, engine) as sogni,
    ):
        stream = await sogni.chat.completions.create(model=MODEL, messages=user("x"), stream=True)
        with trio.fail_after(5):
            await net.wait_until(lambda: net.statistics().running_jobs == 1)
        await net.close_all_connections(4021, "Authentication failed")
        with pytest.raises(AuthenticationError, match="4021"):
            await stream.wait()
        await stream.aclose()
        with pytest.raises(AuthenticationError, match="4021"):  # the waiters too, for good
            await sogni.chat.completions.create(model=MODEL, messages=user("again"))


class EndlessBody(httpx.AsyncByteStream):
    """A body that never ends, 1 MiB per chunk, counting what was pulled."""

    def __init__(self) -> None:
        self.chunks = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b" " * (1 << 20)
        while True:
            self.chunks += 1
            yield chunk

    async def aclose(self) -> None:
        pass


async def _no_headers() -> dict[str, str]:
    return {}


async def test_a_rest_response_is_never_read_past_the_limit() -> None:
    body = EndlessBody()
    declared: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared":
            declared.append(1)
            return httpx.Response(200, headers={"content-length": str(300 << 20)}, stream=body)
        return httpx.Response(200, stream=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient(
            "http://rest", "http://socket", _no_headers, http, max_response_size=4 << 20
        )
        with pytest.raises(TransportError, match="larger than 4194304 bytes"):
            await rest.request("GET", "/endless")
        assert body.chunks <= 5  # 4 MiB read, the fifth chunk refused: never the whole body
        body.chunks = 0
        with pytest.raises(TransportError, match="larger than"):
            await rest.request("GET", "/declared")
        assert declared == [1]
        assert body.chunks == 0  # refused on its Content-Length, nothing read


async def test_an_error_response_is_capped_too() -> None:
    body = EndlessBody()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, stream=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient("http://rest", "http://socket", _no_headers, http, max_response_size=1)
        with pytest.raises(TransportError, match="larger than 1 bytes"):
            await rest.request("GET", "/x")
        with pytest.raises(TransportError, match="larger than 1 bytes"):
            async with rest.stream("GET", "/x"):
                pass  # pragma: no cover - the error body is refused first
        assert body.chunks <= 2


async def test_max_response_size_must_be_positive() -> None:
    with pytest.raises(InvalidRequestError, match="max_response_size"):
        async with trio_sogni.open_sogni_client(api_key="k", max_response_size=0):
            pass  # pragma: no cover
