"""localnet hosted REST: /v1/chat/completions and /v1/creative-agent/tools/execute over TCP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio

from trio_sogni.localnet import (
    DEFAULT_MODEL,
    Fail,
    LocalNetwork,
    SimulatedWorker,
    Stall,
    Text,
    ToolCall,
    expected_output,
    open_local_network,
)
from trio_sogni.localnet._hosted._composition import COMPOSITION_TOOLS, composition_tool
from trio_sogni.localnet._jsonschema import check_schema, example, validate
from trio_sogni.protocol import (
    ChatMessage,
    JSONSchemaFormat,
    LLMJobRequest,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
)

MODEL = DEFAULT_MODEL


@pytest.fixture
async def http(net: LocalNetwork) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=net.rest_url, headers={"api-key": net.api_key}, timeout=30
    ) as client:
        yield client


def chat_body(text: str = "Hello there", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["code"], str)
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert body["message"] == error["message"]
    assert body["status"] == "error"
    return error


# -- completions --------------------------------------------------------------------------------


async def test_completion_returns_the_openai_object(
    net: LocalNetwork, http: httpx.AsyncClient
) -> None:
    response = await http.post("/v1/chat/completions", json=chat_body("Hello hosted world"))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = expected_output(
        LLMJobRequest(
            job_id="x",
            model=MODEL,
            messages=[ChatMessage(role="user", content="Hello hosted world")],
        )
    )
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": expected.content},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": expected.completion_tokens,
        "total_tokens": expected.prompt_tokens + expected.completion_tokens,
    }
    assert net.job_records[-1].outcome == "completed"


async def test_completion_honours_max_tokens_stop_and_fields(
    net: LocalNetwork, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        "/v1/chat/completions",
        json=chat_body(
            "one two three four five",
            max_tokens=3,
            temperature=0.2,
            token_type="spark",
            billingMode="tokens",
            task_profile="general",
            app_source="tests",
            chat_template_kwargs={"enable_thinking": False},
            safe_content_filter=True,
            stream=False,
            media_references=[],
        ),
        headers={"X-Sogni-Workload-Kind": "direct"},
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "Simulated reply to:"
    sent = net.job_requests[-1]
    assert sent.token_type == "spark"
    assert sent.billing_mode == "tokens"
    assert sent.task_profile == "general"
    assert sent.app_source == "tests"
    assert sent.safe_content_filter is True
    assert sent.workload_kind == "direct"


async def test_completion_returns_tool_calls() -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        return [ToolCall("get_weather", {"city": "Paris"}, id="call_w")]

    async with (
        open_local_network(script=script) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        response = await http.post(
            "/v1/chat/completions", json=chat_body(tools=tools, tool_choice="auto")
        )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


async def test_completion_is_billed_like_a_socket_job(net: LocalNetwork) -> None:
    net.add_account("payer", password="pw", balance=100)
    key = net.create_api_key("payer")
    before = net.balance("payer")
    async with httpx.AsyncClient(base_url=net.rest_url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json=chat_body("bill me"),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
    charged = before - net.balance("payer")
    quote = net.pricing.quote(
        usage["prompt_tokens"], usage["completion_tokens"], "sogni", model=MODEL
    )
    assert charged == quote.token > 0


async def test_completion_with_a_jwt(net: LocalNetwork) -> None:
    net.add_account("jwt-user", password="pw")
    pair = net.issue_tokens("jwt-user")
    async with httpx.AsyncClient(base_url=net.rest_url) as http:
        response = await http.post(
            "/v1/chat/completions", json=chat_body(), headers={"Authorization": pair.token}
        )
    assert response.status_code == 200, response.text


async def test_completion_error_shapes(net: LocalNetwork, http: httpx.AsyncClient) -> None:
    path = "/v1/chat/completions"
    async with httpx.AsyncClient(base_url=net.rest_url) as anonymous:
        assert_openai_error(await anonymous.post(path, json=chat_body()), 401, "invalid_api_key")
        assert_openai_error(
            await anonymous.post(path, json=chat_body(), headers={"Authorization": "Bearer nope"}),
            401,
            "invalid_api_key",
        )
    cases: list[tuple[Any, int, str]] = [
        (chat_body(stream="yes"), 400, "invalid_request"),
        (chat_body(stream_options={"include_usage": True}), 400, "invalid_request"),
        (chat_body(stream=True, stream_options={"other": 1}), 400, "invalid_request"),
        (chat_body(n=2), 400, "invalid_request"),
        (chat_body(max_tokens="many"), 400, "invalid_request"),
        (chat_body(max_tokens=10**9), 400, "invalid_request"),
        (chat_body(media_references=[{"url": "https://x"}]), 400, "invalid_request"),
        ({"messages": []}, 400, "invalid_request"),
        ([1, 2], 400, "invalid_request"),
        (chat_body(model="no-such-model"), 404, "model_not_found"),
    ]
    for body, status, code in cases:
        error = assert_openai_error(await http.post(path, json=body), status, code)
        if status == 400:
            assert error["type"] == "invalid_request_error"
    stream_error = (await http.post(path, json=chat_body(stream="yes"))).json()["error"]
    assert "stream" in stream_error["message"]
    bad_type = (await http.post(path, json=chat_body(max_tokens="many"))).json()["error"]
    assert "$.max_tokens" in bad_type["message"]
    not_json = await http.post(path, content=b"{", headers={"content-type": "application/json"})
    assert_openai_error(not_json, 400, "invalid_request")


async def test_completion_insufficient_balance_is_402(net: LocalNetwork) -> None:
    net.add_account("poor", password="pw", balance=0)
    key = net.create_api_key("poor")
    async with httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": key}) as http:
        response = await http.post("/v1/chat/completions", json=chat_body())
    error = assert_openai_error(response, 402, "insufficient_balance")
    assert error["type"] == "insufficient_balance"
    assert "sogni" in error["message"]
    assert key not in response.text


async def test_completion_without_a_worker_is_503() -> None:
    async with (
        open_local_network(models=["lonely"], workers=[SimulatedWorker(models=["other"])]) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        response = await http.post("/v1/chat/completions", json=chat_body(model="lonely"))
    error = assert_openai_error(response, 503, "model_unavailable")
    assert error["type"] == "model_unavailable"


async def test_job_failures_keep_their_tag_and_subscription_fields() -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        text = request.messages[-1].content
        if text == "deny":
            return [
                Fail(
                    error="subscription_unavailable",
                    message="Upgrade needed",
                    error_code="4081",
                    subscription_limit=True,
                    required_plans=("pro",),
                    feature="chat",
                )
            ]
        return [Text("partial"), Fail(error="worker_error", message="Simulated worker failure.")]

    async with (
        open_local_network(script=script) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        denied = await http.post("/v1/chat/completions", json=chat_body("deny"))
        failed = await http.post("/v1/chat/completions", json=chat_body("fail"))
    error = assert_openai_error(denied, 402, "4081")
    assert error["type"] == "subscription_unavailable"
    assert error["subscription"] == {
        "subscriptionLimit": True,
        "requiredPlans": ["pro"],
        "feature": "chat",
    }
    error = assert_openai_error(failed, 502, "worker_error")
    assert error["message"] == "Simulated worker failure."


async def test_worker_removed_mid_job_is_503() -> None:
    async with (
        open_local_network(script=lambda request: [Stall()]) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
        trio.open_nursery() as nursery,
    ):
        responses: list[httpx.Response] = []

        async def call() -> None:
            responses.append(await http.post("/v1/chat/completions", json=chat_body()))

        nursery.start_soon(call)
        await net.wait_until(lambda: net.statistics().running_jobs == 1)
        net.remove_worker(net.workers[0].name)
        await net.wait_until(lambda: len(net.job_records) == 1)
    assert_openai_error(responses[0], 503, "worker_disconnected")


async def test_stock_openai_package(net: LocalNetwork) -> None:
    openai = pytest.importorskip("openai")

    def create() -> Any:
        client = openai.OpenAI(base_url=net.rest_url + "/v1", api_key=net.api_key, max_retries=0)
        try:
            return client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Hi from openai"}],
                max_tokens=64,
            )
        finally:
            client.close()

    completion = await trio.to_thread.run_sync(create)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Simulated reply to: Hi from openai"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 6  # one per word

    def refused() -> Any:
        client = openai.OpenAI(base_url=net.rest_url + "/v1", api_key="wrong", max_retries=0)
        try:
            return client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}]
            )
        finally:
            client.close()

    with pytest.raises(openai.AuthenticationError) as caught:
        await trio.to_thread.run_sync(refused)
    assert caught.value.status_code == 401


# -- JSON response formats (the SimulatedWorker test double) -------------------------------------


async def test_simulated_worker_answers_json_schema_and_json_object(
    http: httpx.AsyncClient,
) -> None:
    schema = {
        "type": "object",
        "required": ["name", "count", "tags", "kind"],
        "properties": {
            "name": {"type": "string", "minLength": 3},
            "count": {"type": "integer", "minimum": 2},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["b", "a"]},
            "optional": {"type": "string"},
        },
        "additionalProperties": False,
    }
    response = await http.post(
        "/v1/chat/completions",
        json=chat_body(
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
        ),
    )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    value = json.loads(content)
    assert validate(value, schema) == []
    assert value == {
        "name": "Simulated name.",
        "count": 2,
        "tags": ["Simulated tags."] * 2,
        "kind": "b",
    }
    request = LLMJobRequest(
        job_id="x",
        model=MODEL,
        messages=[ChatMessage(role="user", content="Hello there")],
        response_format=ResponseFormatJSONSchema(
            json_schema=JSONSchemaFormat(name="t", schema=schema)
        ),
    )
    predicted = expected_output(request)
    assert predicted.content == content
    assert len(predicted.deltas) > 1  # streamed in word-sized chunks
    obj = await http.post(
        "/v1/chat/completions", json=chat_body("Hi", response_format={"type": "json_object"})
    )
    assert json.loads(obj.json()["choices"][0]["message"]["content"]) == {
        "reply": "Simulated reply to: Hi"
    }
    assert (
        expected_output(
            LLMJobRequest(
                job_id="y",
                model=MODEL,
                messages=[ChatMessage(role="user", content="Hi")],
                response_format=ResponseFormatJSONObject(),
            )
        ).content
        == obj.json()["choices"][0]["message"]["content"]
    )


def test_schema_subset() -> None:
    schema = {
        "type": "object",
        "required": ["a"],
        "additionalProperties": False,
        "properties": {
            "a": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
            "b": {"type": "string", "pattern": "^x", "maxLength": 3},
            "c": {"type": ["integer", "null"]},
        },
    }
    check_schema(schema)
    assert validate({"a": 1}, schema) == []
    assert validate({"a": 1.0, "c": None}, schema) == []
    assert validate({"a": 0, "b": "yyyy", "c": 1.5, "d": 1}, schema) == [
        "$.a: not greater than 0",
        "$.b: longer than 3 characters",
        "$.b: does not match '^x'",
        "$.c: expected integer or null, got number",
        "$: unexpected property 'd'",
    ]
    assert validate({"a": True}, schema) == ["$.a: expected number, got boolean"]
    assert validate([], schema) == ["$: expected object, got array"]
    assert example(schema) == {"a": 1}
    assert example({"type": "integer", "minimum": 0.5}) == 1
    assert example({"type": "string", "maxLength": 4}) == "Simu"
    with pytest.raises(ValueError, match="unsupported keyword 'anyOf'"):
        check_schema({"properties": {"x": {"anyOf": []}}})


# -- composition tools --------------------------------------------------------------------------

TOOL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "enhance_prompt": {
        "prompt": "a red fox in snow",
        "target_output": "image_prompt",
        "destination_model": "sdxl",
    },
    "compose_script": {"brief": "A 30 second ad for tea", "scene_count": 3},
    "compose_lyrics": {"prompt": "a song about trains", "duration_seconds": 120},
    "compose_instrumental": {"prompt": "calm piano"},
}


@pytest.mark.parametrize("tool", COMPOSITION_TOOLS)
async def test_composition_tool_returns_a_valid_result(
    net: LocalNetwork, http: httpx.AsyncClient, tool: str
) -> None:
    response = await http.post(
        "/v1/creative-agent/tools/execute",
        json={"tool": tool, "arguments": TOOL_ARGUMENTS[tool], "token_type": "sogni"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    data = body["data"]
    assert set(data) == {"toolCallId", "tool", "result", "message"}
    assert data["tool"] == tool
    assert data["message"] is None
    assert data["toolCallId"].startswith("call_")
    spec = composition_tool(tool)
    assert spec is not None
    assert validate(data["result"], spec.result_schema) == []
    sent = net.job_requests[-1]
    assert isinstance(sent.response_format, ResponseFormatJSONSchema)
    assert sent.response_format.json_schema.schema == dict(spec.result_schema)
    assert sent.messages[0].role == "system"
    assert spec.description in str(sent.messages[0].content)
    assert json.loads(str(sent.messages[1].content)) == TOOL_ARGUMENTS[tool]
    assert net.job_records[-1].outcome == "completed"


async def test_tool_is_billed(net: LocalNetwork) -> None:
    net.add_account("toolpayer", password="pw", balance=100)
    key = net.create_api_key("toolpayer")
    async with httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": key}) as http:
        response = await http.post(
            "/v1/creative-agent/tools/execute",
            json={"tool": "compose_lyrics", "arguments": {"prompt": "x"}},
        )
    assert response.status_code == 200, response.text
    assert net.balance("toolpayer") < Decimal(100)


async def test_tool_errors(net: LocalNetwork, http: httpx.AsyncClient) -> None:
    path = "/v1/creative-agent/tools/execute"
    async with httpx.AsyncClient(base_url=net.rest_url) as anonymous:
        assert_openai_error(
            await anonymous.post(path, json={"tool": "compose_lyrics", "arguments": {}}),
            401,
            "invalid_api_key",
        )
    assert_openai_error(
        await http.post(path, json={"tool": "generate_image", "arguments": {}}),
        404,
        "tool_not_found",
    )
    cases: list[dict[str, Any]] = [
        {"tool": "compose_lyrics", "arguments": {}},
        {"tool": "compose_lyrics", "arguments": {"prompt": 3}},
        {"tool": "compose_lyrics", "arguments": {"prompt": "x", "duration_seconds": 5}},
        {"tool": "compose_lyrics", "arguments": {"prompt": "x", "bogus": 1}},
        {"tool": "enhance_prompt", "arguments": {"prompt": "x", "target_output": "poem"}},
        {"tool": "compose_lyrics", "arguments": "prompt"},
        {"tool": "compose_lyrics", "arguments": {"prompt": "x"}, "extra": 1},
        {"arguments": {"prompt": "x"}},
    ]
    for body in cases:
        assert_openai_error(await http.post(path, json=body), 400, "invalid_request")
    missing = (await http.post(path, json=cases[0])).json()["error"]["message"]
    assert "missing required property 'prompt'" in missing


async def test_tool_output_that_breaks_the_schema_is_502() -> None:
    def script(request: LLMJobRequest) -> list[Any] | None:
        text = request.messages[-1].content
        if text and "broken" in str(text):
            return [Text("not json at all")]
        if text and "wrong" in str(text):
            return [Text('{"title": "t"}')]
        return None

    async with (
        open_local_network(script=script) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        path = "/v1/creative-agent/tools/execute"
        broken = await http.post(
            path, json={"tool": "compose_instrumental", "arguments": {"prompt": "broken"}}
        )
        wrong = await http.post(
            path, json={"tool": "compose_instrumental", "arguments": {"prompt": "wrong"}}
        )
    error = assert_openai_error(broken, 502, "tool_output_invalid")
    assert "not valid JSON" in error["message"]
    error = assert_openai_error(wrong, 502, "tool_output_invalid")
    assert "missing required property 'music_prompt'" in error["message"]


# -- the official Python SDK (unmodified, asyncio in a worker thread) ---------------------------


async def _official_sdk_calls(rest_url: str, socket_url: str, api_key: str) -> dict[str, Any]:
    from sogni_client import SogniClient

    client = await SogniClient.create(
        app_id="hosted-sdk-test",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        await client.chat.wait_for_models()
        messages = [{"role": "user", "content": "Hello hosted SDK"}]
        estimate = await client.chat.estimate_cost(model=MODEL, messages=messages, max_tokens=10)
        hosted = await client.chat.hosted.create(model=MODEL, messages=messages)
        tool = await client.chat.hosted.execute_tool(
            tool="compose_lyrics", arguments={"prompt": "trains"}
        )
        try:
            await client.chat.hosted.create(model=MODEL, messages=messages, max_tokens=10**9)
        except Exception as exc:
            error: Any = exc
        else:  # pragma: no cover - the request must fail
            raise AssertionError("expected a ChatJobError")
        return {"estimate": estimate, "hosted": hosted, "tool": tool, "error": error}
    finally:
        await client.aclose()


async def test_official_python_sdk_hosted_and_estimate() -> None:
    import asyncio

    with trio.fail_after(60):
        async with open_local_network(rebind_grace=0) as net:
            out = await trio.to_thread.run_sync(
                asyncio.run, _official_sdk_calls(net.rest_url, net.socket_url, net.api_key)
            )
            await net.wait_until(lambda: net.connected_sockets == 0)
            pricing = net.pricing
    estimate = out["estimate"]
    assert estimate["outputTokens"] == 10
    quote = pricing.quote(estimate["inputTokens"], 10, "sogni", model=MODEL)
    assert Decimal(str(estimate["costInToken"])) == quote.token
    assert (
        out["hosted"]["choices"][0]["message"]["content"] == "Simulated reply to: Hello hosted SDK"
    )
    assert out["tool"]["status"] == "success"
    spec = composition_tool("compose_lyrics")
    assert spec is not None
    assert validate(out["tool"]["data"]["result"], spec.result_schema) == []
    error = out["error"]
    assert type(error).__name__ == "ChatJobError"
    assert error.status == 400
    assert error.code == "invalid_request"
