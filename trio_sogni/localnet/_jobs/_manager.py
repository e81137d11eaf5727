"""Apps and jobs: which socket holds each ``appId``, the job table, job tasks, rebind timers.

Jobs belong to an *app*, not to a socket: an app is an ``appId`` **of one account** (the key is
``(account id, appId)``), so the same ``appId`` sent by another account is a different app that
can neither take over nor see, receive or abort this one's jobs. A job's frames go to whichever
socket currently holds its app, through the job's :class:`ReplayLog` (every frame numbered).

When an app loses its socket, its jobs keep running for ``rebind_grace`` seconds and their
frames are held (bounded by ``replay_bytes`` per job; a job that fills its log waits). A new
socket of the same account with the same ``appId`` takes them over, else they are ended:

* a client that said ``jobResume=1`` in its handshake (a localnet extension) gets
  ``authenticated`` with ``jobResume: true``, and its jobs' frames stay held until it sends
  ``resumeJobs`` (how many frames of each job it has); the answer ``jobsResumed`` is followed by
  exactly the frames it lacks, so nothing is lost or sent twice. Jobs it does not list are ended.
  Frames already sent are kept (the newest, up to a window per job) because the last ones may
  have died in flight, and so are the logs of jobs that finished shortly before, for the same
  reason.
* any other client (the official SDKs) gets the frames produced while no socket held the app,
  then the live ones (frames in flight when the connection died are lost, as on the real
  network).

Every method except the job task itself is synchronous, so state changes are atomic with
respect to other tasks.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Final, Protocol

import msgspec
import trio

from ...protocol import (
    ChatCompletionChunk,
    JobsResumed,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ResumedJob,
    ResumeEntry,
    ServerMessage,
    SwarmLLMModels,
    encode_server_message,
)
from .._accounts._ledger import InsufficientBalance, Ledger
from .._config import Account, ModelSpec, Pricing
from .._server import (
    RECORD_OVERHEAD,
    OutDrop,
    OutEncoded,
    OutFrame,
    RecordLog,
    WebSocketDriver,
    preview,
)
from .._workers._base import JobContext, Worker
from .._workers._script import ScriptFunction, count_prompt_tokens
from ._hostedtools import inject_creative_tools
from ._records import JobRecord
from ._replay import ReplayLog
from ._scheduler import Job, JobOutcome, Scheduler
from ._session import Session, validate_request

__all__ = [
    "APP_REPLAY_BYTES",
    "DEFAULT_MAX_JOBS_PER_ACCOUNT",
    "DEFAULT_MAX_JOBS_PER_SOCKET",
    "DEFAULT_REPLAY_BYTES",
    "ENDED_RETENTION",
    "INTERNAL_APP_ID",
    "LINGERING_BYTES",
    "LINGER_BYTES",
    "MAX_ENDED_IDS",
    "RESTART_MESSAGE",
    "TOO_MANY_JOBS",
    "AppKey",
    "Changes",
    "InternalJob",
    "JobManager",
    "SocketBinding",
]

logger = logging.getLogger("trio_sogni.localnet")

RESTART_MESSAGE: Final = "Server is restarting; this LLM request was refunded."

TOO_MANY_JOBS: Final = "too_many_jobs"
"""The ``llmJobError.error`` of a job refused because its socket already has
``max_jobs_per_socket`` live jobs, or its account ``max_jobs_per_account`` (``error_code``
``"429"``)."""

DEFAULT_MAX_JOBS_PER_SOCKET: Final = 1_000
"""The default cap on one socket's (one app's) live jobs: queued, running or detached."""

DEFAULT_MAX_JOBS_PER_ACCOUNT: Final = 4_000
"""The default cap on one account's live socket jobs, over all its sockets and ``appId`` values."""

DEFAULT_REPLAY_BYTES: Final = 256 * 1024
"""The default bound on one job's held frames, in bytes (``replay_bytes``): while its app has
no socket, a job whose unsent frames reach it waits; while it has one, the frames already sent
that are kept for a resuming client never exceed it."""

APP_REPLAY_BYTES: Final = 16 * 1024 * 1024
"""The frames kept after they were sent are shared out among the app's live jobs from this
budget (each job keeping at most ``replay_bytes`` and at least `MIN_REPLAY_WINDOW`)."""

MIN_REPLAY_WINDOW: Final = 16 * 1024
"""The least a live job of a resuming app keeps of the frames it sent."""

LINGERING_BYTES: Final = 16 * 1024 * 1024
"""The bytes of finished jobs' frames an app keeps, at most (the oldest forgotten first); it
also keeps at most ``max_jobs_per_socket`` finished jobs, each for ``rebind_grace``."""

LINGER_BYTES: Final = 16 * 1024
"""The bytes of a finished job's last frames kept while it lingers."""

MAX_ENDED_IDS: Final = 16_384
"""Ids of recently answered jobs of resuming apps the network remembers, at most (about
250 bytes each: some 4 MB when full)."""

ENDED_RETENTION: Final = 300.0
"""Seconds an ended job's id is remembered (or ``rebind_grace``, if longer): longer than any
sane client ``resume_window``, so that a job that ended with an answer is never run again
because its client came back late and asked for it."""

AppKey = tuple[str, str]
"""What owns socket jobs: ``(account id, appId)``."""


class Changes:
    """A broadcast "something changed" signal with a predicate wait."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Checkpoint, then block until ``predicate()`` holds (re-checked after each notify)."""
        await trio.lowlevel.checkpoint()
        while not predicate():
            await self._event.wait()


@dataclass(eq=False)
class SocketBinding:
    """An authenticated socket: its driver, its protocol session and its account."""

    driver: WebSocketDriver
    session: Session
    account: Account
    resumed: bool = False
    """Whether this socket sent its ``resumeJobs`` (one per socket)."""

    @property
    def app_id(self) -> str:
        return self.session.app_id

    @property
    def app_key(self) -> AppKey:
        """The app this socket holds: its ``appId`` within its account."""
        return (self.account.id, self.session.app_id)


@dataclass(eq=False)
class _Lingering:
    """A finished job's id and last frames, kept for a client that may have missed them."""

    job_id: str
    log: ReplayLog
    ended: float


class FrameOwner(Protocol):
    """An owner of socket frames that is not an LLM :class:`Job` (a media project): its frames
    go through :meth:`JobManager.deliver` and its :class:`ReplayLog`, so they are held while its
    app has no socket and resumed like a job's. The rebind grace never ends it (a media project
    outlives its socket), and it never waits for a socket: while detached, its log keeps only
    the newest ``replay_bytes`` (a reconnecting client reconciles the rest from
    ``activeProjects``). Registered with :meth:`JobManager.add_owner` while it lives."""

    @property
    def key(self) -> str: ...

    @property
    def job_id(self) -> str: ...

    @property
    def app_key(self) -> AppKey: ...

    @property
    def silenced(self) -> bool: ...

    @property
    def replay(self) -> ReplayLog: ...


@dataclass(eq=False)
class _App:
    key: AppKey
    socket: SocketBinding | None = None
    grace: trio.CancelScope | None = None
    flowing: bool = False
    """Frames go to ``socket`` (false: there is none, or it must send ``resumeJobs`` first)."""
    resumes: bool = False
    """The app's latest socket said ``jobResume=1``: keep frames for it to resume from."""

    def __post_init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.owners: dict[str, FrameOwner] = {}
        """Other owners of the app's frames (media projects; see :class:`FrameOwner`)."""
        self.lingering: OrderedDict[str, _Lingering] = OrderedDict()
        self.lingering_bytes = 0

    def forget_lingering(self, key: str | None = None) -> None:
        """Forget one finished job's frames: ``key``'s, or the oldest."""
        entry = self.lingering.popitem(last=False)[1] if key is None else self.lingering.pop(key)
        self.lingering_bytes -= entry.log.size

    def clear_lingering(self) -> None:
        """Forget every finished job's frames."""
        self.lingering.clear()
        self.lingering_bytes = 0


INTERNAL_APP_ID: Final = "localnet-internal"
"""The ``appId`` of jobs started by :meth:`JobManager.run_internal` (no socket ever holds it)."""


class InternalJob(Job):
    """A job of :meth:`JobManager.run_internal`: its messages go to ``on_message``, not a socket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_message: Callable[[ServerMessage], Awaitable[None]] = _discard
        self.final: LLMJobResult | LLMJobError | None = None
        self.finished = trio.Event()
        self.on_finished: Callable[[], object] = _nothing
        """Called (synchronously) once the job has ended, however it ended."""


async def _discard(message: ServerMessage) -> None:
    await trio.lowlevel.checkpoint()


def _nothing() -> None:
    return None


def request_size(request: LLMJobRequest) -> int:
    """The accounted size of a recorded job request: twice its JSON length (decoded objects
    take more room than their JSON) plus the per-record overhead."""
    return 2 * len(msgspec.json.encode(request)) + RECORD_OVERHEAD


def _id_size(job_id: str) -> int:
    return len(job_id) + RECORD_OVERHEAD


def _error(
    job_id: str,
    error: str,
    message: str,
    worker_name: str | None = None,
    *,
    error_code: str | None = None,
) -> LLMJobError:
    return LLMJobError(
        job_id=job_id,
        error=error,
        error_message=message,
        error_code=error_code,
        worker_name=worker_name,
    )


class JobManager:
    """The job table, the app bindings and the scheduler, plus the job tasks they start.

    Job ids are compared case-insensitively (the official SDKs upper-case them) but echoed
    exactly as the client sent them.

    Billing (with a ``ledger``): an accepted job reserves its estimated cost from its socket's
    account, and a job the account cannot cover is refused with ``insufficient_balance`` before
    it is queued. A completed job is charged exactly the ``costInToken`` of its ``llmJobResult``
    just before that result is queued, and ``on_settled(account_id)`` runs after it (the network
    pushes ``balanceUpdate``); a job that ends any other way releases its reservation without
    charge.
    """

    def __init__(
        self,
        *,
        models: dict[str, ModelSpec],
        pricing: Pricing,
        script: ScriptFunction | None,
        rebind_grace: float,
        changes: Changes,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        max_jobs_per_socket: int = DEFAULT_MAX_JOBS_PER_SOCKET,
        max_jobs_per_account: int = DEFAULT_MAX_JOBS_PER_ACCOUNT,
        errors: deque[str],
        record_limit: int,
        record_bytes: int = 4 * 1024 * 1024,
        ledger: Ledger | None = None,
        on_settled: Callable[[str], None] | None = None,
    ) -> None:
        self.models = models
        self.ledger = ledger
        self._on_settled = on_settled
        self.pricing = pricing
        self.script = script
        self.rebind_grace = rebind_grace
        if replay_bytes < 1024:
            raise ValueError("replay_bytes must be at least 1024")
        self.replay_bytes = replay_bytes
        """The bound on one job's held frames (see `DEFAULT_REPLAY_BYTES`)."""
        if max_jobs_per_socket < 1:
            raise ValueError("max_jobs_per_socket must be at least 1")
        self.max_jobs_per_socket = max_jobs_per_socket
        """Live jobs one socket (one app) may have; more are refused with ``too_many_jobs``."""
        if max_jobs_per_account < 1:
            raise ValueError("max_jobs_per_account must be at least 1")
        self.max_jobs_per_account = max_jobs_per_account
        """Live socket jobs one account may have over all its sockets and apps (internal jobs,
        i.e. hosted and run jobs, do not count); more are refused with ``too_many_jobs``."""
        self._account_jobs: dict[str, int] = {}
        """Live socket jobs per account id (no entry at 0)."""
        self.scheduler = Scheduler()
        self.jobs: dict[tuple[str, str], Job] = {}
        """Live jobs by ``(account, upper-cased job id)``: job ids are scoped to their account,
        so nobody learns whether another account uses an id."""
        self.apps: dict[AppKey, _App] = {}
        self._ended: OrderedDict[tuple[AppKey, str], float] = OrderedDict()
        """Jobs of resuming apps that ended with an answer (completed or failed), recently:
        (app, job key) -> when."""
        self._nursery: trio.Nursery | None = None
        self.closing = False
        """Set by :meth:`stop_accepting`: new jobs are refused with ``server_restarting``."""
        self._changes = changes
        self._errors = errors
        self._seq = 0
        self.job_requests = RecordLog[LLMJobRequest](
            max_items=record_limit, max_bytes=record_bytes, size=request_size
        )
        self.job_records: deque[JobRecord] = deque(maxlen=record_limit)
        self.aborted_job_ids = RecordLog[str](
            max_items=record_limit, max_bytes=record_bytes, size=_id_size
        )
        self.cancelled_job_ids: deque[str] = deque(maxlen=record_limit)
        self.frames_dropped = 0

    # -- models and workers ---------------------------------------------------------------------

    def model_map(self) -> SwarmLLMModels:
        counts = self.scheduler.worker_counts()
        return SwarmLLMModels(
            models={name: self.models[name].info(n) for name, n in sorted(counts.items())}
        )

    def add_worker(self, worker: Worker) -> None:
        # A worker may describe its models (e.g. LlamaCppWorker, from the GGUF metadata); a
        # spec the network was configured with wins unless it is a bare name (all defaults).
        specs: tuple[ModelSpec, ...] = tuple(getattr(worker, "model_specs", ()))
        for spec in specs:
            if self.models.get(spec.name, ModelSpec(name=spec.name)) == ModelSpec(name=spec.name):
                self.models[spec.name] = spec
        names = tuple(worker.models) if worker.models is not None else tuple(self.models)
        for name in names:
            self.models.setdefault(name, ModelSpec(name=name))
        self.scheduler.add_worker(worker, frozenset(names))

    def remove_worker(self, name: str) -> None:
        slot = self.scheduler.remove_worker(name)
        for job in list(slot.active):
            if not isinstance(job, Job):  # pragma: no cover - chat slots run only LLM jobs
                continue
            message = "The worker running this job disconnected."
            self.end_job(
                job,
                "worker_disconnected",
                _error(job.job_id, "worker_disconnected", message, worker_name=name),
            )
        for job in list(self.scheduler.queued_jobs()):
            if isinstance(job, Job) and not self.scheduler.serves(job.model):
                self.end_job(job, "model_unavailable", self._unavailable(job.job_id, job.model))

    @staticmethod
    def _unavailable(job_id: str, model: str) -> LLMJobError:
        message = f"Model {model!r} is not available on this network."
        return _error(job_id, "model_unavailable", message)

    # -- apps -----------------------------------------------------------------------------------

    def bind(self, sock: SocketBinding) -> tuple[SocketBinding | None, list[str]]:
        """Make ``sock`` the socket of its app. Returns the socket it replaces (if any) and the
        ids of the app's live jobs, which now report to ``sock``.

        A resuming socket (``jobResume=1``) that finds jobs or lingering frames gets nothing of
        them until its ``resumeJobs`` (:meth:`resume`); the rebind-grace timer keeps running
        meanwhile (one is started if none runs), so a client that never sends it cannot hold
        them for longer. Any other socket gets the frames held while the app had no socket once
        :meth:`attached` runs, then the live ones."""
        app = self.apps.get(sock.app_key)
        if app is None:
            app = self.apps[sock.app_key] = _App(sock.app_key)
        old, app.socket = app.socket, sock
        if old is not None:
            self._detach_logs(app)
        app.resumes = sock.session.handshake.job_resume
        holding = app.resumes and bool(app.jobs or app.lingering or app.owners)
        app.flowing = not holding
        if holding:
            if app.grace is None:
                self._start_grace(app)
        else:
            app.clear_lingering()
            if app.grace is not None:
                app.grace.cancel()
                app.grace = None
        return old, [job.job_id for job in app.jobs.values() if not isinstance(job, InternalJob)]

    def attached(self, sock: SocketBinding) -> None:
        """``sock``'s ``authenticated`` is queued: a socket that does not resume jobs now gets
        the frames its app's jobs produced while no socket held it (never sent anywhere)."""
        app = self.apps.get(sock.app_key)
        if app is None or app.socket is not sock or not app.flowing:
            return
        outbox = sock.driver.outbox
        for job in (*app.jobs.values(), *app.owners.values()):
            for item in job.replay.unsent(job):
                outbox.put_nowait(item)
            job.replay.trim(self._window(app))
        self._changes.notify()

    def unbind(self, sock: SocketBinding) -> None:
        """``sock`` is gone. If it still held its app, the app's jobs detach (rebind grace)."""
        app = self.apps.get(sock.app_key)
        if app is None or app.socket is not sock:
            return
        app.socket = None
        app.flowing = False
        self._detach_logs(app)
        if sock.driver.received_close == 1000:
            # The client said goodbye: it wants nothing more of the jobs that already ended.
            app.clear_lingering()
        if not app.jobs and not app.lingering and not app.owners:
            if app.grace is not None:
                app.grace.cancel()
                app.grace = None
            del self.apps[app.key]
        elif self.closing:
            pass  # shutdown ends every job itself
        elif self.rebind_grace <= 0:
            self._expire(app)
        elif app.grace is None:
            self._start_grace(app)
        self._changes.notify()

    @staticmethod
    def _detach_logs(app: _App) -> None:
        for job in (*app.jobs.values(), *app.owners.values()):
            job.replay.detached_at = job.replay.count

    def _start_grace(self, app: _App) -> None:
        if self._nursery is None:
            return
        app.grace = trio.CancelScope()
        self._nursery.start_soon(self._grace_timer, app, app.grace)

    async def _grace_timer(self, app: _App, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.rebind_grace)
            app.grace = None
            self._expire(app)
            self._changes.notify()

    def _expire(self, app: _App) -> None:
        """The rebind grace is over: end the jobs nobody took back and forget lingering frames.
        A socket still waiting to resume gets the app's (new) jobs' frames from now on."""
        for job in list(app.jobs.values()):
            self.end_job(job, "expired", None)
        app.clear_lingering()
        if app.socket is not None:
            app.flowing = True
        elif not app.jobs and not app.owners:
            self.apps.pop(app.key, None)

    def resume(self, sock: SocketBinding, entries: tuple[ResumeEntry, ...]) -> str | None:
        """``sock`` sent ``resumeJobs``: answer ``jobsResumed`` and send each listed job's frames
        after the client's count; end the app's other held jobs (they are not wanted). Returns
        a reason to reject the frame instead (a second ``resumeJobs`` on one socket)."""
        if sock.resumed:
            return "resumeJobs may be sent once per connection"
        sock.resumed = True
        app = self.apps.get(sock.app_key)
        holding = app is not None and app.socket is sock and not app.flowing
        answers: list[ResumedJob] = []
        replays: list[OutFrame | OutEncoded] = []
        wanted: set[str] = set()
        if app is not None:
            self._forget_stale(app)
        for entry in entries:
            key = entry.job_id.upper()
            job: Job | FrameOwner | None = None
            if app is not None and holding:
                job = app.jobs.get(key) or app.owners.get(key)
            log: ReplayLog | None = None
            if job is not None:
                log = job.replay
            elif app is not None and holding and key in app.lingering:
                log = app.lingering[key].log
            if log is None:
                # A job that ended with an answer (billed or failed) is never run again;
                # one the server never received, or that ended unanswered and unbilled
                # (expired, aborted), may be sent again.
                status = "gap" if (sock.app_key, key) in self._ended else "unknown"
                answers.append(ResumedJob(job_id=entry.job_id, status=status))
                continue
            items = log.since(entry.received, job)
            if items is None:
                answers.append(ResumedJob(job_id=entry.job_id, status="gap"))
                continue
            wanted.add(key)
            replayed = log.count - entry.received
            answers.append(ResumedJob(job_id=entry.job_id, status="resumed", replayed=replayed))
            replays.extend(items)
        outbox = sock.driver.outbox
        outbox.put_nowait(OutFrame(encode_server_message(JobsResumed(jobs=answers))))
        for item in replays:
            outbox.put_nowait(item)
        if app is not None and holding:
            for key, job in list(app.jobs.items()):
                if key not in wanted:
                    self.end_job(job, "aborted", None)
            # Finished jobs the client did not ask for are not wanted; those it did ask for
            # keep lingering: their replayed frames may die in flight too.
            for key in [key for key in app.lingering if key not in wanted]:
                app.forget_lingering(key)
            app.flowing = True
            if app.grace is not None:
                app.grace.cancel()
                app.grace = None
            window = self._window(app)
            for job in (*app.jobs.values(), *app.owners.values()):
                job.replay.trim(window)
        self._changes.notify()
        return None

    def _window(self, app: _App) -> int:
        """How many bytes of sent frames each live job of ``app`` keeps."""
        if not app.resumes:
            return 0
        share = APP_REPLAY_BYTES // max(1, len(app.jobs) + len(app.owners))
        return min(self.replay_bytes, max(MIN_REPLAY_WINDOW, share))

    def _forget_stale(self, app: _App) -> None:
        now = trio.current_time()
        deadline = now - self.rebind_grace
        ended, remembered = self._ended, now - max(ENDED_RETENTION, self.rebind_grace)
        while ended and next(iter(ended.values())) < remembered:
            ended.popitem(last=False)
        lingering = app.lingering
        while lingering:
            first = next(iter(lingering.values()))
            if first.ended >= deadline:
                break
            app.forget_lingering()

    # -- frame owners (media projects hook) -----------------------------------------------------

    def add_owner(self, owner: FrameOwner) -> None:
        """Route ``owner``'s frames through :meth:`deliver` until :meth:`remove_owner`."""
        app = self.apps.get(owner.app_key)
        if app is None:
            app = self.apps[owner.app_key] = _App(owner.app_key)
        app.owners[owner.key] = owner

    def remove_owner(self, owner: FrameOwner) -> None:
        """``owner`` ended: forget its frames (and its app, if nothing else holds it)."""
        owner.replay.clear()
        app = self.apps.get(owner.app_key)
        if app is None or app.owners.get(owner.key) is not owner:
            return
        del app.owners[owner.key]
        if not app.jobs and not app.lingering and not app.owners and app.socket is None:
            if app.grace is not None:
                app.grace.cancel()
            del self.apps[app.key]
        self._changes.notify()

    def detached_jobs(self) -> int:
        return sum(len(a.jobs) for a in self.apps.values() if not a.flowing)

    def lingering_jobs(self) -> int:
        """Finished jobs kept for resuming clients (pruned as they age past the grace)."""
        for app in list(self.apps.values()):
            self._forget_stale(app)
        return sum(len(a.lingering) for a in self.apps.values())

    def state_entries(self) -> int:
        """Every per-job entry held anywhere (see `NetworkStatistics.job_state_entries`)."""
        queued, running, queues = self.scheduler.statistics()
        app_entries = sum(len(a.jobs) for a in self.apps.values())
        detached_apps = sum(1 for a in self.apps.values() if a.socket is None and a.jobs)
        return len(self.jobs) + app_entries + queued + running + queues + detached_apps

    # -- job lifecycle --------------------------------------------------------------------------

    def submit(self, sock: SocketBinding, request: LLMJobRequest) -> LLMJobError | None:
        """Accept ``request`` (its task starts soon) or return the error to answer it with."""
        self.job_requests.append(request)
        app = self.apps[sock.app_key]
        if len(app.jobs) >= self.max_jobs_per_socket:
            message = (
                f"This connection already has {len(app.jobs)} live jobs (the limit is "
                f"{self.max_jobs_per_socket}); wait for some to finish."
            )
            return _error(request.job_id, TOO_MANY_JOBS, message, error_code="429")
        held = self._account_jobs.get(sock.account.id, 0)
        if held >= self.max_jobs_per_account:
            message = (
                f"This account already has {held} live jobs (the limit is "
                f"{self.max_jobs_per_account}); wait for some to finish."
            )
            return _error(request.job_id, TOO_MANY_JOBS, message, error_code="429")
        admitted = self._admit(request, sock.account.id, sock.app_id, Job)
        if isinstance(admitted, LLMJobError):
            return admitted
        self._account_jobs[admitted.account] = held + 1
        app.jobs[admitted.key] = admitted
        assert self._nursery is not None
        self._nursery.start_soon(self._run_job, admitted)
        return None

    def _admit(
        self,
        request: LLMJobRequest,
        account_id: str | None,
        app_id: str,
        make: Callable[..., Job],
    ) -> Job | LLMJobError:
        """Check ``request``, reserve its estimate from ``account_id`` (``None``: not billed) and
        register the job built by ``make``, or return the error that refuses it."""
        key = request.job_id.upper()
        spec = self.models.get(request.model)
        if self.closing:
            return _error(request.job_id, "server_restarting", RESTART_MESSAGE)
        problem = validate_request(request)
        if problem is not None:
            return _error(request.job_id, "invalid_request", problem)
        injected = inject_creative_tools(request)  # ``sogni_tools``: what the worker sees
        if isinstance(injected, str):
            return _error(request.job_id, "invalid_request", injected)
        request = injected
        if (account_id or "", key) in self.jobs:
            message = f"jobID {request.job_id} is already in use by a live job of this account"
            return _error(request.job_id, "invalid_request", message)
        if spec is None or not self.scheduler.serves(request.model):
            return self._unavailable(request.job_id, request.model)
        if isinstance(request.max_tokens, int) and request.max_tokens > spec.max_output_tokens:
            message = f"max_tokens must be at most {spec.max_output_tokens} for this model"
            return _error(request.job_id, "invalid_request", message)
        prompt_tokens = count_prompt_tokens(request)
        max_tokens = (
            request.max_tokens
            if isinstance(request.max_tokens, int)
            else spec.default_output_tokens
        )
        token_type = request.token_type if isinstance(request.token_type, str) else "sogni"
        estimate = self.pricing.estimate(prompt_tokens, max_tokens, token_type, model=request.model)
        hold = None
        if self.ledger is not None and account_id is not None:
            try:
                hold = self.ledger.reserve(account_id, token_type, Decimal(estimate))
            except InsufficientBalance as exc:
                return _error(request.job_id, "insufficient_balance", str(exc))
        self._seq += 1
        job = make(
            request=request,
            app_id=app_id,
            account=account_id if account_id is not None else "",
            seq=self._seq,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            estimated_cost=estimate,
        )
        job.hold = hold
        self.jobs[job.global_key] = job
        return job

    def start_internal(
        self,
        request: LLMJobRequest,
        *,
        account_id: str | None,
        on_message: Callable[[ServerMessage], Awaitable[None]],
    ) -> InternalJob | LLMJobError:
        """Admit ``request`` as a job that belongs to no socket and start it; return the job
        (its ``finished`` event is set when it has ended, its ``final`` is the last message) or
        the error that refused it. Synchronous.

        Admission, queueing, workers and billing (to ``account_id``; ``None``: not billed) are
        exactly those of a socket job. Every message the job produces (``jobState``, chunks, the
        final message) is awaited through ``on_message`` in order, which is the job's
        backpressure. The caller must end the job (:meth:`end_job`) if it stops waiting for it.
        A worker that sends pre-encoded frames (:class:`FirehoseWorker`) cannot serve such a job:
        it ends with ``internal_error``.
        """
        self.job_requests.append(request)
        admitted = self._admit(request, account_id, INTERNAL_APP_ID, InternalJob)
        if isinstance(admitted, LLMJobError):
            return admitted
        assert isinstance(admitted, InternalJob)
        admitted.on_message = on_message
        assert self._nursery is not None
        self._nursery.start_soon(self._run_job, admitted)
        return admitted

    async def run_internal(
        self,
        request: LLMJobRequest,
        *,
        account_id: str | None,
        on_message: Callable[[ServerMessage], Awaitable[None]],
    ) -> LLMJobResult | LLMJobError:
        """Run ``request`` as a job that belongs to no socket (e.g. a durable run's LLM round)
        and return its final ``llmJobResult`` or ``llmJobError`` (see :meth:`start_internal`).
        Cancelling the caller aborts the job (outcome ``aborted``, hold released).
        """
        admitted = self.start_internal(request, account_id=account_id, on_message=on_message)
        if isinstance(admitted, LLMJobError):
            return admitted
        try:
            await admitted.finished.wait()
        finally:
            if not admitted.finished.is_set():
                self.end_job(admitted, "aborted", None)
        final = admitted.final
        if final is None:  # pragma: no cover - every ending records its final message
            final = _error(request.job_id, "internal_error", "the job ended without a result")
        return final

    def abort(self, app_key: AppKey, job_id: str) -> None:
        """A socket of the app ``app_key`` aborted ``job_id``: stop it wherever it is, send
        nothing more. A job of another app (another account's, even with the same ``appId``) or
        an internal job is left alone, exactly like an unknown id."""
        self.aborted_job_ids.append(preview(job_id, 256))
        job = self.jobs.get((app_key[0], job_id.upper()))
        if job is None or isinstance(job, InternalJob) or job.app_key != app_key:
            logger.debug("localnet: abort for a job that is not live")
            return
        self.cancelled_job_ids.append(job.job_id)
        self.end_job(job, "aborted", None)

    def end_job(self, job: Job, outcome: JobOutcome, error: LLMJobError | None) -> None:
        """End ``job`` now: queue ``error`` (if given) to its socket, silence it, cancel its task
        and free its queue entry or worker capacity at once (the next job may start)."""
        if job.silenced:
            return
        if isinstance(job, InternalJob) and job.final is None:
            job.final = error or _error(job.job_id, outcome, f"The job ended ({outcome}).")
        if error is not None and not isinstance(job, InternalJob):
            payload = encode_server_message(error)
            job.replay.append(payload)
            app = self.apps.get(job.app_key)
            if app is not None and app.socket is not None and app.flowing:
                app.socket.driver.outbox.put_nowait(OutFrame(payload))
        job.end(outcome, silence=True)
        self.scheduler.discard(job)
        self._forget(job)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Job tasks and rebind-grace timers go to ``nursery`` from now on."""
        self._nursery = nursery

    def stop_accepting(self) -> None:
        """The first step of a shutdown: refuse new jobs from now on (live ones go on)."""
        self.closing = True

    def close(self) -> None:
        """The last step of a shutdown: refuse new jobs, stop the scheduler assigning work, and
        end every live job with ``server_restarting`` (its hold released, i.e. refunded)."""
        self.closing = True
        self.scheduler.closed = True
        self.end_all("server_restarting", "server_restarting", RESTART_MESSAGE)

    def end_all(self, outcome: JobOutcome, error: str, message: str) -> None:
        """End every live job with ``llmJobError {error, error_message: message}``."""
        for job in list(self.jobs.values()):
            self.end_job(job, outcome, _error(job.job_id, error, message))

    def _forget(self, job: Job) -> None:
        if job.hold is not None and self.ledger is not None:
            self.ledger.release(job.hold)  # no-op once settled
        if self.jobs.get(job.global_key) is not job:
            return
        del self.jobs[job.global_key]
        if not isinstance(job, InternalJob):
            left = self._account_jobs.pop(job.account, 1) - 1
            if left:
                self._account_jobs[job.account] = left
        app = self.apps.get(job.app_key)
        if app is not None:
            app.jobs.pop(job.key, None)
            self._linger(app, job)
            if not app.jobs and not app.lingering and not app.owners and app.socket is None:
                if app.grace is not None:
                    app.grace.cancel()
                del self.apps[app.key]
        outcome = job.outcome or "internal_error"
        self.job_records.append(
            JobRecord(job.job_id, job.app_id, job.model, outcome, job.worker_name)
        )
        self._changes.notify()

    def _linger(self, app: _App, job: Job) -> None:
        """Keep a finished job's last frames while its client may still lack them: for a
        resuming app, a job that ended with its own final frame (not aborted, not expired).
        Every job of a resuming app that ended with an answer is remembered (bounded, even after
        its app is gone), so that `resume` never invites a client to run it again."""
        if (
            app.resumes
            and not isinstance(job, InternalJob)
            and job.outcome not in (None, "aborted", "expired")
        ):
            self._forget_stale(app)
            entry = (app.key, job.key)
            self._ended[entry] = trio.current_time()
            self._ended.move_to_end(entry)
            while len(self._ended) > MAX_ENDED_IDS:
                self._ended.popitem(last=False)
        if (
            isinstance(job, InternalJob)
            or job.outcome in (None, "aborted", "expired")
            or not job.replay.count
            or self.rebind_grace <= 0
            or not app.resumes
        ):
            job.replay.clear()
            return
        job.replay.trim(LINGER_BYTES)
        if job.key in app.lingering:
            app.forget_lingering(job.key)
        app.lingering[job.key] = _Lingering(job.job_id, job.replay, trio.current_time())
        app.lingering_bytes += job.replay.size
        while len(app.lingering) > self.max_jobs_per_socket or (
            app.lingering_bytes > LINGERING_BYTES
        ):
            app.forget_lingering()

    # -- the job task ---------------------------------------------------------------------------

    async def deliver(
        self, job: Job | FrameOwner, payload: bytes | str, *, encoded: bool = False, frames: int = 1
    ) -> None:
        """Send one outbox item of ``job``'s frames to the socket holding its app: a frame's
        payload, or (``encoded``) ``frames`` complete encoded WebSocket frames.

        The item is logged in the job's :class:`ReplayLog` first. While the app has no socket
        (or its socket has yet to resume), the item is only logged, and when the job's unsent
        frames reach ``replay_bytes`` this waits until a socket takes the app back or the job
        ends. Always a checkpoint; waits while the socket's outbox is full (backpressure)."""
        log = job.replay
        app = self.apps.get(job.app_key)
        if (
            isinstance(job, Job)
            and app is not None
            and not app.flowing
            and log.count > log.detached_at
            and log.size + len(payload) > self.replay_bytes
        ):
            holder = app
            await self._changes.wait_until(
                lambda: holder.flowing or job.silenced or self.apps.get(job.app_key) is not holder
            )
            app = self.apps.get(job.app_key)
        log.append(payload, encoded=encoded, frames=frames)
        if app is None:  # the job ended with its app: nobody will ask for this frame
            self.frames_dropped += 1
            await trio.lowlevel.checkpoint()
            return
        sock = app.socket if app.flowing else None
        if sock is None:
            if not isinstance(job, Job):  # a frame owner never waits: keep the newest frames
                log.trim(self.replay_bytes)
            await trio.lowlevel.checkpoint()
            return
        log.trim(self._window(app))
        if encoded:
            assert isinstance(payload, bytes)
            await sock.driver.outbox.put(OutEncoded(payload, job))
        else:
            await sock.driver.outbox.put(OutFrame(payload, job))

    async def _emit(self, job: Job, message: ServerMessage) -> None:
        if isinstance(job, InternalJob):
            if isinstance(message, LLMJobResult | LLMJobError):
                job.final = message
            await job.on_message(message)
            return
        await self.deliver(job, encode_server_message(message))

    async def _emit_chunk(self, job: Job, chunk: ChatCompletionChunk) -> None:
        await self._emit(job, chunk)

    async def _emit_encoded(self, job: Job, data: bytes, frames: int) -> None:
        if isinstance(job, InternalJob):
            raise RuntimeError("pre-encoded frames cannot be delivered to an internal job")
        await self.deliver(job, data, encoded=True, frames=frames)

    async def _drop_for(self, job: Job, reset: bool) -> None:
        app = self.apps.get(job.app_key)
        if app is None or app.socket is None:
            await trio.lowlevel.checkpoint()
            return
        sock, holder = app.socket, app
        sock.driver.outbox.put_nowait(OutDrop(reset))
        await self._changes.wait_until(lambda: holder.socket is not sock)

    @staticmethod
    def _state(job: Job, kind: str, position: int | None = None) -> JobState:
        return JobState(
            job_id=job.job_id,
            type=kind,
            model_id=job.model,
            estimated_cost=job.estimated_cost if kind in {"pending", "queued"} else None,
            worker_name=job.worker_name if kind in {"assigned", "jobStarted"} else None,
            queue_position=position,
        )

    async def _run_job(self, job: Job) -> None:
        """The whole life of one job: pending, queued (position updates), assigned, jobStarted,
        the worker's chunks, then llmJobResult or llmJobError. Runs inside the job's cancel
        scope; whatever ends it, its queue entry or worker slot is released on the way out."""
        try:
            with job.cancel_scope:
                await self._emit(job, self._state(job, "pending"))
                position = self.scheduler.enqueue(job)
                self._changes.notify()
                await self._emit(job, self._state(job, "queued", position))
                while job.slot is None:
                    current = self.scheduler.position(job)
                    if current is not None and current != position:
                        position = current
                        await self._emit(job, self._state(job, "queued", position))
                        continue
                    await job.wait_for_change()
                slot = job.slot
                job.worker_name = slot.name
                self._changes.notify()
                await self._emit(job, self._state(job, "assigned"))
                await self._emit(job, self._state(job, "jobStarted"))
                started = trio.current_time()
                context = JobContext(
                    request=job.request,
                    worker_name=slot.name,
                    prompt_tokens=job.prompt_tokens,
                    max_tokens=job.max_tokens,
                    network_script=self.script,
                    send=partial(self._emit_chunk, job),
                    send_encoded=partial(self._emit_encoded, job),
                    drop=partial(self._drop_for, job),
                )
                await slot.chat_worker().run(context)
                if context.error is not None:
                    await self._emit(job, context.error)
                    job.outcome = job.outcome or "failed"
                else:
                    cost = self.pricing.cost(
                        context.prompt_tokens,  # a real worker's tokenizer count
                        context.completion_tokens,
                        job.token_type,
                        model=job.model,
                    )
                    result = LLMJobResult(
                        job_id=job.job_id,
                        usage=context.usage,
                        time_taken=round(trio.current_time() - started, 6),
                        cost=cost,
                        worker_name=slot.name,
                    )
                    hold = job.hold
                    if hold is not None and self.ledger is not None:
                        self.ledger.settle(hold, Decimal(str(cost.cost_in_token)))
                    try:
                        await self._emit(job, result)
                    finally:
                        if hold is not None and self._on_settled is not None:
                            self._on_settled(hold.account_id)
                    job.outcome = job.outcome or "completed"
        except Exception as exc:
            logger.exception("localnet: a job failed inside localnet (script or worker bug?)")
            self._errors.append(f"job {job.job_id}: {exc!r}")
            message = f"localnet internal error: {exc!r}"
            self.end_job(job, "internal_error", _error(job.job_id, "internal_error", message))
        finally:
            self.scheduler.discard(job)
            self._forget(job)
            if isinstance(job, InternalJob):
                job.finished.set()
                job.on_finished()
