"""Durable chat runs: the server-side executor, its state machine and its event log.

A run is created by ``POST /v1/chat/runs`` (see :mod:`._routes`) and then driven by a task in
localnet's nursery, with no client connected:

``run_created`` (sequence 0, status ``queued``) → ``run_started`` (``running``) → per LLM round
``llm_round_started``, ``assistant_message_delta`` (a few chunks of the round's job each),
``assistant_message_completed`` → for each tool call of that message ``tool_call_dispatched`` and
``tool_call_resolved`` (hosted tool TEST DOUBLES, :mod:`._tools`) → the next round with the
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

import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import Any, Final, Literal, cast

import msgspec
import trio

from ...protocol import (
    ChatCompletionChunk,
    LLMJobError,
    LLMJobRequest,
    ServerMessage,
)
from .._accounts._ledger import InsufficientBalance, Ledger
from .._config import DEFAULT_MODEL, Pricing, format_decimal
from .._jobs._collector import ChunkCollector
from .._jobs._manager import JobManager
from .._server import AbortConnection
from ._sse import TERMINAL_EVENT_TYPES, event_types, iso, run_statuses, sse_frame, wire_event
from ._state import EventStream, LoadedRun, RunError
from ._store import RunCheckpoint, RunRow, RunStore, StoredEvent
from ._tools import HostedToolDouble, ToolFailure, default_tool_doubles
from ._validation import job_fields, validate_create

__all__ = ["RUN_SCHEMA_VERSION", "TERMINAL_STATUSES", "RunManager"]

logger = logging.getLogger("trio_sogni.localnet")

RUN_SCHEMA_VERSION: Final = "2026-05-14.1"
"""``schemaVersion`` of the run records (as sogni-intelligence-client writes it)."""

TERMINAL_STATUSES: Final = frozenset({"completed", "partial_failure", "failed", "cancelled"})
_LIVE_STATUSES: Final = ("queued", "running")


class _RunGone(Exception):
    """The run ended (cancelled, or the network is closing) under its executor task."""


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
    * ``tools``: the hosted tool doubles by name (:mod:`._tools`).
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
        self.preview_ttl = 600.0
        self.max_rounds = 8
        self.chunks_per_delta = 4
        self.delta_interval = 0.05
        self.tools: dict[str, HostedToolDouble] = default_tool_doubles()
        self._loaded: dict[str, LoadedRun] = {}
        self._streams: set[EventStream] = set()
        self._streams_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.closing = False

    @property
    def pricing(self) -> Pricing:
        return self._jobs.pricing

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
        resumed = self.store.unfinished(_LIVE_STATUSES)
        for run_id in resumed:
            run = self._load(run_id)
            if run is not None:
                self._spawn(run, resumed=True)
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

    def _driver_emit(self, run: LoadedRun, kind: str, payload: dict[str, Any], **kw: Any) -> None:
        """:meth:`_emit` from the run's own task, which must stop once the run was ended under it
        (a cancel request or shutdown cancelled its scope before it reached a checkpoint)."""
        if run.scope is None or run.scope.cancel_called or run.status in TERMINAL_STATUSES:
            raise _RunGone
        self._emit(run, kind, payload, **kw)

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
        self._spawn(run, resumed=False)
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
        self._spawn(run, resumed=False)
        return self.record(run), False

    # -- the executor -----------------------------------------------------------------------------

    def _spawn(self, run: LoadedRun, *, resumed: bool) -> None:
        assert self._nursery is not None
        run.scope = trio.CancelScope()
        self._nursery.start_soon(self._drive, run, run.scope, resumed)

    async def _drive(self, run: LoadedRun, scope: trio.CancelScope, resumed: bool) -> None:
        """The run's task: from its checkpoint to a terminal event or a pause."""
        try:
            with scope:
                if resumed:
                    self._driver_emit(
                        run,
                        "run_resumed",
                        {"reason": "server_restart", "round": run.checkpoint.round},
                        status="running",
                    )
                elif run.status == "queued":
                    self._driver_emit(run, "run_started", {}, status="running")
                await self._advance(run)
        except _RunGone:
            pass
        except Exception as exc:
            logger.exception("localnet: a chat run failed inside localnet")
            self._errors.append(f"run {run.run_id}: {exc!r}")
            if run.status not in TERMINAL_STATUSES and not scope.cancel_called:
                self._fail(run, "internal_error", f"localnet internal error: {exc!r}")
        finally:
            if run.scope is scope:
                run.scope = None

    def _fail(self, run: LoadedRun, code: str, message: str, error_type: str | None = None) -> None:
        run.record["failureReason"] = message
        error = {"message": message, "type": error_type or code, "code": code}
        self._emit(run, "run_failed", {"reason": message, "error": error}, status="failed")

    async def _advance(self, run: LoadedRun) -> None:
        checkpoint = run.checkpoint
        while True:
            if checkpoint.pending:
                if not await self._run_tools(run):
                    return  # paused for confirmation
                continue
            if checkpoint.round >= self.max_rounds:
                self._driver_emit_fail(
                    run, "max_rounds_exceeded", f"The run took more than {self.max_rounds} rounds"
                )
                return
            checkpoint.round += 1
            self._driver_emit(run, "llm_round_started", {"round": checkpoint.round})
            outcome = await self._llm_round(run)
            if isinstance(outcome, LLMJobError):
                tag = str(outcome.error)
                self._driver_emit_fail(
                    run,
                    str(outcome.error_code or tag),
                    outcome.error_message or tag,
                    tag,
                )
                return
            content, calls, finish = outcome
            message: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                message["tool_calls"] = calls
            checkpoint.conversation.append(message)
            run.record["messages"].append(message)
            run.record["toolCalls"].extend(calls)
            checkpoint.pending = list(calls)
            self._driver_emit(
                run,
                "assistant_message_completed",
                {
                    "round": checkpoint.round,
                    "content": content,
                    "toolCalls": calls,
                    "finishReason": finish,
                },
            )
            if calls:
                continue
            final = {"content": content, "finishReason": finish}
            run.record["finalResponse"] = final
            if checkpoint.failed_tools:
                failed = checkpoint.failed_tools
                run.record["failureReason"] = f"{failed} tool call(s) failed"
                self._driver_emit(
                    run,
                    "run_partial_failure",
                    {"finalResponse": final, "failedToolCalls": failed},
                    status="partial_failure",
                )
            else:
                self._driver_emit(
                    run, "run_completed", {"finalResponse": final}, status="completed"
                )
            return

    def _driver_emit_fail(
        self, run: LoadedRun, code: str, message: str, error_type: str | None = None
    ) -> None:
        if run.scope is None or run.scope.cancel_called or run.status in TERMINAL_STATUSES:
            raise _RunGone
        self._fail(run, code, message, error_type)

    async def _llm_round(
        self, run: LoadedRun
    ) -> tuple[str, list[dict[str, Any]], str] | LLMJobError:
        """Run one LLM round as a localnet job; emit its text as coalesced deltas."""
        request = run.request
        round_no = run.checkpoint.round
        job: dict[str, Any] = {
            "jobID": f"{run.run_id}-R{round_no}-{secrets.token_hex(3)}",
            "model": request.model,
            "messages": run.checkpoint.conversation,
            **(request.sampling or {}),
        }
        job.update(job_fields(request))
        llm_request = msgspec.convert(job, LLMJobRequest)
        collected = ChunkCollector()
        pending: list[str] = []
        chunks = 0
        waiting = trio.Event()  # set while chunks wait for their delta

        def flush() -> None:
            nonlocal chunks, waiting
            if waiting.is_set():
                waiting = trio.Event()
            if pending:
                self._driver_emit(
                    run,
                    "assistant_message_delta",
                    {"round": round_no, "delta": "".join(pending)},
                    save=False,
                )
                pending.clear()
            chunks = 0

        async def on_message(message: ServerMessage) -> None:
            # Runs in the job's task: once the run was cancelled (or the network is closing)
            # under it, the rest of the job's output is dropped here rather than raised there.
            nonlocal chunks
            await trio.lowlevel.checkpoint()
            if not isinstance(message, ChatCompletionChunk) or run.scope is None:
                return
            if run.scope.cancel_called or run.status in TERMINAL_STATUSES:
                return
            collected.add(message)
            if message.content:
                pending.append(message.content)
                chunks += 1
                waiting.set()
            if chunks >= self.chunks_per_delta or message.finish_reason:
                flush()

        async def flush_late() -> None:
            while True:
                await waiting.wait()
                await trio.sleep(self.delta_interval)
                flush()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush_late)
            result = await self._jobs.run_internal(
                llm_request, account_id=run.row.owner_id, on_message=on_message
            )
            nursery.cancel_scope.cancel()
        flush()
        if isinstance(result, LLMJobError):
            return result
        ordered = collected.tool_calls()
        for n, call in enumerate(ordered):
            call["id"] = call["id"] or f"call_{round_no}_{n}"
        return collected.text, ordered, collected.finish_reason or "stop"

    # -- tools ------------------------------------------------------------------------------------

    def _needs_confirmation(self, run: LoadedRun, usd: Decimal) -> bool:
        if usd <= 0:
            return False
        request = run.request
        if request.confirm_cost is True:
            return True
        config = request.runtime_config or {}
        if config.get("requireJobConfirmation") is True:
            threshold = config.get("jobConfirmationThresholdUsd", 0)
            return usd > Decimal(str(threshold))
        return False

    async def _run_tools(self, run: LoadedRun) -> bool:
        """Execute the pending tool calls in order. Returns ``False`` when the run paused for a
        cost confirmation."""
        checkpoint = run.checkpoint
        token_type = cast(Literal["sogni", "spark"], run.record["scope"]["tokenType"])
        while checkpoint.pending:
            call = checkpoint.pending[0]
            call_id = cast(str, call["id"])
            name = cast(str, call["function"]["name"])
            tool = self.tools.get(name)
            result: dict[str, Any] | None = None
            failure: ToolFailure | None = None
            usd = Decimal(0)
            try:
                arguments = _arguments(call)
                if tool is None:
                    raise ToolFailure("unknown_tool", f"No hosted tool named {name!r}")
                usd = tool.estimate_usd(arguments)
            except ToolFailure as exc:
                failure, arguments = exc, {}
            if (
                failure is None
                and tool is not None
                and call_id not in checkpoint.confirmed
                and self._needs_confirmation(run, usd)
            ):
                self._pause_for_cost(run, call_id, name, arguments, usd, token_type)
                return False
            self._driver_emit(
                run,
                "tool_call_dispatched",
                {"toolCallId": call_id, "toolName": name, "arguments": arguments},
            )
            if failure is None and tool is not None:
                try:
                    result = await self._execute(run, tool, arguments, call_id, usd, token_type)
                except ToolFailure as exc:
                    failure = exc
            checkpoint.pending.pop(0)
            payload: dict[str, Any] = {"toolCallId": call_id, "toolName": name}
            if failure is not None:
                checkpoint.failed_tools += 1
                result = {"error": {"code": failure.code, "message": failure.message}}
                payload.update(status="failed", error=result["error"])
            else:
                assert result is not None
                payload.update(status="succeeded", result=result)
                for image in cast("list[dict[str, Any]]", result.get("images", [])):
                    run.record["artifacts"].append(
                        {
                            "artifactId": image["url"].rsplit("/", 1)[-1],
                            "kind": "image",
                            "url": image["url"],
                            "toolCallId": call_id,
                        }
                    )
            message = {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}
            checkpoint.conversation.append(message)
            run.record["messages"].append(message)
            run.record["toolResults"].append({"toolCallId": call_id, "toolName": name, **payload})
            self._driver_emit(run, "tool_call_resolved", payload)
        return True

    async def _execute(
        self,
        run: LoadedRun,
        tool: HostedToolDouble,
        arguments: Mapping[str, Any],
        call_id: str,
        usd: Decimal,
        token_type: Literal["sogni", "spark"],
    ) -> dict[str, Any]:
        """Run a tool double, billing its price to the run's owner (reserve, then settle once
        it succeeded)."""
        amount = Decimal(format_decimal(self.pricing.in_token(usd, token_type)))
        hold = None
        if self._ledger is not None and amount > 0:
            try:
                hold = self._ledger.reserve(run.row.owner_id, token_type, amount)
            except InsufficientBalance as exc:
                raise ToolFailure("insufficient_balance", str(exc)) from None
        try:
            result = await tool.run(arguments, tool_call_id=call_id, base_url=self._base_url())
        except BaseException:
            if hold is not None and self._ledger is not None:
                self._ledger.release(hold)
            raise
        if hold is not None and self._ledger is not None:
            self._ledger.settle(hold, amount)
            if self._on_settled is not None:
                self._on_settled(run.row.owner_id)
        return result

    def _pause_for_cost(
        self,
        run: LoadedRun,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any],
        usd: Decimal,
        token_type: str,
    ) -> None:
        checkpoint = run.checkpoint
        checkpoint.preview_version += 1
        now = self._clock()
        cost = format_decimal(
            self.pricing.in_token(usd, cast(Literal["sogni", "spark"], token_type))
        )
        preview: dict[str, Any] = {
            "id": f"{run.run_id}:{call_id}",
            "version": checkpoint.preview_version,
            "tokenType": token_type,
            "totalEstimatedCost": cost,
            "totalEstimatedUsdCost": format_decimal(usd),
            "totalEstimatedCapacityUnits": float(usd),
            "validityUntil": iso(now + self.preview_ttl),
            "validUntilEpoch": now + self.preview_ttl,
            "perToolBreakdown": [
                {
                    "toolCallId": call_id,
                    "toolName": name,
                    "estimatedCost": cost,
                    "estimatedUsdCost": format_decimal(usd),
                    "capacityUnits": float(usd),
                }
            ],
        }
        summary = f"{name} will cost about {cost} {token_type} (${format_decimal(usd)})"
        details = {
            "toolCallId": call_id,
            "toolName": name,
            "estimatedCost": float(cost),
            "tokenType": token_type,
            "estimatedUsdCost": float(usd),
            "summary": summary,
            "toolArgs": dict(arguments),
        }
        run.record["billingPreview"] = preview
        run.record["billingPreviews"].append(preview)
        run.record["waiting"] = {
            "reason": "cost_approval_required",
            "message": summary,
            "details": {**details, "costApprovalPreview": preview},
        }
        self._driver_emit(run, "billing_preview_updated", {"billingPreview": preview})
        self._driver_emit(
            run,
            "run_waiting_for_user",
            {
                "reason": "cost_approval_required",
                "message": summary,
                "details": {**details, "costApprovalPreview": preview},
            },
            status="waiting_for_user",
        )
        self._driver_emit(run, "run_awaiting_cost_confirmation", details)

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


def _arguments(call: Mapping[str, Any]) -> dict[str, Any]:
    raw = call["function"].get("arguments") or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise ToolFailure("invalid_arguments", "the tool arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ToolFailure("invalid_arguments", "the tool arguments must be a JSON object")
    return cast("dict[str, Any]", value)
