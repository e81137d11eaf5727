"""Scripts for simulated workers: what a job outputs, step by step (pure data, no I/O).

A *script* is a sequence of steps. :func:`compile_script` turns it into a flat list of actions —
one :class:`Emit` per ``jobTokens`` chunk, plus faults and pauses — after applying the request's
``stop`` sequences and ``max_tokens`` limit exactly as the simulated worker will. Because the
compilation is pure, :func:`expected_output` can tell a test precisely what a client will receive.

Without a script, a job produces the *default reply*: ``"Simulated reply to: <last user text>"``
(see :func:`default_reply_text`), one word per chunk.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgspec

from ...protocol import (
    ChatMessage,
    FunctionCall,
    FunctionCallDelta,
    LLMJobRequest,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    TextPart,
    ToolCall as WireToolCall,
    ToolCallDelta,
)
from .._jsonschema import example

__all__ = [
    "Action",
    "Delta",
    "DropConnection",
    "Emit",
    "ExpectedOutput",
    "Fail",
    "Finish",
    "Pause",
    "Script",
    "ScriptFunction",
    "Stall",
    "Step",
    "Text",
    "ToolCall",
    "compile_script",
    "count_prompt_tokens",
    "default_reply_text",
    "default_script",
    "expected_output",
    "split_deltas",
]

DEFAULT_REPLY_PREFIX: Final = "Simulated reply to: "

# --- steps (public) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Emit ``text`` as word-sized content deltas, one ``jobTokens`` chunk each (see
    :func:`split_deltas`)."""

    text: str


@dataclass(frozen=True)
class Delta:
    """Emit exactly one ``jobTokens`` chunk with this content and/or raw tool-call deltas."""

    content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """Emit one complete tool call as OpenAI-style deltas spread over ``pieces`` chunks.

    The first chunk carries ``id``, ``type: "function"``, the whole ``name`` and the first
    fragment of ``arguments``; the others carry the remaining fragments. ``arguments`` given as a
    mapping is serialised to compact JSON. Tool calls get indexes 0, 1, ... in script order, and
    ``id`` defaults to ``"call_<index>"``. A script that emits a tool call finishes with
    ``finishReason: "tool_calls"`` unless a :class:`Finish` step says otherwise.
    """

    name: str
    arguments: str | Mapping[str, Any] = "{}"
    id: str | None = None
    pieces: int = 3


@dataclass(frozen=True, kw_only=True)
class Fail:
    """End the job with ``llmJobError`` at this point (after the chunks emitted before it).

    Any tag, message and ``error_code`` may be given, including the subscription-denial fields
    (``subscription_limit``, ``required_plans``, ``feature``, ``limitation``).
    """

    error: str = "worker_error"
    message: str = "Simulated worker failure."
    error_code: str | None = None
    subscription_limit: bool | None = None
    required_plans: tuple[str, ...] | None = None
    feature: str | None = None
    limitation: Any = None


@dataclass(frozen=True)
class Stall:
    """Stop sending and never finish: the job stays running until it is aborted, expires or the
    network shuts down."""


@dataclass(frozen=True)
class DropConnection:
    """Drop the TCP connection that carries this job abruptly (no WebSocket close frame).

    With ``reset=True`` the socket is reset (RST) instead of closed (FIN). The job itself keeps
    running: its frames are held while its app is detached and go to a new socket of the same
    ``appId`` if one authenticates within the rebind grace (exactly where the client stopped,
    if it resumes jobs; see docs/connections.md).
    """

    reset: bool = False


@dataclass(frozen=True)
class Pause:
    """Sleep ``seconds`` (Trio time, so a ``MockClock`` skips it) before the next step."""

    seconds: float


@dataclass(frozen=True)
class Finish:
    """Set the ``finishReason`` of the last chunk explicitly (``stop``, ``length``, ``tool_calls``
    or anything else). A cut by ``max_tokens`` or a ``stop`` sequence still takes precedence."""

    reason: str


Step: TypeAlias = Text | Delta | ToolCall | Fail | Stall | DropConnection | Pause | Finish
"""One step of a script."""

Script: TypeAlias = Sequence[Step]
"""What a job outputs, in order."""

ScriptFunction: TypeAlias = Callable[[LLMJobRequest], Script | None]
"""Chooses the script of a job from its request; ``None`` means the default reply."""

# --- compiled actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    """Send one ``jobTokens`` chunk. The last one of a successful job carries ``finish_reason``."""

    content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    role: str | None = None
    finish_reason: str | None = None

    @property
    def counts(self) -> bool:
        """Whether this chunk counts as a completion token (it carries text or a tool delta)."""
        return bool(self.content) or bool(self.tool_calls)


Action: TypeAlias = Emit | Fail | Stall | DropConnection | Pause
"""One compiled action; a script that compiles to neither `Fail` nor `Stall` ends successfully."""


# --- helpers ---------------------------------------------------------------------------------------

_WORDS: Final = re.compile(r"\s*\S+|\s+")


def split_deltas(text: str) -> list[str]:
    """Split ``text`` into word-sized deltas (each word with the whitespace before it).

    ``"".join(split_deltas(text)) == text`` always holds.
    """
    return _WORDS.findall(text)


def _message_text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(part.text for part in content if isinstance(part, TextPart))


def _as_messages(
    source: LLMJobRequest | Sequence[ChatMessage] | Sequence[Mapping[str, Any]],
) -> list[ChatMessage]:
    if isinstance(source, LLMJobRequest):
        return list(source.messages)
    return [
        item if isinstance(item, ChatMessage) else msgspec.convert(item, ChatMessage)
        for item in source
    ]


def default_reply_text(
    source: LLMJobRequest | Sequence[ChatMessage] | Sequence[Mapping[str, Any]],
) -> str:
    """The default reply of a simulated worker: ``"Simulated reply to: <last user text>"``.

    ``source`` is a request or its ``messages`` (structs or plain dicts). The user text is the
    ``content`` of the last ``user`` message; text parts of a multi-part content are joined with a
    space and image parts are ignored. This is the full reply before ``max_tokens``/``stop`` cuts;
    use :func:`expected_output` for what a client actually receives.
    """
    messages = _as_messages(source)
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    return DEFAULT_REPLY_PREFIX + (_message_text(last_user) if last_user else "")


def default_script(request: LLMJobRequest) -> Script:
    """The script of a job when no script function chooses one.

    * ``response_format`` ``json_schema`` (with a schema): one JSON object that validates against
      that schema, built deterministically (required properties only, the first ``enum``
      value, ``"Simulated <property>."`` for strings, the smallest allowed number, ``minItems``
      array items...);
    * ``json_object`` (or ``json_schema`` without a schema): ``{"reply": <default reply text>}``;
    * otherwise the default reply text (:func:`default_reply_text`).

    JSON is written with ``", "`` and ``": "`` separators, so it streams in word-sized chunks
    like any text (and ``max_tokens`` can cut it short, leaving invalid JSON, as a real model's
    output would be).
    """
    response_format = request.response_format
    if isinstance(response_format, ResponseFormatJSONSchema):
        schema = response_format.json_schema.schema
        if schema is not None:
            return [Text(json.dumps(example(schema), ensure_ascii=False))]
    if isinstance(response_format, ResponseFormatJSONSchema | ResponseFormatJSONObject):
        reply = {"reply": default_reply_text(request)}
        return [Text(json.dumps(reply, ensure_ascii=False))]
    return [Text(default_reply_text(request))]


def count_prompt_tokens(
    source: LLMJobRequest | Sequence[ChatMessage] | Sequence[Mapping[str, Any]],
) -> int:
    """``ceil(len(compact JSON of the messages) / 4)``, the official SDKs' estimate formula.

    Length counts UTF-16 code units and image URLs are replaced by ``"[image]"`` first, as the
    SDKs do.
    """
    raw: list[dict[str, Any]] = msgspec.to_builtins(_as_messages(source))
    for message in raw:
        content = message.get("content")
        if isinstance(content, list):
            parts: list[dict[str, Any]] = content  # pyright: ignore[reportUnknownVariableType]
            for part in parts:
                if part.get("type") == "image_url":
                    part["image_url"] = {"url": "[image]"}
    text = msgspec.json.encode(raw).decode()
    return math.ceil(len(text.encode("utf-16-le")) // 2 / 4)


def _split_even(text: str, pieces: int) -> list[str]:
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    out: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out or [""]


def _tool_call_emits(step: ToolCall, index: int) -> list[Emit]:
    arguments = (
        step.arguments
        if isinstance(step.arguments, str)
        else msgspec.json.encode(dict(step.arguments)).decode()
    )
    fragments = _split_even(arguments, step.pieces)
    call_id = step.id if step.id is not None else f"call_{index}"
    emits = [
        Emit(
            tool_calls=(
                ToolCallDelta(
                    index=index,
                    id=call_id,
                    type="function",
                    function=FunctionCallDelta(name=step.name, arguments=fragments[0]),
                ),
            )
        )
    ]
    emits.extend(
        Emit(tool_calls=(ToolCallDelta(index=index, function=FunctionCallDelta(arguments=f)),))
        for f in fragments[1:]
    )
    return emits


def _expand(steps: Script) -> tuple[list[Action], str | None, bool]:
    """Flatten steps into actions, up to the first terminal step (`Fail` / `Stall`)."""
    actions: list[Action] = []
    explicit_finish: str | None = None
    tool_index = 0
    for step in steps:
        match step:
            case Text(text=text):
                actions.extend(Emit(content=d) for d in split_deltas(text))
            case Delta(content=content, tool_calls=tool_calls):
                actions.append(Emit(content=content, tool_calls=tuple(tool_calls)))
            case ToolCall():
                actions.extend(_tool_call_emits(step, tool_index))
                tool_index += 1
            case Finish(reason=reason):
                explicit_finish = reason
            case Fail() | Stall():
                actions.append(step)
                return actions, explicit_finish, True
            case DropConnection() | Pause():
                actions.append(step)
    return actions, explicit_finish, False


def _cut_at_stop(actions: list[Action], stop: Sequence[str]) -> bool:
    """Truncate the content so it ends right before the first stop sequence. Returns whether a
    stop sequence was found (then everything after it is dropped)."""
    if not stop:
        return False
    full = "".join(a.content or "" for a in actions if isinstance(a, Emit))
    hits = [i for i in (full.find(s) for s in stop if s) if i >= 0]
    if not hits:
        return False
    cut = min(hits)
    start = 0
    for position, action in enumerate(actions):
        if not isinstance(action, Emit):
            continue
        content = action.content or ""
        if start + len(content) <= cut:
            start += len(content)
            continue
        kept = Emit(content=content[: cut - start], tool_calls=action.tool_calls)
        del actions[position:]
        if kept.counts:
            actions.append(kept)
        return True
    return True  # pragma: no cover - the hit lies inside some Emit's content


def compile_script(
    steps: Script, *, max_tokens: int | None, stop: str | Sequence[str] | None = None
) -> list[Action]:
    """Compile ``steps`` into the exact list of actions a simulated worker performs.

    * ``stop``: the content is cut right before the first occurrence of any stop sequence (even
      one spanning several deltas), and nothing after it is emitted; finish reason ``stop``.
    * ``max_tokens``: at most that many counting chunks (chunks with text or a tool delta) are
      emitted; if more were scripted, the rest is dropped and the finish reason is ``length``.
    * Otherwise the finish reason is the last :class:`Finish` step's, else ``tool_calls`` when a
      tool call was emitted, else ``stop``.

    Unless the result ends in :class:`Fail` or :class:`Stall`, its last :class:`Emit` carries the
    finish reason (an empty chunk is appended when nothing else is emitted), and the first
    :class:`Emit` carries ``role: "assistant"``.
    """
    actions, explicit_finish, terminal = _expand(steps)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    finish: str | None = None
    if _cut_at_stop(actions, stops):
        finish, terminal = "stop", False
    if max_tokens is not None:
        emitted = 0
        for position, action in enumerate(actions):
            if isinstance(action, Emit) and action.counts:
                if emitted == max_tokens:
                    del actions[position:]
                    finish, terminal = "length", False
                    break
                emitted += 1
    if not terminal:
        if finish is None:
            has_tools = any(isinstance(a, Emit) and a.tool_calls for a in actions)
            finish = explicit_finish or ("tool_calls" if has_tools else "stop")
        last = max((i for i, a in enumerate(actions) if isinstance(a, Emit)), default=None)
        if last is None:
            actions.append(Emit(content="", finish_reason=finish))
        else:
            emit = actions[last]
            assert isinstance(emit, Emit)
            actions[last] = Emit(
                content=emit.content, tool_calls=emit.tool_calls, finish_reason=finish
            )
    first = next((i for i, a in enumerate(actions) if isinstance(a, Emit)), None)
    if first is not None:
        emit = actions[first]
        assert isinstance(emit, Emit)
        actions[first] = Emit(
            content=emit.content,
            tool_calls=emit.tool_calls,
            role="assistant",
            finish_reason=emit.finish_reason,
        )
    return actions


@dataclass(frozen=True)
class ExpectedOutput:
    """What a client accumulates from a job run by a :class:`SimulatedWorker`.

    ``finish_reason`` is ``None`` when the job fails (``error``) or stalls (``stalls``).
    """

    content: str
    """The whole text (every chunk's content, joined)."""
    deltas: tuple[str, ...]
    """The non-empty content of each chunk, in order."""
    tool_calls: tuple[WireToolCall, ...]
    """The tool calls the deltas assemble into, by index."""
    finish_reason: str | None
    """The last chunk's finish reason."""
    prompt_tokens: int
    """The usage's prompt tokens (:func:`count_prompt_tokens`)."""
    completion_tokens: int
    """The usage's completion tokens (the chunks that carry text or a tool-call delta)."""
    error: Fail | None = None
    """The :class:`Fail` step the job ends with, if any."""
    stalls: bool = False
    """Whether the job ends in a :class:`Stall` (it never finishes until aborted)."""
    actions: tuple[Action, ...] = field(default=(), repr=False)


def expected_output(
    request: LLMJobRequest,
    script: Script | None = None,
    *,
    default_max_tokens: int | None = None,
) -> ExpectedOutput:
    """Predict what a simulated worker sends for ``request`` running ``script`` (when ``None``:
    :func:`default_script`, i.e. the default reply, or a JSON instance for a JSON
    ``response_format``). ``default_max_tokens`` stands for the model's default output limit,
    used when the request sets no ``max_tokens``."""
    steps: Script = script if script is not None else default_script(request)
    limit = request.max_tokens if isinstance(request.max_tokens, int) else default_max_tokens
    stop = request.stop if isinstance(request.stop, str | list) else None
    actions = compile_script(steps, max_tokens=limit, stop=stop)
    emits = [a for a in actions if isinstance(a, Emit)]
    calls: dict[int, list[str]] = {}
    for emit in emits:
        for delta in emit.tool_calls:
            entry = calls.setdefault(delta.index, ["", "", ""])
            if delta.id:
                entry[0] = delta.id
            if delta.function is not None:
                if delta.function.name:
                    entry[1] = delta.function.name
                entry[2] += delta.function.arguments or ""
    last = actions[-1] if actions else None
    return ExpectedOutput(
        content="".join(e.content or "" for e in emits),
        deltas=tuple(e.content for e in emits if e.content),
        tool_calls=tuple(
            WireToolCall(id=c[0], function=FunctionCall(name=c[1], arguments=c[2]))
            for _, c in sorted(calls.items())
        ),
        finish_reason=emits[-1].finish_reason if emits and emits[-1].finish_reason else None,
        prompt_tokens=count_prompt_tokens(request),
        completion_tokens=sum(1 for e in emits if e.counts),
        error=last if isinstance(last, Fail) else None,
        stalls=isinstance(last, Stall),
        actions=tuple(actions),
    )
