"""LlamaCppWorker end to end: SmolLM2-135M through llama.cpp, driven over loopback TCP by the
trio_sogni client. Real inference, so assertions are about properties (determinism, limits,
parseable structure), never about the exact words."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from llama_cpp import Llama

from trio_sogni import ChatJobError, ToolLoopError
from trio_sogni.localnet import LlamaCppWorker
from trio_sogni.localnet._jsonschema import validate

# Real inference: more than the default deadline (tests/deadline.py); each test also has its own.
pytestmark = pytest.mark.deadline(300)

MODEL = "smollm2-135m-instruct"
POEM = [{"role": "user", "content": "Write a long poem about the sea."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_streaming_chat_produces_real_text_and_tokenizer_usage(
    llama: LlamaCppWorker, serve: Any, client: Any, model_path: Any
) -> None:
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            await sogni.chat.wait_for_models()
            info = sogni.chat.models[MODEL]
            async with sogni.chat.completions.stream(
                model=MODEL, messages=POEM, max_tokens=24, temperature=0
            ) as stream:
                chunks = [chunk.content async for chunk in stream if chunk.content]
                result = await stream.wait()
    assert info.max_context_length == 2048  # min(n_ctx, the GGUF's llama.context_length 8192)
    assert info.max_output_tokens.max == 2048
    assert len(chunks) > 1
    assert len(result.content.split()) >= 5
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 24
    assert result.cost is not None
    assert result.cost.input_tokens == result.usage.prompt_tokens
    # llama-cpp-python's own chat completion (same GGUF template and tokenizer) agrees.
    reference = Llama(model_path=str(model_path), n_ctx=2048, verbose=False)
    answer: Any = reference.create_chat_completion(messages=POEM, max_tokens=1, temperature=0)  # pyright: ignore[reportArgumentType]
    assert result.usage.prompt_tokens == answer["usage"]["prompt_tokens"]


async def test_sampling_fields_reach_the_sampler(
    llama: LlamaCppWorker, serve: Any, client: Any
) -> None:
    async def complete(**params: Any) -> Any:
        return await sogni.chat.completions.create(
            model=MODEL, messages=POEM, max_tokens=24, **params
        )

    with trio.fail_after(120):
        async with serve(llama) as net, client(net) as sogni:
            greedy = await complete(temperature=0)
            again = await complete(temperature=0)
            # At temperature 1.8 each of these filters alone leaves one candidate: greedy again.
            top_k = await complete(temperature=1.8, top_k=1)
            min_p = await complete(temperature=1.8, min_p=1.0)
            top_p = await complete(temperature=1.8, top_p=0.000001)
            penalised = await complete(temperature=0, repetition_penalty=1.8)
            frequency = await complete(temperature=0, frequency_penalty=2.0)
            presence = await complete(temperature=0, presence_penalty=2.0)
            everything = await complete(
                temperature=0.7,
                top_p=0.9,
                top_k=20,
                min_p=0.05,
                repetition_penalty=1.1,
                frequency_penalty=0.1,
                presence_penalty=0.1,
                stop=["\n\n\n"],
            )
    assert greedy.content == again.content
    assert top_k.content == greedy.content
    assert min_p.content == greedy.content
    assert top_p.content == greedy.content
    assert penalised.content != greedy.content
    assert frequency.content != greedy.content
    assert presence.content != greedy.content
    assert everything.usage.completion_tokens <= 24
    assert everything.content


async def test_stop_and_max_tokens_cut_the_output(
    llama: LlamaCppWorker, serve: Any, client: Any
) -> None:
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            full = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=30, temperature=0
            )
            words = full.content.split()
            stop = words[len(words) // 2]
            cut = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=30, temperature=0, stop=[stop, "zzzz"]
            )
            short = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=5, temperature=0
            )
    assert cut.content == full.content[: full.content.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens
    assert short.usage.completion_tokens == 5
    assert short.finish_reason == "length"
    assert full.content.startswith(short.content)


async def test_json_response_formats_parse(llama: LlamaCppWorker, serve: Any, client: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "colour": {"enum": ["red", "green", "blue"]},
        },
        "required": ["name", "age", "colour"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Give the name and age of a person as JSON."}]
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            structured = await sogni.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=200,
                temperature=0,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "person", "schema": schema, "strict": True},
                },
            )
            anything = await sogni.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=400,
                temperature=0,
                response_format={"type": "json_object"},
            )
    instance = json.loads(structured.content)
    assert validate(instance, schema) == []
    assert anything.finish_reason == "stop"
    assert isinstance(json.loads(anything.content), dict)


async def test_forced_tool_call_round_trip(llama: LlamaCppWorker, serve: Any, client: Any) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather like in Paris today?"}
    ]
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            deltas: list[Any] = []
            async with sogni.chat.completions.stream(
                model=MODEL,
                messages=messages,
                max_tokens=100,
                temperature=0,
                tools=[WEATHER],
                tool_choice="required",
            ) as stream:
                async for chunk in stream:
                    deltas.extend(chunk.tool_calls or [])
                call = await stream.wait()
            named = await sogni.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=100,
                temperature=0,
                tools=[WEATHER, {"type": "function", "function": {"name": "other"}}],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
            assert call.tool_calls is not None
            tool_call = call.tool_calls[0]
            follow_up = [
                *messages,
                {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                {
                    "role": "tool",
                    "tool_call_id": tool_call.id,
                    "name": "get_weather",
                    "content": '{"temperature_c": 21, "sky": "sunny"}',
                },
            ]
            answer = await sogni.chat.completions.create(
                model=MODEL,
                messages=follow_up,
                max_tokens=40,
                temperature=0,
                tools=[WEATHER],
                tool_choice="none",
            )
    assert call.finish_reason == "tool_calls"
    assert deltas[0].id
    assert deltas[0].type == "function"
    assert deltas[0].function.name == "get_weather"
    assert len(deltas) > 1
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert tool_call.function.name == "get_weather"
    arguments = json.loads(tool_call.function.arguments)
    assert isinstance(arguments["city"], str)
    assert named.finish_reason == "tool_calls"
    assert named.tool_calls is not None
    assert named.tool_calls[0].function.name == "get_weather"
    assert answer.content
    assert answer.finish_reason in {"stop", "length"}
    assert net.job_requests[-1].messages[-1].role == "tool"


async def test_abort_stops_generation_and_frees_the_worker(
    llama: LlamaCppWorker, serve: Any, client: Any
) -> None:
    counting = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            received = 0
            async with sogni.chat.completions.stream(
                model=MODEL, messages=counting, max_tokens=1500, temperature=0
            ) as stream:
                async for chunk in stream:
                    received += bool(chunk.content)
                    if received >= 3:
                        break  # leaving the block aborts the job
            await net.wait_until(lambda: any(r.outcome == "aborted" for r in net.job_records))
            started = trio.current_time()
            async with sogni.chat.completions.stream(
                model=MODEL, messages=POEM, max_tokens=8, temperature=0
            ) as nxt:
                first = await nxt.__anext__()
                waited = trio.current_time() - started
                result = await nxt.wait()
    stats = llama.statistics()
    assert stats.busy_instances == 0
    assert stats.jobs_finished == 1  # the second job only
    assert result.usage.completion_tokens == 8
    # The aborted job asked for 1500 tokens; it stopped within a token of the abort (a few
    # more were in flight to the client when it arrived).
    assert stats.tokens_generated - 8 < 40
    assert waited < 2.0
    assert first.content is not None


async def test_two_instances_run_two_jobs_at_once(model_path: Any, serve: Any, client: Any) -> None:
    worker = LlamaCppWorker(model_path=model_path, capacity=2)
    with trio.fail_after(60):
        async with serve(worker) as net, client(net) as sogni:
            results: list[Any] = []

            async def one() -> None:
                results.append(
                    await sogni.chat.completions.create(
                        model=MODEL, messages=POEM, max_tokens=16, temperature=0
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                nursery.start_soon(one)
    assert worker.statistics().peak_busy_instances == 2
    assert results[0].content == results[1].content


async def test_think_and_bad_requests(llama: LlamaCppWorker, serve: Any, client: Any) -> None:
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            thought = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=4, temperature=0, think=False
            )
            try:
                await sogni.chat.completions.create(
                    model=MODEL,
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "What is this?"},
                                {"type": "image_url", "image_url": {"url": image}},
                            ],
                        }
                    ],
                    max_tokens=4,
                )
            except ChatJobError as exc:
                refused = exc
            else:  # pragma: no cover - the assertion below reports it
                refused = None
            long_prompt = [{"role": "user", "content": "word " * 3000}]
            try:
                await sogni.chat.completions.create(model=MODEL, messages=long_prompt, max_tokens=4)
            except ChatJobError as exc:
                too_long = exc
            else:  # pragma: no cover
                too_long = None
    assert thought.usage.completion_tokens == 4
    assert net.job_requests[0].chat_template_kwargs == {"enable_thinking": False}
    assert refused is not None
    assert "image" in str(refused)
    assert too_long is not None
    assert "context" in str(too_long)


async def test_auto_tool_loop_with_a_client_side_tool(
    llama: LlamaCppWorker, serve: Any, client: Any
) -> None:
    """The official ``autoExecuteTools`` flow on a real model: the forced first round calls the
    client-side tool with parseable arguments, and its result goes back to the model as a
    ``tool`` message. SmolLM2-135M then calls the tool again every round (it is too small to
    use a tool result), so the loop ends at ``max_tool_rounds`` with `ToolLoopError` — the
    documented bound that keeps a looping model from running forever."""
    seen: list[dict[str, Any]] = []

    async def on_tool_call(call: Any) -> str:
        seen.append(json.loads(call.function.arguments))
        await trio.lowlevel.checkpoint()
        return json.dumps({"temperature_c": 21, "sky": "sunny"})

    with trio.fail_after(60):
        async with serve(llama) as net, client(net) as sogni:
            with pytest.raises(ToolLoopError):
                await sogni.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                    tools=[WEATHER],
                    tool_choice="required",
                    temperature=0,
                    max_tokens=60,
                    auto_execute_tools=True,
                    on_tool_call=on_tool_call,
                    max_tool_rounds=2,
                )
            requests = list(net.job_requests)[-2:]
    assert len(seen) == 2
    assert all(isinstance(args["city"], str) for args in seen)
    first, second = requests
    assert first.tool_choice == "required"
    assert second.tool_choice == "auto"  # forcing applies to the first round only
    assert [m.role for m in second.messages][-2:] == ["assistant", "tool"]
    assert json.loads(str(second.messages[-1].content)) == {"temperature_c": 21, "sky": "sunny"}
