"""Scheduler, pacing and rebind behaviour over in-memory streams, on a MockClock (instant)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket

from trio_sogni.localnet import (
    Delta,
    LocalNetwork,
    SimulatedWorker,
    Stall,
    Text,
    open_local_network,
)
from trio_sogni.protocol import (
    AbortJob,
    Authenticated,
    ChatCompletionChunk,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
    SwarmLLMModels,
    decode_server_message,
    encode_client_message,
)


@asynccontextmanager
async def client(
    net: LocalNetwork, app_id: str = "mem-app"
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            net.connect_in_memory(),  # type: ignore[arg-type]
            "localnet",
            f"/?appId={app_id}",
            extra_headers=[(b"api-key", net.api_key.encode())],
            message_queue_size=1024,
        )
        try:
            yield ws
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def recv(ws: trio_websocket.WebSocketConnection) -> ServerMessage:
    message = decode_server_message(await ws.get_message())
    assert not hasattr(message, "data") or not isinstance(message, bytes)
    return message  # type: ignore[return-value]


async def send(ws: trio_websocket.WebSocketConnection, request: LLMJobRequest | AbortJob) -> None:
    await ws.send_message(encode_client_message(request))


async def job_frames(ws: trio_websocket.WebSocketConnection, job_id: str) -> list[ServerMessage]:
    frames: list[ServerMessage] = []
    while True:
        message = await recv(ws)
        if getattr(message, "job_id", None) == job_id:
            frames.append(message)
            if isinstance(message, LLMJobResult | LLMJobError):
                return frames


async def test_pacing_is_virtual_time(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("slow", tokens_per_second=2, start_latency=1.0)
    async with open_local_network(listen=False, workers=[worker]) as net, client(net) as ws:
        assert isinstance(await recv(ws), Authenticated)
        assert isinstance(await recv(ws), SwarmLLMModels)
        start = trio.current_time()
        await send(ws, make_request("P1", "a b"))  # 5 deltas
        frames = await job_frames(ws, "P1")
        result = frames[-1]
        assert isinstance(result, LLMJobResult)
        assert result.time_taken == pytest.approx(3.5)  # 1.0 latency + 5 * 0.5
        assert trio.current_time() - start == pytest.approx(3.5)


async def test_queue_positions_update(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=1)
    async with open_local_network(listen=False, workers=[worker]) as net, client(net) as ws:
        await recv(ws), await recv(ws)
        for job_id in ("Q1", "Q2", "Q3"):
            await send(ws, make_request(job_id, "x"))
        states: dict[str, list[tuple[str, int | None]]] = {"Q1": [], "Q2": [], "Q3": []}
        done: set[str] = set()
        while len(done) < 3:
            message = await recv(ws)
            if isinstance(message, JobState):
                states[message.job_id].append((message.type, message.queue_position))
            elif isinstance(message, LLMJobResult):
                done.add(message.job_id)
        assert states["Q1"] == [
            ("pending", None),
            ("queued", 1),
            ("assigned", None),
            ("jobStarted", None),
        ]
        assert states["Q2"] == [
            ("pending", None),
            ("queued", 1),
            ("assigned", None),
            ("jobStarted", None),
        ]
        assert states["Q3"] == [
            ("pending", None),
            ("queued", 2),
            ("queued", 1),
            ("assigned", None),
            ("jobStarted", None),
        ]
        assert net.statistics().job_state_entries == 0


async def test_abort_running_frees_the_slot_at_once(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    def script(request: LLMJobRequest) -> list[Delta | Stall] | None:
        return [Delta("working"), Stall()] if request.job_id == "STUCK" else None

    async with open_local_network(listen=False, script=script) as net, client(net) as ws:
        await recv(ws), await recv(ws)
        await send(ws, make_request("STUCK"))
        await send(ws, make_request("NEXT"))
        seen: list[ServerMessage] = []
        while not any(isinstance(m, ChatCompletionChunk) for m in seen):
            seen.append(await recv(ws))
        await send(ws, AbortJob(job_id="STUCK"))
        frames = await job_frames(ws, "NEXT")
        assert isinstance(frames[-1], LLMJobResult)
        await net.wait_until(lambda: net.live_jobs == 0)
        assert list(net.aborted_job_ids) == ["STUCK"]
        assert list(net.cancelled_job_ids) == ["STUCK"]
        assert net.statistics().job_state_entries == 0
        outcomes = {r.job_id: r.outcome for r in net.job_records}
        assert outcomes == {"STUCK": "aborted", "NEXT": "completed"}


async def test_rebind_within_grace_and_expiry(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=1)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=10.0) as net:
        async with client(net, "app-r") as ws:
            await recv(ws), await recv(ws)
            await send(ws, make_request("R1", "one two three four five six seven eight"))
            while not isinstance(first := await recv(ws), ChatCompletionChunk):
                pass
        # The socket is gone (closed with 1000); the job keeps running, detached.
        await trio.sleep(3)
        assert net.job_ids("app-r") == ["R1"]
        assert net.statistics().detached_jobs == 1
        async with client(net, "app-r") as ws:
            authenticated = await recv(ws)
            assert isinstance(authenticated, Authenticated)
            assert authenticated.active_llm_job_ids == ["R1"]
            frames = await job_frames(ws, "R1")
        # A client that does not resume (no jobResume=1) gets the frames produced while it was
        # away, then the live ones: at 1 token/s nothing was in flight when it left, so the
        # two connections together saw every chunk once.
        chunks = [first, *(m for m in frames if isinstance(m, ChatCompletionChunk))]
        result = frames[-1]
        assert isinstance(result, LLMJobResult)
        assert result.usage is not None
        assert sum(1 for c in chunks if c.content) == result.usage.completion_tokens
        assert chunks[-1].finish_reason == "stop"
        assert net.frames_dropped == 0

        async with client(net, "app-x") as ws:
            await recv(ws), await recv(ws)
            await send(ws, make_request("X1", "long " * 50))
            while not isinstance(await recv(ws), ChatCompletionChunk):
                pass
        await trio.sleep(9.5)
        assert net.live_jobs == 1
        await trio.sleep(1)
        assert net.live_jobs == 0
        assert net.statistics().job_state_entries == 0
        assert net.job_records[-1].outcome == "expired"
        async with client(net, "app-x") as ws:
            authenticated = await recv(ws)
            assert isinstance(authenticated, Authenticated)
            assert authenticated.active_llm_job_ids == []


async def test_worker_changes_are_broadcast(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_local_network(listen=False, models=["m1"], workers=0) as net, client(net) as ws:
        await recv(ws)
        first = await recv(ws)
        assert isinstance(first, SwarmLLMModels)
        assert first.models == {}
        await send(ws, make_request("NOPE", model="m1"))
        error = await recv(ws)
        assert isinstance(error, LLMJobError)
        assert (error.job_id, error.error) == ("NOPE", "model_unavailable")

        net.add_worker(SimulatedWorker("a", models=["m1", "m2"], script=lambda r: [Stall()]))
        update = await recv(ws)
        assert isinstance(update, SwarmLLMModels)
        assert {k: v.workers for k, v in update.models.items()} == {"m1": 1, "m2": 1}
        net.add_worker(SimulatedWorker("b", models=["m2"]))
        update = await recv(ws)
        assert isinstance(update, SwarmLLMModels)
        assert {k: v.workers for k, v in update.models.items()} == {"m1": 1, "m2": 2}

        await send(ws, make_request("ON-A", model="m1"))
        await net.wait_until(lambda: net.statistics().running_jobs == 1)
        await send(ws, make_request("WAITING", model="m1"))
        await net.wait_until(lambda: net.statistics().queued_jobs == 1)
        net.remove_worker("a")
        ends: dict[str, str] = {}
        models: SwarmLLMModels | None = None
        while len(ends) < 2 or models is None:
            message = await recv(ws)
            if isinstance(message, LLMJobError):
                ends[message.job_id] = str(message.error)
            elif isinstance(message, SwarmLLMModels):
                models = message
        assert ends == {"ON-A": "worker_disconnected", "WAITING": "model_unavailable"}
        assert {k: v.workers for k, v in models.models.items()} == {"m2": 1}
        assert net.live_jobs == 0
        assert [w.name for w in net.workers] == ["b"]
        with pytest.raises(KeyError):
            net.remove_worker("a")


async def test_text_step_and_in_memory_rest(autojump_clock: trio.testing.MockClock) -> None:
    from trio_sogni.localnet import HTTPRequest

    async with open_local_network(listen=False, script=lambda r: [Text("scripted")]) as net:
        response = await net.handle_rest(
            HTTPRequest.build("get", "/v1/account/me?x=1", {"API-Key": net.api_key})
        )
        assert response.status == 200
        assert net.http_requests[-1].query == {"x": "1"}
        assert net.http_requests[-1].headers["api-key"] == "<redacted>"
        with pytest.raises(RuntimeError):
            _ = net.rest_url


async def test_exceptions_from_the_block_are_not_wrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_local_network(listen=False):
            _ = 1 / 0
