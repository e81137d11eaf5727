"""The WebSocket driver: wsproto over a Trio stream, one reader loop and one writer task.

Every server-to-client frame goes through the connection's :class:`Outbox`, a FIFO drained by a
single writer task, so job tasks never touch the stream (cancelling a job can never leave half a
frame on the wire). Pongs and close replies bypass the outbox; a lock serialises all writes.

The writer takes every queued item at once and writes all the data frames among them with one
``send_all`` (up to :data:`WRITE_BATCH_BYTES`); it frames data messages itself
(:func:`encode_frame`: unmasked, unfragmented, no extensions are ever negotiated), and leaves
control frames and the close handshake to wsproto.

Every write is bounded (:func:`~._http.send_all_bounded`: ``write_timeout`` per 64 KiB). A peer
that stops reading is dropped: the writer aborts the TCP connection, the driver ends with
:attr:`WebSocketDriver.stalled` set, and its owner decides what becomes of the socket's work.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._frames import (
    WRITE_BATCH_BYTES,
    Outbox,
    OutClose,
    OutDrop,
    OutEncoded,
    OutFrame,
    encode_frame,
)
from ._http import HTTPRequest, HTTPResponse, WriteTimeout, error_response, send_all_bounded

__all__ = ["WebSocketDriver", "accept_websocket"]

logger = logging.getLogger("trio_sogni.localnet")

RECEIVE_SIZE: Final = 65_536


def _reset_on_close(stream: trio.abc.Stream) -> None:
    if isinstance(stream, trio.SocketStream):
        try:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - platform dependent
            pass


class WebSocketDriver:
    """One accepted WebSocket (the 101 response already sent) and its two loops.

    :meth:`run` returns when the connection is over: the client closed it, the TCP connection
    died, a queued :class:`OutClose` finished (or timed out after ``close_timeout`` seconds
    waiting for the client's reply), an :class:`OutDrop` cut it, or a write timed out
    (``write_timeout`` per 64 KiB; :attr:`stalled` is then true). The stream is closed on
    return. Incoming messages larger than ``max_message_size`` bytes close the socket with 1009.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        *,
        max_message_size: int,
        outbox_limit: int,
        close_timeout: float,
        write_timeout: float,
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.outbox = Outbox(outbox_limit)
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout
        self.stalled = False
        """Whether the connection was dropped because a write timed out (the peer stopped
        reading)."""
        self.sent_close: int | None = None
        """The close code this server sent, if any."""
        self.received_close: int | None = None
        """The close code the client sent (1006 when the TCP connection ended without one)."""
        self.dropped = False
        self._send_lock = trio.Lock()
        self._peer_gone = trio.Event()
        self._run_scope = trio.CancelScope()

    async def run(self, on_message: Callable[[bytes | str], Awaitable[None]]) -> None:
        """Serve the socket until it is over. ``on_message`` gets each complete client message
        (``bytes`` for binary, ``str`` for text); it may block, which pauses reading."""
        try:
            with self._run_scope:
                await self._run(on_message)
        finally:
            self.outbox.close()
            await trio.aclose_forcefully(self.stream)

    async def _run(self, on_message: Callable[[bytes | str], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            await self._reader(on_message)
            self._peer_gone.set()
            nursery.cancel_scope.cancel()

    def _stall(self) -> None:
        """A write timed out: the peer stopped reading. End :meth:`run` at once."""
        if not self.stalled:
            logger.warning(
                "localnet: dropping a socket that took no data for %s s", self.write_timeout
            )
        self.stalled = True
        _reset_on_close(self.stream)  # abort: free the unsent data at once (RST)
        self._peer_gone.set()
        self._run_scope.cancel()

    async def _send_bytes(self, data: bytes) -> bool:
        """Write ``data`` (the send lock held); ``False`` when the peer is gone or too slow."""
        try:
            await send_all_bounded(self.stream, data, self.write_timeout)
        except WriteTimeout:
            self._stall()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone.set()
            return False
        return True

    async def _send(self, event: Event) -> bool:
        async with self._send_lock:
            try:
                data = self.ws.send(event)
            except LocalProtocolError:
                return False
            return await self._send_bytes(data)

    async def _reader(self, on_message: Callable[[bytes | str], Awaitable[None]]) -> None:
        parts: list[bytes | str] = []
        size = 0
        discarding = False
        while True:
            for event in self.ws.events():
                match event:
                    case Ping():
                        await self._send(event.response())
                    case TextMessage() | BytesMessage():
                        data = bytes(event.data) if isinstance(event, BytesMessage) else event.data
                        if discarding or self.sent_close is not None:
                            discarding = not event.message_finished
                            continue
                        size += len(data)
                        if size > self.max_message_size:
                            logger.warning(
                                "closing a socket: incoming message over %d bytes",
                                self.max_message_size,
                            )
                            parts, size, discarding = [], 0, not event.message_finished
                            self.outbox.put_nowait(OutClose(1009, "Message too big"))
                            continue
                        parts.append(data)
                        if event.message_finished:
                            if isinstance(event, TextMessage):
                                message: bytes | str = "".join(
                                    p for p in parts if isinstance(p, str)
                                )
                            else:
                                message = b"".join(p for p in parts if isinstance(p, bytes))
                            parts, size = [], 0
                            await on_message(message)
                    case CloseConnection(code=code, reason=reason):
                        if self.ws.state is ConnectionState.OPEN:
                            # wsproto reports a protocol violation (e.g. invalid UTF-8, 1007)
                            # as a close event without changing state: answer with that code.
                            logger.info("localnet: closing a socket: %s", reason)
                            self.sent_close = code
                            await self._send(CloseConnection(code=code, reason=reason))
                            return
                        self.received_close = code
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send(event.response())
                        return
                    case _:
                        pass
            try:
                data_in = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data_in = b""
            if not data_in:
                if self.received_close is None:
                    self.received_close = 1006
                return
            try:
                self.ws.receive_data(bytes(data_in))
            except LocalProtocolError:  # data after the close handshake
                return

    async def _write_data(self, data: bytes) -> bool:
        """Write already-encoded data frames, unless the close handshake has begun."""
        async with self._send_lock:
            if self.ws.state is not ConnectionState.OPEN:
                return False
            return await self._send_bytes(data)

    async def _writer(self) -> None:
        pending: list[bytes] = []
        size = 0
        while True:
            items = await self.outbox.get_all()
            if not items:
                return
            for item in items:
                match item:
                    case OutFrame(payload=payload, job=job):
                        if job is not None and job.silenced:
                            continue
                        frame = encode_frame(payload)
                    case OutEncoded(data=frame, job=job):
                        if job is not None and job.silenced:
                            continue
                    case OutClose() | OutDrop():
                        if pending and not await self._write_data(b"".join(pending)):
                            await self._abandon()
                            return
                        pending, size = [], 0
                        await self._finish(item)
                        return
                pending.append(frame)
                size += len(frame)
                if size >= WRITE_BATCH_BYTES:
                    if not await self._write_data(b"".join(pending)):
                        await self._abandon()
                        return
                    pending, size = [], 0
            if pending:
                if not await self._write_data(b"".join(pending)):
                    await self._abandon()
                    return
                pending, size = [], 0

    async def _abandon(self) -> None:
        self.outbox.close()
        await trio.aclose_forcefully(self.stream)

    async def _finish(self, item: OutClose | OutDrop) -> None:
        self.outbox.close()
        match item:
            case OutClose(code=code, reason=reason):
                self.sent_close = code
                if await self._send(CloseConnection(code=code, reason=reason)):
                    with trio.move_on_after(self.close_timeout):
                        await self._peer_gone.wait()
            case OutDrop(reset=reset):
                self.dropped = True
                if reset:
                    _reset_on_close(self.stream)
        await trio.aclose_forcefully(self.stream)


async def accept_websocket(
    stream: trio.abc.Stream,
    request: HTTPRequest,
    trailing: bytes,
    *,
    max_message_size: int,
    outbox_limit: int,
    close_timeout: float,
    write_timeout: float,
) -> WebSocketDriver | HTTPResponse:
    """Complete the WebSocket upgrade that ``request`` asks for on ``stream``.

    On success the ``101 Switching Protocols`` response is already sent, ``trailing`` (bytes the
    client sent after its request) is fed to the connection, and the returned driver is ready to
    :meth:`~WebSocketDriver.run`. A malformed handshake returns a 400 response instead (nothing
    was sent).

    Raises:
        WriteTimeout: the ``101`` was not taken within ``write_timeout`` (close the stream).
        trio.BrokenResourceError, trio.ClosedResourceError: the peer is gone.
    """
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection(list(request.raw_headers), request.target)
        for _event in ws.events():
            pass
        accept = ws.send(AcceptConnection())
    except RemoteProtocolError as exc:
        return error_response(400, f"Bad WebSocket handshake: {exc}")
    await send_all_bounded(stream, accept, write_timeout)
    if trailing:
        ws.receive_data(trailing)
    return WebSocketDriver(
        stream,
        ws,
        max_message_size=max_message_size,
        outbox_limit=outbox_limit,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
    )
