"""Per-frame costs of the client's receive path, in-process (no sockets): what each stage costs.

    python benchmarks/micro.py

Stages: the fast engine's frame parser (per frame, 1,000 frames per feed), the msgspec decode of
one ``jobTokens`` envelope + payload, the router's ``feed`` (decode + route + accumulate + buffer),
and ``async for`` over a `ChatStream` draining a buffer. Medians of 5 runs, in µs per frame.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import trio

from trio_sogni._driver import JobDriver
from trio_sogni._events import EventHub
from trio_sogni._jobstate import JobSlot
from trio_sogni._router import JobRouter
from trio_sogni._stream import ChatStream
from trio_sogni._transport import _wire
from trio_sogni.protocol import ChatCompletionChunk, decode_server_message, encode_server_message

N = 200_000
JOB_ID = "9F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43"
FRAME = encode_server_message(ChatCompletionChunk(job_id=JOB_ID, content="tok "))


class _NoSocket:
    """The drain never closes its stream early, so nothing is ever sent."""

    async def send(self, frame: bytes) -> None:
        raise AssertionError("nothing is sent")

    async def send_if_connected(self, frame: bytes) -> bool:
        raise AssertionError("nothing is sent")


def timed(fn: Callable[[], float | None]) -> float:
    """Median µs per frame; ``fn`` may return its own measured seconds (else it is timed whole)."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        own = fn()
        runs.append((own if own is not None else time.perf_counter() - start) / N * 1e6)
    return statistics.median(runs)


def main() -> None:
    wire = _wire.encode_frame(_wire.OP_BINARY, FRAME, mask=False) * 1000

    def parse() -> None:
        parser = _wire.FrameParser(1 << 20)
        for _ in range(N // 1000):
            parser.feed(wire)

    def decode() -> None:
        for _ in range(N):
            decode_server_message(FRAME)

    router = JobRouter(max_buffered_chunks=N + 1, events=EventHub())

    def feed() -> None:
        slot = router.register(JOB_ID, "m")
        batch = [FRAME] * 400  # about one socket read
        for _ in range(N // 400):
            router.feed_batch(batch)
        router.unsent(slot)  # deregister: the next run registers the id again

    def receive() -> float:
        slot = JobSlot(JOB_ID, "m", N + 1)
        slot.sent = True
        for _ in range(N):
            slot.push(ChatCompletionChunk(job_id=JOB_ID, content="tok "))

        async def drain() -> float:
            stream = ChatStream(
                slot, JobDriver(router, _NoSocket(), trio.lowlevel.ParkingLot(), abort_grace=1)
            )
            slot.done = True  # ends the iteration once the buffer is drained
            start = time.perf_counter()
            async for _ in stream:
                pass
            elapsed = time.perf_counter() - start
            slot.closed = True
            return elapsed

        return trio.run(drain)

    print(f"frame: {len(FRAME)} bytes of envelope, {len(wire) // 1000} bytes on the wire")
    for name, fn in [("parse", parse), ("decode", decode), ("feed", feed), ("async for", receive)]:
        print(f"{name:8} {timed(fn):6.2f} µs/frame")


if __name__ == "__main__":
    main()
