"""The HTTP/1.1 driver: h11 over a Trio stream, keep-alive, and the hand-off to WebSocket.

:func:`serve_http` reads requests one after another on one connection. A WebSocket upgrade request
is handed to ``on_upgrade`` together with the bytes already read past it, and the HTTP loop ends
there; any other request goes to ``on_request`` and its :class:`HTTPResponse` is written with a
``Content-Length`` (or chunked, for a streamed body).

Every read and write is bounded (:class:`ServerLimits`): a connection waits at most
``idle_timeout`` for the first byte of a request, ``header_timeout`` from that byte to the end of
the request head, ``body_timeout`` for the whole body, and each write of at most
:data:`WRITE_PIECE` bytes may take ``write_timeout``. A peer that is too slow is cut (after a
best-effort ``408`` when a request was under way), so a stalled or malicious peer can never hold
a connection, a file descriptor or a task for longer than these bounds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, TypeAlias, cast
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec
import trio

__all__ = [
    "WRITE_PIECE",
    "AbortConnection",
    "HTTPRequest",
    "HTTPResponse",
    "HeadVerdict",
    "ServerLimits",
    "WriteTimeout",
    "error_response",
    "is_websocket_upgrade",
    "json_response",
    "raw_response",
    "send_all_bounded",
    "serve_http",
]

logger = logging.getLogger("trio_sogni.localnet")

RECEIVE_SIZE: Final = 65_536
MAX_HEADER_SIZE: Final = 64 * 1024
_json: Final = msgspec.json.Encoder()
WRITE_PIECE: Final = 65_536
"""Writes are cut into pieces of at most this many bytes, each bounded by ``write_timeout``: a
peer must take in 64 KiB every ``write_timeout`` seconds or be dropped."""


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """The bounds a server puts on each connection (all times in seconds, Trio's clock).

    ``idle_timeout``: the longest wait for the first byte of a request (on a new connection and
    between keep-alive requests); ``header_timeout``: from that byte to the end of the request
    head; ``body_timeout``: for the whole request body; ``write_timeout``: for each write of at
    most :data:`WRITE_PIECE` bytes (responses, WebSocket frames); ``max_body_size``: bytes of
    one request body; ``max_connections``: connections served at once (more are refused with
    ``503``, see :class:`~._connections.Connections`); ``message_timeout``: for each incoming
    WebSocket message, from its first byte to its last (see
    :class:`~._ws.WebSocketDriver`).
    """

    max_body_size: int = 16 * 1024 * 1024
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    write_timeout: float = 30.0
    max_connections: int = 512
    message_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "idle_timeout",
            "header_timeout",
            "body_timeout",
            "write_timeout",
            "message_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_body_size < 0:
            raise ValueError("max_body_size must not be negative")


class WriteTimeout(trio.BrokenResourceError):
    """A write took longer than ``write_timeout``: the peer stopped reading. The stream is
    unusable afterwards (part of the data may have been sent) and must be closed."""


async def send_all_bounded(stream: trio.abc.SendStream, data: bytes, seconds: float) -> None:
    """``stream.send_all(data)`` in pieces of at most :data:`WRITE_PIECE` bytes, each bounded by
    ``seconds``.

    Raises:
        WriteTimeout: a piece was not taken in time.
        trio.BrokenResourceError, trio.ClosedResourceError: as ``send_all``.
    """
    view = memoryview(data)
    for start in range(0, max(len(view), 1), WRITE_PIECE):
        with trio.move_on_after(seconds) as scope:
            await stream.send_all(view[start : start + WRITE_PIECE])
        if scope.cancelled_caught:
            raise WriteTimeout(f"the peer took no data for {seconds} s")


def raw_response(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete ``Connection: close`` response with the Sogni error envelope, as bytes (for
    answers sent outside h11's state machine: timeouts and refused connections)."""
    body = _json.encode({"status": "error", "message": message, "errorCode": status})
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += ["content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


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
    chunked transfer encoding, and ``body`` is ignored. ``stream()`` is called before the head
    is written, and the iterator's ``aclose()`` (when it has one) is awaited once the response
    ends, however it ends: also when the client was gone before the first byte."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Sequence[tuple[str, str]] = ()
    stream: Callable[[], AsyncIterator[bytes]] | None = None


HeadVerdict: TypeAlias = int | HTTPResponse | None
"""What an ``on_head`` hook of :func:`serve_http` says about a request whose head has arrived
and whose body has not been read: ``None``, read the body under ``max_body_size``; an ``int``,
read at most that many bytes (never more than ``max_body_size``), else answer ``413``; an
:class:`HTTPResponse`, answer it at once without reading the body (the connection then
closes)."""


class AbortConnection(Exception):
    """Raised by a streamed body (``HTTPResponse.stream``) to cut the connection at once,
    leaving the body unfinished, as a network fault would (used for fault injection)."""


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


class _ReadTimeout(Exception):
    """A read deadline passed: ``phase`` is ``"idle"``, ``"header"`` or ``"body"``."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class _Reader:
    """Feeds h11 from the stream under the current phase's deadline."""

    def __init__(self, conn: h11.Connection, stream: trio.abc.Stream, limits: ServerLimits):
        self.conn = conn
        self.stream = stream
        self.limits = limits
        self.phase = "idle"
        self.deadline = trio.current_time() + limits.idle_timeout

    def expect_request(self) -> None:
        """Wait for the next request: the idle deadline starts now."""
        self.phase = "idle"
        self.deadline = trio.current_time() + self.limits.idle_timeout

    def expect_body(self) -> None:
        """The head is in: the body deadline starts now."""
        self.phase = "body"
        self.deadline = trio.current_time() + self.limits.body_timeout

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return cast("h11.Event | type[h11.PAUSED]", event)
            data = b""
            with trio.move_on_at(self.deadline) as scope:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if scope.cancelled_caught:
                raise _ReadTimeout(self.phase)
            if data and self.phase == "idle":  # the first byte of a request
                self.phase = "header"
                self.deadline = trio.current_time() + self.limits.header_timeout
            self.conn.receive_data(bytes(data))


async def _send_response(
    conn: h11.Connection, stream: trio.abc.Stream, response: HTTPResponse, seconds: float
) -> None:
    headers: list[tuple[str, str]] = [("content-type", response.content_type)]
    if response.stream is None:
        headers.append(("content-length", str(len(response.body))))
    headers.extend(response.headers)
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    head = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if response.stream is None:
        data = head + conn.send(h11.Data(data=response.body)) if response.body else head
        await send_all_bounded(stream, data + conn.send(h11.EndOfMessage()), seconds)
        return
    # The body is made before the head is written and closed on every exit, the head's write
    # failing included (a client already gone): a body with an ``aclose`` (an async generator,
    # or an object that must release something even if it never started) always gets it called.
    chunks = response.stream()
    try:
        await send_all_bounded(stream, head, seconds)
        async for chunk in chunks:
            if chunk:
                await send_all_bounded(stream, conn.send(h11.Data(data=chunk)), seconds)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # run its cleanup now, not when it is collected
    await send_all_bounded(stream, conn.send(h11.EndOfMessage()), seconds)


async def serve_http(
    stream: trio.abc.Stream,
    *,
    on_request: Callable[[HTTPRequest], Awaitable[HTTPResponse]],
    on_upgrade: Callable[[HTTPRequest, bytes], Awaitable[HTTPResponse | None]],
    limits: ServerLimits,
    on_timeout: Callable[[str], None] | None = None,
    on_head: Callable[[HTTPRequest], HeadVerdict] | None = None,
) -> None:
    """Serve HTTP/1.1 on ``stream`` until the peer closes it, a response demands closing, a
    WebSocket upgrade takes it over, or a bound of ``limits`` is exceeded.

    ``on_upgrade`` either serves the WebSocket to its end and returns ``None``, or refuses the
    handshake by returning the HTTP response to send. A read deadline that passes ends the
    connection: silently while idle, with a best-effort ``408`` mid-request; ``on_timeout``
    then gets the phase (``"idle"``, ``"header"``, ``"body"``; ``"write"`` for a write that
    timed out). ``on_head``, when given, sees each non-upgrade request's head (``body``
    empty) before its body is read and may lower the body limit or answer at once
    (:data:`HeadVerdict`). Does not close ``stream``; never raises for a peer's protocol error (answers 400
    when it still can), a slow peer or a vanished peer.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_SIZE)
    reader = _Reader(conn, stream, limits)
    timeout = limits.write_timeout
    try:
        while True:
            event = await reader.next_event()
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):  # pragma: no cover - h11 guarantees Request
                return
            head = _make_request(event, b"")
            if is_websocket_upgrade(head):
                while (await reader.next_event()) is not h11.PAUSED:
                    pass
                trailing, _closed = conn.trailing_data
                refusal = await on_upgrade(head, bytes(trailing))
                if refusal is not None:
                    await _send_response(conn, stream, refusal, timeout)
                return
            body_limit = limits.max_body_size
            verdict = on_head(head) if on_head is not None else None
            if isinstance(verdict, HTTPResponse):
                headers = [*verdict.headers, ("connection", "close")]
                early = HTTPResponse(
                    verdict.status, verdict.body, verdict.content_type, headers, verdict.stream
                )
                await _send_response(conn, stream, early, timeout)
                return
            if verdict is not None:
                body_limit = max(0, min(verdict, body_limit))
            reader.expect_body()
            try:
                body = await _read_body(reader, body_limit)
            except _BodyTooLarge:
                await _send_response(
                    conn,
                    stream,
                    error_response(
                        413, "Request body too large", headers=[("connection", "close")]
                    ),
                    timeout,
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
            await _send_response(conn, stream, response, timeout)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            reader.expect_request()
    except _ReadTimeout as exc:
        if on_timeout is not None:
            on_timeout(exc.phase)
        if exc.phase != "idle" and conn.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            try:
                await send_all_bounded(
                    stream, raw_response(408, f"Request {exc.phase} timed out"), timeout
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except h11.RemoteProtocolError as exc:
        if conn.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
            try:
                await _send_response(
                    conn,
                    stream,
                    error_response(exc.error_status_hint, f"Bad request: {exc}"),
                    timeout,
                )
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except WriteTimeout:
        if on_timeout is not None:
            on_timeout("write")
    except (trio.BrokenResourceError, trio.ClosedResourceError, AbortConnection):
        return


async def _read_body(reader: _Reader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await reader.next_event()
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise h11.RemoteProtocolError("incomplete request body", 400)
