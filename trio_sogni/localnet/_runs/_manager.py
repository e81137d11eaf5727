"""Durable chat runs: the server-side executor, its state machine and its event log.

A run is created by ``POST /v1/chat/runs`` (see :mod:`._routes`) and then driven by a task in
localnet's nursery, with no client connected:

``run_created`` (sequence 0, status ``queued``) → ``run_started`` (``running``) → per LLM round
``llm_round_started``, ``assistant_message_delta`` (a few chunks of the round's job each),
``assistant_message_completed`` → for each tool call of that message ``tool_call_dispatched``,
(media tools, run as real media projects by ``_creative``: ``tool_call_progress`` and
``artifact_created``) and ``tool_call_resolved`` (other tools: TEST DOUBLES, :mod:`._tools`) →
the next round with the
tool results → ``run_completed`` (``finalResponse {content, finishReason}``), or
``run_partial_failure`` when a tool call failed, or ``run_failed`` when a round's job failed or the
round limit was hit.

Each LLM round is a real localnet job (:meth:`JobManager.run_internal`): it is queued, runs on a
worker (a ``SimulatedWorker`` script decides its output, including tool calls) and is billed to
the run's owner like a socket job.

**Cost confirmation.** A paid tool call (estimated price above zero) pauses the run when the
run asked for it: ``confirm_cost: true`` (every paid call), or ``runtime_config
{requireJobConfirmation: true, jobConfirmationThresholdUsd?}`` (calls whose USD estimate exceeds
the threshold, default 0). The run then emits ``billing_preview_updated`` (the new preview, with
an ``id`` and a ``version``), ``run_waiting_for_user`` (reason ``cost_approval_required``) and
``run_awaiting_cost_confirmation``, its status becomes ``waiting_for_user`` and its task ends.
:meth:`RunManager.confirm_cost` with the preview echoed back resumes it
(``run_cost_confirmation_resolved``, then the tool runs); a ``cancel`` decision ends it
``cancelled``.

**Persistence and restart.** Every event is written together with the record and checkpoint
it changes in one synchronous transaction (:mod:`._store`), so an event log and its record
never disagree. When a network starts on a database holding runs that are ``queued`` or
``running`` (the previous process stopped mid-run), each is *resumed*: it emits ``run_resumed``
and continues from its last checkpoint — an LLM round that was cut off starts again from scratch
(its earlier deltas stay in the log, followed by a new ``llm_round_started``), and a tool call
dispatched but not resolved runs again. Runs ``waiting_for_user`` stay waiting (they need no
task) and resume on confirmation. Shutting a network down cancels the run tasks without writing
anything: the stored state is already consistent, and the next start resumes them.

Event types and statuses are those of ``@sogni-ai/sogni-protocol`` (``run-event.schema.json``,
``enums/chat-run-status.json``, ``enums/chat-run-waiting-reasons.json``, copied into
``localnet/_data/sogni-protocol``). Events on the wire: ``{runId, runKind: "chat", sequence, type, status,
payload, at, createdAt, terminal?, resumable?}`` — the SDK's ``ChatRunEvent {sequence, type, at,
payload}`` plus the schema's fields (``at`` and ``createdAt`` hold the same time).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, cast

import msgspec
import trio

from .._accounts._ledger import Ledger
from .._config import DEFAULT_MODEL, Pricing
from .._jobs._manager import JobManager
from .._server import AbortConnection
from ._executor import RunExecutor
from ._sse import (
    TERMINAL_EVENT_TYPES,
    TERMINAL_STATUSES,
    event_types,
    iso,
    run_statuses,
    sse_frame,
    wire_event,
)
from ._state import EventStream, LoadedRun, RunError
from ._store import RunCheckpoint, RunRow, RunStore, StoredEvent
from ._tools import HostedToolDouble
from ._validation import validate_create

__all__ = ["RUN_SCHEMA_VERSION", "TERMINAL_STATUSES", "RunManager"]

logger = logging.getLogger("trio_sogni.localnet")

RUN_SCHEMA_VERSION: Final = "2026-05-14.1"
"""``schemaVersion`` of the run records (as sogni-intelligence-client writes it)."""

_LIVE_STATUSES: Final = ("queued", "running")


class RunManager:
    """Durable chat runs of one network: creation, the executor tasks, cancel, cost confirmation
    and event streams. Everything but the executor tasks and :meth:`events` is synchronous.

    Attributes meant to be tuned (tests may assign them at any time):

    * ``heartbeat_interval``: seconds of silence after which an event stream sends ``: ping``;
    * ``preview_ttl``: seconds a cost preview stays acceptable;
    * ``max_rounds``: LLM rounds a run may take before it fails with ``max_rounds_exceeded``;
    * ``chunks_per_delta``: job chunks coalesced into one ``assistant_message_delta``;
    * ``delta_interval``: seconds a chunk may wait for others before its delta goes out anyway
      (a slow or stalled model's text is never held back longer than this);
    * ``tools``: the hosted tool doubles by name (:class:`HostedToolDouble` values).
    """

    def __init__(
        self,
        *,
        store: RunStore,
        jobs: JobManager,
        ledger: Ledger | None,
        clock: Callable[[], float],
        base_url: Callable[[], str],
        errors: deque[str],
        on_settled: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self._jobs = jobs
        self._ledger = ledger
        self._clock = clock
        self._base_url = base_url
        self._errors = errors
        self._on_settled = on_settled
        self.heartbeat_interval = 15.0
        self.executor = RunExecutor(
            emit=self._emit,
            jobs=jobs,
            ledger=ledger,
            clock=clock,
            base_url=base_url,
            errors=errors,
            on_settled=on_settled,
        )
        """Runs the runs' tasks (LLM rounds and tool calls); its tuning is forwarded below."""
        self._loaded: dict[str, LoadedRun] = {}
        self._streams: set[EventStream] = set()
        self._streams_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.closing = False

    @property
    def pricing(self) -> Pricing:
        return self._jobs.pricing

    @property
    def preview_ttl(self) -> float:
        """Seconds a cost preview stays acceptable."""
        return self.executor.preview_ttl

    @preview_ttl.setter
    def preview_ttl(self, value: float) -> None:
        self.executor.preview_ttl = value

    @property
    def max_rounds(self) -> int:
        """LLM rounds a run may take before it fails with ``max_rounds_exceeded``."""
        return self.executor.max_rounds

    @max_rounds.setter
    def max_rounds(self, value: int) -> None:
        self.executor.max_rounds = value

    @property
    def chunks_per_delta(self) -> int:
        """Job chunks coalesced into one ``assistant_message_delta``."""
        return self.executor.chunks_per_delta

    @chunks_per_delta.setter
    def chunks_per_delta(self, value: int) -> None:
        self.executor.chunks_per_delta = value

    @property
    def delta_interval(self) -> float:
        """Seconds a chunk may wait for others before its delta goes out anyway."""
        return self.executor.delta_interval

    @delta_interval.setter
    def delta_interval(self, value: float) -> None:
        self.executor.delta_interval = value

    @property
    def tools(self) -> dict[str, HostedToolDouble]:
        """The hosted tool doubles by name (:class:`HostedToolDouble` values); assign or mutate."""
        return self.executor.tools

    @tools.setter
    def tools(self, value: dict[str, HostedToolDouble]) -> None:
        self.executor.tools = value

    @property
    def open_streams(self) -> int:
        """Event streams currently open."""
        return len(self._streams)

    @property
    def active_runs(self) -> int:
        """Runs whose executor task is running now."""
        return sum(1 for run in self._loaded.values() if run.scope is not None)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> list[str]:
        """Run tasks go to ``nursery`` from now on; resume every stored run that is ``queued``
        or ``running``. Returns the resumed runs' ids."""
        self._nursery = nursery
        self.executor.start(nursery)
        resumed = self.store.unfinished(_LIVE_STATUSES)
        for run_id in resumed:
            run = self._load(run_id)
            if run is not None:
                self.executor.spawn(run, resumed=True)
        return resumed

    async def aclose(self, grace: float) -> None:
        """Stop for shutdown: cancel every run task (their stored state stays resumable), end
        every event stream cleanly (the chunked body is finished), and wait at most ``grace``
        seconds for the streams to go."""
        self.closing = True
        for run in self._loaded.values():
            if run.scope is not None:
                run.scope.cancel()
        for stream in self._streams:
            stream.end("close")
        with trio.move_on_after(grace):
            while self._streams:
                await self._streams_changed.wait()

    async def drop_streams(self) -> int:
        """Fault injection: cut every open event stream's TCP connection without finishing its
        body, and wait until they are gone. Returns how many were dropped."""
        dropped = list(self._streams)
        for stream in dropped:
            stream.end("drop")
        while any(s in self._streams for s in dropped):
            await self._streams_changed.wait()
        return len(dropped)

    def _stream_set_changed(self) -> None:
        self._streams_changed.set()
        self._streams_changed = trio.Event()

    # -- loading ----------------------------------------------------------------------------------

    def _load(self, run_id: str) -> LoadedRun | None:
        run = self._loaded.get(run_id)
        if run is not None:
            return run
        row = self.store.load(run_id)
        if row is None:
            return None
        if row.status in TERMINAL_STATUSES:
            return LoadedRun(row, row.next_sequence)
        run = self._loaded[run_id] = LoadedRun(row, row.next_sequence)
        return run

    def _owned(self, owner_id: str, run_id: str) -> LoadedRun:
        run = self._load(run_id)
        if run is None or run.row.owner_id != owner_id:
            raise RunError(404, "run_not_found", f"No chat run {run_id!r}")
        return run

    def record(self, run: LoadedRun | str, owner_id: str | None = None) -> dict[str, Any]:
        """The client-visible ``ChatRunRecord`` of a run, with all its events.

        Raises:
            RunError: 404 when the run does not exist or (``owner_id`` given) is another's.
        """
        if isinstance(run, str):
            loaded = self._load(run) if owner_id is None else self._owned(owner_id, run)
            if loaded is None:
                raise RunError(404, "run_not_found", f"No chat run {run!r}")
            run = loaded
        events = self.store.events_after(run.run_id, -1)
        return {**run.record, "events": [wire_event(run.run_id, e) for e in events]}

    # -- events -----------------------------------------------------------------------------------

    def _emit(
        self,
        run: LoadedRun,
        kind: str,
        payload: dict[str, Any],
        *,
        status: str | None = None,
        save: bool = True,
    ) -> StoredEvent:
        """Append one event (and, with ``save``, the record and checkpoint) in one transaction,
        then wake the run's streams."""
        if kind not in event_types():  # pragma: no cover - a localnet bug
            raise AssertionError(f"unknown run event type {kind!r}")
        now = self._clock()
        record = run.record
        if status is not None:
            assert status in run_statuses()
            record["status"] = status
        record["timestamps"]["updatedAt"] = iso(now)
        terminal = kind in TERMINAL_EVENT_TYPES
        if terminal:
            record["timestamps"]["completedAt"] = iso(now)
        event = StoredEvent(run.next_sequence, kind, record["status"], iso(now), payload)
        self.store.append(
            run.run_id,
            event,
            record=record if save or terminal else None,
            checkpoint=run.checkpoint if save or terminal else None,
        )
        run.next_sequence += 1
        run.signal.set()
        run.signal = trio.Event()
        if terminal:
            self._loaded.pop(run.run_id, None)
        return event

    # -- create / get / cancel --------------------------------------------------------------------

    def create(
        self,
        *,
        owner_id: str,
        owner_wallet: str,
        body: Mapping[str, Any],
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Create and start a run from a ``POST /v1/chat/runs`` body. Returns the record and
        whether it is an earlier run returned again for the same idempotency key.

        Raises:
            RunError: 400 for an invalid body (including inline or non-http media), 503 while
                the network shuts down.
        """
        if idempotency_key is not None:
            existing = self.store.find_by_idempotency_key(owner_id, idempotency_key)
            if existing is not None:
                return self.record(existing), True
        if self.closing or self._nursery is None:
            raise RunError(503, "server_restarting", "The server is restarting")
        request = validate_create(body, self._default_model())
        now = self._clock()
        run_id = str(uuid.uuid4())
        token_type = request.token_type or "sogni"
        media_context: dict[str, Any] = {"images": [], "videos": [], "audio": []}
        media_context.update(cast("dict[str, Any]", body.get("media_context") or {}))
        scope: dict[str, Any] = {"ownerWalletAddress": owner_wallet, "tokenType": token_type}
        if request.app_source is not msgspec.UNSET:
            scope["appSource"] = request.app_source
        record: dict[str, Any] = {
            "runId": run_id,
            "id": run_id,
            "status": "queued",
            "schemaVersion": RUN_SCHEMA_VERSION,
            "scope": scope,
            "request": request.to_wire(),
            "messages": list(request.messages),
            "toolCalls": [],
            "toolResults": [],
            "artifacts": [],
            "mediaContext": media_context,
            "billingPreviews": [],
            "timestamps": {"createdAt": iso(now), "updatedAt": iso(now)},
        }
        checkpoint = RunCheckpoint(conversation=list(request.messages))
        row = RunRow(
            run_id=run_id,
            owner_id=owner_id,
            idempotency_key=idempotency_key,
            status="queued",
            record=record,
            checkpoint=checkpoint,
            next_sequence=0,
        )
        first = StoredEvent(
            0, "run_created", "queued", iso(now), {"runId": run_id, "status": "queued"}
        )
        if not self.store.insert(row, first, created_at=now):  # the key was taken meanwhile
            assert idempotency_key is not None
            existing = self.store.find_by_idempotency_key(owner_id, idempotency_key)
            assert existing is not None
            return self.record(existing), True
        run = self._loaded[run_id] = LoadedRun(row, 1)
        self.executor.spawn(run, resumed=False)
        return self.record(run), False

    def _default_model(self) -> str:
        models = self._jobs.models
        if DEFAULT_MODEL in models or not models:
            return DEFAULT_MODEL
        return next(iter(models))

    def get(self, owner_id: str, run_id: str) -> dict[str, Any]:
        """The record of ``owner_id``'s run ``run_id``.

        Raises:
            RunError: 404 for an unknown run or another owner's.
        """
        return self.record(run_id, owner_id)

    def cancel(self, owner_id: str, run_id: str, reason: str | None) -> dict[str, Any]:
        """Cancel a ``queued``, ``running`` or ``waiting_for_user`` run: its task (and its LLM
        job) stops and it ends with ``run_cancelled``.

        Raises:
            RunError: 404 unknown run; 409 the run already ended.
        """
        run = self._owned(owner_id, run_id)
        if run.status in TERMINAL_STATUSES:
            raise RunError(409, "run_not_cancellable", f"The run is already {run.status}")
        self._cancel(run, reason or "Cancelled by the user")
        return self.record(run)

    def _cancel(self, run: LoadedRun, reason: str) -> None:
        if run.scope is not None:
            run.scope.cancel()
        run.record.pop("waiting", None)
        run.record["cancellationReason"] = reason
        run.checkpoint.pending = []
        self._emit(run, "run_cancelled", {"reason": reason}, status="cancelled")

    # -- cost confirmation ------------------------------------------------------------------------

    def confirm_cost(
        self,
        owner_id: str,
        run_id: str,
        body: Mapping[str, Any],
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], bool]:
        """Resolve a cost confirmation. Returns the record and whether ``idempotency_key`` was
        already used for this run (then nothing changes).

        Raises:
            RunError: 404 unknown run; 400 a malformed body or a ``confirm`` without
                ``acceptedCostPreview``; 409 the run is not waiting for cost confirmation,
                ``tool_call_id`` is not the call it waits for, or the preview is stale (another
                id or version, or past its ``validityUntil``).
        """
        run = self._owned(owner_id, run_id)
        if idempotency_key is not None and idempotency_key in run.checkpoint.confirm_keys:
            return self.record(run), True
        decision = body.get("decision")
        tool_call_id = body.get("tool_call_id")
        if decision not in ("confirm", "cancel"):
            raise RunError(400, "invalid_request", "'decision' must be 'confirm' or 'cancel'")
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise RunError(400, "invalid_request", "'tool_call_id' must be a non-empty string")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise RunError(400, "invalid_request", "'reason' must be a string")
        waiting = cast("dict[str, Any] | None", run.record.get("waiting"))
        if (
            run.status != "waiting_for_user"
            or waiting is None
            or waiting.get("reason") != "cost_approval_required"
        ):
            raise RunError(
                409, "run_not_awaiting_confirmation", "The run is not waiting for cost confirmation"
            )
        details = cast("dict[str, Any]", waiting["details"])
        if tool_call_id != details["toolCallId"]:
            raise RunError(
                409, "tool_call_mismatch", "The run is waiting for another tool call's confirmation"
            )
        preview = cast("dict[str, Any]", details["costApprovalPreview"])
        accepted = body.get("acceptedCostPreview")
        if decision == "confirm":
            if not isinstance(accepted, dict):
                raise RunError(
                    400, "cost_preview_required", "A confirmation must echo acceptedCostPreview"
                )
            echoed = cast("dict[str, Any]", accepted)
            if (
                echoed.get("id") != preview["id"]
                or echoed.get("version") != preview["version"]
                or self._clock() > preview["validUntilEpoch"]
            ):
                raise RunError(
                    409,
                    "cost_preview_stale",
                    "The accepted cost preview is stale; fetch the run and confirm its current "
                    "billingPreview",
                )
        if idempotency_key is not None:
            run.checkpoint.confirm_keys.append(idempotency_key)
        run.record.pop("waiting", None)
        payload: dict[str, Any] = {"toolCallId": tool_call_id, "decision": decision}
        if reason is not None:
            payload["reason"] = reason
        if "overrides" in body:
            payload["overrides"] = body["overrides"]
        if decision == "cancel":
            self._emit(run, "run_cost_confirmation_resolved", payload, save=False)
            self._cancel(run, reason or "Cost confirmation declined")
            return self.record(run), False
        payload["acceptedCostPreview"] = {"id": preview["id"], "version": preview["version"]}
        run.checkpoint.confirmed.append(tool_call_id)
        self._emit(run, "run_cost_confirmation_resolved", payload, status="running")
        self.executor.spawn(run, resumed=False)
        return self.record(run), False

    # -- event streams ----------------------------------------------------------------------------

    async def events(
        self, owner_id: str, run_id: str, last_event_id: int | None
    ) -> Callable[[], AsyncIterator[bytes]]:
        """Check access to a run's event stream and return the body generator factory: SSE
        frames for events after ``last_event_id`` (all without it), then live ones, a separate
        ``: ping`` comment frame after every ``heartbeat_interval`` seconds of silence, until
        the terminal event has been sent.

        Raises:
            RunError: 404 unknown run or another owner's.
        """
        self._owned(owner_id, run_id)
        await trio.lowlevel.checkpoint()
        after = -1 if last_event_id is None else last_event_id
        return lambda: self._frames(run_id, after)

    async def _frames(self, run_id: str, after: int) -> AsyncIterator[bytes]:
        stream = EventStream()
        self._streams.add(stream)
        self._stream_set_changed()
        try:
            cursor = after
            while stream.ending is None:
                run = self._load(run_id)
                signal = run.signal if run is not None and run.run_id in self._loaded else None
                events = self.store.events_after(run_id, cursor)
                for event in events:
                    cursor = event.sequence
                    yield sse_frame(run_id, event)
                    if event.type in TERMINAL_EVENT_TYPES:
                        return
                if events:
                    continue
                if signal is None:  # the run already ended and everything was sent
                    return
                timer = trio.move_on_after(self.heartbeat_interval)
                stream.scope = trio.CancelScope()
                with stream.scope, timer:
                    await signal.wait()
                stream.scope = None
                if timer.cancelled_caught and stream.ending is None:
                    yield b": ping\n\n"
            if stream.ending == "drop":
                raise AbortConnection
        finally:
            self._streams.discard(stream)
            self._stream_set_changed()
