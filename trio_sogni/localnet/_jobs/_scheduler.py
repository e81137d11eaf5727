"""Job bookkeeping and worker assignment: per-model FIFO queues, worker slots with a capacity.

The scheduler is synchronous: every method runs to completion without a checkpoint, so callers
can rely on "enqueue, then dispatch" and "release, then dispatch" being atomic. It never runs a
job itself; it only assigns a waiting :class:`Job` to a worker slot and wakes the job's task.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import trio

from ...protocol import LLMJobRequest

if TYPE_CHECKING:
    from .._accounts._ledger import Hold
    from .._workers._base import Worker

__all__ = ["Job", "JobOutcome", "Scheduler", "WorkerSlot"]

JobOutcome = Literal[
    "completed",
    "failed",
    "aborted",
    "expired",
    "server_restarting",
    "worker_disconnected",
    "model_unavailable",
    "internal_error",
]
"""How a job ended."""


class Job:
    """The server-side state of one live LLM job.

    A job belongs to an app, ``(account, appId)``, not to a socket, so it survives a reconnect;
    ``account`` (``""`` for an unbilled internal job) is also what the scheduler is fair between. Its task runs
    inside ``cancel_scope``; cancelling that scope stops the job wherever it is. ``silenced``
    jobs send nothing more (queued frames for them are dropped by the socket writer too).
    """

    def __init__(
        self,
        *,
        request: LLMJobRequest,
        app_id: str,
        account: str,
        seq: int,
        prompt_tokens: int,
        max_tokens: int,
        estimated_cost: str,
    ) -> None:
        self.request = request
        self.job_id = request.job_id
        self.key = request.job_id.upper()
        self.app_id = app_id
        self.account = account
        self.model = request.model
        self.seq = seq
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.estimated_cost = estimated_cost
        self.token_type: Literal["sogni", "spark"] = (
            request.token_type if isinstance(request.token_type, str) else "sogni"
        )
        self.cancel_scope = trio.CancelScope()
        self.slot: WorkerSlot | None = None
        self.worker_name: str | None = None
        self.queued = False
        self.silenced = False
        self.outcome: JobOutcome | None = None
        self.hold: Hold | None = None
        """The balance reserved for this job (``None``: its account is not billed)."""
        self._wake: trio.Event | None = None

    @property
    def app_key(self) -> tuple[str, str]:
        """The app the job belongs to: ``(account, appId)``."""
        return (self.account, self.app_id)

    def wake(self) -> None:
        """Tell the job's task that its assignment or queue position may have changed."""
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def wait_for_change(self) -> None:
        """Block until :meth:`wake` is called. A checkpoint; cancellable."""
        event = self._wake = trio.Event()
        await event.wait()

    def end(self, outcome: JobOutcome, *, silence: bool) -> None:
        """Record ``outcome`` (first one wins) and cancel the job's task."""
        if self.outcome is None:
            self.outcome = outcome
        if silence:
            self.silenced = True
        self.cancel_scope.cancel()


@dataclass(eq=False)
class WorkerSlot:
    """A worker registered with the scheduler and the jobs it is running right now."""

    worker: Worker
    models: frozenset[str]
    active: set[Job] = field(default_factory=set[Job])

    @property
    def name(self) -> str:
        return self.worker.name

    @property
    def free(self) -> int:
        return max(0, self.worker.capacity - len(self.active))


class Scheduler:
    """Per-model FIFO queues feeding worker slots.

    A worker slot takes jobs of any model it serves, oldest first (by submission order across
    those models), up to its capacity. Queue positions are 1-based (1 = next to be served).
    """

    def __init__(self) -> None:
        self._queues: dict[str, deque[Job]] = {}
        self._slots: dict[str, WorkerSlot] = {}
        self.closed = False

    # -- workers --

    def add_worker(self, worker: Worker, models: frozenset[str]) -> WorkerSlot:
        if worker.name in self._slots:
            raise ValueError(f"a worker named {worker.name!r} already exists")
        if worker.capacity < 1:
            raise ValueError("a worker's capacity must be at least 1")
        slot = self._slots[worker.name] = WorkerSlot(worker, models)
        self._dispatch()
        return slot

    def remove_worker(self, name: str) -> WorkerSlot:
        """Unregister a worker; its running jobs stay in ``slot.active`` for the caller to end."""
        return self._slots.pop(name)

    @property
    def slots(self) -> list[WorkerSlot]:
        return list(self._slots.values())

    def worker_counts(self) -> dict[str, int]:
        """Number of workers serving each model (models with no worker are absent)."""
        counts: dict[str, int] = {}
        for slot in self._slots.values():
            for model in slot.models:
                counts[model] = counts.get(model, 0) + 1
        return counts

    def serves(self, model: str) -> bool:
        return any(model in slot.models for slot in self._slots.values())

    # -- jobs --

    def enqueue(self, job: Job) -> int:
        """Append ``job`` to its model's queue and return its position *before* dispatching
        (so it is reported as queued even when a worker takes it at once)."""
        queue = self._queues.setdefault(job.model, deque())
        queue.append(job)
        job.queued = True
        position = len(queue)
        self._dispatch()
        return position

    def position(self, job: Job) -> int | None:
        """The 1-based queue position of ``job``, or ``None`` when it is not queued."""
        if not job.queued:
            return None
        return self._queues[job.model].index(job) + 1

    def queued_jobs(self) -> Iterator[Job]:
        for queue in self._queues.values():
            yield from queue

    def discard(self, job: Job) -> None:
        """Forget ``job`` wherever it is (queue or worker slot) and hand freed capacity to the
        next waiting job at once."""
        if job.queued:
            queue = self._queues[job.model]
            queue.remove(job)
            job.queued = False
            if not queue:
                del self._queues[job.model]
            for other in queue:
                other.wake()
        if job.slot is not None:
            job.slot.active.discard(job)
            job.slot = None
        self._dispatch()

    def _dispatch(self) -> None:
        if self.closed:
            return
        while True:
            candidates = [s for s in self._slots.values() if s.free > 0]
            candidates.sort(key=lambda s: len(s.active))
            assigned = False
            for slot in candidates:
                heads: list[Job] = [self._queues[m][0] for m in slot.models if m in self._queues]
                if not heads:
                    continue
                job = min(heads, key=lambda j: j.seq)
                queue = self._queues[job.model]
                queue.popleft()
                job.queued = False
                if not queue:
                    del self._queues[job.model]
                job.slot = slot
                slot.active.add(job)
                job.wake()
                for other in queue:
                    other.wake()
                assigned = True
                break
            if not assigned:
                return

    def statistics(self) -> tuple[int, int, int]:
        """``(queued jobs, running jobs, queue dict entries)``."""
        queued = sum(len(q) for q in self._queues.values())
        running = sum(len(s.active) for s in self._slots.values())
        return queued, running, len(self._queues)
