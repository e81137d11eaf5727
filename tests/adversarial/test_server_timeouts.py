"""Hostile HTTP peers against localnet's server, in virtual time over in-memory connections:
slowloris (a request head trickled byte by byte), a body never finished and idle keep-alive
connections are each cut at their bound; ``max_connections`` refuses one more connection with
``503`` while the open ones are still served; and the accept loop survives ``EMFILE``, backing
off and logging a bounded number of lines.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing
from helpers import local_network

from trio_sogni.localnet import LocalNetwork
from trio_sogni.localnet._server import serve_listeners

IDLE, HEADER, BODY = 30.0, 10.0, 60.0  # the documented defaults
ME = b"GET /v1/account/me HTTP/1.1\r\nhost: localnet\r\n\r\n"


@asynccontextmanager
async def network(**options: object) -> AsyncIterator[LocalNetwork]:
    async with local_network(listen=False, **options) as net:  # type: ignore[arg-type]
        yield net


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await stream.receive_some(65_536):
        data += chunk
    return data


def status_of(data: bytes | bytearray) -> int:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(bytes(data))
    event = conn.next_event()
    assert isinstance(event, h11.Response), event
    return event.status_code


async def test_a_connection_that_sends_nothing_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network() as net:
        stream = net.connect_in_memory()
        start = trio.current_time()
        with trio.fail_after(IDLE + 5):
            assert await read_until_closed(stream) == b""  # closed silently
        assert trio.current_time() - start == pytest.approx(IDLE)
        assert net.statistics().timed_out_connections == 1
        await net.wait_until(lambda: net.statistics().open_connections == 0)


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network() as net:
        stream = net.connect_in_memory()
        await stream.send_all(ME)
        first = await stream.receive_some(65_536)
        assert status_of(first) == 401
        answered = trio.current_time()
        with trio.fail_after(IDLE + 5):
            assert await read_until_closed(stream) == b""
        assert trio.current_time() - answered == pytest.approx(IDLE)


async def test_slowloris_headers_are_cut_at_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network() as net:
        stream = net.connect_in_memory()
        start = trio.current_time()
        closed = trio.Event()
        response = b""

        async def reader() -> None:
            nonlocal response
            response = await read_until_closed(stream)
            closed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            with trio.fail_after(HEADER + 5):
                while not closed.is_set():  # one header byte a second, forever
                    try:
                        await stream.send_all(b"x")
                    except trio.BrokenResourceError:
                        break
                    with trio.move_on_after(1.0):
                        await closed.wait()
        assert trio.current_time() - start == pytest.approx(HEADER, abs=1.0)
        assert status_of(response) == 408


@pytest.mark.deadline(120)
async def test_a_body_never_finished_is_cut_at_body_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network() as net:
        stream = net.connect_in_memory()
        await stream.send_all(
            b'POST /v1/account/nonce HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"wal'
        )
        start = trio.current_time()
        with trio.fail_after(BODY + 5):
            response = await read_until_closed(stream)
        assert trio.current_time() - start == pytest.approx(BODY)
        assert status_of(response) == 408
        assert net.statistics().timed_out_connections == 1


async def test_max_connections_refuses_the_next_one_and_serves_the_open_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(max_connections=3) as net:
        held = [net.connect_in_memory() for _ in range(3)]
        await net.wait_until(lambda: net.statistics().open_connections == 3)
        extra = net.connect_in_memory()
        with trio.fail_after(1):
            refusal = await read_until_closed(extra)
        assert status_of(refusal) == 503
        assert b"retry-after: 1\r\n" in refusal.lower()
        assert net.statistics().refused_connections == 1
        for stream in held:  # the open connections are still served
            await stream.send_all(ME)
            assert status_of(await stream.receive_some(65_536)) == 401
        await held[0].aclose()
        await net.wait_until(lambda: net.statistics().open_connections == 2)
        again = net.connect_in_memory()  # room again
        await again.send_all(ME)
        assert status_of(await again.receive_some(65_536)) == 401
        for stream in [*held[1:], again]:
            await stream.aclose()


class ExhaustedListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose ``accept`` fails with EMFILE ``failures`` times, then hands out one
    in-memory connection and then blocks forever."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[float] = []
        self.client: trio.abc.Stream | None = None
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        if self.client is None:
            self.client, server = trio.testing.memory_stream_pair()
            return server
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


@pytest.mark.deadline(600)
async def test_the_accept_loop_survives_emfile_backs_off_and_logs_rarely(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    failures = 200
    listener = ExhaustedListener(failures)
    served: list[trio.abc.Stream] = []
    accepted = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        served.append(stream)
        accepted.set()
        await stream.aclose()

    caplog.set_level(logging.DEBUG, logger="trio_sogni.localnet")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial_serve, handler, listener, nursery)
        with trio.fail_after(500):
            await accepted.wait()
        nursery.cancel_scope.cancel()
    assert len(served) == 1  # it survived and accepted the next connection
    assert listener.closed
    gaps = [b - a for a, b in zip(listener.attempts, listener.attempts[1:], strict=False)]
    # Exponential backoff from 0.1 s, capped at 2 s: 0.1, 0.2, 0.4, 0.8, 1.6, 2, 2, ...
    assert gaps[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    assert max(gaps[:failures]) == pytest.approx(2.0)
    elapsed = listener.attempts[failures] - listener.attempts[0]
    assert elapsed == pytest.approx(3.1 + 2.0 * (failures - 5), abs=0.01)
    # One line per minute at most, no tracebacks.
    records = [r for r in caplog.records if r.name == "trio_sogni.localnet"]
    assert 1 <= len(records) <= elapsed / 60 + 1
    assert all(r.exc_info is None for r in records)
    assert "EMFILE" in records[0].getMessage()


async def partial_serve(
    handler: object, listener: ExhaustedListener, nursery: trio.Nursery
) -> None:
    await serve_listeners(handler, [listener], handler_nursery=nursery)  # type: ignore[arg-type]


@pytest.mark.deadline(120)
async def test_a_flood_of_half_open_connections_is_capped_then_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1,100 connections that never send a byte (more than a 1,024 file-descriptor limit): at
    most ``max_connections`` (512) are held, the rest are refused at once, and all are gone
    after ``idle_timeout``; then the server serves again."""
    async with network() as net:
        flood = [net.connect_in_memory() for _ in range(1_100)]
        await net.wait_until(
            lambda: (
                net.statistics().open_connections + net.statistics().refused_connections == 1_100
            )
        )
        assert net.statistics().open_connections == 512
        assert net.statistics().refused_connections == 588
        start = trio.current_time()
        with trio.fail_after(IDLE + 5):
            await net.wait_until(lambda: net.statistics().open_connections == 0)
        assert trio.current_time() - start == pytest.approx(IDLE)
        assert net.statistics().timed_out_connections == 512
        fresh = net.connect_in_memory()
        await fresh.send_all(ME)
        assert status_of(await fresh.receive_some(65_536)) == 401
        for stream in [*flood, fresh]:
            await trio.aclose_forcefully(stream)
