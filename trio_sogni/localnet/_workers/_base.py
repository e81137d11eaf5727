"""Workers: what runs a job once the scheduler assigns it.

A worker is anything with ``name``, ``models``, ``capacity`` and ``async run(job)``
(:class:`Worker`); :class:`JobContext` is what it may do with its job. The bundled workers share
:class:`WorkerIdentity`: the test doubles in ``_doubles``, the real ones in ``_llama`` and
``_bridge``.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import trio

from ...protocol import (
    ChatCompletionChunk,
    LLMJobError,
    LLMJobRequest,
    ToolCallDelta,
    Usage,
    encode_server_message,
)
from .._server import encode_frame
from ._script import (
    ScriptFunction,
)

__all__ = ["JobContext", "PreparedChunk", "Worker", "WorkerIdentity"]

_names: Final = itertools.count(1)


class JobContext:
    """A worker's handle on one job: the request, and the only ways to answer it.

    ``send_chunk`` delivers one ``jobTokens`` frame to whichever socket currently holds the job's
    ``appId`` (frames are dropped while the app is detached). It is a checkpoint and may block
    while the socket's outgoing buffer is full (backpressure). ``fail`` ends the job with
    ``llmJobError`` once :meth:`Worker.run` returns; returning without ``fail`` ends it with
    ``llmJobResult``. Cancellation (abort, expiry, shutdown) arrives as ``trio.Cancelled`` at any
    checkpoint and must be let through.
    """

    def __init__(
        self,
        *,
        request: LLMJobRequest,
        worker_name: str,
        prompt_tokens: int,
        max_tokens: int,
        network_script: ScriptFunction | None,
        send: Callable[[ChatCompletionChunk], Awaitable[None]],
        drop: Callable[[bool], Awaitable[None]],
        send_encoded: Callable[[bytes, int], Awaitable[None]],
    ) -> None:
        self.request = request
        self.job_id = request.job_id
        self.model = request.model
        self.worker_name = worker_name
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        """The effective output limit — the request's ``max_tokens`` or the model default."""
        self.network_script = network_script
        """The network-wide script function (a worker may prefer its own)."""
        self.completion_tokens = 0
        """Chunks sent so far that carried text or a tool-call delta."""
        self.error: LLMJobError | None = None
        self._send = send
        self._drop = drop
        self._send_encoded = send_encoded

    @property
    def usage(self) -> Usage:
        """Token usage so far."""
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    async def send_chunk(
        self,
        content: str | None = None,
        *,
        tool_calls: Sequence[ToolCallDelta] = (),
        role: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Send one ``jobTokens`` chunk. A chunk with ``finish_reason`` also carries ``usage``.

        Raises:
            RuntimeError: the job already failed (see :meth:`fail`).
        """
        if self.error is not None:
            raise RuntimeError("send_chunk() after fail()")
        if content or tool_calls:
            self.completion_tokens += 1
        await self._send(
            ChatCompletionChunk(
                job_id=self.job_id,
                content=content,
                role=role,
                finish_reason=finish_reason,
                usage=self.usage if finish_reason is not None else None,
                tool_calls=list(tool_calls) or None,
            )
        )

    def prepare_chunk(self, content: str) -> PreparedChunk:
        """Encode a ``jobTokens`` chunk of ``content`` for this job once, to be sent many times
        with :meth:`send_prepared`. Synchronous; the cost of encoding is paid here, not per send.
        """
        chunk = ChatCompletionChunk(job_id=self.job_id, content=content)
        return PreparedChunk(self.job_id, encode_frame(encode_server_message(chunk)), bool(content))

    async def send_prepared(self, chunks: Sequence[PreparedChunk], *, repeat: int = 1) -> None:
        """Send ``chunks`` in order, the whole sequence ``repeat`` times, as one write to the
        socket: the cheapest way to produce many chunks (the socket's writer never decodes or
        re-encodes them). Counts toward :attr:`usage` like :meth:`send_chunk`. A checkpoint; may
        block on backpressure like :meth:`send_chunk`.

        Raises:
            RuntimeError: the job already failed, or a chunk was prepared for another job.
            ValueError: ``repeat`` is negative.
        """
        if self.error is not None:
            raise RuntimeError("send_prepared() after fail()")
        if repeat < 0:
            raise ValueError("repeat must not be negative")
        if any(chunk.job_id != self.job_id for chunk in chunks):
            raise RuntimeError("a prepared chunk belongs to another job")
        if not chunks or not repeat:
            await trio.lowlevel.checkpoint()
            return
        self.completion_tokens += repeat * sum(chunk.counts for chunk in chunks)
        data = b"".join(chunk.frame for chunk in chunks) * repeat
        await self._send_encoded(data, len(chunks) * repeat)

    def fail(
        self,
        error: str,
        message: str,
        *,
        error_code: str | None = None,
        subscription_limit: bool | None = None,
        required_plans: Iterable[str] | None = None,
        feature: str | None = None,
        limitation: Any = None,
    ) -> None:
        """Make the job end with ``llmJobError`` (sent when ``run`` returns). Synchronous."""
        self.error = LLMJobError(
            job_id=self.job_id,
            error=error,
            error_message=message,
            error_code=error_code,
            worker_name=self.worker_name,
            subscription_limit=subscription_limit,
            required_plans=list(required_plans) if required_plans is not None else None,
            feature=feature,
            limitation=limitation,
        )

    async def drop_connection(self, reset: bool = False) -> None:
        """Abruptly drop the TCP connection currently carrying this job's app (no close frame).

        Frames already handed to that socket are written first; returns once the socket is gone
        (the app is then detached, so later frames are dropped until a rebind). A checkpoint.
        """
        await self._drop(reset)


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """One ``jobTokens`` message already encoded as a WebSocket frame
    (:meth:`JobContext.prepare_chunk`)."""

    job_id: str
    frame: bytes = field(repr=False)
    counts: int
    """1 if the chunk carries text (it counts toward ``completion_tokens``), else 0."""


class Worker(Protocol):
    """What the scheduler needs of a worker.

    ``models`` of ``None`` means every model the network knows. ``capacity`` is how many jobs
    the worker runs at once. ``run`` executes one job to completion (see :class:`JobContext`).
    """

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Sequence[str] | None: ...

    @property
    def capacity(self) -> int: ...

    async def run(self, job: JobContext) -> None:
        """Execute one job to completion (see :class:`JobContext`)."""
        ...


class WorkerIdentity:
    """Name, models and capacity: what every bundled worker shares (see :class:`Worker`)."""

    def __init__(
        self, name: str | None, default_prefix: str, models: Sequence[str] | None, capacity: int
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._name = name if name is not None else f"{default_prefix}-{next(_names)}"
        self._models = tuple(models) if models is not None else None
        self._capacity = capacity

    @property
    def name(self) -> str:
        return self._name

    @property
    def models(self) -> Sequence[str] | None:
        return self._models

    @property
    def capacity(self) -> int:
        return self._capacity
