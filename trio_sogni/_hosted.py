"""The REST half of the Chat API: cost estimates and hosted completions (protocol.md §3.1 to
§3.3, §4.7). Everything is checked before a request is sent."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Unpack, cast, final
from urllib.parse import quote

import msgspec
from msgspec import UNSET
from typing_extensions import override

from ._errors import InvalidRequestError
from ._media._request import MediaType
from ._media._results import MediaResult
from ._request import CompletionParams, MessageInput, build_llm_request, resize_allowed
from ._rest_calls import typed_call
from ._transport import RestClient
from ._vision import ImageFetcher, inline_images
from .protocol import LLMJobRequest, LLMModelInfo, ToolCall, Usage

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "ChatHosted",
    "HostedChatCompletion",
    "HostedChoice",
    "HostedMessage",
    "HostedToolResult",
    "LLMCostEstimate",
    "estimate_input_tokens",
    "resolve_max_output_tokens",
]

DEFAULT_MAX_OUTPUT_TOKENS: Final = 4096
"""The output budget an estimate assumes when neither the call nor the model says otherwise."""

HOSTED_SYNCHRONOUS_TOOLS: Final = frozenset(
    {
        "enhance_prompt",
        "compose_script",
        "compose_lyrics",
        "compose_instrumental",
        "compose_workflow",
        "compose_workflow_template",
    }
)


class LLMCostEstimate(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """A quote for one LLM job (``quote`` of the estimate endpoint). Amounts are numbers."""

    cost_in_usd: float = msgspec.field(name="costInUSD")
    cost_in_sogni: float
    cost_in_spark: float
    cost_in_token: float
    input_tokens: int
    output_tokens: int


class _EstimateResponse(msgspec.Struct):
    quote: LLMCostEstimate


class HostedMessage(msgspec.Struct, kw_only=True, frozen=True):
    """The assistant message of a hosted completion."""

    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class HostedChoice(msgspec.Struct, kw_only=True, frozen=True):
    """One choice of a hosted completion."""

    index: int = 0
    message: HostedMessage = msgspec.field(default_factory=HostedMessage)
    finish_reason: str | None = None


class HostedChatCompletion(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /v1/chat/completions``: an OpenAI-shaped chat completion. Unknown fields are
    ignored; ``creative_workflows`` and ``sogni_tool_results`` are kept as plain JSON."""

    id: str
    object: str = "chat.completion"
    created: int | None = None
    model: str | None = None
    choices: list[HostedChoice] = msgspec.field(default_factory=list[HostedChoice])
    usage: Usage | None = None
    creative_workflows: list[dict[str, Any]] | None = None
    sogni_tool_results: list[dict[str, Any]] | None = None

    @property
    def content(self) -> str | None:
        """The first choice's text (``None`` when it answered with tool calls only)."""
        return self.choices[0].message.content if self.choices else None


class HostedToolResult(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """``POST /v1/creative-agent/tools/execute``: one synchronous hosted tool's result."""

    tool_call_id: str | None = None
    tool: str
    result: Any = None
    message: str | None = None


class _ToolEnvelope(msgspec.Struct):
    data: HostedToolResult


def _plain(value: object) -> Any:
    return msgspec.to_builtins(value)


def _blank_images(message: object) -> None:
    """Replace every ``image_url.url`` of a plain (JSON-like) message with ``"[image]"``."""
    if not isinstance(message, dict):
        return
    fields = cast("dict[str, object]", message)
    content = fields.get("content")
    if not isinstance(content, list):
        return
    for part in cast("list[object]", content):
        if isinstance(part, dict):
            image = cast("dict[str, object]", part).get("image_url")
            if isinstance(image, dict):
                cast("dict[str, object]", image)["url"] = "[image]"


def estimate_input_tokens(messages: Sequence[MessageInput]) -> int:
    """The input-token count the official SDKs (and the server) estimate: the compact JSON of the
    messages, with every ``image_url.url`` replaced by ``"[image]"``, measured in UTF-16 code
    units, divided by 4, rounded up (protocol.md §4.7).

    Raises:
        InvalidRequestError: the messages are not JSON-serialisable.
    """
    try:
        plain: Any = _plain(list(messages))
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidRequestError(f"messages are not JSON-serialisable: {exc}") from None
    for message in plain:
        _blank_images(message)
    text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    return math.ceil(len(text.encode("utf-16-le")) // 2 / 4)


def resolve_max_output_tokens(
    model_info: LLMModelInfo | None,
    *,
    max_tokens: int | None,
    think: bool | None,
    task_profile: str | None,
) -> int:
    """The output budget of an estimate: ``max_tokens``; else the model's thinking default for
    ``think=True`` with a coding or reasoning profile; else the model's default; else 4096."""
    if max_tokens is not None:
        return max_tokens
    limits = model_info.max_output_tokens if model_info is not None else None
    if limits is not None:
        if think is True and task_profile in ("coding", "reasoning"):
            value = limits.thinking_complex_default
            if isinstance(value, int | float) and math.isfinite(value):
                return int(value)
        if isinstance(limits.default, int | float) and math.isfinite(limits.default):
            return int(limits.default)
    return DEFAULT_MAX_OUTPUT_TOKENS


def _component(value: str) -> str:
    """``encodeURIComponent``: everything but ``A-Z a-z 0-9 - _ . ! ~ * ' ( )`` is escaped."""
    return quote(value, safe="-_.!~*'()")


async def request_estimate(
    rest: RestClient,
    *,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    token_type: str,
) -> LLMCostEstimate:
    """GET the quote from the socket host's estimate endpoint."""
    path = "/api/v1/job-llm/estimate/" + "/".join(
        _component(str(part)) for part in (token_type, model, input_tokens, max_output_tokens)
    )
    answer = await typed_call(rest, "GET", path, _EstimateResponse, what="estimate", base="socket")
    return answer.quote


_HOSTED_SKIP: Final = frozenset(
    {
        "job_id",
        "type",
        "stream",
        "workload_kind",
        "agent_framework",
        "agent_framework_version",
        "agent_surface",
        "agent_surface_version",
        "execution_mode",
        "operation_scope",
        "operation_id",
        "root_operation_id",
        "parent_operation_id",
    }
)
_HOSTED_NAMES: Final = {"billing_mode": "billingMode"}
"""Fields whose name on ``/v1/chat/completions`` differs from the snake_case attribute."""


def hosted_body(request: LLMJobRequest) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body for a validated request (snake_case, except
    ``billingMode``, as the official SDKs send it)."""
    body: dict[str, Any] = {}
    for field in msgspec.structs.fields(LLMJobRequest):
        if field.name in _HOSTED_SKIP:
            continue
        value = getattr(request, field.name)
        if value is UNSET:
            continue
        body[_HOSTED_NAMES.get(field.name, field.name)] = _plain(value)
    return body


@final
class ChatHosted:
    """``sogni.chat.hosted``: OpenAI-style completions and synchronous tools over REST.

    Each call is one request (cancellable; the REST client allows 300 s for the answer). Error
    bodies in the recognised chat-error shapes raise `ChatJobError`, others `APIStatusError`.
    """

    def __init__(
        self,
        rest: RestClient,
        *,
        app_source: str | None,
        images: ImageFetcher | None = None,
        resize_images: bool = False,
    ) -> None:
        self._rest = rest
        self._app_source = app_source
        self._images = images
        self._resize_images = resize_images

    @override
    def __repr__(self) -> str:
        return "<ChatHosted>"

    def _headers(self, source: object) -> dict[str, str]:
        return {"X-App-Source": source} if isinstance(source, str) and source else {}

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[MessageInput],
        stream: Literal[False] = False,
        **params: Unpack[CompletionParams],
    ) -> HostedChatCompletion:
        """A non-streaming completion through ``POST /v1/chat/completions``.

        Images are handled as by ``chat.completions.create``: trusted https image URLs are
        fetched first and sent inline, and oversized images are resized with
        ``resize_images=True`` (else refused); if any image fails, nothing is sent.

        Raises:
            InvalidRequestError: ``stream=True`` (hosted completions do not stream), any bad
                parameter or an unusable image (nothing was sent).
            ConnectError, TransportError: an image URL could not be fetched (nothing was sent).
            ChatJobError, APIStatusError: the server refused or failed it.
        """
        if stream:
            raise InvalidRequestError("hosted completions are non-streaming only")
        request = build_llm_request(
            model=model,
            messages=messages,
            stream=False,
            params=params,
            default_app_source=self._app_source,
            default_resize_images=self._resize_images,
        )
        messages, _ = await inline_images(
            request.messages, self._images, resize=resize_allowed(params, self._resize_images)
        )
        if messages is not request.messages:
            request = msgspec.structs.replace(request, messages=messages)
        body = hosted_body(request)
        return await typed_call(
            self._rest,
            "POST",
            "/v1/chat/completions",
            HostedChatCompletion,
            what="completion",
            json=body,
            headers=self._headers(body.get("app_source")),
        )

    async def execute_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        token_type: Literal["sogni", "spark"] | None = None,
        safe_content_filter: bool | None = None,
        app_source: str | None = None,
    ) -> HostedToolResult:
        """Run one hosted tool through ``POST /v1/creative-agent/tools/execute`` and return the
        server's ``data``.

        The documented synchronous tools are ``enhance_prompt``, ``compose_script``,
        ``compose_lyrics``, ``compose_instrumental``, ``compose_workflow`` and
        ``compose_workflow_template``; any other name is sent too and the server decides
        (``chat.tools`` sends every hosted tool but the six direct media tools here). Only the
        request's shape is checked here; the server checks the arguments. The answer may take
        as long as the tool's renders (the REST client allows 300 s); cancelling this call
        closes the request, which a server notices and cancels the tool's work.

        Raises:
            InvalidRequestError: an empty tool name, arguments that are not a JSON-serialisable
                mapping (nothing was sent).
            ChatJobError, APIStatusError: the server refused or failed it (an unsupported
                tool, bad arguments...).
        """
        if not isinstance(tool, str) or not tool.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("tool must be a non-empty string")
        if not isinstance(arguments, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("arguments must be a mapping")
        body: dict[str, Any] = {
            "tool": tool,
            "arguments": dict(arguments),
            "app_source": app_source or self._app_source,
            "token_type": token_type or "sogni",
        }
        if safe_content_filter is not None:
            body["safe_content_filter"] = safe_content_filter
        body = {k: v for k, v in body.items() if v is not None}
        try:
            msgspec.json.encode(body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidRequestError(f"tool arguments are not JSON-serialisable: {exc}") from None
        answer = await typed_call(
            self._rest,
            "POST",
            "/v1/creative-agent/tools/execute",
            _ToolEnvelope,
            what="tool",
            json=body,
            headers=self._headers(body.get("app_source")),
        )
        return answer.data

    def media_result(
        self, url: str, media_type: MediaType, *, project_id: str, render_id: str
    ) -> MediaResult:
        """A `MediaResult` for a media URL a hosted tool answered with (read through this
        client's REST transport)."""
        return MediaResult(
            self._rest,
            project_id=project_id,
            render_id=render_id,
            media_type=media_type,
            result_url=url,
        )
