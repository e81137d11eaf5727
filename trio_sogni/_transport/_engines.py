"""WebSocket engines behind one small interface.

* ``"fast"`` (default): `FastConnection`, this package's own receive path (`._wire`). One socket
  read yields every frame it contains, handed over as a batch with no checkpoint per frame;
  pings are answered inline.
* ``"trio-websocket"``: `TrioWebSocketConnection`, the reference engine (trio-websocket over
  wsproto). Kept for conformance testing and comparison.

Both raise `SocketClosed` when the connection ends, carrying the close code (1006 when the TCP
connection broke without a close frame).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal, Protocol, TypeAlias

import trio
import trio_websocket

from . import _wire

__all__ = [
    "Connection",
    "EngineName",
    "FastConnection",
    "HandshakeFailed",
    "SendTimedOut",
    "SocketClosed",
    "StreamOpener",
    "TrioWebSocketConnection",
    "connect",
    "open_tcp",
]

EngineName: TypeAlias = Literal["fast", "trio-websocket"]
_READ_SIZE: Final = 256 * 1024


class SocketClosed(Exception):
    """The connection ended: ``code`` and ``reason`` of the close (1006: no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"socket closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class SendTimedOut(SocketClosed):
    """A write did not finish within the send timeout; the connection was dropped."""

    def __init__(self, timeout: float) -> None:
        super().__init__(1006, f"a write did not finish in {timeout:.1f} s")
        self.timeout = timeout


class HandshakeFailed(Exception):
    """The WebSocket upgrade was refused or malformed (``status`` is the HTTP status, if any)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Connection(Protocol):
    """What the transport needs from an engine."""

    async def receive_batch(self) -> Sequence[bytes | str]:
        """Wait for data and return every complete data message received. Raises `SocketClosed`."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text message, whole.

        The write is shielded from cancellation and bounded by the engine's ``send_timeout``:
        if it cannot finish in time the connection is dropped and `SendTimedOut` is raised. A
        caller cancelled while its message waits behind another write may still have it sent.
        Raises `SocketClosed`.
        """
        ...

    async def ping(self) -> None:
        """Send a ping and wait for its pong. Raises `SocketClosed`."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame; the receive loop sees the server's answer. The caller bounds it."""
        ...

    async def abort(self) -> None:
        """Drop the TCP connection at once."""
        ...


def _nodelay(stream: trio.abc.Stream) -> None:
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class FastConnection:
    """A client WebSocket connection over a Trio stream using the `_wire` codec.

    Not safe for concurrent `receive_batch` calls (the transport has one receive loop). Sends
    may run concurrently with receiving and with each other: outgoing frames are queued whole and
    written by whichever sender finds no write in progress, every queued frame in one
    ``send_all`` (group commit), so a burst of job requests costs one system call, not one each.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        max_message_size: int,
        leftover: bytes,
        send_timeout: float = 30.0,
    ) -> None:
        self._stream = stream
        self._parser = _wire.FrameParser(max_message_size)
        self._pending = leftover
        self._send_timeout = send_timeout
        self._closed: SocketClosed | None = None
        """Set once the connection is over: no new frame is accepted (except a close reply)."""
        self._write_error: SocketClosed | None = None
        """Set once a write failed: queued frames will never be written."""
        self._close_sent = False
        self._pong = trio.Event()
        self._queue: list[bytes] = []
        self._queued = 0
        """Frames ever queued; a frame's sequence number is the count before it."""
        self._written = 0
        """Frames ever written."""
        self._flushing = False
        self._flushed = trio.Event()

    @classmethod
    async def handshake(
        cls,
        stream: trio.abc.Stream,
        host: str,
        port: int,
        resource: str,
        *,
        secure: bool,
        headers: list[tuple[bytes, bytes]],
        max_message_size: int,
        send_timeout: float = 30.0,
    ) -> FastConnection:
        """Send the upgrade over an open ``stream`` and check the answer. The stream is closed
        (shielded) if the handshake fails or is cancelled."""
        try:
            request, key = _wire.build_handshake_request(host, port, resource, secure, headers)
            await stream.send_all(request)
            data = b""
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise HandshakeFailed("the server closed the connection during the upgrade")
                data += chunk
                try:
                    parsed = _wire.parse_handshake_response(data, key)
                except _wire.HandshakeError as exc:
                    raise HandshakeFailed(str(exc), exc.status) from None
                if parsed is not None:
                    break
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise
        return cls(stream, max_message_size, parsed[2], send_timeout)

    async def receive_batch(self) -> Sequence[bytes | str]:
        while True:
            if self._closed is not None:
                raise self._closed
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await self._stream.receive_some(_READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    await self._fail(1006, "the connection broke without a close frame")
            try:
                events = self._parser.feed(data)
            except _wire.WebSocketProtocolError as exc:
                await self._fail(exc.close_code, str(exc), send_close=True)
                continue
            messages: list[bytes | str] = []
            for opcode, payload in events:
                if opcode <= _wire.OP_BINARY:
                    messages.append(payload)
                elif opcode == _wire.OP_PING:
                    assert isinstance(payload, bytes)
                    await self._send_frame(_wire.OP_PONG, payload)
                elif opcode == _wire.OP_PONG:
                    self._pong.set()
                else:
                    assert isinstance(payload, bytes)
                    try:
                        code, reason = _wire.parse_close_payload(payload)
                    except _wire.WebSocketProtocolError as exc:
                        await self._fail(exc.close_code, str(exc), send_close=True)
                        continue
                    # Deliver what preceded the close, then report the close on the next call.
                    await self._fail(code, reason, send_close=True, raise_now=not messages)
                    break
            error = self._parser.error
            if error is not None:
                # Deliver what preceded the bad frame; report the error on the next call.
                await self._fail(
                    error.close_code, str(error), send_close=True, raise_now=not messages
                )
            if messages:
                return messages

    async def _fail(
        self, code: int, reason: str, *, send_close: bool = False, raise_now: bool = True
    ) -> None:
        if self._closed is None:
            self._closed = SocketClosed(code, reason)
            if send_close and not self._close_sent:
                reply = code if code not in (1005, 1006) else 1000
                with trio.move_on_after(1, shield=True):
                    try:
                        await self._send_frame(
                            _wire.OP_CLOSE, _wire.encode_close_payload(reply), closing=True
                        )
                    except SocketClosed:
                        pass
            await self.abort()
        if raise_now:
            raise self._closed

    async def _send_frame(self, opcode: int, payload: bytes, *, closing: bool = False) -> None:
        """Queue one frame and return once it is written (by this task or another).

        ``closing``: the frame is the reply to a close already recorded in ``_closed``.
        """
        if self._close_sent or (self._closed is not None and not closing):
            raise self._closed or SocketClosed(1000, "closing")
        if opcode == _wire.OP_CLOSE:
            self._close_sent = True
        seq = self._queued
        self._queued += 1
        self._queue.append(_wire.encode_frame(opcode, payload))
        while self._written <= seq:
            if self._write_error is not None:
                raise self._write_error
            if self._flushing:
                await self._flushed.wait()
            else:
                await self._flush()

    async def _flush(self) -> None:
        """Write every queued frame, round after round until none is left. Each write is
        shielded and bounded by ``send_timeout``; a failed or late write fails the connection."""
        self._flushing = True
        try:
            while self._queue and self._write_error is None:
                batch, self._queue = self._queue, []
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                with trio.CancelScope(shield=True) as scope:
                    scope.relative_deadline = self._send_timeout
                    try:
                        await self._stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._write_error = SocketClosed(1006, "the connection broke while sending")
                if scope.cancelled_caught:
                    self._write_error = SendTimedOut(self._send_timeout)
                if self._write_error is not None:
                    if self._closed is None:
                        self._closed = self._write_error
                    self._queue.clear()
                    await self.abort()
                    break
                self._written += len(batch)
        finally:
            self._flushing = False
            flushed, self._flushed = self._flushed, trio.Event()
            flushed.set()

    async def send_text(self, text: str) -> None:
        await self._send_frame(_wire.OP_TEXT, text.encode())

    async def ping(self) -> None:
        self._pong = trio.Event()
        await self._send_frame(_wire.OP_PING, b"trio-sogni")
        await self._pong.wait()

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._send_frame(_wire.OP_CLOSE, _wire.encode_close_payload(code, reason))
        except SocketClosed:
            pass

    async def abort(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


class TrioWebSocketConnection:
    """The reference engine: trio-websocket. Its reader task runs in the nursery given to
    `connect`, one message per `receive_batch`."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, send_timeout: float = 30.0) -> None:
        self._ws = ws
        self._send_timeout = send_timeout

    @staticmethod
    def _closed(exc: trio_websocket.ConnectionClosed) -> SocketClosed:
        reason = exc.reason
        if reason is None:
            return SocketClosed(1006)
        return SocketClosed(reason.code, reason.reason or "")

    async def receive_batch(self) -> Sequence[bytes | str]:
        try:
            return (await self._ws.get_message(),)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def send_text(self, text: str) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = self._send_timeout
            try:
                await self._ws.send_message(text)
            except trio_websocket.ConnectionClosed as exc:
                raise self._closed(exc) from None
        if scope.cancelled_caught:
            await self.abort()
            raise SendTimedOut(self._send_timeout)

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def close(self, code: int, reason: str) -> None:
        await self._ws.aclose(code, reason)

    async def abort(self) -> None:
        stream = self._ws._stream  # pyright: ignore[reportPrivateUsage]
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


StreamOpener: TypeAlias = Callable[[str, int, "ssl.SSLContext | None"], Awaitable[trio.abc.Stream]]
"""Opens the byte stream a WebSocket runs over: ``(host, port, ssl_context) -> stream``.

The default, `open_tcp`, dials TCP (and TLS when ``ssl_context`` is given). Tests pass an opener
that returns one end of an in-memory stream (e.g. localnet's ``connect_in_memory``), so the real
client runs with no socket at all, in virtual time if they like.
"""


async def open_tcp(host: str, port: int, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """Open TCP to ``host:port`` with Nagle off, then TLS over it when ``ssl_context`` is set.

    Raises:
        OSError: the connection or the TLS handshake failed.
    """
    tcp = await trio.open_tcp_stream(host, port)
    _nodelay(tcp)
    if ssl_context is None:
        return tcp
    tls = trio.SSLStream(tcp, ssl_context, server_hostname=host)
    try:
        await tls.do_handshake()
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(tcp)
        raise
    return tls


async def connect(
    engine: EngineName,
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    port: int,
    resource: str,
    *,
    secure: bool,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    send_timeout: float = 30.0,
) -> Connection:
    """Run the WebSocket handshake over an open ``stream`` with the chosen engine.

    Raises:
        HandshakeFailed: the upgrade was refused or malformed.
        OSError, trio.BrokenResourceError: the stream broke during the upgrade.
    """
    if engine == "fast":
        return await FastConnection.handshake(
            stream,
            host,
            port,
            resource,
            secure=secure,
            headers=headers,
            max_message_size=max_message_size,
            send_timeout=send_timeout,
        )
    # The Host header names the port when it is not the scheme's default (RFC 9110 §7.2).
    host_header = host if port == (443 if secure else 80) else f"{host}:{port}"
    try:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # pyright: ignore[reportArgumentType]  # any trio Stream works
            host_header,
            resource,
            extra_headers=headers,
            message_queue_size=64,
            max_message_size=max_message_size,
            receive_buffer_size=65536,
        )
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
        if isinstance(exc, trio_websocket.ConnectionRejected):
            raise HandshakeFailed(
                f"the server rejected the upgrade: {exc}", exc.status_code
            ) from exc
        if isinstance(exc, trio_websocket.HandshakeError):
            raise HandshakeFailed(f"the upgrade failed: {exc}") from exc
        raise
    return TrioWebSocketConnection(ws, send_timeout)
