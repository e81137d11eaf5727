"""Durable runs through the trio_sogni client against localnet over loopback TCP: streaming to
completion, resuming after dropped streams and a server restart, idempotency, cancellation and
cost confirmation."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import MODEL, start_localnet_cli, tool_then_text

import trio_sogni
from trio_sogni import ChatRunEvent, InvalidRequestError, RunStateError, SogniClient
from trio_sogni.localnet import (
    LocalNetwork,
    ScriptFunction,
    Stall,
    Text,
    open_local_network,
)
from trio_sogni.localnet._runs._tools import SimulatedGenerateImage
from trio_sogni.protocol import LLMJobRequest

TIMEOUT = 20
KEY = "runs-e2e-key"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@asynccontextmanager
async def client_for(net: LocalNetwork) -> AsyncIterator[SogniClient]:
    async with trio_sogni.open_sogni_client(
        api_key=net.api_key,
        socket_endpoint=net.socket_url,
        rest_endpoint=net.rest_url,
        socket_options=trio_sogni.SocketOptions(
            reconnect_initial_delay=0.05, reconnect_max_delay=0.2
        ),
    ) as sogni:
        yield sogni


def check_order(events: list[ChatRunEvent], first: int = 0) -> None:
    assert [e.sequence for e in events] == list(range(first, first + len(events)))


async def test_create_stream_and_wait(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_local_network(models=[MODEL]) as net, client_for(net) as sogni:
            run = await sogni.chat.runs.create(messages=user("hello"), model=MODEL)
            assert run.status in ("queued", "running")
            async with sogni.chat.runs.stream_events(run.run_id) as events:
                seen = [event async for event in events]
            check_order(seen)
            assert seen[0].type == "run_created"
            assert seen[-1].type == "run_completed"
            assert seen[-1].is_terminal
            text = "".join(
                str(e.payload.get("delta", ""))
                for e in seen
                if e.payload and e.type == "assistant_message_delta"
            )
            assert text == "Simulated reply to: hello"
            final = await sogni.chat.runs.wait(run.run_id)
            assert final.status == "completed"
            assert final.final_response is not None
            assert final.final_response["content"] == "Simulated reply to: hello"
            assert [e.sequence for e in final.events] == [e.sequence for e in seen]


async def test_dropped_streams_resume_without_gaps_or_duplicates() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_local_network(models=[MODEL], tokens_per_second=400) as net,
            client_for(net) as sogni,
        ):
            net.runs.chunks_per_delta = 1
            run = await sogni.chat.runs.create(messages=user("word " * 60), model=MODEL)
            seen: list[ChatRunEvent] = []
            async with sogni.chat.runs.stream_events(run.run_id) as events:
                async for event in events:
                    seen.append(event)
                    if event.sequence in (5, 25):  # cut the connection twice mid-run
                        assert await net.drop_event_streams() >= 1
            check_order(seen)
            assert seen[-1].type == "run_completed"
            assert events.reconnects >= 2
            assert events.duplicates >= 0


async def test_a_server_restart_mid_run_resumes_the_stream(tmp_path: Path) -> None:
    database = tmp_path / "runs.sqlite"

    def stalling(request: LLMJobRequest) -> list[Any]:
        return [Text("thinking hard"), Stall()]

    seen: list[ChatRunEvent] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(_serve, database, 0, stalling)
            port = first.port
            async with client_for(first) as sogni:
                run = await sogni.chat.runs.create(messages=user("think"), model=MODEL)
                delta = trio.Event()
                ended = trio.Event()

                async def follow() -> None:
                    async with sogni.chat.runs.stream_events(run.run_id) as events:
                        async for event in events:
                            seen.append(event)
                            if event.type == "assistant_message_delta":
                                delta.set()
                    ended.set()

                nursery.start_soon(follow)
                await delta.wait()
                first.stop()  # localnet shuts down: the SSE stream ends mid-run
                await first.stopped.wait()
                # ... and comes back on the same port and database, answering normally now.
                second = await nursery.start(_serve, database, port, None)
                await ended.wait()
                second.stop()
    check_order(seen)
    types = [e.type for e in seen]
    assert "run_resumed" in types
    assert types[-1] == "run_completed"


class _Served:
    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self.port = net.port
        self.api_key = net.api_key
        self.socket_url = net.socket_url
        self.rest_url = net.rest_url
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    def stop(self) -> None:
        self.scope.cancel()


async def _serve(
    database: Path,
    port: int,
    script: ScriptFunction | None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    served: _Served | None = None
    try:
        async with open_local_network(
            models=[MODEL], database=database, api_key=KEY, port=port, script=script
        ) as net:
            served = _Served(net)
            task_status.started(served)
            with served.scope:
                await trio.sleep_forever()
    finally:
        if served is not None:
            served.stopped.set()


async def test_idempotent_create_and_inline_media_refusal() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_local_network(models=[MODEL]) as net, client_for(net) as sogni:
            a = await sogni.chat.runs.create(messages=user("x"), model=MODEL, idempotency_key="k1")
            b = await sogni.chat.runs.create(messages=user("x"), model=MODEL, idempotency_key="k1")
            c = await sogni.chat.runs.create(messages=user("x"), model=MODEL, idempotency_key="k2")
            assert a.run_id == b.run_id != c.run_id
            requests = len(net.http_requests)
            with pytest.raises(InvalidRequestError, match="http"):
                await sogni.chat.runs.create(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "image_url",
                                    "image_url": {"url": "data:image/png;base64,AA"},
                                }
                            ],
                        }
                    ],
                    model=MODEL,
                )
            assert len(net.http_requests) == requests  # refused before sending


async def test_cancel_while_running_and_after_the_end() -> None:
    def stalling(request: LLMJobRequest) -> list[Any]:
        return [Text("working"), Stall()]

    with trio.fail_after(TIMEOUT):
        async with (
            open_local_network(models=[MODEL], script=stalling) as net,
            client_for(net) as sogni,
        ):
            run = await sogni.chat.runs.create(messages=user("x"), model=MODEL)
            async with sogni.chat.runs.stream_events(run.run_id) as events:
                async for event in events:
                    if event.type == "assistant_message_delta":
                        cancelled = await sogni.chat.runs.cancel(run.run_id, "enough")
                        assert cancelled.status == "cancelled"
            assert event.type == "run_cancelled"
            with pytest.raises(RunStateError):
                await sogni.chat.runs.cancel(run.run_id)
            await net.wait_until(lambda: net.live_jobs == 0)


async def test_cost_confirmation_with_a_stale_then_the_right_preview() -> None:
    script = tool_then_text("generate_image", {"prompt": "a cat"}, "Here it is.")
    with trio.fail_after(TIMEOUT):
        async with (
            open_local_network(models=[MODEL], script=script) as net,
            client_for(net) as sogni,
        ):
            # the fake-URL generate_image TEST DOUBLE (no media worker here)
            net.runs.tools = {**net.runs.tools, "generate_image": SimulatedGenerateImage()}
            run = await sogni.chat.runs.create(messages=user("cat"), model=MODEL, confirm_cost=True)
            async with sogni.chat.runs.stream_events(run.run_id) as events:
                async for event in events:
                    if event.type == "run_awaiting_cost_confirmation":
                        assert event.payload is not None
                        record = await sogni.chat.runs.get(run.run_id)
                        assert record.status == "waiting_for_user"
                        preview = record.billing_preview
                        stale = {**preview, "version": preview["version"] - 1}
                        with pytest.raises(RunStateError):
                            await sogni.chat.runs.confirm_cost(
                                run.run_id,
                                tool_call_id=event.payload["toolCallId"],
                                decision="confirm",
                                accepted_cost_preview=stale,
                            )
                        resumed = await sogni.chat.runs.confirm_cost(
                            run.run_id,
                            tool_call_id=event.payload["toolCallId"],
                            decision="confirm",
                            accepted_cost_preview=preview,
                        )
                        assert resumed.status == "running"
            assert event.type == "run_completed"
            final = await sogni.chat.runs.get(run.run_id)
            assert final.final_response is not None
            assert final.final_response["content"] == "Here it is."


async def test_sigkill_of_the_server_mid_run_then_restart(tmp_path: Path) -> None:
    """The localnet process is killed outright (no shutdown at all) while a run streams; a new
    process on the same port and database resumes the run, and the client's event stream carries
    on by itself: every event once, in order, to the end."""
    with socket.socket() as probe:  # a free loopback port for both server processes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = ["--port", str(port), "--database", str(tmp_path / "k.sqlite"), "--api-key", KEY]
    options += ["--model", MODEL, "--tokens-per-second", "40"]
    seen: list[ChatRunEvent] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first, info = await start_localnet_cli(nursery, options)
            async with trio_sogni.open_sogni_client(
                api_key=KEY,
                socket_endpoint=info["socket_url"],
                rest_endpoint=info["rest_url"],
                socket_options=trio_sogni.SocketOptions(
                    reconnect_initial_delay=0.05, reconnect_max_delay=0.2
                ),
            ) as sogni:
                run = await sogni.chat.runs.create(messages=user("word " * 40), model=MODEL)
                async with sogni.chat.runs.stream_events(run.run_id) as events:
                    async for event in events:
                        seen.append(event)
                        if event.type == "assistant_message_delta" and first.returncode is None:
                            first.kill()  # SIGKILL: no cleanup, no close frames
                            await first.wait()
                            second, _ = await start_localnet_cli(nursery, options)
                second.terminate()
    check_order(seen)
    types = [e.type for e in seen]
    assert "run_resumed" in types
    assert types[-1] == "run_completed"
    assert first.returncode == -signal.SIGKILL
