"""The fast engine's send path: group commit, ordering, cancellation and write failures.

Driven over in-memory streams with Trio's testing tools; the peer side decodes what was written
with wsproto (acting as the server) as an oracle.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from trio_sogni._transport._engines import FastConnection, SendTimedOut, SocketClosed


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts ``send_all`` calls; ``block`` makes writes hang (a stuck peer)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0
        self.block = False
        self.broken = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("peer reset")
        if self.block:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def server_decoder() -> WSConnection:
    """A wsproto server past the handshake, ready to decode client frames."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    next(server.events())
    server.send(AcceptConnection())
    return server


async def read_messages(stream: trio.abc.Stream, count: int) -> list[str]:
    server = server_decoder()
    out: list[str] = []
    while len(out) < count:
        data = await stream.receive_some()
        assert data
        server.receive_data(bytes(data))
        for event in server.events():
            assert isinstance(event, TextMessage)
            out.append(event.data)
    return out


async def test_concurrent_sends_are_written_in_order_with_few_writes() -> None:
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    conn = FastConnection(counting, 1 << 20, b"", send_timeout=5)
    called: list[str] = []

    async def send(text: str) -> None:
        called.append(text)  # no checkpoint before the frame is queued: this is queue order
        await conn.send_text(text)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(send, f"message {i}")
                if i % 50 == 49:  # let a write start mid-burst: later messages queue behind it
                    await trio.lowlevel.checkpoint()
            got = await read_messages(right, 200)
    assert got == called
    assert sorted(got) == sorted(f"message {i}" for i in range(200))
    assert counting.writes < 20  # one write per burst, not one per message


async def test_a_cancelled_waiter_still_has_its_message_written_whole() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    conn = FastConnection(left, 1 << 20, b"", send_timeout=5)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_text, "first")  # becomes the writer, blocks in lockstep
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await conn.send_text("second")  # queued, then cancelled while waiting
            assert scope.cancelled_caught
            got = await read_messages(right, 2)
    assert got == ["first", "second"]


async def test_a_stuck_write_times_out_and_fails_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, _right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    counting.block = True
    conn = FastConnection(counting, 1 << 20, b"", send_timeout=7)
    errors: list[BaseException] = []

    async def send(text: str) -> None:
        try:
            await conn.send_text(text)
        except SocketClosed as exc:
            errors.append(exc)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(send, f"m{i}")
    assert trio.current_time() - start == pytest.approx(7)
    assert len(errors) == 5
    assert all(isinstance(e, SocketClosed) for e in errors)
    assert any(isinstance(e, SendTimedOut) for e in errors)
    with pytest.raises(SocketClosed):
        await conn.send_text("after")


async def test_a_broken_stream_fails_the_writer_and_waiters() -> None:
    left, _right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    counting.broken = True
    conn = FastConnection(counting, 1 << 20, b"", send_timeout=5)
    errors: list[SocketClosed] = []

    async def send(text: str) -> None:
        try:
            await conn.send_text(text)
        except SocketClosed as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(send, f"m{i}")
    assert [e.code for e in errors] == [1006, 1006, 1006]
    assert counting.writes == 1
