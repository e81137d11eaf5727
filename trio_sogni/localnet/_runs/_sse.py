"""Run events as clients see them: the sogni-protocol vocabulary, the wire object and SSE.

Event types and statuses are those of ``@sogni-ai/sogni-protocol`` (``run-event.schema.json``,
``enums/chat-run-status.json``, ``enums/chat-run-waiting-reasons.json``, copied into
``localnet/_data/sogni-protocol``). :func:`wire_event` is an event's JSON object (SSE ``data``
and ``record.events``); :func:`sse_frame` one complete SSE message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Final, cast

import msgspec

from ._store import StoredEvent

__all__ = [
    "TERMINAL_EVENT_TYPES",
    "TERMINAL_STATUSES",
    "event_types",
    "iso",
    "run_statuses",
    "sse_frame",
    "waiting_reasons",
    "wire_event",
]

TERMINAL_STATUSES: Final = frozenset({"completed", "partial_failure", "failed", "cancelled"})
TERMINAL_EVENT_TYPES: Final = frozenset(
    {"run_completed", "run_failed", "run_partial_failure", "run_cancelled"}
)
_RESUMABLE_TYPES: Final = frozenset({"run_waiting_for_user", "run_awaiting_cost_confirmation"})


def _data(name: str) -> Any:
    text = resources.files("trio_sogni.localnet").joinpath(f"_data/{name}").read_text("utf-8")
    return json.loads(text)


@cache
def event_types() -> frozenset[str]:
    """Every run event type of ``run-event.schema.json`` (sogni-protocol)."""
    schema = _data("sogni-protocol/schemas/run-event.schema.json")
    return frozenset(cast("list[str]", schema["$defs"]["RunEventType"]["enum"]))


@cache
def run_statuses() -> frozenset[str]:
    """Every chat run status of ``enums/chat-run-status.json`` (sogni-protocol)."""
    return frozenset(
        cast("list[str]", _data("sogni-protocol/enums/chat-run-status.json")["values"])
    )


@cache
def waiting_reasons() -> frozenset[str]:
    """Every waiting reason of ``enums/chat-run-waiting-reasons.json`` (sogni-protocol)."""
    return frozenset(
        cast("list[str]", _data("sogni-protocol/enums/chat-run-waiting-reasons.json")["values"])
    )


def iso(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ISO-8601 UTC with milliseconds and ``Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wire_event(run_id: str, event: StoredEvent) -> dict[str, Any]:
    """The JSON object of ``event`` as SSE ``data`` and in ``record.events``."""
    out: dict[str, Any] = {
        "runId": run_id,
        "runKind": "chat",
        "sequence": event.sequence,
        "type": event.type,
        "status": event.status,
        "payload": event.payload,
        "at": event.at,
        "createdAt": event.at,
    }
    if event.type in TERMINAL_EVENT_TYPES:
        out["terminal"] = True
    if event.type in _RESUMABLE_TYPES:
        out["resumable"] = True
    return out


def sse_frame(run_id: str, event: StoredEvent) -> bytes:
    """One SSE frame: ``id: <sequence>``, ``event: <type>``, ``data: <event JSON>``."""
    data = msgspec.json.encode(wire_event(run_id, event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.sequence, event.type.encode(), data)
