"""Per-job state, with no I/O and no Trio: what the job router keeps for each job.

`JobSlot` is fed synchronously by the router (`trio_sogni._router`) and read by the job's
`ChatStream`. It never blocks and never schedules anything itself: to wake a waiting consumer it
calls ``unpark_all()`` on the `Waiter` the consumer left in ``lot`` / ``done_lot`` (a Trio
``ParkingLot`` in practice, made by the consumer on first use).

Buffering policy (house style, decision 3): each job buffers at most ``max_buffer`` chunks. When the
buffer is full, later chunks are *coalesced* into one pending chunk at the tail (content
concatenated, tool-call deltas merged by index, the latest role / finish reason / usage kept), which
the consumer receives next. Nothing is dropped, the receive loop never blocks, and a job's memory is
bounded by its own output. `ChatStream.statistics` reports the peak and the number coalesced.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Protocol

import msgspec

from .protocol import (
    ChatCompletionChunk,
    FunctionCall,
    FunctionCallDelta,
    LLMJobCost,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "ChatCompletionResult",
    "ChatStreamStatistics",
    "Coalesced",
    "JobSlot",
    "ToolResult",
    "ToolRound",
    "Waiter",
    "check_buffer_size",
]

_EMPTY_USAGE: Final = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
_FOLD_MASK: Final = 127
"""Text is kept as a list of parts, and every 128 chunks the parts they added are joined into
one. A part is a str object (about 50 bytes of overhead), so a long run of one-character chunks
costs about 1.5 bytes per chunk and list instead of about 60; each part is copied once more. The
check rides on a chunk counter, so it costs the token path next to nothing."""


def _fold(parts: list[str], start: int) -> int:
    """Join ``parts[start:]`` into one part; return where the next unjoined part will be."""
    if len(parts) - start > 1:
        parts[start:] = ["".join(parts[start:])]
    return len(parts)


class Waiter(Protocol):
    """Something consumers park on (a ``trio.lowlevel.ParkingLot``). The slot only ever wakes
    all of them; only consumers park."""

    def unpark_all(self) -> object:
        """Wake every parked consumer."""
        ...

    async def park(self) -> None:
        """Wait until woken."""
        ...


class ToolResult(msgspec.Struct, kw_only=True, frozen=True):
    """The outcome of one tool call, as fed back to the model in a ``tool`` message (the
    official SDKs' ``{toolCallId, toolName, success, resultUrls, content}``).

    ``content`` is the ``tool`` message's text; for a media tool, the JSON
    ``{success, media_type, urls, model, prompt}`` (or ``{success: false, error}``).
    ``result_urls`` are a media tool's result URLs (signed: treat them as credentials);
    ``error`` the message of a failed call."""

    tool_call_id: str
    tool_name: str
    success: bool
    content: str
    error: str | None = None
    result_urls: list[str] = msgspec.field(default_factory=list[str])


class ToolRound(msgspec.Struct, kw_only=True, frozen=True):
    """One round of the automatic tool loop: the calls the model made and their results."""

    round: int
    tool_calls: list[ToolCall]
    tool_results: list[ToolResult]


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


class Coalesced(_Accumulator):
    """Chunks merged while the consumer was behind; materialised when the consumer reaches it."""

    __slots__ = ("count", "finish_reason", "folded", "job_id", "parts", "role", "tools", "usage")

    def __init__(self, first: ChatCompletionChunk) -> None:
        self.job_id = first.job_id
        self.parts: list[str] = []
        self.folded = 0
        """``parts[:folded]`` are joined blocks; later parts are joined every 128 chunks."""
        self.role: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.tools: _ToolCallMerger | None = None
        self.count = 0
        self.add(first)

    def add(self, chunk: ChatCompletionChunk) -> None:
        count = self.count = self.count + 1
        if chunk.content:
            self.parts.append(chunk.content)
        if not count & _FOLD_MASK:
            self.folded = _fold(self.parts, self.folded)
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


class JobSlot(_Accumulator):
    """Everything the client holds for one job. Fed synchronously by the receive loop."""

    __slots__ = (
        "buffer",
        "buffer_peak",
        "closed",
        "coalesced",
        "cost",
        "delivered",
        "detached",
        "done",
        "done_lot",
        "error",
        "finish_reason",
        "folded",
        "frames",
        "job_id",
        "lot",
        "max_buffer",
        "model",
        "parked",
        "parts",
        "received",
        "request",
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
        self.buffer: deque[ChatCompletionChunk | Coalesced] = deque()
        # Parking lots are made on first use: most jobs never need the second one, and idle
        # jobs held by the thousand should cost as little memory as possible.
        self.lot: Waiter | None = None
        """Consumers waiting for a chunk."""
        self.done_lot: Waiter | None = None
        """Tasks in `ChatStream.wait`."""
        self.parts: list[str] = []
        self.folded = 0
        """``parts[:folded]`` are joined blocks; later parts are joined every 128 chunks."""
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
        self.frames = 0
        """Server frames routed to this job (every kind): what a resuming client says it has."""
        self.detached = False
        """The job's connection died and it waits to be resumed on the next one."""
        self.request: bytes | None = None
        """The job's request frame, kept until the server answers it, so that a request lost
        with its connection can be sent again."""
        self.delivered = 0
        self.coalesced = 0
        self.buffer_peak = 0

    # --- fed by the receive loop (synchronous, never blocks) --------------------------------------

    def push(self, chunk: ChatCompletionChunk) -> None:
        if self.done:
            return
        received = self.received = self.received + 1
        content = chunk.content
        if content:
            self.parts.append(content)
        if not received & _FOLD_MASK:
            self.folded = _fold(self.parts, self.folded)
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
            if isinstance(tail, Coalesced):
                tail.add(chunk)
            else:
                merged = Coalesced(tail)
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
            self.folded = 1
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


def check_buffer_size(max_buffer: object) -> int:
    """Validate a per-job buffer size: a positive integer (``math.inf`` is refused)."""
    if isinstance(max_buffer, float) and math.isinf(max_buffer):
        raise ValueError("max_buffered_chunks must be finite: unbounded buffers are refused")
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
        raise ValueError("max_buffered_chunks must be a positive integer")
    return max_buffer
