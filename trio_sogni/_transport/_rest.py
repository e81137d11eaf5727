"""REST calls over one shared ``httpx.AsyncClient``, with the official error envelope mapped to
typed errors. Two bases: the REST endpoint and the "socket host" (the socket endpoint over HTTP)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import msgspec
from typing_extensions import override

from .._errors import APIStatusError, ConnectError, TransportError
from ..protocol import decode_json

__all__ = ["MAX_RESPONSE_SIZE", "BodyStream", "RestClient", "redact_url"]

logger = logging.getLogger("trio_sogni.rest")

HeaderFactory = Callable[[], Awaitable[dict[str, str]]]

MAX_RESPONSE_SIZE: Final = 64 * 1024 * 1024
"""The default limit on a REST response body (after content decoding): 64 MiB. A larger body
(declared by ``Content-Length`` or found while streaming it) fails the call with
`TransportError` after reading at most the limit, so a hostile server cannot make the client
allocate more."""


def _error_from_response(response: httpx.Response, content: bytes) -> APIStatusError:
    payload: Any = None
    try:
        payload = decode_json(content)
    except msgspec.DecodeError:
        payload = None
    message = ""
    error_code: int | str | None = None
    retry_after: float | None = None
    if isinstance(payload, dict):
        body: dict[str, Any] = payload  # pyright: ignore[reportUnknownVariableType]
        raw_message = body.get("message")
        if isinstance(raw_message, str):
            message = raw_message
        code = body.get("errorCode")
        if isinstance(code, int | str):
            error_code = code
        ra = body.get("retryAfter")
        if isinstance(ra, int | float):
            retry_after = float(ra)
    if retry_after is None:
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
    if not message:
        excerpt = content[:800].decode("utf-8", "replace")[:200] if payload is None else ""
        message = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
    return APIStatusError(
        message,
        status_code=response.status_code,
        error_code=error_code,
        payload=payload,
        retry_after=retry_after,
    )


def redact_url(url: str) -> str:
    """``url`` without its query and fragment (``scheme://host/path``): what errors and logs may
    show of a signed URL, whose query carries the signature."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _signed_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TransportError(f"the server gave an invalid URL: {redact_url(url)[:200]}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TransportError(f"the server gave an invalid URL: {redact_url(url)[:200]}")
    return parsed


def _signed_url_failure(method: str, shown: str, exc: httpx.HTTPError) -> TransportError:
    """The error for a failed signed-URL request: the URL without its query and the httpx
    error's type, never its text (which may hold the signature)."""
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(f"cannot connect to {shown}: {type(exc).__name__}")
    return TransportError(f"{method} {shown} failed: {type(exc).__name__}")


class BodyStream:
    """The body of a download (`RestClient.get_url`), chunk by chunk as the network delivers
    it (an async iterator of ``bytes``), with httpx's errors mapped to `TransportError` (the
    message shows the URL without its query). Valid only inside the ``get_url`` block."""

    __slots__ = ("_chunks", "_shown", "content_length")

    def __init__(self, response: httpx.Response, shown: str) -> None:
        declared = response.headers.get("content-length", "")
        self.content_length: int | None = (
            int(declared)
            if declared.isdigit() and not response.headers.get("content-encoding")
            else None
        )
        """The declared ``Content-Length`` (``None`` if absent or content-encoded)."""
        self._chunks = response.aiter_bytes()
        self._shown = shown

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.HTTPError as exc:
            failure = _signed_url_failure("GET", self._shown, exc)
        # Raised outside the handler: httpx's error (whose text may hold the signed URL) is
        # neither the cause nor the context.
        raise failure


class RestClient:
    """JSON over HTTP with the client's auth headers. Cancellable; no retries (callers decide).

    Response bodies are streamed and refused past ``max_response_size`` bytes
    (:data:`MAX_RESPONSE_SIZE` by default)."""

    def __init__(
        self,
        rest_base: str,
        socket_base: str,
        headers: HeaderFactory,
        http: httpx.AsyncClient,
        reauthenticate: Callable[[], Awaitable[bool]] | None = None,
        *,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        if max_response_size < 1:
            raise ValueError("max_response_size must be positive")
        self._bases = {"rest": rest_base.rstrip("/"), "socket": socket_base.rstrip("/")}
        self._headers = headers
        self._http = http
        self._reauthenticate = reauthenticate
        self._max_response_size = max_response_size

    @override
    def __repr__(self) -> str:
        return f"<RestClient rest={self._bases['rest']!r}>"

    async def request(
        self,
        method: str,
        path: str,
        *,
        base: str = "rest",
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request and return the decoded JSON body. ``auth=False`` sends no
        credentials (login, nonce and refresh calls). A 401 to an authenticated request is
        retried once if the credentials could be renewed (a session refresh); never more.

        Raises:
            APIStatusError: a non-2xx status (``status_code``, ``error_code``, ``payload``).
            ConnectError / TransportError: the request could not be completed, or the response
                body is larger than ``max_response_size``.
        """
        response, content = await self._send(method, path, base, json, headers, auth)
        if (
            response.status_code == 401
            and auth
            and self._reauthenticate is not None
            and await self._reauthenticate()
        ):
            response, content = await self._send(method, path, base, json, headers, auth)
        if not response.is_success:
            raise _error_from_response(response, content)
        try:
            return decode_json(content)
        except msgspec.DecodeError as exc:
            raise TransportError(
                f"failed to parse response body (HTTP {response.status_code})"
            ) from exc

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        base: str = "rest",
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[httpx.Response]:
        """Open a streaming request (e.g. server-sent events) and yield the response once its
        status is 2xx; the body is read by the caller (``response.aiter_bytes()``). The response
        is closed when the block exits. A 401 is retried once after renewing credentials.

        Raises:
            APIStatusError: a non-2xx status (the error body is read first).
            ConnectError / TransportError: the request could not be completed.
        """
        url = self._bases[base] + path
        timeout = httpx.Timeout(30.0, read=read_timeout)
        for attempt in (1, 2):
            all_headers = dict(await self._headers())
            if headers:
                all_headers.update(headers)
            request = self._http.build_request(method, url, headers=all_headers, timeout=timeout)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.ConnectError as exc:
                raise ConnectError(f"cannot connect to {url}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise TransportError(f"{method} {path} failed: {type(exc).__name__}") from exc
            try:
                if response.is_success:
                    yield response
                    return
                content = await self._read_body(response, method, path)
                if (
                    attempt == 1
                    and response.status_code == 401
                    and self._reauthenticate is not None
                    and await self._reauthenticate()
                ):
                    continue
                raise _error_from_response(response, content)
            finally:
                await response.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        base: str,
        json: Any,
        headers: Mapping[str, str] | None,
        auth: bool,
    ) -> tuple[httpx.Response, bytes]:
        url = self._bases[base] + path
        all_headers = dict(await self._headers()) if auth else {}
        if headers:
            all_headers.update(headers)
        content = None
        if json is not None:
            content = msgspec.json.encode(json)
            all_headers["content-type"] = "application/json"
        request = self._http.build_request(method, url, content=content, headers=all_headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path} failed: {type(exc).__name__}") from exc
        try:
            return response, await self._read_body(response, method, path)
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response, method: str, path: str) -> bytes:
        """The (decoded) body of ``response``, read chunk by chunk and refused, before reading
        on, once it exceeds the size limit."""
        limit = self._max_response_size
        too_large = (
            f"{method} {path}: the response body is larger than {limit} bytes (max_response_size)"
        )
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and int(declared) > limit
            and not response.headers.get("content-encoding")
        ):
            raise TransportError(too_large)
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                if len(body) + len(chunk) > limit:
                    raise TransportError(too_large)
                body += chunk
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path} failed: {type(exc).__name__}") from exc
        return bytes(body)

    async def put_url(
        self,
        url: str,
        content: bytes | AsyncIterable[bytes],
        *,
        content_type: str,
        content_length: int,
    ) -> None:
        """PUT ``content`` to a signed ``url`` (an upload URL the API handed out). No credentials
        are sent (the URL carries its own signature) and redirects are not followed. An
        iterable body is streamed as it is produced, with the given ``Content-Length`` (signed
        storage URLs refuse chunked uploads). Cancellable at every chunk.

        Raises:
            APIStatusError: a non-2xx answer; the message names the status and the URL without
                its query (never the signature).
            ConnectError / TransportError: the upload could not be completed.
        """
        target = _signed_url(url)
        shown = redact_url(url)
        headers = {"content-type": content_type, "content-length": str(content_length)}
        request = self._http.build_request("PUT", target, content=content, headers=headers)
        response: httpx.Response | None = None
        failure: TransportError | None = None
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            failure = _signed_url_failure("PUT", shown, exc)
        if response is None:
            # Raised outside the handler, so httpx's error is not even the context.
            assert failure is not None
            raise failure
        try:
            body = await self._read_body(response, "PUT", shown)
        finally:
            await response.aclose()
        if not response.is_success:
            error = _error_from_response(response, body)
            raise APIStatusError(
                f"PUT {shown}: HTTP {response.status_code}"
                + (f" ({error.args[0]})" if error.payload is not None else ""),
                status_code=response.status_code,
                error_code=error.error_code,
                payload=error.payload,
                retry_after=error.retry_after,
            )

    @asynccontextmanager
    async def get_url(self, url: str) -> AsyncGenerator[BodyStream]:
        """GET a signed ``url`` (a download URL the API handed out) and yield its body as a
        `BodyStream` once the status is 2xx, unread; the response is closed when the block
        exits. No credentials are sent and redirects are not followed.

        Raises:
            APIStatusError: a non-2xx answer (its body read up to the size limit); the message
                names the status and the URL without its query (never the signature).
            ConnectError / TransportError: the request could not be completed.
        """
        target = _signed_url(url)
        shown = redact_url(url)
        request = self._http.build_request("GET", target)
        response: httpx.Response | None = None
        failure: TransportError | None = None
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            failure = _signed_url_failure("GET", shown, exc)
        if response is None:
            # Raised outside the handler, so httpx's error is not even the context.
            assert failure is not None
            raise failure
        try:
            if not response.is_success:
                body = await self._read_body(response, "GET", shown)
                error = _error_from_response(response, body)
                raise APIStatusError(
                    f"GET {shown}: HTTP {response.status_code}"
                    + (f" ({error.args[0]})" if error.payload is not None else ""),
                    status_code=response.status_code,
                    error_code=error.error_code,
                    payload=error.payload,
                    retry_after=error.retry_after,
                )
            yield BodyStream(response, shown)
        finally:
            await response.aclose()
