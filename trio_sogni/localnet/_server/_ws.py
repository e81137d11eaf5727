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

Every incoming message is bounded in time as well as in size: from its first byte, the peer has
``message_timeout`` seconds to send the rest (every fragment of a fragmented message, the whole
payload a frame header announced). :class:`MessageBoundaries` follows the frame headers of the
incoming byte stream to know when a message is under way, so half a frame header, a frame cut
short or a fragmented message whose final frame never comes are all caught. A peer that runs
out of time gets a close frame with code 1008 and is closed like any socket that ends.
"""

from __future__ import annotations

import logging
import math
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

__all__ = ["MESSAGE_TIMEOUT_CODE", "MessageBoundaries", "WebSocketDriver", "accept_websocket"]

logger = logging.getLogger("trio_sogni.localnet")

RECEIVE_SIZE: Final = 65_536
MESSAGE_TIMEOUT_CODE: Final = 1008
"""The close code sent to a peer that did not finish a message within ``message_timeout``
(RFC 6455 "policy violation")."""


class MessageBoundaries:
    """Where a peer's byte stream stands with respect to WebSocket messages (sans-IO).

    :meth:`feed` it every byte received, in order. It reads only the frame headers (FIN bit,
    opcode, payload length, mask flag) and counts payload bytes; it validates nothing (the
    WebSocket connection does) and keeps at most one frame header (14 bytes). A message is
    *under way* (:attr:`in_message`) while a frame header or payload is incomplete, or after a
    data frame without FIN until the final fragment ends; control frames inside a fragmented
    message do not end it. :attr:`completed` counts the times the stream came back between
    messages, so a caller can tell that a new message began within one read.
    """

    __slots__ = ("_fragmented", "_header", "_remaining", "completed")

    def __init__(self) -> None:
        self._header = bytearray()
        self._remaining = 0
        self._fragmented = False
        self.completed = 0
        """How many times the stream reached a point between two messages."""

    @property
    def in_message(self) -> bool:
        """Whether the peer has begun a message (or a control frame) it has not finished."""
        return bool(self._header) or self._remaining > 0 or self._fragmented

    def _header_size(self) -> int:
        """The full size of the frame header being collected (at least 2 bytes known)."""
        second = self._header[1]
        length = second & 0x7F
        extended = 2 if length == 126 else 8 if length == 127 else 0
        return 2 + extended + (4 if second & 0x80 else 0)

    def _end_header(self) -> None:
        header = self._header
        length = header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
        if not header[0] & 0x08:  # a data or continuation frame (opcodes 0-7)
            self._fragmented = not header[0] & 0x80
        self._header.clear()
        self._remaining = length
        if not self.in_message:
            self.completed += 1

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``, the next bytes the peer sent."""
        view = memoryview(data)
        at, end = 0, len(view)
        while at < end:
            if self._remaining:
                step = min(self._remaining, end - at)
                self._remaining -= step
                at += step
                if not self.in_message:
                    self.completed += 1
                continue
            need = (2 if len(self._header) < 2 else self._header_size()) - len(self._header)
            take = min(need, end - at)
            self._header += view[at : at + take]
            at += take
            if len(self._header) >= 2 and len(self._header) == self._header_size():
                self._end_header()


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

    An incoming message must be complete within ``message_timeout`` seconds of its first byte,
    counting only the time the reader waits for the peer (time this server spends handling
    earlier messages does not count): else :attr:`message_timed_out` is set and the socket is
    closed with :data:`MESSAGE_TIMEOUT_CODE` (1008), so the half-received message is freed
    after at most ``message_timeout`` + the close (``write_timeout`` per 64 KiB queued before
    it, then ``close_timeout``). ``initial`` is data the peer sent before the driver started
    (received along with the upgrade request).
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
        message_timeout: float,
        initial: bytes = b"",
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.outbox = Outbox(outbox_limit)
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.write_timeout = write_timeout
        self.message_timeout = message_timeout
        self.boundaries = MessageBoundaries()
        """Where the incoming byte stream stands (see :class:`MessageBoundaries`)."""
        self.message_timed_out = False
        """Whether the peer was closed for not finishing a message within ``message_timeout``."""
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
        if initial:
            self._receive_data(initial)

    def _receive_data(self, data: bytes) -> None:
        self.boundaries.feed(data)
        self.ws.receive_data(data)

    async def _receive_some(self, budget: float | None) -> tuple[bytes, float | None]:
        """The next bytes from the peer (``b""``: the connection ended) and what is left of the
        message's time ``budget`` (``None``: no message under way, wait as long as it takes).
        Raises :class:`trio.TooSlowError` when the budget runs out first."""
        start = trio.current_time()
        data = b""
        with trio.move_on_after(budget if budget is not None else math.inf) as scope:
            try:
                data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
        if scope.cancelled_caught:
            raise trio.TooSlowError
        return data, None if budget is None else max(0.0, budget - (trio.current_time() - start))

    def _time_out_message(self) -> None:
        self.message_timed_out = True
        logger.info(
            "localnet: closing a socket: a message not completed within %s s",
            self.message_timeout,
        )
        self.outbox.put_nowait(
            OutClose(MESSAGE_TIMEOUT_CODE, f"Message not completed within {self.message_timeout} s")
        )

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
        budget: float | None = None  # seconds left for the message under way
        completed = self.boundaries.completed
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
            closing = self.message_timed_out or discarding or self.sent_close is not None
            if not self.boundaries.in_message or closing:
                budget = None  # nothing under way, or close_timeout bounds what is left
            elif budget is None or self.boundaries.completed != completed:
                budget = self.message_timeout  # a message began since the last read
            completed = self.boundaries.completed
            try:
                data_in, budget = await self._receive_some(budget)
            except trio.TooSlowError:
                self._time_out_message()
                budget = None
                continue
            if not data_in:
                if self.received_close is None:
                    self.received_close = 1006
                return
            try:
                self._receive_data(data_in)
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
    message_timeout: float,
) -> WebSocketDriver | HTTPResponse:
    """Complete the WebSocket upgrade that ``request`` asks for on ``stream``.

    On success the ``101 Switching Protocols`` response is already sent, ``trailing`` (bytes the
    client sent after its request) is fed to the connection (and its ``message_timeout`` clock
    starts if they begin a message), and the returned driver is ready to
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
    return WebSocketDriver(
        stream,
        ws,
        max_message_size=max_message_size,
        outbox_limit=outbox_limit,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        message_timeout=message_timeout,
        initial=trailing,
    )
