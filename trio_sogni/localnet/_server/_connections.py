"""The open connections of a server: each accepted stream served as HTTP/1.1 (and possibly
upgraded to a WebSocket), tracked until it ends.

:class:`Connections` serves one stream per :meth:`Connections.serve` call and remembers it while
it lasts, so a shutdown can cancel the plain HTTP connections (:meth:`Connections.cancel_http`)
while WebSockets get a close handshake from their owner, and so the owner can wait for all of
them to go. It reports each change and each crashed handler through callbacks.

It serves at most ``limits.max_connections`` at once: one more is answered ``503 Service
Unavailable`` with ``Retry-After: 1`` and ``Connection: close`` at once, without reading its
request, and closed (a refusal costs one bounded write; refusals are logged at most once a
minute).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeAlias

import trio

from ._accept import LogThrottle
from ._http import (
    HeadVerdict,
    HTTPRequest,
    HTTPResponse,
    ServerLimits,
    WriteTimeout,
    raw_response,
    send_all_bounded,
    serve_http,
)

__all__ = ["REFUSAL", "Connection", "Connections", "UpgradeHandler"]

logger = logging.getLogger("trio_sogni.localnet")

REFUSAL: Final = raw_response(503, "Too many connections", [("retry-after", "1")])
"""What a connection over ``max_connections`` receives before it is closed."""
REFUSAL_WRITE_TIMEOUT: Final = 1.0


@dataclass(eq=False)
class Connection:
    """One served connection: the scope its handler runs in and whether it is a WebSocket
    (set by the upgrade handler before the ``101`` goes out; plain HTTP connections are what
    :meth:`Connections.cancel_http` cancels)."""

    scope: trio.CancelScope
    websocket: bool = False


UpgradeHandler: TypeAlias = Callable[
    [trio.abc.Stream, Connection, HTTPRequest, bytes], Awaitable[HTTPResponse | None]
]
"""Takes over a connection asking for a WebSocket upgrade (see :func:`serve_http`): the stream,
its :class:`Connection`, the upgrade request and the bytes received after it."""


class Connections:
    """The connections being served. ``on_change`` runs after one opens or ends; ``on_error``
    gets ``"connection: <exception repr>"`` when a handler crashes (also logged)."""

    def __init__(
        self,
        *,
        on_change: Callable[[], None],
        on_error: Callable[[str], None],
        limits: ServerLimits,
    ) -> None:
        self._open: set[Connection] = set()
        self._on_change = on_change
        self._on_error = on_error
        self.limits = limits
        self.refused = 0
        """Connections refused because ``max_connections`` were open."""
        self.timeouts: dict[str, int] = {}
        """Connections cut by a bound, by phase (``idle``, ``header``, ``body``, ``write``)."""
        self._refusal_log = LogThrottle(60.0)

    def __len__(self) -> int:
        return len(self._open)

    def _timed_out(self, phase: str) -> None:
        self.timeouts[phase] = self.timeouts.get(phase, 0) + 1
        self._on_change()

    async def _refuse(self, stream: trio.abc.Stream) -> None:
        self.refused += 1
        held = self._refusal_log.allow()
        if held is not None:
            logger.warning(
                "localnet: refusing connections: %d open (max_connections); %d more refused "
                "since the last report",
                len(self._open),
                held,
            )
        try:
            await send_all_bounded(
                stream, REFUSAL, min(REFUSAL_WRITE_TIMEOUT, self.limits.write_timeout)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, WriteTimeout):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            self._on_change()

    async def serve(
        self,
        stream: trio.abc.Stream,
        *,
        on_request: Callable[[HTTPRequest], Awaitable[HTTPResponse]],
        on_upgrade: UpgradeHandler,
        on_head: Callable[[HTTPRequest], HeadVerdict] | None = None,
    ) -> None:
        """Serve ``stream`` until it ends (TCP_NODELAY on for TCP sockets), then close it
        (``on_head``: see :func:`serve_http`).
        Never raises for a crashed handler (see ``on_error``). Over ``max_connections``: refuse
        it (``503``) and close it."""
        if len(self._open) >= self.limits.max_connections:
            await self._refuse(stream)
            return
        if isinstance(stream, trio.SocketStream):
            try:
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            except OSError:  # pragma: no cover - e.g. a non-TCP socket
                pass
        conn = Connection(trio.CancelScope())
        self._open.add(conn)
        self._on_change()
        try:
            with conn.scope:
                await serve_http(
                    stream,
                    on_request=on_request,
                    on_upgrade=partial(on_upgrade, stream, conn),
                    limits=self.limits,
                    on_timeout=self._timed_out,
                    on_head=on_head,
                )
        except Exception as exc:
            logger.exception("localnet: connection handler failed")
            self._on_error(f"connection: {exc!r}")
        finally:
            self._open.discard(conn)
            self._on_change()
            await trio.aclose_forcefully(stream)

    def cancel_http(self) -> None:
        """Cancel every connection that is not a WebSocket."""
        for conn in list(self._open):
            if not conn.websocket:
                conn.scope.cancel()
