"""The hosted creative tools' definitions, and their injection into a job's ``tools`` (part of
job admission: what the worker of a job sees).

The definitions are the OpenAI function definitions of ``manifests/openai-tools.json`` of the
npm package ``@sogni-ai/sogni-protocol`` 1.0.0-alpha.45 (ISC licence, Copyright Sogni AI),
unchanged (descriptions included), for the tools localnet executes server-side: the six media
tools (:data:`MEDIA_TOOLS`) and ``enhance_prompt``. They ship in
``localnet/_data/sogni-protocol/manifests/creative-tools.json`` (localnet imports no client code,
so it keeps its own copy).

:func:`inject_creative_tools` is what ``sogni_tools`` does to a request (socket
``llmJobRequest``, hosted completions and durable runs alike): ``true``, ``"creative-tools"``,
``"creative-agent"`` and ``"rich"`` (case-insensitive, trimmed) append the hosted definitions to
the request's own ``tools``; **the request's own definition wins on a name clash** (the hosted
one of that name is left out, and a call to that name is the caller's tool, never executed by
localnet); ``false`` or absent changes nothing; any other value is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final, Literal, cast

import msgspec

from ...protocol import LLMJobRequest, ToolDefinition
from .._jsonschema import check_schema

__all__ = [
    "CREATIVE_TOOLS_SOURCE",
    "MEDIA_TOOLS",
    "creative_tool_definitions",
    "creative_tool_schema",
    "inject_creative_tools",
    "sogni_tools_enabled",
]

MediaKind = Literal["image", "video", "audio"]

MEDIA_TOOLS: Final[Mapping[str, MediaKind]] = {
    "generate_image": "image",
    "edit_image": "image",
    "generate_video": "video",
    "sound_to_video": "video",
    "video_to_video": "video",
    "generate_music": "audio",
}
"""The hosted tools localnet runs as media projects, and the media type each makes."""

CREATIVE_TOOLS_SOURCE: Final = "sogni-protocol/manifests/creative-tools.json"

_ENABLING: Final = frozenset({"creative-tools", "creative-agent", "rich"})


@cache
def _manifest() -> tuple[dict[str, Any], ...]:
    text = (
        resources.files("trio_sogni.localnet")
        .joinpath(f"_data/{CREATIVE_TOOLS_SOURCE}")
        .read_text("utf-8")
    )
    tools = cast("list[dict[str, Any]]", json.loads(text)["tools"])
    for tool in tools:
        check_schema(tool["function"]["parameters"])
    return tuple(tools)


def creative_tool_definitions() -> list[dict[str, Any]]:
    """The hosted creative tools' OpenAI definitions (fresh copies, manifest order)."""
    return [json.loads(json.dumps(tool)) for tool in _manifest()]


@cache
def _schemas() -> Mapping[str, Mapping[str, Any]]:
    return {tool["function"]["name"]: tool["function"]["parameters"] for tool in _manifest()}


def creative_tool_schema(name: str) -> Mapping[str, Any] | None:
    """The argument JSON Schema of the hosted tool ``name`` (``None``: not a hosted tool)."""
    return _schemas().get(name)


@cache
def _definitions() -> tuple[ToolDefinition, ...]:
    return tuple(msgspec.convert(tool, ToolDefinition) for tool in _manifest())


def sogni_tools_enabled(value: object) -> bool | str:
    """Whether a ``sogni_tools`` value asks for the hosted tools (``True``/``False``), or the
    reason it is invalid (a string)."""
    if value is None or value is msgspec.UNSET or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.strip().lower() in _ENABLING:
        return True
    return (
        "sogni_tools must be a boolean, 'creative-tools', 'creative-agent' or 'rich', "
        f"got {str(value)[:40]!r}"
    )


def inject_creative_tools(request: LLMJobRequest) -> LLMJobRequest | str:
    """``request`` with the hosted definitions appended to its ``tools`` when its
    ``sogni_tools`` asks for them (see the module docstring), or the reason its ``sogni_tools``
    is invalid. The request's own tools come first and win on a name clash."""
    enabled = sogni_tools_enabled(request.sogni_tools)
    if isinstance(enabled, str):
        return enabled
    if not enabled:
        return request
    own = list(request.tools or [])
    taken = {tool.function.name for tool in own}
    added = [tool for tool in _definitions() if tool.function.name not in taken]
    return msgspec.structs.replace(request, tools=own + added)
