"""The state of durable runs as msgspec Structs.

* :class:`RunRequest`: a validated create body, as the run stores it (the ``request`` of the
  ``ChatRunRecord``: camelCase keys, absent fields omitted, in this field order);
* :class:`~._store.RunCheckpoint` (in ``_store``, which persists it): where the executor is;
* :class:`LoadedRun`: a run loaded in memory, with its executor's cancel scope and wake-up event;
* :class:`EventStream`: one open SSE stream and how it is asked to end.

The ``ChatRunRecord`` itself stays the JSON object it is on the wire (``RunRow.record``): its
optional keys (``waiting``, ``failureReason``, ``finalResponse``...) appear in the order the run
set them, and stored records are returned as they were written.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import trio

from ._store import RunCheckpoint, RunRow

__all__ = ["EventStream", "LoadedRun", "RunError", "RunRequest"]


class RunError(Exception):
    """A run request refused: HTTP ``status``, a human ``message`` and a machine ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RunRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """A validated ``POST /v1/chat/runs`` body. Values other than ``model`` are the client's
    JSON, checked by :func:`~._validation.validate_create`; ``UNSET`` fields were absent or
    ``null`` and are left out of :meth:`to_wire`."""

    model: str
    messages: list[Any]
    sampling: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    tools: Any = msgspec.UNSET
    tool_choice: Any = msgspec.UNSET
    session_id: Any = msgspec.UNSET
    client_message_id: Any = msgspec.UNSET
    media_references: Any = msgspec.UNSET
    media_context: Any = msgspec.UNSET
    max_estimated_capacity_units: Any = msgspec.UNSET
    confirm_cost: bool | msgspec.UnsetType = msgspec.UNSET
    token_type: Literal["sogni", "spark"] | msgspec.UnsetType = msgspec.UNSET
    billing_mode: Any = msgspec.UNSET
    app_source: Any = msgspec.UNSET
    runtime_config: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    sogni_tools: bool | str | msgspec.UnsetType = msgspec.UNSET
    sogni_tool_execution: bool | msgspec.UnsetType = msgspec.UNSET

    def to_wire(self) -> dict[str, Any]:
        """The record's ``request`` object (camelCase keys, unset fields left out)."""
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return wire

    @classmethod
    def from_wire(cls, request: dict[str, Any]) -> RunRequest:
        """The request stored in a record (as :meth:`to_wire` wrote it)."""
        return msgspec.convert(request, cls)


class LoadedRun(msgspec.Struct, eq=False):
    """A run loaded in memory (one object per run at a time; see ``RunManager._loaded``):
    its stored ``row``, the sequence of its next event, the cancel scope of its executor task
    (``None`` while none runs) and the event its streams wait on (replaced after each event)."""

    row: RunRow
    next_sequence: int
    scope: trio.CancelScope | None = None
    signal: trio.Event = msgspec.field(default_factory=trio.Event)

    @property
    def run_id(self) -> str:
        return self.row.run_id

    @property
    def record(self) -> dict[str, Any]:
        return self.row.record

    @property
    def checkpoint(self) -> RunCheckpoint:
        return self.row.checkpoint

    @property
    def request(self) -> RunRequest:
        """The run's validated request (from the record)."""
        return RunRequest.from_wire(self.record["request"])

    @property
    def status(self) -> str:
        status: str = self.record["status"]
        return status


class EventStream(msgspec.Struct, eq=False):
    """One open SSE stream: how a fault or shutdown asks it to end. ``scope`` is the scope of
    the stream's current wait for events, if it is waiting."""

    scope: trio.CancelScope | None = None
    ending: Literal["drop", "close"] | None = None

    def end(self, how: Literal["drop", "close"]) -> None:
        """Ask the stream to end (the first request wins): ``"drop"`` cuts the connection,
        ``"close"`` finishes the chunked body."""
        self.ending = self.ending or how
        if self.scope is not None:
            self.scope.cancel()
