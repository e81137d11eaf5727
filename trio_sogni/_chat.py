"""``sogni.chat``: completions over the socket, job routing, events, models.

`ChatAPI` is the transport's `FrameSink`: every received frame is decoded and routed here,
synchronously, in O(1) per frame (a dict lookup by job id). Nothing here awaits a consumer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, Unpack, overload

import msgspec
import trio
from typing_extensions import override

from ._eip712 import EIP712Helper
from ._errors import (
    ChatJobError,
    ClientClosedError,
    ConnectionLost,
    InvalidRequestError,
    ProtocolError,
    ToolLoopError,
)
from ._events import (
    Callback,
    CompletedEvent,
    ErrorEvent,
    EventHub,
    EventKind,
    EventSubscription,
    JobStateEvent,
    ModelsUpdatedEvent,
    TokenEvent,
)
from ._hosted import (
    ChatHosted,
    LLMCostEstimate,
    estimate_input_tokens,
    request_estimate,
    resolve_max_output_tokens,
)
from ._request import CompletionParams, MessageInput, build_llm_request, validate_messages
from ._runs import ChatRuns
from ._stream import ChatCompletionResult, ChatStream, _JobSlot  # pyright: ignore[reportPrivateUsage]
from ._tools import ChatTools, OnToolCall, ToolRound
from ._transport import RestClient, SocketTransport
from .protocol import (
    MAX_JSON_DEPTH,
    AbortJob,
    Authenticated,
    BalanceUpdate,
    ChatCompletionChunk,
    ChatMessage,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    LLMModelInfo,
    SwarmLLMModels,
    ToolChoiceFunction,
    UnknownMessage,
    check_json_depth,
    decode_envelope,
    decode_server_payload,
    encode_client_message,
)

__all__ = ["ChatAPI", "ChatCompletions", "ChatStatistics"]

logger = logging.getLogger("trio_sogni.chat")

MAX_PENDING_ABORTS: Final = 10_000
_SHALLOW: Final = 2 * MAX_JSON_DEPTH
"""Frames no longer than this cannot nest deeply enough to matter: no depth check for them."""


class _JobRef(msgspec.Struct):
    jobID: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    type: str
    data: bytes


_job_ref_decoder: Final = msgspec.json.Decoder(_JobRef)
# The hot path: ``jobTokens`` frames are decoded here directly (envelope, then the chunk struct),
# skipping the generic dispatch of `decode_server_message`.
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_chunk_decoder: Final = msgspec.json.Decoder(ChatCompletionChunk)


class ChatStatistics(msgspec.Struct, kw_only=True, frozen=True):
    """Counters of the chat frame router (see ``sogni.chat.statistics()``)."""

    live_jobs: int
    frames: int
    malformed_frames: int
    unknown_frames: int
    late_frames: int
    pending_aborts: int
    aborts_sent: int


def _job_error(message: LLMJobError) -> ChatJobError:
    error_type = str(message.error)
    text = message.error_message or error_type
    return ChatJobError(
        text,
        code=None if message.error_code is None else str(message.error_code),
        error_type=error_type,
        job_id=message.job_id,
        payload=message,
        worker_name=message.worker_name,
        subscription_limit=message.subscription_limit,
        required_plans=message.required_plans,
        feature=message.feature,
        limitation=message.limitation,
    )


class ChatAPI:
    """``sogni.chat``: the Chat API of the official SDKs, Trio-style.

    Attributes:
        completions: `ChatCompletions` (``create`` and the ``stream`` context manager).
        tools: `ChatTools` (client-side tool execution).
    """

    def __init__(
        self,
        *,
        max_buffered_chunks: int,
        abort_grace: float,
        app_source: str | None,
    ) -> None:
        self._transport: SocketTransport | Any = None
        self._jobs: dict[str, _JobSlot] = {}
        self._max_buffer = max_buffered_chunks
        self._abort_grace = abort_grace
        self._app_source = app_source
        self._hub = EventHub()
        self._models: dict[str, LLMModelInfo] = {}
        self._models_event = trio.Event()
        self._aborts: deque[str] = deque(maxlen=MAX_PENDING_ABORTS)
        self._aborts_lot = trio.lowlevel.ParkingLot()
        self._abandoned: set[str] = set()
        self._closed: BaseException | None = None
        self.balance: BalanceUpdate | None = None
        self.eip712: EIP712Helper | None = None
        """The client's `EIP712Helper` (set by `open_sogni_client`)."""
        self.authenticated: Authenticated | None = None
        self._frames = 0
        self._malformed = 0
        self._unknown = 0
        self._late = 0
        self._aborts_sent = 0
        self.completions = ChatCompletions(self)
        self.tools = ChatTools()
        self._rest: RestClient | None = None
        self._hosted: ChatHosted | None = None
        self._runs: ChatRuns | None = None
        self._handlers: dict[type, Any] = {
            JobState: self._on_job_state,
            LLMJobResult: self._on_result,
            LLMJobError: self._on_error,
            SwarmLLMModels: self._on_models,
            BalanceUpdate: self._on_balance,
            Authenticated: self._on_authenticated,
            UnknownMessage: self._on_unknown,
        }

    @override
    def __repr__(self) -> str:
        return f"<ChatAPI live_jobs={len(self._jobs)} models={len(self._models)}>"

    def bind_rest(self, rest: RestClient) -> None:
        """Attach the REST client (done once by the client): enables `hosted`, `runs` and
        `estimate_cost`."""
        self._rest = rest
        self._hosted = ChatHosted(rest, app_source=self._app_source)
        self._runs = ChatRuns(rest, app_source=self._app_source)

    @property
    def hosted(self) -> ChatHosted:
        """``sogni.chat.hosted``: OpenAI-style completions and synchronous tools over REST."""
        if self._hosted is None:
            raise ClientClosedError("this ChatAPI has no REST client")
        return self._hosted

    @property
    def runs(self) -> ChatRuns:
        """``sogni.chat.runs``: durable runs that survive disconnects and restarts."""
        if self._runs is None:
            raise ClientClosedError("this ChatAPI has no REST client")
        return self._runs

    async def estimate_cost(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        max_tokens: int | None = None,
        token_type: Literal["sogni", "spark"] = "sogni",
        think: bool | None = None,
        task_profile: Literal["general", "coding", "reasoning"] | None = None,
    ) -> LLMCostEstimate:
        """Quote a job before running it (``GET {socket host}/api/v1/job-llm/estimate/...``).

        Input tokens are counted as the official SDKs count them (`estimate_input_tokens`); the
        output budget is ``max_tokens``, else the model's default from `models` (its thinking
        default for ``think=True`` with a coding or reasoning profile), else 4096.

        Raises:
            InvalidRequestError: bad arguments (nothing was sent).
            ChatJobError, APIStatusError: the server could not quote (unknown model, ...).
        """
        if not isinstance(model, str) or not model.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("model must be a non-empty string")
        if token_type not in ("sogni", "spark"):
            raise InvalidRequestError("token_type must be 'sogni' or 'spark'")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise InvalidRequestError("max_tokens must be a positive integer")
        validate_messages(messages)
        input_tokens = estimate_input_tokens(messages)
        output_tokens = resolve_max_output_tokens(
            self._models.get(model), max_tokens=max_tokens, think=think, task_profile=task_profile
        )
        if self._rest is None:
            raise ClientClosedError("this ChatAPI has no REST client")
        return await request_estimate(
            self._rest,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=output_tokens,
            token_type=token_type,
        )

    def bind(self, transport: SocketTransport) -> None:
        """Attach the transport this router sends through (done once by the client)."""
        self._transport = transport

    # --- FrameSink ------------------------------------------------------------------------------

    def feed(self, frame: bytes | str) -> None:
        self.feed_batch((frame,))

    def feed_batch(self, frames: Sequence[bytes | str]) -> None:
        """Route every frame of one socket read, in order. Never raises.

        ``jobTokens`` take a fast path (two decodes, one dict lookup, one push); everything else
        is decoded tolerantly and dispatched by type. A frame that does not decode fails the job
        it names (if any) and is skipped; a bug in a handler is logged and the frame skipped.
        """
        self._frames += len(frames)
        jobs = self._jobs
        listening = self._hub.listening
        decode_envelope_ = _envelope_decoder.decode
        decode_chunk = _chunk_decoder.decode
        for frame in frames:
            try:
                long = len(frame) > _SHALLOW  # a short frame's payload is shorter still
                if long:
                    check_json_depth(frame)
                envelope = decode_envelope_(frame)
                if envelope.type == "jobTokens":
                    data = envelope.data
                    if long:
                        check_json_depth(data)
                    chunk = decode_chunk(data)
                    slot = jobs.get(chunk.job_id)
                    if slot is None:
                        slot = self._slot(chunk.job_id)
                        if slot is None:
                            continue
                    slot.push(chunk)
                    if "token" in listening:
                        self._hub.emit(TokenEvent(chunk))
                    continue
                message = decode_server_payload(envelope.type, envelope.data)
                handler = self._handlers.get(type(message))
                if handler is not None:
                    handler(message)
            except (msgspec.MsgspecError, RecursionError) as exc:
                self._on_malformed(frame, exc)
            except Exception:
                logger.exception("error while handling a server frame; frame skipped")

    def connected(self, authenticated: Authenticated) -> None:
        self.authenticated = authenticated
        # Jobs we gave up on when the last connection died but the server kept alive: abort them.
        for job_id in authenticated.active_llm_job_ids:
            key = job_id.upper()
            if key in self._abandoned and key not in self._jobs:
                self._queue_abort(job_id)
        self._abandoned.clear()

    def connection_lost(self, error: ConnectionLost) -> None:
        jobs = list(self._jobs.values())
        self._jobs.clear()
        for slot in jobs:
            job_error = ChatJobError(
                f"the connection was lost while the job was running ({error})",
                error_type="transport_lost",
                job_id=slot.job_id,
                payload=None,
            )
            job_error.__cause__ = error
            slot.fail(job_error)
            if slot.sent:
                self._abandoned.add(slot.job_id)
        if len(self._abandoned) > MAX_PENDING_ABORTS:
            self._abandoned.clear()

    # --- frame handlers -------------------------------------------------------------------------

    def _slot(self, job_id: str) -> _JobSlot | None:
        slot = self._jobs.get(job_id)
        if slot is None:
            slot = self._jobs.get(job_id.upper())
            if slot is None:
                self._late += 1
        return slot

    def _on_job_state(self, state: JobState) -> None:
        slot = self._slot(state.job_id)
        if slot is not None:
            slot.set_worker(state.worker_name)
            if "jobState" in self._hub.listening:
                self._hub.emit(JobStateEvent(state))

    def _on_result(self, result: LLMJobResult) -> None:
        slot = self._slot(result.job_id)
        if slot is None:
            return
        del self._jobs[slot.job_id]
        time_taken = None if result.time_taken is None else float(result.time_taken)
        slot.complete(result.usage, time_taken, result.cost, result.worker_name)
        if "completed" in self._hub.listening:
            self._hub.emit(CompletedEvent(slot.result()))

    def _on_error(self, message: LLMJobError) -> None:
        slot = self._slot(message.job_id)
        if slot is None:
            return
        del self._jobs[slot.job_id]
        slot.set_worker(message.worker_name)
        slot.fail(_job_error(message))
        if "error" in self._hub.listening:
            self._hub.emit(
                ErrorEvent(
                    job_id=slot.job_id,
                    error=str(message.error),
                    error_code=None if message.error_code is None else str(message.error_code),
                    message=message.error_message or str(message.error),
                    worker_name=message.worker_name,
                )
            )

    def _on_models(self, message: SwarmLLMModels) -> None:
        self._models = message.models
        if message.models:
            self._models_event.set()
            self._models_event = trio.Event()
        if "modelsUpdated" in self._hub.listening:
            self._hub.emit(ModelsUpdatedEvent(dict(message.models)))

    def _on_balance(self, message: BalanceUpdate) -> None:
        self.balance = message

    def _on_authenticated(self, message: Authenticated) -> None:
        self.authenticated = message

    def _on_unknown(self, message: UnknownMessage) -> None:
        self._unknown += 1
        logger.debug("ignored a %r frame (unknown type)", message.type)

    def _on_malformed(self, frame: bytes | str, exc: Exception) -> None:
        self._malformed += 1
        raw = frame.encode() if isinstance(frame, str) else frame
        logger.warning("malformed server frame skipped: %s (frame starts %r)", exc, raw[:80])
        try:
            _, payload = decode_envelope(frame)
            job_id = _job_ref_decoder.decode(payload).jobID
        except msgspec.MsgspecError:
            return
        if job_id is None:
            return
        slot = self._slot(job_id)
        if slot is not None:
            # Never lose data silently: the job this frame belonged to fails loudly.
            del self._jobs[slot.job_id]
            error = ProtocolError(f"undecodable frame for job {slot.job_id}: {exc}", frame=raw)
            error.__cause__ = exc
            slot.fail(error)
            self._queue_abort(slot.job_id)

    # --- job lifecycle (used by ChatStream) -----------------------------------------------------

    async def release(self, slot: _JobSlot) -> None:
        """Deregister a closed stream's job; abort it on the server if it is still running."""
        self._jobs.pop(slot.job_id, None)
        if slot.done or not slot.sent:
            await trio.lowlevel.checkpoint()
            return
        slot.fail(ClientClosedError("the stream was closed before the job finished"))
        frame = encode_client_message(AbortJob(job_id=slot.job_id))
        with trio.move_on_after(self._abort_grace, shield=True):
            if await self._transport.send_if_connected(frame):
                self._aborts_sent += 1
                return
        self._abandoned.add(slot.job_id)

    def orphaned(self, slot: _JobSlot) -> None:
        """A stream was dropped unclosed: deregister now and let the abort task send the abort."""
        if self._jobs.pop(slot.job_id, None) is not None and slot.sent:
            self._queue_abort(slot.job_id)

    def _queue_abort(self, job_id: str) -> None:
        self._aborts.append(job_id)
        self._aborts_lot.unpark_all()

    async def abort_sender(self) -> None:
        """Sends aborts queued from synchronous code (dropped streams, rebound jobs). Runs in the
        client's nursery until cancelled."""
        while True:
            if not self._aborts:
                await self._aborts_lot.park()
                continue
            job_id = self._aborts.popleft()
            frame = encode_client_message(AbortJob(job_id=job_id))
            with trio.move_on_after(self._abort_grace):
                if await self._transport.send_if_connected(frame):
                    self._aborts_sent += 1

    async def start_job(self, request: LLMJobRequest) -> ChatStream:
        """Register a job, send its request, and return its stream.

        The job is registered before the frame is sent, so no reply can race it. If sending fails
        or is cancelled, the job is deregistered and the error propagates.
        """
        if self._closed is not None:
            raise ClientClosedError("the client is closed")
        job_id = request.job_id
        if job_id in self._jobs:
            raise InvalidRequestError(f"job id {job_id!r} is already in use")
        slot = _JobSlot(job_id, request.model, self._max_buffer)
        self._jobs[job_id] = slot
        stream = ChatStream(slot, self)
        frame = encode_client_message(request)
        try:
            await self._transport.send(frame)
        except BaseException:
            self._jobs.pop(job_id, None)
            slot.closed = True
            raise
        slot.sent = True
        return stream

    def close(self, error: BaseException) -> list[_JobSlot]:
        """Fail every live job with ``error`` and end event subscriptions. Returns the live jobs."""
        self._closed = error
        jobs = list(self._jobs.values())
        self._jobs.clear()
        for slot in jobs:
            slot.fail(error)
        self._hub.close()
        return jobs

    # --- public surface -------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, LLMModelInfo]:
        """The latest LLM model map (a copy). Not cleared on disconnect, as in the official SDK."""
        return dict(self._models)

    async def wait_for_models(self) -> dict[str, LLMModelInfo]:
        """Return the model map once it is non-empty, waiting for a ``swarmLLMModels`` if needed.

        Cancellable; bound it with ``trio.fail_after`` (the official SDK's default is 10 s).
        """
        while not self._models:
            await self._models_event.wait()
        await trio.lowlevel.checkpoint()
        return dict(self._models)

    @asynccontextmanager
    async def subscribe(
        self, *kinds: EventKind, max_buffer: int = 1024
    ) -> AsyncGenerator[EventSubscription]:
        """Subscribe to job events (all kinds if none are named) for the duration of the block.

        The subscription buffers at most ``max_buffer`` events and drops the oldest when full
        (counted in ``.dropped``); it never slows the receive loop.
        """
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        subscription = self._hub.subscribe(self._hub.check_kinds(kinds), max_buffer)
        try:
            yield subscription
        finally:
            self._hub.unsubscribe(subscription)

    def on(self, kind: EventKind, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously from the receive loop for every ``kind`` event.

        Returns a function that removes the callback. Exceptions are logged and ignored. Prefer
        `subscribe`: a callback runs inside the receive loop and must be quick.
        """
        return self._hub.on(kind, callback)

    def off(self, kind: EventKind, callback: Callback) -> None:
        """Remove a callback added with `on`."""
        self._hub.off(kind, callback)

    def statistics(self) -> ChatStatistics:
        """Router counters: malformed / unknown / late frames are counted, never silently lost."""
        return ChatStatistics(
            live_jobs=len(self._jobs),
            frames=self._frames,
            malformed_frames=self._malformed,
            unknown_frames=self._unknown,
            late_frames=self._late,
            pending_aborts=len(self._aborts),
            aborts_sent=self._aborts_sent,
        )


class StreamScope:
    """What `ChatCompletions.stream` returns: an async context manager that sends the job on
    entry and closes its `ChatStream` on exit (aborting the job if it is still running)."""

    __slots__ = ("_chat", "_request", "_stream")

    def __init__(self, chat: ChatAPI, request: LLMJobRequest) -> None:
        self._chat = chat
        self._request = request
        self._stream: ChatStream | None = None

    async def __aenter__(self) -> ChatStream:
        if self._stream is not None:
            raise RuntimeError("this stream scope was already entered")
        self._stream = await self._chat.start_job(self._request)
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._stream is not None
        await self._stream.aclose()


class ChatCompletions:
    """``sogni.chat.completions``."""

    def __init__(self, chat: ChatAPI) -> None:
        self._chat = chat

    def _build(
        self,
        model: str,
        messages: Sequence[MessageInput],
        stream: bool,
        params: Mapping[str, Any],
    ) -> LLMJobRequest:
        return build_llm_request(
            model=model,
            messages=messages,
            stream=stream,
            params=params,
            default_app_source=self._chat._app_source,  # pyright: ignore[reportPrivateUsage]
        )

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        stream: Literal[True],
        **params: Unpack[CompletionParams],
    ) -> ChatStream: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        stream: Literal[False] = False,
        auto_execute_tools: bool = False,
        on_tool_call: OnToolCall | None = None,
        max_tool_rounds: int = 5,
        **params: Unpack[CompletionParams],
    ) -> ChatCompletionResult: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        stream: bool = False,
        auto_execute_tools: bool = False,
        on_tool_call: OnToolCall | None = None,
        max_tool_rounds: int = 5,
        **params: Unpack[CompletionParams],
    ) -> ChatStream | ChatCompletionResult:
        """Run a chat completion on the Supernet.

        With ``stream=True`` the job is sent and a `ChatStream` is returned at once; use it with
        ``async with`` so leaving early aborts the job. With ``stream=False`` (the default) this
        waits for the job's ``llmJobResult`` and returns a `ChatCompletionResult`; cancelling it
        aborts the job on the server. ``auto_execute_tools=True`` runs the tool loop: tool calls
        are executed (client-side ones by ``on_tool_call``) and fed back for up to
        ``max_tool_rounds`` rounds.

        All parameters are checked before anything is sent.

        Raises:
            InvalidRequestError: invalid arguments (nothing was sent).
            ChatJobError: the job failed (``error_type`` says why; ``retryable`` says if resending
                is safe, e.g. after a lost connection).
            ToolLoopError: the tool loop ran out of rounds.
            ClientClosedError, ConnectionLost: the client is closed / the socket closed for good.
        """
        if auto_execute_tools:
            if stream:
                raise InvalidRequestError("auto_execute_tools cannot be combined with stream=True")
            return await self._run_tool_loop(model, messages, params, on_tool_call, max_tool_rounds)
        request = self._build(model, messages, stream, params)
        job = await self._chat.start_job(request)
        if stream:
            return job
        async with job:
            return await job.wait()

    def stream(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        **params: Unpack[CompletionParams],
    ) -> StreamScope:
        """``async with sogni.chat.completions.stream(...) as s:`` — a streaming job whose scope is
        the block: leaving it for any reason aborts the job if it is still running.

        The arguments are checked here, before the ``async with`` starts (`InvalidRequestError`);
        entering the block sends the job.
        """
        return StreamScope(self._chat, self._build(model, messages, True, params))

    async def _run_tool_loop(
        self,
        model: str,
        messages: Sequence[MessageInput],
        params: Mapping[str, Any],
        on_tool_call: OnToolCall | None,
        max_rounds: object,
    ) -> ChatCompletionResult:
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise InvalidRequestError("max_tool_rounds must be a positive integer")
        history: list[ChatMessage] = validate_messages(messages)
        rounds: list[ToolRound] = []
        # A forced call ("required" or a named function) applies to the first round only: forcing
        # every round would make the model call tools forever and never answer.
        forced = params.get("tool_choice") == "required" or isinstance(
            params.get("tool_choice"), Mapping | ToolChoiceFunction
        )
        later = {**params, "tool_choice": "auto"} if forced else params
        for round_number in range(max_rounds):
            request = self._build(model, history, False, params if round_number == 0 else later)
            job = await self._chat.start_job(request)
            async with job:
                result = await job.wait()
            if result.finish_reason != "tool_calls" or not result.tool_calls:
                if rounds:
                    return msgspec.structs.replace(result, tool_history=rounds)
                return result
            tool_results = await self._chat.tools.execute_all(
                result.tool_calls, on_tool_call=on_tool_call
            )
            rounds.append(
                ToolRound(
                    round=round_number, tool_calls=result.tool_calls, tool_results=tool_results
                )
            )
            history.append(
                ChatMessage(
                    role="assistant", content=result.content or None, tool_calls=result.tool_calls
                )
            )
            history.extend(
                ChatMessage(
                    role="tool", content=r.content, tool_call_id=r.tool_call_id, name=r.tool_name
                )
                for r in tool_results
            )
        raise ToolLoopError(f"Max tool calling rounds ({max_rounds}) exceeded")
