"""The OpenAI-compatible surface: streamed completions as Server-Sent Events and ``/v1/models``,
checked with the stock ``openai`` package (sync and async) and with raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import trio
import trio.testing
from helpers import MODEL, local_network

from trio_sogni.localnet import LocalNetwork, Stall, Text, ToolCall, default_reply_text

pytestmark = pytest.mark.deadline(60)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def net() -> AsyncIterator[LocalNetwork]:
    async with local_network(tokens_per_second=200) as net:
        yield net


async def test_the_openai_package_streams_sync(net: LocalNetwork) -> None:
    def stream() -> tuple[list[Any], list[str]]:
        client = openai.OpenAI(base_url=net.rest_url + "/v1", api_key=net.api_key, max_retries=0)
        try:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL,
                    messages=user("Hi from a stream"),
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            models = [m.id for m in client.models.list()]
            return chunks, models
        finally:
            client.close()

    chunks, models = await trio.to_thread.run_sync(stream)
    assert models == [MODEL]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == default_reply_text(user("Hi from a stream"))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_the_openai_package_streams_async_with_tool_calls() -> None:
    arguments = '{"city": "Paris"}'

    def script(request: Any) -> Any:
        return [Text("Let me check."), ToolCall("get_weather", arguments)]

    async with local_network(tokens_per_second=200, script=script) as net:

        async def main() -> list[Any]:
            client = openai.AsyncOpenAI(
                base_url=net.rest_url + "/v1", api_key=net.api_key, max_retries=0
            )
            try:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=user("weather?"),
                    stream=True,
                )
                return [chunk async for chunk in stream]
            finally:
                await client.close()

        chunks = await trio.to_thread.run_sync(asyncio.run, main())
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == "Let me check."
    calls = [call for d in deltas for call in (d.tool_calls or [])]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert "".join(c.function.arguments or "" for c in calls if c.function) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_a_client_that_leaves_mid_stream_aborts_its_job() -> None:
    async with (
        local_network(
            script=lambda r: [Text("one two three"), Stall()], meter_default_account=True
        ) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        before = net.balance(net.account.id)
        body = {"model": MODEL, "messages": user("x"), "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            first = await anext(aiter(lines))
            assert first.startswith("data: {")
            assert net.live_jobs == 1
        with trio.fail_after(10):
            await net.wait_until(lambda: net.live_jobs == 0)
        assert [r.outcome for r in net.job_records] == ["aborted"]
        assert net.balance(net.account.id) == before  # the hold was released, nothing charged


async def test_a_job_that_fails_mid_stream_ends_it_with_an_error_event() -> None:
    async with (
        local_network(script=lambda r: [Text("partial"), Stall()]) as failing,
        httpx.AsyncClient(base_url=failing.rest_url, headers={"api-key": failing.api_key}) as http,
    ):
        body = {"model": MODEL, "messages": user("x"), "stream": True}
        events: list[str] = []
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 1:  # "partial": the job now stalls
                        failing.remove_worker(failing.workers[0].name)
        assert '"error"' in events[-1]
        assert "worker_disconnected" in events[-1]
        assert "[DONE]" not in events


class GoneBeforeTheFirstByte(trio.abc.Stream):
    """A TEST DOUBLE of a client connection that sent its request and vanished: reads give the
    request, then end of stream; every write fails, the response head's included."""

    def __init__(self, request: bytes) -> None:
        self._pending = request
        self.writes = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        data, self._pending = self._pending, b""
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.writes += 1
        raise trio.BrokenResourceError("the client is gone")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def raw_post(body: dict[str, Any], api_key: str) -> bytes:
    payload = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localnet\r\n"
        + f"api-key: {api_key}\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


@pytest.mark.parametrize(
    "extra",
    [{}, {"sogni_tools": "creative-tools", "sogni_tool_execution": True}],
    ids=["plain", "tool-execution"],
)
async def test_a_client_gone_before_the_first_byte_aborts_its_job(
    autojump_clock: trio.testing.MockClock, extra: dict[str, Any]
) -> None:
    # The job is admitted (its cost held) before the response head is written; the head's
    # write fails, so the body never starts: the job must still be aborted, the hold released.
    async with local_network(
        listen=False, script=lambda r: [Stall()], meter_default_account=True
    ) as net:
        before = net.balance(net.account.id)
        client = GoneBeforeTheFirstByte(
            raw_post({"model": MODEL, "messages": user("x"), "stream": True, **extra}, net.api_key)
        )
        net.serve_connection(client)
        await net.wait_until(lambda: len(net.job_requests) == 1)
        with trio.fail_after(60):
            await net.wait_until(lambda: net.live_jobs == 0)
        assert client.writes == 1  # only the head was tried
        assert [r.outcome for r in net.job_records] == ["aborted"]
        assert net.balance(net.account.id) == before
