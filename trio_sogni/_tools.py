"""Tool calls: Sogni hosted tool names, client-side tool execution and the tool-loop records.

The hosted tool names come from ``enums/tool-names.json`` of the npm package
``@sogni-ai/sogni-protocol`` 1.0.0-alpha.45 (ISC licence, Copyright Sogni AI), shipped as package
data in ``trio_sogni/_data/``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import msgspec
import trio

from ._errors import InvalidRequestError, SogniError
from ._groups import unwrap_group
from ._hosted import HOSTED_SYNCHRONOUS_TOOLS
from ._jobstate import ToolResult, ToolRound
from ._media._results import MediaResult
from ._mediatools import (
    DIRECT_MEDIA_TOOLS,
    MAX_MEDIA_CALLS_PER_ROUND,
    MediaContext,
    MediaItem,
    MediaRun,
    OnToolProgress,
    ProgressReporter,
    ToolProgress,
    error_result,
    media_tool_definitions,
    run_hosted_tool,
    run_media_tool,
)
from .protocol import ToolCall, decode_json

if TYPE_CHECKING:
    from ._hosted import ChatHosted
    from ._projects import ProjectsAPI

__all__ = [
    "ChatTools",
    "MediaContext",
    "MediaItem",
    "OnToolCall",
    "OnToolProgress",
    "ToolProgress",
    "ToolResult",
    "ToolRound",
    "hosted_tool_names",
    "is_sogni_tool_call",
    "media_tool_definitions",
    "parse_tool_call_arguments",
]

OnToolCall: TypeAlias = Callable[[ToolCall], Awaitable[Any]]
"""An async handler for a client-side tool call. A ``str`` result is used as the tool message
content as-is; anything else is JSON-encoded."""


@cache
def hosted_tool_names() -> frozenset[str]:
    """The names of Sogni's hosted creative tools (``generate_image``, ``enhance_prompt``, ...)."""
    text = resources.files("trio_sogni").joinpath("_data/tool-names.json").read_text("utf-8")
    data = json.loads(text)
    return frozenset(str(name) for name in data["hosted"])


def is_sogni_tool_call(tool_call: ToolCall) -> bool:
    """True when the call names one of Sogni's hosted tools (see `hosted_tool_names`)."""
    return tool_call.function.name in hosted_tool_names()


def parse_tool_call_arguments(tool_call: ToolCall) -> dict[str, Any]:
    """Decode a tool call's JSON arguments (empty text means ``{}``).

    Raises:
        InvalidRequestError: the arguments are not a JSON object.
    """
    text = tool_call.function.arguments.strip()
    if not text:
        return {}
    try:
        value = decode_json(text)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(
            f"arguments of tool call {tool_call.id!r} are not valid JSON: {exc}"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequestError(f"arguments of tool call {tool_call.id!r} are not a JSON object")
    return value  # pyright: ignore[reportUnknownVariableType]


def _add_produced(context: MediaContext, produced: Sequence[tuple[MediaResult, str]]) -> None:
    """Add a call's media to ``context`` (each under its own media type), in render order."""
    for result, url in produced:
        context.add_results(result.media_type, [(result, url)])


class ChatTools:
    """``sogni.chat.tools``: run the tool calls a model made.

    The six direct media tools (``generate_image``, ``edit_image``, ``generate_video``,
    ``sound_to_video``, ``video_to_video``, ``generate_music``) run here as media projects
    (`ProjectsAPI`): the arguments are checked against the hosted tools' JSON Schemas, media
    models are awaited, the model is chosen by the official rules, index arguments resolve
    against a `MediaContext` and are uploaded as project inputs, and the result is the official
    shape (`ToolResult`). Every other hosted tool runs through `ChatHosted.execute_tool`
    (``POST /v1/creative-agent/tools/execute``; the official SDKs refuse them client-side): the
    synchronous ones (``enhance_prompt``, ``compose_script``, ``compose_lyrics``,
    ``compose_instrumental``, ``compose_workflow``, ``compose_workflow_template``) as they are;
    the others (``apply_style``, ``restore_photo``, ``refine_result``, ``change_angle``,
    ``animate_photo``, the video tools...) after their arguments are checked against the
    manifest schema and their source image is resolved against the `MediaContext` and sent as
    ``source_image_url`` (docs/media.md); the media URLs they answer with are the
    result's ``result_urls`` and join the context, so a later round can use them. Their
    ``content`` is the JSON ``{success, tool, result}`` (plus ``media_type`` and ``urls``
    when they made media). Every error (a refusal by the server included) is a
    ``success: false`` result, never an exception. Hosted tools other than the direct media
    tools report no progress. Client-side tools are run by your ``on_tool_call`` handler.
    """

    def __init__(
        self, projects: ProjectsAPI | None = None, hosted: ChatHosted | None = None
    ) -> None:
        self._projects = projects
        self._hosted = hosted

    async def execute(
        self,
        tool_call: ToolCall,
        *,
        on_tool_call: OnToolCall | None = None,
        media_context: MediaContext | None = None,
        on_tool_progress: OnToolProgress | None = None,
        progress: trio.MemorySendChannel[ToolProgress] | None = None,
        token_type: Literal["spark", "sogni"] | None = None,
    ) -> ToolResult:
        """Run one tool call and return its result.

        A media tool call waits for its project (``media_context``: what index arguments refer
        to, and where the media it makes are added; a fresh empty context if not given). Its
        progress goes to ``on_tool_progress`` and to ``progress`` (`ToolProgress`: creating,
        queued, processing with the percent, completed with the URLs, or failed; a step report
        that does not fit the channel is dropped, the others wait for room). Cancelling this
        call cancels its project on the server (a shielded, bounded abort) before the
        cancellation propagates.

        ``token_type`` (``spark`` or ``sogni``) pays for the call's project or hosted tool.

        A checkpoint. Exceptions raised by ``on_tool_call`` or ``on_tool_progress`` propagate
        unchanged (they are your code's errors, not the model's); to feed an error back to the
        model, return it as text.
        """
        context = media_context if media_context is not None else MediaContext()
        result, produced = await self._run(
            tool_call, on_tool_call, context, on_tool_progress, progress, token_type
        )
        _add_produced(context, produced)
        return result

    async def _run(
        self,
        tool_call: ToolCall,
        on_tool_call: OnToolCall | None,
        context: MediaContext,
        on_tool_progress: OnToolProgress | None,
        progress: trio.MemorySendChannel[ToolProgress] | None,
        token_type: Literal["spark", "sogni"] | None,
    ) -> MediaRun:
        await trio.lowlevel.checkpoint_if_cancelled()
        name = tool_call.function.name
        if name in DIRECT_MEDIA_TOOLS:
            if self._projects is None:
                return error_result(tool_call, "this ChatTools has no media projects API"), []
            try:
                arguments = parse_tool_call_arguments(tool_call)
            except InvalidRequestError as exc:
                return error_result(tool_call, str(exc)), []
            reporter = ProgressReporter(tool_call, on_tool_progress, progress)
            return await run_media_tool(
                self._projects, tool_call, arguments, context, reporter, token_type=token_type
            )
        if is_sogni_tool_call(tool_call):
            if self._hosted is None:
                return error_result(tool_call, "this ChatTools has no hosted API"), []
            if name in HOSTED_SYNCHRONOUS_TOOLS:
                return await self._run_hosted(tool_call, token_type), []
            try:
                arguments = parse_tool_call_arguments(tool_call)
            except InvalidRequestError as exc:
                return error_result(tool_call, str(exc)), []
            return await run_hosted_tool(
                self._hosted, tool_call, arguments, context, token_type=token_type
            )
        if on_tool_call is None:
            return error_result(tool_call, f"No handler for non-Sogni tool call {name!r}"), []
        value = await on_tool_call(tool_call)
        content = value if isinstance(value, str) else json.dumps(value)
        return ToolResult(
            tool_call_id=tool_call.id, tool_name=name, success=True, content=content
        ), []

    async def _run_hosted(
        self, tool_call: ToolCall, token_type: Literal["spark", "sogni"] | None
    ) -> ToolResult:
        assert self._hosted is not None
        try:
            arguments = parse_tool_call_arguments(tool_call)
            answer = await self._hosted.execute_tool(
                tool_call.function.name, arguments, token_type=token_type
            )
        except SogniError as exc:
            return error_result(tool_call, str(exc))
        body: dict[str, Any] = {"success": True, "tool": answer.tool, "result": answer.result}
        if answer.message:
            body["message"] = answer.message
        return ToolResult(
            tool_call_id=tool_call.id,
            tool_name=tool_call.function.name,
            success=True,
            content=json.dumps(body),
        )

    async def execute_all(
        self,
        tool_calls: Sequence[ToolCall],
        *,
        on_tool_call: OnToolCall | None = None,
        media_context: MediaContext | None = None,
        on_tool_progress: OnToolProgress | None = None,
        progress: trio.MemorySendChannel[ToolProgress] | None = None,
        token_type: Literal["spark", "sogni"] | None = None,
    ) -> list[ToolResult]:
        """Run several tool calls concurrently; results come back in the order of the calls.

        Media tool calls run concurrently too (the official SDKs run them one after another),
        at most 8 of them (the official limit): later media calls get an error result
        without running. Every media call resolves its indices against ``media_context`` as it
        was when the round started; the media they make are added to it afterwards, in call
        order (so indices stay deterministic). Progress as for `execute`.

        If any handler raises, the others are cancelled (their projects cancelled on the
        server) and the exception propagates (a single exception is unwrapped from the
        nursery's group). Cancelling this call cancels every project it started.
        """
        context = media_context if media_context is not None else MediaContext()
        runs: list[MediaRun | None] = [None] * len(tool_calls)
        media_calls = 0

        async def run_one(i: int, call: ToolCall) -> None:
            runs[i] = await self._run(
                call, on_tool_call, context, on_tool_progress, progress, token_type
            )

        with unwrap_group():
            async with trio.open_nursery() as nursery:
                for i, call in enumerate(tool_calls):
                    if call.function.name in DIRECT_MEDIA_TOOLS:
                        media_calls += 1
                        if media_calls > MAX_MEDIA_CALLS_PER_ROUND:
                            runs[i] = (
                                error_result(
                                    call,
                                    f"too many media tool calls in one round: at most "
                                    f"{MAX_MEDIA_CALLS_PER_ROUND} run, this is call {media_calls}",
                                ),
                                [],
                            )
                            continue
                    nursery.start_soon(run_one, i, call)
        results: list[ToolResult] = []
        for run in runs:
            assert run is not None
            result, produced = run
            _add_produced(context, produced)
            results.append(result)
        return results
