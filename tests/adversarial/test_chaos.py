"""Faults on the wire: the fault-injecting proxy itself, and a chaos run through it.

Everything runs in virtual time (``MockClock(autojump_threshold=0)``) on in-memory connections:
the client's socket goes through `faultproxy.FaultProxy` to localnet.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from faultproxy import FaultProxy, Faults
from helpers import MODEL, local_network

import trio_sogni
from trio_sogni import ChatJobError, SogniError
from trio_sogni.fanout import FanoutItem, FanoutOptions, Journal, ResultsWriter, open_fanout
from trio_sogni.localnet import LocalNetwork, default_reply_text

SOCKET = "ws://chaos.in-memory"
REST = "http://chaos.in-memory"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def upstream_of(net: LocalNetwork) -> Any:
    async def upstream() -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        return net.connect_in_memory()

    return upstream


async def _echo_server(stream: trio.abc.Stream) -> None:
    async with stream:
        async for data in stream:
            await stream.send_all(data)


async def _echo_upstream(nursery: trio.Nursery) -> trio.abc.Stream:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(_echo_server, server)
    await trio.lowlevel.checkpoint()
    return client


async def test_latency_jitter_and_bandwidth_delay_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy(nursery, lambda: _echo_upstream(nursery), seed=1)
        proxy.faults = Faults(latency=0.5, jitter=0.2)
        stream = await proxy.open_stream("x", 0, None)
        start = trio.current_time()
        for i in range(20):
            await stream.send_all(b"%03d" % i)
        received = b""
        while len(received) < 60:
            received += await stream.receive_some()
        # Both directions add 0.5-0.7 s; order is kept.
        assert received == b"".join(b"%03d" % i for i in range(20))
        assert 1.0 <= trio.current_time() - start <= 1.4 + 0.01
        proxy.faults = Faults(bandwidth=1000)
        start = trio.current_time()
        await stream.send_all(b"x" * 500)
        got = 0
        while got < 500:
            got += len(await stream.receive_some())
        assert trio.current_time() - start == pytest.approx(1.0, abs=0.01)  # 0.5 s each way
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_reset_blackhole_and_slow_close(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        proxy = FaultProxy(nursery, lambda: _echo_upstream(nursery))
        proxy.faults = Faults(reset_after=10)
        stream = await proxy.open_stream("x", 0, None)
        await stream.send_all(b"0123456789abc")
        assert await stream.receive_some() == b""  # cut: the client sees the end at once
        assert proxy.statistics.resets == 1
        await stream.aclose()

        proxy.faults = Faults(blackhole=True)
        stream = await proxy.open_stream("x", 0, None)
        await stream.send_all(b"hello")
        with trio.move_on_after(30) as scope:
            await stream.receive_some()
        assert scope.cancelled_caught  # half-open: nothing comes back, nothing closes
        assert proxy.statistics.bytes_swallowed == 5
        assert proxy.reset_all() == 1
        assert await stream.receive_some() == b""
        await stream.aclose()

        proxy.faults = Faults(slow_close=2.0)
        stream = await proxy.open_stream("x", 0, None)
        await stream.aclose()
        await trio.sleep(1.9)
        assert proxy.live_connections == 1  # the end is held back ...
        await trio.sleep(0.2)
        assert proxy.live_connections == 0  # ... for 2 s
        nursery.cancel_scope.cancel()


@pytest.mark.deadline(900)  # virtual seconds; about 5 s of real time
@pytest.mark.parametrize("resume_window", [0.0, 30.0])
async def test_chaos_500_streams_through_random_faults(
    autojump_clock: trio.testing.MockClock, resume_window: float
) -> None:
    """500 concurrent streams for 60 virtual seconds while the proxy cuts, stalls, slows and
    half-opens the connection at random. Invariants: every job ends within its bound with its
    full text or a typed error; no client or server state is left; nothing is billed twice and
    only completed jobs are billed. Without resuming (``resume_window=0``) the faults fail
    jobs; with it, jobs are resumed after each reconnect with nothing lost or repeated."""
    rng = random.Random(20261204)
    jobs, bound, price = 500, 180.0, Decimal(1000)
    outcomes: dict[int, tuple[str, Any]] = {}
    async with (
        local_network(
            listen=False,
            workers=8,
            capacity=64,
            tokens_per_second=10,
            meter_default_account=True,
            price_per_million_tokens=price,
            rebind_grace=30.0 if resume_window else 1.0,
        ) as net,
        trio.open_nursery() as proxy_nursery,
    ):
        before = net.balance(net.account.id)
        proxy = FaultProxy(proxy_nursery, upstream_of(net), seed=rng.randrange(1 << 30))
        options = trio_sogni.SocketOptions(
            ping_interval=3.0,
            ping_timeout=3.0,
            connect_timeout=5.0,
            authenticated_timeout=5.0,
            reconnect_initial_delay=0.5,
            reconnect_max_delay=4.0,
        )
        async with trio_sogni.open_sogni_client(
            api_key=net.api_key,
            open_stream=proxy.open_stream,
            socket_options=options,
            socket_endpoint=SOCKET,
            rest_endpoint=REST,
            resume_window=resume_window,
        ) as sogni:
            await sogni.chat.wait_for_models()

            async def job(i: int) -> None:
                await trio.sleep(rng.uniform(0.0, 50.0))
                with trio.fail_after(bound):
                    try:
                        async with sogni.chat.completions.stream(
                            model=MODEL, messages=user("chaos")
                        ) as stream:
                            async for _ in stream:
                                pass
                        outcomes[i] = ("ok", stream)
                    except SogniError as exc:
                        outcomes[i] = ("error", exc)

            async def chaos() -> None:
                end = trio.current_time() + 60.0
                while trio.current_time() < end:
                    await trio.sleep(rng.uniform(1.0, 4.0))
                    kind = rng.choice(["reset", "latency", "blackhole", "bandwidth", "calm"])
                    if kind == "reset":
                        proxy.reset_all()
                    elif kind == "latency":
                        proxy.faults = Faults(latency=rng.uniform(0.05, 1.0), jitter=0.3)
                    elif kind == "bandwidth":
                        proxy.faults = Faults(bandwidth=rng.uniform(2_000, 50_000))
                    elif kind == "blackhole":
                        proxy.faults = Faults(blackhole=True)
                        await trio.sleep(rng.uniform(2.0, 8.0))
                        proxy.faults = Faults()
                        proxy.reset_all()
                    else:
                        proxy.faults = Faults()
                proxy.faults = Faults()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                for i in range(jobs):
                    nursery.start_soon(job, i)

            # Every job ended, within its bound (fail_after above), with full text or a typed error.
            assert len(outcomes) == jobs
            expected = default_reply_text(user("chaos"))
            kinds = Counter(kind for kind, _ in outcomes.values())
            for kind, value in outcomes.values():
                if kind == "ok":
                    assert value.content == expected
                else:
                    assert isinstance(value, SogniError)
                    if isinstance(value, ChatJobError):
                        assert value.error_type  # typed, never a bare failure
            statistics = sogni.chat.statistics()
            assert kinds["ok"] > 0
            if resume_window:
                # Every fault (cut, or stall detected by the ping) is shorter than the window.
                assert kinds["ok"] == jobs, Counter(
                    str(v) for k, v in outcomes.values() if k != "ok"
                )
                assert statistics.jobs_resumed > 0, "nothing was resumed: the test proves nothing"
                assert statistics.jobs_not_resumed == 0
            else:
                assert kinds["error"] > 0, "the chaos never hurt a job: the test proves nothing"
            assert statistics.live_jobs == 0
            assert statistics.detached_jobs == 0
            completed_here = {v.job_id for k, v in outcomes.values() if k == "ok"}

        with trio.fail_after(60):
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
        # Billing: only completed jobs are billed, each once, all at the same price.
        records = list(net.job_records)
        ids = [r.job_id for r in records]
        assert len(ids) == len(set(ids)), "a job ended twice on the server"
        completed = {r.job_id for r in records if r.outcome == "completed"}
        assert completed_here <= completed
        costs = {v.cost.cost_in_token for k, v in outcomes.values() if k == "ok"}
        assert len(costs) == 1
        (unit,) = costs
        spent = before - net.balance(net.account.id)
        assert spent == Decimal(str(unit)) * len(completed)
        proxy_nursery.cancel_scope.cancel()


@pytest.mark.deadline(900)  # virtual seconds
async def test_fanout_under_chaos_records_each_item_exactly_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A journaled fan-out of 300 items through the same random faults, then a resume that
    retries the failures: the journal holds exactly one final outcome per item, the results file
    exactly one line per item, and every ``ok`` carries the full text. (Jobs are not resumed
    across reconnects here, ``resume_window=0``, so that the faults do fail items.)"""
    rng = random.Random(42)
    journal_path, results_path = tmp_path / "journal.jsonl", tmp_path / "results.jsonl"
    items = [
        FanoutItem(index=i, id=f"row-{i}", model=MODEL, messages=user(f"q{i}"), params={})
        for i in range(300)
    ]
    options = FanoutOptions(concurrency=48, max_attempts=3, backoff_base=0.2, stall_timeout=10)
    async with (
        local_network(listen=False, workers=8, capacity=32, tokens_per_second=10) as net,
        trio.open_nursery() as proxy_nursery,
    ):
        proxy = FaultProxy(proxy_nursery, upstream_of(net), seed=rng.randrange(1 << 30))
        socket_options = trio_sogni.SocketOptions(
            ping_interval=3.0,
            ping_timeout=3.0,
            reconnect_initial_delay=0.5,
            reconnect_max_delay=4.0,
        )

        async def chaos(seconds: float) -> None:
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                await trio.sleep(rng.uniform(1.0, 3.0))
                if rng.random() < 0.5:
                    proxy.reset_all()
                else:
                    proxy.faults = Faults(latency=rng.uniform(0.05, 0.5))
            proxy.faults = Faults()

        for resume in (False, True):
            async with trio_sogni.open_sogni_client(
                api_key=net.api_key,
                open_stream=proxy.open_stream,
                socket_options=socket_options,
                socket_endpoint=SOCKET,
                rest_endpoint=REST,
                resume_window=0,
            ) as sogni:
                await sogni.chat.wait_for_models()
                with (
                    Journal.open(
                        journal_path, resume, retry_failed=True, fsync_outcomes=False
                    ) as journal,
                    ResultsWriter.open(results_path, resume=resume, journal=journal) as writer,
                ):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(chaos, 0.0 if resume else 40.0)
                        async with open_fanout(sogni, items, options, journal=journal) as run:
                            async for result in run:
                                writer.write(result)
        proxy_nursery.cancel_scope.cancel()

    lines = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == list(range(300))  # one line per item
    assert all(line["status"] == "ok" for line in lines)  # the calm resume finished the rest
    for line in lines:
        assert line["content"] == default_reply_text(user(f"q{line['index']}"))
    records = [json.loads(line) for line in journal_path.read_text().splitlines()]
    outcomes = Counter(r["index"] for r in records if r["kind"] == "outcome")
    ok = Counter(r["index"] for r in records if r["kind"] == "outcome" and r["status"] == "ok")
    assert set(ok) == set(range(300))
    assert max(ok.values()) == 1  # never two successes for one item
    # Every success was sent after its intent was recorded (items failed fast by the circuit
    # breaker were never sent, so they need none).
    first_intent = {}
    for position, r in enumerate(records):
        if r["kind"] == "intent":
            first_intent.setdefault(r["index"], position)
    for position, r in enumerate(records):
        if r["kind"] == "outcome" and r["status"] == "ok":
            assert first_intent[r["index"]] < position
    assert sum(outcomes.values()) > 300, "the chaos never failed an item: the test proves nothing"
