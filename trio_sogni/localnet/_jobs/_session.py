"""The sans-IO half of a WebSocket connection: handshake parsing and per-socket message logic.

:func:`parse_handshake` reads the upgrade request's query string. A :class:`Session` takes one
client frame at a time and returns *effects* (:class:`Reply`, :class:`Submit`, :class:`Abort`,
:class:`Resume`, :class:`Rejected`) for the network to carry out. Nothing here touches a socket, a clock or a job,
so it can be tested with plain function calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import msgspec

from ...protocol import (
    AbortJob,
    ChangeNetwork,
    JobError,
    JSONDecoder,
    LLMJobError,
    LLMJobRequest,
    MediaJobRequest,
    ResponseFormatJSONSchema,
    ResumeEntry,
    ResumeJobs,
    ServerMessage,
    SetSocketEventSubscriptions,
    SocketEventSubscriptionsUpdated,
    decode_client_message,
    decode_envelope,
)
from .._jsonschema import SchemaError, check_schema

__all__ = [
    "Abort",
    "Effect",
    "Handshake",
    "Rejected",
    "Reply",
    "Resume",
    "Session",
    "Submit",
    "SubmitProject",
    "parse_handshake",
    "validate_request",
]

logger = logging.getLogger("trio_sogni.localnet")

MAX_STOP_SEQUENCES: Final = 16
MAX_JOB_ID_LENGTH: Final = 128
MAX_APP_ID_LENGTH: Final = 256
"""A handshake whose ``appId`` is longer is refused (close 4010): ids are kept per job and per app."""

# --- handshake -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """What a client said in its upgrade request's URL (protocol.md §1.6).

    ``network`` is ``"relaxed"`` when ``forceWorkerId`` is present and empty, else ``"fast"``.
    ``problems`` lists parameters that were present but unusable (they are otherwise ignored).
    """

    path: str
    query: Mapping[str, str]
    app_id: str | None
    client_name: str | None
    client_type: str | None
    app_source: str | None
    force_worker_id: str | None
    network: Literal["fast", "relaxed"]
    socket_event_subscriptions: Mapping[str, bool]
    problems: tuple[str, ...] = ()
    job_resume: bool = False
    """``jobResume=1`` (a localnet extension, see ``docs/connections.md``): this client resumes
    its app's jobs with a ``resumeJobs`` frame right after ``authenticated``."""


_subscriptions_decoder: Final = JSONDecoder(dict[str, bool])


class _JobIDOnly(msgspec.Struct):
    job_id: object = msgspec.field(default=None, name="jobID")


_job_id_decoder: Final = JSONDecoder(_JobIDOnly)


def parse_handshake(target: str) -> Handshake:
    """Parse the request target (path and query) of a WebSocket upgrade. Never raises."""
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    problems: list[str] = []
    subscriptions: dict[str, bool] = {}
    raw = query.get("socketEventSubscriptions")
    if raw:
        try:
            subscriptions = _subscriptions_decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            problems.append(f"socketEventSubscriptions: {exc}")
    force = query.get("forceWorkerId")
    resume = query.get("jobResume")
    if resume not in (None, "0", "1"):
        problems.append("jobResume: expected 0 or 1")
    return Handshake(
        path=parts.path or "/",
        query=query,
        app_id=query.get("appId") or None,
        client_name=query.get("clientName"),
        client_type=query.get("clientType"),
        app_source=query.get("appSource"),
        force_worker_id=force,
        network="relaxed" if force == "" else "fast",
        socket_event_subscriptions=subscriptions,
        problems=tuple(problems),
        job_resume=resume == "1",
    )


# --- effects ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Send ``message`` to this socket."""

    message: ServerMessage


@dataclass(frozen=True)
class Submit:
    """Hand a well-formed job request to the scheduler (model and duplicate checks are its job)."""

    request: LLMJobRequest


@dataclass(frozen=True)
class SubmitProject:
    """Hand a media ``jobRequest`` to the projects manager (it validates it)."""

    request: MediaJobRequest


@dataclass(frozen=True)
class Abort:
    """The client asked to cancel ``job_id`` (a ``jobError`` frame)."""

    job_id: str
    error: str


@dataclass(frozen=True)
class Resume:
    """The client asked to take back its app's jobs (``resumeJobs``, a localnet extension)."""

    jobs: tuple[ResumeEntry, ...]


@dataclass(frozen=True)
class Rejected:
    """A frame was refused: it did not decode strictly, or a job request was invalid."""

    reason: str
    job_id: str | None
    message_type: str | None
    frame: bytes | str = field(repr=False)


Effect: TypeAlias = Reply | Submit | SubmitProject | Abort | Resume | Rejected
"""What the network must do after a client frame."""


# --- validation ------------------------------------------------------------------------------------


def _range(
    name: str, value: float | None, low: float, high: float, *, low_open: bool = False
) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} must be a finite number"
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        return f"{name} must be in {bracket}{low}, {high}], got {value}"
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def validate_request(request: LLMJobRequest) -> str | None:
    """Model-independent checks of a job request. Returns what is wrong, or ``None``.

    Every job is admitted through these checks (socket jobs when their frame is decoded, and
    every job again in ``JobManager`` admission, durable runs' and hosted completions' too)."""
    if not request.job_id or len(request.job_id) > MAX_JOB_ID_LENGTH:
        return f"jobID must be 1 to {MAX_JOB_ID_LENGTH} characters"
    if not request.model:
        return "model must not be empty"
    if not request.messages:
        return "messages must not be empty"
    if isinstance(request.max_tokens, int) and request.max_tokens < 1:
        return f"max_tokens must be at least 1, got {request.max_tokens}"
    checks = (
        _range("temperature", _number(request.temperature), 0.0, 2.0),
        _range("top_p", _number(request.top_p), 0.0, 1.0, low_open=True),
        _range("top_k", _number(request.top_k), -1, 1_000_000),
        _range("min_p", _number(request.min_p), 0.0, 1.0),
        _range("repetition_penalty", _number(request.repetition_penalty), 0.0, 10.0, low_open=True),
        _range("frequency_penalty", _number(request.frequency_penalty), -2.0, 2.0),
        _range("presence_penalty", _number(request.presence_penalty), -2.0, 2.0),
    )
    for problem in checks:
        if problem is not None:
            return problem
    stop = request.stop
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list):
        if len(stop) > MAX_STOP_SEQUENCES:
            return f"stop accepts at most {MAX_STOP_SEQUENCES} sequences"
        if any(not s for s in stop):
            return "stop sequences must not be empty"
    response_format = request.response_format
    if isinstance(response_format, ResponseFormatJSONSchema):
        schema = response_format.json_schema.schema
        if schema is not None:
            try:
                check_schema(schema)
            except SchemaError as exc:
                return f"response_format.json_schema.schema: {exc}"
    return None


def invalid_request(job_id: str, message: str) -> LLMJobError:
    """The ``llmJobError`` localnet answers a bad request with."""
    return LLMJobError(job_id=job_id, error="invalid_request", error_message=message)


def _salvage(frame: bytes | str) -> tuple[str | None, str | None]:
    """Best-effort ``(message type, jobID)`` of a frame that failed strict decoding."""
    try:
        message_type, payload = decode_envelope(frame)
    except msgspec.MsgspecError:
        return None, None
    try:
        job_id = _job_id_decoder.decode(payload).job_id
    except msgspec.MsgspecError:
        return message_type, None
    return message_type, (job_id if isinstance(job_id, str) and job_id else None)


# --- the session -----------------------------------------------------------------------------------


class Session:
    """One authenticated socket's protocol state: its ``appId``, network and event subscriptions.

    :meth:`receive_frame` is synchronous and never raises; every problem becomes an effect.
    """

    def __init__(self, handshake: Handshake) -> None:
        if handshake.app_id is None:
            raise ValueError("a session needs an appId")
        self.handshake = handshake
        self.app_id: str = handshake.app_id
        self.network: Literal["fast", "relaxed"] = handshake.network
        self.subscriptions: dict[str, bool] = dict(handshake.socket_event_subscriptions)

    def wants(self, group: str) -> bool:
        """Whether this socket receives the optional event group ``group`` (default: yes)."""
        return self.subscriptions.get(group, True)

    def receive_frame(self, frame: bytes | str) -> list[Effect]:
        """Decode one client frame strictly and decide what to do about it."""
        try:
            message = decode_client_message(frame)
        except (msgspec.MsgspecError, RecursionError) as exc:
            # RecursionError: msgspec gives up on absurdly deep JSON inside free-form fields.
            message_type, job_id = _salvage(frame)
            reason = f"{message_type or 'frame'}: {exc}"
            effects: list[Effect] = [Rejected(reason, job_id, message_type, frame)]
            if job_id is not None and message_type == MediaJobRequest.message_type:
                # A media project is refused with a project-level jobError (no imgID).
                refusal = JobError(job_id=job_id, error="invalid_request", error_message=reason)
                effects.append(Reply(refusal))
            elif job_id is not None:
                effects.append(Reply(invalid_request(job_id, reason)))
            return effects
        match message:
            case LLMJobRequest():
                problem = validate_request(message)
                if problem is not None:
                    return [
                        Rejected(problem, message.job_id, message.message_type, frame),
                        Reply(invalid_request(message.job_id, problem)),
                    ]
                return [Submit(message)]
            case MediaJobRequest():
                return [SubmitProject(message)]
            case AbortJob(job_id=job_id, error=error):
                if len(job_id) > MAX_JOB_ID_LENGTH:
                    # No job has such an id: refuse it quietly (nothing to echo back at length).
                    problem = f"jobID is longer than {MAX_JOB_ID_LENGTH} characters"
                    return [Rejected(problem, None, message.message_type, frame)]
                return [Abort(job_id, error)]
            case ResumeJobs(jobs=jobs):
                if not self.handshake.job_resume:
                    problem = "resumeJobs needs the jobResume=1 handshake parameter"
                    return [Rejected(problem, None, message.message_type, frame)]
                return [Resume(tuple(jobs))]
            case ChangeNetwork(network=network):
                self.network = network
                return [Reply(ChangeNetwork(network=network))]
            case SetSocketEventSubscriptions():
                self._apply_subscriptions(message)
                return [
                    Reply(
                        SocketEventSubscriptionsUpdated(
                            socket_event_subscriptions=dict(self.subscriptions)
                        )
                    )
                ]

    def _apply_subscriptions(self, update: SetSocketEventSubscriptions) -> None:
        if update.reset:
            self.subscriptions.clear()
        if update.subscriptions:
            self.subscriptions.update(update.subscriptions)
        for name in update.subscribe or ():
            self.subscriptions[name] = True
        for name in update.unsubscribe or ():
            self.subscriptions[name] = False
        if update.event is not None and update.enabled is not None:
            self.subscriptions[update.event] = update.enabled
