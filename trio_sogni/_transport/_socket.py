"""The WebSocket connection to a Supernet socket server.

The transport knows URLs, handshakes, envelopes and close codes, never chat semantics: it hands each
received frame to a `FrameSink` synchronously and tells it when the connection is up or lost.

Tasks: `SocketTransport.run` (connect, wait for ``authenticated``, receive loop, reconnect) and
`SocketTransport.keepalive` (ping every ``ping_interval``; a missing pong kills the connection) both
run in the client's nursery and nowhere else. The frame engine is pluggable (`._engines`): the
default ``"fast"`` engine hands over every frame of one socket read as a batch; the reference
``"trio-websocket"`` engine's reader task lives in a nursery nested inside `run`.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import msgspec
import trio
from typing_extensions import override

from .._errors import AuthenticationError, ClientClosedError, ConnectError, ConnectionLost
from .._groups import unwrap_group
from .._version import __version__
from ..protocol import Authenticated, decode_envelope, decode_server_message
from ._engines import (
    Connection,
    EngineName,
    HandshakeFailed,
    SendTimedOut,
    SocketClosed,
    StreamOpener,
    connect,
    open_tcp,
)

__all__ = ["FrameSink", "SocketOptions", "SocketTransport", "build_socket_url"]

logger = logging.getLogger("trio_sogni.transport")

PROTOCOL_VERSION: Final = "3.0.0"
CLIENT_NAME: Final = f"Sogni/{PROTOCOL_VERSION} (trio-sogni) {__version__}"

# Close codes (protocol.md §1.8).
CLOSE_NORMAL: Final = 1000
CLOSE_APP_ID_BLOCKED: Final = 4010
CLOSE_SWITCH_CONNECTION: Final = 4015
CLOSE_AUTH_ERROR: Final = 4021

HeaderFactory = Callable[[], Awaitable[list[tuple[bytes, bytes]]]]


class FrameSink(Protocol):
    """The receiver of everything the socket delivers. All methods are synchronous and must not
    raise (exceptions are logged and swallowed so the receive loop survives)."""

    def feed(self, frame: bytes | str) -> None:
        """One received message."""

    def feed_batch(self, frames: Sequence[bytes | str]) -> None:
        """Every message of one socket read, in order (must handle each like `feed`)."""

    def connected(self, authenticated: Authenticated) -> Sequence[bytes]:
        """A connection finished its handshake (``authenticated`` received). Returns frames to
        send on it before anything else (before any waiting sender is let through)."""
        ...

    def connection_lost(self, error: ConnectionLost | AuthenticationError) -> None:
        """The current connection died (`AuthenticationError`: the server closed it with 4021,
        credentials rejected). Jobs that depended on it fail now or wait to be resumed."""


class SocketOptions(msgspec.Struct, kw_only=True, frozen=True):
    """Protocol-inherent limits of the socket (no per-call timeouts exist: use cancel scopes)."""

    connect_timeout: float = 20.0
    authenticated_timeout: float = 10.0
    ping_interval: float = 15.0
    ping_timeout: float = 15.0
    send_timeout: float = 30.0
    close_timeout: float = 5.0
    max_message_size: int = 64 * 1024 * 1024
    reconnect_initial_delay: float = 1.0
    reconnect_max_delay: float = 15.0
    engine: EngineName = "fast"


def build_socket_url(
    socket_endpoint: str,
    *,
    app_id: str,
    network: str,
    app_source: str | None = None,
    socket_event_subscriptions: dict[str, bool] | None = None,
    job_resume: bool = False,
) -> str:
    """The WebSocket URL with the official query parameters, in the official order (§1.6), and
    ``jobResume=1`` last when ``job_resume`` (a localnet extension: a server that does not know
    it ignores it)."""
    parts = urlsplit(socket_endpoint)
    scheme = "ws" if parts.scheme in ("ws", "http") else "wss"
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("appId", app_id))
    if app_source:
        query.append(("appSource", app_source))
    if socket_event_subscriptions:
        flags = msgspec.json.encode(socket_event_subscriptions).decode()
        query.append(("socketEventSubscriptions", flags))
    query.append(("clientName", CLIENT_NAME))
    query.append(("clientType", "artist"))
    query.append(("forceWorkerId", "fast" if network == "fast" else ""))
    if job_resume:
        query.append(("jobResume", "1"))
    return SplitResult(scheme, parts.netloc, parts.path or "/", urlencode(query), "").geturl()


def _close_error(code: int | None, reason: str | None) -> ConnectionLost:
    text = f"socket closed (code {code}{': ' + reason if reason else ''})"
    return ConnectionLost(text, close_code=code, reason=reason or "")


def _session_error(lost: ConnectionLost) -> ConnectionLost | AuthenticationError:
    """What jobs and waiters see for a loss: close code 4021 (credentials rejected, e.g. a
    revoked key or an expired token) is an `AuthenticationError` caused by ``lost``, during the
    session as during the handshake; any other loss is ``lost`` itself."""
    if lost.close_code != CLOSE_AUTH_ERROR:
        return lost
    error = AuthenticationError("the server rejected the credentials (close code 4021)")
    error.__cause__ = lost
    return error


class SocketTransport:
    """One logical connection to the socket server, reconnecting as the official SDKs do.

    Close codes: 1000 and 4xxx are terminal (4021: credentials rejected; 4015: another connection
    took this ``appId``); anything else (1001 restart, 1006 abnormal, 1011, ...) reconnects with
    exponential backoff (1 s doubling to 15 s, ±20 % jitter) for as long as the client is open.
    """

    def __init__(
        self,
        url: str,
        headers: HeaderFactory,
        sink: FrameSink,
        options: SocketOptions,
        open_stream: StreamOpener = open_tcp,
    ) -> None:
        self._url = url
        self._open_stream = open_stream
        parts = urlsplit(url)
        self._host = parts.hostname or "localhost"
        self._secure = parts.scheme == "wss"
        self._port = parts.port or (443 if self._secure else 80)
        self._resource = parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = headers
        self._sink = sink
        self._options = options
        self._ws: Connection | None = None
        self._ready = trio.Event()
        self._terminal: BaseException | None = None
        self._closing = False
        self._stopped = trio.Event()
        self.connections = 0
        self.frames_received = 0
        self.authenticated: Authenticated | None = None
        self._hello: Sequence[bytes] = ()

    @override
    def __repr__(self) -> str:
        # The URL holds no secret (credentials travel in headers), but keep the repr short.
        return f"<SocketTransport {self._host}:{self._port} connected={self.is_connected}>"

    @property
    def is_connected(self) -> bool:
        """True while an authenticated connection is up."""
        return self._ws is not None and self._ready.is_set()

    # --- connection lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then receive until the client closes, reconnecting after recoverable losses.

        ``task_status.started()`` is called once the first connection is authenticated. Errors of
        the *first* attempt propagate (`AuthenticationError`, `ConnectError`); later losses are
        reported to the sink and retried.
        """
        try:
            await self._run(task_status)
        finally:
            self._stopped.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        first = True
        attempt = 0
        while not self._closing:
            try:
                # The connection's nursery wraps what its body raised: one error is that error.
                with unwrap_group():
                    lost = await self._connect_and_receive(task_status if first else None)
                attempt = 0
            except (ConnectError, AuthenticationError) as exc:
                if first:
                    raise
                lost = ConnectionLost(str(exc), close_code=None, reason=str(exc))
                if isinstance(exc, AuthenticationError):
                    self._terminal = exc
            first = False
            if lost is None or self._closing:
                return
            code = lost.close_code
            if code == CLOSE_NORMAL or (code is not None and 4000 <= code <= 4999):
                self._terminal = _session_error(lost)
            if self._terminal is not None:
                logger.warning("socket closed for good: %s", lost)
                self._ready.set()  # release waiting senders: they see the terminal error
                return
            delay = min(
                self._options.reconnect_initial_delay * 2**attempt,
                self._options.reconnect_max_delay,
            ) * random.uniform(0.8, 1.2)
            attempt += 1
            logger.info("socket lost (%s); reconnecting in %.1f s", lost, delay)
            await trio.sleep(delay)

    async def _connect_and_receive(
        self, task_status: trio.TaskStatus[None] | None
    ) -> ConnectionLost | None:
        options = self._options
        ssl_context = ssl.create_default_context() if self._secure else None
        async with trio.open_nursery() as ws_nursery:
            try:
                headers = await self._headers()
                with trio.fail_after(options.connect_timeout):
                    stream = await self._open_stream(self._host, self._port, ssl_context)
                    ws = await connect(
                        options.engine,
                        ws_nursery,
                        stream,
                        self._host,
                        self._port,
                        self._resource,
                        secure=self._secure,
                        headers=headers,
                        max_message_size=options.max_message_size,
                        send_timeout=options.send_timeout,
                    )
            except trio.TooSlowError as exc:
                raise ConnectError(f"connecting to {self._host}:{self._port} timed out") from exc
            except (OSError, trio.BrokenResourceError, HandshakeFailed) as exc:
                raise ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
            try:
                early = await self._await_authenticated(ws)
                hello, self._hello = self._hello, ()
                try:
                    for frame in hello:
                        await self._write(ws, frame)
                except ConnectionLost as exc:
                    self._notify_lost(exc)
                    return exc
                self.connections += 1
                self._ws = ws
                self._ready.set()
                if task_status is not None:
                    task_status.started()
                for frame in early:
                    self.frames_received += 1
                    self._feed(frame)
                return await self._receive_loop(ws)
            finally:
                self._ws = None
                if self._ready.is_set() and self._terminal is None:
                    self._ready = trio.Event()
                await self._shutdown(ws)
                ws_nursery.cancel_scope.cancel()

    async def _await_authenticated(self, ws: Connection) -> list[bytes | str]:
        """Wait for ``authenticated``; return the frames that came after it in the same batch."""
        try:
            with trio.fail_after(self._options.authenticated_timeout):
                while True:
                    batch = await ws.receive_batch()
                    for i, frame in enumerate(batch):
                        self.frames_received += 1
                        try:
                            kind, _ = decode_envelope(frame)
                        except msgspec.MsgspecError:
                            kind = ""
                        if kind == "authenticated":
                            message = decode_server_message(frame)
                            assert isinstance(message, Authenticated)
                            self.authenticated = message
                            self._hello = self._sink.connected(message)
                            return list(batch[i + 1 :])
                        self._feed(frame)
        except trio.TooSlowError as exc:
            raise ConnectError(
                f"the server sent no 'authenticated' frame within "
                f"{self._options.authenticated_timeout} s"
            ) from exc
        except msgspec.MsgspecError as exc:
            raise ConnectError(f"malformed 'authenticated' frame: {exc}") from exc
        except SocketClosed as exc:
            code, reason = exc.code, exc.reason
            if code == CLOSE_AUTH_ERROR:
                raise AuthenticationError(
                    "the server rejected the credentials (close code 4021)"
                ) from None
            if code == CLOSE_APP_ID_BLOCKED:
                raise ConnectError("the server blocked this app id (close code 4010)") from None
            raise ConnectError(
                f"the server closed the socket during the handshake (code {code}: {reason})"
            ) from None

    async def _receive_loop(self, ws: Connection) -> ConnectionLost | None:
        feed_batch = self._sink.feed_batch
        while True:
            try:
                batch = await ws.receive_batch()
            except SocketClosed as exc:
                if self._closing:
                    return None
                lost = _close_error(exc.code, exc.reason)
                self._notify_lost(_session_error(lost))
                return lost
            self.frames_received += len(batch)
            try:
                feed_batch(batch)
            except Exception:  # a sink bug: the receive loop survives it
                logger.exception("error while handling server frames; the rest of a batch skipped")

    def _feed(self, frame: bytes | str) -> None:
        try:
            self._sink.feed(frame)
        except Exception:
            logger.exception("error while handling a server frame; frame skipped")

    def _notify_lost(self, lost: ConnectionLost | AuthenticationError) -> None:
        try:
            self._sink.connection_lost(lost)
        except Exception:
            logger.exception("error while failing jobs after a connection loss")

    async def _shutdown(self, ws: Connection) -> None:
        """Say goodbye (close frame, bounded by ``close_timeout``) and drop the TCP connection."""
        with trio.move_on_after(self._options.close_timeout, shield=True):
            try:
                await ws.close(CLOSE_NORMAL, "Client disconnected")
            except Exception:  # already dead: nothing more to say to the peer
                logger.debug("close handshake failed", exc_info=True)
        await ws.abort()

    async def close(self) -> None:
        """Stop reconnecting and close the current connection with 1000 ``Client disconnected``,
        waiting (shielded, bounded by ``close_timeout``) for the server's answer."""
        self._closing = True
        if self._terminal is None:
            self._terminal = ClientClosedError("the client is closed")
        self._ready.set()
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(self._options.close_timeout, shield=True):
                try:
                    await ws.close(CLOSE_NORMAL, "Client disconnected")
                except Exception:
                    logger.debug("close handshake failed", exc_info=True)
                await self._stopped.wait()

    # --- sending --------------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        """Wait until a connection is authenticated. Cancellable.

        Raises:
            ConnectionLost / AuthenticationError / ClientClosedError: the socket is closed for good.
        """
        while True:
            await self._ready.wait()
            if self._terminal is not None:
                raise self._terminal
            if self._ws is not None:
                return

    async def send(self, frame: bytes) -> None:
        """Send one frame once connected.

        Waiting for a connection is cancellable; the write itself is shielded (bounded by
        ``send_timeout``) so a cancelled caller never leaves half a frame on the wire. A write that
        cannot finish in time kills the connection.

        Raises:
            ConnectionLost: the connection died before or while sending.
        """
        ws = self._ws
        if ws is not None and self._ready.is_set() and self._terminal is None:
            # Connected: the write below is the schedule point; only honour a pending cancel here.
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            while True:
                await self.wait_connected()
                ws = self._ws
                if ws is not None:
                    break
        await self._write(ws, frame)

    async def send_if_connected(self, frame: bytes) -> bool:
        """Send one frame only if a connection is up right now; never waits for one."""
        ws = self._ws
        if ws is None or not self._ready.is_set() or self._terminal is not None:
            await trio.lowlevel.checkpoint()
            return False
        try:
            await self._write(ws, frame)
        except ConnectionLost:
            return False
        return True

    async def _write(self, ws: Connection, frame: bytes) -> None:
        text = frame.decode("ascii")  # envelopes are ASCII; text frames, as the official SDKs send
        try:
            await ws.send_text(text)
        except SendTimedOut as exc:
            logger.warning("%s; the connection was dropped", exc.reason)
            raise ConnectionLost("sending timed out; the connection was dropped") from None
        except SocketClosed as exc:
            raise _close_error(exc.code, exc.reason) from None

    # --- keep-alive -----------------------------------------------------------------------------

    async def keepalive(self) -> None:
        """Ping every ``ping_interval`` seconds; no pong within ``ping_timeout`` kills the connection
        (the receive loop then reports the loss and reconnects). Runs until cancelled."""
        options = self._options
        while True:
            await trio.sleep(options.ping_interval)
            ws = self._ws
            if ws is None:
                continue
            with trio.move_on_after(options.ping_timeout) as scope:
                try:
                    await ws.ping()
                except SocketClosed:
                    continue
            if scope.cancelled_caught and ws is self._ws:
                logger.warning(
                    "no pong within %.1f s; dropping the connection", options.ping_timeout
                )
                await ws.abort()
