"""Scripts for the simulated workers, written as JSON: rules that match a request and the steps
to answer it with (``trio-sogni localnet serve --script FILE``; :func:`load_script`).

The format (documented in docs/localnet.md, "Scripted replies")::

    {"rules": [
      {"match": {"last_tool": {"contains": "\"success\": false"}},
       "steps": [{"text": "Sorry, the tool failed."}]},
      {"match": {"last_role": "tool"}, "steps": [{"text": "It is sunny in Paris."}]},
      {"match": {"last_user": {"contains": "weather"}, "tool": "get_weather"},
       "steps": [{"text": "Let me check."},
                 {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"match": {"model": "test-model"}, "steps": [{"pause": 0.5}, {"fail": {"error": "x"}}]}
    ]}

The first rule whose every condition holds gives the job's steps; a request no rule matches
gets the default reply. Everything is checked when the file is loaded (unknown keys, types,
regular expressions), with the rule and step named in the error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

from ...protocol import JSONDecoder, LLMJobRequest
from ._script import (
    Delta,
    DropConnection,
    Fail,
    Finish,
    Pause,
    Script,
    ScriptFunction,
    Stall,
    Step,
    Text,
    ToolCall,
    _message_text,  # pyright: ignore[reportPrivateUsage]
)

__all__ = ["MAX_SCRIPT_FILE_BYTES", "ScriptFileError", "load_script", "parse_script"]

MAX_SCRIPT_FILE_BYTES: Final = 16 * 1024 * 1024
"""A script file larger than this is refused (it is read whole)."""


class ScriptFileError(ValueError):
    """A script file that cannot be used; the message names the file and the rule or step."""


class _TextMatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    equals: str | None = None
    contains: str | None = None
    regex: str | None = None


class _Match(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    last_user: _TextMatch | None = None
    last_tool: _TextMatch | None = None
    last_role: str | None = None
    tool: str | None = None
    model: str | None = None


class _ToolCallStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None
    pieces: int = 3


class _FailStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    error: str = "worker_error"
    message: str = "Simulated worker failure."
    error_code: str | None = None


class _DropStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reset: bool = False


class _DeltaStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    content: str | None = None


class _Step(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    text: str | None = None
    delta: _DeltaStep | None = None
    tool_call: _ToolCallStep | None = None
    fail: _FailStep | None = None
    stall: bool | None = None
    drop_connection: _DropStep | None = None
    pause: float | None = None
    finish: str | None = None


class _Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    steps: list[_Step]
    match: _Match = _Match()


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    rules: list[_Rule]


_decoder: Final = JSONDecoder(_File)

_Predicate = Callable[[LLMJobRequest], bool]


def _step(raw: _Step, where: str) -> Step:
    given = [name for name in _Step.__struct_fields__ if getattr(raw, name) is not None]
    if len(given) != 1:
        raise ScriptFileError(f"{where}: a step has exactly one key, got {given or 'none'}")
    if raw.text is not None:
        return Text(raw.text)
    if raw.delta is not None:
        return Delta(content=raw.delta.content)
    if raw.tool_call is not None:
        call = raw.tool_call
        if not call.name or call.pieces < 1:
            raise ScriptFileError(f"{where}: tool_call needs a name and pieces >= 1")
        return ToolCall(call.name, call.arguments, call.id, call.pieces)
    if raw.fail is not None:
        failure = raw.fail
        return Fail(error=failure.error, message=failure.message, error_code=failure.error_code)
    if raw.stall is not None:
        if not raw.stall:
            raise ScriptFileError(f"{where}: stall must be true")
        return Stall()
    if raw.drop_connection is not None:
        return DropConnection(reset=raw.drop_connection.reset)
    if raw.pause is not None:
        if not 0 <= raw.pause <= 3600:
            raise ScriptFileError(f"{where}: pause must be 0 to 3600 seconds")
        return Pause(raw.pause)
    assert raw.finish is not None
    return Finish(raw.finish)


def _text_predicate(spec: _TextMatch, where: str, key: str) -> Callable[[str], bool]:
    given = [name for name in ("equals", "contains", "regex") if getattr(spec, name) is not None]
    if len(given) != 1:
        raise ScriptFileError(f"{where}: {key} has exactly one of equals, contains, regex")
    if spec.equals is not None:
        equals = spec.equals
        return lambda text: text == equals
    if spec.contains is not None:
        contains = spec.contains
        return lambda text: contains in text
    assert spec.regex is not None
    try:
        pattern = re.compile(spec.regex)
    except re.error as exc:
        raise ScriptFileError(f"{where}: bad regex: {exc}") from None
    return lambda text: pattern.search(text) is not None


def _last_user(request: LLMJobRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return _message_text(message)
    return ""


def _last_tool(request: LLMJobRequest) -> str | None:
    for message in reversed(request.messages):
        if message.role == "tool":
            return _message_text(message)
    return None


def _tool_names(request: LLMJobRequest) -> set[str]:
    return {tool.function.name for tool in request.tools or ()}


def _predicate(match: _Match, where: str) -> _Predicate:
    checks: list[_Predicate] = []
    if match.last_user is not None:
        text = _text_predicate(match.last_user, where, "last_user")
        checks.append(lambda request: text(_last_user(request)))
    if match.last_tool is not None:
        result = _text_predicate(match.last_tool, where, "last_tool")

        def tool_result(request: LLMJobRequest) -> bool:
            text = _last_tool(request)
            return text is not None and result(text)

        checks.append(tool_result)
    if match.last_role is not None:
        role = match.last_role
        checks.append(lambda request: bool(request.messages) and request.messages[-1].role == role)
    if match.tool is not None:
        tool = match.tool
        checks.append(lambda request: tool in _tool_names(request))
    if match.model is not None:
        model = match.model
        checks.append(lambda request: request.model == model)
    return lambda request: all(check(request) for check in checks)


def parse_script(data: bytes | str, *, source: str = "<script>") -> ScriptFunction:
    """The script function of a JSON script (see the module docstring).

    Raises:
        ScriptFileError: invalid JSON, an unknown key, a wrong type, a step with not exactly one
            key, a bad regular expression; the message says where.
    """
    try:
        parsed = _decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise ScriptFileError(f"{source}: {exc}") from None
    rules: list[tuple[_Predicate, Script]] = []
    for i, rule in enumerate(parsed.rules):
        where = f"{source}: rules[{i}]"
        steps = [_step(step, f"{where}.steps[{j}]") for j, step in enumerate(rule.steps)]
        rules.append((_predicate(rule.match, where), tuple(steps)))

    def script(request: LLMJobRequest) -> Script | None:
        for matches, steps in rules:
            if matches(request):
                return steps
        return None

    return script


def load_script(path: str | Path) -> ScriptFunction:
    """The script function of the JSON script file at ``path`` (read once, now).

    Raises:
        ScriptFileError: the file cannot be read, is larger than `MAX_SCRIPT_FILE_BYTES`, or is
            not a valid script (see `parse_script`).
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SCRIPT_FILE_BYTES + 1)
    except OSError as exc:
        raise ScriptFileError(f"{file}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_SCRIPT_FILE_BYTES:
        raise ScriptFileError(f"{file}: larger than {MAX_SCRIPT_FILE_BYTES} bytes")
    return parse_script(data, source=str(file))
