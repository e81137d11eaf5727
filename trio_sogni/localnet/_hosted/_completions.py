"""Hosted REST: ``POST /v1/chat/completions`` and ``POST /v1/creative-agent/tools/execute``
(protocol.md §3.2, §3.3, §3.8).

Both run their LLM work as ordinary localnet jobs (:meth:`JobManager.run_internal`): the same
admission checks, queues, workers and billing as socket jobs (the estimate is reserved from the
caller's account and the actual cost debited on completion).

**Completions** answer the raw OpenAI object ``{id, object: "chat.completion", created, model,
choices: [{index: 0, message: {role: "assistant", content, tool_calls?}, finish_reason}],
usage: {prompt_tokens, completion_tokens, total_tokens}}``. With ``stream: true`` they answer
Server-Sent Events in OpenAI's exact chunk format instead: ``data: {id, object:
"chat.completion.chunk", created, model, choices: [{index: 0, delta: {role?, content?,
tool_calls?}, finish_reason}]}`` lines, one per chunk of the job (the first delta carries the
role, the last the finish reason), with ``stream_options: {include_usage: true}`` one more chunk
``{choices: [], usage}``, then ``data: [DONE]``. A job that fails after the stream began ends it
with ``data: {"error": {message, type, code}}`` (no ``[DONE]``), which the ``openai`` package
raises as an ``APIError``. The job's chunks reach the HTTP client through a buffer of 64
messages: a client that reads slowly slows the job down, and a client that goes away aborts
it (its hold released), also one gone before the first byte of the response (`_JobBody`). ``GET /v1/models`` lists the chat models a worker serves, as OpenAI does.

**Hosted creative tools**: with ``sogni_tool_execution: true`` a completion whose rounds end in
calls to hosted tools (and none of the caller's own) has them executed by
:class:`~.._creative._execute.CreativeTools` (media tools as real projects), fed back as
``tool`` messages, for at most ``MAX_TOOL_ROUNDS`` rounds and ``MAX_CALLS_PER_ROUND`` calls a
round; the answer adds ``sogni_tool_results`` (one entry per executed call), and a stream adds
``{choices: [], sogni_tool_event}`` chunks and one ``{choices: [], sogni_tool_results}`` chunk
before the usage chunk (docs/localnet.md, "Hosted creative tools").

**Tools** answer ``{status: "success", data: {toolCallId, tool, result, message: null}}``; see
:mod:`._composition` for how a call becomes a job. **Image adapters** (``apply_style``,
``restore_photo``, ``refine_result``, ``change_angle``, ``animate_photo``) run as media projects
(:meth:`CreativeTools.start_adapter`): refused before the answer starts with a real HTTP error,
else answered ``200`` with a space every ``HEARTBEAT`` seconds while the renders run (a client
gone is noticed and its project cancelled), then the same envelope with ``result`` ``{success,
urls, media_type, model, prompt, projectId}`` (``{success: false, error, code, projectId}`` for a
project that failed after admission); see docs/localnet.md, "Image adapters". Any other tool is
a ``404 tool_not_found`` "not supported by localnet".

**Errors**, on both routes and for every failure (bad request, credentials, admission and job
failures alike), use the OpenAI-style shape that ChatJobError recognises, with the Sogni REST
envelope's keys beside it so the official SDKs' ``ApiError`` has a message::

    {"status": "error", "message": M, "errorCode": <HTTP status>,
     "error": {"message": M, "type": T, "code": C, "subscription"?: {...}}}

====  ===================================  ==========================================
HTTP  type / code                          when
====  ===================================  ==========================================
400   ``invalid_request_error`` /          malformed body, unknown field,
      ``invalid_request``                  ``stream_options`` without ``stream``, bad
      (adapters: ``invalid_arguments``,    tool arguments, ``max_tokens`` above the
      ``media_input_*``)                   model's limit, an unusable adapter source
401   ``authentication_error`` /           missing or invalid credentials
      ``invalid_api_key``
402   ``insufficient_balance``             the account cannot cover the estimate
404   ``model_not_found`` /                a model the network does not know, a tool
      ``tool_not_found``                   localnet does not run
503   the job's tag (``model_unavailable``,  no worker serves the model, the server is
      ``server_restarting``,               restarting, the worker went away
      ``worker_disconnected``)
502   ``tool_output_invalid``              the model's tool output is not JSON or does
                                           not match the result schema
====  ===================================  ==========================================

A job refused or failed (``llmJobError``) gives ``type`` = its ``error`` tag (but
``invalid_request_error`` for ``invalid_request``) and ``code`` = its ``error_code`` (else the tag), with subscription fields under ``error.subscription``; the
status is 402 for a subscription denial (``subscriptionLimit`` or codes 4078-4081), 400 for
``invalid_request``, 500 for ``internal_error``, 503 as above, else 502.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from functools import partial
from typing import Any, Final, Literal, Self, cast

import msgspec
import trio

from ...protocol import (
    ChatCompletionChunk,
    ChatMessage,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
    decode_json,
)
from .._config import Account
from .._creative._execute import (
    ADAPTER_TOOLS,
    CreativeToolError,
    CreativeTools,
    StartedAdapter,
    ToolOutcome,
    ToolProgress,
)
from .._jobs._collector import ChunkCollector
from .._jobs._manager import InternalJob, JobManager
from .._server import HTTPRequest, HTTPResponse, Router, json_response
from ._composition import composition_tool

__all__ = ["hosted_routes", "openai_error"]

logger = logging.getLogger("trio_sogni.localnet")

COMPLETIONS_PATH: Final = "/v1/chat/completions"
MODELS_PATH: Final = "/v1/models"
STREAM_BUFFER: Final = 64
"""Messages of a streamed completion's job buffered for a slow HTTP client (then the job waits)."""
TOOLS_PATH: Final = "/v1/creative-agent/tools/execute"
MAX_TOOL_ROUNDS: Final = 5
"""With ``sogni_tool_execution``, at most this many rounds of hosted tool calls are executed
for one completion; a model still calling hosted tools after them gets its calls returned
unexecuted (``finish_reason: "tool_calls"``)."""
MAX_CALLS_PER_ROUND: Final = 8
"""At most this many hosted tool calls of one round run (concurrently, as the official limit);
later ones get a failed result ``too_many_calls``."""
HEARTBEAT: Final = 2.0
"""Seconds between SSE comment lines (``: executing tools``) while a streamed completion waits
for its tools (so a client that went away is noticed, and its projects cancelled)."""

_BODY_TO_WIRE: Final[Mapping[str, str]] = {
    "model": "model",
    "messages": "messages",
    "app_source": "appSource",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "stop": "stop",
    "token_type": "tokenType",
    "billingMode": "billingMode",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "sogni_tools": "sogni_tools",
    "sogni_tool_execution": "sogni_tool_execution",
    "task_profile": "taskProfile",
    "safe_content_filter": "safeContentFilter",
    "chat_template_kwargs": "chat_template_kwargs",
    "response_format": "response_format",
}
"""Hosted body field (snake_case, except ``billingMode``) → ``llmJobRequest`` field."""

_WIRE_TO_BODY: Final = {wire: body for body, wire in _BODY_TO_WIRE.items()}

_MEDIA_FIELDS: Final = ("media_references", "api_media_references")

_ATTRIBUTION_HEADERS: Final[Mapping[str, str]] = {
    "x-sogni-workload-kind": "workloadKind",
    "x-sogni-agent-framework": "agentFramework",
    "x-sogni-agent-framework-version": "agentFrameworkVersion",
    "x-sogni-agent-surface": "agentSurface",
    "x-sogni-agent-surface-version": "agentSurfaceVersion",
    "x-sogni-execution-mode": "executionMode",
    "x-sogni-operation-scope": "operationScope",
    "x-sogni-operation-id": "operationId",
    "x-sogni-root-operation-id": "rootOperationId",
    "x-sogni-parent-operation-id": "parentOperationId",
}
"""Attribution headers (protocol.md §3.9) copied into the job request's wire fields."""

_TOOL_FIELDS: Final = frozenset(
    {"tool", "arguments", "app_source", "token_type", "safe_content_filter"}
)
_SUBSCRIPTION_CODES: Final = frozenset({"4078", "4079", "4080", "4081"})
_ADAPTER_STATUS: Final[Mapping[str, int]] = {
    "no_worker": 503,
    "model_unavailable": 503,
    "serverRestarting": 503,
    "media_input_unavailable": 503,
    "too_many_jobs": 429,
    "insufficient_balance": 402,
}
"""HTTP status of an adapter call refused before its project started, by refusal code (others:
400)."""
_UNAVAILABLE: Final = frozenset({"model_unavailable", "server_restarting", "worker_disconnected"})


def openai_error(
    status: int,
    message: str,
    error_type: str,
    code: str,
    *,
    subscription: Mapping[str, Any] | None = None,
) -> HTTPResponse:
    """An error response in the shape described in the module docstring."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if subscription:
        error["subscription"] = dict(subscription)
    body = {"status": "error", "message": message, "errorCode": status, "error": error}
    return json_response(status, body)


def _invalid(message: str) -> HTTPResponse:
    return openai_error(400, message, "invalid_request_error", "invalid_request")


def _unauthorized() -> HTTPResponse:
    return openai_error(
        401, "Invalid or missing credentials", "authentication_error", "invalid_api_key"
    )


def job_error_response(error: LLMJobError) -> HTTPResponse:
    """The HTTP answer for a job refused at admission or failed while running."""
    subscription = {
        key: value
        for key, value in (
            ("subscriptionLimit", error.subscription_limit),
            ("requiredPlans", error.required_plans),
            ("feature", error.feature),
            ("limitation", error.limitation),
        )
        if value is not None
    }
    tag = str(error.error)
    code = str(error.error_code) if error.error_code is not None else tag
    if (
        error.error == "insufficient_balance"
        or error.subscription_limit
        or code in _SUBSCRIPTION_CODES
    ):
        status = 402
    elif tag == "invalid_request":
        status = 400
    elif tag in _UNAVAILABLE:
        status = 503
    elif tag == "internal_error":
        status = 500
    else:
        status = 502
    message = error.error_message or tag
    error_type = "invalid_request_error" if tag == "invalid_request" else tag
    return openai_error(status, message, error_type, code, subscription=subscription)


def _json_body(request: HTTPRequest) -> dict[str, Any] | HTTPResponse:
    try:
        body = decode_json(request.body)
    except msgspec.DecodeError:
        return _invalid("The request body must be a JSON object")
    if not isinstance(body, dict):
        return _invalid("The request body must be a JSON object")
    return body  # pyright: ignore[reportUnknownVariableType]


def _new_job_id() -> str:
    return str(uuid.uuid4()).upper()


def completion_request(
    body: Mapping[str, Any], headers: Mapping[str, str], job_id: str
) -> LLMJobRequest | str:
    """The ``llmJobRequest`` for a hosted completion body, or the reason it is invalid.

    ``null`` fields count as absent; ``stream`` and ``stream_options`` (``{include_usage}``) are
    the caller's business (see :func:`stream_flags`) and not part of the job; ``media_references`` and
    ``api_media_references`` may only be empty (no media references on the hosted routes); any other field not in
    protocol.md §3.2 is refused. ``app_source`` defaults to the ``X-App-Source`` header, and the
    ``X-Sogni-*`` attribution headers become the request's attribution fields.
    """
    wire: dict[str, Any] = {"jobID": job_id, "type": "llm"}
    for name, value in body.items():
        if value is None:
            continue
        if name in ("stream", "stream_options"):
            continue
        if name in _MEDIA_FIELDS:
            if value != []:
                return f"{name} is not supported by localnet (no media references on the hosted routes)"
            continue
        target = _BODY_TO_WIRE.get(name)
        if target is None:
            return f"Unknown field {name!r}"
        wire[target] = value
    if "appSource" not in wire and "x-app-source" in headers:
        wire["appSource"] = headers["x-app-source"]
    for header, target in _ATTRIBUTION_HEADERS.items():
        if header in headers:
            wire[target] = headers[header]
    for required in ("model", "messages"):
        if required not in wire:
            return f"Missing required field {required!r}"
    try:
        return msgspec.convert(wire, LLMJobRequest)
    except (msgspec.ValidationError, ValueError) as exc:
        message = str(exc)
        for wire_name, body_name in _WIRE_TO_BODY.items():
            message = message.replace(f"`$.{wire_name}", f"`$.{body_name}")
        return f"Invalid request: {message}"


def stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool] | str:
    """``(stream, include_usage)`` of a completion body, or the reason they are invalid."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "stream must be a boolean"
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        return "stream_options is only allowed with stream: true"
    if not isinstance(options, dict):
        return "stream_options must be an object"
    fields = cast("dict[str, object]", options)
    unknown = sorted(set(fields) - {"include_usage"})
    if unknown:
        return f"Unknown field 'stream_options.{unknown[0]}'"
    include = fields.get("include_usage", False)
    if not isinstance(include, bool):
        return "stream_options.include_usage must be a boolean"
    return True, include


def _sse(payload: object) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def _delta(chunk: ChatCompletionChunk, *, first: bool) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if first or chunk.role:
        delta["role"] = chunk.role or "assistant"
    if chunk.content:
        delta["content"] = chunk.content
    if chunk.tool_calls:
        delta["tool_calls"] = msgspec.to_builtins(chunk.tool_calls)
    return delta


class _JobBody:
    """A streamed response body (``HTTPResponse.stream``) whose job is ended as ``aborted``
    when the server closes the body before the job finished, even if the body never started:
    the server closes it when the client was gone before the first byte, which an async
    generator's own ``finally`` would not see (closing a generator that never started runs
    none of its code)."""

    __slots__ = ("_abort", "_chunks")

    def __init__(self, chunks: AsyncGenerator[bytes], abort: Callable[[], None]) -> None:
        self._chunks = chunks
        self._abort = abort

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Close the chunks (running their cleanup if they started), then ``abort``."""
        try:
            await self._chunks.aclose()
        finally:
            self._abort()


def hosted_routes(
    *,
    jobs: JobManager,
    authenticate: Callable[[Mapping[str, str]], Account | None],
    clock: Callable[[], float],
    creative: CreativeTools | None = None,
    nursery: Callable[[], trio.Nursery | None] = lambda: None,
) -> Router:
    """A router with the hosted completion and composition-tool routes. ``creative`` executes
    hosted tool calls (``sogni_tool_execution``; without it such requests are refused), and a
    streamed completion with execution runs its rounds in a task of ``nursery()``."""
    return _HostedEndpoints(
        jobs=jobs, authenticate=authenticate, clock=clock, creative=creative, nursery=nursery
    ).routes()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _own_tool_names(request: LLMJobRequest) -> set[str]:
    return {tool.function.name for tool in request.tools or ()}


def _number_calls(calls: list[dict[str, Any]], round_no: int) -> None:
    for n, call in enumerate(calls):
        call["id"] = call["id"] or f"call_{round_no}_{n}"


class _HostedEndpoints:
    """The hosted completion and tool endpoints."""

    def __init__(
        self,
        *,
        jobs: JobManager,
        authenticate: Callable[[Mapping[str, str]], Account | None],
        clock: Callable[[], float],
        creative: CreativeTools | None,
        nursery: Callable[[], trio.Nursery | None],
    ) -> None:
        self._jobs = jobs
        self._authenticate = authenticate
        self._clock = clock
        self._creative = creative
        self._nursery = nursery

    def routes(self) -> Router:
        """A new router with these endpoints."""
        router = Router()
        router.add("POST", COMPLETIONS_PATH, self._completions)
        router.add("GET", MODELS_PATH, self._models)
        router.add("POST", TOOLS_PATH, self._execute_tool)
        return router

    async def _models(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        """``GET /v1/models``: the chat models a worker serves, as OpenAI lists models."""
        if self._authenticate(request.headers) is None:
            return _unauthorized()
        served = [m for m in self._jobs.models if self._jobs.scheduler.serves(m)]
        return json_response(
            200,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "sogni-localnet"}
                    for m in served
                ],
            },
        )

    def _stream(
        self, job_request: LLMJobRequest, account: Account, include_usage: bool
    ) -> HTTPResponse:
        """Start the job now (so admission errors are real HTTP errors) and answer its chunks as
        Server-Sent Events."""
        send, receive = trio.open_memory_channel[ServerMessage](STREAM_BUFFER)
        job = self._jobs.start_internal(job_request, account_id=account.id, on_message=send.send)
        if isinstance(job, LLMJobError):
            send.close()
            receive.close()
            return job_error_response(job)
        job.on_finished = send.close

        def body() -> _JobBody:
            return _JobBody(self._events(job, receive, include_usage), partial(self._abort, job))

        return HTTPResponse(
            200,
            content_type="text/event-stream; charset=utf-8",
            headers=[("cache-control", "no-cache"), ("x-accel-buffering", "no")],
            stream=body,
        )

    def _abort(self, job: InternalJob) -> None:
        """End ``job`` as ``aborted`` unless it has finished (its hold is released)."""
        if not job.finished.is_set():
            self._jobs.end_job(job, "aborted", None)

    async def _events(
        self,
        job: InternalJob,
        receive: trio.MemoryReceiveChannel[ServerMessage],
        include_usage: bool,
    ) -> AsyncGenerator[bytes]:
        base: dict[str, Any] = {
            "id": f"chatcmpl-{job.job_id}",
            "object": "chat.completion.chunk",
            "created": int(self._clock()),
            "model": job.model,
        }
        first = True
        result: LLMJobResult | None = None
        try:
            with receive:
                async for message in receive:
                    if isinstance(message, ChatCompletionChunk):
                        delta = _delta(message, first=first)
                        if not delta and not message.finish_reason:
                            continue
                        first = False
                        choice = {
                            "index": 0,
                            "delta": delta,
                            "finish_reason": message.finish_reason,
                        }
                        yield _sse({**base, "choices": [choice]})
                    elif isinstance(message, LLMJobResult):
                        result = message
                        break
                    elif isinstance(message, LLMJobError):
                        break
            final = result or job.final
            if not isinstance(final, LLMJobResult):
                error = final or LLMJobError(
                    job_id=job.job_id, error="internal_error", error_message="the job ended"
                )
                body = msgspec.json.decode(job_error_response(error).body)
                yield _sse({"error": body["error"]})
                return
            if include_usage:
                usage = final.usage
                prompt = usage.prompt_tokens if usage is not None else 0
                completion = usage.completion_tokens if usage is not None else 0
                yield _sse(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        },
                    }
                )
            yield b"data: [DONE]\n\n"
        finally:
            # The HTTP client went away (or the server is closing): stop paying for it.
            self._abort(job)

    async def _run(
        self, request: LLMJobRequest, account: Account
    ) -> tuple[LLMJobResult | LLMJobError, ChunkCollector]:
        collector = ChunkCollector()
        final = await self._jobs.run_internal(
            request, account_id=account.id, on_message=collector.on_message
        )
        return final, collector

    async def _completions(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        account = self._authenticate(request.headers)
        if account is None:
            return _unauthorized()
        body = _json_body(request)
        if isinstance(body, HTTPResponse):
            return body
        flags = stream_flags(body)
        if isinstance(flags, str):
            return _invalid(flags)
        job_id = _new_job_id()
        job_request = completion_request(body, request.headers, job_id)
        if isinstance(job_request, str):
            return _invalid(job_request)
        if job_request.model not in self._jobs.models:
            return openai_error(
                404,
                f"The model {job_request.model!r} does not exist on this network",
                "invalid_request_error",
                "model_not_found",
            )
        stream, include_usage = flags
        if job_request.sogni_tool_execution is True:
            if self._creative is None:
                return _invalid("sogni_tool_execution is not available on this network")
            if stream:
                return self._stream_executing(job_request, account, include_usage)
            return await self._complete_executing(job_request, account)
        if stream:
            return self._stream(job_request, account, include_usage)
        final, collector = await self._run(job_request, account)
        if isinstance(final, LLMJobError):
            return job_error_response(final)
        usage = final.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        return json_response(
            200,
            {
                "id": f"chatcmpl-{job_id}",
                "object": "chat.completion",
                "created": int(self._clock()),
                "model": job_request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": collector.message(),
                        "finish_reason": collector.finish_reason or "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        )

    # -- sogni_tool_execution -------------------------------------------------------------------

    def _hosted_calls(
        self, request: LLMJobRequest, calls: list[dict[str, Any]], finish: str | None
    ) -> bool:
        """Whether localnet executes this round's ``calls``: the model stopped for tool calls,
        and every call names a hosted tool localnet runs that the caller did not define itself
        (one call to a caller's tool returns the whole round to the caller)."""
        if finish != "tool_calls" or not calls or self._creative is None:
            return False
        own = _own_tool_names(request)
        names = [cast(str, call["function"]["name"]) for call in calls]
        return all(name not in own and self._creative.executes(name) for name in names)

    async def _execute_round(
        self,
        request: LLMJobRequest,
        account: Account,
        calls: list[dict[str, Any]],
        on_progress: Callable[[ToolProgress], Any] | None,
        conversation: list[dict[str, Any]],
    ) -> list[ToolOutcome]:
        """Execute one round's hosted calls concurrently; outcomes in call order. The earlier
        tool results of ``conversation`` are the media the calls may take as inputs."""
        assert self._creative is not None
        creative = self._creative
        token_type: Literal["sogni", "spark"] = (
            request.token_type if isinstance(request.token_type, str) else "sogni"
        )
        outcomes: list[ToolOutcome | None] = [None] * len(calls)

        async def one(n: int, call: dict[str, Any]) -> None:
            if n >= MAX_CALLS_PER_ROUND:
                await trio.lowlevel.checkpoint()
                outcomes[n] = creative.refused(
                    cast(str, call["id"]),
                    cast(str, call["function"]["name"]),
                    "too_many_calls",
                    f"at most {MAX_CALLS_PER_ROUND} hosted tool calls run per round",
                )
                return
            outcomes[n] = await creative.execute(
                cast(str, call["id"]),
                cast(str, call["function"]["name"]),
                call["function"].get("arguments") or "{}",
                account_id=account.id,
                token_type=token_type,
                on_progress=on_progress,
                context=conversation,
            )

        async with trio.open_nursery() as nursery:
            for n, call in enumerate(calls):
                nursery.start_soon(one, n, call)
        return [outcome for outcome in outcomes if outcome is not None]

    def _next_round(
        self, request: LLMJobRequest, conversation: list[dict[str, Any]]
    ) -> LLMJobRequest:
        return msgspec.structs.replace(
            request,
            job_id=_new_job_id(),
            messages=msgspec.convert(conversation, list[ChatMessage]),
        )

    async def _complete_executing(self, request: LLMJobRequest, account: Account) -> HTTPResponse:
        """A non-streamed completion whose hosted tool calls localnet executes (module
        docstring, "Hosted creative tools")."""
        conversation: list[dict[str, Any]] = msgspec.to_builtins(request.messages)
        results: list[ToolOutcome] = []
        prompt = completion = 0
        job = request
        message: dict[str, Any] = {}
        finish = "stop"
        for round_no in itertools.count(1):
            final, collector = await self._run(job, account)
            if isinstance(final, LLMJobError):
                return job_error_response(final)
            if final.usage is not None:
                prompt += final.usage.prompt_tokens
                completion += final.usage.completion_tokens
            message = collector.message()
            calls = collector.tool_calls()
            _number_calls(calls, round_no)
            finish = collector.finish_reason or "stop"
            if round_no > MAX_TOOL_ROUNDS or not self._hosted_calls(request, calls, finish):
                break
            outcomes = await self._execute_round(request, account, calls, None, conversation)
            results.extend(outcomes)
            conversation.append(message)
            conversation.extend(outcome.tool_message() for outcome in outcomes)
            job = self._next_round(request, conversation)
        return json_response(
            200,
            {
                "id": f"chatcmpl-{request.job_id}",
                "object": "chat.completion",
                "created": int(self._clock()),
                "model": request.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": _usage(prompt, completion),
                "sogni_tool_results": [outcome.wire() for outcome in results],
            },
        )

    def _stream_executing(
        self, request: LLMJobRequest, account: Account, include_usage: bool
    ) -> HTTPResponse:
        """A streamed completion whose hosted tool calls localnet executes: the first round is
        admitted now (its refusal is a real HTTP error); the rounds then run in a task of the
        network whose SSE lines reach the response through a buffer of ``STREAM_BUFFER``."""
        send, receive = trio.open_memory_channel[ServerMessage](STREAM_BUFFER)
        job = self._jobs.start_internal(request, account_id=account.id, on_message=send.send)
        if isinstance(job, LLMJobError):
            send.close()
            receive.close()
            return job_error_response(job)
        job.on_finished = send.close
        nursery = self._nursery()
        if nursery is None:  # pragma: no cover - the network always passes its nursery
            self._jobs.end_job(job, "aborted", None)
            raise RuntimeError("the hosted routes have no nursery")
        lines_send, lines_receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        scope = trio.CancelScope()
        drive = partial(
            self._drive_stream, request, account, job, receive, lines_send, include_usage, scope
        )

        def body() -> _JobBody:
            # Until the relay starts the driver, the first round's job is this response's to end.
            relay = self._relay(nursery, drive, lines_receive, scope)
            return _JobBody(relay, partial(self._abort, job))

        return HTTPResponse(
            200,
            content_type="text/event-stream; charset=utf-8",
            headers=[("cache-control", "no-cache"), ("x-accel-buffering", "no")],
            stream=body,
        )

    async def _relay(
        self,
        nursery: trio.Nursery,
        drive: Callable[[], Any],
        lines: trio.MemoryReceiveChannel[bytes],
        scope: trio.CancelScope,
    ) -> AsyncGenerator[bytes]:
        """The response body: starts the driver task (``drive``), then relays its SSE lines, with
        a comment line after ``HEARTBEAT`` seconds without one. Leaving early (the client went
        away) cancels the driver, which aborts its job and cancels its projects."""
        try:
            nursery.start_soon(drive)
            with lines:
                while True:
                    line: bytes | None = None
                    with trio.move_on_after(HEARTBEAT):
                        try:
                            line = await lines.receive()
                        except trio.EndOfChannel:
                            return
                    yield line if line is not None else b": executing tools\n\n"
        finally:
            scope.cancel()

    async def _drive_stream(
        self,
        request: LLMJobRequest,
        account: Account,
        job: InternalJob,
        receive: trio.MemoryReceiveChannel[ServerMessage],
        lines: trio.MemorySendChannel[bytes],
        include_usage: bool,
        scope: trio.CancelScope,
    ) -> None:
        base: dict[str, Any] = {
            "id": f"chatcmpl-{request.job_id}",
            "object": "chat.completion.chunk",
            "created": int(self._clock()),
            "model": request.model,
        }
        conversation: list[dict[str, Any]] = msgspec.to_builtins(request.messages)
        results: list[ToolOutcome] = []
        prompt = completion = 0
        first = True

        async def put(payload: object) -> None:
            await lines.send(_sse(payload))

        async def tool_event(event: dict[str, Any]) -> None:
            await put({**base, "choices": [], "sogni_tool_event": event})

        async def on_progress(progress: ToolProgress) -> None:
            await tool_event(
                {
                    "type": "tool_call_progress",
                    "toolCallId": progress.tool_call_id,
                    "toolName": progress.tool_name,
                    "status": progress.status,
                    "percent": progress.percent,
                    "projectId": progress.project_id,
                }
            )

        with lines:
            try:
                with scope:
                    for round_no in itertools.count(1):
                        collector = ChunkCollector()
                        final: LLMJobResult | LLMJobError | None = None
                        with receive:
                            async for message in receive:
                                if isinstance(message, ChatCompletionChunk):
                                    collector.add(message)
                                    if message.content:
                                        delta = {"content": message.content}
                                        if first:
                                            delta["role"] = "assistant"
                                            first = False
                                        choice = {"index": 0, "delta": delta, "finish_reason": None}
                                        await put({**base, "choices": [choice]})
                                elif isinstance(message, LLMJobResult | LLMJobError):
                                    final = message
                                    break
                        final = final or job.final
                        if not isinstance(final, LLMJobResult):
                            error = final or LLMJobError(
                                job_id=job.job_id, error="internal_error", error_message="ended"
                            )
                            body = msgspec.json.decode(job_error_response(error).body)
                            await put({"error": body["error"]})
                            return
                        if final.usage is not None:
                            prompt += final.usage.prompt_tokens
                            completion += final.usage.completion_tokens
                        calls = collector.tool_calls()
                        _number_calls(calls, round_no)
                        finish = collector.finish_reason or "stop"
                        if round_no <= MAX_TOOL_ROUNDS and self._hosted_calls(
                            request, calls, finish
                        ):
                            for call in calls:
                                await tool_event(
                                    {
                                        "type": "tool_call_started",
                                        "toolCallId": call["id"],
                                        "toolName": call["function"]["name"],
                                        "arguments": call["function"]["arguments"],
                                    }
                                )
                            outcomes = await self._execute_round(
                                request, account, calls, on_progress, conversation
                            )
                            for outcome in outcomes:
                                kind = "completed" if outcome.success else "failed"
                                await tool_event({"type": f"tool_call_{kind}", **outcome.wire()})
                            results.extend(outcomes)
                            conversation.append(collector.message())
                            conversation.extend(outcome.tool_message() for outcome in outcomes)
                            send, receive = trio.open_memory_channel[ServerMessage](STREAM_BUFFER)
                            started = self._jobs.start_internal(
                                self._next_round(request, conversation),
                                account_id=account.id,
                                on_message=send.send,
                            )
                            if isinstance(started, LLMJobError):
                                send.close()
                                receive.close()
                                body = msgspec.json.decode(job_error_response(started).body)
                                await put({"error": body["error"]})
                                return
                            job = started
                            job.on_finished = send.close
                            continue
                        delta: dict[str, Any] = {}
                        if first:
                            delta["role"] = "assistant"
                        if calls:
                            delta["tool_calls"] = [
                                {"index": n, **call} for n, call in enumerate(calls)
                            ]
                        choice = {"index": 0, "delta": delta, "finish_reason": finish}
                        await put({**base, "choices": [choice]})
                        await put(
                            {
                                **base,
                                "choices": [],
                                "sogni_tool_results": [outcome.wire() for outcome in results],
                            }
                        )
                        if include_usage:
                            await put({**base, "choices": [], "usage": _usage(prompt, completion)})
                        await lines.send(b"data: [DONE]\n\n")
                        return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the response is gone: nothing more to send
            except Exception:  # a localnet bug: end this stream, never the network
                logger.exception("localnet: a streamed completion with tool execution failed")
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock
                ):
                    lines.send_nowait(
                        _sse(
                            {
                                "error": {
                                    "message": "localnet internal error",
                                    "type": "internal_error",
                                    "code": "internal_error",
                                }
                            }
                        )
                    )
            finally:
                if not job.finished.is_set():
                    self._jobs.end_job(job, "aborted", None)
                receive.close()

    def _tool_model(self) -> str | None:
        """The model tool jobs run on: the first model the network knows that a worker serves."""
        return next((m for m in self._jobs.models if self._jobs.scheduler.serves(m)), None)

    async def _execute_tool(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        account = self._authenticate(request.headers)
        if account is None:
            return _unauthorized()
        body = _json_body(request)
        if isinstance(body, HTTPResponse):
            return body
        unknown = sorted(set(body) - _TOOL_FIELDS)
        if unknown:
            return _invalid(f"Unknown field {unknown[0]!r}")
        name = body.get("tool")
        if not isinstance(name, str) or not name:
            return _invalid("tool must be a non-empty string")
        if name in ADAPTER_TOOLS and self._creative is not None:
            return await self._execute_adapter(self._creative, name, body, account)
        tool = composition_tool(name)
        if tool is None:
            return openai_error(
                404,
                f"Tool {name!r} is not supported by localnet: its tools endpoint runs "
                "enhance_prompt, compose_script, compose_lyrics, compose_instrumental and the "
                "image adapters " + ", ".join(ADAPTER_TOOLS),
                "invalid_request_error",
                "tool_not_found",
            )
        arguments = body.get("arguments")
        problems = tool.check_arguments(arguments)
        if problems:
            return _invalid(f"Invalid arguments for {name}: " + "; ".join(problems[:5]))
        assert isinstance(arguments, dict)
        options: dict[str, Any] = {}
        for field_name, wire_name in (
            ("app_source", "appSource"),
            ("token_type", "tokenType"),
            ("safe_content_filter", "safeContentFilter"),
        ):
            if body.get(field_name) is not None:
                options[wire_name] = body[field_name]
        model = self._tool_model()
        if model is None:
            return openai_error(
                503, "No worker is available to run tools", "model_unavailable", "model_unavailable"
            )
        wire: dict[str, Any] = {
            "jobID": _new_job_id(),
            "type": "llm",
            "model": model,
            "messages": msgspec.to_builtins(tool.messages(arguments)),  # pyright: ignore[reportUnknownArgumentType]
            "stream": False,
            "response_format": msgspec.to_builtins(tool.response_format()),
            **options,
        }
        try:
            job_request = msgspec.convert(wire, LLMJobRequest)
        except msgspec.ValidationError as exc:
            return _invalid(f"Invalid request: {exc}")
        final, collector = await self._run(job_request, account)
        if isinstance(final, LLMJobError):
            return job_error_response(final)
        output = "".join(collector.content)
        try:
            result = decode_json(output)
        except msgspec.DecodeError:
            return openai_error(
                502,
                f"The model's output for {name} is not valid JSON",
                "tool_output_invalid",
                "tool_output_invalid",
            )
        problems = tool.check_result(result)
        if problems:
            return openai_error(
                502,
                f"The model's output for {name} does not match its result schema: "
                + "; ".join(problems[:5]),
                "tool_output_invalid",
                "tool_output_invalid",
            )
        return json_response(
            200,
            {
                "status": "success",
                "data": {
                    "toolCallId": f"call_{uuid.uuid4().hex[:24]}",
                    "tool": name,
                    "result": result,
                    "message": None,
                },
            },
        )

    # -- image adapters -------------------------------------------------------------------------

    async def _execute_adapter(
        self, creative: CreativeTools, name: str, body: Mapping[str, Any], account: Account
    ) -> HTTPResponse:
        """An image adapter call (module docstring, "Image adapters"): checked, its inputs
        uploaded and its project admitted before the answer starts (a refusal is a real HTTP
        error); the answer then waits for the renders (see :meth:`_adapter_body`)."""
        token_type: Literal["sogni", "spark"] = (
            "spark" if body.get("token_type") == "spark" else "sogni"
        )
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        try:
            started = await creative.start_adapter(
                call_id, name, body.get("arguments"), account_id=account.id, token_type=token_type
            )
        except CreativeToolError as exc:
            status = _ADAPTER_STATUS.get(exc.code, 400)
            kind = "invalid_request_error" if status == 400 else exc.code
            return openai_error(status, exc.message, kind, exc.code)
        nursery = self._nursery()

        def abort() -> None:
            if not started.project.done.is_set() and nursery is not None:
                nursery.start_soon(creative.cancel_adapter, started)

        def stream() -> _JobBody:
            return _JobBody(self._adapter_body(creative, started), abort)

        return HTTPResponse(200, content_type="application/json", stream=stream)

    async def _adapter_body(
        self, creative: CreativeTools, started: StartedAdapter
    ) -> AsyncGenerator[bytes]:
        """The answer of an admitted adapter call: a space (JSON whitespace) every
        ``HEARTBEAT`` seconds while the renders run, so a client that went away is noticed
        (its project is then cancelled), then ``{status: "success", data: {toolCallId, tool,
        result, message}}``. ``result`` is ``{success: true, urls, media_type, model, prompt,
        projectId}``, or ``{success: false, error, code, projectId}`` for a project that failed
        after it was admitted (the status line was already sent)."""
        try:
            while not started.project.done.is_set():
                with trio.move_on_after(HEARTBEAT):
                    await started.project.done.wait()
                if not started.project.done.is_set():
                    yield b" "
            outcome = creative.adapter_outcome(started)
            count = len(outcome.result_urls)
            message = (
                f"{started.name} made {count} {started.kind}(s)"
                if outcome.success
                else f"{started.name} failed: {outcome.error}"
            )
            yield msgspec.json.encode(
                {
                    "status": "success",
                    "data": {
                        "toolCallId": started.call_id,
                        "tool": started.name,
                        "result": outcome.content,
                        "message": message,
                    },
                }
            )
        finally:
            if not started.project.done.is_set():
                await creative.cancel_adapter(started)
