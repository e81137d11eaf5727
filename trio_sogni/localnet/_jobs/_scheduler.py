"""Job bookkeeping and worker assignment: per-model fair queues, worker slots with a capacity.

The scheduler is synchronous: every method runs to completion without a checkpoint, so callers
can rely on "enqueue, then dispatch" and "release, then dispatch" being atomic. It never runs a
job itself; it only assigns a waiting :class:`Job` to a worker slot and wakes the job's task.

**Fairness between accounts** (start-time fair queueing, one unit per job): every queued job
carries a *tag*, and queues are served in ``(tag, submission order)`` order. A job's tag is one
more than its account's previous queued job's, but never below the *floor*, the smallest tag
still queued (or, with nothing queued, the tag of the last job handed to a worker). So an
account that floods the queue only pushes back its own later jobs: another account's job is
tagged at the floor and goes to the front (behind at most the floor job itself), whatever the
backlog. With one account (or accounts that take turns) the order is plain FIFO. Fairness is
keyed by the job's account only, so every kind of job shares it: an LLM :class:`Job` and a media
render (``_media``) are both :class:`Schedulable`, and a slot's ``kind`` says which kind of
worker it is (the chat side only ever sees ``"chat"`` slots).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, cast

import trio

from ...protocol import LLMJobRequest
from ._replay import ReplayLog

if TYPE_CHECKING:
    from .._accounts._ledger import Hold
    from .._workers._base import Worker

__all__ = [
    "POSITION_WINDOW",
    "Job",
    "JobOutcome",
    "Schedulable",
    "Scheduler",
    "SlotWorker",
    "WorkerSlot",
]

POSITION_WINDOW: Final = 16
"""Queued jobs among the first this many of their model's queue are told every change of their
position; a job further back is told its position when it is queued and again once it moves
into this window (telling every queued job every change would cost O(queue) frames for each
job started, O(n²) in all)."""

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


class Schedulable:
    """What the scheduler needs of a queued unit of work: its ``model``, ``account`` (fairness
    is per account, whatever the kind of work), submission order ``seq``, fairness ``tag``,
    assigned ``slot`` and a wake-up. :class:`Job` (an LLM job) and a media render are both one.
    """

    def __init__(self, *, model: str, account: str, seq: int) -> None:
        self.model = model
        self.account = account
        self.seq = seq
        self.tag = 0
        """The scheduler's fairness tag (set when queued)."""
        self.slot: WorkerSlot | None = None
        self.queued = False
        self._wake: trio.Event | None = None

    def wake(self) -> None:
        """Tell the job's task that its assignment or queue position may have changed."""
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def wait_for_change(self) -> None:
        """Block until :meth:`wake` is called. A checkpoint; cancellable."""
        event = self._wake = trio.Event()
        await event.wait()


class Job(Schedulable):
    """The server-side state of one live LLM job.

    A job belongs to an app, ``(account, appId)``, not to a socket, so it survives a reconnect;
    ``account`` (``""`` for an unbilled internal job) is also what the scheduler is fair
    between. Its task runs inside ``cancel_scope``; cancelling that scope stops the job wherever
    it is. ``silenced`` jobs send nothing more (queued frames for them are dropped by the socket
    writer too).
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
        super().__init__(model=request.model, account=account, seq=seq)
        self.request = request
        self.job_id = request.job_id
        self.key = request.job_id.upper()
        self.app_id = app_id
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.estimated_cost = estimated_cost
        self.token_type: Literal["sogni", "spark"] = (
            request.token_type if isinstance(request.token_type, str) else "sogni"
        )
        self.cancel_scope = trio.CancelScope()
        self.worker_name: str | None = None
        self.silenced = False
        self.outcome: JobOutcome | None = None
        self.hold: Hold | None = None
        """The balance reserved for this job (``None``: its account is not billed)."""
        self.replay = ReplayLog()
        """Every frame sent for the job, numbered; the newest kept for a reconnecting client."""

    @property
    def app_key(self) -> tuple[str, str]:
        """The app the job belongs to: ``(account, appId)``."""
        return (self.account, self.app_id)

    def end(self, outcome: JobOutcome, *, silence: bool) -> None:
        """Record ``outcome`` (first one wins) and cancel the job's task."""
        if self.outcome is None:
            self.outcome = outcome
        if silence:
            self.silenced = True
        self.cancel_scope.cancel()


class SlotWorker(Protocol):
    """What the scheduler needs of any worker: a unique name and a capacity."""

    @property
    def name(self) -> str: ...

    @property
    def capacity(self) -> int: ...


@dataclass(eq=False)
class WorkerSlot:
    """A worker registered with the scheduler and the jobs it is running right now.

    ``kind`` is ``"chat"`` for an LLM :class:`Worker` (then ``worker`` is one) and ``"media"``
    for a media worker; the two kinds serve disjoint model names.
    """

    worker: Worker | SlotWorker
    models: frozenset[str]
    active: set[Schedulable] = field(default_factory=set[Schedulable])
    kind: Literal["chat", "media"] = "chat"

    @property
    def name(self) -> str:
        return self.worker.name

    def chat_worker(self) -> Worker:
        """The LLM worker of a ``"chat"`` slot."""
        if self.kind != "chat":
            raise TypeError(f"worker {self.name!r} is not an LLM worker")
        return cast("Worker", self.worker)

    @property
    def free(self) -> int:
        return max(0, self.worker.capacity - len(self.active))


_Entry = tuple[int, int, Schedulable]
"""A queue entry: ``(tag, seq, job)``; ``(tag, seq)`` is unique, so jobs are never compared."""


class Scheduler:
    """Per-model queues, fair between accounts, feeding worker slots.

    A worker slot takes jobs of any model it serves, in ``(tag, submission order)`` order across
    those models (see the module docstring), up to its capacity. Queue positions are 1-based
    (1 = next to be served). Each queue is a list sorted by ``(tag, seq)``: an enqueue is a
    binary search plus an insert (at the end, O(1), whenever the job is the newest tag), a
    position is a binary search, and a job started leaves from the front.
    """

    def __init__(self) -> None:
        self._queues: dict[str, list[_Entry]] = {}
        self._slots: dict[str, WorkerSlot] = {}
        self._accounts: dict[str, list[int]] = {}
        """Per account with queued jobs: ``[queued jobs, tag of its newest queued job]``."""
        self._served = 0
        """The tag of the last job handed to a worker (the floor when nothing is queued)."""
        self.closed = False

    # -- workers --

    def add_worker(
        self,
        worker: Worker | SlotWorker,
        models: frozenset[str],
        kind: Literal["chat", "media"] = "chat",
    ) -> WorkerSlot:
        if worker.name in self._slots:
            raise ValueError(f"a worker named {worker.name!r} already exists")
        if worker.capacity < 1:
            raise ValueError("a worker's capacity must be at least 1")
        slot = self._slots[worker.name] = WorkerSlot(worker, models, kind=kind)
        self._dispatch()
        return slot

    def remove_worker(self, name: str) -> WorkerSlot:
        """Unregister a worker; its running jobs stay in ``slot.active`` for the caller to end."""
        return self._slots.pop(name)

    @property
    def slots(self) -> list[WorkerSlot]:
        return list(self._slots.values())

    def worker_counts(self, kind: Literal["chat", "media"] = "chat") -> dict[str, int]:
        """Number of workers of ``kind`` serving each model (models with no worker are absent)."""
        counts: dict[str, int] = {}
        for slot in self._slots.values():
            if slot.kind != kind:
                continue
            for model in slot.models:
                counts[model] = counts.get(model, 0) + 1
        return counts

    def serves(self, model: str) -> bool:
        return any(model in slot.models for slot in self._slots.values())

    # -- jobs --

    def _floor(self) -> int:
        heads = [queue[0][0] for queue in self._queues.values()]
        return min(heads) if heads else self._served

    def enqueue(self, job: Schedulable) -> int:
        """Queue ``job`` (tagged for fairness) and return its position *before* dispatching
        (so it is reported as queued even when a worker takes it at once)."""
        floor = self._floor()
        account = self._accounts.get(job.account)
        if account is None:
            account = self._accounts[job.account] = [0, floor]
            job.tag = floor
        else:
            job.tag = max(account[1] + 1, floor)
        account[0] += 1
        account[1] = job.tag
        queue = self._queues.setdefault(job.model, [])
        key = (job.tag, job.seq)
        if not queue or queue[-1] < key:
            queue.append((job.tag, job.seq, job))
            index = len(queue) - 1
        else:
            index = bisect_left(queue, key)
            insort(queue, (job.tag, job.seq, job))
        job.queued = True
        if index < POSITION_WINDOW:
            self._wake_window(queue, skip=job)
        self._dispatch()
        return index + 1

    def position(self, job: Schedulable) -> int | None:
        """The 1-based queue position of ``job``, or ``None`` when it is not queued."""
        if not job.queued:
            return None
        return bisect_left(self._queues[job.model], (job.tag, job.seq)) + 1

    def queued_jobs(self) -> Iterator[Schedulable]:
        for queue in self._queues.values():
            for _tag, _seq, job in queue:
                yield job

    @staticmethod
    def _wake_window(queue: list[_Entry], skip: Schedulable | None = None) -> None:
        """Wake the jobs whose reported position may have changed (the first few)."""
        for _tag, _seq, other in queue[:POSITION_WINDOW]:
            if other is not skip:
                other.wake()

    def _unqueue(self, job: Schedulable, queue: list[_Entry], index: int) -> None:
        del queue[index]
        job.queued = False
        if not queue:
            del self._queues[job.model]
        account = self._accounts[job.account]
        account[0] -= 1
        if account[0] == 0:
            del self._accounts[job.account]

    def discard(self, job: Schedulable) -> None:
        """Forget ``job`` wherever it is (queue or worker slot) and hand freed capacity to the
        next waiting job at once."""
        if job.queued:
            queue = self._queues[job.model]
            index = bisect_left(queue, (job.tag, job.seq))
            self._unqueue(job, queue, index)
            if index < POSITION_WINDOW:
                self._wake_window(queue)
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
                heads = [self._queues[m][0] for m in slot.models if m in self._queues]
                if not heads:
                    continue
                job = min(heads)[2]
                queue = self._queues[job.model]
                self._unqueue(job, queue, 0)
                self._served = max(self._served, job.tag)
                job.slot = slot
                slot.active.add(job)
                job.wake()
                self._wake_window(queue)
                assigned = True
                break
            if not assigned:
                return

    def statistics(self) -> tuple[int, int, int]:
        """``(queued jobs, running jobs, queue and per-account dict entries)``."""
        queued = sum(len(q) for q in self._queues.values())
        running = sum(len(s.active) for s in self._slots.values())
        return queued, running, len(self._queues) + len(self._accounts)
