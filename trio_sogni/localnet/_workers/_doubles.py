"""The bundled TEST DOUBLE workers: :class:`SimulatedWorker` (scripted text, no model) and
:class:`FirehoseWorker` (pre-encoded chunks as fast as the socket takes them, a load source for
benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import trio

from ._base import JobContext, WorkerIdentity
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

__all__ = ["DEFAULT_FIREHOSE_WORDS", "FirehoseWorker", "SimulatedWorker", "firehose_text"]


class SimulatedWorker(WorkerIdentity):
    """A TEST DOUBLE worker: it produces scripted text, it does not run any model.

    Without a script a job gets the deterministic default reply
    ``"Simulated reply to: <last user message text>"`` (:func:`default_reply_text`), one word per
    ``jobTokens`` chunk, cut by the request's ``stop`` sequences and ``max_tokens``
    (:func:`expected_output` predicts the result exactly).
    A request with ``response_format`` ``json_schema`` instead gets one deterministic JSON
    instance that validates against the schema (required properties, first enum values,
    ``"Simulated <property>."`` strings, smallest allowed numbers, ``minItems`` items), and
    ``json_object`` gets ``{"reply": <default reply text>}``; both stream in word-sized chunks
    (:func:`default_script`).
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


class FirehoseWorker(WorkerIdentity):
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
