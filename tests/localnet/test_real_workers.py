"""The real workers' pure parts and the bridge against a mock upstream (no model needed).

The tests that run a real model (SmolLM2 through llama.cpp, and the bridge against
``python -m llama_cpp.server``) are in tests/e2e/ (``nox -s e2e``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from trio_sogni.localnet import ModelSpec, OpenAIBridgeWorker, SimulatedWorker, open_local_network
from trio_sogni.localnet._workers._bridge import (
    UpstreamError,
    chunk_deltas,
    parse_sse_data,
    upstream_body,
)
from trio_sogni.localnet._workers._llama import (
    ParsedToolCall,
    StopMatcher,
    ToolCallParser,
    chat_messages,
    parse_tool_calls,
    tool_call_deltas,
    tool_call_schema,
)
from trio_sogni.protocol import (
    AbortJob,
    ChatCompletionChunk,
    ChatMessage,
    FunctionCall,
    ImageURL,
    ImageURLPart,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ResponseFormatJSONObject,
    SwarmLLMModels,
    TextPart,
    ToolCall,
    ToolChoiceFunction,
    ToolChoiceFunctionName,
    ToolDefinition,
)
from trio_sogni.protocol._openai import FunctionDefinition

WEATHER = ToolDefinition(
    function=FunctionDefinition(
        name="get_weather",
        description="Weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
)

# --- stop sequences -------------------------------------------------------------------------------


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_it() -> None:
    stops = StopMatcher(["END", "\n\n"])
    assert stops.feed("Hello E") == "Hello "
    assert stops.feed("N") == ""
    assert stops.feed("Dless") == ""
    assert stops.stopped
    assert stops.flush() == ""


def test_stop_matcher_releases_a_false_alarm_and_flushes() -> None:
    stops = StopMatcher(["END"])
    assert stops.feed("a E") == "a "
    assert stops.feed("x") == "Ex"
    assert stops.feed(" EN") == " "
    assert stops.flush() == "EN"
    assert not stops.stopped


def test_stop_matcher_without_stops_passes_everything() -> None:
    stops = StopMatcher([""])
    assert stops.feed("abc") == "abc"
    assert stops.flush() == ""


# --- tool calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '  {"name": "get_weather", "parameters": {"city": "Paris"}}\n',
        '```json\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n```',
        '<tool_call>{"type": "function", "function": {"name": "get_weather", '
        '"arguments": {"city": "Paris"}}}</tool_call>',
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    ],
)
def test_parse_tool_calls_accepts_the_usual_shapes(text: str) -> None:
    assert parse_tool_calls(text, {"get_weather"}) == [
        ParsedToolCall("get_weather", '{"city": "Paris"}')
    ]


def test_parse_tool_calls_reads_several_calls() -> None:
    text = '{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {"x": 1}}'
    assert parse_tool_calls(text, {"a", "b"}) == [
        ParsedToolCall("a", "{}"),
        ParsedToolCall("b", '{"x": 1}'),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "It is sunny.",
        '{"name": "unknown_tool", "arguments": {}}',
        '{"name": "get_weather", "arguments": [1]}',
        '{"name": "get_weather", "arguments": "not json"}',
        '{"name": "get_weather", "arguments": {}} and some prose',
        '{"answer": 42}',
        "42",
    ],
)
def test_parse_tool_calls_rejects_anything_else(text: str) -> None:
    assert parse_tool_calls(text, {"get_weather"}) == []


def test_tool_call_parser_streams_prose_at_once() -> None:
    parser = ToolCallParser({"get_weather"})
    assert parser.feed("  ") == ""
    assert parser.feed("It") == "  It"
    assert parser.feed(" is sunny") == " is sunny"
    assert parser.finish() == ("", [])


def test_tool_call_parser_holds_json_and_returns_calls() -> None:
    parser = ToolCallParser({"get_weather"})
    for piece in ['{"name": "get_', 'weather", "arguments": ', '{"city": "Oslo"}}']:
        assert parser.feed(piece) == ""
    assert parser.finish() == ("", [ParsedToolCall("get_weather", '{"city": "Oslo"}')])


def test_tool_call_parser_gives_back_json_that_is_not_a_call() -> None:
    parser = ToolCallParser({"get_weather"})
    assert parser.feed('{"a": 1}') == ""
    assert parser.finish() == ('{"a": 1}', [])
    code = ToolCallParser({"get_weather"})
    assert code.feed("`") == ""
    assert code.feed("``py\nprint()\n```") == ""
    assert code.finish() == ("```py\nprint()\n```", [])


def test_tool_call_deltas_follow_the_openai_shape() -> None:
    arguments = json.dumps({"city": "San Francisco, California, USA"})
    chunks = tool_call_deltas([ParsedToolCall("get_weather", arguments), ParsedToolCall("b", "")])
    first = chunks[0][0]
    assert first.index == 0
    assert first.type == "function"
    assert first.id is not None
    assert first.id.startswith("call_")
    assert first.function is not None
    assert first.function.name == "get_weather"
    later = [c[0] for c in chunks[1:] if c[0].index == 0]
    assert later
    assert all(d.id is None and d.function and d.function.name is None for d in later)
    joined = "".join(
        d.function.arguments or "" for c in chunks for d in c if d.index == 0 and d.function
    )
    assert joined == arguments
    assert chunks[-1][0].index == 1
    assert chunks[-1][0].function == chunks[-1][0].function
    assert chunks[-1][0].function is not None
    assert chunks[-1][0].function.arguments == ""


# --- prompts --------------------------------------------------------------------------------------


def _request(**fields: Any) -> LLMJobRequest:
    messages = fields.pop("messages", [ChatMessage(role="user", content="Weather in Oslo?")])
    fields.setdefault("job_id", "j")
    fields.setdefault("model", "m")
    return LLMJobRequest(messages=messages, **fields)


def test_chat_messages_put_the_tools_in_the_system_message() -> None:
    request = _request(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content=[TextPart(text="Weather "), TextPart(text="here?")]),
            ChatMessage(
                role="assistant",
                tool_calls=[
                    ToolCall(
                        id="c1", function=FunctionCall(name="get_weather", arguments='{"city":"X"}')
                    )
                ],
            ),
            ChatMessage(role="tool", content="sunny", tool_call_id="c1", name="get_weather"),
        ],
        tools=[WEATHER],
        tool_choice="required",
    )
    messages = chat_messages(request, template="{{ messages }}")
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("Be brief.\n\nYou can call these tools")
    assert '"get_weather"' in messages[0]["content"]
    assert "You must call the tool 'any of them'" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "Weather here?"}
    assert json.loads(messages[2]["content"]) == {"name": "get_weather", "arguments": {"city": "X"}}
    assert messages[3] == {
        "role": "tool",
        "content": "sunny",
        "name": "get_weather",
        "tool_call_id": "c1",
    }


def test_chat_messages_leave_tools_to_a_template_that_renders_them() -> None:
    request = _request(tools=[WEATHER])
    messages = chat_messages(request, template="{% for t in tools %}{{ t }}{% endfor %}")
    assert messages == [{"role": "user", "content": "Weather in Oslo?"}]
    none = chat_messages(_request(tools=[WEATHER], tool_choice="none"), template="")
    assert none == [{"role": "user", "content": "Weather in Oslo?"}]
    auto = chat_messages(_request(tools=[WEATHER]), template="")
    assert auto[0]["role"] == "system"
    assert "only when it helps" in auto[0]["content"]


def test_chat_messages_refuse_images() -> None:
    image = ImageURLPart(image_url=ImageURL(url="data:image/png;base64,AA=="))
    request = _request(messages=[ChatMessage(role="user", content=[image])])
    with pytest.raises(ValueError, match="image"):
        chat_messages(request, template="")


def test_tool_call_schema_forces_the_named_tool() -> None:
    other = ToolDefinition(function=FunctionDefinition(name="other"))
    named = ToolChoiceFunction(function=ToolChoiceFunctionName(name="get_weather"))
    schema = tool_call_schema(_request(tools=[WEATHER, other], tool_choice=named))
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER.function.parameters
    both = tool_call_schema(_request(tools=[WEATHER, other], tool_choice="required"))
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "other"]
    assert both["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    missing = ToolChoiceFunction(function=ToolChoiceFunctionName(name="nope"))
    with pytest.raises(ValueError, match="nope"):
        tool_call_schema(_request(tools=[WEATHER], tool_choice=missing))


# --- bridge translation ---------------------------------------------------------------------------


def test_upstream_body_passes_every_set_field() -> None:
    request = _request(
        max_tokens=7,
        temperature=0.1,
        top_p=0.5,
        top_k=3,
        min_p=0.2,
        repetition_penalty=1.1,
        frequency_penalty=0.3,
        presence_penalty=0.4,
        stop=["x"],
        tools=[WEATHER],
        tool_choice="auto",
        response_format=ResponseFormatJSONObject(),
        chat_template_kwargs={"enable_thinking": False},
        token_type="spark",
    )
    body = upstream_body(request, "up-model")
    assert body == {
        "model": "up-model",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 7,
        "temperature": 0.1,
        "top_p": 0.5,
        "top_k": 3,
        "min_p": 0.2,
        "repetition_penalty": 1.1,
        "repeat_penalty": 1.1,
        "frequency_penalty": 0.3,
        "presence_penalty": 0.4,
        "stop": ["x"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER.function.parameters,
                },
            }
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "chat_template_kwargs": {"enable_thinking": False},
    }
    assert set(upstream_body(_request(), "m")) == {"model", "messages", "stream", "stream_options"}


def test_parse_sse_data_reads_content_tool_calls_finish_and_usage() -> None:
    assert parse_sse_data("[DONE]") is None
    chunk = parse_sse_data(
        json.dumps(
            {
                "choices": [
                    {
                        "delta": {
                            "role": "assistant",
                            "content": "Hi",
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "c",
                                    "type": "function",
                                    "function": {"name": "f", "arguments": "{"},
                                },
                                "junk",
                                {"function": {"arguments": "}"}},
                            ],
                        },
                        "finish_reason": None,
                    }
                ]
            }
        )
    )
    assert chunk is not None
    assert (chunk.content, chunk.role, chunk.finish_reason, chunk.usage) == (
        "Hi",
        "assistant",
        None,
        None,
    )
    assert [(d.index, d.id, d.function and d.function.name) for d in chunk.tool_calls] == [
        (0, "c", "f"),
        (2, None, None),
    ]
    end = parse_sse_data('{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}')
    assert end is not None
    assert end.usage == (5, 2)
    assert end.content is None
    stop = parse_sse_data('{"choices": [{"delta": {}, "finish_reason": "length"}]}')
    assert stop is not None
    assert stop.finish_reason == "length"
    assert chunk_deltas(None) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"error": {"message": "boom"}}', "boom"),
        ('{"error": "plain"}', "plain"),
        ("not json", "malformed"),
        ("[1]", "malformed"),
    ],
)
def test_parse_sse_data_raises_upstream_errors(data: str, message: str) -> None:
    with pytest.raises(UpstreamError, match=message):
        parse_sse_data(data)


def test_bridge_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIBridgeWorker("ftp://127.0.0.1/v1")
    with pytest.raises(ValueError, match="capacity"):
        OpenAIBridgeWorker("http://127.0.0.1:1/v1", capacity=0)
    worker = OpenAIBridgeWorker("http://127.0.0.1:1/v1/", api_key="sekrit")
    assert "sekrit" not in repr(worker)
    assert worker.upstream == "http://127.0.0.1:1/v1"


# --- the bridge in a network, against a mock upstream ---------------------------------------------


def _sse(*events: object) -> bytes:
    lines = [f"data: {json.dumps(e) if not isinstance(e, str) else e}\n\n" for e in events]
    return ("\n: a comment\n" + "".join(lines)).encode()


def _delta(**delta: Any) -> dict[str, Any]:
    finish = delta.pop("finish_reason", None)
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class Upstream:
    """A mock OpenAI-compatible server: records requests, answers with ``reply(request)``."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "up-a"}, "junk"]})
        return self.reply(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


async def _job(wire_for: Callable[..., Any], net: Any, request: LLMJobRequest) -> list[Any]:
    wire = wire_for(net)
    async with wire.connect() as ws:
        await wire.send(ws, request)
        return await wire.collect(ws, request.job_id)


async def test_bridge_streams_content_tool_calls_and_upstream_usage(
    wire_for: Callable[..., Any],
) -> None:
    body = _sse(
        _delta(role="assistant", content="Hel"),
        _delta(content="lo"),
        _delta(
            tool_calls=[
                {
                    "index": 0,
                    "id": "c",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        ),
        _delta(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}]),
        _delta(finish_reason="tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}},
        "[DONE]",
    )
    upstream = Upstream(lambda request: httpx.Response(200, content=body))
    worker = await OpenAIBridgeWorker.connect(
        "http://127.0.0.1:9/v1", api_key="k1", transport=upstream.transport
    )
    assert worker.models == ("up-a",)
    with trio.fail_after(10):
        async with open_local_network(models=["up-a"], workers=[worker]) as net:
            request = _request(model="up-a", temperature=0.5, max_tokens=9)
            frames = await _job(wire_for, net, request)
    chunks = [f for f in frames if isinstance(f, ChatCompletionChunk)]
    assert "".join(c.content or "" for c in chunks) == "Hello"
    assert chunks[0].role == "assistant"
    calls = [d for c in chunks for d in c.tool_calls or []]
    assert [(d.index, d.id) for d in calls] == [(0, "c"), (0, None)]
    assert chunks[-1].finish_reason == "tool_calls"
    result = frames[-1]
    assert isinstance(result, LLMJobResult)
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 4)
    post = upstream.requests[-1]
    assert post.url.path == "/v1/chat/completions"
    assert post.headers["authorization"] == "Bearer k1"
    sent = json.loads(post.content)
    assert (sent["model"], sent["temperature"], sent["max_tokens"], sent["stream"]) == (
        "up-a",
        0.5,
        9,
        True,
    )


async def test_bridge_passes_upstream_errors_through(wire_for: Callable[..., Any]) -> None:
    replies = iter(
        [
            httpx.Response(400, json={"error": {"message": "bad temperature"}}),
            httpx.Response(503, text="overloaded"),
            httpx.Response(200, content=_sse(_delta(content="a"), {"error": {"message": "oom"}})),
        ]
    )
    upstream = Upstream(lambda request: next(replies))
    worker = OpenAIBridgeWorker(
        "http://127.0.0.1:9/v1", upstream_model="real-name", transport=upstream.transport
    )
    errors: list[LLMJobError] = []
    with trio.fail_after(10):
        async with open_local_network(models=["m"], workers=[worker]) as net:
            for i in range(3):
                frames = await _job(wire_for, net, _request(job_id=f"e{i}"))
                assert isinstance(frames[-1], LLMJobError)
                errors.append(frames[-1])
    assert [(e.error, e.error_code) for e in errors] == [
        ("upstream_error", "400"),
        ("upstream_error", "503"),
        ("upstream_error", None),
    ]
    assert "bad temperature" in (errors[0].error_message or "")
    assert "overloaded" in (errors[1].error_message or "")
    assert errors[2].error_message == "oom"
    assert json.loads(upstream.requests[0].content)["model"] == "real-name"


async def test_bridge_reports_an_unreachable_upstream(wire_for: Callable[..., Any]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    worker = OpenAIBridgeWorker("http://127.0.0.1:9/v1", transport=httpx.MockTransport(refuse))
    with pytest.raises(UpstreamError, match="cannot reach"):
        await OpenAIBridgeWorker.connect(
            "http://127.0.0.1:9/v1", transport=httpx.MockTransport(refuse)
        )
    with trio.fail_after(10):
        async with open_local_network(models=["m"], workers=[worker]) as net:
            frames = await _job(wire_for, net, _request())
    assert isinstance(frames[-1], LLMJobError)
    assert frames[-1].error == "upstream_error"
    assert "refused" in (frames[-1].error_message or "")


async def test_bridge_lists_nothing_from_an_upstream_without_a_model_list() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"unexpected": True})
        return httpx.Response(404)

    transport = httpx.MockTransport(answer)
    worker = await OpenAIBridgeWorker.connect("http://127.0.0.1:9/v1", transport=transport)
    assert worker.models is None
    named = await OpenAIBridgeWorker.connect(
        "http://127.0.0.1:9/v1", upstream_model="x", transport=transport
    )
    assert named.models == ("x",)

    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "no key"})

    with pytest.raises(UpstreamError, match="no key"):
        await OpenAIBridgeWorker.connect(
            "http://127.0.0.1:9/v1", transport=httpx.MockTransport(fail)
        )


async def test_bridge_abort_closes_the_upstream_stream(wire_for: Callable[..., Any]) -> None:
    first_sent = trio.Event()
    closed = trio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield _sse(_delta(content="tick"))
            first_sent.set()
            await trio.sleep_forever()
        finally:
            closed.set()

    upstream = Upstream(lambda request: httpx.Response(200, content=endless()))
    worker = OpenAIBridgeWorker("http://127.0.0.1:9/v1", transport=upstream.transport)
    with trio.fail_after(10):
        async with open_local_network(models=["m"], workers=[worker]) as net:
            wire = wire_for(net)
            async with wire.connect() as ws:
                await wire.send(ws, _request(job_id="ab"))
                while not isinstance(await wire.recv(ws), ChatCompletionChunk):
                    pass
                await wire.send(ws, AbortJob(job_id="ab"))
                await closed.wait()
                await net.wait_until(lambda: bool(net.job_records))
    assert first_sent.is_set()
    assert net.job_records[-1].outcome == "aborted"


# --- model specs from workers, and the CLI without the extra --------------------------------------


class _SpecWorker(SimulatedWorker):
    model_specs = (
        ModelSpec(
            name="tiny", max_context_length=100, max_output_tokens=50, default_output_tokens=50
        ),
    )


async def test_a_worker_advertises_its_model_spec(wire_for: Callable[..., Any]) -> None:
    with trio.fail_after(10):
        async with open_local_network(
            models=["tiny"], workers=[_SpecWorker(models=["tiny"])]
        ) as net:
            wire = wire_for(net)
            async with wire.connect(handshake=False) as ws:
                await wire.recv(ws)
                models = await wire.recv(ws)
    assert isinstance(models, SwarmLLMModels)
    info = models.models["tiny"]
    assert info.max_context_length == 100
    assert info.max_output_tokens is not None
    assert info.max_output_tokens.max == 50


async def test_cli_llama_without_the_local_extra_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "import argparse, trio\n"
        "from trio_sogni._cli._localnet import add_serve_arguments, serve_from_args\n"
        "parser = argparse.ArgumentParser(); add_serve_arguments(parser)\n"
        "trio.run(serve_from_args, parser.parse_args())\n"
    )
    model = __file__  # any existing file: the import fails before the model is read
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-c", code, "--llama", "--model-path", model],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"pip install 'trio-sogni[local]'" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_cli_upstream_that_cannot_be_reached_is_a_clear_error() -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-c", _CLI, "--upstream", "http://127.0.0.1:9/v1"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert b"--upstream: cannot reach the upstream" in result.stderr
    assert b"Traceback" not in result.stderr


_CLI = (
    "import argparse, trio\n"
    "from trio_sogni._cli._localnet import add_serve_arguments, serve_from_args\n"
    "parser = argparse.ArgumentParser(); add_serve_arguments(parser)\n"
    "trio.run(serve_from_args, parser.parse_args())\n"
)
