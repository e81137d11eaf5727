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
from typing import Any, TypeAlias

import msgspec
import trio

from ._errors import InvalidRequestError
from ._groups import unwrap_group
from ._jobstate import ToolResult, ToolRound
from .protocol import ToolCall, decode_json

__all__ = [
    "OnToolCall",
    "ToolResult",
    "ToolRound",
    "hosted_tool_names",
    "is_sogni_tool_call",
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


def _error_result(tool_call: ToolCall, message: str) -> ToolResult:
    return ToolResult(
        tool_call_id=tool_call.id,
        tool_name=tool_call.function.name,
        success=False,
        content=json.dumps({"success": False, "error": message}),
        error=message,
    )


class ChatTools:
    """``sogni.chat.tools``: run the tool calls a model made.

    Client-side tools are run by your ``on_tool_call`` handler. Sogni's hosted media tools are not
    executed locally by this version: such a call yields an error result telling the model (and
    you) to use ``chat.hosted.create()`` or ``chat.runs.create()``, as the official SDK does for the
    tools it cannot dispatch directly.
    """

    async def execute(
        self, tool_call: ToolCall, *, on_tool_call: OnToolCall | None = None
    ) -> ToolResult:
        """Run one tool call and return its result.

        A checkpoint. Exceptions raised by ``on_tool_call`` propagate unchanged (they are your
        code's errors, not the model's); to feed an error back to the model, return it as text.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        name = tool_call.function.name
        if is_sogni_tool_call(tool_call):
            return _error_result(
                tool_call,
                f"Sogni tool {name!r} cannot be executed by this client; it must be executed via "
                "chat.hosted.create() or chat.runs.create()",
            )
        if on_tool_call is None:
            return _error_result(tool_call, f"No handler for non-Sogni tool call {name!r}")
        value = await on_tool_call(tool_call)
        content = value if isinstance(value, str) else json.dumps(value)
        return ToolResult(tool_call_id=tool_call.id, tool_name=name, success=True, content=content)

    async def execute_all(
        self, tool_calls: Sequence[ToolCall], *, on_tool_call: OnToolCall | None = None
    ) -> list[ToolResult]:
        """Run several tool calls concurrently; results come back in the order of the calls.

        If any handler raises, the others are cancelled and the exception propagates (a single
        exception is unwrapped from the nursery's group).
        """
        results: list[ToolResult | None] = [None] * len(tool_calls)

        async def run_one(i: int, call: ToolCall) -> None:
            results[i] = await self.execute(call, on_tool_call=on_tool_call)

        with unwrap_group():
            async with trio.open_nursery() as nursery:
                for i, call in enumerate(tool_calls):
                    nursery.start_soon(run_one, i, call)
        return [r for r in results if r is not None]
