"""The Trio job driver around the sans-IO router: what a cancelled send leaves behind."""

from __future__ import annotations

import trio
import trio.testing

from trio_sogni._driver import JobDriver
from trio_sogni._events import EventHub
from trio_sogni._router import JobRouter
from trio_sogni.protocol import (
    AbortJob,
    ChatMessage,
    LLMJobRequest,
    decode_client_message,
)

JOB = "0D0D0D0D-0000-4000-8000-000000000001"


class SlowFlush:
    """A test double of the socket: ``send`` writes the frame, then blocks (as a write whose
    last bytes wait for the peer), so a cancel lands after the server could have the request."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send(self, frame: bytes) -> None:
        self.frames.append(frame)
        await trio.sleep_forever()

    async def send_if_connected(self, frame: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        self.frames.append(frame)
        return True


async def test_a_send_cancelled_after_its_bytes_left_aborts_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lot = trio.lowlevel.ParkingLot()
    router = JobRouter(max_buffered_chunks=4, events=EventHub(), wake_aborts=lot.unpark_all)
    sender = SlowFlush()
    driver = JobDriver(router, sender, lot, abort_grace=1.0)
    request = LLMJobRequest(job_id=JOB, model="m", messages=[ChatMessage(role="user", content="x")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.abort_sender)
        with trio.move_on_after(1):
            await driver.start_job(request)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    sent = [decode_client_message(frame) for frame in sender.frames]
    assert sent == [request, AbortJob(job_id=JOB)]
    assert router.statistics().live_jobs == 0
