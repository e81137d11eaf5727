"""RestClient's signed-URL calls (upload PUT, download GET): no credentials, no redirects, and
no signature in any error."""

from __future__ import annotations

import httpx
import pytest
from media.fakeapi import REST, SOCKET, credentials

from trio_sogni import APIStatusError, ConnectError, TransportError
from trio_sogni._transport import RestClient, redact_url

SIGNED = "http://127.0.0.1:8803/bucket/key.png?X-Signature=SECRETSIG&X-Expires=60"


def test_redact_url_drops_the_query_and_fragment() -> None:
    assert redact_url(SIGNED) == "http://127.0.0.1:8803/bucket/key.png"
    assert redact_url("http://127.0.0.1/x#frag") == "http://127.0.0.1/x"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd?X-Signature=SECRETSIG",
        "/relative/path?X-Signature=SECRETSIG",
        "http://?X-Signature=SECRETSIG",
    ],
)
async def test_only_absolute_http_urls_are_fetched(url: str) -> None:
    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient(REST, SOCKET, credentials, http)
        with pytest.raises(TransportError, match="invalid URL") as info:
            async with rest.get_url(url):
                pass
        assert "SECRETSIG" not in str(info.value)
        with pytest.raises(TransportError, match="invalid URL"):
            await rest.put_url(url, b"x", content_type="image/png", content_length=1)
    assert calls == []


async def test_redirects_are_not_followed_and_no_credentials_are_sent() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "http://127.0.0.1:9/elsewhere"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient(REST, SOCKET, credentials, http)
        with pytest.raises(APIStatusError, match="HTTP 302") as info:
            async with rest.get_url(SIGNED):
                pass
    assert len(seen) == 1
    assert "api-key" not in seen[0].headers
    assert "SECRETSIG" not in str(info.value)


async def test_a_connection_failure_shows_no_signature() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient(REST, SOCKET, credentials, http)
        with pytest.raises(ConnectError) as got:
            async with rest.get_url(SIGNED):
                pass
        with pytest.raises(ConnectError) as put:
            await rest.put_url(SIGNED, b"x", content_type="image/png", content_length=1)
    for info in (got, put):
        assert "127.0.0.1:8803/bucket/key.png" in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__context__ is None
        assert "SECRETSIG" not in str(info.value)
