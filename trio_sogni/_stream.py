"""The public `ChatStream`: the consumer's side of one job.

The router (`trio_sogni._router`) owns a `JobSlot` for each live job and feeds it synchronously;
it never awaits a consumer. The consumer reads through `ChatStream`, a `trio.abc.ReceiveChannel`,
and parks on the slot's parking lots when there is nothing to read. Closing the stream hands the
slot back to its owner (the Trio job driver), which aborts the job on the server if it still runs.
"""

from __future__ import annotations

from typing import Final, Protocol, final

import trio
from typing_extensions import override

from ._jobstate import (
    ChatCompletionResult,
    ChatStreamStatistics,
    Coalesced,
    JobSlot,
    check_buffer_size,
)
from .protocol import ChatCompletionChunk, LLMJobCost, ToolCall, Usage

__all__ = ["ChatCompletionResult", "ChatStream", "ChatStreamStatistics", "check_buffer_size"]

YIELD_EVERY: Final = 64
"""`ChatStream.receive` yields to the scheduler at least once per this many chunks."""


class _StreamOwner(Protocol):
    """What a `ChatStream` needs from the chat layer that created it."""

    async def release(self, slot: JobSlot) -> None:
        """Deregister the job and, if it is still running, abort it on the server."""
        ...

    def orphaned(self, slot: JobSlot) -> None:
        """A stream was garbage-collected unclosed: deregister and abort without awaiting."""
        ...

    def release_finished(self, slot: JobSlot) -> None:
        """Deregister a finished job's closed stream (synchronous: there is nothing to abort)."""
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

    def __init__(self, slot: JobSlot, owner: _StreamOwner) -> None:
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
                chunk = item.build() if isinstance(item, Coalesced) else item
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

    def _close_finished(self) -> bool:
        """Close the stream synchronously if its job has ended (completed or failed: there is
        nothing to abort, so nothing to send); returns whether it did. `StreamScope` uses it to
        leave its block without a schedule point of its own."""
        slot = self._slot
        if slot.closed or not slot.done:
            return False
        slot.closed = True
        slot.buffer.clear()
        if slot.parked:
            slot.parked = False
            assert slot.lot is not None
            slot.lot.unpark_all()
        self._owner.release_finished(slot)
        return True

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
        """Token usage — the latest from the chunks, replaced by the final result's."""
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
