"""localnet hosted creative tools: ``sogni_tools`` injection (socket, hosted, runs) and
``sogni_tool_execution`` on ``/v1/chat/completions`` (non-stream and SSE): hosted media tool
calls run as real media projects on a SimulatedMediaWorker TEST DOUBLE, in virtual time."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import trio
import trio.testing
from helpers import InMemoryHTTP, client_in_memory
from mediadoubles import media_socket, recv
from PIL import Image
from projectnet import IMAGE_MODEL, simulated
from rawsocket import send

from trio_sogni.localnet import (
    DEFAULT_MODEL,
    LocalNetwork,
    Pricing,
    ScriptFileError,
    ScriptFunction,
    Text,
    ToolCall,
    open_local_network,
    parse_script,
)
from trio_sogni.localnet._creative._execute import HOSTED_TOOLS_APP_ID
from trio_sogni.localnet._jobs._hostedtools import (
    MEDIA_TOOLS,
    creative_tool_definitions,
    inject_creative_tools,
)
from trio_sogni.protocol import ChatMessage, LLMJobRequest, LLMJobResult, ToolDefinition

HOSTED = {tool["function"]["name"] for tool in creative_tool_definitions()}


@asynccontextmanager
async def creative_net(
    script: ScriptFunction,
    *,
    media_worker: bool = True,
    seconds_per_step: float = 0.5,
    **options: Any,
) -> AsyncIterator[tuple[LocalNetwork, httpx.AsyncClient]]:
    """A localnet (no listener, virtual time) with ``script`` for its chat worker, free LLM
    jobs, a SimulatedMediaWorker TEST DOUBLE (unless ``media_worker`` is false) and an httpx
    client on its in-memory connections."""
    options.setdefault("pricing", Pricing(usd_per_million_tokens=Decimal(0)))
    async with open_local_network(listen=False, script=script, **options) as net:
        net._media_storage.offload_io = False
        if media_worker:
            net._projects.add_worker(simulated("painter", seconds_per_step=seconds_per_step))
        async with httpx.AsyncClient(
            transport=InMemoryHTTP(net),
            base_url="http://localnet.in-memory",
            headers={"api-key": net.api_key},
        ) as http:
            yield net, http


def seen_tools(requests: list[LLMJobRequest]) -> ScriptFunction:
    """A script recording each request the worker sees, answering ``ok``."""

    def script(request: LLMJobRequest) -> list[Any]:
        requests.append(request)
        return [Text("ok")]

    return script


def draw_then_answer(
    arguments: dict[str, Any], text: str = "Here is your picture."
) -> ScriptFunction:
    """Call generate_image with ``arguments`` first; once a tool result is in the
    conversation, answer ``text`` followed by the tool message's content."""

    def script(request: LLMJobRequest) -> list[Any]:
        tools = [m for m in request.messages if m.role == "tool"]
        if tools:
            return [Text(f"{text} {tools[-1].content}")]
        return [ToolCall("generate_image", arguments, id="call_img")]

    return script


def body(text: str = "Draw a red fox", **fields: Any) -> dict[str, Any]:
    return {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": text}],
        "sogni_tools": "creative-tools",
        "sogni_tool_execution": True,
        **fields,
    }


async def download(http: httpx.AsyncClient, url: str) -> bytes:
    """GET a signed result URL through localnet's REST (any host: the transport is in-memory)."""
    target = httpx.URL(url)
    response = await http.get(target.raw_path.decode(), headers={"api-key": ""})
    assert response.status_code == 200, response.text
    return response.content


# -- definitions and injection --------------------------------------------------------------------


def test_the_shipped_definitions_are_the_manifests() -> None:
    names = [tool["function"]["name"] for tool in creative_tool_definitions()]
    assert set(MEDIA_TOOLS) <= set(names)
    assert "enhance_prompt" in names
    for tool in creative_tool_definitions():
        assert tool["type"] == "function"
        assert tool["function"]["description"]
        assert tool["function"]["parameters"]["type"] == "object"


def test_injection_keeps_the_callers_tool_on_a_name_clash_and_refuses_bad_values() -> None:
    mine = {
        "type": "function",
        "function": {"name": "generate_image", "description": "mine", "parameters": {}},
    }
    import msgspec

    request = LLMJobRequest(
        job_id="J",
        model=DEFAULT_MODEL,
        messages=[ChatMessage(role="user", content="hi")],
        tools=[msgspec.convert(mine, ToolDefinition)],
        sogni_tools=" RICH ",
    )
    injected = inject_creative_tools(request)
    assert isinstance(injected, LLMJobRequest)
    assert isinstance(injected.tools, list)
    names = [t.function.name for t in injected.tools]
    assert names.count("generate_image") == 1
    assert injected.tools[0].function.description == "mine"
    assert set(names) == HOSTED
    off = msgspec.structs.replace(request, sogni_tools=False)
    assert inject_creative_tools(off) is off
    assert isinstance(inject_creative_tools(msgspec.structs.replace(request, sogni_tools="x")), str)


async def test_the_worker_sees_the_hosted_definitions_on_socket_hosted_and_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    requests: list[LLMJobRequest] = []
    async with creative_net(seen_tools(requests)) as (net, http):
        # socket llmJobRequest
        async with media_socket(net) as (ws, _):
            request = LLMJobRequest(
                job_id="SOCK-1",
                model=DEFAULT_MODEL,
                messages=[ChatMessage(role="user", content="hi")],
                sogni_tools="creative-tools",
            )
            await send(ws, request)
            while not isinstance(await recv(ws), LLMJobResult):
                pass
        # hosted completion, without execution
        response = await http.post(
            "/v1/chat/completions",
            json={**body(), "sogni_tool_execution": None},
        )
        assert response.status_code == 200, response.text
        assert "sogni_tool_results" not in response.json()
        # a durable run
        response = await http.post(
            "/v1/chat/runs",
            json={"messages": [{"role": "user", "content": "hi"}], "sogni_tools": True},
        )
        assert response.status_code in (200, 201, 202), response.text
        run_id = response.json()["data"]["run"]["runId"]
        await net.wait_until(lambda: len(requests) == 3)
        # a request without sogni_tools sees no hosted tool
        response = await http.post("/v1/chat/completions", json={**body(), "sogni_tools": None})
        assert response.status_code == 200
        assert len(requests) == 4
    for request in requests[:3]:
        assert isinstance(request.tools, list)
        assert {t.function.name for t in request.tools} == HOSTED
    assert not requests[3].tools
    # what the client sent is recorded as sent (the injection is what the worker sees)
    assert not net.job_requests[0].tools
    assert run_id


async def test_a_bad_sogni_tools_value_is_a_400(autojump_clock: trio.testing.MockClock) -> None:
    async with creative_net(seen_tools([])) as (_, http):
        response = await http.post("/v1/chat/completions", json=body(sogni_tools="everything"))
        assert response.status_code == 400
        assert "sogni_tools" in response.json()["error"]["message"]
        response = await http.post(
            "/v1/chat/runs",
            json={"messages": [{"role": "user", "content": "hi"}], "sogni_tool_execution": False},
        )
        assert response.status_code == 400


# -- execution -------------------------------------------------------------------------------------


async def test_generate_image_runs_as_a_billed_project_with_a_real_png(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arguments = {"prompt": "a red fox", "width": 256, "height": 320, "aspectRatio": "4:3"}
    async with creative_net(draw_then_answer(arguments)) as (net, http):
        net.add_account("payer", password="pw", balance=Decimal("10"))
        key = net.create_api_key("payer")
        response = await http.post("/v1/chat/completions", json=body(), headers={"api-key": key})
        assert response.status_code == 200, response.text
        completion = response.json()
        choice = completion["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert choice["message"]["content"].startswith("Here is your picture.")
        (result,) = completion["sogni_tool_results"]
        assert result["toolCallId"] == "call_img"
        assert result["toolName"] == "generate_image"
        assert result["success"] is True
        assert result["mediaType"] == "image"
        (url,) = result["resultUrls"]
        content = json.loads(result["content"])
        assert content["urls"] == [url]
        assert content["model"] in (IMAGE_MODEL, "z_image_turbo_bf16")
        # the model read exactly the tool message's content
        assert choice["message"]["content"].endswith(result["content"])
        image = Image.open(io.BytesIO(await download(http, url)))
        assert image.format == "PNG"
        assert image.size == (256, 320)
        # billed like any project of the caller's account
        payer = net.get_account("payer").id
        project = net._projects.finished[(payer, result["projectId"].upper())]
        assert project.status == "completed"
        assert project.app_id == HOSTED_TOOLS_APP_ID
        quote = net._projects.quote(project.plan.model.id, "sogni")
        assert quote is not None
        assert net.balance("payer") == Decimal("10") - quote.token
        listed = await http.get(f"/v1/projects/{result['projectId']}", headers={"api-key": key})
        assert listed.status_code == 200


async def test_two_tools_in_one_round_and_a_second_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rounds: list[int] = []

    def script(request: LLMJobRequest) -> list[Any]:
        done = sum(1 for m in request.messages if m.role == "tool")
        rounds.append(done)
        if done == 0:
            return [
                ToolCall("generate_image", {"prompt": "a cat", "numberOfVariations": 2}, id="a"),
                ToolCall("generate_music", {"prompt": "a lullaby", "duration": 10}, id="b"),
            ]
        if done == 2:
            return [ToolCall("generate_image", {"prompt": "a dog"}, id="c")]
        return [Text(f"done after {done} tool results")]

    async with creative_net(script) as (_, http):
        response = await http.post("/v1/chat/completions", json=body())
        assert response.status_code == 200, response.text
        completion = response.json()
    assert rounds == [0, 2, 3]
    assert completion["choices"][0]["message"]["content"] == "done after 3 tool results"
    results = completion["sogni_tool_results"]
    assert [r["toolCallId"] for r in results] == ["a", "b", "c"]
    assert all(r["success"] for r in results)
    assert len(results[0]["resultUrls"]) == 2
    assert results[1]["mediaType"] == "audio"


async def test_invalid_arguments_are_a_failed_result_fed_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []

    def script(request: LLMJobRequest) -> list[Any]:
        tools = [m for m in request.messages if m.role == "tool"]
        if tools:
            assert isinstance(tools[-1].content, str)
            seen.append(tools[-1].content)
            return [Text("Sorry, that failed.")]
        return [ToolCall("generate_image", {"prompt": 5, "numberOfVariations": 99}, id="bad")]

    async with creative_net(script) as (net, http):
        response = await http.post("/v1/chat/completions", json=body())
        assert response.status_code == 200, response.text
        (result,) = response.json()["sogni_tool_results"]
        assert not net._projects.finished  # no project was made
    assert result["success"] is False
    assert result["code"] == "invalid_arguments"
    assert "$.prompt" in result["error"]
    assert "numberOfVariations" in result["error"]
    (fed,) = seen
    assert json.loads(fed) == {
        "success": False,
        "error": result["error"],
        "code": "invalid_arguments",
    }


async def test_no_media_worker_is_a_failed_result_not_a_fake_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with creative_net(draw_then_answer({"prompt": "x"}), media_worker=False) as (_, http):
        response = await http.post("/v1/chat/completions", json=body())
        (result,) = response.json()["sogni_tool_results"]
    assert (result["success"], result["code"], result["resultUrls"]) == (False, "no_worker", [])
    assert "no media worker" in result["error"]


async def test_calls_to_the_callers_own_tools_are_returned_not_executed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        return [
            ToolCall("generate_image", {"prompt": "x"}, id="h"),
            ToolCall("get_weather", {"city": "Paris"}, id="w"),
        ]

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    async with creative_net(script) as (net, http):
        response = await http.post("/v1/chat/completions", json=body(tools=[weather]))
        completion = response.json()
        assert not net._projects.finished
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["id"] for c in choice["message"]["tool_calls"]] == ["h", "w"]
    assert completion["sogni_tool_results"] == []


async def test_rounds_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        return [ToolCall("generate_image", {"prompt": "again"})]

    async with creative_net(script) as (_, http):
        response = await http.post("/v1/chat/completions", json=body())
        completion = response.json()
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert len(completion["sogni_tool_results"]) == 5


# -- streaming --------------------------------------------------------------------------------------


def sse_payloads(text: str) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in text.split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_stream_shows_tool_events_then_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with creative_net(draw_then_answer({"prompt": "a fox"}, "Done.")) as (_, http):
        response = await http.post(
            "/v1/chat/completions",
            json=body(stream=True, stream_options={"include_usage": True}),
        )
        assert response.status_code == 200
        text = response.text
    assert text.endswith("data: [DONE]\n\n")
    payloads = sse_payloads(text)
    events = [p["sogni_tool_event"] for p in payloads if "sogni_tool_event" in p]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "tool_call_started"
    assert kinds[-1] == "tool_call_completed"
    assert "tool_call_progress" in kinds
    assert events[-1]["resultUrls"]
    content = "".join(c["delta"].get("content", "") for p in payloads for c in p.get("choices", []))
    assert content.startswith("Done.")
    finishes = [
        c["finish_reason"] for p in payloads for c in p.get("choices", []) if c["finish_reason"]
    ]
    assert finishes == ["stop"]
    (results,) = [p["sogni_tool_results"] for p in payloads if "sogni_tool_results" in p]
    assert results[0]["resultUrls"] == events[-1]["resultUrls"]
    assert "usage" in payloads[-1]


async def test_a_stream_dropped_during_tool_execution_cancels_the_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = draw_then_answer({"prompt": "slow"})
    async with creative_net(script, seconds_per_step=30.0) as (net, _):
        net.add_account("payer", password="pw", balance=Decimal("10"))
        key = net.create_api_key("payer")
        payload = json.dumps(body(stream=True)).encode()
        stream = net.connect_in_memory()
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: localnet\r\n"
            + f"api-key: {key}\r\ncontent-type: application/json\r\n".encode()
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        received = b""
        while b"tool_call_progress" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, "the stream ended before any tool progress"
            received += chunk
        assert net._projects.projects  # the project is rendering
        await stream.aclose()  # the client goes away mid-render
        await net.wait_until(lambda: bool(net._projects.finished))
        (project,) = net._projects.finished.values()
        assert project.status == "cancelled"
        assert not net._projects.projects
        await net.wait_until(lambda: net.live_jobs == 0)
        assert net.balance("payer") == Decimal("10")  # nothing charged


async def test_the_openai_package_gets_the_final_answer() -> None:
    async with open_local_network(
        script=draw_then_answer({"prompt": "a fox"}, "Here it is."),
        pricing=Pricing(usd_per_million_tokens=Decimal(0)),
    ) as net:
        net._projects.add_worker(simulated("painter", seconds_per_step=0.0))
        client = openai.OpenAI(base_url=net.rest_url + "/v1", api_key=net.api_key)
        completion = await trio.to_thread.run_sync(
            lambda: client.chat.completions.create(
                model=DEFAULT_MODEL,
                messages=[{"role": "user", "content": "Draw a fox"}],
                extra_body={"sogni_tools": "creative-tools", "sogni_tool_execution": True},
            )
        )
        assert (completion.choices[0].message.content or "").startswith("Here it is.")
        assert completion.choices[0].finish_reason == "stop"
        extra = completion.model_extra or {}
        (result,) = extra["sogni_tool_results"]
        assert result["success"] is True
        async with httpx.AsyncClient() as plain:
            fetched = await plain.get(result["resultUrls"][0])
        assert fetched.status_code == 200
        assert Image.open(io.BytesIO(fetched.content)).format == "PNG"


SCRIPT_FILE = """{"rules": [
  {"match": {"last_tool": {"contains": "\\"success\\": false"}},
   "steps": [{"text": "Sorry, the picture failed."}]},
  {"match": {"last_role": "tool"}, "steps": [{"text": "Your lighthouse is ready."}]},
  {"match": {"tool": "generate_image", "last_user": {"contains": "lighthouse"}},
   "steps": [{"tool_call": {"name": "generate_image", "id": "call_1",
                            "arguments": {"prompt": "a lighthouse at dusk"}}}]},
  {"match": {"tool": "generate_image"},
   "steps": [{"tool_call": {"name": "generate_image", "arguments": {"prompt": 7}}}]}
]}"""


async def test_a_script_file_calls_a_tool_then_answers_after_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = parse_script(SCRIPT_FILE)
    async with creative_net(script) as (_, http):
        good = (await http.post("/v1/chat/completions", json=body("a lighthouse"))).json()
        bad = (await http.post("/v1/chat/completions", json=body("anything"))).json()
        plain = await http.post("/v1/chat/completions", json=body("a lighthouse", sogni_tools=None))
    assert good["choices"][0]["message"]["content"] == "Your lighthouse is ready."
    assert good["sogni_tool_results"][0]["success"] is True
    assert bad["choices"][0]["message"]["content"] == "Sorry, the picture failed."
    assert bad["sogni_tool_results"][0]["code"] == "invalid_arguments"
    # without sogni_tools no generate_image is offered: the default reply
    assert "sogni_tool_results" in plain.json()
    assert plain.json()["sogni_tool_results"] == []
    assert plain.json()["choices"][0]["finish_reason"] == "stop"


def test_last_tool_is_checked_when_the_file_is_loaded() -> None:
    with pytest.raises(ScriptFileError, match=r"rules\[0\]: last_tool has exactly one of"):
        parse_script('{"rules": [{"match": {"last_tool": {}}, "steps": [{"text": "x"}]}]}')


# -- inputs: earlier results of the conversation ---------------------------------------------------


def draw_then_edit(edit_arguments: dict[str, Any]) -> ScriptFunction:
    """generate_image, then edit_image with ``edit_arguments``, then an answer."""

    def script(request: LLMJobRequest) -> list[Any]:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done == 0:
            return [ToolCall("generate_image", {"prompt": "a plain house"}, id="draw")]
        if done == 1:
            return [ToolCall("edit_image", edit_arguments, id="edit")]
        return [Text("edited")]

    return script


async def test_edit_image_edits_an_earlier_result_of_the_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = draw_then_edit({"prompt": "paint the house red", "sourceImageIndex": 0})
    async with creative_net(script) as (net, http):
        completion = (await http.post("/v1/chat/completions", json=body())).json()
        drawn, edited = completion["sogni_tool_results"]
        assert (drawn["success"], edited["success"]) == (True, True), edited
        account = net.account.id
        first = net._projects.finished[(account, drawn["projectId"].upper())]
        second = net._projects.finished[(account, edited["projectId"].upper())]
        assert first.plan.input_roles == ()
        assert second.plan.input_roles == ("contextImage1",)
        assert not net._media_storage.upload_roles(account, edited["projectId"])  # discarded
        source = await download(http, drawn["resultUrls"][0])
        result = await download(http, edited["resultUrls"][0])
    assert Image.open(io.BytesIO(result)).format == "PNG"
    assert result != source


async def test_inputs_that_do_not_exist_or_are_not_the_callers_fail_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with creative_net(draw_then_answer({"prompt": "a boat"})) as (net, http):
        owner = (await http.post("/v1/chat/completions", json=body())).json()
        (drawn,) = owner["sogni_tool_results"]
        net.add_account("mallory", password="pw", balance=Decimal("10"))
        mallory = net.create_api_key("mallory")
        net.script = draw_then_edit({"prompt": "steal it"})
        # mallory replays the owner's tool result in her own conversation
        stolen = body(
            "edit the boat",
            messages=[
                {"role": "user", "content": "draw"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "draw", "type": "function",
                     "function": {"name": "generate_image", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "draw", "content": drawn["content"]},
                {"role": "user", "content": "now edit it"},
            ],
        )  # fmt: skip
        response = await http.post(
            "/v1/chat/completions", json=stolen, headers={"api-key": mallory}
        )
        (refused,) = response.json()["sogni_tool_results"]
        assert (refused["toolCallId"], refused["code"]) == ("edit", "media_input_invalid")
        # an index out of range, and -1 (the user's upload, which hosted routes cannot carry)
        for index, code in ((3, "media_input_invalid"), (-1, "media_input_invalid")):
            net.script = draw_then_edit({"prompt": "x", "sourceImageIndex": index})
            results = (await http.post("/v1/chat/completions", json=body())).json()
            assert results["sogni_tool_results"][1]["code"] == code
        # no earlier image at all
        net.script = lambda request: (
            [Text("ok")]
            if any(m.role == "tool" for m in request.messages)
            else [ToolCall("edit_image", {"prompt": "x"}, id="e")]
        )
        (alone,) = (await http.post("/v1/chat/completions", json=body())).json()[
            "sogni_tool_results"
        ]
        assert alone["code"] == "media_input_required"
        mallorys = [
            p for (owner_id, _), p in net._projects.finished.items() if owner_id != net.account.id
        ]
        assert not mallorys  # mallory got no project at all


async def test_at_most_eight_calls_of_a_round_run(autojump_clock: trio.testing.MockClock) -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        if any(m.role == "tool" for m in request.messages):
            return [Text("ok")]
        return [ToolCall("enhance_prompt", ENHANCE, id=f"c{n}") for n in range(10)]

    async with creative_net(script) as (_, http):
        results = await http.post("/v1/chat/completions", json=body())
        outcomes = results.json()["sogni_tool_results"]
    assert [r["success"] for r in outcomes] == [True] * 8 + [False] * 2, outcomes[0]
    assert {r["code"] for r in outcomes[8:]} == {"too_many_calls"}
    assert json.loads(outcomes[0]["content"])["simulated"] is True  # the enhance_prompt double


ENHANCE = {"prompt": "a cat", "target_output": "image_prompt", "destination_model": "flux"}


async def test_the_openai_package_streams_through_tool_execution() -> None:
    async with open_local_network(
        script=draw_then_answer({"prompt": "a fox"}, "Streamed."),
        pricing=Pricing(usd_per_million_tokens=Decimal(0)),
    ) as net:
        net._projects.add_worker(simulated("painter", seconds_per_step=0.0))
        client = openai.OpenAI(base_url=net.rest_url + "/v1", api_key=net.api_key)

        def collect() -> tuple[str, list[str | None], list[dict[str, Any]]]:
            text, finishes, extras = "", [], []
            for chunk in client.chat.completions.create(
                model=DEFAULT_MODEL,
                messages=[{"role": "user", "content": "Draw a fox"}],
                stream=True,
                extra_body={"sogni_tools": "creative-tools", "sogni_tool_execution": True},
            ):
                extras.append(chunk.model_extra or {})
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finishes.append(choice.finish_reason)
            return text, finishes, extras

        text, finishes, extras = await trio.to_thread.run_sync(collect)
    assert text.startswith("Streamed.")
    assert [f for f in finishes if f] == ["stop"]
    assert any("sogni_tool_event" in extra for extra in extras)
    (results,) = [e["sogni_tool_results"] for e in extras if "sogni_tool_results" in e]
    assert results[0]["success"] is True


async def test_the_clients_hosted_create_gets_the_tool_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        creative_net(draw_then_answer({"prompt": "a fox"}, "Here.")) as (net, _),
        client_in_memory(net) as sogni,
    ):
        completion = await sogni.chat.hosted.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": "Draw a fox"}],
            sogni_tools="rich",
            sogni_tool_execution=True,
        )
    assert completion.sogni_tool_results is not None
    (result,) = completion.sogni_tool_results
    assert result["success"] is True
    assert result["toolName"] == "generate_image"
