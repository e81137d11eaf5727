"""The REST side over loopback TCP (httpx as the client) and the router on its own."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import httpx
import trio

from trio_sogni.localnet import (
    HTTPRequest,
    HTTPResponse,
    LocalNetwork,
    open_local_network,
    serve_local_network,
)

TIMEOUT = 10


async def test_account_me_and_subscription_status(net: LocalNetwork) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=net.rest_url) as http:
            me = await http.get("/v1/account/me", headers={"api-key": net.api_key})
            status = await http.get("/v1/subscriptions/status", headers={"api-key": net.api_key})
            sync = await http.get(
                "/api/v1/artist/projects/sync",
                params={"appId": "a"},
                headers={"api-key": net.api_key},
            )
    assert me.status_code == 200
    assert me.headers["content-type"] == "application/json"
    assert me.json() == {
        "status": "success",
        "data": {
            "id": net.account.id,
            "username": net.account.username,
            "currentEmail": net.account.email,
            "walletAddress": net.account.wallet_address,
            "emailVerified": True,
        },
    }
    assert status.json()["data"]["subscription"]["active"] is False
    body = sync.json()
    assert (body["activeProjects"], body["unclaimedCompletedProjects"]) == ([], [])
    assert isinstance(body["serverTime"], int)
    assert [r.path for r in net.http_requests] == [
        "/v1/account/me",
        "/v1/subscriptions/status",
        "/api/v1/artist/projects/sync",
    ]
    assert net.http_requests[0].headers["api-key"] == "<redacted>"
    assert net.http_requests[2].query == {"appId": "a"}


async def test_errors_use_the_envelope(net: LocalNetwork) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=net.rest_url) as http:
            missing = await http.get("/v1/account/me")
            wrong = await http.get("/v1/account/me", headers={"api-key": "nope"})
            unknown = await http.get("/v1/no/such/route", headers={"api-key": net.api_key})
            method = await http.post("/v1/account/me", headers={"api-key": net.api_key})
    for response in (missing, wrong):
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error"
        assert isinstance(body["message"], str)
        assert isinstance(body["errorCode"], int)
    assert unknown.status_code == 404
    assert unknown.json()["status"] == "error"
    assert method.status_code == 405
    assert method.headers["allow"] == "GET"


async def test_keep_alive_reuses_one_connection(net: LocalNetwork) -> None:
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=net.rest_url) as http:
            for _ in range(5):
                response = await http.get("/v1/account/me", headers={"api-key": net.api_key})
                assert response.status_code == 200
            assert net.statistics().open_connections == 1
        await net.wait_until(lambda: net.statistics().open_connections == 0)


async def test_large_bodies_are_refused_and_routes_can_be_added() -> None:
    async def echo(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        return HTTPResponse(200, request.body, content_type="text/plain")

    async def streamed(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        async def body():  # type: ignore[no-untyped-def]
            for part in (b"data: 1\n\n", b"data: ", params["name"].encode(), b"\n\n"):
                await trio.lowlevel.checkpoint()
                yield part

        return HTTPResponse(200, content_type="text/event-stream", stream=body)

    with trio.fail_after(TIMEOUT):
        async with open_local_network(max_body_size=100) as net:
            net.rest.router.add("POST", "/echo", echo)
            net.rest.router.add("GET", "/stream/{name}", streamed)
            async with httpx.AsyncClient(base_url=net.rest_url) as http:
                ok = await http.post("/echo", content=b"x" * 100)
                big = await http.post("/echo", content=b"x" * 101)
                sse = await http.get("/stream/a%2Fb")
    assert ok.status_code == 200
    assert ok.content == b"x" * 100
    assert big.status_code == 413
    assert sse.status_code == 200
    assert sse.headers["transfer-encoding"] == "chunked"
    assert sse.text == "data: 1\n\ndata: a/b\n\n"


async def test_bad_http_gets_400(net: LocalNetwork) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", net.port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_serve_local_network_with_nursery_start() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            net: LocalNetwork = await nursery.start(partial(serve_local_network, api_key="k"))
            assert net.api_key == "k"
            async with httpx.AsyncClient(base_url=net.rest_url) as http:
                response = await http.get("/v1/account/me", headers={"api-key": "k"})
            assert response.status_code == 200
            nursery.cancel_scope.cancel()
