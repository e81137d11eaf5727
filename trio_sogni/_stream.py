"""Per-job state and the public `ChatStream`.

The receive loop owns a `_JobSlot` for each live job and feeds it synchronously; it never awaits a
consumer. The consumer reads through `ChatStream`, a `trio.abc.ReceiveChannel`.

Buffering policy (house style, decision 3): each job buffers at most ``max_buffer`` chunks. When the
buffer is full, later chunks are *coalesced* into one pending chunk at the tail (content
concatenated, tool-call deltas merged by index, the latest role / finish reason / usage kept), which
the consumer receives next. Nothing is dropped, the receive loop never blocks, and a job's memory is
bounded by its own output. `ChatStream.statistics` reports the peak and the number coalesced.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Protocol, final

import msgspec
import trio
from typing_extensions import override

from ._tools import ToolRound
from .protocol import (
    ChatCompletionChunk,
    FunctionCall,
    FunctionCallDelta,
    LLMJobCost,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["ChatCompletionResult", "ChatStream", "ChatStreamStatistics"]

_EMPTY_USAGE: Final = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
YIELD_EVERY: Final = 64
"""`ChatStream.receive` yields to the scheduler at least once per this many chunks."""


class ChatCompletionResult(msgspec.Struct, kw_only=True, frozen=True):
    """The final result of a chat job (``stream=False``, or `ChatStream.final_result`).

    ``time_taken`` is in seconds as reported by the server. ``tool_history`` is set when the
    automatic tool loop ran at least one round.
    """

    job_id: str
    content: str
    role: str = "assistant"
    finish_reason: str = "stop"
    usage: Usage = _EMPTY_USAGE
    time_taken: float = 0.0
    worker_name: str | None = None
    cost: LLMJobCost | None = None
    tool_calls: list[ToolCall] | None = None
    tool_history: list[ToolRound] | None = None


class ChatStreamStatistics(msgspec.Struct, kw_only=True, frozen=True):
    """A snapshot of one stream's buffering (see `ChatStream.statistics`)."""

    max_buffer: int
    buffered: int
    buffer_peak: int
    chunks_received: int
    chunks_delivered: int
    chunks_coalesced: int


class _ToolCallMerger:
    """Merges tool-call deltas by ``index``: id / type / name replaced, arguments appended."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[str | list[str] | None]] = {}

    def add(self, deltas: list[ToolCallDelta]) -> None:
        calls = self._calls
        for delta in deltas:
            entry = calls.get(delta.index)
            if entry is None:
                entry = calls[delta.index] = [None, None, None, []]
            if delta.id:
                entry[0] = delta.id
            if delta.type:
                entry[1] = delta.type
            function = delta.function
            if function is not None:
                if function.name:
                    entry[2] = function.name
                if function.arguments:
                    args = entry[3]
                    assert isinstance(args, list)
                    args.append(function.arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def _items(self) -> list[tuple[int, str, str, str, str]]:
        out: list[tuple[int, str, str, str, str]] = []
        for index in sorted(self._calls):
            call_id, call_type, name, args = self._calls[index]
            assert isinstance(args, list)
            joined = "".join(args)
            args[:] = [joined] if joined else []
            out.append(
                (index, str(call_id or ""), str(call_type or "function"), str(name or ""), joined)
            )
        return out

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=call_id, function=FunctionCall(name=name, arguments=args))
            for _, call_id, _, name, args in self._items()
        ]

    def deltas(self) -> list[ToolCallDelta]:
        return [
            ToolCallDelta(
                index=index,
                id=call_id or None,
                type=call_type,
                function=FunctionCallDelta(name=name or None, arguments=args),
            )
            for index, call_id, call_type, name, args in self._items()
        ]


class _Accumulator:
    """The running state two places keep from chunks: role, finish reason, usage, tool calls."""

    __slots__ = ()
    role: str | None
    finish_reason: str | None
    usage: Usage | None
    tools: _ToolCallMerger | None

    def _note(self, chunk: ChatCompletionChunk) -> None:
        """The rarer fields of a chunk: role, finish reason, usage, tool-call deltas."""
        if chunk.role:
            self.role = chunk.role
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.tool_calls:
            if self.tools is None:
                self.tools = _ToolCallMerger()
            self.tools.add(chunk.tool_calls)


class _Coalesced(_Accumulator):
    """Chunks merged while the consumer was behind; materialised when the consumer reaches it."""

    __slots__ = ("count", "finish_reason", "job_id", "parts", "role", "tools", "usage")

    def __init__(self, first: ChatCompletionChunk) -> None:
        self.job_id = first.job_id
        self.parts: list[str] = []
        self.role: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.tools: _ToolCallMerger | None = None
        self.count = 0
        self.add(first)

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.count += 1
        if chunk.content:
            self.parts.append(chunk.content)
        if chunk.role or chunk.finish_reason or chunk.usage is not None or chunk.tool_calls:
            self._note(chunk)

    def build(self) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            job_id=self.job_id,
            content="".join(self.parts) if self.parts else None,
            role=self.role,
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=self.tools.deltas() if self.tools else None,
        )


class _JobSlot(_Accumulator):
    """Everything the client holds for one job. Fed synchronously by the receive loop."""

    __slots__ = (
        "buffer",
        "buffer_peak",
        "closed",
        "coalesced",
        "cost",
        "delivered",
        "done",
        "done_lot",
        "error",
        "finish_reason",
        "job_id",
        "lot",
        "max_buffer",
        "model",
        "parked",
        "parts",
        "received",
        "role",
        "sent",
        "time_taken",
        "tools",
        "usage",
        "worker_name",
    )

    def __init__(self, job_id: str, model: str, max_buffer: int) -> None:
        self.job_id = job_id
        self.model = model
        self.max_buffer = max_buffer
        self.buffer: deque[ChatCompletionChunk | _Coalesced] = deque()
        # Parking lots are made on first use: most jobs never need the second one, and idle
        # jobs held by the thousand should cost as little memory as possible.
        self.lot: trio.lowlevel.ParkingLot | None = None
        """Consumers waiting for a chunk."""
        self.done_lot: trio.lowlevel.ParkingLot | None = None
        """Tasks in `ChatStream.wait`."""
        self.parts: list[str] = []
        self.role: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.tools: _ToolCallMerger | None = None
        self.worker_name: str | None = None
        self.cost: LLMJobCost | None = None
        self.time_taken = 0.0
        self.done = False
        self.error: BaseException | None = None
        self.closed = False
        self.sent = False
        self.parked = False
        """A hint for `push`: set by a consumer before it parks, cleared when woken. It may be
        left set by a consumer cancelled while parked (then one wake-up is a no-op); it is never
        clear while a consumer is parked."""
        self.received = 0
        self.delivered = 0
        self.coalesced = 0
        self.buffer_peak = 0

    # --- fed by the receive loop (synchronous, never blocks) --------------------------------------

    def push(self, chunk: ChatCompletionChunk) -> None:
        if self.done:
            return
        self.received += 1
        content = chunk.content
        if content:
            self.parts.append(content)
        if chunk.role or chunk.finish_reason or chunk.usage is not None or chunk.tool_calls:
            self._note(chunk)
        if self.closed:
            return
        buffer = self.buffer
        size = len(buffer)
        if size < self.max_buffer:
            buffer.append(chunk)
            if size >= self.buffer_peak:
                self.buffer_peak = size + 1
        else:
            tail = buffer[-1]
            if isinstance(tail, _Coalesced):
                tail.add(chunk)
            else:
                merged = _Coalesced(tail)
                merged.add(chunk)
                buffer[-1] = merged
                self.coalesced += 1
            self.coalesced += 1
        if self.parked:
            self.parked = False
            assert self.lot is not None
            self.lot.unpark_all()

    def set_worker(self, worker_name: str | None) -> None:
        if worker_name:
            self.worker_name = worker_name

    def complete(
        self,
        usage: Usage | None,
        time_taken: float | None,
        cost: LLMJobCost | None,
        worker_name: str | None,
    ) -> None:
        if self.done:
            return
        if usage is not None:
            self.usage = usage
        self.time_taken = float(time_taken or 0.0)
        self.cost = cost
        self.set_worker(worker_name)
        self._finish()

    def fail(self, error: BaseException) -> None:
        if self.done:
            return
        self.error = error
        self._finish()

    def _finish(self) -> None:
        self.done = True
        if self.done_lot is not None:
            self.done_lot.unpark_all()
        if self.parked:
            self.parked = False
            assert self.lot is not None
            self.lot.unpark_all()

    # --- derived state ----------------------------------------------------------------------------

    def content(self) -> str:
        parts = self.parts
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def result(self) -> ChatCompletionResult:
        return ChatCompletionResult(
            job_id=self.job_id,
            content=self.content(),
            role=self.role or "assistant",
            finish_reason=self.finish_reason or "stop",
            usage=self.usage or _EMPTY_USAGE,
            time_taken=self.time_taken,
            worker_name=self.worker_name,
            cost=self.cost,
            tool_calls=self.tools.tool_calls() if self.tools else None,
        )


class _StreamOwner(Protocol):
    """What a `ChatStream` needs from the chat layer that created it."""

    async def release(self, slot: _JobSlot) -> None:
        """Deregister the job and, if it is still running, abort it on the server."""
        ...

    def orphaned(self, slot: _JobSlot) -> None:
        """A stream was garbage-collected unclosed: deregister and abort without awaiting."""
        ...


@final
class ChatStream(trio.abc.ReceiveChannel[ChatCompletionChunk]):
    """The chunks of one streaming chat job, and its accumulated state.

    Use it as an async context manager and iterate it::

        async with await sogni.chat.completions.create(model=m, messages=msgs, stream=True) as s:
            async for chunk in s:
                print(chunk.content or "", end="")
        print(s.final_result)

    * **Iteration** yields `ChatCompletionChunk` s in arrival order and ends after the job's
      ``llmJobResult``. If the job fails, every chunk that arrived before the failure is still
      delivered, then `receive` raises the error (`ChatJobError`, `ConnectionLost`-caused
      ``transport_lost`` job errors, `ProtocolError`, `ClientClosedError`).
    * **Leaving early** — ``break``, an exception, a cancel scope, Ctrl-C — closes the stream when
      the ``async with`` block exits: the job is aborted on the server (a shielded send bounded by
      the client's ``abort_grace``) and all local state for it is freed. A stream that is dropped
      without being closed is aborted on a best-effort basis when it is garbage-collected.
    * **Buffering** is bounded; a slow consumer gets coalesced chunks (see `statistics`), never a
      stalled socket and never lost text.
    * **Accumulation** happens as frames arrive, so `content`, `tool_calls` etc. are current even if
      nobody iterates.

    `receive` is always a cancellation point and is cancel-safe (no chunk is lost if it is
    cancelled). It yields to the scheduler whenever it has to wait for data, and otherwise at least
    once every 64 chunks: a consumer draining a full buffer does not pay a reschedule per chunk,
    yet cannot starve other tasks for longer than that.
    """

    def __init__(self, slot: _JobSlot, owner: _StreamOwner) -> None:
        self._slot = slot
        self._owner = owner

    @override
    def __repr__(self) -> str:
        slot = self._slot
        state = "failed" if slot.error else "done" if slot.done else "live"
        return f"<ChatStream job_id={slot.job_id!r} model={slot.model!r} {state}>"

    # --- ReceiveChannel -----------------------------------------------------------------------

    @override
    async def receive(self) -> ChatCompletionChunk:
        """Return the next chunk, waiting for it if needed.

        Raises:
            trio.EndOfChannel: the job completed and every chunk has been received.
            trio.ClosedResourceError: this stream was closed.
            SogniError: the job failed (after every chunk that arrived before the failure).
        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    @override
    async def __anext__(self) -> ChatCompletionChunk:
        """`receive` for ``async for`` (it ends the loop instead of raising `trio.EndOfChannel`).

        This is the hot path: a cancel point on every call, a schedule point only when it waits
        and on every 64th chunk it delivers.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        slot = self._slot
        while True:
            if slot.closed:
                raise trio.ClosedResourceError("this ChatStream was closed")
            if slot.buffer:
                item = slot.buffer.popleft()
                delivered = slot.delivered = slot.delivered + 1
                chunk = item.build() if isinstance(item, _Coalesced) else item
                if not delivered % YIELD_EVERY:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return chunk
            if slot.error is not None:
                raise slot.error
            if slot.done:
                raise StopAsyncIteration
            if slot.lot is None:
                slot.lot = trio.lowlevel.ParkingLot()
            slot.parked = True
            await slot.lot.park()

    @override
    async def aclose(self) -> None:
        """Close the stream. If the job is still running it is aborted on the server.

        Always a checkpoint. The abort is sent from a shielded scope bounded by the client's
        ``abort_grace``; local state is freed even if the send fails. Closing twice is a no-op.
        """
        slot = self._slot
        if slot.closed:
            await trio.lowlevel.checkpoint()
            return
        slot.closed = True
        slot.buffer.clear()
        if slot.parked:
            slot.parked = False
            assert slot.lot is not None
            slot.lot.unpark_all()
        await self._owner.release(slot)

    def __del__(self) -> None:
        slot = self._slot
        if not slot.closed:
            slot.closed = True
            slot.buffer.clear()
            if not slot.done:
                # Best effort: the owner queues an abort for its maintenance task.
                self._owner.orphaned(slot)

    # --- accumulated state --------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        """The job's id (an upper-case UUID4)."""
        return self._slot.job_id

    @property
    def content(self) -> str:
        """All text received so far."""
        return self._slot.content()

    @property
    def role(self) -> str:
        """The last role the server sent (default ``"assistant"``)."""
        return self._slot.role or "assistant"

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls received so far, merged from their deltas, sorted by index."""
        tools = self._slot.tools
        return tools.tool_calls() if tools else []

    @property
    def usage(self) -> Usage | None:
        """Token usage: the latest from the chunks, replaced by the final result's."""
        return self._slot.usage

    @property
    def finish_reason(self) -> str | None:
        """The finish reason (``stop``, ``length``, ``tool_calls``) once the server sent one."""
        return self._slot.finish_reason

    @property
    def worker_name(self) -> str | None:
        """The worker serving the job, from ``jobState`` and the final result."""
        return self._slot.worker_name

    @property
    def cost(self) -> LLMJobCost | None:
        """The settled cost, once the job completed."""
        return self._slot.cost

    @property
    def done(self) -> bool:
        """True once the job completed or failed."""
        return self._slot.done

    @property
    def error(self) -> BaseException | None:
        """The job's failure, if it failed."""
        return self._slot.error

    @property
    def final_result(self) -> ChatCompletionResult | None:
        """The result once the job completed successfully; ``None`` while running or if it failed."""
        slot = self._slot
        if slot.done and slot.error is None:
            return slot.result()
        return None

    async def wait(self) -> ChatCompletionResult:
        """Wait until the job ends and return its result (without consuming chunks).

        Raises the job's error if it failed. Cancel-safe; cancelling it does not close the stream.
        """
        slot = self._slot
        if slot.done:
            await trio.lowlevel.checkpoint()
        else:
            if slot.done_lot is None:
                slot.done_lot = trio.lowlevel.ParkingLot()
            while not slot.done:
                await slot.done_lot.park()
        if slot.error is not None:
            raise slot.error
        return slot.result()

    def statistics(self) -> ChatStreamStatistics:
        """Buffer usage so far: the peak, and how many chunks were coalesced for a slow consumer."""
        slot = self._slot
        return ChatStreamStatistics(
            max_buffer=slot.max_buffer,
            buffered=len(slot.buffer),
            buffer_peak=slot.buffer_peak,
            chunks_received=slot.received,
            chunks_delivered=slot.delivered,
            chunks_coalesced=slot.coalesced,
        )


def check_buffer_size(max_buffer: object) -> int:
    """Validate a per-job buffer size: a positive integer (``math.inf`` is refused)."""
    if isinstance(max_buffer, float) and math.isinf(max_buffer):
        raise ValueError("max_buffered_chunks must be finite: unbounded buffers are refused")
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
        raise ValueError("max_buffered_chunks must be a positive integer")
    return max_buffer
