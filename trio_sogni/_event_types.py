"""The chat job events themselves: plain data, no Trio (the router builds them).

Kinds (the official ``ChatApiEvents``): ``token``, ``completed``, ``error``, ``jobState``,
``modelsUpdated``. Delivery (subscriptions and callbacks) lives in `trio_sogni._events`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final, Literal, TypeAlias

import msgspec

from ._jobstate import ChatCompletionResult
from .protocol import ChatCompletionChunk, JobState, LLMModelInfo

__all__ = [
    "EVENT_KINDS",
    "Callback",
    "ChatEvent",
    "CompletedEvent",
    "ErrorEvent",
    "EventKind",
    "JobStateEvent",
    "ModelsUpdatedEvent",
    "TokenEvent",
]

EventKind: TypeAlias = Literal["token", "completed", "error", "jobState", "modelsUpdated"]
EVENT_KINDS: Final[frozenset[str]] = frozenset(
    ["token", "completed", "error", "jobState", "modelsUpdated"]
)


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


ChatEvent: TypeAlias = TokenEvent | CompletedEvent | ErrorEvent | JobStateEvent | ModelsUpdatedEvent
Callback: TypeAlias = Callable[[ChatEvent], object]
