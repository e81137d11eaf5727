"""localnet over loopback TCP, driven by a raw trio-websocket client (real time, short bounds)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from trio_sogni.localnet import (
    DEFAULT_MODEL,
    Delta,
    Fail,
    JobContext,
    LocalNetwork,
    SimulatedWorker,
    Stall,
    Step,
    Text,
    ToolCall,
    expected_output,
    open_local_network,
)
from trio_sogni.protocol import (
    AbortJob,
    Authenticated,
    ChangeNetwork,
    ChatCompletionChunk,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
    SetSocketEventSubscriptions,
    SocketEventSubscriptionsUpdated,
    SwarmLLMModels,
    encode_client_message,
    encode_envelope,
)

if TYPE_CHECKING:
    from conftest import Wire

TIMEOUT = 10


def stall_script(*job_ids: str) -> Callable[[LLMJobRequest], Sequence[Step] | None]:
    def script(request: LLMJobRequest) -> Sequence[Step] | None:
        return [Delta("busy"), Stall()] if request.job_id in job_ids else None

    return script


def chunks(frames: list[ServerMessage]) -> list[ChatCompletionChunk]:
    return [f for f in frames if isinstance(f, ChatCompletionChunk)]


# --- handshake ------------------------------------------------------------------------------------


async def test_handshake_authenticated_then_models(net: LocalNetwork, wire: Wire) -> None:
    with trio.fail_after(TIMEOUT):
        async with wire.connect("hs-app", handshake=False, appSource="tests") as ws:
            first = await wire.recv(ws)
            assert isinstance(first, Authenticated)
            assert first.client_type == "artist"
            assert first.username == net.account.username
            assert first.address == net.account.wallet_address
            assert first.active_llm_job_ids == []
            assert first.subscription_entitlement == {"active": False, "subscription": None}
            second = await wire.recv(ws)
            assert isinstance(second, SwarmLLMModels)
            info = second.models[DEFAULT_MODEL]
            assert info.workers == 1
            assert info.max_output_tokens is not None
            assert info.max_output_tokens.min == 1
            assert net.connected_sockets == 1
        record = net.handshakes[-1]
        assert record.outcome == "accepted"
        assert record.app_id == "hs-app"
        assert record.client_name == "localnet-tests"
        assert record.query["appSource"] == "tests"
        assert record.query["forceWorkerId"] == "fast"
        assert record.headers["api-key"] == "<redacted>"
        await net.wait_until(lambda: net.connected_sockets == 0)


async def test_any_path_is_accepted(net: LocalNetwork, wire: Wire) -> None:
    with trio.fail_after(TIMEOUT):
        url = f"{net.socket_url}some/deep/path?appId=p"
        headers = [(b"api-key", net.api_key.encode())]
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
            assert isinstance(wire.decode(await ws.get_message()), Authenticated)
            await ws.aclose()
        assert net.handshakes[-1].path == "/some/deep/path"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"api_key": "wrong"}, 4021),
        ({"headers": []}, 4021),
        ({"app_id": None}, 4010),
    ],
)
async def test_rejected_handshakes(
    net: LocalNetwork, wire: Wire, kwargs: dict[str, object], code: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with wire.connect(handshake=False, **kwargs) as ws:  # type: ignore[arg-type]
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == code
        assert net.handshakes[-1].outcome == "rejected"
        assert net.handshakes[-1].close_code == code
        assert net.connected_sockets == 0


async def test_duplicate_app_id_switches_connection(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    net.script = stall_script("KEEP")
    with trio.fail_after(TIMEOUT):
        async with wire.connect("dup") as old:
            await wire.send(old, make_request("KEEP"))
            while not isinstance(await wire.recv(old), ChatCompletionChunk):
                pass
            async with wire.connect("dup", handshake=False) as new:
                authenticated = await wire.recv(new)
                assert isinstance(authenticated, Authenticated)
                assert authenticated.active_llm_job_ids == ["KEEP"]
                _, code = await wire.drain(old)
                assert code == 4015
                await wire.send(new, AbortJob(job_id="KEEP"))
                await net.wait_until(lambda: net.live_jobs == 0)
                assert net.connected_sockets == 1


# --- jobs -----------------------------------------------------------------------------------------


async def test_streaming_job_sequence_and_content(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    request = make_request("MiXeD-case-Id", "Tell me a story", stream=True)
    expected = expected_output(request)
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            await wire.send(ws, request)
            frames = await wire.collect(ws, "MiXeD-case-Id")
    states = [f for f in frames if isinstance(f, JobState)]
    assert [s.type for s in states] == ["pending", "queued", "assigned", "jobStarted"]
    assert states[0].model_id == DEFAULT_MODEL
    assert isinstance(states[0].estimated_cost, str)
    assert states[1].queue_position == 1
    assert states[2].worker_name == states[3].worker_name == "localnet-worker-1"
    content = chunks(frames)
    assert [c.content for c in content] == list(expected.deltas)
    assert "".join(c.content or "" for c in content) == "Simulated reply to: Tell me a story"
    assert content[0].role == "assistant"
    assert all(c.finish_reason is None for c in content[:-1])
    assert content[-1].finish_reason == "stop"
    assert content[-1].usage is not None
    assert content[-1].usage.completion_tokens == len(expected.deltas)
    result = frames[-1]
    assert isinstance(result, LLMJobResult)
    assert result.job_id == "MiXeD-case-Id"
    assert result.usage == content[-1].usage
    assert result.usage is not None
    assert result.usage.prompt_tokens == expected.prompt_tokens
    assert isinstance(result.time_taken, float)
    assert result.worker_name == "localnet-worker-1"
    assert result.cost is not None
    assert isinstance(result.cost.cost_in_usd, str)
    assert result.cost.output_tokens == len(expected.deltas)
    assert net.job_records[-1].outcome == "completed"
    assert net.statistics().job_state_entries == 0


async def test_non_streaming_job_gets_the_same_frames(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            await wire.send(ws, make_request("NS", "quiet please", max_tokens=4))
            frames = await wire.collect(ws, "NS")
    content = chunks(frames)
    assert len(content) >= 1
    assert "".join(c.content or "" for c in content) == "Simulated reply to: quiet"
    assert content[-1].finish_reason == "length"
    assert isinstance(frames[-1], LLMJobResult)


async def test_tool_calls_and_mid_stream_failure(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    def script(request: LLMJobRequest) -> Sequence[Step] | None:
        if request.job_id == "TOOL":
            return [Text("Checking."), ToolCall("lookup", {"q": "trio"}, pieces=4)]
        return [
            Delta("partial"),
            Fail(
                error="subscription",
                message="Upgrade required",
                error_code="4081",
                subscription_limit=True,
                required_plans=("pro",),
                feature="llm",
            ),
        ]

    net.script = script
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            await wire.send(ws, make_request("TOOL"))
            frames = await wire.collect(ws, "TOOL")
            await wire.send(ws, make_request("FAIL"))
            failed = await wire.collect(ws, "FAIL")
    deltas = [d for c in chunks(frames) for d in (c.tool_calls or [])]
    assert deltas[0].id == "call_0"
    assert deltas[0].type == "function"
    assert deltas[0].function is not None
    assert deltas[0].function.name == "lookup"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"q":"trio"}'
    assert chunks(frames)[-1].finish_reason == "tool_calls"
    assert [c.content for c in chunks(failed)] == ["partial"]
    error = failed[-1]
    assert isinstance(error, LLMJobError)
    assert (error.error, error.error_code, error.error_message) == (
        "subscription",
        "4081",
        "Upgrade required",
    )
    assert error.subscription_limit is True
    assert error.required_plans == ["pro"]
    assert error.worker_name == "localnet-worker-1"
    assert net.job_records[-1].outcome == "failed"


async def test_queueing_and_abort_while_queued_and_running(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    net.script = stall_script("A", "B")
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            for job_id in ("A", "B", "C"):
                await wire.send(ws, make_request(job_id))
            seen: list[ServerMessage] = []
            while not (
                any(isinstance(m, ChatCompletionChunk) and m.job_id == "A" for m in seen)
                and sum(isinstance(m, JobState) and m.type == "queued" for m in seen) == 3
            ):
                seen.append(await wire.recv(ws))
            queued = {
                m.job_id: m.queue_position
                for m in seen
                if isinstance(m, JobState) and m.type == "queued"
            }
            assert queued == {"A": 1, "B": 1, "C": 2}
            assert net.statistics().queued_jobs == 2

            await wire.send(ws, AbortJob(job_id="B"))  # queued: leaves the queue
            await net.wait_until(lambda: "B" in net.cancelled_job_ids)
            assert net.statistics().queued_jobs == 1
            await wire.send(ws, AbortJob(job_id="A"))  # running: C starts at once
            frames = await wire.collect(ws, "C")
            assert isinstance(frames[-1], LLMJobResult)
            states = [f.type for f in frames if isinstance(f, JobState)]
            assert states == ["queued", "assigned", "jobStarted"]  # position update 2 -> 1
            await wire.send(ws, AbortJob(job_id="NOT-LIVE"))
            await net.wait_until(lambda: "NOT-LIVE" in net.aborted_job_ids)
            # Nothing more arrives for A or B: the next frame is the reply to this ping.
            await wire.send(ws, ChangeNetwork(network="fast"))
            assert isinstance(await wire.recv(ws), ChangeNetwork)
    assert list(net.aborted_job_ids) == ["B", "A", "NOT-LIVE"]
    assert list(net.cancelled_job_ids) == ["B", "A"]
    assert net.statistics().job_state_entries == 0


async def test_job_request_errors(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    net.script = stall_script("LIVE")
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            await wire.send(ws, make_request("U", model="no-such-model"))
            await wire.send(ws, make_request("N", max_tokens=-5))
            await wire.send(ws, make_request("BIG", max_tokens=10_000_000))
            await wire.send(ws, make_request("LIVE"))
            await wire.send(ws, make_request("live"))  # same id, other case: still a duplicate
            errors: dict[str, LLMJobError] = {}
            while len(errors) < 4:
                message = await wire.recv(ws)
                if isinstance(message, LLMJobError):
                    errors[message.job_id] = message
            assert errors["U"].error == "model_unavailable"
            assert errors["N"].error == "invalid_request"
            assert "max_tokens" in (errors["N"].error_message or "")
            assert errors["BIG"].error == "invalid_request"
            assert errors["live"].error == "invalid_request"
            assert net.job_ids() == ["LIVE"]
            await wire.send(ws, AbortJob(job_id="LIVE"))
            await net.wait_until(lambda: net.live_jobs == 0)


async def test_bad_frames_never_kill_the_connection(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with wire.connect() as ws:
            await ws.send_message("{not json")
            await ws.send_message(b'{"type":"llmJobRequest","data":"!!!"}')
            await ws.send_message(encode_envelope("mystery", {"a": 1}))
            await ws.send_message(
                encode_envelope(
                    "llmJobRequest",
                    {"jobID": "STRICT", "model": DEFAULT_MODEL, "messages": [], "extra": True},
                ).decode()
            )
            error = await wire.recv(ws)
            assert isinstance(error, LLMJobError)
            assert (error.job_id, error.error) == ("STRICT", "invalid_request")
            assert "extra" in (error.error_message or "")
            await wire.send(ws, make_request("AFTER"))
            assert isinstance((await wire.collect(ws, "AFTER"))[-1], LLMJobResult)
    assert len(net.rejected_frames) == 4
    assert net.rejected_frames[-1].job_id == "STRICT"
    assert not net.errors


async def test_network_and_subscription_replies(net: LocalNetwork, wire: Wire) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            wire.connect(socketEventSubscriptions='{"modelAvailability":false}') as quiet,
            wire.connect("loud") as loud,
        ):
            net.add_worker(SimulatedWorker("extra"))
            update = await wire.recv(loud)
            assert isinstance(update, SwarmLLMModels)
            assert update.models[DEFAULT_MODEL].workers == 2
            await wire.send(quiet, ChangeNetwork(network="relaxed"))
            reply = await wire.recv(quiet)  # no swarmLLMModels before it: opted out
            assert reply == ChangeNetwork(network="relaxed")
            await wire.send(
                quiet, SetSocketEventSubscriptions(subscriptions={"modelAvailability": True})
            )
            updated = await wire.recv(quiet)
            assert isinstance(updated, SocketEventSubscriptionsUpdated)
            assert updated.socket_event_subscriptions == {"modelAvailability": True}
            net.remove_worker("extra")
            assert isinstance(await wire.recv(quiet), SwarmLLMModels)
            assert isinstance(await wire.recv(loud), SwarmLLMModels)


async def test_ping_pong_and_message_size_limit(wire_for: Callable[[LocalNetwork], Wire]) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_local_network(max_message_size=1000) as small:
            tiny = wire_for(small)
            async with tiny.connect() as ws:
                await ws.ping(b"are you there")
                await ws.send_message("x" * 2000)
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1009


# --- disconnects, rebind, shutdown ----------------------------------------------------------------


class GatedWorker:
    """A test worker: one chunk, drop the client's connection, wait for ``resume``, finish."""

    def __init__(self) -> None:
        self.resume = trio.Event()
        self.name = "gated"
        self.models: Sequence[str] | None = None
        self.capacity = 1

    async def run(self, job: JobContext) -> None:
        await job.send_chunk("before", role="assistant")
        await job.drop_connection()
        await job.send_chunk(" held")  # detached: held for the next socket of the app
        await self.resume.wait()
        await job.send_chunk(" after", finish_reason="stop")


async def test_rebind_within_grace(
    make_request: Callable[..., LLMJobRequest], wire_for: Callable[[LocalNetwork], Wire]
) -> None:
    worker = GatedWorker()
    with trio.fail_after(TIMEOUT):
        async with open_local_network(workers=[worker], rebind_grace=30) as net:
            wire = wire_for(net)
            async with wire.connect("rebind") as ws:
                await wire.send(ws, make_request("G1"))
                first = await wire.recv(ws)
                while not isinstance(first, ChatCompletionChunk):
                    first = await wire.recv(ws)
                assert first.content == "before"
                _, code = await wire.drain(ws)
                assert code == 1006  # no close frame
            await net.wait_until(lambda: net.statistics().detached_jobs == 1)
            async with wire.connect("rebind", handshake=False) as ws:
                authenticated = await wire.recv(ws)
                assert isinstance(authenticated, Authenticated)
                assert authenticated.active_llm_job_ids == ["G1"]
                worker.resume.set()
                frames = await wire.collect(ws, "G1")
            # The chunk produced while no socket held the app comes first, then the live one.
            assert [c.content for c in chunks(frames)] == [" held", " after"]
            assert isinstance(frames[-1], LLMJobResult)
            assert net.frames_dropped == 0


@pytest.mark.parametrize("grace", [0.0, 0.2])
async def test_detached_jobs_expire(
    grace: float,
    make_request: Callable[..., LLMJobRequest],
    wire_for: Callable[[LocalNetwork], Wire],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_local_network(rebind_grace=grace, script=stall_script("S")) as net:
            wire = wire_for(net)
            async with wire.connect("exp") as ws:
                await wire.send(ws, make_request("S"))
                while not isinstance(await wire.recv(ws), ChatCompletionChunk):
                    pass
                assert await net.drop_all_connections() == 1
            await net.wait_until(lambda: net.live_jobs == 0)
            assert net.job_records[-1].outcome == "expired"
            assert net.statistics().job_state_entries == 0
            async with wire.connect("exp", handshake=False) as ws:
                authenticated = await wire.recv(ws)
                assert isinstance(authenticated, Authenticated)
                assert authenticated.active_llm_job_ids == []


async def test_shutdown_fails_live_jobs_and_closes_with_1001(
    make_request: Callable[..., LLMJobRequest],
    wire_for: Callable[[LocalNetwork], Wire],
    close_client_stream: Callable[[trio_websocket.WebSocketConnection], Awaitable[None]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with open_local_network(script=stall_script("RUN", "WAIT")) as net:
                wire = wire_for(net)
                ws = await trio_websocket.connect_websocket_url(
                    nursery,
                    wire.url("shut"),
                    extra_headers=[(b"api-key", net.api_key.encode())],
                    message_queue_size=1024,
                )
                await wire.send(ws, make_request("RUN"))
                await wire.send(ws, make_request("WAIT"))
                await net.wait_until(lambda: net.statistics().queued_jobs == 1)
            messages, code = await wire.drain(ws)
            await close_client_stream(ws)
            assert code == 1001
            errors = {m.job_id: m for m in messages if isinstance(m, LLMJobError)}
            assert set(errors) == {"RUN", "WAIT"}
            for error in errors.values():
                assert error.error == "server_restarting"
                assert error.error_message == "Server is restarting; this LLM request was refunded."
            assert {r.outcome for r in net.job_records} == {"server_restarting"}


# --- fault helpers --------------------------------------------------------------------------------


async def test_raw_frames_reach_every_client(net: LocalNetwork, wire: Wire) -> None:
    big = b"\x00" * (5 * 1024 * 1024)
    raw: list[bytes | str] = [
        "{not json",
        '{"type":"jobTokens","data":"%%%"}',
        encode_envelope("somethingNew", {"x": 1}),
        big,
    ]
    with trio.fail_after(TIMEOUT):
        async with (
            wire.connect("r1", max_message_size=8 * 1024 * 1024) as one,
            wire.connect("r2", max_message_size=8 * 1024 * 1024) as two,
        ):
            for data in raw:
                assert await net.send_raw_to_clients(data) == 2
            for ws in (one, two):
                for data in raw:
                    assert await ws.get_message() == data


async def test_drop_all_connections(net: LocalNetwork, wire: Wire) -> None:
    with trio.fail_after(TIMEOUT):
        async with wire.connect("d1") as one, wire.connect("d2") as two:
            assert await net.drop_all_connections(reset=False) == 2
            for ws in (one, two):
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1006
        assert net.connected_sockets == 0
        async with wire.connect("d3") as three:
            assert await net.close_all_connections(4000, "bye") == 1
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await three.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 4000


# --- a bare wsproto client ------------------------------------------------------------------------


async def test_bare_wsproto_client_fragments_and_invalid_utf8(
    net: LocalNetwork, wire: Wire, make_request: Callable[..., LLMJobRequest]
) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", net.port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            pending: deque[Event] = deque()

            async def next_event() -> Event:
                while not pending:
                    data = await stream.receive_some()
                    ws.receive_data(bytes(data) if data else None)
                    pending.extend(ws.events())
                return pending.popleft()

            headers = [(b"api-key", net.api_key.encode())]
            request = Request(host="localnet", target="/?appId=bare", extra_headers=headers)
            await stream.send_all(ws.send(request))
            assert isinstance(await next_event(), AcceptConnection)
            for expected in (Authenticated, SwarmLLMModels):
                event = await next_event()
                assert isinstance(event, BytesMessage)
                assert isinstance(wire.decode(bytes(event.data)), expected)

            text = encode_client_message(make_request("FRAG", "in pieces")).decode()
            await stream.send_all(ws.send(TextMessage(data=text[:20], message_finished=False)))
            await stream.send_all(ws.send(TextMessage(data=text[20:], message_finished=True)))
            while True:
                event = await next_event()
                assert isinstance(event, BytesMessage)
                message = wire.decode(bytes(event.data))
                if isinstance(message, LLMJobResult):
                    break
            await stream.send_all(ws.send(Ping(b"hi")))
            assert await next_event() == Pong(b"hi")

            # A masked text frame whose payload is not UTF-8 (mask key 0 keeps it as is).
            await stream.send_all(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
            closing = await next_event()
            assert isinstance(closing, CloseConnection)
            assert closing.code == 1007
    await net.wait_until(lambda: net.connected_sockets == 0)
    assert net.job_records[-1].outcome == "completed"
