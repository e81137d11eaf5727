"""The executor of durable runs: one task per run, from its checkpoint to a terminal event or a
pause for cost confirmation.

Each LLM round is a localnet job (:meth:`JobManager.run_internal`) whose chunks are merged by
the jobs layer's :class:`~.._jobs._collector.ChunkCollector` and streamed as coalesced
``assistant_message_delta`` events; each tool call runs either as a real media project
(media tools, through ``_creative``'s :class:`CreativeTools`, billed by the project) or as a
hosted tool TEST DOUBLE (:mod:`._tools`, billed through the ledger), after a cost confirmation
when the run asked for one. Events go through the ``emit`` function the
:class:`~._manager.RunManager` passes in (it owns the event log and the loaded runs); this module
never imports the manager.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol, cast

import msgspec
import trio

from ...protocol import ChatCompletionChunk, LLMJobError, LLMJobRequest, ServerMessage, decode_json
from .._accounts._ledger import InsufficientBalance, Ledger
from .._config import Pricing, format_decimal
from .._creative._execute import CreativeToolError, CreativeTools, ToolOutcome, ToolProgress
from .._creative._inputs import MediaContext
from .._jobs._collector import ChunkCollector
from .._jobs._hostedtools import MEDIA_TOOLS
from .._jobs._manager import JobManager
from ._sse import TERMINAL_STATUSES, iso
from ._state import LoadedRun
from ._store import StoredEvent
from ._tools import HostedToolDouble, ToolFailure, default_tool_doubles
from ._validation import job_fields

__all__ = ["EmitEvent", "RunExecutor"]

logger = logging.getLogger("trio_sogni.localnet")


class EmitEvent(Protocol):
    """Append one event to a run's log (and, with ``save``, store its record and checkpoint),
    setting the run's ``status`` when given; wakes the run's streams."""

    def __call__(
        self,
        run: LoadedRun,
        kind: str,
        payload: dict[str, Any],
        *,
        status: str | None = None,
        save: bool = True,
    ) -> StoredEvent: ...


class _RunGone(Exception):
    """The run ended (cancelled, or the network is closing) under its executor task."""


class RunExecutor:
    """Drives runs: :meth:`spawn` starts a run's task in the nursery given to :meth:`start`.

    Tuning (the :class:`~._manager.RunManager` forwards its attributes of the same names):
    ``preview_ttl``, ``max_rounds``, ``chunks_per_delta``, ``delta_interval``, ``tools``.
    """

    def __init__(
        self,
        *,
        emit: EmitEvent,
        jobs: JobManager,
        ledger: Ledger | None,
        clock: Callable[[], float],
        base_url: Callable[[], str],
        errors: deque[str],
        on_settled: Callable[[str], None] | None,
    ) -> None:
        self._emit = emit
        self._jobs = jobs
        self._ledger = ledger
        self._clock = clock
        self._base_url = base_url
        self._errors = errors
        self._on_settled = on_settled
        self.preview_ttl = 600.0
        self.max_rounds = 8
        self.chunks_per_delta = 4
        self.delta_interval = 0.05
        self.tools: dict[str, HostedToolDouble] = default_tool_doubles()
        self.creative: CreativeTools | None = None
        """Runs the media tools (``generate_image``...) as real projects; see :meth:`_run_tools`."""
        self._nursery: trio.Nursery | None = None

    @property
    def pricing(self) -> Pricing:
        return self._jobs.pricing

    def start(self, nursery: trio.Nursery) -> None:
        """Run tasks go to ``nursery`` from now on."""
        self._nursery = nursery

    def _driver_emit(self, run: LoadedRun, kind: str, payload: dict[str, Any], **kw: Any) -> None:
        """:meth:`_emit` from the run's own task, which must stop once the run was ended under it
        (a cancel request or shutdown cancelled its scope before it reached a checkpoint)."""
        if run.scope is None or run.scope.cancel_called or run.status in TERMINAL_STATUSES:
            raise _RunGone
        self._emit(run, kind, payload, **kw)

    def spawn(self, run: LoadedRun, *, resumed: bool) -> None:
        """Start ``run``'s task (``resumed``: after a restart, it emits ``run_resumed``)."""
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

    def _media_tool(self, name: str) -> CreativeTools | None:
        """The executor of ``name`` when it is a media tool no registered double overrides."""
        if name in self.tools or name not in MEDIA_TOOLS:
            return None
        return self.creative

    async def _run_tools(self, run: LoadedRun) -> bool:
        """Execute the pending tool calls in order. Returns ``False`` when the run paused for a
        cost confirmation.

        A registered double (:attr:`tools`) runs its tool; otherwise a media tool
        (``generate_image``...) runs as a real media project through :attr:`creative`, billed
        by the project itself, with ``tool_call_progress`` and ``artifact_created`` events.
        Any other name fails with ``unknown_tool``."""
        checkpoint = run.checkpoint
        token_type = cast(Literal["sogni", "spark"], run.record["scope"]["tokenType"])
        while checkpoint.pending:
            call = checkpoint.pending[0]
            call_id = cast(str, call["id"])
            name = cast(str, call["function"]["name"])
            creative = self._media_tool(name)
            if creative is not None:
                if not await self._run_media_tool(run, creative, call, token_type):
                    return False
                continue
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

    async def _run_media_tool(
        self,
        run: LoadedRun,
        creative: CreativeTools,
        call: dict[str, Any],
        token_type: Literal["sogni", "spark"],
    ) -> bool:
        """One media tool call as a project (see :meth:`_run_tools`); ``False``: paused for a
        cost confirmation."""
        checkpoint = run.checkpoint
        call_id = cast(str, call["id"])
        name = cast(str, call["function"]["name"])
        raw = call["function"].get("arguments") or "{}"
        arguments: dict[str, Any] = {}
        context = MediaContext(checkpoint.conversation)
        try:
            arguments = creative.check(name, raw)
            usd = creative.estimate_usd(name, arguments, token_type, context)
        except CreativeToolError:
            usd = Decimal(0)  # the call fails below, with the same error, without a project
        if call_id not in checkpoint.confirmed and self._needs_confirmation(run, usd):
            self._pause_for_cost(run, call_id, name, arguments, usd, token_type)
            return False
        self._driver_emit(
            run,
            "tool_call_dispatched",
            {"toolCallId": call_id, "toolName": name, "arguments": arguments},
        )

        async def on_progress(progress: ToolProgress) -> None:
            await trio.lowlevel.checkpoint()
            self._driver_emit(
                run,
                "tool_call_progress",
                {
                    "toolCallId": progress.tool_call_id,
                    "toolName": progress.tool_name,
                    "status": progress.status,
                    "percent": progress.percent,
                    "projectId": progress.project_id,
                },
                save=False,
            )

        outcome = await creative.execute(
            call_id,
            name,
            raw,
            account_id=run.row.owner_id,
            token_type=token_type,
            on_progress=on_progress,
            context=checkpoint.conversation,
        )
        self._resolve_media(run, outcome)
        return True

    def _resolve_media(self, run: LoadedRun, outcome: ToolOutcome) -> None:
        checkpoint = run.checkpoint
        checkpoint.pending.pop(0)
        call_id, name = outcome.tool_call_id, outcome.tool_name
        payload: dict[str, Any] = {"toolCallId": call_id, "toolName": name}
        if outcome.success:
            payload.update(status="succeeded", result=outcome.content)
            for n, url in enumerate(outcome.result_urls):
                artifact = {
                    "artifactId": f"{outcome.project_id}-{n}",
                    "kind": outcome.media_type or "other",
                    "url": url,
                    "toolCallId": call_id,
                    "toolName": name,
                }
                run.record["artifacts"].append(artifact)
                self._driver_emit(run, "artifact_created", artifact, save=False)
        else:
            checkpoint.failed_tools += 1
            error = {"code": outcome.code or "tool_failed", "message": outcome.error or ""}
            payload.update(status="failed", error=error)
        if outcome.project_id is not None:
            payload["projectId"] = outcome.project_id
        message = {
            "role": "tool",
            "tool_call_id": call_id,
            "content": outcome.tool_message()["content"],
        }
        checkpoint.conversation.append(message)
        run.record["messages"].append(message)
        run.record["toolResults"].append({"toolCallId": call_id, "toolName": name, **payload})
        self._driver_emit(run, "tool_call_resolved", payload)

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


def _arguments(call: Mapping[str, Any]) -> dict[str, Any]:
    raw = call["function"].get("arguments") or "{}"
    try:
        value = decode_json(raw)
    except (ValueError, TypeError):
        raise ToolFailure("invalid_arguments", "the tool arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ToolFailure("invalid_arguments", "the tool arguments must be a JSON object")
    return cast("dict[str, Any]", value)
