"""Jobs that survive a reconnect, from the client's side (virtual time, in-memory connections).

The client counts every frame of each job; when its connection dies, running jobs wait (up to
``resume_window``) and the next connection resumes them with ``resumeJobs`` (a localnet
extension). Nothing is lost or repeated; what cannot be resumed fails with a retryable, typed
``transport_lost`` error, never silently.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing
import wsproto
from faultproxy import FaultProxy, Faults
from helpers import MODEL, client_in_memory, local_network
from wsproto.events import AcceptConnection, Request

import trio_sogni
from trio_sogni import ChatJobError
from trio_sogni.localnet import DropConnection, Stall, Text, default_reply_text
from trio_sogni.protocol import Authenticated, encode_server_message

pytestmark = pytest.mark.parametrize("engine", ["fast", "trio-websocket"])


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_dropped_connection_is_resumed_with_nothing_lost_or_repeated(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    def script(request: Any) -> Any:
        return [Text("one two "), DropConnection(), Text("three "), Text("four")]

    async with (
        local_network(listen=False, script=script, rebind_grace=30.0) as net,
        client_in_memory(net, engine) as sogni,
    ):
        with trio.fail_after(30):
            async with sogni.chat.completions.stream(model=MODEL, messages=user("x")) as stream:
                chunks = [chunk.content or "" async for chunk in stream]
        assert "".join(chunks) == "one two three four"
        assert stream.content == "one two three four"
        assert stream.final_result is not None
        statistics = sogni.chat.statistics()
        assert statistics.jobs_resumed == 1
        assert statistics.jobs_not_resumed == 0
        assert statistics.detached_jobs == 0
        assert [r.outcome for r in net.job_records] == ["completed"]


async def test_frames_lost_in_flight_are_resumed_exactly(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    """A half-open connection swallows frames until the ping gives up; the job goes on."""
    async with (
        local_network(listen=False, tokens_per_second=5, rebind_grace=30.0) as net,
        trio.open_nursery() as nursery,
    ):

        async def upstream() -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            return net.connect_in_memory()

        proxy = FaultProxy(nursery, upstream, seed=7)
        options = trio_sogni.SocketOptions(
            engine=engine,  # type: ignore[arg-type]
            ping_interval=1.0,
            ping_timeout=1.0,
            reconnect_initial_delay=0.5,
        )
        messages = user("tell me a long story about resuming jobs")
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_endpoint="ws://proxy.in-memory",
            rest_endpoint="http://proxy.in-memory",
            socket_options=options,
            open_stream=proxy.open_stream,
        ) as sogni:
            with trio.fail_after(60):
                async with sogni.chat.completions.stream(model=MODEL, messages=messages) as s:
                    seen = 0
                    async for _chunk in s:
                        seen += 1
                        if seen == 3:
                            proxy.faults = Faults(blackhole=True)  # frames die in flight
                            await trio.sleep(3)
                            proxy.faults = Faults()
                            proxy.reset_all()
            assert s.content == default_reply_text(messages)
            assert sogni.chat.statistics().jobs_resumed == 1
        assert proxy.statistics.bytes_swallowed > 0
        nursery.cancel_scope.cancel()


async def test_a_request_lost_in_flight_is_sent_again(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    async with (
        local_network(listen=False, rebind_grace=30.0, meter_default_account=True) as net,
        trio.open_nursery() as nursery,
    ):

        async def upstream() -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            return net.connect_in_memory()

        proxy = FaultProxy(nursery, upstream, seed=7)
        options = trio_sogni.SocketOptions(
            engine=engine,  # type: ignore[arg-type]
            ping_interval=1.0,
            ping_timeout=1.0,
            reconnect_initial_delay=0.5,
        )
        before = net.balance(net.account.id)
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_endpoint="ws://proxy.in-memory",
            rest_endpoint="http://proxy.in-memory",
            socket_options=options,
            open_stream=proxy.open_stream,
        ) as sogni:
            await sogni.chat.wait_for_models()
            proxy.faults = Faults(blackhole=True)  # the request never reaches the server
            with trio.fail_after(60):
                async with trio.open_nursery() as calm:
                    calm.start_soon(_calm_after, proxy, 3.0)
                    result = await sogni.chat.completions.create(model=MODEL, messages=user("q"))
            assert result.content == default_reply_text(user("q"))
            statistics = sogni.chat.statistics()
            assert statistics.requests_resent == 1
        # Sent twice, run once, billed once.
        assert [r.outcome for r in net.job_records] == ["completed"]
        assert result.cost is not None
        assert before - net.balance(net.account.id) == Decimal(str(result.cost.cost_in_token))
        nursery.cancel_scope.cancel()


async def _calm_after(proxy: FaultProxy, seconds: float) -> None:
    await trio.sleep(seconds)
    proxy.faults = Faults()
    proxy.reset_all()


async def test_a_job_not_resumed_within_the_window_fails_typed_at_that_instant(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    async with local_network(listen=False, script=lambda r: [Text("a"), Stall()]) as net:
        refusing = False

        async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            if refusing:
                raise OSError("connection refused")
            return net.connect_in_memory()

        options = trio_sogni.SocketOptions(engine=engine)  # type: ignore[arg-type]
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_endpoint="ws://localnet.in-memory",
            rest_endpoint="http://localnet.in-memory",
            socket_options=options,
            open_stream=open_stream,
            resume_window=12.0,
        ) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            )
            async with stream:
                assert (await stream.receive()).content == "a"
                refusing = True
                await net.close_all_connections(1011, "internal error")
                lost = trio.current_time()
                with pytest.raises(ChatJobError) as info:
                    await stream.wait()
            assert trio.current_time() - lost == pytest.approx(12.0)
            assert info.value.error_type == "transport_lost"
            assert info.value.retryable
            assert "not resumed within 12 s" in str(info.value)
            assert stream.content == "a"  # what arrived is kept
            statistics = sogni.chat.statistics()
            assert statistics.jobs_not_resumed == 1
            assert statistics.live_jobs == 0
            assert statistics.detached_jobs == 0


async def _plain_peer(stream: trio.abc.Stream, connections: list[float]) -> None:
    """A WebSocket server that authenticates the socket without ``jobResume`` (like the real
    network), answers pings, then drops the connection the first time, 2 s in."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(e, Request) for e in conn.events()):
            break
    await stream.send_all(conn.send(AcceptConnection()))
    message = wsproto.events.BytesMessage(data=encode_server_message(Authenticated()))
    await stream.send_all(conn.send(message))
    connections.append(trio.current_time())
    if len(connections) == 1:
        await trio.sleep(2)
        await stream.aclose()
        return
    await trio.sleep_forever()


async def test_a_server_that_does_not_resume_fails_the_job_typed_on_reconnect(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    connections: list[float] = []
    async with trio.open_nursery() as nursery:

        async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(_plain_peer, server, connections)
            await trio.lowlevel.checkpoint()
            return client

        options = trio_sogni.SocketOptions(
            engine=engine,  # type: ignore[arg-type]
            reconnect_initial_delay=1.0,
            ping_interval=60.0,
            close_timeout=0.5,
        )
        async with trio_sogni.open_sogni_client(
            api_key="k",
            socket_endpoint="ws://plain.in-memory",
            rest_endpoint="http://plain.in-memory",
            socket_options=options,
            open_stream=open_stream,
        ) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            )
            with trio.fail_after(60), pytest.raises(ChatJobError) as info:
                await stream.wait()
            # Not at the drop (2 s) but when the next connection said it does not resume.
            assert len(connections) == 2
            assert trio.current_time() == pytest.approx(connections[1], abs=0.01)
            assert info.value.error_type == "transport_lost"
            assert info.value.retryable
            assert "does not resume jobs" in str(info.value)
            await stream.aclose()
        nursery.cancel_scope.cancel()
