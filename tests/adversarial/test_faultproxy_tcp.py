"""The fault proxy's TCP mode, over real loopback TCP and in real time: each fault on its own
(latency with jitter, a bandwidth cap, a reset, a blackhole, a slow close), then a chaos run of
concurrent streams from the real client through the proxy to a real localnet server.

The proxy listens with ``trio.serve_tcp(proxy.handle, 0, host="127.0.0.1")``; its upstream is a
TCP connection to the server (an echo server for the single faults, localnet for the chaos run).
Times are real, so each bound is checked from below exactly (a fault can never make things
faster) and from above with slack for a loaded machine.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import trio
from faultproxy import FaultProxy, Faults
from helpers import MODEL, local_network

import trio_sogni
from trio_sogni import ChatJobError, SogniError
from trio_sogni.localnet import default_reply_text

LOOPBACK = "127.0.0.1"
SLACK = 2.0
"""Seconds a real-time bound may be late by on a loaded 2-core machine."""


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    """Serve ``handler`` on a free loopback port; return the port."""
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, handler, 0, host=LOOPBACK)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


@asynccontextmanager
async def proxied_echo(seed: int = 0) -> AsyncIterator[tuple[FaultProxy, int]]:
    """An echo server behind a fault proxy, both on loopback TCP: yields the proxy and its
    port."""
    async with trio.open_nursery() as nursery:
        echo_port = await _serve(nursery, _echo)

        async def upstream() -> trio.abc.Stream:
            return await trio.open_tcp_stream(LOOPBACK, echo_port)

        proxy = FaultProxy(nursery, upstream, seed=seed)
        port = await _serve(nursery, proxy.handle)
        try:
            yield proxy, port
        finally:
            nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(65_536)
        assert chunk, f"the stream ended after {len(data)} of {size} bytes"
        data += chunk
    return data


async def until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything received until the stream ends (a reset counts as an end)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65_536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def test_tcp_latency_and_jitter_delay_each_direction_in_order() -> None:
    async with proxied_echo(seed=3) as (proxy, port):
        proxy.faults = Faults(latency=0.3, jitter=0.2)
        with trio.fail_after(10):
            async with await trio.open_tcp_stream(LOOPBACK, port) as stream:
                start = trio.current_time()
                for i in range(30):
                    await stream.send_all(b"%03d" % i)
                received = await receive_exactly(stream, 90)
                elapsed = trio.current_time() - start
        assert received == b"".join(b"%03d" % i for i in range(30))  # order kept under jitter
        assert 0.6 <= elapsed <= 1.0 + SLACK  # 0.3-0.5 s each way
        assert proxy.statistics.connections == 1


async def test_tcp_bandwidth_cap_paces_the_bytes() -> None:
    size, bandwidth = 40_000, 100_000.0
    async with proxied_echo() as (proxy, port):
        proxy.faults = Faults(bandwidth=bandwidth)
        with trio.fail_after(10):
            async with await trio.open_tcp_stream(LOOPBACK, port) as stream:
                start = trio.current_time()
                await stream.send_all(b"b" * size)
                received = await receive_exactly(stream, size)
                elapsed = trio.current_time() - start
        assert received == b"b" * size
        # Every byte crosses the cap twice (0.4 s per direction); the two directions may overlap.
        assert size / bandwidth <= elapsed <= 2 * size / bandwidth + SLACK
        assert proxy.statistics.bytes_forwarded == 2 * size


async def test_tcp_reset_cuts_both_sides_at_the_byte_count() -> None:
    async with proxied_echo() as (proxy, port):
        proxy.faults = Faults(reset_after=2_000)
        with trio.fail_after(10):
            async with await trio.open_tcp_stream(LOOPBACK, port) as stream:
                await stream.send_all(b"a" * 600)  # under the limit: echoed
                assert await receive_exactly(stream, 600) == b"a" * 600
                await stream.send_all(b"a" * 1_000)  # 1,200 + 1,000 crossed: cut at once
                start = trio.current_time()
                rest = await until_closed(stream)
                elapsed = trio.current_time() - start
        assert rest == b""  # nothing of the second message came back
        assert elapsed <= SLACK
        assert proxy.statistics.resets == 1
        assert proxy.live_connections == 0


async def test_tcp_blackhole_swallows_until_reset_all() -> None:
    async with proxied_echo() as (proxy, port):
        proxy.faults = Faults(blackhole=True)
        with trio.fail_after(10):
            async with await trio.open_tcp_stream(LOOPBACK, port) as stream:
                await stream.send_all(b"hello")
                with trio.move_on_after(1.0) as scope:
                    await stream.receive_some(65_536)
                assert scope.cancelled_caught  # half-open: no answer, no end
                assert proxy.live_connections == 1
                assert proxy.statistics.bytes_swallowed == 5
                assert proxy.reset_all() == 1
                assert await until_closed(stream) == b""
        assert proxy.live_connections == 0


async def test_tcp_slow_close_holds_the_end_back() -> None:
    delay = 1.0
    async with proxied_echo() as (proxy, port):
        proxy.faults = Faults(slow_close=delay)
        with trio.fail_after(10):
            async with await trio.open_tcp_stream(LOOPBACK, port) as stream:
                await stream.send_all(b"bye")
                assert await receive_exactly(stream, 3) == b"bye"
                await stream.send_eof()  # the client is done sending
                start = trio.current_time()
                assert await until_closed(stream) == b""
                elapsed = trio.current_time() - start
        assert delay <= elapsed <= delay + SLACK
        assert proxy.live_connections == 0


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.slow
@pytest.mark.deadline(240)  # real seconds; the run takes about 25
async def test_chaos_100_streams_through_the_tcp_proxy() -> None:
    """100 concurrent streams from the real client through the proxy (loopback TCP) to a real
    localnet server, while the proxy resets, delays, throttles and blackholes the connection at
    random for about 20 s of real time. Invariants: every job ends within its bound with its full
    text or a typed error; no state is left on the client, the server or the proxy; only
    completed jobs are billed, each exactly once."""
    rng = random.Random(20261205)
    jobs, bound, chaos_seconds, price = 100, 60.0, 20.0, Decimal(1000)
    outcomes: dict[int, tuple[str, Any]] = {}
    durations: list[float] = []
    wall = time.perf_counter()
    async with (
        local_network(
            workers=4,
            capacity=32,
            tokens_per_second=10,
            meter_default_account=True,
            price_per_million_tokens=price,
            rebind_grace=2.0,
        ) as net,
        trio.open_nursery() as proxy_nursery,
    ):
        host, server_port = LOOPBACK, net.port
        before = net.balance(net.account.id)

        async def upstream() -> trio.abc.Stream:
            return await trio.open_tcp_stream(host, server_port)

        proxy = FaultProxy(proxy_nursery, upstream, seed=rng.randrange(1 << 30))
        proxy_port = await _serve(proxy_nursery, proxy.handle)
        options = trio_sogni.SocketOptions(
            ping_interval=2.0,
            ping_timeout=2.0,
            connect_timeout=5.0,
            authenticated_timeout=5.0,
            reconnect_initial_delay=0.2,
            reconnect_max_delay=2.0,
        )
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_options=options,
            socket_endpoint=f"ws://{LOOPBACK}:{proxy_port}/",
            rest_endpoint=net.rest_url,
        ) as sogni:
            with trio.fail_after(10):
                await sogni.chat.wait_for_models()

            async def job(i: int) -> None:
                await trio.sleep(rng.uniform(0.0, chaos_seconds - 2.0))
                start = trio.current_time()
                with trio.fail_after(bound):
                    try:
                        async with sogni.chat.completions.stream(
                            model=MODEL, messages=user("chaos over tcp")
                        ) as stream:
                            async for _ in stream:
                                pass
                        outcomes[i] = ("ok", stream)
                    except SogniError as exc:
                        outcomes[i] = ("error", exc)
                durations.append(trio.current_time() - start)

            faults_seen: Counter[str] = Counter()

            async def chaos() -> None:
                end = trio.current_time() + chaos_seconds
                while trio.current_time() < end:
                    await trio.sleep(rng.uniform(0.5, 2.0))
                    kind = rng.choice(["reset", "latency", "blackhole", "bandwidth", "calm"])
                    faults_seen[kind] += 1
                    if kind == "reset":
                        proxy.reset_all()
                    elif kind == "latency":
                        proxy.faults = Faults(latency=rng.uniform(0.02, 0.5), jitter=0.1)
                    elif kind == "bandwidth":
                        proxy.faults = Faults(bandwidth=rng.uniform(5_000, 100_000))
                    elif kind == "blackhole":
                        proxy.faults = Faults(blackhole=True)
                        await trio.sleep(rng.uniform(1.0, 4.0))
                        proxy.faults = Faults()
                        proxy.reset_all()
                    else:
                        proxy.faults = Faults()
                proxy.faults = Faults()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                for i in range(jobs):
                    nursery.start_soon(job, i)

            assert len(outcomes) == jobs
            expected = default_reply_text(user("chaos over tcp"))
            kinds = Counter(kind for kind, _ in outcomes.values())
            error_types: Counter[str] = Counter()
            for kind, value in outcomes.values():
                if kind == "ok":
                    assert value.content == expected
                else:
                    assert isinstance(value, SogniError)
                    if isinstance(value, ChatJobError):
                        assert value.error_type  # typed, never a bare failure
                        error_types[value.error_type] += 1
                    else:
                        error_types[type(value).__name__] += 1
            assert kinds["ok"] > 0
            assert kinds["error"] > 0, "the chaos never hurt a job: the test proves nothing"
            assert sogni.chat.statistics().live_jobs == 0
            completed_here = {v.job_id for k, v in outcomes.values() if k == "ok"}

        with trio.fail_after(30):
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
            await net.wait_until(lambda: net.statistics().connected_sockets == 0)
        records = list(net.job_records)
        completed_ids = [r.job_id for r in records if r.outcome == "completed"]
        assert len(completed_ids) == len(set(completed_ids)), "a job completed twice"
        # An id may also end once before, unanswered and unbilled (its 2 s rebind grace expired
        # before the client came back, and the client, which had nothing of it, sent it again).
        for job_id, n in Counter(r.job_id for r in records).items():
            if n > 1:
                outcomes_of = [r.outcome for r in records if r.job_id == job_id]
                assert outcomes_of.count("completed") <= 1
                assert set(outcomes_of) <= {"expired", "completed", "aborted"}, outcomes_of
        completed = set(completed_ids)
        assert completed_here <= completed
        costs = {v.cost.cost_in_token for k, v in outcomes.values() if k == "ok"}
        assert len(costs) == 1
        (unit,) = costs
        assert before - net.balance(net.account.id) == Decimal(str(unit)) * len(completed)
        with trio.fail_after(10):
            await proxy.wait_idle()  # the proxy's links end with their TCP connections
        stats = proxy.statistics
        print(
            f"\nchaos over TCP: {jobs} streams, {time.perf_counter() - wall:.1f} s real time; "
            f"client: {kinds['ok']} complete, {kinds['error']} typed errors {dict(error_types)}; "
            f"server: {len(completed)} completed and billed once each, "
            f"{Counter(r.outcome for r in records)}; longest job {max(durations):.1f} s "
            f"(bound {bound:.0f} s); proxy: {stats.connections} connections, {stats.resets} "
            f"resets, {stats.bytes_forwarded} bytes forwarded, {stats.bytes_swallowed} "
            f"swallowed; faults {dict(faults_seen)}"
        )
        proxy_nursery.cancel_scope.cancel()
