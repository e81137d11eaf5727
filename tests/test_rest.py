"""The REST client's error mapping, through httpx.MockTransport (no sockets)."""

from __future__ import annotations

import httpx
import pytest

from trio_sogni import APIStatusError, ConnectError, TransportError
from trio_sogni._transport import RestClient


async def headers() -> dict[str, str]:
    return {"api-key": "secret-key"}


def client(handler: httpx.MockTransport) -> RestClient:
    return RestClient(
        "http://rest.test", "http://socket.test", headers, httpx.AsyncClient(transport=handler)
    )


async def test_success_decodes_json_and_sends_auth_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "data": {"ok": True}})

    rest = client(httpx.MockTransport(handler))
    body = await rest.request("POST", "/v1/x", json={"a": 1}, headers={"X-App-Source": "t"})
    assert body == {"status": "success", "data": {"ok": True}}
    assert seen[0].headers["api-key"] == "secret-key"
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["x-app-source"] == "t"
    assert seen[0].url == "http://rest.test/v1/x"
    await rest.request("GET", "/api/v1/y", base="socket")
    assert seen[1].url == "http://socket.test/api/v1/y"
    assert "secret-key" not in repr(rest)


async def test_error_envelope_is_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"status": "error", "message": "slow down", "errorCode": 126, "retryAfter": 3},
        )

    with pytest.raises(APIStatusError) as info:
        await client(httpx.MockTransport(handler)).request("GET", "/v1/x")
    error = info.value
    assert (str(error), error.status_code, error.error_code, error.retry_after) == (
        "slow down",
        429,
        126,
        3.0,
    )


async def test_non_json_error_and_retry_after_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="<html>down</html>", headers={"Retry-After": "7"})

    with pytest.raises(APIStatusError) as info:
        await client(httpx.MockTransport(handler)).request("GET", "/v1/x")
    assert info.value.status_code == 503
    assert info.value.error_code == 503
    assert info.value.retry_after == 7.0
    assert "HTTP 503" in str(info.value)
    assert "<html>down" in str(info.value)


async def test_unparsable_success_body_and_transport_failures() -> None:
    def bad_body(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="not json")

    with pytest.raises(TransportError, match="parse"):
        await client(httpx.MockTransport(bad_body)).request("GET", "/v1/x")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ConnectError):
        await client(httpx.MockTransport(refuse)).request("GET", "/v1/x")

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    with pytest.raises(TransportError) as info:
        await client(httpx.MockTransport(broken)).request("GET", "/v1/x")
    assert isinstance(info.value.__cause__, httpx.ReadError)


async def test_a_401_is_retried_once_after_reauthenticating() -> None:
    calls: list[str] = []
    renewals: list[bool] = []
    token = ["old"]

    async def session_headers() -> dict[str, str]:
        return {"Authorization": token[0]}

    async def reauthenticate() -> bool:
        renewals.append(True)
        token[0] = "new"
        return True

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("authorization", "-"))
        if calls[-1] == "new" and request.url.path == "/ok":
            return httpx.Response(200, json={"status": "success", "data": {}})
        return httpx.Response(401, json={"status": "error", "message": "expired", "errorCode": 4})

    rest = RestClient(
        "http://rest.test",
        "http://socket.test",
        session_headers,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        reauthenticate,
    )
    assert await rest.request("GET", "/ok") == {"status": "success", "data": {}}
    assert calls == ["old", "new"]
    calls.clear()
    with pytest.raises(APIStatusError) as info:  # still 401 after renewing: no loop
        await rest.request("GET", "/never")
    assert info.value.status_code == 401
    assert len(calls) == 2
    assert len(renewals) == 2
    with pytest.raises(APIStatusError):  # unauthenticated calls are never retried
        await rest.request("GET", "/never", auth=False)
    assert len(renewals) == 2


async def test_absurdly_nested_bodies_are_refused_not_fatal() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000

    def deep(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if request.url.path == "/ok" else 500, content=nested)

    with pytest.raises(TransportError, match="parse"):
        await client(httpx.MockTransport(deep)).request("GET", "/ok")
    with pytest.raises(APIStatusError) as info:
        await client(httpx.MockTransport(deep)).request("GET", "/bad")
    assert info.value.status_code == 500
