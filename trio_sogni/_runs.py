"""``sogni.chat.runs``: durable chat runs (protocol.md §3.4 to §3.7).

A run lives on the server: it keeps going when the client disconnects, and its events are kept
with strictly increasing ``sequence`` numbers. `RunEventStream` follows them over server-sent
events and survives dropped connections and server restarts by reconnecting with
``Last-Event-ID``; it yields every event exactly once, in sequence order, and ends after the run's
terminal event.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import Any, Final, Literal, Self, cast, final
from urllib.parse import quote

import httpx
import msgspec
import trio
from typing_extensions import override

from ._errors import (
    APIStatusError,
    ChatJobError,
    InvalidRequestError,
    ProtocolError,
    RunStateError,
    TransportError,
    as_chat_error,
)
from ._request import check_sendable
from ._rest_calls import typed_call
from ._transport import RestClient
from ._transport._sse import SSEParser
from .protocol import JSONDecoder

__all__ = [
    "TERMINAL_RUN_EVENTS",
    "ChatRunEvent",
    "ChatRunRecord",
    "ChatRuns",
    "RunEventStream",
]

logger = logging.getLogger("trio_sogni.runs")

TERMINAL_RUN_EVENTS: Final = frozenset(
    {"run_completed", "run_failed", "run_partial_failure", "run_cancelled"}
)
"""Event types after which a run's stream ends (protocol.md §3.6)."""

RunStatus = Literal[
    "queued", "running", "waiting_for_user", "completed", "partial_failure", "failed", "cancelled"
]


class ChatRunEvent(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """One event of a run. ``sequence`` starts at 0 (``run_created``) and increases by one."""

    sequence: int
    type: str
    at: str | None = None
    payload: dict[str, Any] | None = None
    run_id: str | None = None
    status: str | None = None
    created_at: str | None = None
    terminal: bool | None = None

    @property
    def is_terminal(self) -> bool:
        """True for ``run_completed``, ``run_failed``, ``run_partial_failure``, ``run_cancelled``."""
        return self.terminal is True or self.type in TERMINAL_RUN_EVENTS


class ChatRunRecord(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """A run as the server keeps it (``ChatRunRecord``, protocol.md §3.7). Unknown fields are
    ignored; the raw record is not kept."""

    run_id: str
    status: str
    schema_version: str | None = None
    scope: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    messages: list[Any] = msgspec.field(default_factory=list[Any])
    tool_calls: list[Any] = msgspec.field(default_factory=list[Any])
    tool_results: list[Any] = msgspec.field(default_factory=list[Any])
    artifacts: list[Any] = msgspec.field(default_factory=list[Any])
    media_context: dict[str, Any] | None = None
    events: list[ChatRunEvent] = msgspec.field(default_factory=list[ChatRunEvent])
    final_response: dict[str, Any] | None = None
    waiting: dict[str, Any] | None = None
    billing_preview: Any = None
    billing_previews: list[Any] | None = None
    failure_reason: str | None = None
    cancellation_reason: str | None = None
    timestamps: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended (completed, partial failure, failed, cancelled)."""
        return self.status in ("completed", "partial_failure", "failed", "cancelled")


class _RunEnvelope(msgspec.Struct):
    data: _RunData


class _RunData(msgspec.Struct):
    run: ChatRunRecord
    idempotent: bool | None = None


_event_decoder: Final = JSONDecoder(ChatRunEvent)


def _external_only(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.lower().startswith(("http://", "https://")):
        raise InvalidRequestError(
            f"{where}: durable runs take media by http(s) URL only (upload it first; inline "
            "data and data: URIs are refused before sending)"
        )


def _items(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        items: list[object] = list(value)  # pyright: ignore[reportUnknownArgumentType]
        return items
    return []


def _mapping(value: object) -> Mapping[str, object] | None:
    if isinstance(value, Mapping):
        mapping: Mapping[str, object] = value  # pyright: ignore[reportUnknownVariableType]
        return mapping
    return None


def check_external_media(body: Mapping[str, object]) -> None:
    """Refuse inline media in a run request, as the official SDKs do before sending.

    Raises:
        InvalidRequestError: a ``data:`` URI or non-http(s) value in a message image, a media
            reference or the media context.
    """
    for i, raw_message in enumerate(_items(body.get("messages"))):
        message = _mapping(raw_message)
        for j, raw_part in enumerate(_items(message.get("content") if message else None)):
            part = _mapping(raw_part)
            image = _mapping(part.get("image_url")) if part else None
            if image is not None:
                _external_only(image.get("url"), f"messages[{i}].content[{j}].image_url.url")
    for i, raw_ref in enumerate(_items(body.get("media_references"))):
        ref = _mapping(raw_ref)
        for key in ("url", "dataUri", "data_uri"):
            if ref is not None and key in ref:
                _external_only(ref[key], f"media_references[{i}].{key}")
    context = _mapping(body.get("media_context"))
    if context is not None:
        for key in (
            "images",
            "videos",
            "audio",
            "uploadedImages",
            "uploadedVideos",
            "uploadedAudio",
        ):
            for i, item in enumerate(_items(context.get(key))):
                entry = _mapping(item)
                _external_only(entry.get("url") if entry else item, f"media_context.{key}[{i}]")


@final
class ChatRuns:
    """``sogni.chat.runs``: create, inspect, cancel and follow durable runs.

    Every call is a REST request (cancellable; no timeout of its own: use ``trio.fail_after``).
    HTTP 409 raises `RunStateError` (a `ChatJobError`); other error bodies in the recognised
    chat-error shapes raise `ChatJobError`; anything else `APIStatusError`.
    """

    def __init__(self, rest: RestClient, *, app_source: str | None) -> None:
        self._rest = rest
        self._app_source = app_source

    @override
    def __repr__(self) -> str:
        return "<ChatRuns>"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> _RunData:
        check_sendable(json, "body")
        answer = await typed_call(
            self._rest,
            method,
            path,
            _RunEnvelope,
            what="run",
            json=json,
            headers=headers,
            map_error=_run_error,
        )
        return answer.data

    async def create(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        sampling: Mapping[str, Any] | None = None,
        media_references: Sequence[Mapping[str, Any]] | None = None,
        media_context: Mapping[str, Any] | None = None,
        max_estimated_capacity_units: float | None = None,
        confirm_cost: bool | None = None,
        session_id: str | None = None,
        client_message_id: str | None = None,
        token_type: Literal["sogni", "spark"] | None = None,
        billing_mode: Literal["auto", "subscription", "tokens"] | None = None,
        app_source: str | None = None,
        runtime_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ChatRunRecord:
        """Start a durable run (``POST /v1/chat/runs``) and return its record at once.

        ``idempotency_key`` goes in the ``Idempotency-Key`` header: sending the same key again
        returns the same run instead of starting another. Media must be http(s) URLs; inline
        data is refused before anything is sent.

        Raises:
            InvalidRequestError: bad arguments or inline media (nothing was sent).
            ChatJobError, APIStatusError: the server refused the run.
        """
        if isinstance(messages, str | bytes) or not messages:
            raise InvalidRequestError("messages must be a non-empty list of messages")
        fields: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "model": model,
            "tools": [dict(t) for t in tools] if tools is not None else None,
            "tool_choice": tool_choice,
            "sampling": dict(sampling) if sampling is not None else None,
            "media_references": [dict(r) for r in media_references]
            if media_references is not None
            else None,
            "media_context": dict(media_context) if media_context is not None else None,
            "max_estimated_capacity_units": max_estimated_capacity_units,
            "confirm_cost": confirm_cost,
            "session_id": session_id,
            "client_message_id": client_message_id,
            "token_type": token_type,
            "billing_mode": billing_mode,
            "app_source": app_source or self._app_source,
            "runtime_config": dict(runtime_config) if runtime_config is not None else None,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        check_sendable(body, "body")
        check_external_media(body)
        try:
            msgspec.json.encode(body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidRequestError(f"the run request is not JSON-serialisable: {exc}") from None
        headers = {"X-Sogni-Operation-Id": str(uuid.uuid4()).upper()}
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidRequestError("idempotency_key must be a non-empty string")
            headers["Idempotency-Key"] = idempotency_key
        source = body.get("app_source")
        if isinstance(source, str) and source:
            headers["X-App-Source"] = source
        return (await self._call("POST", "/v1/chat/runs", json=body, headers=headers)).run

    async def get(self, run_id: str) -> ChatRunRecord:
        """The run's current record (``GET /v1/chat/runs/{id}``)."""
        return (await self._call("GET", f"/v1/chat/runs/{_segment(run_id)}")).run

    async def cancel(self, run_id: str, reason: str | None = None) -> ChatRunRecord:
        """Cancel the run on the server (``POST …/cancel``); returns the cancelled record.

        Raises:
            RunStateError: the run has already ended.
        """
        body = {"reason": reason} if reason is not None else {}
        return (await self._call("POST", f"/v1/chat/runs/{_segment(run_id)}/cancel", json=body)).run

    async def confirm_cost(
        self,
        run_id: str,
        *,
        tool_call_id: str,
        decision: Literal["confirm", "cancel"],
        accepted_cost_preview: Any = None,
        overrides: Mapping[str, Any] | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> ChatRunRecord:
        """Answer a run waiting for cost confirmation (``POST …/confirm-cost``).

        ``accepted_cost_preview`` is the billing preview you accept, as the run's
        ``run_awaiting_cost_confirmation`` event or record showed it (sent as
        ``acceptedCostPreview``).

        Raises:
            InvalidRequestError: bad arguments.
            RunStateError: the run is not waiting for this confirmation, or the preview is stale.
        """
        if decision not in ("confirm", "cancel"):
            raise InvalidRequestError("decision must be 'confirm' or 'cancel'")
        if not tool_call_id:
            raise InvalidRequestError("tool_call_id is required")
        body: dict[str, Any] = {"tool_call_id": tool_call_id, "decision": decision}
        if accepted_cost_preview is not None:
            body["acceptedCostPreview"] = accepted_cost_preview
        if overrides is not None:
            body["overrides"] = dict(overrides)
        if reason is not None:
            body["reason"] = reason
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        path = f"/v1/chat/runs/{_segment(run_id)}/confirm-cost"
        return (await self._call("POST", path, json=body, headers=headers)).run

    def stream_events(
        self,
        run_id: str,
        *,
        last_event_id: int | None = None,
        reconnect_timeout: float = 300.0,
    ) -> RunEventStream:
        """Follow a run's events: ``async with sogni.chat.runs.stream_events(run_id) as events:
        async for event in events: ...``.

        Starts after ``last_event_id`` (a sequence number) when given, else from the first
        event. See `RunEventStream` for the reconnect and ordering guarantees.
        """
        if last_event_id is not None and (
            isinstance(last_event_id, bool) or not isinstance(last_event_id, int)  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise InvalidRequestError("last_event_id must be an integer sequence number")
        return RunEventStream(self._rest, run_id, last_event_id, reconnect_timeout)

    async def wait(self, run_id: str) -> ChatRunRecord:
        """Wait for the run to end (following its events) and return its final record."""
        async with self.stream_events(run_id) as events:
            async for _ in events:
                pass
        return await self.get(run_id)


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError("run_id must be a non-empty string")
    return quote(value, safe="")


def _run_error(exc: APIStatusError) -> APIStatusError | ChatJobError:
    """Runs endpoints: 409 is a `RunStateError`; other recognised chat-error bodies are
    `ChatJobError`; anything else stays an `APIStatusError`."""
    mapped = as_chat_error(exc)
    if exc.status_code != 409:
        return mapped
    if isinstance(mapped, ChatJobError):
        conflict = RunStateError(
            str(mapped),
            code=mapped.code,
            error_type=mapped.error_type,
            status=409,
            payload=exc.payload,
        )
    else:
        code = None if exc.error_code == 409 else str(exc.error_code)
        conflict = RunStateError(str(exc), code=code, status=409, payload=exc.payload)
    conflict.__cause__ = exc
    return conflict


_TRANSIENT_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_GAP_RETRIES: Final = 3
_FIRST_DELAY: Final = 0.25
_MAX_DELAY: Final = 10.0
_HEALTHY_AFTER: Final = 10.0
"""A connection open this long counts as a success even if it delivered no new event (a run
waiting for its user sends only heartbeats)."""


@final
class RunEventStream:
    """The events of one run, in order, each exactly once; ends after the terminal event.

    Use it as ``async with`` (the HTTP stream is closed on exit) and iterate it. Reading happens
    in the iterating task; there is no background task.

    - **Reconnects.** When the connection drops, the server closes it before the terminal event,
      or the server restarts (connection refused, 5xx, 408, 429), it reconnects with
      ``Last-Event-ID`` set to the last sequence it delivered. A connection that ends without
      delivering a new event (an empty 200, say) is a failed attempt too, unless it stayed
      open 10 s. After a failed attempt it waits before the next: an exponential backoff with
      jitter (0.25 s doubling to 10 s), lengthened to ``Retry-After`` if the server sent one.
      It gives up with `TransportError` after ``reconnect_timeout`` seconds without a
      successful connection.
    - **Exactly once, in order.** Events at or below the last delivered sequence are dropped as
      duplicates; a jump in the sequence makes it reconnect from the last delivered one to fill
      the gap (and raise `ProtocolError` if the server keeps skipping).
    - **Robust.** Malformed frames (bad JSON, missing fields) are skipped and counted in
      ``skipped_frames``; ``run_status`` and comment (heartbeat) frames are ignored. A frame
      longer than 16 MiB raises `ProtocolError` (it is never buffered whole).
    - Other HTTP errors (404, 401, 403, ...) raise at once (`ChatJobError` / `APIStatusError`).

    Cancellation just stops reading; it does not cancel the run (use `ChatRuns.cancel`).
    """

    def __init__(
        self, rest: RestClient, run_id: str, last_event_id: int | None, reconnect_timeout: float
    ) -> None:
        self.run_id = run_id
        self._path = f"/v1/chat/runs/{_segment(run_id)}/events/stream"
        self._rest = rest
        self._last = last_event_id
        self._reconnect_timeout = reconnect_timeout
        self._pending: deque[ChatRunEvent] = deque()
        self._stack: AsyncExitStack | None = None
        self._chunks: AsyncGenerator[bytes] | None = None
        self._parser = SSEParser()
        self._done = False
        self._closed = False
        self._gaps = 0
        # Reconnecting: a failed attempt (an error, or a connection that ended without a new
        # event) sets _failure; the next attempt waits _delay (jittered, doubling) first, and
        # the outage ends in TransportError at _deadline.
        self._failure: Exception | None = None
        self._delay = _FIRST_DELAY
        self._deadline: float | None = None
        self._retry_after: float | None = None
        self._connected_at = 0.0
        self._progress = False
        self.reconnects = 0
        """How many times the stream reconnected."""
        self.skipped_frames = 0
        """Frames dropped as malformed."""
        self.duplicates = 0
        """Events dropped because they had already been delivered."""

    @override
    def __repr__(self) -> str:
        return f"<RunEventStream run_id={self.run_id!r} last={self._last} done={self._done}>"

    @property
    def last_event_id(self) -> int | None:
        """The sequence of the last event delivered (resume from here)."""
        return self._last

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP stream (shielded). Iterating afterwards ends at once."""
        self._closed = True
        await self._disconnect()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatRunEvent:
        """The next event. A checkpoint. Raises ``StopAsyncIteration`` after the terminal event."""
        while True:
            if self._pending:
                event = self._pending.popleft()
                await trio.lowlevel.checkpoint_if_cancelled()
                return event
            if self._done or self._closed:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            await self._fill()

    # --- internals ----------------------------------------------------------------------------

    async def _disconnect(self) -> None:
        stack, self._stack, self._chunks = self._stack, None, None
        if stack is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await stack.aclose()

    async def _connect(self) -> None:
        """Connect (retrying transient failures with backoff) and set up the byte iterator."""
        if self._deadline is None:
            self._deadline = trio.current_time() + self._reconnect_timeout
        while True:
            if self._failure is not None:
                await self._back_off(self._failure, self._deadline)
            headers = {"Accept": "text/event-stream"}
            if self._last is not None:
                headers["Last-Event-ID"] = str(self._last)
            stack = AsyncExitStack()
            try:
                response = await stack.enter_async_context(
                    self._rest.stream("GET", self._path, headers=headers)
                )
            except APIStatusError as exc:
                await stack.aclose()
                if exc.status_code not in _TRANSIENT_STATUSES:
                    raise _run_error(exc) from None
                self._retry_after = exc.retry_after
                self._failure = exc
            except TransportError as exc:
                await stack.aclose()
                self._failure = exc
            else:
                self._stack = stack
                chunks = cast("AsyncGenerator[bytes]", response.aiter_bytes())  # an async generator
                self._chunks = await stack.enter_async_context(aclosing(chunks))
                self._parser = SSEParser()
                self._connected_at = trio.current_time()
                self._progress = False
                return

    async def _back_off(self, failure: Exception, deadline: float) -> None:
        """Wait before the next attempt (jittered, doubling; at least ``Retry-After``), or raise
        once the outage has lasted ``reconnect_timeout``."""
        now = trio.current_time()
        if now >= deadline:
            raise TransportError(
                f"the event stream of run {self.run_id} could not be reopened for "
                f"{self._reconnect_timeout:.0f} s: {failure}"
            ) from failure
        wait = self._delay * (0.5 + random.random())
        if self._retry_after is not None:
            wait = max(wait, self._retry_after)
        logger.info("run %s: event stream unavailable (%s); retrying", self.run_id, failure)
        await trio.sleep(min(wait, deadline - now))
        self._delay = min(self._delay * 2, _MAX_DELAY)
        self._retry_after = None
        self.reconnects += 1

    async def _lost(self, failure: Exception) -> None:
        """The connection ended before the terminal event. It counts as a success (reconnect at
        once, backoff and ``reconnect_timeout`` reset) only if it delivered a new event or
        stayed open ``_HEALTHY_AFTER`` seconds; otherwise it is a failed attempt (backoff)."""
        await self._disconnect()
        if self._done:
            return
        if self._progress or trio.current_time() - self._connected_at >= _HEALTHY_AFTER:
            self._failure = None
            self._delay = _FIRST_DELAY
            self._deadline = None
            self.reconnects += 1
        else:
            self._failure = failure

    async def _fill(self) -> None:
        """Read until at least one new event is pending, the run has ended, or a reconnect."""
        if self._chunks is None:
            await self._connect()
        assert self._chunks is not None
        try:
            data = await self._chunks.__anext__()
            frames = self._parser.feed(data)
        except StopAsyncIteration:
            self._accept(self._parser.finish())
            if self._pending:
                self._progress = True
            await self._lost(
                TransportError("the server ended the event stream before the run's end")
            )
            return
        except (httpx.HTTPError, TransportError) as exc:
            logger.info(
                "run %s: event stream broke (%s); resuming", self.run_id, type(exc).__name__
            )
            await self._lost(exc)
            return
        in_order = self._accept(frames)
        if self._pending:
            self._progress = True
        if not in_order:  # a gap: reconnect from the last delivered event
            await self._lost(ProtocolError(f"run {self.run_id}: a gap in the event sequence"))

    def _accept(self, frames: list[Any]) -> bool:
        """Queue the new events of ``frames``; False when the sequence skipped ahead."""
        for frame in frames:
            if frame.event == "run_status":
                continue
            try:
                event = _event_decoder.decode(frame.data)
            except msgspec.MsgspecError:
                self.skipped_frames += 1
                logger.debug("run %s: skipped a malformed event frame", self.run_id)
                continue
            last = self._last
            if last is not None and event.sequence <= last:
                self.duplicates += 1
                continue
            expected = 0 if last is None else last + 1
            if event.sequence > expected:
                self._gaps += 1
                if self._gaps > _MAX_GAP_RETRIES:
                    raise ProtocolError(
                        f"run {self.run_id}: the server keeps skipping from sequence "
                        f"{expected} to {event.sequence}"
                    )
                return False
            self._gaps = 0
            self._last = event.sequence
            self._pending.append(event)
            if event.is_terminal:
                self._done = True
                return True
        return True
