"""The per-job buffer: bounded, coalescing, cancel-safe, and lossless — without a network."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sogni import ChatJobError, ChatStream
from trio_sogni._jobstate import JobSlot, check_buffer_size
from trio_sogni.protocol import (
    ChatCompletionChunk,
    FunctionCallDelta,
    LLMJobCost,
    ToolCallDelta,
    Usage,
)


class Owner:
    def __init__(self) -> None:
        self.released: list[str] = []
        self.orphans: list[str] = []

    async def release(self, slot: JobSlot) -> None:
        self.released.append(slot.job_id)
        await trio.lowlevel.checkpoint()

    def orphaned(self, slot: JobSlot) -> None:
        self.orphans.append(slot.job_id)

    def release_finished(self, slot: JobSlot) -> None:
        self.released.append(slot.job_id)


def chunk(text: str | None = None, **kw: object) -> ChatCompletionChunk:
    return ChatCompletionChunk(job_id="J", content=text, **kw)  # type: ignore[arg-type]


def make(max_buffer: int = 4) -> tuple[JobSlot, ChatStream, Owner]:
    owner = Owner()
    slot = JobSlot("J", "m", max_buffer)
    slot.sent = True
    return slot, ChatStream(slot, owner), owner


async def drain(stream: ChatStream) -> list[ChatCompletionChunk]:
    return [c async for c in stream]


async def test_slow_consumer_gets_coalesced_chunks_and_loses_nothing() -> None:
    slot, stream, _ = make(max_buffer=4)
    pieces = [f"w{i} " for i in range(1000)]
    for piece in pieces:
        slot.push(chunk(piece))
    slot.push(chunk(None, finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=9)))
    slot.complete(None, 1.5, LLMJobCost(cost_in_usd="0.1"), "w1")
    received = await drain(stream)
    assert len(received) == 4  # three as sent, the rest coalesced into the fourth
    assert "".join(c.content or "" for c in received) == "".join(pieces)
    assert received[-1].finish_reason == "stop"
    assert received[-1].usage == Usage(prompt_tokens=1, completion_tokens=9)
    stats = stream.statistics()
    assert stats.buffer_peak == 4
    assert stats.chunks_received == 1001
    assert stats.chunks_coalesced == 1001 - 3
    assert stats.chunks_delivered == 4
    assert stream.content == "".join(pieces)
    result = stream.final_result
    assert result is not None
    assert (result.time_taken, result.worker_name, result.finish_reason) == (1.5, "w1", "stop")


async def test_tool_call_deltas_merge_by_index_in_accumulation_and_coalescing() -> None:
    slot, stream, _ = make(max_buffer=1)
    deltas = [
        ToolCallDelta(index=1, id="b", type="function", function=FunctionCallDelta(name="g")),
        ToolCallDelta(index=0, id="a", type="function", function=FunctionCallDelta(name="f", arguments='{"x"')),
        ToolCallDelta(index=0, function=FunctionCallDelta(arguments=": 1}")),
        ToolCallDelta(index=1, function=FunctionCallDelta(arguments="{}")),
    ]  # fmt: skip
    for delta in deltas:
        slot.push(chunk(tool_calls=[delta]))
    slot.push(chunk(finish_reason="tool_calls"))
    slot.complete(None, 0, None, None)
    calls = stream.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("a", "f", '{"x": 1}'),
        ("b", "g", "{}"),
    ]
    received = await drain(stream)
    assert len(received) == 1  # one buffered slot: everything coalesced into one chunk
    merged = received[0].tool_calls
    assert merged is not None
    assert [(d.index, d.id, d.function and d.function.arguments) for d in merged] == [
        (0, "a", '{"x": 1}'),
        (1, "b", "{}"),
    ]


async def test_chunks_before_a_failure_are_delivered_then_the_error() -> None:
    slot, stream, _ = make()
    slot.push(chunk("a"))
    slot.push(chunk("b"))
    error = ChatJobError("boom", error_type="worker_failed", job_id="J")
    slot.fail(error)
    assert [(await stream.receive()).content, (await stream.receive()).content] == ["a", "b"]
    with pytest.raises(ChatJobError, match="boom"):
        await stream.receive()
    with pytest.raises(ChatJobError):  # and again: a failed stream stays failed
        await stream.receive()
    assert stream.final_result is None
    assert stream.content == "ab"  # kept, not discarded


async def test_receive_waits_and_is_cancel_safe() -> None:
    slot, stream, _ = make()
    with trio.move_on_after(0.01):
        await stream.receive()
    slot.push(chunk("x"))
    assert (await stream.receive()).content == "x"

    async def later() -> None:
        await trio.testing.wait_all_tasks_blocked()
        slot.push(chunk("y"))
        slot.complete(None, None, None, None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert (await stream.receive()).content == "y"
        with pytest.raises(trio.EndOfChannel):
            await stream.receive()


async def test_receive_is_a_cancel_point_and_yields_at_least_every_64_chunks() -> None:
    slot, stream, _ = make(max_buffer=1000)
    for _ in range(200):
        slot.push(chunk("x"))
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await stream.receive()
    assert stream.statistics().buffered == 200  # a cancelled receive took nothing
    for _ in range(3):
        with trio.testing.assert_checkpoints():
            for _ in range(64):
                await stream.receive()
    for _ in range(8):
        await stream.receive()
    with trio.move_on_after(0.01), trio.testing.assert_checkpoints():
        await stream.receive()  # nothing buffered: it waits, which is a full checkpoint


async def test_aclose_releases_once_and_later_receive_is_closed() -> None:
    slot, stream, owner = make()
    slot.push(chunk("x"))
    async with stream:
        pass
    await stream.aclose()
    assert owner.released == ["J"]
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive()
    slot.push(chunk("late"))  # late frames after close are ignored by the buffer
    assert stream.statistics().buffered == 0


async def test_wait_returns_result_without_consuming() -> None:
    slot, stream, _ = make()
    slot.push(chunk("hello"))
    slot.complete(Usage(prompt_tokens=1, completion_tokens=1), 2, None, "w")
    result = await stream.wait()
    assert result.content == "hello"
    assert result.usage.total_tokens == 2
    assert (await stream.receive()).content == "hello"


def test_dropped_unclosed_stream_is_reported_as_orphan() -> None:
    slot, stream, owner = make()
    del stream
    assert owner.orphans == ["J"]
    assert slot.closed


@pytest.mark.parametrize("bad", [0, -1, 1.5, float("inf"), True])
def test_buffer_size_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="max_buffered_chunks"):
        check_buffer_size(bad)
