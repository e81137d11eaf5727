"""The HTTP/1.1 driver: h11 over a Trio stream, keep-alive, and the hand-off to WebSocket.

:func:`serve_http` reads requests one after another on one connection. A WebSocket upgrade request
is handed to ``on_upgrade`` together with the bytes already read past it, and the HTTP loop ends
there; any other request goes to ``on_request`` and its :class:`HTTPResponse` is written with a
``Content-Length`` (or chunked, for a streamed body).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, cast
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec
import trio

__all__ = [
    "AbortConnection",
    "HTTPRequest",
    "HTTPResponse",
    "error_response",
    "is_websocket_upgrade",
    "json_response",
    "serve_http",
]

logger = logging.getLogger("trio_sogni.localnet")

RECEIVE_SIZE: Final = 65_536
MAX_HEADER_SIZE: Final = 64 * 1024


@dataclass(frozen=True)
class HTTPRequest:
    """One parsed request. Header names are lower-case; repeated headers are joined with ``", "``.

    ``path`` is the raw (still percent-encoded) path; ``query`` keeps the last value of each key.
    """

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    raw_headers: Sequence[tuple[bytes, bytes]] = field(default=(), repr=False)

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> HTTPRequest:
        """A request from plain parts (e.g. to call :meth:`LocalNetwork.handle_rest` from an
        ``httpx.MockTransport`` handler). ``target`` is the path plus optional query string."""
        raw = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        parts = urlsplit(target)
        return cls(
            method=method.upper(),
            target=target,
            path=parts.path or "/",
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers_to_map(raw),
            body=body,
            raw_headers=raw,
        )


@dataclass(frozen=True)
class HTTPResponse:
    """A response. With ``stream`` set the body is that async iterator's chunks, sent with
    chunked transfer encoding, and ``body`` is ignored."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()
    stream: Callable[[], AsyncIterator[bytes]] | None = None


class AbortConnection(Exception):
    """Raised by a streamed body (``HTTPResponse.stream``) to cut the connection at once,
    leaving the body unfinished, as a network fault would (used for fault injection)."""


_json: Final = msgspec.json.Encoder()


def json_response(status: int, payload: object) -> HTTPResponse:
    """A JSON response (``payload`` is any msgspec-encodable value)."""
    return HTTPResponse(status, _json.encode(payload))


def error_response(
    status: int,
    message: str,
    *,
    error_code: int | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> HTTPResponse:
    """The Sogni REST error envelope ``{status: "error", message, errorCode}``."""
    body = {"status": "error", "message": message, "errorCode": error_code or status}
    return HTTPResponse(status, _json.encode(body), headers=headers)


def headers_to_map(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case header names (latin-1), repeated headers joined with ``, ``."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def is_websocket_upgrade(request: HTTPRequest) -> bool:
    """Whether ``request`` asks for a WebSocket upgrade."""
    connection = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    return (
        request.method == "GET"
        and request.headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in connection
    )


def _make_request(event: h11.Request, body: bytes) -> HTTPRequest:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    raw = list(event.headers)
    return HTTPRequest(
        method=event.method.decode("ascii"),
        target=target,
        path=parts.path or "/",
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers_to_map(raw),
        body=body,
        raw_headers=raw,
    )


class _BodyTooLarge(Exception):
    pass


async def _next_event(
    conn: h11.Connection, stream: trio.abc.Stream
) -> h11.Event | type[h11.PAUSED]:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            conn.receive_data(bytes(data))
            continue
        return cast("h11.Event | type[h11.PAUSED]", event)


async def _send_response(
    conn: h11.Connection, stream: trio.abc.Stream, response: HTTPResponse
) -> None:
    headers: list[tuple[str, str]] = [("content-type", response.content_type)]
    if response.stream is None:
        headers.append(("content-length", str(len(response.body))))
    headers.extend(response.headers)
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    await stream.send_all(
        conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    )
    if response.stream is None:
        if response.body:
            await stream.send_all(conn.send(h11.Data(data=response.body)))
    else:
        chunks = response.stream()
        try:
            async for chunk in chunks:
                if chunk:
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()  # run its cleanup now, not when it is collected
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def serve_http(
    stream: trio.abc.Stream,
    *,
    on_request: Callable[[HTTPRequest], Awaitable[HTTPResponse]],
    on_upgrade: Callable[[HTTPRequest, bytes], Awaitable[HTTPResponse | None]],
    max_body_size: int,
) -> None:
    """Serve HTTP/1.1 on ``stream`` until the peer closes it, a response demands closing, or a
    WebSocket upgrade takes it over.

    ``on_upgrade`` either serves the WebSocket to its end and returns ``None``, or refuses the
    handshake by returning the HTTP response to send. Does not close ``stream``; never raises for
    a peer's protocol error (answers 400 when it still can) or a vanished peer.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_SIZE)
    try:
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):  # pragma: no cover - h11 guarantees Request
                return
            head = _make_request(event, b"")
            if is_websocket_upgrade(head):
                while (await _next_event(conn, stream)) is not h11.PAUSED:
                    pass
                trailing, _closed = conn.trailing_data
                refusal = await on_upgrade(head, bytes(trailing))
                if refusal is not None:
                    await _send_response(conn, stream, refusal)
                return
            try:
                body = await _read_body(conn, stream, max_body_size)
            except _BodyTooLarge:
                await _send_response(
                    conn,
                    stream,
                    error_response(
                        413, "Request body too large", headers=[("connection", "close")]
                    ),
                )
                return
            request = _make_request(event, body)
            try:
                response = await on_request(request)
            except Exception:
                logger.exception(
                    "localnet: REST handler failed for %s %s", request.method, request.path
                )
                response = error_response(500, "Internal server error")
            await _send_response(conn, stream, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            try:
                await _send_response(
                    conn, stream, error_response(exc.error_status_hint, f"Bad request: {exc}")
                )
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, AbortConnection):
        return


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise h11.RemoteProtocolError("incomplete request body", 400)
