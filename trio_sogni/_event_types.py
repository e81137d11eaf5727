"""The job events themselves: plain data, no Trio (the router builds them).

Chat kinds (the official ``ChatApiEvents``): ``token``, ``completed``, ``error``, ``jobState``,
``modelsUpdated``. Media project kinds (the official ``ProjectApiEvents``): ``project`` (a
project was queued or ended) and ``job`` (one render started, progressed, ended or was
retried). Delivery (subscriptions and callbacks) lives in `trio_sogni._events`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final, Literal, TypeAlias

import msgspec

from ._jobstate import ChatCompletionResult
from .protocol import ChatCompletionChunk, JobState, LLMModelInfo

__all__ = [
    "CHAT_EVENT_KINDS",
    "EVENT_KINDS",
    "PROJECT_EVENT_KINDS",
    "Callback",
    "ChatEvent",
    "CompletedEvent",
    "ErrorEvent",
    "EventKind",
    "JobStateEvent",
    "ModelsUpdatedEvent",
    "ProjectEvent",
    "ProjectEventKind",
    "RenderEvent",
    "TokenEvent",
]

EventKind: TypeAlias = Literal["token", "completed", "error", "jobState", "modelsUpdated"]
ProjectEventKind: TypeAlias = Literal["project", "job"]
CHAT_EVENT_KINDS: Final[frozenset[str]] = frozenset(
    ["token", "completed", "error", "jobState", "modelsUpdated"]
)
PROJECT_EVENT_KINDS: Final[frozenset[str]] = frozenset(["project", "job"])
EVENT_KINDS: Final[frozenset[str]] = CHAT_EVENT_KINDS | PROJECT_EVENT_KINDS


class TokenEvent(msgspec.Struct, frozen=True):
    """A ``jobTokens`` chunk arrived for some job."""

    kind: ClassVar[str] = "token"
    chunk: ChatCompletionChunk


class CompletedEvent(msgspec.Struct, frozen=True):
    """A job completed; ``result`` is its final result."""

    kind: ClassVar[str] = "completed"
    result: ChatCompletionResult


class ErrorEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A job failed (``llmJobError``)."""

    kind: ClassVar[str] = "error"
    job_id: str
    error: str
    error_code: str | None
    message: str
    worker_name: str | None


class JobStateEvent(msgspec.Struct, frozen=True):
    """A job changed state (``jobState``)."""

    kind: ClassVar[str] = "jobState"
    state: JobState


class ModelsUpdatedEvent(msgspec.Struct, frozen=True):
    """The LLM model map was replaced (``swarmLLMModels``)."""

    kind: ClassVar[str] = "modelsUpdated"
    models: dict[str, LLMModelInfo]


class ProjectEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A media project changed: ``type`` is ``queued`` (with ``queue_position`` and ``eta``,
    seconds until it starts), ``completed``, ``failed`` or ``canceled`` (with ``error``)."""

    kind: ClassVar[str] = "project"
    project_id: str
    type: str
    queue_position: int | None = None
    eta: float | None = None
    error: str | None = None
    """The failure's message (``failed`` / ``canceled``)."""


class RenderEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One render of a media project changed: ``type`` is ``started``, ``progress`` (``step``
    of ``step_count``, ``progress`` 0..1, ``eta`` seconds left), ``completed`` (with its
    ``seed`` and ``nsfw`` flag; the media itself comes from `Project.results`), ``canceled``,
    ``failed`` (``error``) or ``retry`` (its worker failed; it went back to the queue). Events
    carry no URL (signed URLs are credentials)."""

    kind: ClassVar[str] = "job"
    project_id: str
    type: str
    render_id: str | None = None
    index: int | None = None
    step: int | None = None
    step_count: int | None = None
    progress: float | None = None
    eta: float | None = None
    worker_name: str | None = None
    seed: str | None = None
    nsfw: bool = False
    error: str | None = None


ChatEvent: TypeAlias = (
    TokenEvent
    | CompletedEvent
    | ErrorEvent
    | JobStateEvent
    | ModelsUpdatedEvent
    | ProjectEvent
    | RenderEvent
)
Callback: TypeAlias = Callable[[ChatEvent], object]
