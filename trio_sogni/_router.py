"""The job router: the client's sans-IO core.

`JobRouter` is a plain state machine, after h11 and hypercorn: server frames go in (`feed_batch`,
`connected`, `connection_lost`), and what comes out is state — a `JobSlot` per live job, filled
and woken synchronously — plus a queue of job ids to abort on the server. It performs no I/O,
makes no Trio call and never blocks; it does not import Trio at all. The Trio side is
`trio_sogni._driver.JobDriver`, which sends job requests, hands slots to `ChatStream` s, and pumps
the abort queue to the socket.

Every frame is routed in O(1) (a dict lookup by job id). A malformed frame is counted and fails
the job it names (if any); it never reaches the caller as an exception.

Jobs survive a dropped connection when the server resumes them (a localnet extension, see
``docs/connections.md``): the router counts every frame of each job, keeps the jobs that were
running as *detached* when the connection dies, and, if the next ``authenticated`` says
``jobResume``, hands the transport a ``resumeJobs`` frame with those counts, so the server sends
exactly the frames the client lacks. A job the server cannot resume, or that is not resumed
within ``resume_window`` seconds, fails with a retryable ``transport_lost`` `ChatJobError`.

Media projects are the second kind of job here: a `ProjectSlot` per project
(`trio_sogni._projectstate`), fed by ``jobState`` / ``jobProgress`` / ``jobETA`` /
``jobResult`` / ``jobRetry`` / ``jobError`` / ``artistCancelConfirmation`` frames routed by
``jobID``. They take part in the same detach / ``resumeJobs`` mechanism (frames counted, listed
with the chat jobs, requests resent when the server never received them). A project the server
does not resume is *reconciled* instead when the new ``authenticated`` lists it
(``activeProjects`` / ``unclaimedCompletedProjects``: the snapshot brings it up to date and its
frames keep coming); otherwise it fails with a retryable `ProjectError` (``transport_lost``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec
from typing_extensions import override

from ._errors import (
    AuthenticationError,
    ChatJobError,
    ClientClosedError,
    ConnectionLost,
    InvalidRequestError,
    ProjectError,
    ProtocolError,
)
from ._event_types import (
    ChatEvent,
    CompletedEvent,
    ErrorEvent,
    JobStateEvent,
    ModelsUpdatedEvent,
    ProjectEvent,
    RenderEvent,
    TokenEvent,
)
from ._jobstate import JobSlot
from ._projectstate import ProjectSlot, RenderState, project_error
from .protocol import (
    MAX_JSON_DEPTH,
    MAX_RESUME_ENTRIES,
    ArtistCancelConfirmation,
    Authenticated,
    BalanceUpdate,
    ChatCompletionChunk,
    JobError,
    JobETA,
    JobProgress,
    JobResult,
    JobRetry,
    JobsResumed,
    JobState,
    JSONDecoder,
    LLMJobError,
    LLMJobResult,
    LLMModelInfo,
    ProjectQueue,
    ProjectSnapshot,
    ResumeEntry,
    ResumeJobs,
    SwarmLLMModels,
    SwarmModels,
    UnknownMessage,
    check_json_depth,
    decode_envelope,
    decode_server_payload,
    encode_client_message,
)

__all__ = ["MAX_PENDING_ABORTS", "ChatStatistics", "EventSink", "JobRouter", "Slot"]

Slot = JobSlot | ProjectSlot
"""Either kind of job the router keeps."""

logger = logging.getLogger("trio_sogni.chat")

MAX_PENDING_ABORTS: Final = 10_000
"""The abort queue and the set of abandoned job ids never hold more than this."""
_SHALLOW: Final = 2 * MAX_JSON_DEPTH
"""Frames no longer than this cannot nest deeply enough to matter: no depth check for them."""


class _JobRef(msgspec.Struct):
    jobID: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    type: str
    data: bytes


_job_ref_decoder: Final = JSONDecoder(_JobRef)
# The hot path: ``jobTokens`` frames are decoded here directly (envelope, then the chunk struct),
# skipping the generic dispatch of `decode_server_message`.
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_chunk_decoder: Final = msgspec.json.Decoder(ChatCompletionChunk)


class ChatStatistics(msgspec.Struct, kw_only=True, frozen=True):
    """Counters of the chat frame router (see ``sogni.chat.statistics()``)."""

    live_jobs: int
    frames: int
    malformed_frames: int
    unknown_frames: int
    late_frames: int
    pending_aborts: int
    aborts_sent: int
    detached_jobs: int = 0
    """Jobs whose connection died, waiting to be resumed on the next one."""
    jobs_resumed: int = 0
    """Jobs the server resumed after a reconnect (nothing lost, nothing repeated)."""
    jobs_not_resumed: int = 0
    """Jobs that failed with ``transport_lost`` because they could not be resumed."""
    requests_resent: int = 0
    """Job requests sent again after a reconnect because the server never received them."""
    live_projects: int = 0
    """Media projects in flight (sent or about to be, not ended)."""
    projects_reconciled: int = 0
    """Projects brought up to date from the server's snapshot after a reconnect."""


class EventSink(Protocol):
    """Where the router sends job events (`trio_sogni._events.EventHub`)."""

    @property
    def listening(self) -> set[str]:
        """The event kinds somebody listens to; events of other kinds are never built."""
        ...

    def emit(self, event: ChatEvent) -> None:
        """Deliver one event. Must not block or raise."""
        ...


def _job_error(message: LLMJobError) -> ChatJobError:
    error_type = str(message.error)
    text = message.error_message or error_type
    return ChatJobError(
        text,
        code=None if message.error_code is None else str(message.error_code),
        error_type=error_type,
        job_id=message.job_id,
        payload=message,
        worker_name=message.worker_name,
        subscription_limit=message.subscription_limit,
        required_plans=message.required_plans,
        feature=message.feature,
        limitation=message.limitation,
    )


def _nothing() -> None:
    return None


def _no_clock() -> float:
    return 0.0


def _lost_error(slot: Slot, why: str, cause: BaseException | None) -> ChatJobError | ProjectError:
    """The retryable error of a job or project lost with its connection."""
    error: ChatJobError | ProjectError
    if isinstance(slot, ProjectSlot):
        error = ProjectError(
            f"the connection was lost while the project was running ({why})",
            project_id=slot.job_id,
            code="transport_lost",
            retryable=True,
        )
    else:
        error = ChatJobError(
            f"the connection was lost while the job was running ({why})",
            error_type="transport_lost",
            job_id=slot.job_id,
            payload=None,
        )
    error.__cause__ = cause
    return error


class JobRouter:
    """Routes server frames to jobs and keeps the abort queue. No I/O, no Trio, never blocks.

    Outputs: each job's `JobSlot` (chunks, result or error; its waiting consumers are woken
    through the slot), job events through ``events``, the latest models / balance /
    ``authenticated`` frame, and `pop_abort` for the job ids the driver must abort.
    ``wake_aborts`` is called whenever the abort queue goes from empty to non-empty,
    ``wake_models`` whenever a non-empty model map arrives, and ``wake_detached`` whenever jobs
    detach (a new `detach_deadline`). With ``wake_lookups``, a project that a new connection
    neither resumed nor listed is not failed at once: it is queued for a REST look-up
    (`pop_lookup`, answered with `looked_up`), and ``wake_lookups`` is called when that queue
    stops being empty. ``clock`` tells the time (seconds, any origin: the driver
    passes Trio's); ``resume_window`` is how long detached jobs wait for a connection that
    resumes them (``0``: jobs fail as soon as their connection dies).
    """

    def __init__(
        self,
        *,
        max_buffered_chunks: int,
        events: EventSink,
        wake_aborts: Callable[[], object] = _nothing,
        wake_models: Callable[[], object] = _nothing,
        wake_detached: Callable[[], object] = _nothing,
        wake_media_models: Callable[[], object] = _nothing,
        wake_lookups: Callable[[], object] | None = None,
        clock: Callable[[], float] = _no_clock,
        resume_window: float = 0.0,
    ) -> None:
        if not resume_window >= 0:
            raise ValueError("resume_window must be a non-negative number of seconds")
        self._jobs: dict[str, JobSlot] = {}
        self._projects: dict[str, ProjectSlot] = {}
        self._max_buffer = max_buffered_chunks
        self._events = events
        self._wake_aborts = wake_aborts
        self._wake_models = wake_models
        self._wake_detached = wake_detached
        self._wake_media_models = wake_media_models
        self._wake_lookups = wake_lookups
        self._lookups: deque[ProjectSlot] = deque()
        self._clock = clock
        self.resume_window = resume_window
        self._detached: dict[str, Slot] = {}
        self._snapshots: dict[str, ProjectSnapshot] = {}
        """Detached projects the latest ``authenticated`` listed (to reconcile from)."""
        self._reconciled = 0
        self._detach_deadline: float | None = None
        self._lost_cause: BaseException | None = None
        self._awaiting_resume = False
        self._resumed = 0
        self._not_resumed = 0
        self._aborts: deque[str] = deque(maxlen=MAX_PENDING_ABORTS)
        self._resends: deque[Slot] = deque()
        self._resent = 0
        self._abandoned: set[str] = set()
        self._closed: BaseException | None = None
        self.models: dict[str, LLMModelInfo] = {}
        """The latest LLM model map (replaced, never mutated, by each ``swarmLLMModels``)."""
        self.media_models: dict[str, int] = {}
        """The latest media model map ``{modelId: workerCount}`` (replaced by each
        ``swarmModels``)."""
        self.balance: BalanceUpdate | None = None
        """The latest ``balanceUpdate``."""
        self.authenticated: Authenticated | None = None
        """The latest ``authenticated`` frame."""
        self._frames = 0
        self._malformed = 0
        self._unknown = 0
        self._late = 0
        self._aborts_sent = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            JobState: self._on_job_state,
            LLMJobResult: self._on_result,
            LLMJobError: self._on_error,
            SwarmLLMModels: self._on_models,
            SwarmModels: self._on_media_models,
            JobProgress: self._on_progress,
            JobETA: self._on_eta,
            JobResult: self._on_media_result,
            JobRetry: self._on_retry,
            JobError: self._on_media_error,
            ArtistCancelConfirmation: self._on_cancel_confirmation,
            ProjectQueue: self._on_project_queue,
            BalanceUpdate: self._on_balance,
            Authenticated: self._on_authenticated,
            JobsResumed: self._on_resumed,
            UnknownMessage: self._on_unknown,
        }

    @override
    def __repr__(self) -> str:
        return (
            f"<JobRouter live_jobs={len(self._jobs)} live_projects={len(self._projects)} "
            f"models={len(self.models)}>"
        )

    @property
    def closed(self) -> BaseException | None:
        """The error the router was closed with, or ``None`` while it is open."""
        return self._closed

    # --- frames in (the transport's FrameSink) ----------------------------------------------------

    def feed(self, frame: bytes | str) -> None:
        """Route one frame (see `feed_batch`)."""
        self.feed_batch((frame,))

    def feed_batch(self, frames: Sequence[bytes | str]) -> None:
        """Route every frame of one socket read, in order. Never raises.

        ``jobTokens`` take a fast path (two decodes, one dict lookup, one push); everything else
        is decoded tolerantly and dispatched by type. A frame that does not decode fails the job
        it names (if any) and is skipped; a bug in a handler is logged and the frame skipped.
        """
        self._frames += len(frames)
        jobs = self._jobs
        events = self._events
        listening = events.listening
        decode_envelope_ = _envelope_decoder.decode
        decode_chunk = _chunk_decoder.decode
        for frame in frames:
            try:
                long = len(frame) > _SHALLOW  # a short frame's payload is shorter still
                if long:
                    check_json_depth(frame)
                envelope = decode_envelope_(frame)
                if envelope.type == "jobTokens":
                    data = envelope.data
                    if long:
                        check_json_depth(data)
                    chunk = decode_chunk(data)
                    slot = jobs.get(chunk.job_id)
                    if slot is None:
                        slot = self._slot(chunk.job_id)
                        if slot is None:
                            continue
                    else:
                        slot.frames += 1
                    slot.push(chunk)
                    if "token" in listening:
                        events.emit(TokenEvent(chunk))
                    continue
                message = decode_server_payload(envelope.type, envelope.data)
                handler = self._handlers.get(type(message))
                if handler is not None:
                    handler(message)
            except (msgspec.MsgspecError, RecursionError) as exc:
                self._on_malformed(frame, exc)
            except Exception:
                logger.exception("error while handling a server frame; frame skipped")

    @property
    def detach_deadline(self) -> float | None:
        """When detached jobs stop waiting to be resumed (``clock`` time), or ``None``."""
        return self._detach_deadline if self._detached else None

    def connected(self, authenticated: Authenticated) -> list[bytes]:
        """A connection authenticated. Returns the frames to send before anything else.

        If the server resumes jobs (``jobResume: true``), that is a ``resumeJobs`` frame listing
        the detached jobs with their frame counts (an empty list when none is detached, so the
        server stops holding this app's frames). Otherwise detached jobs fail with
        ``transport_lost``, and jobs this client gave up on that the server still runs
        (``activeLLMJobIDs``) are queued for abort.
        """
        self.authenticated = authenticated
        hello: list[bytes] = []
        self._snapshots.clear()
        listed = (
            *(authenticated.active_projects or ()),
            *(authenticated.unclaimed_completed_projects or ()),
        )
        for snapshot in listed:
            key = snapshot.id.upper()
            slot = self._detached.get(key) or self._detached.get(snapshot.id)
            if isinstance(slot, ProjectSlot):
                self._snapshots[slot.job_id] = snapshot
        detached = list(self._detached.values())
        if authenticated.job_resume:
            keep = detached[:MAX_RESUME_ENTRIES]
            entries = [ResumeEntry(job_id=slot.job_id, received=slot.frames) for slot in keep]
            hello.append(encode_client_message(ResumeJobs(jobs=entries)))
            self._awaiting_resume = True
            for slot in detached[MAX_RESUME_ENTRIES:]:
                self._not_resumable(slot, "too many jobs to resume at once")
        else:
            for slot in detached:
                self._not_resumable(slot, "the server does not resume jobs", lookup=True)
        active = [
            *authenticated.active_llm_job_ids,
            *(p.id for p in authenticated.active_projects or ()),
        ]
        for job_id in active:
            key = job_id.upper()
            if key in self._abandoned and key not in self._jobs and key not in self._projects:
                self._queue_abort(job_id)
        self._abandoned.clear()
        return hello

    def connection_lost(self, error: ConnectionLost | AuthenticationError) -> None:
        """The connection died. With a ``resume_window``, every job already sent detaches and
        waits for the next connection to resume it (see `connected`); otherwise, and always
        when the server rejected the credentials (close code 4021, an `AuthenticationError`),
        every live job fails now: with a retryable ``transport_lost`` `ChatJobError` (caused by
        ``error``) or with the `AuthenticationError`. Failed jobs that were sent are remembered
        as abandoned (aborted if the server still reports them)."""
        self._awaiting_resume = False
        if self.resume_window > 0 and not isinstance(error, AuthenticationError):
            self._lost_cause = error
            fresh = not self._detached
            live: list[Slot] = [*self._jobs.values(), *self._projects.values()]
            for slot in live:
                if slot.sent and not slot.done and not slot.detached:
                    slot.detached = True
                    self._detached[slot.job_id] = slot
            if fresh and self._detached:
                self._detach_deadline = self._clock() + self.resume_window
                self._wake_detached()
            return
        every: list[Slot] = [*self._jobs.values(), *self._projects.values()]
        self._jobs.clear()
        self._projects.clear()
        self._detached.clear()
        for slot in every:
            if isinstance(error, AuthenticationError):
                rejected = AuthenticationError(str(error))
                rejected.__cause__ = error
                self._fail(slot, rejected)
            else:
                self._fail(slot, _lost_error(slot, str(error), error))
            if slot.sent:
                self._abandoned.add(slot.job_id)
        if len(self._abandoned) > MAX_PENDING_ABORTS:
            self._abandoned.clear()

    def expire_detached(self) -> float | None:
        """Fail the detached jobs whose ``resume_window`` has passed; returns the deadline of
        those still waiting (``None``: none is)."""
        deadline = self.detach_deadline
        if deadline is not None and self._clock() >= deadline:
            for slot in list(self._detached.values()):
                why = f"not resumed within {self.resume_window:g} s"
                self._not_resumable(slot, why)
        return self.detach_deadline

    def _not_resumable(self, slot: Slot, why: str, *, lookup: bool = False) -> None:
        """Fail a detached job with ``transport_lost``; it is aborted if the server still runs
        it (its id is remembered as abandoned). A detached project the latest
        ``authenticated`` listed is reconciled from its snapshot instead; with ``lookup`` (a
        connection is up) and look-ups wired, one it did not list is queued for a look-up."""
        self._detached.pop(slot.job_id, None)
        slot.detached = False
        if isinstance(slot, ProjectSlot):
            snapshot = self._snapshots.pop(slot.job_id, None)
            if snapshot is not None and self._projects.get(slot.job_id) is slot:
                self._reconcile(slot, snapshot)
                return
            if (
                lookup
                and self._wake_lookups is not None
                and self._projects.get(slot.job_id) is slot
                and len(self._lookups) < MAX_PENDING_ABORTS
            ):
                empty = not self._lookups
                self._lookups.append(slot)
                if empty:
                    self._wake_lookups()
                return
        if not self._forget(slot):
            return
        self._not_resumed += 1
        self._fail(slot, _lost_error(slot, why, self._lost_cause))
        self._abandoned.add(slot.job_id)
        if len(self._abandoned) > MAX_PENDING_ABORTS:
            self._abandoned.clear()

    def _reconcile(self, slot: ProjectSlot, snapshot: ProjectSnapshot) -> None:
        """A project the server did not resume but still lists: bring it up to date from the
        snapshot; its frames keep coming on the new connection."""
        self._reconciled += 1
        slot.request = None
        slot.apply_snapshot(snapshot)
        if slot.done:
            self._projects.pop(slot.job_id, None)
            self._project_ended(slot)

    def pop_lookup(self) -> ProjectSlot | None:
        """The next project to look up on the REST API (``GET /v1/projects/{id}``), or
        ``None``. Projects that ended meanwhile are skipped."""
        while self._lookups:
            slot = self._lookups.popleft()
            if not slot.done and self._projects.get(slot.job_id) is slot:
                return slot
        return None

    def looked_up(self, slot: ProjectSlot, snapshot: ProjectSnapshot | None) -> None:
        """The answer to a look-up: reconcile the project from ``snapshot``, or (``None``: the
        server does not know it, or the look-up failed) fail it with a retryable
        ``transport_lost`` `ProjectError`."""
        if slot.done or self._projects.get(slot.job_id) is not slot:
            return
        if snapshot is not None:
            self._reconcile(slot, snapshot)
            return
        self._projects.pop(slot.job_id, None)
        self._not_resumed += 1
        self._fail(
            slot, _lost_error(slot, "the server no longer knows the project", self._lost_cause)
        )

    def _forget(self, slot: Slot) -> bool:
        """Deregister ``slot``; whether it was registered."""
        if isinstance(slot, ProjectSlot):
            return self._projects.pop(slot.job_id, None) is not None
        return self._jobs.pop(slot.job_id, None) is not None

    def _registered(self, slot: Slot) -> bool:
        if isinstance(slot, ProjectSlot):
            return self._projects.get(slot.job_id) is slot
        return self._jobs.get(slot.job_id) is slot

    def _fail(self, slot: Slot, error: BaseException) -> None:
        if isinstance(slot, ProjectSlot):
            if not slot.done:
                slot.fail(error)
                self._project_ended(slot)
        else:
            slot.fail(error)

    def _on_resumed(self, message: JobsResumed) -> None:
        if not self._awaiting_resume:
            logger.debug("ignored an unexpected jobsResumed")
            return
        self._awaiting_resume = False
        for entry in message.jobs:
            slot = self._detached.get(entry.job_id) or self._detached.get(entry.job_id.upper())
            if slot is None:
                continue
            if entry.status == "resumed":
                del self._detached[slot.job_id]
                slot.detached = False
                self._resumed += 1
            elif (
                entry.status == "unknown"
                and slot.request is not None
                and not slot.frames
                and slot.job_id not in self._snapshots
            ):
                # The request died with the connection: the server never saw it. Send it again.
                del self._detached[slot.job_id]
                slot.detached = False
                empty = not self._aborts and not self._resends
                self._resends.append(slot)
                if empty:
                    self._wake_aborts()
            else:
                why = (
                    "the server no longer holds all of its frames"
                    if entry.status == "gap"
                    else "the server no longer knows the job"
                )
                self._not_resumable(slot, why, lookup=True)
        for slot in list(self._detached.values()):
            self._not_resumable(slot, "the server did not resume it", lookup=True)
        self._snapshots.clear()

    # --- frame handlers -------------------------------------------------------------------------

    def _slot(self, job_id: str) -> JobSlot | None:
        slot = self._jobs.get(job_id)
        if slot is None:
            slot = self._jobs.get(job_id.upper())
            if slot is None:
                self._late += 1
                return None
        slot.frames += 1
        slot.request = None
        return slot

    def _project(self, job_id: str) -> ProjectSlot | None:
        """The live project a frame names (counted as one of its frames), or ``None`` (a late
        frame, counted)."""
        slot = self._projects.get(job_id)
        if slot is None:
            slot = self._projects.get(job_id.upper())
            if slot is None:
                self._late += 1
                return None
        slot.frames += 1
        slot.request = None
        return slot

    def _on_job_state(self, state: JobState) -> None:
        if self._projects:
            project = self._projects.get(state.job_id) or self._projects.get(state.job_id.upper())
            if project is not None:
                self._on_project_state(project, state)
                return
        slot = self._slot(state.job_id)
        if slot is not None:
            slot.set_worker(state.worker_name)
            if "jobState" in self._events.listening:
                self._events.emit(JobStateEvent(state))

    def _on_result(self, result: LLMJobResult) -> None:
        slot = self._slot(result.job_id)
        if slot is None:
            return
        del self._jobs[slot.job_id]
        self._detached.pop(slot.job_id, None)
        time_taken = None if result.time_taken is None else float(result.time_taken)
        slot.complete(result.usage, time_taken, result.cost, result.worker_name)
        if "completed" in self._events.listening:
            self._events.emit(CompletedEvent(slot.result()))

    def _on_error(self, message: LLMJobError) -> None:
        slot = self._slot(message.job_id)
        if slot is None:
            return
        del self._jobs[slot.job_id]
        self._detached.pop(slot.job_id, None)
        slot.set_worker(message.worker_name)
        slot.fail(_job_error(message))
        if "error" in self._events.listening:
            self._events.emit(
                ErrorEvent(
                    job_id=slot.job_id,
                    error=str(message.error),
                    error_code=None if message.error_code is None else str(message.error_code),
                    message=message.error_message or str(message.error),
                    worker_name=message.worker_name,
                )
            )

    # --- media project frames ---------------------------------------------------------------------

    def _project_ended(self, slot: ProjectSlot) -> None:
        """Deregistered already; emit its ``project`` event."""
        self._detached.pop(slot.job_id, None)
        if "project" in self._events.listening:
            error = slot.error
            self._events.emit(
                ProjectEvent(
                    project_id=slot.job_id,
                    type=slot.status,
                    error=None if error is None else str(error),
                )
            )

    def _after_project_frame(self, slot: ProjectSlot) -> None:
        if slot.done:
            self._projects.pop(slot.job_id, None)
            self._project_ended(slot)

    def _render_event(self, slot: ProjectSlot, kind: str, render: RenderState | None) -> None:
        if render is None or "job" not in self._events.listening:
            return
        self._events.emit(
            RenderEvent(
                project_id=slot.job_id,
                type=kind,
                render_id=render.img_id,
                index=render.index,
                step=render.step,
                step_count=render.step_count,
                progress=render.progress,
                eta=render.eta,
                worker_name=render.worker_name,
                seed=None if render.result is None else render.result.last_seed,
                nsfw=render.result is not None and render.result.triggered_nsfw_filter,
                error=None if render.error is None else str(render.error),
            )
        )

    def _on_project_state(self, slot: ProjectSlot, state: JobState) -> None:
        slot.frames += 1
        slot.request = None
        was = slot.status
        slot.on_state(state)
        listening = self._events.listening
        if state.type == "queued" and "project" in listening and was in ("pending", "queued"):
            self._events.emit(
                ProjectEvent(
                    project_id=slot.job_id,
                    type="queued",
                    queue_position=slot.queue_position,
                    eta=slot.eta,
                )
            )
        elif state.type in ("jobStarted", "initiatingModel"):
            self._render_event(slot, "started", slot.render(state.img_id, state.job_index))
        if "jobState" in listening:
            self._events.emit(JobStateEvent(state))
        self._after_project_frame(slot)

    def _on_project_queue(self, message: ProjectQueue) -> None:
        slot = self._project(message.job_id)
        if slot is not None and message.queue_position is not None:
            eta = message.estimated_start_seconds
            slot.on_state(
                JobState(
                    job_id=slot.job_id,
                    type="queued",
                    queue_position=message.queue_position,
                    estimated_start_seconds=eta,
                )
            )

    def _on_progress(self, message: JobProgress) -> None:
        slot = self._project(message.job_id)
        if slot is not None:
            slot.on_progress(message)
            if "job" in self._events.listening:
                self._render_event(slot, "progress", slot.render(message.img_id, message.job_index))

    def _on_eta(self, message: JobETA) -> None:
        slot = self._project(message.job_id)
        if slot is not None:
            eta = message.eta_seconds
            slot.on_eta(message.img_id, None if eta is None else float(eta))

    def _on_media_result(self, message: JobResult) -> None:
        slot = self._project(message.job_id)
        if slot is None:
            return
        slot.on_result(message)
        kind = "canceled" if message.user_canceled else "completed"
        self._render_event(slot, kind, slot.render(message.img_id, message.job_index))
        self._after_project_frame(slot)

    def _on_retry(self, message: JobRetry) -> None:
        slot = self._project(message.job_id)
        if slot is not None:
            slot.on_retry(message.img_id, message.job_index)
            self._render_event(slot, "retry", slot.render(message.img_id, message.job_index))

    def _on_media_error(self, message: JobError) -> None:
        slot = self._project(message.job_id)
        if slot is None:
            return
        if message.img_id is None:
            code = None if message.error is None else str(message.error)
            canceled = code in ("artistCanceled", "userCanceled")
            slot.fail(project_error(message, slot.job_id), "canceled" if canceled else "failed")
        else:
            slot.on_render_error(message)
            self._render_event(slot, "failed", slot.render(message.img_id, message.job_index))
        self._after_project_frame(slot)

    def _on_cancel_confirmation(self, message: ArtistCancelConfirmation) -> None:
        slot = self._project(message.job_id)
        if slot is None or not message.did_cancel:
            return
        slot.fail(
            ProjectError(
                message.error_message or "the project was cancelled",
                project_id=slot.job_id,
                code="artistCanceled",
                payload=message,
            ),
            "canceled",
        )
        self._after_project_frame(slot)

    def _on_media_models(self, message: SwarmModels) -> None:
        self.media_models = message.models
        if message.models:
            self._wake_media_models()

    def _on_models(self, message: SwarmLLMModels) -> None:
        self.models = message.models
        if message.models:
            self._wake_models()
        if "modelsUpdated" in self._events.listening:
            self._events.emit(ModelsUpdatedEvent(dict(message.models)))

    def _on_balance(self, message: BalanceUpdate) -> None:
        self.balance = message

    def _on_authenticated(self, message: Authenticated) -> None:
        self.authenticated = message

    def _on_unknown(self, message: UnknownMessage) -> None:
        self._unknown += 1
        logger.debug("ignored a %r frame (unknown type)", message.type)

    def _on_malformed(self, frame: bytes | str, exc: Exception) -> None:
        self._malformed += 1
        raw = frame.encode() if isinstance(frame, str) else frame
        logger.warning("malformed server frame skipped: %s (frame starts %r)", exc, raw[:80])
        try:
            _, payload = decode_envelope(frame)
            job_id = _job_ref_decoder.decode(payload).jobID
        except msgspec.MsgspecError:
            return
        if job_id is None:
            return
        project = self._projects.get(job_id) or self._projects.get(job_id.upper())
        if project is not None:
            del self._projects[project.job_id]
            error = ProtocolError(
                f"undecodable frame for project {project.job_id}: {exc}", frame=raw
            )
            error.__cause__ = exc
            project.fail(error)
            self._project_ended(project)
            self._queue_abort(project.job_id)
            return
        slot = self._slot(job_id)
        if slot is not None:
            # Never lose data silently: the job this frame belonged to fails loudly.
            del self._jobs[slot.job_id]
            self._detached.pop(slot.job_id, None)
            error = ProtocolError(f"undecodable frame for job {slot.job_id}: {exc}", frame=raw)
            error.__cause__ = exc
            slot.fail(error)
            self._queue_abort(slot.job_id)

    # --- job lifecycle (driven by the JobDriver) ------------------------------------------------

    def register(self, job_id: str, model: str) -> JobSlot:
        """Create and register the slot of a job about to be sent, so that no reply can race it.

        Raises:
            ClientClosedError: the router was closed.
            InvalidRequestError: a live job already has this id.
        """
        if self._closed is not None:
            raise ClientClosedError("the client is closed")
        if job_id in self._jobs:
            raise InvalidRequestError(f"job id {job_id!r} is already in use")
        slot = JobSlot(job_id, model, self._max_buffer)
        self._jobs[job_id] = slot
        return slot

    def register_project(
        self,
        job_id: str,
        model: str,
        *,
        media_type: str,
        output_format: str | None,
        expected: int,
    ) -> ProjectSlot:
        """Create and register the slot of a media project about to be sent (as `register`).

        Raises:
            ClientClosedError: the router was closed.
            InvalidRequestError: a live job or project already has this id.
        """
        if self._closed is not None:
            raise ClientClosedError("the client is closed")
        if job_id in self._projects or job_id in self._jobs:
            raise InvalidRequestError(f"project id {job_id!r} is already in use")
        slot = ProjectSlot(job_id, model, media_type, output_format, expected)
        self._projects[job_id] = slot
        return slot

    def sent(self, slot: Slot, request: bytes | None = None) -> None:
        """The job's request is on the wire: from now on, giving up on it needs an abort. With a
        ``resume_window``, ``request`` (the frame) is kept until the server answers the job, to
        be sent again if the server says it never received it. A job the server already
        answered while its request was being sent (its frames counted) does not keep it."""
        slot.sent = True
        if self.resume_window > 0 and not slot.frames:
            slot.request = request

    def unsent(self, slot: Slot) -> None:
        """Sending the job's request failed or was cancelled: forget the job. The request may
        have reached the server all the same (a cancel or a loss can land after its bytes were
        written), so its abort is queued, and it is remembered as abandoned (aborted after the
        next reconnect if the server reports it); an abort of a job the server never saw is
        ignored there."""
        self._forget(slot)
        if isinstance(slot, ProjectSlot):
            slot.close()
        else:
            slot.closed = True
        if self._closed is None:
            self._queue_abort(slot.job_id)
            self._abandoned.add(slot.job_id)
            if len(self._abandoned) > MAX_PENDING_ABORTS:
                self._abandoned.clear()

    def release(self, slot: Slot, error: BaseException | None = None) -> bool:
        """A consumer closed the job's stream (or left a project's scope, or cancelled it).
        Deregister it; returns whether the job still runs on the server (then it is failed
        locally with ``error``, by default `ClientClosedError` for a job and a cancelled
        `ProjectError` for a project, and the caller should send an abort, reporting the
        outcome with `abort_done`)."""
        self._forget(slot)
        self._detached.pop(slot.job_id, None)
        if slot.done or not slot.sent:
            return False
        if isinstance(slot, ProjectSlot):
            slot.fail(
                error
                or ProjectError(
                    "the project was cancelled by this client",
                    project_id=slot.job_id,
                    code="artistCanceled",
                ),
                "canceled",
            )
            self._project_ended(slot)
        else:
            slot.fail(error or ClientClosedError("the stream was closed before the job finished"))
        return True

    def abort_done(self, job_id: str, sent: bool) -> None:
        """Report an abort the driver tried to send: counted if sent, else the job is remembered
        as abandoned (and aborted after the next reconnect if the server still runs it)."""
        if sent:
            self._aborts_sent += 1
        else:
            self._abandoned.add(job_id)
            if len(self._abandoned) > MAX_PENDING_ABORTS:
                self._abandoned.clear()

    def orphaned(self, slot: Slot) -> None:
        """A stream (or project) was dropped unclosed (garbage-collected): deregister it now and
        queue an abort if the job was sent."""
        self._detached.pop(slot.job_id, None)
        if self._forget(slot) and slot.sent and not slot.done:
            self._queue_abort(slot.job_id)

    def _queue_abort(self, job_id: str) -> None:
        empty = not self._aborts
        self._aborts.append(job_id)
        if empty:
            self._wake_aborts()

    def pop_abort(self) -> str | None:
        """The next job id to abort on the server, or ``None`` if the queue is empty."""
        return self._aborts.popleft() if self._aborts else None

    def pop_resend(self) -> bytes | None:
        """The next request to send again (a job whose request the server never received), or
        ``None`` if there is none. Jobs that ended meanwhile are skipped."""
        while self._resends:
            slot = self._resends.popleft()
            if not slot.done and slot.request is not None and self._registered(slot):
                self._resent += 1
                return slot.request
        return None

    def close(self, error: BaseException) -> list[Slot]:
        """Fail every live job and project with ``error`` and refuse new ones. Returns those
        that were live (the caller aborts those that were sent)."""
        self._closed = error
        live: list[Slot] = [*self._jobs.values(), *self._projects.values()]
        self._jobs.clear()
        self._projects.clear()
        self._detached.clear()
        self._resends.clear()
        self._lookups.clear()
        for slot in live:
            self._fail(slot, error)
        return live

    def statistics(self) -> ChatStatistics:
        """Router counters: malformed / unknown / late frames are counted, never silently lost."""
        return ChatStatistics(
            live_jobs=len(self._jobs),
            frames=self._frames,
            malformed_frames=self._malformed,
            unknown_frames=self._unknown,
            late_frames=self._late,
            pending_aborts=len(self._aborts),
            aborts_sent=self._aborts_sent,
            detached_jobs=len(self._detached),
            jobs_resumed=self._resumed,
            jobs_not_resumed=self._not_resumed,
            requests_resent=self._resent,
            live_projects=len(self._projects),
            projects_reconciled=self._reconciled,
        )
