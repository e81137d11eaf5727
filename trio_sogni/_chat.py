"""``sogni.chat``: the public Chat API facade.

`ChatAPI` holds no job state of its own: frames are routed by the sans-IO `JobRouter`
(`trio_sogni._router`), jobs are sent and aborted by the Trio `JobDriver` (`trio_sogni._driver`),
and the REST half lives in `ChatHosted` / `ChatRuns`. Every part is built up front by
`open_sogni_client` and handed in here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

import msgspec
import trio
from typing_extensions import override

from ._driver import JobDriver
from ._eip712 import EIP712Helper
from ._errors import InvalidRequestError, ToolLoopError
from ._events import Callback, EventHub, EventKind, EventSubscription
from ._hosted import (
    ChatHosted,
    LLMCostEstimate,
    estimate_input_tokens,
    request_estimate,
    resolve_max_output_tokens,
)
from ._request import (
    CompletionParams,
    MessageInput,
    build_llm_request,
    resize_allowed,
    validate_messages,
)
from ._router import ChatStatistics, JobRouter
from ._runs import ChatRuns
from ._stream import ChatCompletionResult, ChatStream
from ._tools import ChatTools, MediaContext, OnToolCall, OnToolProgress, ToolRound
from ._transport import RestClient
from ._vision import ImageFetcher, inline_images, needs_inlining

if TYPE_CHECKING:
    from ._projects import ProjectsAPI
from .protocol import (
    Authenticated,
    BalanceUpdate,
    ChatMessage,
    LLMJobRequest,
    LLMModelInfo,
    ToolChoiceFunction,
)

__all__ = ["ChatAPI", "ChatCompletions", "ChatStatistics", "StreamScope"]

logger = logging.getLogger("trio_sogni.chat")


class ChatAPI:
    """``sogni.chat``: the Chat API of the official SDKs, Trio-style.

    Attributes:
        completions: `ChatCompletions` (``create`` and the ``stream`` context manager).
        tools: `ChatTools` (client-side tool execution).
        hosted: `ChatHosted` (OpenAI-style completions and synchronous tools over REST).
        runs: `ChatRuns` (durable runs that survive disconnects and restarts).
        eip712: the client's `EIP712Helper`.
    """

    def __init__(
        self,
        *,
        router: JobRouter,
        driver: JobDriver,
        events: EventHub,
        models_lot: trio.lowlevel.ParkingLot,
        rest: RestClient,
        eip712: EIP712Helper,
        app_source: str | None,
        projects: ProjectsAPI | None = None,
        images: ImageFetcher | None = None,
        resize_images: bool = False,
    ) -> None:
        self._router = router
        self._events = events
        self._models_lot = models_lot
        self._rest = rest
        self._images = images
        self.eip712 = eip712
        self.hosted = ChatHosted(
            rest, app_source=app_source, images=images, resize_images=resize_images
        )
        self.tools = ChatTools(projects, self.hosted)
        self.completions = ChatCompletions(
            driver, self.tools, app_source, images=images, resize_images=resize_images
        )
        self.runs = ChatRuns(rest, app_source=app_source)

    @override
    def __repr__(self) -> str:
        return f"<ChatAPI live_jobs={self._router.statistics().live_jobs} models={len(self._router.models)}>"

    @property
    def balance(self) -> BalanceUpdate | None:
        """The latest ``balanceUpdate`` the server pushed, if any."""
        return self._router.balance

    @property
    def authenticated(self) -> Authenticated | None:
        """The latest ``authenticated`` frame, if any."""
        return self._router.authenticated

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

        Input tokens are counted as the official SDKs count them (`estimate_input_tokens`), with
        every image counted as the text ``"[image]"``: images are checked as
        `validate_messages` checks them (an untrusted URL is refused) but never fetched or
        resized, since neither would change the count. The output budget is ``max_tokens``, else the model's default from `models` (its thinking
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
        # The count never depends on an image's bytes or size: check, never fetch or resize.
        validate_messages(messages, resize_images=True)
        input_tokens = estimate_input_tokens(messages)
        output_tokens = resolve_max_output_tokens(
            self._router.models.get(model),
            max_tokens=max_tokens,
            think=think,
            task_profile=task_profile,
        )
        return await request_estimate(
            self._rest,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=output_tokens,
            token_type=token_type,
        )

    @property
    def models(self) -> dict[str, LLMModelInfo]:
        """The latest LLM model map (a copy). Not cleared on disconnect, as in the official SDK."""
        return dict(self._router.models)

    def media_context(self, messages: Sequence[MessageInput] = ()) -> MediaContext:
        """A `MediaContext` for ``chat.tools`` whose image uploads are the ``image_url`` parts of
        ``messages``; trusted https images among them are fetched with this client (see
        `ChatCompletions.create`) only when a media tool uses one. A context made with
        ``MediaContext()`` cannot fetch URLs: a tool call using such an image gets an error
        result.

        Raises:
            InvalidRequestError: the messages are not valid (see `validate_messages`; the
                pixel-size limit does not apply, media tools take larger images).
        """
        context = MediaContext(
            fetch_image=self._fetch_for_tools if self._images is not None else None
        )
        if messages:
            context.add_messages(messages)
        return context

    async def _fetch_for_tools(self, url: str) -> bytes:
        assert self._images is not None
        image = await self._images.fetch(url, "media context image")
        return image.data

    async def wait_for_models(self) -> dict[str, LLMModelInfo]:
        """Return the model map once it is non-empty, waiting for a ``swarmLLMModels`` if needed.

        Always a checkpoint. Cancellable; bound it with ``trio.fail_after`` (the official SDK's
        default is 10 s).
        """
        while not self._router.models:
            await self._models_lot.park()
        await trio.lowlevel.checkpoint()
        return dict(self._router.models)

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
        subscription = self._events.subscribe(self._events.check_kinds(kinds), max_buffer)
        try:
            yield subscription
        finally:
            self._events.unsubscribe(subscription)

    def on(self, kind: EventKind, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously from the receive loop for every ``kind`` event.

        Returns a function that removes the callback. Exceptions are logged and ignored. Prefer
        `subscribe`: a callback runs inside the receive loop and must be quick.
        """
        return self._events.on(kind, callback)

    def off(self, kind: EventKind, callback: Callback) -> None:
        """Remove a callback added with `on`."""
        self._events.off(kind, callback)

    def statistics(self) -> ChatStatistics:
        """Router counters: malformed / unknown / late frames are counted, never silently lost."""
        return self._router.statistics()


class StreamScope:
    """What `ChatCompletions.stream` returns: an async context manager that fetches the request's
    remote images (and resizes, if allowed) and sends the job on entry, and closes its
    `ChatStream` on exit (aborting the job if it is still running)."""

    __slots__ = ("_completions", "_request", "_resize", "_stream")

    def __init__(self, completions: ChatCompletions, request: LLMJobRequest, resize: bool) -> None:
        self._completions = completions
        self._request = request
        self._resize = resize
        self._stream: ChatStream | None = None

    async def __aenter__(self) -> ChatStream:
        if self._stream is not None:
            raise RuntimeError("this stream scope was already entered")
        request = self._request
        if needs_inlining(request.messages, resize=self._resize):
            request, _ = await self._completions._inline(request, self._resize)  # pyright: ignore[reportPrivateUsage]
        # Nothing to inline: sending the job is the checkpoint (a cancel point before anything
        # is sent, then a schedule point).
        self._stream = await self._completions._driver.start_job(request)  # pyright: ignore[reportPrivateUsage]
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        stream = self._stream
        assert stream is not None
        if stream._close_finished():  # pyright: ignore[reportPrivateUsage]
            # The job has ended: nothing to abort, so leaving is only a cancel point.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await stream.aclose()


class ChatCompletions:
    """``sogni.chat.completions``."""

    def __init__(
        self,
        driver: JobDriver,
        tools: ChatTools,
        app_source: str | None,
        *,
        images: ImageFetcher | None = None,
        resize_images: bool = False,
    ) -> None:
        self._driver = driver
        self._tools = tools
        self._app_source = app_source
        self._images = images
        self._resize_images = resize_images

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
            default_app_source=self._app_source,
            default_resize_images=self._resize_images,
        )

    async def _inline(
        self, request: LLMJobRequest, resize: bool
    ) -> tuple[LLMJobRequest, dict[str, str]]:
        """``request`` with its remote images fetched and its oversized ones resized (if
        allowed), and the fetched images (see `inline_images`)."""
        messages, fetched = await inline_images(request.messages, self._images, resize=resize)
        if messages is not request.messages:
            request = msgspec.structs.replace(request, messages=messages)
        return request, fetched

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
        media_context: MediaContext | None = None,
        on_tool_progress: OnToolProgress | None = None,
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
        media_context: MediaContext | None = None,
        on_tool_progress: OnToolProgress | None = None,
        **params: Unpack[CompletionParams],
    ) -> ChatStream | ChatCompletionResult:
        """Run a chat completion on the Supernet.

        With ``stream=True`` the job is sent and a `ChatStream` is returned at once; use it with
        ``async with`` so leaving early aborts the job. With ``stream=False`` (the default) this
        waits for the job's ``llmJobResult`` and returns a `ChatCompletionResult`; cancelling it
        aborts the job on the server. ``auto_execute_tools=True`` runs the tool loop: tool calls
        are executed (client-side ones by ``on_tool_call``, Sogni's direct media tools as media
        projects, see `ChatTools`) and fed back for up to ``max_tool_rounds`` rounds, each round
        recorded in the result's ``tool_history``. Media tools resolve their index arguments
        against ``media_context`` (a fresh `MediaContext` if not given): the conversation's
        images, then every media made by earlier rounds, so "now make a video of that image"
        uses the image. ``on_tool_progress`` gets every media call's `ToolProgress`.

        Images (``image_url`` parts): inline PNG or JPEG data URIs, or https URLs on trusted
        hosts (``*.sogni.ai``, ``*.cloudfront.net``, Amazon S3), which are fetched here, before
        the job is sent (at most 4 at a time, each bounded by the client's
        ``image_fetch_timeout``, no redirects, at most 10 MiB) and sent inline. An image whose
        longest side is over 1024 px is refused unless ``resize_images=True`` (per call, or the
        client's default): it is then resized to 1024 px (aspect ratio kept; needs Pillow, the
        ``media`` extra). If any image fails, nothing is sent.

        All parameters are checked before anything is fetched or sent.

        Raises:
            InvalidRequestError: invalid arguments, or an image that cannot be used (an
                untrusted URL, a redirect or error status, over 10 MiB, not PNG/JPEG, oversized);
                nothing was sent.
            ConnectError, TransportError: an image URL could not be fetched (nothing was sent).
            ChatJobError: the job failed (``error_type`` says why; ``retryable`` says if resending
                is safe, e.g. after a lost connection).
            ToolLoopError: the tool loop ran out of rounds.
            ClientClosedError, ConnectionLost: the client is closed / the socket closed for good.
        """
        if auto_execute_tools:
            if stream:
                raise InvalidRequestError("auto_execute_tools cannot be combined with stream=True")
            return await self._run_tool_loop(
                model,
                messages,
                params,
                on_tool_call,
                max_tool_rounds,
                media_context,
                on_tool_progress,
            )
        request = self._build(model, messages, stream, params)
        resize = resize_allowed(params, self._resize_images)
        if needs_inlining(request.messages, resize=resize):
            request, _ = await self._inline(request, resize)
        # Nothing to inline: sending the job is the checkpoint.
        job = await self._driver.start_job(request)
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
        entering the block fetches remote images (and resizes, if allowed; see `create`) and
        sends the job.
        """
        request = self._build(model, messages, True, params)
        return StreamScope(self, request, resize_allowed(params, self._resize_images))

    async def _run_tool_loop(
        self,
        model: str,
        messages: Sequence[MessageInput],
        params: Mapping[str, Any],
        on_tool_call: OnToolCall | None,
        max_rounds: object,
        media_context: MediaContext | None,
        on_tool_progress: OnToolProgress | None,
    ) -> ChatCompletionResult:
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise InvalidRequestError("max_tool_rounds must be a positive integer")
        resize = resize_allowed(params, self._resize_images)
        conversation = validate_messages(messages, resize_images=resize)
        first = self._build(model, conversation, False, params)
        # Remote images are fetched once, here: the history sends them inline, and the media
        # context gets the fetched bytes (before any resizing) as the conversation's uploads.
        first, fetched = await self._inline(first, resize)
        history: list[ChatMessage] = list(first.messages)
        rounds: list[ToolRound] = []
        # The media the tools can refer to: the conversation's images, then every round's media.
        context = media_context if media_context is not None else MediaContext()
        # A forced call ("required" or a named function) applies to the first round only: forcing
        # every round would make the model call tools forever and never answer.
        forced = params.get("tool_choice") == "required" or isinstance(
            params.get("tool_choice"), Mapping | ToolChoiceFunction
        )
        later = {**params, "tool_choice": "auto"} if forced else params
        for round_number in range(max_rounds):
            request = first if round_number == 0 else self._build(model, history, False, later)
            job = await self._driver.start_job(request)
            async with job:
                result = await job.wait()
            if result.finish_reason != "tool_calls" or not result.tool_calls:
                if rounds:
                    return msgspec.structs.replace(result, tool_history=rounds)
                return result
            context._add_conversation(conversation, fetched)  # pyright: ignore[reportPrivateUsage]
            tool_results = await self._tools.execute_all(
                result.tool_calls,
                on_tool_call=on_tool_call,
                media_context=context,
                on_tool_progress=on_tool_progress,
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
