"""Workers: what runs a job once the scheduler assigns it.

A worker is anything with ``name``, ``models``, ``capacity`` and ``async run(job)``
(:class:`Worker`). localnet ships :class:`SimulatedWorker`, a test double; a real-model worker can
implement the same protocol later.
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
    DropConnection,
    Emit,
    Fail,
    Pause,
    ScriptFunction,
    Stall,
    compile_script,
    default_script,
)

__all__ = [
    "DEFAULT_FIREHOSE_WORDS",
    "FirehoseWorker",
    "JobContext",
    "PreparedChunk",
    "SimulatedWorker",
    "Worker",
    "firehose_text",
]

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
        send_encoded: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self.request = request
        self.job_id = request.job_id
        self.model = request.model
        self.worker_name = worker_name
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        """The effective output limit: the request's ``max_tokens`` or the model default."""
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
        await self._send_encoded(b"".join(chunk.frame for chunk in chunks) * repeat)

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

    async def run(self, job: JobContext) -> None: ...


class _WorkerIdentity:
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


class SimulatedWorker(_WorkerIdentity):
    """A TEST DOUBLE worker: it produces scripted text, it does not run any model.

    Without a script a job gets the deterministic default reply
    ``"Simulated reply to: <last user message text>"`` (:func:`default_reply_text`), one word per
    ``jobTokens`` chunk, cut by the request's ``stop`` sequences and ``max_tokens``
    (:func:`compile_script` gives the exact rules; :func:`expected_output` predicts the result).
    A request with ``response_format`` ``json_schema`` instead gets one deterministic JSON
    instance that validates against the schema (required properties, first enum values,
    ``"Simulated <property>."`` strings, smallest allowed numbers, ``minItems`` items), and
    ``json_object`` gets ``{"reply": <default reply text>}``; both stream in word-sized chunks
    (:func:`~trio_sogni.localnet._workers._script.default_script`).
    A script chooses other output, including faults. The worker's own ``script`` wins over the
    network's; either may return ``None`` for the default reply.

    Pacing uses ``trio.sleep``: ``start_latency`` seconds before the first chunk, then
    ``1 / tokens_per_second`` before every chunk (``None`` or ``0``: as fast as possible, still
    one checkpoint per chunk). Under ``trio.testing.MockClock(autojump_threshold=0)`` all of
    it takes no real time. An abort cancels the job at its next checkpoint, so at most the chunk
    being sent goes out.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        models: Sequence[str] | None = None,
        capacity: int = 1,
        tokens_per_second: float | None = None,
        start_latency: float = 0.0,
        script: ScriptFunction | None = None,
    ) -> None:
        super().__init__(name, "simulated-worker", models, capacity)
        if tokens_per_second is not None and tokens_per_second < 0:
            raise ValueError("tokens_per_second must not be negative")
        if start_latency < 0:
            raise ValueError("start_latency must not be negative")
        self.tokens_per_second = tokens_per_second
        self.start_latency = start_latency
        self.script = script

    async def run(self, job: JobContext) -> None:
        """Play the job's script. Returns when it ends; never returns for a stalled script."""
        chooser = self.script if self.script is not None else job.network_script
        steps = chooser(job.request) if chooser is not None else None
        if steps is None:
            steps = default_script(job.request)
        stop = job.request.stop if isinstance(job.request.stop, str | list) else None
        actions = compile_script(steps, max_tokens=job.max_tokens, stop=stop)
        interval = 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
        if self.start_latency:
            await trio.sleep(self.start_latency)
        for action in actions:
            match action:
                case Emit():
                    if interval:
                        await trio.sleep(interval)
                    await job.send_chunk(
                        action.content,
                        tool_calls=action.tool_calls,
                        role=action.role,
                        finish_reason=action.finish_reason,
                    )
                case Pause(seconds=seconds):
                    await trio.sleep(seconds)
                case DropConnection(reset=reset):
                    await job.drop_connection(reset)
                case Fail():
                    job.fail(
                        action.error,
                        action.message,
                        error_code=action.error_code,
                        subscription_limit=action.subscription_limit,
                        required_plans=action.required_plans,
                        feature=action.feature,
                        limitation=action.limitation,
                    )
                    return
                case Stall():
                    await trio.sleep_forever()


DEFAULT_FIREHOSE_WORDS: Final = (
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " a",
    " dog.",
)
"""Deltas of a few characters, like a real model's tokens."""


def firehose_text(max_tokens: int, words: Sequence[str] = DEFAULT_FIREHOSE_WORDS) -> str:
    """The exact text a :class:`FirehoseWorker` job streams: ``words`` cycled ``max_tokens`` times."""
    full, rest = divmod(max_tokens, len(words))
    return "".join(words) * full + "".join(words[:rest])


class FirehoseWorker(_WorkerIdentity):
    """A TEST DOUBLE load source for benchmarks and load tests: it runs no model.

    Every job streams exactly ``max_tokens`` (the request's, or the model default) ``jobTokens``
    chunks of ``words`` cycled (:func:`firehose_text` gives the text), then one chunk with
    ``finish_reason`` ``"length"`` and usage, then ``llmJobResult``. It does not pace itself: its
    chunks are encoded once per job (:meth:`JobContext.prepare_chunk`) and written ``batch``
    chunks per outbox item, so the socket (and the client reading it) is the only limit. Jobs
    sharing a socket take turns in the socket's FIFO outbox, one batch each, so they progress
    fairly; the outbox's bound is the backpressure.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        models: Sequence[str] | None = None,
        capacity: int = 1,
        words: Sequence[str] = DEFAULT_FIREHOSE_WORDS,
        batch: int = 64,
    ) -> None:
        super().__init__(name, "firehose-worker", models, capacity)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if not words or not all(words):
            raise ValueError("words must be non-empty strings")
        self.words = tuple(words)
        self.batch = batch

    async def run(self, job: JobContext) -> None:
        """Stream the job's chunks as fast as the socket takes them."""
        prepared = [job.prepare_chunk(word) for word in self.words]
        # A block is a whole number of word cycles, so consecutive blocks continue the cycle.
        cycles = max(1, self.batch // len(prepared))
        block = prepared * cycles
        full, rest = divmod(job.max_tokens, len(block))
        for _ in range(full):
            await job.send_prepared(block)
        if rest:
            await job.send_prepared(block[:rest])
        await job.send_chunk(None, finish_reason="length")
