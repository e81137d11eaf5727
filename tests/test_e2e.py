"""End to end over loopback TCP: trio_sogni against localnet, on both WebSocket engines."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import pytest
import trio
from helpers import MODEL, client_for, local_network

import trio_sogni
from trio_sogni import (
    AuthenticationError,
    ChatJobError,
    ClientClosedError,
    InvalidRequestError,
    ProtocolError,
    SogniClient,
)
from trio_sogni.localnet import (
    Fail,
    LocalNetwork,
    Stall,
    Text,
    ToolCall,
    default_reply_text,
)
from trio_sogni.protocol import encode_envelope


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_streaming_chat(sogni: SogniClient, net: LocalNetwork) -> None:
    messages = user("tell me about trio")
    with trio.fail_after(10):
        async with await sogni.chat.completions.create(
            model=MODEL, messages=messages, stream=True
        ) as stream:
            chunks = [chunk async for chunk in stream]
    expected = default_reply_text(messages)
    assert "".join(c.content or "" for c in chunks) == expected
    assert len(chunks) > 3  # really streamed, one word per chunk
    result = stream.final_result
    assert result is not None
    assert result.content == expected
    assert result.finish_reason == "stop"
    assert result.worker_name is not None
    assert result.usage.completion_tokens > 0
    assert result.cost is not None
    assert stream.statistics().chunks_coalesced == 0
    await net.wait_until(lambda: net.statistics().job_state_entries == 0)
    assert sogni.chat.statistics().live_jobs == 0


async def test_non_streaming_chat_and_stream_context_manager(sogni: SogniClient) -> None:
    with trio.fail_after(10):
        result = await sogni.chat.completions.create(model=MODEL, messages=user("hi there"))
        assert result.content == default_reply_text(user("hi there"))
        assert result.time_taken >= 0
        async with sogni.chat.completions.stream(model=MODEL, messages=user("again")) as stream:
            text = "".join([c.content or "" async for c in stream])
        assert text == default_reply_text(user("again"))


async def test_handshake_matches_the_official_sdk(sogni: SogniClient, net: LocalNetwork) -> None:
    (record,) = [r for r in net.handshakes if r.outcome == "accepted"]
    assert record.app_id == sogni.app_id
    assert record.client_name is not None
    assert record.client_name.startswith("Sogni/3.0.0 (trio-sogni) ")
    assert record.query["clientType"] == "artist"
    assert record.query["forceWorkerId"] == "fast"
    assert list(record.query)[:1] == ["appId"]
    assert sogni.authenticated is not None
    models = await sogni.chat.wait_for_models()
    assert models[MODEL].workers == 4


async def test_thousand_concurrent_jobs_on_one_connection(engine: str) -> None:
    async with local_network(workers=8, capacity=32) as net, client_for(net, engine) as sogni:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            if i % 2:
                async with sogni.chat.completions.stream(
                    model=MODEL, messages=user(f"job {i}")
                ) as stream:
                    results[i] = "".join([c.content or "" async for c in stream])
            else:
                result = await sogni.chat.completions.create(model=MODEL, messages=user(f"job {i}"))
                results[i] = result.content

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(one, i)
        assert results == {i: default_reply_text(user(f"job {i}")) for i in range(1000)}
        assert sogni.chat.statistics().live_jobs == 0
        await net.wait_until(lambda: net.statistics().job_state_entries == 0)


async def test_cancel_while_queued_aborts_on_the_server(engine: str) -> None:
    def script(request: Any) -> Any:
        return [Stall()] if "block" in request.messages[-1].content else None

    async with local_network(workers=1, script=script) as net, client_for(net, engine) as sogni:
        blocker = await sogni.chat.completions.create(
            model=MODEL, messages=user("block"), stream=True
        )
        queued = await sogni.chat.completions.create(
            model=MODEL, messages=user("waiting"), stream=True
        )
        with trio.fail_after(10):
            await net.wait_until(lambda: net.statistics().queued_jobs == 1)
            async with queued:
                pass  # leave the scope while the job is queued
            await net.wait_until(lambda: queued.job_id in net.aborted_job_ids)
            assert net.statistics().queued_jobs == 0
            async with blocker:
                pass
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
        assert sogni.chat.statistics().live_jobs == 0
        assert isinstance(queued.error, ClientClosedError)


async def test_break_mid_stream_aborts_and_frees_the_worker(engine: str) -> None:
    async with (
        local_network(workers=1, tokens_per_second=200) as net,
        client_for(net, engine) as sogni,
    ):
        long_prompt = " ".join(f"w{i}" for i in range(400))
        with trio.fail_after(10):
            async with await sogni.chat.completions.create(
                model=MODEL, messages=user(long_prompt), stream=True
            ) as stream:
                async for _ in stream:
                    break
            await net.wait_until(lambda: stream.job_id in net.cancelled_job_ids)
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
            # The single worker is free: the next job runs at once.
            result = await sogni.chat.completions.create(model=MODEL, messages=user("next"))
        assert result.content == default_reply_text(user("next"))
        assert sogni.chat.statistics().live_jobs == 0


async def test_close_just_after_completion_sends_no_abort(
    sogni: SogniClient, net: LocalNetwork
) -> None:
    with trio.fail_after(10):
        async with sogni.chat.completions.stream(model=MODEL, messages=user("done")) as stream:
            await stream.wait()  # completed; chunks not consumed
    assert stream.job_id not in net.aborted_job_ids
    assert sogni.chat.statistics().live_jobs == 0
    assert net.statistics().job_state_entries == 0


async def test_dropped_stream_object_is_aborted(engine: str) -> None:
    async with (
        local_network(workers=1, script=lambda r: [Stall()]) as net,
        client_for(net, engine) as sogni,
    ):
        stream = await sogni.chat.completions.create(model=MODEL, messages=user("x"), stream=True)
        job_id = stream.job_id
        del stream  # never closed: the abort task sends the abort
        with trio.fail_after(10):
            await net.wait_until(lambda: job_id in net.cancelled_job_ids)
        assert sogni.chat.statistics().live_jobs == 0


async def test_leaving_the_client_aborts_live_jobs(engine: str) -> None:
    async with local_network(workers=1, script=lambda r: [Stall()]) as net:
        async with client_for(net, engine) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            )
        with trio.fail_after(10):
            await net.wait_until(lambda: stream.job_id in net.cancelled_job_ids)
        assert isinstance(stream.error, ClientClosedError)
        with pytest.raises(ClientClosedError):
            await stream.receive()


async def test_slow_consumer_is_coalesced_without_loss(engine: str) -> None:
    prompt = " ".join(f"word{i}" for i in range(500))
    async with local_network() as net, client_for(net, engine, max_buffered_chunks=8) as sogni:
        with trio.fail_after(10):
            async with await sogni.chat.completions.create(
                model=MODEL, messages=user(prompt), stream=True
            ) as stream:
                await (
                    stream.wait()
                )  # the consumer is maximally slow: it reads nothing until the end
                chunks = [c async for c in stream]
    assert "".join(c.content or "" for c in chunks) == default_reply_text(user(prompt))
    stats = stream.statistics()
    assert len(chunks) <= 8
    assert stats.buffer_peak == 8
    assert stats.chunks_coalesced > 400
    assert chunks[-1].finish_reason == "stop"


async def test_bad_frames_do_not_kill_the_receive_loop(
    sogni: SogniClient, net: LocalNetwork
) -> None:
    frames: list[bytes | str] = [
        b"not json at all",
        '{"type": "jobTokens", "data": "!!!not base64!!!"}',
        encode_envelope("someFutureMessage", {"x": 1}),
        encode_envelope("jobTokens", {"jobID": 123}),
        encode_envelope("jobTokens", {"jobID": "NO-SUCH-JOB", "content": "late"}),
        encode_envelope("someFutureMessage", {"blob": "x" * 5_000_000}),  # a 6.7 MB frame
        b"",
    ]
    with trio.fail_after(20):
        for frame in frames:
            await net.send_raw_to_clients(frame)
        result = await sogni.chat.completions.create(model=MODEL, messages=user("still alive"))
    assert result.content == default_reply_text(user("still alive"))
    stats = sogni.chat.statistics()
    assert stats.malformed_frames == 4
    assert stats.unknown_frames == 2
    assert stats.late_frames >= 1
    assert sogni.is_connected


async def test_malformed_frame_for_a_live_job_fails_that_job(engine: str) -> None:
    async with (
        local_network(workers=1, script=lambda r: [Text("a b "), Stall()]) as net,
        client_for(net, engine) as sogni,
    ):
        with trio.fail_after(10):
            async with await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            ) as stream:
                first = await stream.receive()
                await net.send_raw_to_clients(
                    encode_envelope("jobTokens", {"jobID": stream.job_id, "content": 5})
                )
                received = [first]
                with pytest.raises(ProtocolError):  # noqa: PT012 - collect what precedes the error
                    async for chunk in stream:
                        received.append(chunk)  # noqa: PERF401
            await net.wait_until(lambda: stream.job_id in net.aborted_job_ids)
        assert "".join(c.content or "" for c in received) == stream.content


# A dropped connection, reconnect backoff, the ping deadline and deadlines around calls are
# tested in virtual time: tests/test_virtual_time.py.


async def test_server_restart_is_a_retryable_job_error(engine: str) -> None:
    async with (
        local_network(script=lambda r: [Stall()]) as net,
        client_for(net, engine, resume_window=0) as sogni,
    ):
        stream = await sogni.chat.completions.create(model=MODEL, messages=user("x"), stream=True)
        with trio.fail_after(10):
            await net.wait_until(lambda: net.statistics().running_jobs == 1)
            await net.close_all_connections(1001, "restart")
            with pytest.raises(ChatJobError) as info:
                await stream.wait()
        assert info.value.retryable
        await stream.aclose()


async def test_job_errors_are_typed(sogni: SogniClient, net: LocalNetwork) -> None:
    with trio.fail_after(10):
        with pytest.raises(ChatJobError) as info:
            await sogni.chat.completions.create(model="no-such-model", messages=user("x"))
    assert info.value.error_type == "model_unavailable"
    assert info.value.job_id is not None


async def test_subscription_denial_fields(engine: str) -> None:
    fail = Fail(
        error="subscription",
        message="upgrade needed",
        error_code="4081",
        subscription_limit=True,
        required_plans=("pro",),
        feature="llm",
    )
    async with local_network(script=lambda r: [fail]) as net, client_for(net, engine) as sogni:
        with trio.fail_after(10), pytest.raises(ChatJobError) as info:
            await sogni.chat.completions.create(model=MODEL, messages=user("x"))
    error = info.value
    assert (error.code, error.error_type, str(error)) == ("4081", "subscription", "upgrade needed")
    assert error.subscription_error_code == 4081
    assert error.is_subscription_limit
    assert error.required_plans == ["pro"]
    assert not error.retryable


async def test_invalid_requests_are_refused_before_sending(
    sogni: SogniClient, net: LocalNetwork
) -> None:
    before = net.statistics()
    requests_before = len(net.job_requests)
    for bad in (
        {"messages": []},
        {"messages": user("x"), "max_tokens": -5},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": {1, 2}}]},
    ):
        with pytest.raises(InvalidRequestError):
            await sogni.chat.completions.create(model=MODEL, **cast("dict[str, Any]", bad))
    with pytest.raises(InvalidRequestError):
        await sogni.chat.completions.create(
            model=MODEL,
            messages=user("x"),
            stream=True,  # pyright: ignore[reportArgumentType]  (the misuse under test)
            auto_execute_tools=True,
        )
    # stream() checks its arguments when called, before its block is entered.
    with pytest.raises(InvalidRequestError):
        sogni.chat.completions.stream(model=MODEL, messages=user("x"), temperature=9)
    assert net.statistics() == before
    assert len(net.job_requests) == requests_before
    scope = sogni.chat.completions.stream(model=MODEL, messages=user("x"), max_tokens=1)
    async with scope as stream:
        async for _ in stream:
            pass
    with pytest.raises(RuntimeError, match="already entered"):
        async with scope:
            pass
    assert len(net.job_requests) == requests_before + 1
    assert not net.rejected_frames


async def test_tool_loop_with_a_client_side_tool(engine: str) -> None:
    def script(request: Any) -> Any:
        if request.messages[-1].role == "tool":
            return [Text(f"The weather is {request.messages[-1].content}.")]
        return [ToolCall("get_weather", {"city": "Oslo"})]

    calls: list[Any] = []

    async def on_tool_call(call: Any) -> str:
        calls.append(json.loads(call.function.arguments))
        await trio.lowlevel.checkpoint()
        return "sunny"

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with local_network(script=script) as net, client_for(net, engine) as sogni:
        with trio.fail_after(10):
            result = await sogni.chat.completions.create(
                model=MODEL,
                messages=user("weather in Oslo?"),
                tools=tools,
                auto_execute_tools=True,
                on_tool_call=on_tool_call,
            )
    assert calls == [{"city": "Oslo"}]
    assert result.content == "The weather is sunny."
    assert result.tool_history is not None
    assert result.tool_history[0].tool_results[0].content == "sunny"


@pytest.mark.parametrize(
    "forced", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
async def test_a_forced_tool_choice_applies_to_the_first_round_only(forced: Any) -> None:
    def script(request: Any) -> Any:
        if request.messages[-1].role == "tool":
            return [Text("done")]
        return [ToolCall("get_weather", {"city": "Oslo"})]

    async def on_tool_call(call: Any) -> str:
        await trio.lowlevel.checkpoint()
        return "sunny"

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with local_network(script=script) as net, client_for(net) as sogni:
        with trio.fail_after(10):
            result = await sogni.chat.completions.create(
                model=MODEL,
                messages=user("weather?"),
                tools=tools,
                tool_choice=forced,
                auto_execute_tools=True,
                on_tool_call=on_tool_call,
            )
    assert result.content == "done"
    choices = [r.tool_choice for r in net.job_requests]
    assert choices[-1] == "auto"
    assert choices[0] != "auto"


async def test_tool_calls_are_merged_and_non_media_sogni_tools_need_the_hosted_api(
    engine: str,
) -> None:
    # apply_style is a hosted tool that is neither a direct media tool nor a synchronous one: it
    # runs through chat.hosted.execute_tool, and without a source image it cannot
    async with (
        local_network(script=lambda r: [ToolCall("apply_style", {"prompt": "a cat"})]) as net,
        client_for(net, engine) as sogni,
    ):
        with trio.fail_after(10):
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("draw"), stream=True
            )
            async with stream:
                await stream.wait()
            (call,) = stream.tool_calls
            assert call.function.name == "apply_style"
            assert json.loads(call.function.arguments) == {"prompt": "a cat"}
            assert stream.finish_reason == "tool_calls"
            (outcome,) = await sogni.chat.tools.execute_all([call])
            assert not outcome.success
            assert outcome.error == "apply_style needs a source image; the conversation has none"
            with pytest.raises(trio_sogni.ToolLoopError):
                await sogni.chat.completions.create(
                    model=MODEL, messages=user("draw"), auto_execute_tools=True, max_tool_rounds=2
                )


async def test_events_channels_and_callbacks(sogni: SogniClient) -> None:
    seen: list[str] = []
    remove = sogni.chat.on("completed", lambda event: seen.append(event.kind))
    with trio.fail_after(10):
        async with sogni.chat.subscribe("token", "completed", "jobState") as events:
            result = await sogni.chat.completions.create(model=MODEL, messages=user("events"))
            kinds: list[str] = []
            while "completed" not in kinds:
                kinds.append((await events.receive()).kind)
    remove()
    assert seen == ["completed"]
    assert kinds.count("token") == result.usage.completion_tokens
    assert {"jobState", "token", "completed"} <= set(kinds)
    with pytest.raises(ValueError, match="unknown event kind"):
        async with sogni.chat.subscribe("bogus"):  # type: ignore[arg-type]
            pass


async def test_slow_event_subscriber_drops_oldest(sogni: SogniClient) -> None:
    with trio.fail_after(10):
        async with sogni.chat.subscribe("token", max_buffer=2) as events:
            result = await sogni.chat.completions.create(
                model=MODEL, messages=user(" ".join(["x"] * 50))
            )
            assert events.dropped == result.usage.completion_tokens - 2


async def test_models_updates_reach_the_client(sogni: SogniClient, net: LocalNetwork) -> None:
    from trio_sogni.localnet import SimulatedWorker

    with trio.fail_after(10):
        async with sogni.chat.subscribe("modelsUpdated") as events:
            net.add_worker(SimulatedWorker(name="extra", models=[MODEL, "other-model"]))
            event = await events.receive()
    assert isinstance(event, trio_sogni.ModelsUpdatedEvent)
    assert set(event.models) == {MODEL, "other-model"}
    assert set(sogni.chat.models) == {MODEL, "other-model"}


async def test_bad_api_key_is_an_authentication_error(net: LocalNetwork, engine: str) -> None:
    with trio.fail_after(10), pytest.raises(AuthenticationError) as info:
        async with client_for(net, engine, api_key="wrong-key"):
            pass  # pragma: no cover
    assert "wrong-key" not in str(info.value)


async def test_connect_error_when_nothing_listens(engine: str) -> None:
    async with local_network() as net:
        url, rest = net.socket_url, net.rest_url
    with trio.fail_after(10), pytest.raises(trio_sogni.ConnectError):
        async with trio_sogni.open_sogni_client(
            api_key="k",
            socket_endpoint=url,
            rest_endpoint=rest,
            socket_options=trio_sogni.SocketOptions(engine=engine),  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover


async def test_account_me_and_no_secret_in_logs_or_reprs(
    net: LocalNetwork, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with client_for(net, engine) as sogni:
        me = await sogni.account.me()
        assert me.username is not None
        await sogni.chat.completions.create(model=MODEL, messages=user("x"))
        texts = [repr(sogni), repr(sogni.chat), repr(sogni.rest), caplog.text]
    for text in texts:
        assert net.api_key not in text


async def test_user_exception_is_not_wrapped_in_a_group(sogni: SogniClient) -> None:
    class Boom(Exception):
        pass

    async with local_network() as net:
        with pytest.raises(Boom):
            async with client_for(net):
                raise Boom
