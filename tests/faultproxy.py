"""A fault-injecting proxy for tests, in the spirit of Toxiproxy.

`FaultProxy` sits between a client and a server byte stream and forwards both directions through
the faults in `FaultProxy.faults`, which tests change at any time (they are read per chunk):

* ``latency`` + ``jitter``: each chunk is delivered that long after it was read (order kept);
* ``bandwidth``: bytes per second per direction;
* ``reset_after``: the connection is cut (no close handshake: the peers see a broken stream)
  once this many bytes crossed it;
* ``blackhole``: everything is swallowed while the connection stays open (a half-open peer);
* ``slow_close``: an end of stream is passed on this much later.

`FaultProxy.reset_all` cuts every live connection at once. The client side is either an
in-memory stream (`FaultProxy.open_stream`, an ``open_stream`` for `trio_sogni.open_sogni_client`;
works under ``MockClock``) or a TCP connection (`FaultProxy.handle`, for ``trio.serve_tcp``);
the server side is whatever ``upstream()`` opens (e.g. localnet's ``connect_in_memory``).

Buffers are bounded: a direction holds at most 256 chunks in its delay line, after which it stops
reading (backpressure, as a real network would).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

__all__ = ["FaultProxy", "Faults", "ProxyStatistics"]

_DELAY_LINE = 256


@dataclass(frozen=True)
class Faults:
    """The faults applied to every connection (see the module docstring)."""

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    reset_after: int | None = None
    blackhole: bool = False
    slow_close: float = 0.0


@dataclass
class ProxyStatistics:
    """What the proxy did."""

    connections: int = 0
    resets: int = 0
    bytes_forwarded: int = 0
    bytes_swallowed: int = 0


@dataclass(eq=False)
class _Link:
    client: trio.abc.Stream
    server: trio.abc.Stream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    crossed: int = 0
    reset: bool = False


class FaultProxy:
    """Forwards byte streams through changeable faults. Its tasks run in ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        upstream: Callable[[], Awaitable[trio.abc.Stream]],
        *,
        seed: int = 0,
    ) -> None:
        self._nursery = nursery
        self._upstream = upstream
        self._rng = random.Random(seed)
        self._links: set[_Link] = set()
        self.faults = Faults()
        self.statistics = ProxyStatistics()
        self._link_ended = trio.Event()

    @property
    def live_connections(self) -> int:
        """Connections currently forwarded."""
        return len(self._links)

    async def wait_idle(self) -> None:
        """Block until no connection is forwarded (always a checkpoint)."""
        await trio.lowlevel.checkpoint()
        while self._links:
            await self._link_ended.wait()

    async def open_stream(self, host: str, port: int, ssl_context: object) -> trio.abc.Stream:
        """An ``open_stream`` for the client: a new in-memory connection through the proxy."""
        client_end, proxy_end = trio.testing.memory_stream_pair()
        server = await self._upstream()
        self._nursery.start_soon(self._run, proxy_end, server)
        return client_end

    async def handle(self, client: trio.abc.Stream) -> None:
        """Serve one TCP client (``trio.serve_tcp(proxy.handle, port)``)."""
        await self._run(client, await self._upstream())

    def reset_all(self) -> int:
        """Cut every live connection now; returns how many were cut."""
        links = list(self._links)
        for link in links:
            self._cut(link)
        return len(links)

    def _cut(self, link: _Link) -> None:
        if not link.reset:
            link.reset = True
            self.statistics.resets += 1
            link.scope.cancel()

    async def _run(self, client: trio.abc.Stream, server: trio.abc.Stream) -> None:
        link = _Link(client, server)
        self._links.add(link)
        self.statistics.connections += 1
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, link, client, server)
                    nursery.start_soon(self._direction, link, server, client)
        finally:
            self._links.discard(link)
            self._link_ended.set()
            self._link_ended = trio.Event()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(client)
                await trio.aclose_forcefully(server)

    async def _direction(self, link: _Link, src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](_DELAY_LINE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, link, receive, dst)
            async with send:
                last_due = 0.0
                while True:
                    try:
                        data = bytes(await src.receive_some(65536))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        break
                    faults = self.faults
                    link.crossed += len(data)
                    if faults.reset_after is not None and link.crossed >= faults.reset_after:
                        self._cut(link)
                        return
                    if faults.blackhole:
                        self.statistics.bytes_swallowed += len(data)
                        continue
                    delay = faults.latency + self._rng.uniform(0.0, faults.jitter)
                    last_due = max(trio.current_time() + delay, last_due)
                    await send.send((last_due, data))
        # The source ended and everything before the end was delivered: pass the end on.
        if self.faults.slow_close:
            await trio.sleep(self.faults.slow_close)
        link.scope.cancel()

    async def _deliver(
        self,
        link: _Link,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.abc.Stream,
    ) -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                bandwidth = self.faults.bandwidth
                if bandwidth:
                    await trio.sleep(len(data) / bandwidth)
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._cut(link)
                    return
                self.statistics.bytes_forwarded += len(data)
