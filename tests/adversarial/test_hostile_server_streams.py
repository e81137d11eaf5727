"""Hostile servers on the streaming paths: the run event stream (reconnect storms, endless SSE
frames) and the WebSocket frame parser (one huge frame in many reads).

Each test bounds what a server can make the client spend: requests per virtual minute, bytes
scanned per byte received, CPU time growing linearly with a frame's size.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio
import trio.testing

from trio_sogni._errors import ProtocolError, TransportError
from trio_sogni._runs import ChatRuns, RunEventStream
from trio_sogni._transport import RestClient, _wire
from trio_sogni._transport._sse import SSEParser

MiB = 1024 * 1024

# --- helpers --------------------------------------------------------------------------------------


def runs_for(handler: Callable[[httpx.Request], httpx.Response]) -> ChatRuns:
    async def headers() -> dict[str, str]:
        return {"api-key": "k"}

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ChatRuns(
        RestClient("http://rest.test", "http://socket.test", headers, http), app_source=None
    )


def event(seq: int, kind: str = "message_delta") -> bytes:
    body = {"sequence": seq, "type": kind, "payload": {"n": seq}}
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


class Body:
    """A response body: ``parts``, then (optionally) ``filler`` until ``cap`` bytes were sent
    (then the test fails). Not an async generator (httpx never closes a body it did not
    exhaust)."""

    def __init__(self, *parts: bytes, filler: bytes | None = None, cap: int = 64 * MiB) -> None:
        self._parts = list(parts)
        self._filler = filler
        self._cap = cap
        self.sent = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._parts:
            part = self._parts.pop(0)
        elif self._filler is not None:
            part = self._filler
        else:
            raise StopAsyncIteration
        self.sent += len(part)
        assert self.sent <= self._cap, "the client kept reading past any sane limit"
        return part


async def drain(stream: RunEventStream) -> list[int]:
    async with stream as events:
        return [e.sequence async for e in events]


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """The least CPU time of ``repeat`` calls: robust to a busy, shared machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


# --- the run event stream: no reconnect storm -----------------------------------------------------

UNPRODUCTIVE = {
    "an empty 200": lambda: httpx.Response(200, content=b""),
    "heartbeats only": lambda: httpx.Response(200, content=Body(b": ping\n\n", b": ping\n\n")),
    "an old event only": lambda: httpx.Response(200, content=Body(event(3))),
    "garbage only": lambda: httpx.Response(200, content=Body(b"data: {nope\n\n")),
    "503 with Retry-After: 0": lambda: httpx.Response(
        503, headers={"Retry-After": "0"}, json={"status": "error", "message": "busy"}
    ),
}


@pytest.mark.deadline(300)  # virtual seconds (autojump)
@pytest.mark.parametrize("answer", list(UNPRODUCTIVE), ids=list(UNPRODUCTIVE))
async def test_an_unproductive_server_gets_backoff_then_a_transport_error(
    answer: str, autojump_clock: trio.testing.MockClock
) -> None:
    """An answer that delivers no new event is a failed attempt: jittered exponential backoff
    (0.25 s doubling to 10 s), and `TransportError` once ``reconnect_timeout`` has passed."""
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        assert len(times) < 200, "reconnecting in a busy loop"
        assert request.headers["last-event-id"] == "5"
        return UNPRODUCTIVE[answer]()

    start = trio.current_time()
    with pytest.raises(TransportError, match="could not be reopened for 120 s"):
        await drain(runs_for(handler).stream_events("r", last_event_id=5, reconnect_timeout=120))
    assert 120 <= trio.current_time() - start <= 121
    assert len([t for t in times if t - start <= 60]) <= 20  # was thousands (no wait at all)
    assert len(times) <= 30
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for i, gap in enumerate(gaps[:-1]):  # the last wait is cut short by the deadline
        base = min(0.25 * 2**i, 10.0)
        assert 0.5 * base - 1e-9 <= gap <= 1.5 * base + 1e-9, (i, gap)


@pytest.mark.deadline(300)
async def test_progress_resets_the_backoff_and_the_reconnect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that delivers one new event per connection, among empty answers, is slow but
    honest: each event resets the backoff and the timeout, and the run completes."""
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        n = len(times)
        if n % 4:  # three empty answers, then one new event
            return httpx.Response(200, content=b"")
        seq = n // 4 - 1
        return httpx.Response(200, content=Body(event(seq, "run_completed" if seq == 9 else "x")))

    assert await drain(runs_for(handler).stream_events("r", reconnect_timeout=5)) == list(range(10))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.5 * 1.0  # never beyond the third step (0.25, 0.5, 1 s)
    assert gaps[3] == 0  # after an event, the next attempt is immediate


@pytest.mark.deadline(300)
async def test_a_connection_that_stays_open_counts_as_healthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A run waiting for its user sends only heartbeats; a proxy may cut the stream every 30 s.
    That is not a failed attempt: no backoff builds up, and no `TransportError`."""
    times: list[float] = []

    class Slow(Body):
        async def __anext__(self) -> bytes:
            await trio.sleep(15)
            return await super().__anext__()

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 6:
            return httpx.Response(200, content=Body(event(0, "run_completed")))
        return httpx.Response(200, content=Slow(b": ping\n\n"))

    assert await drain(runs_for(handler).stream_events("r", reconnect_timeout=20)) == [0]
    assert len(times) == 6


# --- SSE: an endless frame costs linear time and is refused past the limit ------------------------


def _feed_endless_frame(size: int) -> SSEParser:
    parser = SSEParser(max_frame=16 * MiB)
    assert parser.feed(b"data: ") == []
    chunk = b"x" * 1024
    for _ in range(size // 1024):
        assert parser.feed(chunk) == []
    return parser


def test_an_sse_frame_without_an_end_is_scanned_once() -> None:
    """Each byte is searched for a frame boundary once (plus three at each seam), however the
    frame is split: 8 MiB in 1 KiB reads scans about 8 MiB (the quadratic parser: ~32 GiB)."""
    size = 8 * MiB
    parser = _feed_endless_frame(size)
    assert size <= parser.scanned <= size + 6 + 3 * (size // 1024)


def test_an_sse_frame_without_an_end_costs_linear_cpu() -> None:
    small = best_time(lambda: _feed_endless_frame(1 * MiB))
    large = best_time(lambda: _feed_endless_frame(8 * MiB))
    assert large / max(small, 1e-4) < 16  # linear: ~8; quadratic: ~64


def test_an_sse_frame_past_the_limit_is_a_protocol_error() -> None:
    parser = SSEParser(max_frame=1 * MiB)
    parser.feed(b"event: x\ndata: ")
    for _ in range(1023):  # 15 + 1023 KiB: just under the limit
        assert parser.feed(b"y" * 1024) == []
    with pytest.raises(ProtocolError, match="longer than 1048576 bytes"):
        parser.feed(b"y" * 1024)
    assert parser.scanned <= 1 * MiB + 4 * 1024 * 4


async def test_a_run_stream_with_an_endless_frame_raises_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The event delivered before the endless frame is delivered; then `ProtocolError`, after
    reading a little over the 16 MiB limit: no reconnect, no unbounded buffer."""
    bodies: list[Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert not bodies, "reconnected after an oversize frame"
        bodies.append(Body(event(0, "run_created"), b"data: ", filler=b"z" * 65536))
        return httpx.Response(200, content=bodies[0])

    async with runs_for(handler).stream_events("r") as events:
        assert (await events.__anext__()).sequence == 0
        with pytest.raises(ProtocolError, match="longer than"):
            await events.__anext__()
    assert 16 * MiB < bodies[0].sent <= 16 * MiB + 2 * 65536


# --- WebSocket: one huge frame in many reads ------------------------------------------------------


def _feed_one_frame(size: int, read: int = 64 * 1024) -> None:
    wire = _wire.encode_frame(_wire.OP_BINARY, bytes(size), mask=False)
    parser = _wire.FrameParser(max_message_size=size)
    events: list[tuple[int, bytes | str]] = []
    for i in range(0, len(wire), read):
        events += parser.feed(wire[i : i + read])
    assert len(events) == 1
    assert len(events[0][1]) == size


@pytest.mark.slow
def test_one_huge_websocket_frame_in_many_reads_costs_linear_cpu() -> None:
    """64 MiB in 64 KiB reads: the parser used to concatenate its buffer with every read
    (~5.75 s); it now collects the reads and joins them once."""
    small = best_time(lambda: _feed_one_frame(8 * MiB))
    large = best_time(lambda: _feed_one_frame(64 * MiB))
    assert large / max(small, 1e-4) < 24  # linear: ~8; quadratic: ~64


def test_a_large_frame_split_mid_header_and_followed_by_small_ones() -> None:
    """The collecting path hands back the whole frame and the frames after it, in order, for
    any split (including splits inside the header)."""
    big = bytes(range(256)) * 1024
    wire = (
        _wire.encode_frame(_wire.OP_TEXT, b"first", mask=False)
        + _wire.encode_frame(_wire.OP_BINARY, big, mask=False)
        + _wire.encode_frame(_wire.OP_PING, b"p", mask=False)
        + _wire.encode_frame(_wire.OP_TEXT, "é".encode() * 3, mask=False)
    )
    expected = [(_wire.OP_TEXT, "first"), (_wire.OP_BINARY, big), (_wire.OP_PING, b"p")]
    expected.append((_wire.OP_TEXT, "ééé"))
    for read in (1, 3, 7, 1000, 65536, len(wire)):
        if read == 1:
            reads = [wire[:3], wire[3:9], wire[9:10], wire[10:15], wire[15:]]  # inside headers
        else:
            reads = [wire[i : i + read] for i in range(0, len(wire), read)]
        parser = _wire.FrameParser(max_message_size=1 << 20)
        got: list[tuple[int, bytes | str]] = []
        for data in reads:
            got += parser.feed(bytearray(data))
        assert got == expected, read
