"""Building and validating ``llmJobRequest`` payloads. Everything here is synchronous and pure.

Every check runs before anything is sent; a failure raises `InvalidRequestError` naming the field.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, cast

import msgspec
from msgspec import UNSET, UnsetType

from ._errors import InvalidRequestError
from ._images import (
    MAX_IMAGE_SIDE,
    MAX_IMAGES,
    check_trusted_url,
    oversized_message,
    parse_data_uri,
)
from .protocol import (
    ChatMessage,
    ImageURLPart,
    JSONObject,
    LLMJobRequest,
    ResponseFormat,
    ToolChoice,
    ToolChoiceFunction,
    ToolDefinition,
)

__all__ = [
    "CompletionParams",
    "MessageInput",
    "build_llm_request",
    "check_sendable",
    "new_job_id",
]

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

MessageInput = ChatMessage | Mapping[str, Any]
"""A message given to `create`: a `ChatMessage` or an OpenAI-style dict."""


class CompletionParams(TypedDict, total=False):
    """Optional keyword arguments of ``chat.completions.create`` that map onto ``llmJobRequest``."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repetition_penalty: float
    frequency_penalty: float
    presence_penalty: float
    stop: str | Sequence[str]
    tools: Sequence[ToolDefinition | Mapping[str, Any]]
    tool_choice: ToolChoice | Mapping[str, Any]
    response_format: ResponseFormat | Mapping[str, Any]
    think: bool
    chat_template_kwargs: Mapping[str, Any]
    task_profile: Literal["general", "coding", "reasoning"]
    token_type: Literal["sogni", "spark"]
    app_source: str
    safe_content_filter: bool
    billing_mode: Literal["auto", "subscription", "tokens"]
    sogni_tools: bool | str
    sogni_tool_execution: bool
    attribution: Mapping[str, str]
    resize_images: bool


_ATTRIBUTION_FIELDS: Final = {
    "workload_kind": "workloadKind",
    "agent_framework": "agentFramework",
    "agent_framework_version": "agentFrameworkVersion",
    "agent_surface": "agentSurface",
    "agent_surface_version": "agentSurfaceVersion",
    "execution_mode": "executionMode",
    "operation_scope": "operationScope",
    "operation_id": "operationId",
    "root_operation_id": "rootOperationId",
    "parent_operation_id": "parentOperationId",
}
_ATTRIBUTION_BY_WIRE: Final = {wire: name for name, wire in _ATTRIBUTION_FIELDS.items()}


def new_job_id() -> str:
    """A fresh job id: an upper-case random UUID (version 4), as the official SDKs mint them."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fail(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def _number(
    params: Mapping[str, Any],
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> Any:
    value = params.get(name)
    if value is None:
        return UNSET
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{name} must be a number, not {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise _fail(f"{name} must be an integer")
    if not math.isfinite(value):
        raise _fail(f"{name} must be finite")
    if low is not None and (value <= low if low_open else value < low):
        raise _fail(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise _fail(f"{name} must be <= {high}, got {value}")
    return value


def _has_unsendable(value: object) -> bool:
    """Whether `check_sendable` would refuse ``value``: the same walk without building paths
    (every request takes it, so it allocates nothing per node but the stack)."""
    stack: list[object] = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if item is None or kind is int or kind is bool:
            continue
        if kind is str:
            if not item.isascii():  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
                try:
                    cast("str", item).encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif kind is float:
            if not math.isfinite(cast("float", item)):
                return True
        elif kind is dict:
            mapping = cast("dict[object, object]", item)
            extend(mapping)
            extend(mapping.values())
        elif kind is list or kind is tuple:
            extend(cast("Sequence[object]", item))
        elif isinstance(item, msgspec.Struct):
            extend(msgspec.structs.astuple(item))
        elif isinstance(item, str | float | Mapping | list | tuple):
            # Subclasses: the careful walk decides.
            return True
    return False


def check_sendable(value: object, where: str) -> None:
    """Refuse, before anything is sent, a value that JSON cannot carry faithfully: a NaN or
    infinite float (msgspec would send ``null``) or a string holding a lone surrogate (encoding
    would fail with an untyped :class:`UnicodeEncodeError`). Walks dicts, lists, tuples and
    msgspec Structs iteratively (no recursion, whatever the nesting).

    Raises:
        InvalidRequestError: naming ``where`` and the path to the bad value.
    """
    if not _has_unsendable(value):
        return
    # Something is wrong: walk again, tracking paths, to name it (the rare, slow path).
    stack: list[tuple[str, object]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise _fail(
                        f"{path}: the text holds a lone surrogate (not valid Unicode), "
                        "which cannot be sent"
                    ) from None
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _fail(f"{path}: {item!r} cannot be sent (JSON has no NaN or infinity)")
        elif isinstance(item, Mapping):
            mapping = cast("Mapping[object, object]", item)
            for key, child in mapping.items():
                stack.append((f"{path}[{key!r}]", key))
                stack.append((f"{path}[{key!r}]", child))
        elif isinstance(item, list | tuple):
            sequence = cast("Sequence[object]", item)
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(sequence))
        elif isinstance(item, msgspec.Struct):
            stack.extend((f"{path}.{name}", getattr(item, name)) for name in item.__struct_fields__)


def _convert(value: Any, type_: Any, name: str) -> Any:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise _fail(f"invalid {name}: {exc}") from None


def _check_image(url: str, where: str, resize_images: bool) -> None:
    if url[:6].lower() == "https:" or "://" in url[:12]:
        check_trusted_url(url, where)  # fetched (then checked as a data URI) when sent
        return
    image = parse_data_uri(url, where)
    if image.longest_side > MAX_IMAGE_SIDE and not resize_images:
        raise _fail(oversized_message(where, image))


def validate_messages(messages: object, *, resize_images: bool = False) -> list[ChatMessage]:
    """Convert and check messages as ``chat.completions.create`` does before sending anything:
    roles, shapes, JSON-serialisable content, and the images. Use it to validate requests up
    front (`trio_sogni.fanout.FanoutItem.from_row` does, for every input row). Synchronous,
    no I/O.

    An ``image_url`` part holds either an inline ``data:image/png|jpeg;base64,...`` URI (strict
    base64, at most 10 MiB decoded, magic bytes matching the declared type, a PNG or JPEG header
    giving its pixel size, which Pillow is not needed to read) or an ``https`` URL on a trusted
    host (``*.sogni.ai``, ``*.cloudfront.net``, Amazon S3; ``chat.completions.create`` fetches it
    before sending). At most 20 images per request. An inline image whose longest side is over
    1024 px is refused, unless ``resize_images`` is true (it is then resized when sent).

    Raises:
        InvalidRequestError: with the index of the offending message (and content part).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise _fail("messages must be a list of messages")
    if not messages:
        raise _fail("messages must not be empty")
    items: list[object] = list(messages)  # pyright: ignore[reportUnknownArgumentType]
    converted: list[ChatMessage] = _convert(items, list[ChatMessage], "messages")
    check_sendable(converted, "messages")
    images = 0
    for i, message in enumerate(converted):
        content = message.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, ImageURLPart):
                    images += 1
                    if images > MAX_IMAGES:
                        raise _fail(f"at most {MAX_IMAGES} images are allowed per request")
                    _check_image(part.image_url.url, f"messages[{i}].content[{j}]", resize_images)
        elif content is None and message.role != "assistant":
            raise _fail(f"messages[{i}]: a {message.role!r} message needs content")
    return converted


def resize_allowed(params: Mapping[str, Any], default: bool) -> bool:
    """The call's ``resize_images`` (``params``), else ``default``.

    Raises:
        InvalidRequestError: it is not a bool.
    """
    value = params.get("resize_images")
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _fail("resize_images must be True or False")
    return value


def _tools(params: Mapping[str, Any]) -> Any:
    tools: object = params.get("tools")
    if tools is None:
        return UNSET
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise _fail("tools must be a list of tool definitions")
    items: list[object] = list(tools)  # pyright: ignore[reportUnknownArgumentType]
    converted: list[ToolDefinition] = _convert(items, list[ToolDefinition], "tools")
    seen: set[str] = set()
    for tool in converted:
        name = tool.function.name
        if not _TOOL_NAME.match(name):
            raise _fail(f"tool name {name!r} must match {_TOOL_NAME.pattern}")
        if name in seen:
            raise _fail(f"tool name {name!r} is defined twice")
        seen.add(name)
    return converted


def build_llm_request(
    *,
    model: object,
    messages: object,
    stream: bool,
    params: Mapping[str, Any],
    default_app_source: str | None,
    job_id: str | None = None,
    default_resize_images: bool = False,
) -> LLMJobRequest:
    """Validate the arguments of ``chat.completions.create`` and build the request payload.

    The messages may still hold trusted https image URLs and (with ``resize_images``, per call
    or ``default_resize_images``) oversized inline images: `trio_sogni._vision.inline_images`
    turns them into data URIs within the limits before the request is sent.

    Raises:
        InvalidRequestError: any field is invalid; nothing has been sent.
    """
    unknown = params.keys() - _ALLOWED_PARAMS
    if unknown:
        raise _fail(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model must be a non-empty string")
    converted = validate_messages(
        messages, resize_images=resize_allowed(params, default_resize_images)
    )
    tools = _tools(params)

    tool_choice: Any = UNSET
    if params.get("tool_choice") is not None:
        tool_choice = _convert(params["tool_choice"], ToolChoice, "tool_choice")
        if isinstance(tool_choice, ToolChoiceFunction):
            names = {t.function.name for t in tools} if tools is not UNSET else set[str]()
            if tool_choice.function.name not in names:
                raise _fail(f"tool_choice names {tool_choice.function.name!r}, not in tools")
        elif tool_choice == "required" and tools is UNSET:
            raise _fail("tool_choice 'required' needs tools")

    stop: str | list[str] | UnsetType = UNSET
    raw_stop: object = params.get("stop")
    if raw_stop is not None:
        stop = _convert(raw_stop, str | list[str], "stop")
        if stop == "" or (isinstance(stop, list) and not all(stop)):
            raise _fail("stop sequences must be non-empty strings")

    template: dict[str, Any] = {}
    if params.get("think") is not None:
        if not isinstance(params["think"], bool):
            raise _fail("think must be True or False")
        template["enable_thinking"] = params["think"]
    if params.get("chat_template_kwargs") is not None:
        template.update(
            _convert(params["chat_template_kwargs"], JSONObject, "chat_template_kwargs")
        )

    app_source: object = params.get("app_source") or default_app_source
    if app_source is not None:
        if not isinstance(app_source, str) or len(app_source) > 128:
            raise _fail("app_source must be a string of at most 128 characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in app_source):
            raise _fail("app_source must not contain control characters")
        app_source = app_source.strip() or None

    sogni_tools = params.get("sogni_tools")
    if isinstance(sogni_tools, str) and sogni_tools.strip().lower() == "rich":
        sogni_tools = "creative-tools"

    attribution: dict[str, str] = {}
    raw_attribution: dict[str, object] = _convert(
        params.get("attribution") or {}, dict[str, object], "attribution"
    )
    for key, value in raw_attribution.items():
        name = _ATTRIBUTION_BY_WIRE.get(key, key)
        if name not in _ATTRIBUTION_FIELDS:
            raise _fail(f"unknown attribution field {key!r}")
        if not isinstance(value, str):
            raise _fail(f"attribution field {key!r} must be a string")
        attribution[name] = value

    fields: dict[str, Any] = {
        "job_id": job_id or new_job_id(),
        "model": model,
        "messages": converted,
        "stream": bool(stream),
    }
    if app_source:
        fields["app_source"] = app_source
    for name, low, high, low_open, integer in _NUMBERS:
        if params.get(name) is not None:
            fields[name] = _number(
                params, name, low=low, high=high, low_open=low_open, integer=integer
            )
    optional: dict[str, Any] = {
        "stop": stop,
        "tools": tools,
        "tool_choice": tool_choice,
        "chat_template_kwargs": template or UNSET,
        "sogni_tools": sogni_tools if sogni_tools is not None else UNSET,
    }
    fields.update((k, v) for k, v in optional.items() if v is not UNSET)
    fields.update(attribution)
    for name, type_ in _PASSTHROUGH.items():
        value = params.get(name)
        if value is not None:
            fields[name] = _convert(value, type_, name)
    for name in ("safe_content_filter", "sogni_tool_execution"):
        if params.get(name) is not None:
            if not isinstance(params[name], bool):
                raise _fail(f"{name} must be True or False")
            fields[name] = params[name]
    if attribution:
        fields.setdefault("operation_id", fields["job_id"])
    if "sogni_tools" in fields and not isinstance(fields["sogni_tools"], bool | str):
        raise _fail("sogni_tools must be True, False or a tool-set name")
    check_sendable({k: v for k, v in fields.items() if k != "messages"}, "request")
    # Every field was checked above: build the struct directly (no second validation pass).
    return LLMJobRequest(**fields)


_ALLOWED_PARAMS: Final = frozenset(CompletionParams.__annotations__)
_NUMBERS: Final[tuple[tuple[str, float | None, float | None, bool, bool], ...]] = (
    # name, low, high, low_open, integer
    ("max_tokens", 1, None, False, True),
    ("temperature", 0, 2, False, False),
    ("top_p", 0, 1, True, False),
    ("top_k", -1, None, False, True),
    ("min_p", 0, 1, False, False),
    ("repetition_penalty", 0, None, True, False),
    ("frequency_penalty", -2, 2, False, False),
    ("presence_penalty", -2, 2, False, False),
)
_PASSTHROUGH: Final[dict[str, Any]] = {
    "token_type": Literal["sogni", "spark"],
    "task_profile": Literal["general", "coding", "reasoning"],
    "billing_mode": Literal["auto", "subscription", "tokens"],
    "response_format": ResponseFormat,
}
