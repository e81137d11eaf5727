"""The open connections of a server: each accepted stream served as HTTP/1.1 (and possibly
upgraded to a WebSocket), tracked until it ends.

:class:`Connections` serves one stream per :meth:`Connections.serve` call and remembers it while
it lasts, so a shutdown can cancel the plain HTTP connections (:meth:`Connections.cancel_http`)
while WebSockets get a close handshake from their owner, and so the owner can wait for all of
them to go. It reports each change and each crashed handler through callbacks.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import trio

from ._http import HTTPRequest, HTTPResponse, serve_http

__all__ = ["Connection", "Connections", "UpgradeHandler"]

logger = logging.getLogger("trio_sogni.localnet")


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
        max_body_size: int,
    ) -> None:
        self._open: set[Connection] = set()
        self._on_change = on_change
        self._on_error = on_error
        self._max_body_size = max_body_size

    def __len__(self) -> int:
        return len(self._open)

    async def serve(
        self,
        stream: trio.abc.Stream,
        *,
        on_request: Callable[[HTTPRequest], Awaitable[HTTPResponse]],
        on_upgrade: UpgradeHandler,
    ) -> None:
        """Serve ``stream`` until it ends (TCP_NODELAY on for TCP sockets), then close it.
        Never raises for a crashed handler (see ``on_error``)."""
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
                    max_body_size=self._max_body_size,
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
