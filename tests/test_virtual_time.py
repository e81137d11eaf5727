"""The client's timing, in virtual time: the real client on localnet's in-memory connections
(``open_stream`` and an in-memory httpx transport), under ``MockClock(autojump_threshold=0)``.

No TCP, no real sleeps: every timeout here fires at its exact virtual instant, so the tests
check the timing itself (backoff delays, the ping deadline, refresh before expiry), not just
that something happened eventually.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
import wsproto
from helpers import MODEL, client_in_memory, local_network
from wsproto.events import AcceptConnection, Request

import trio_sogni
from trio_sogni import AuthenticationError, ChatJobError, SessionTokens
from trio_sogni.localnet import DropConnection, Stall, Text, default_reply_text
from trio_sogni.protocol import Authenticated, encode_server_message

pytestmark = pytest.mark.parametrize("engine", ["fast", "trio-websocket"])


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_in_memory_client_streams(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    async with (
        local_network(listen=False, tokens_per_second=10) as net,
        client_in_memory(net, engine) as sogni,
    ):
        start = trio.current_time()
        with trio.fail_after(60):
            async with sogni.chat.completions.stream(model=MODEL, messages=user("hi")) as stream:
                chunks = [chunk async for chunk in stream]
        assert stream.content == default_reply_text(user("hi"))
        # Paced at 10 tokens/s by the server, in virtual time: one token per 0.1 s.
        assert trio.current_time() - start == pytest.approx(len(chunks) * 0.1, rel=0.2)
        me = await sogni.account.me()  # REST in memory as well
        assert me.username is not None


@pytest.mark.deadline(300)  # seven backoff steps add up to about 75 virtual seconds
async def test_reconnect_backoff_doubles_to_the_cap_with_jitter(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    failures = 7
    attempts: list[float] = []

    def script(request: Any) -> Any:
        return [Stall()] if request.messages[-1].content == "x" else None

    async with local_network(listen=False, script=script) as net:

        async def flaky(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            attempts.append(trio.current_time())
            if 1 < len(attempts) <= 1 + failures:
                raise OSError("connection refused")
            return net.connect_in_memory()

        options = trio_sogni.SocketOptions(engine=engine)  # type: ignore[arg-type]
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_endpoint="ws://localnet.in-memory",
            rest_endpoint="http://localnet.in-memory",
            socket_options=options,
            open_stream=flaky,
            resume_window=0,  # fail jobs at once (resuming is tested below)
        ) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            )
            with trio.fail_after(5):
                await net.wait_until(lambda: net.statistics().running_jobs == 1)
            dropped = trio.current_time()
            await net.close_all_connections(1011, "internal error")
            with pytest.raises(ChatJobError) as info:
                await stream.wait()
            assert info.value.error_type == "transport_lost"
            assert trio.current_time() == dropped  # failed at once, not after a timeout
            await stream.aclose()
            with trio.fail_after(120):
                await net.wait_until(lambda: net.statistics().connected_sockets == 1)
            assert len(attempts) == failures + 2
            # Each retry waits min(1 s * 2**n, 15 s), +-20 % jitter (the official SDK's schedule).
            delays = [b - a for a, b in zip([dropped, *attempts[1:]], attempts[1:], strict=False)]
            for n, delay in enumerate(delays):
                nominal = min(2.0**n, 15.0)
                assert 0.8 * nominal - 0.02 <= delay <= 1.2 * nominal + 0.02, (n, delays)
            # Connected again: new work flows.
            with trio.fail_after(10):
                result = await sogni.chat.completions.create(model=MODEL, messages=user("again"))
            assert result.content == default_reply_text(user("again"))


async def _silent_peer(
    stream: trio.abc.Stream, connected: list[float], reconnected: trio.Event
) -> None:
    """A WebSocket server that authenticates the socket, then never reads or answers again."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(e, Request) for e in conn.events()):
            break
    await stream.send_all(conn.send(AcceptConnection()))
    message = wsproto.events.BytesMessage(data=encode_server_message(Authenticated()))
    await stream.send_all(conn.send(message))
    connected.append(trio.current_time())
    if len(connected) == 2:
        reconnected.set()
    await trio.sleep_forever()


async def test_missing_pong_fails_jobs_at_the_ping_deadline(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    connected: list[float] = []
    reconnected = trio.Event()
    async with trio.open_nursery() as nursery:

        async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(_silent_peer, server, connected, reconnected)
            await trio.lowlevel.checkpoint()
            return client

        options = trio_sogni.SocketOptions(
            engine=engine,  # type: ignore[arg-type]
            ping_interval=2.0,
            ping_timeout=3.0,
            reconnect_initial_delay=1.0,
            close_timeout=0.5,
        )
        async with trio_sogni.open_sogni_client(
            api_key="k",
            socket_endpoint="ws://silent.in-memory",
            rest_endpoint="http://silent.in-memory",
            socket_options=options,
            open_stream=open_stream,
            resume_window=0,  # fail jobs with their connection (resuming is tested below)
        ) as sogni:
            start = trio.current_time()
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=user("x"), stream=True
            )
            with trio.fail_after(60), pytest.raises(ChatJobError) as info:
                await stream.wait()
            failed = trio.current_time() - start
            assert info.value.error_type == "transport_lost"
            # The first ping leaves at 2 s; no pong by 2 + 3 s kills the connection.
            assert 5.0 <= failed <= 5.0 + options.close_timeout + 0.01, failed
            await stream.aclose()
            with trio.fail_after(60):
                await reconnected.wait()
            # ... and it reconnected by itself after one backoff step (1 s +-20 %).
            assert 0.8 <= connected[1] - (start + failed) <= 1.2 + 0.01
        nursery.cancel_scope.cancel()


async def test_a_deadline_around_a_non_streaming_call_aborts_at_that_instant(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    async with (
        local_network(listen=False, workers=1, script=lambda r: [Text("partial "), Stall()]) as net,
        client_in_memory(net, engine) as sogni,
    ):
        start = trio.current_time()
        with trio.move_on_after(7.5) as scope:
            await sogni.chat.completions.create(model=MODEL, messages=user("x"))
        assert scope.cancelled_caught
        assert trio.current_time() - start == pytest.approx(7.5)
        with trio.fail_after(5):
            await net.wait_until(lambda: len(net.cancelled_job_ids) == 1)
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
        assert sogni.chat.statistics().live_jobs == 0


async def test_a_dropped_connection_fails_the_job_at_once_and_work_resumes(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    def script(request: Any) -> Any:
        return (
            [Text("one two "), DropConnection()] if "drop" in request.messages[-1].content else None
        )

    async with (
        local_network(listen=False, script=script) as net,
        client_in_memory(net, engine, resume_window=0) as sogni,
    ):
        stream = await sogni.chat.completions.create(
            model=MODEL, messages=user("drop"), stream=True
        )
        async with stream:
            with pytest.raises(ChatJobError) as info:
                async for _ in stream:
                    pass
        assert info.value.retryable
        assert stream.content == "one two "
        lost = trio.current_time()
        result = await sogni.chat.completions.create(model=MODEL, messages=user("after"))
        assert result.content == default_reply_text(user("after"))
        # The reconnect waited one backoff step (1 s +-20 %), not longer.
        assert trio.current_time() - lost <= 1.2 + 1.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_session_refresh_mid_stream(
    autojump_clock: trio.testing.MockClock, engine: str
) -> None:
    clock = _Clock()
    async with local_network(
        listen=False, clock=clock, access_token_ttl=600, tokens_per_second=20
    ) as net:
        net.add_account("dave", password="correct horse battery staple", balance=1000)
        pair = net.issue_tokens("dave")
        tokens = SessionTokens(pair.token, pair.refresh_token)
        async with client_in_memory(net, engine, tokens=tokens, wall_clock=clock) as sogni:
            results: list[str] = []

            async def job(i: int) -> None:
                text = f"job {i} " + "word " * 30
                async with sogni.chat.completions.stream(model=MODEL, messages=user(text)) as s:
                    async for _ in s:
                        pass
                results.append(s.content)

            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for i in range(5):
                        nursery.start_soon(job, i)
                    await net.wait_until(lambda: net.statistics().running_jobs >= 1)
                    clock.now += 590  # the access token is about to expire
                    me = await sogni.account.me()  # refreshes first, while the jobs stream
                    assert me.username == "dave"
                    assert len(results) < 5  # ... and the jobs were still streaming
            assert len(results) == 5
            assert sogni.account.tokens is not None
            assert sogni.account.tokens != tokens  # rotated
        # The old refresh token was revoked by the rotation: resuming the old session needs a
        # refresh (its access token is inside the margin) and fails, clearly, at once.
        with pytest.raises(AuthenticationError, match="session has ended"):
            async with client_in_memory(net, engine, tokens=tokens, wall_clock=clock):
                pass
