"""OpenAI-style chat shapes carried inside Sogni messages: messages, content parts, tools, usage.

These structs are used in both directions. Request-side shapes (what a client sends) forbid unknown
fields, so a typo in a message dict is reported before anything is sent and localnet can decode client
frames strictly. Response-side shapes (what a server sends) ignore unknown fields, so a newer server
never breaks an older client.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = [
    "ChatMessage",
    "ContentPart",
    "FunctionCall",
    "FunctionCallDelta",
    "FunctionDefinition",
    "ImageURL",
    "ImageURLPart",
    "JSONObject",
    "JSONSchemaFormat",
    "ResponseFormat",
    "ResponseFormatJSONObject",
    "ResponseFormatJSONSchema",
    "ResponseFormatText",
    "Role",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceFunction",
    "ToolChoiceFunctionName",
    "ToolDefinition",
    "Usage",
]

JSONObject: TypeAlias = dict[str, Any]
"""A decoded JSON object (tool parameters, JSON Schemas, template kwargs)."""

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
"""The message roles the Sogni chat protocol accepts."""


class TextPart(
    msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True, kw_only=True
):
    """A text content part: ``{"type": "text", "text": ...}``."""

    text: str


class ImageURL(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The ``image_url`` object of an image part. The socket path accepts only inline data URIs."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(
    msgspec.Struct, tag="image_url", tag_field="type", forbid_unknown_fields=True, kw_only=True
):
    """An image content part: ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``."""

    image_url: ImageURL


ContentPart: TypeAlias = TextPart | ImageURLPart
"""One element of a multi-part message ``content`` list."""


class FunctionCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A complete function call: the tool ``name`` and its JSON ``arguments`` text."""

    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A complete tool call, as carried by an assistant message and by a finished completion."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One OpenAI-style chat message.

    ``content`` may be ``None`` on an assistant message that only carries ``tool_calls``; a ``tool``
    message answers the call named by ``tool_call_id``.
    """

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        # msgspec runs this after decoding and after msgspec.convert, so the rules hold for dicts
        # converted by the client and for frames decoded by localnet alike.
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs a tool_call_id")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an 'assistant' message may carry tool_calls")


class FunctionDefinition(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """The ``function`` object of a tool definition; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class ToolDefinition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A tool the model may call: ``{"type": "function", "function": {...}}``."""

    function: FunctionDefinition
    type: Literal["function"] = "function"


class ToolChoiceFunctionName(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``function`` object of a forced tool choice."""

    name: str


class ToolChoiceFunction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Force one named tool: ``{"type": "function", "function": {"name": ...}}``."""

    function: ToolChoiceFunctionName
    type: Literal["function"] = "function"


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | ToolChoiceFunction
"""How the model may choose tools."""


class ResponseFormatText(msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    """Plain text output (the default)."""


class ResponseFormatJSONObject(
    msgspec.Struct, tag="json_object", tag_field="type", forbid_unknown_fields=True
):
    """Any JSON object."""


class JSONSchemaFormat(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """The ``json_schema`` object of a JSON Schema response format."""

    name: str
    schema: JSONObject | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormatJSONSchema(
    msgspec.Struct, tag="json_schema", tag_field="type", forbid_unknown_fields=True, kw_only=True
):
    """Output that validates against a JSON Schema."""

    json_schema: JSONSchemaFormat


ResponseFormat: TypeAlias = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema
"""The ``response_format`` request field."""


# --- response side (tolerant) -------------------------------------------------------------------


class Usage(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Token counts of a job. ``total_tokens`` is filled in when the server omits it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.total_tokens is None:
            msgspec.structs.force_setattr(
                self, "total_tokens", self.prompt_tokens + self.completion_tokens
            )


class FunctionCallDelta(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A fragment of a function call inside a streamed tool-call delta."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, kw_only=True, frozen=True):
    """One streamed tool-call fragment, merged by ``index`` (the first carries ``id`` and ``name``)."""

    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionCallDelta | None = None
