"""``OpenAIBridgeWorker``: REAL inference from any OpenAI-compatible server, not a test double.

The worker joins an upstream server (llama-server, vLLM, Ollama, SGLang,
``python -m llama_cpp.server``, ...) to localnet: each job becomes one streamed
``POST {upstream}/chat/completions`` and the upstream's SSE deltas become ``jobTokens``.
The pure translation helpers (:func:`upstream_body`, :func:`parse_sse_data`,
:func:`chunk_deltas`) are public so they can be tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import httpx
import msgspec
from typing_extensions import override

from ...protocol import (
    SAMPLING_FIELDS,
    FunctionCallDelta,
    LLMJobRequest,
    ToolCallDelta,
    decode_json,
)
from ._base import JobContext, WorkerIdentity

__all__ = [
    "OpenAIBridgeWorker",
    "UpstreamChunk",
    "UpstreamError",
    "chunk_deltas",
    "parse_sse_data",
    "upstream_body",
]

_DEFAULT_TIMEOUT: Final = httpx.Timeout(300.0, connect=10.0)

_PASSED_THROUGH: Final = (
    *SAMPLING_FIELDS,
    "tools",
    "tool_choice",
    "response_format",
    "chat_template_kwargs",
)


def upstream_body(request: LLMJobRequest, model: str) -> dict[str, Any]:
    """The ``/chat/completions`` body for ``request``: ``model``, the messages, ``stream: true``
    with ``stream_options.include_usage``, and every sampling and format field the request sets
    (``repetition_penalty`` also as ``repeat_penalty``, llama.cpp's name)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": msgspec.to_builtins(request.messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for name in _PASSED_THROUGH:
        value = getattr(request, name)
        if value is not msgspec.UNSET:
            body[name] = msgspec.to_builtins(value)
    if "repetition_penalty" in body:
        body["repeat_penalty"] = body["repetition_penalty"]
    return body


class UpstreamError(Exception):
    """The upstream answered with an error (HTTP status or an SSE ``error`` event)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class UpstreamChunk:
    """One decoded SSE ``data:`` payload of a streamed chat completion."""

    content: str | None = None
    role: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list[ToolCallDelta])
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None
    """``(prompt_tokens, completion_tokens)`` when the upstream reported usage."""


def _as_dict(value: object) -> dict[str, Any] | None:
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _as_list(value: object) -> list[Any]:
    return cast("list[Any]", value) if isinstance(value, list) else []


def _error_message(payload: object) -> str:
    outer = _as_dict(payload)
    if outer is not None:
        error: object = outer.get("error", outer)
        inner = _as_dict(error)
        if inner is not None:
            message: object = inner.get("message") or inner.get("detail")
            if message:
                return str(message)
        elif error:
            return str(error)
    return json.dumps(payload)[:500]


def parse_sse_data(data: str) -> UpstreamChunk | None:
    """Decode one SSE ``data:`` payload; ``None`` for ``[DONE]``.

    Raises:
        UpstreamError: the payload is an error object, or not JSON.
    """
    if data.strip() == "[DONE]":
        return None
    try:
        event = _as_dict(decode_json(data))
    except ValueError:
        event = None
    if event is None:
        raise UpstreamError(f"the upstream sent a malformed event: {data[:200]!r}")
    if "error" in event:
        raise UpstreamError(_error_message(event))
    chunk = UpstreamChunk()
    usage = _as_dict(event.get("usage"))
    if usage is not None:
        chunk.usage = (
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )
    choices = _as_list(event.get("choices"))
    choice = _as_dict(choices[0]) if choices else None
    if choice is None:
        return chunk
    chunk.finish_reason = choice.get("finish_reason") or None
    delta = _as_dict(choice.get("delta"))
    if delta is not None:
        chunk.content = delta.get("content") or None
        chunk.role = delta.get("role") or None
        chunk.tool_calls = chunk_deltas(delta.get("tool_calls"))
    return chunk


def chunk_deltas(raw: object) -> list[ToolCallDelta]:
    """OpenAI ``delta.tool_calls`` (a list of dicts) as :class:`ToolCallDelta` values."""
    deltas: list[ToolCallDelta] = []
    for position, item in enumerate(_as_list(raw)):
        entry = _as_dict(item)
        if entry is None:
            continue
        function = _as_dict(entry.get("function"))
        index: object = entry.get("index", position)
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=entry.get("id") or None,
                type=entry.get("type") or None,
                function=FunctionCallDelta(
                    name=function.get("name") or None, arguments=function.get("arguments")
                )
                if function is not None
                else None,
            )
        )
    return deltas


class OpenAIBridgeWorker(WorkerIdentity):
    """A worker that forwards jobs to an OpenAI-compatible server (REAL inference).

    Args:
        upstream: the server's base URL including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``).
        name: the worker's name (default ``"bridge-worker"``).
        upstream_model: the model name sent upstream (default: the job's model).
        api_key: sent as ``Authorization: Bearer <key>`` (never logged or shown in a repr).
        models: the models it serves (default ``None``: every model the network knows;
            :meth:`connect` fills it from the upstream's ``GET /models``).
        capacity: jobs forwarded at once.
        timeout: an :class:`httpx.Timeout` for the upstream requests.
        transport: an httpx transport (tests pass :class:`httpx.MockTransport`).

    Each job: every sampling field, ``stop``, ``tools``, ``tool_choice``, ``response_format`` and
    ``chat_template_kwargs`` the request sets is sent as is, with
    ``stream: true`` and ``stream_options: {include_usage: true}``. Content and tool-call deltas
    stream back as they arrive; the last chunk carries the upstream's finish reason and usage
    (the upstream's token counts replace localnet's estimate). An HTTP error, a connection
    failure or an SSE ``error`` event ends the job with ``llmJobError`` ``upstream_error``
    (``error_code``: the upstream's HTTP status when there is one). An abort closes the upstream
    response, which cancels the upstream request.
    """

    def __init__(
        self,
        upstream: str,
        name: str = "bridge-worker",
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        capacity: int = 1,
        timeout: httpx.Timeout = _DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, "bridge-worker", models, capacity)
        url = httpx.URL(upstream)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("upstream must be an http:// or https:// URL")
        self.upstream = upstream.rstrip("/")
        self.upstream_model = upstream_model
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport

    @classmethod
    async def connect(
        cls,
        upstream: str,
        name: str = "bridge-worker",
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        capacity: int = 1,
        timeout: httpx.Timeout = _DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the upstream requests' timeouts
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OpenAIBridgeWorker:
        """A worker that serves ``models``, or else the model names the upstream lists at
        ``GET /models`` (``upstream_model`` alone when given and the list is empty).

        Raises:
            UpstreamError: the upstream cannot be reached or answers with an error.
        """
        worker = cls(
            upstream,
            name,
            upstream_model=upstream_model,
            api_key=api_key,
            models=models,
            capacity=capacity,
            timeout=timeout,
            transport=transport,
        )
        if models is None:
            listed = await worker.list_upstream_models()
            if upstream_model is not None and upstream_model not in listed:
                listed = [upstream_model, *listed]
            worker._models = tuple(listed) if listed else None
        return worker

    @override
    def __repr__(self) -> str:
        return f"OpenAIBridgeWorker({self.upstream!r}, {self._name!r})"

    def _client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return httpx.AsyncClient(headers=headers, timeout=self._timeout, transport=self._transport)

    async def list_upstream_models(self) -> list[str]:
        """The ``id`` of every model in the upstream's ``GET /models`` answer.

        Raises:
            UpstreamError: the upstream cannot be reached or answers with an error.
        """
        try:
            async with self._client() as client:
                response = await client.get(f"{self.upstream}/models")
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach the upstream: {exc!r}") from None
        if response.status_code >= 400:
            raise UpstreamError(_response_message(response), response.status_code)
        payload = _as_dict(response.json())
        data = _as_list(payload.get("data")) if payload is not None else []
        ids: list[str] = []
        for item in data:
            entry = _as_dict(item)
            if entry is not None and isinstance(entry.get("id"), str):
                ids.append(entry["id"])
        return ids

    async def run(self, job: JobContext) -> None:
        """Forward the job upstream and stream the answer back (see the class docstring)."""
        model = self.upstream_model or job.request.model
        body = upstream_body(job.request, model)
        try:
            async with (
                self._client() as client,
                client.stream("POST", f"{self.upstream}/chat/completions", json=body) as response,
            ):
                if response.status_code >= 400:
                    await response.aread()
                    raise UpstreamError(_response_message(response), response.status_code)
                await self._relay(job, response)
        except UpstreamError as exc:
            code = str(exc.status) if exc.status is not None else None
            job.fail("upstream_error", exc.message, error_code=code)
        except httpx.HTTPError as exc:
            job.fail("upstream_error", f"the upstream request failed: {exc!r}")

    async def _relay(self, job: JobContext, response: httpx.Response) -> None:
        finish: str | None = None
        usage: tuple[int, int] | None = None
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, other SSE fields
            chunk = parse_sse_data(line[5:].strip())
            if chunk is None:
                break
            if chunk.usage is not None:
                usage = chunk.usage
            finish = chunk.finish_reason or finish
            if chunk.content or chunk.tool_calls:
                await job.send_chunk(chunk.content, tool_calls=chunk.tool_calls, role=chunk.role)
        if usage is not None:
            job.prompt_tokens, job.completion_tokens = usage
        await job.send_chunk(None, finish_reason=finish or "stop")


def _response_message(response: httpx.Response) -> str:
    try:
        payload: Any = response.json()
    except ValueError:
        text = response.text.strip()[:500]
        return f"upstream HTTP {response.status_code}: {text or response.reason_phrase}"
    return f"upstream HTTP {response.status_code}: {_error_message(payload)}"
