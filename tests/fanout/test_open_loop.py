"""Open-loop fan-out (``FanoutOptions.schedule``) against localnet, in virtual time
(``MockClock(autojump_threshold=0)``, the client on localnet's in-memory connections): arrivals
keep their schedule while the server falls behind, ``max_concurrency`` holds items back and
counts them, a starved client is reported not valid, and the run's other machinery (retries,
journal, ordered output, stopping, dedup) still works."""

from __future__ import annotations

import gc
import resource
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Sequence, Set as AbstractSet
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from helpers import MODEL, client_for, client_in_memory, local_network

import trio_sogni
from trio_sogni.fanout import (
    ConstantRate,
    FanoutItem,
    FanoutOptions,
    FanoutResult,
    ItemMetrics,
    Poisson,
    RunReport,
    RunStats,
    TraceReplay,
    open_fanout,
)
from trio_sogni.localnet import FirehoseWorker, LocalNetwork, Pause, Stall, Step, Text


@asynccontextmanager
async def env(**net_kwargs: Any) -> AsyncIterator[tuple[LocalNetwork, trio_sogni.SogniClient]]:
    """A local network (4 simulated workers of capacity 8 unless told) and an in-memory
    client."""
    net_kwargs.setdefault("workers", 4)
    net_kwargs.setdefault("capacity", 8)
    async with (
        local_network(listen=False, **net_kwargs) as net,
        client_in_memory(net) as sogni,
    ):
        await sogni.chat.wait_for_models()
        yield net, sogni


def items(n: int, text: str = "question {i}") -> list[FanoutItem]:
    return [
        FanoutItem(
            index=i,
            id=f"item-{i}",
            model=MODEL,
            messages=[{"role": "user", "content": text.format(i=i)}],
        )
        for i in range(n)
    ]


def user_text(request: Any) -> str:
    content = request.messages[-1].content
    return content if isinstance(content, str) else ""


async def run_all(
    sogni: trio_sogni.SogniClient, inputs: list[FanoutItem], options: FanoutOptions
) -> tuple[list[FanoutResult], RunReport]:
    async with open_fanout(sogni, inputs, options) as run:
        results = [r async for r in run]
    return results, run.report()


def by_index(results: list[FanoutResult]) -> list[FanoutResult]:
    return sorted(results, key=lambda r: r.index)


def sched(result: FanoutResult) -> float:
    assert result.metrics.sched is not None
    return result.metrics.sched


def from_sched(result: FanoutResult) -> float:
    assert result.metrics.ttft_from_sched is not None
    return result.metrics.ttft_from_sched


def one_slow_worker(request: Any) -> Sequence[Step]:
    return [Pause(0.5), Text("answer")]


async def test_arrivals_keep_their_schedule_while_the_server_falls_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One worker of capacity 1 needs 0.5 s per job; 10 req/s arrive anyway. The server's queue
    grows, and so does TTFT from the schedule; the closed loop with one worker hides it."""
    with trio.fail_after(60):
        async with env(workers=1, capacity=1, script=one_slow_worker) as (net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0), stream=True)
            results, report = await run_all(sogni, items(20), options)
            closed, closed_report = await run_all(sogni, items(20), FanoutOptions(concurrency=1))
    results = by_index(results)
    assert [r.status for r in results] == ["ok"] * 20
    for i, r in enumerate(results):
        assert sched(r) == pytest.approx(i * 0.1)  # sent on schedule, not after the answers
        assert r.metrics.lag == 0.0
        assert r.metrics.held == 0.0
        assert r.metrics.queue_time == pytest.approx(0.0)  # no client-side queue
    waits = [from_sched(r) for r in results]
    assert waits == sorted(waits)
    assert waits[0] == pytest.approx(0.5, abs=0.05)
    # item i starts after i jobs of 0.5 s, and was scheduled at 0.1 i
    assert waits[-1] == pytest.approx(20 * 0.5 - 1.9, abs=0.2)
    assert report.schedule == {"kind": "constant", "rate": 10.0}
    assert report.offered_rps == pytest.approx(10.0)
    assert report.sent_rps == pytest.approx(10.0)
    assert report.valid, report.invalid_reasons
    assert report.lag.count == 20
    assert report.lag.max == 0.0
    assert report.loop_lag.count > 0
    assert report.held_back == 0
    assert report.ttft_from_sched.max == pytest.approx(waits[-1], rel=0.011)
    assert report.peak_in_flight > 10  # requests waiting in the server's queue
    # closed loop: each request waits for the previous answer; its latency looks constant
    assert {round(from_sched(r), 2) for r in closed} == {0.5}
    assert closed_report.schedule is None
    assert closed_report.lag.count == 0
    assert closed_report.valid
    assert all(r.metrics.lag is None for r in closed)
    assert len(net.job_requests) == 40


async def test_max_concurrency_holds_items_back_and_counts_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with env(script=lambda request: [Pause(1.0), Text("answer")]) as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0), max_concurrency=2)
            results, report = await run_all(sogni, items(10), options)
    results = by_index(results)
    assert [r.status for r in results] == ["ok"] * 10
    assert report.peak_in_flight == 2
    assert report.held_back == 8  # all but the first two were due while both slots were busy
    for i, r in enumerate(results):
        m = r.metrics
        assert sched(r) == pytest.approx(i * 0.1)  # still the intended time
        assert m.lag == pytest.approx(0.0)  # held back is not lag
        assert m.held is not None
        assert m.queue_time is not None
        assert m.queue_time >= m.held
        if i >= 2:
            # slots free at 1.0, 1.1, 2.0, 2.1, ...: item i starts at (i // 2) + 0.1 (i % 2)
            start = i // 2 + 0.1 * (i % 2)
            assert m.held == pytest.approx(start - i * 0.1)
            assert m.queue_time == pytest.approx(start - i * 0.1)
        else:
            assert m.held == 0.0
    assert report.queue_time.max == pytest.approx(4.1 - 0.9, rel=0.011)  # item 9
    assert report.sent_rps is not None
    assert report.sent_rps < 0.9 * 10.0  # the cap slowed the sending ...
    assert report.valid, report.invalid_reasons  # ... but that is the cap, not the client
    assert report.concurrency_history[0][1:] == (2, "open_loop")


async def starve(clock: trio.testing.MockClock, every: float, block: float) -> None:
    """Every ``every`` seconds, hold the event loop for ``block`` seconds: the virtual clock
    jumps inside one task step, as a synchronous busy-wait would (timers fire late)."""
    while True:
        await trio.sleep(every)
        clock.jump(block)


@pytest.mark.parametrize("starved", [False, True])
async def test_lag_detection_trips_only_when_the_client_is_starved(
    autojump_clock: trio.testing.MockClock, starved: bool
) -> None:
    with trio.fail_after(60):
        async with env() as (_net, sogni), trio.open_nursery() as nursery:
            if starved:
                nursery.start_soon(starve, autojump_clock, 0.1, 0.03)
            options = FanoutOptions(schedule=Poisson(200.0), seed=5)
            results, report = await run_all(sogni, items(400), options)
            nursery.cancel_scope.cancel()
    assert len(results) == 400
    assert report.lag.count == 400
    assert report.lag.p99 is not None
    assert report.loop_lag.p99 is not None
    if not starved:
        assert report.valid, report.invalid_reasons
        assert report.lag.max == 0.0
        assert report.loop_lag.max == 0.0
        return
    assert not report.valid
    assert 0.005 < report.lag.p99 <= 0.03 * 1.011
    assert 0.005 < report.loop_lag.p99 <= 0.03 * 1.011
    assert [reason.split(" p99")[0] for reason in report.invalid_reasons] == [
        "scheduling lag",
        "event-loop lag",
    ]
    assert "fell behind" in report.invalid_reasons[0]
    late = [r for r in results if r.metrics.lag]
    assert late
    assert all(0 < (r.metrics.lag or 0) <= 0.03 + 1e-9 for r in late)


def test_a_send_rate_shortfall_without_hold_back_is_invalid() -> None:
    async def main() -> tuple[RunReport, RunReport]:
        reports: list[RunReport] = []
        for held in (False, True):
            stats = RunStats(FanoutOptions(schedule=ConstantRate(100.0), lag_threshold=10.0))
            for i in range(100):  # intended every 10 ms, sent every 20 ms
                intended = i * 0.01
                dispatch = i * 0.02
                wait = dispatch - intended if held else 0.0  # the cap held it that long
                m = ItemMetrics(t_intended=intended, t_dispatch=dispatch, held=wait)
                stats.note_dispatch(m)
            reports.append(stats.report(concurrency_history=[], peak_in_flight=0))
        return reports[0], reports[1]

    free, capped = trio.run(main)
    assert free.offered_rps == pytest.approx(100.0)
    assert free.sent_rps == pytest.approx(50.0)
    assert not free.valid
    assert free.invalid_reasons == [
        "sent 50.000 req/s < 90 % of the offered 100.000 req/s (nothing held back): "
        "the client could not keep up"
    ]
    assert capped.held_back == 99
    assert capped.valid  # the cap held items back: not the client's fault


async def test_rows_carry_derived_metrics_and_chunk_times_only_on_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with env(tokens_per_second=10.0) as (_net, sogni):
            schedule = ConstantRate(4.0)
            plain, _ = await run_all(sogni, items(4), FanoutOptions(schedule=schedule))
            options = FanoutOptions(schedule=schedule, chunk_times=True)
            timed, report = await run_all(sogni, items(4), options)
    for r in plain:
        assert r.metrics.chunk_times is None
        assert r.metrics.chunks == 5
    for r in timed:
        m = r.metrics
        assert m.chunk_times is not None
        assert len(m.chunk_times) == m.chunks == 5
        assert m.chunk_times[0] == m.ttft
        assert m.e2el == m.chunk_times[-1]
        assert m.ttft == pytest.approx(0.1)  # 10 chunks/s
        assert m.itl_p50 == pytest.approx(0.1)
        assert m.itl_max == pytest.approx(0.1)
        assert m.ttst == pytest.approx(0.1)
        assert m.tpot is not None
        assert m.done is not None
        assert m.done == pytest.approx(sched(r) + 0.5)
        assert FanoutResult.from_json(r.to_json()) == r
    assert report.itl.count == 16


async def test_retries_deadlines_and_dedup_work_in_open_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: Counter[str] = Counter()

    def script(request: Any) -> Sequence[Step] | None:
        text = user_text(request)
        seen[text] += 1
        if text.startswith("stall") and seen[text] == 1:
            return [Stall()]  # the first attempt never answers: first_token_timeout, retried
        return [Pause(0.2), Text("answer")]

    inputs = items(4, "stall {i}") + items(4, "same")[:4]
    inputs = [
        FanoutItem(index=i, id=str(i), model=MODEL, messages=x.messages)
        for i, x in enumerate(inputs)
    ]
    with trio.fail_after(60):
        async with env(script=script) as (net, sogni):
            options = FanoutOptions(
                schedule=ConstantRate(100.0), first_token_timeout=0.5, backoff_base=0.01
            )
            results, report = await run_all(sogni, inputs, options)
    results = by_index(results)
    assert [r.status for r in results] == ["ok"] * 8
    assert [r.attempts for r in results[:4]] == [2] * 4
    assert report.retries == 4
    assert report.cached == 3  # four identical "same" items in flight together: one request
    assert sum(1 for r in net.job_requests if user_text(r) == "same") == 1
    for r in results:  # the followers never queued: they shared the leader's answer
        assert (r.metrics.queue_time is None) == r.cached


async def test_ordered_open_loop_emits_in_input_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: Any) -> Sequence[Step]:
        slow = int(user_text(request).split()[-1]) % 3 == 0
        return [Pause(1.0 if slow else 0.1), Text("answer")]

    with trio.fail_after(60):
        async with env(script=script) as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(20.0), ordered=True, reorder_window=4)
            results, report = await run_all(sogni, items(12), options)
    assert [r.index for r in results] == list(range(12))
    assert report.held_back > 0  # the reorder window is full behind each slow item
    assert all(r.metrics.lag == pytest.approx(0.0) for r in results)


class MemoryJournal:
    """A journal that says ``done`` items (default 0-2) are done and records what the runner
    tells it."""

    def __init__(self, done: AbstractSet[int] = frozenset({0, 1, 2})) -> None:
        self.done = done
        self.intents: list[int] = []
        self.outcomes: list[FanoutResult] = []

    def done_indices(self) -> AbstractSet[int]:
        return self.done

    async def record_intent(self, item: FanoutItem, key: str) -> None:
        self.intents.append(item.index)
        await trio.lowlevel.checkpoint()

    async def record_outcome(self, result: FanoutResult) -> None:
        self.outcomes.append(result)
        await trio.lowlevel.checkpoint()


async def test_journal_done_items_take_no_schedule_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = MemoryJournal()
    with trio.fail_after(60):
        async with env() as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0), emit_skipped=True)
            async with open_fanout(sogni, items(6), options, journal=journal) as run:
                results = [r async for r in run]
    statuses = {r.index: r.status for r in results}
    assert statuses == {0: "skipped", 1: "skipped", 2: "skipped", 3: "ok", 4: "ok", 5: "ok"}
    resumed = by_index([r for r in results if r.status == "ok"])
    assert [sched(r) for r in resumed] == pytest.approx([0.0, 0.1, 0.2])
    assert sorted(journal.intents) == [3, 4, 5]
    assert sorted(r.index for r in journal.outcomes) == [3, 4, 5]
    assert journal.outcomes[0].metrics.sched is not None  # journaled rows carry the summary


async def test_ordered_open_loop_with_journal_skips_keeps_the_reorder_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Item 0 is slow; 1,000 journal-done items follow it: the dispatcher waits for the window
    instead of piling skipped entries into the reorder buffer."""
    journal = MemoryJournal(frozenset(range(1, 1001)))

    def script(request: Any) -> Sequence[Step]:
        return [Pause(2.0 if user_text(request) == "question 0" else 0.1), Text("answer")]

    with trio.fail_after(60):
        async with env(script=script) as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0), ordered=True, reorder_window=4)
            async with open_fanout(sogni, items(1004), options, journal=journal) as run:
                results = [r async for r in run]
    assert [r.index for r in results] == [0, 1001, 1002, 1003]
    assert run.skipped == 1000
    assert run.reorder_peak <= 4
    assert [sched(r) for r in results] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # the three fell due while the window was full: held back (until 2.0 s), not late
    assert [r.metrics.held for r in results] == pytest.approx([0.0, 1.9, 1.8, 1.7])
    assert all(r.metrics.lag == 0.0 for r in results)
    report = run.report()
    assert report.held_back == 3
    assert report.valid, report.invalid_reasons


async def test_token_budget_and_rpm_hold_in_open_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The budget is never exceeded and ends the arrivals; ``rpm`` paces admission (the wait
    shows in the queue time) while the dispatcher keeps to the schedule."""
    inputs = [
        FanoutItem(
            index=i,
            id=str(i),
            model=MODEL,
            messages=[{"role": "user", "content": f"question {i}"}],
            params={"max_tokens": 20},
        )
        for i in range(40)
    ]
    with trio.fail_after(120):
        async with env() as (net, sogni):
            options = FanoutOptions(schedule=ConstantRate(50.0), budget_tokens=400)
            results, report = await run_all(sogni, inputs, options)
            sent_on_budget = len(net.job_requests)
            paced = FanoutOptions(schedule=ConstantRate(10.0), rpm=6.0)
            rpm_results, rpm_report = await run_all(sogni, inputs[:8], paced)
    used = sum(
        r.usage.prompt_tokens + r.usage.completion_tokens for r in results if r.usage is not None
    )
    assert used <= 400
    statuses = Counter(r.status for r in results)
    assert statuses["budget_exhausted"] > 0
    assert statuses["ok"] == sent_on_budget
    assert report.budget_exhausted == statuses["budget_exhausted"]
    # rpm=6: a bucket of 6 requests refilled at 0.1/s; the arrivals (10/s) keep their times
    assert {r.status for r in rpm_results} == {"ok"}
    assert rpm_report.lag.max == 0.0
    assert [sched(r) for r in by_index(rpm_results)] == pytest.approx([i / 10 for i in range(8)])
    waits = [r.metrics.queue_time for r in by_index(rpm_results)]
    assert waits[:6] == pytest.approx([0.0] * 6)
    assert waits[6:] == pytest.approx([10.0 - 0.6, 20.0 - 0.7])  # admitted at 10 s and 20 s
    assert rpm_report.valid


async def test_a_finite_trace_ends_the_run(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with env() as (_net, sogni):
            options = FanoutOptions(schedule=TraceReplay((0.0, 0.5, 0.5, 2.0)))
            results, report = await run_all(sogni, items(10), options)
    assert sorted(sched(r) for r in results) == [0.0, 0.5, 0.5, 2.0]
    assert report.items_total == 4
    assert report.schedule == {"kind": "trace", "count": 4, "span": 2.0}


async def test_stop_admitting_ends_the_arrivals(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with env(script=lambda request: [Pause(0.5), Text("answer")]) as (net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0))
            async with open_fanout(sogni, items(100), options) as run:

                async def stop_later() -> None:
                    await trio.sleep(1.05)
                    run.stop_admitting()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stop_later)
                    results = [r async for r in run]
    assert len(results) == 11  # sent at 0.0, 0.1, ..., 1.0
    assert {r.status for r in results} == {"ok"}  # requests already sent finish normally
    assert run.report().items_total == 11
    assert len(net.job_requests) == 11


async def test_cancel_in_flight_cancels_dispatched_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with env(script=lambda request: [Stall()]) as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(10.0))
            async with open_fanout(sogni, items(100), options) as run:
                await trio.sleep(0.55)
                run.cancel_in_flight()
                results = [r async for r in run]
    assert len(results) == 6
    assert {(r.status, r.error.type if r.error else None) for r in results} == {
        ("cancelled", "cancelled")
    }


async def test_the_timeline_counts_sends_completions_and_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with env(script=lambda request: [Pause(0.7), Text("answer")]) as (_net, sogni):
            options = FanoutOptions(schedule=ConstantRate(8.0), timeline_interval=1.0)
            _results, report = await run_all(sogni, items(24), options)
    timeline = report.timeline
    assert report.timeline_interval == 1.0
    assert [b.t for b in timeline] == [0.0, 1.0, 2.0, 3.0]
    assert [b.sent for b in timeline] == [8, 8, 8, 0]
    # sent at k/8, done 0.7 s later
    assert [b.ok for b in timeline] == [3, 8, 8, 5]
    assert [b.failed for b in timeline] == [0, 0, 0, 0]
    assert sum(b.output_tokens for b in timeline) == report.output_tokens
    assert max(b.in_flight for b in timeline) == 6  # ceil(0.7 s x 8 req/s)
    assert report.peak_in_flight == 6


class ItemTasks(trio.abc.Instrument):
    """Counts the open-loop item tasks alive (by name) and their peak."""

    def __init__(self) -> None:
        self.alive = 0
        self.peak = 0
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._run_item"):
            self.alive += 1
            self.spawned += 1
            self.peak = max(self.peak, self.alive)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._run_item"):
            self.alive -= 1


async def test_item_tasks_are_bounded_by_max_concurrency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counter = ItemTasks()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(120):
            async with env(script=lambda request: [Pause(0.5), Text("a")]) as (_net, sogni):
                options = FanoutOptions(
                    schedule=Poisson(400.0), seed=2, max_concurrency=32, dedup=False
                )
                results, report = await run_all(sogni, items(2000), options)
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert len(results) == 2000
    assert counter.spawned == 2000  # one task per item in process ...
    assert counter.peak == 32  # ... never more than the cap at once
    assert counter.alive == 0
    assert report.held_back > 1000
    assert report.valid, report.invalid_reasons


def test_run_stats_memory_does_not_grow_with_items() -> None:
    """The open-loop records (lag histogram, timeline, rates) and the result histograms of
    40,000 items cost about what 2,000 cost: no per-item storage."""

    def feed(stats: RunStats, start: int, n: int) -> None:
        for i in range(start, start + n):
            t = i * 0.25  # 10,000 s for 40,000 items: the timeline coarsens
            m = ItemMetrics(t_sched=t, t_intended=t, t_dispatch=t + (i % 7) * 1e-4, t_admit=t)
            stats.note_dispatch(m)
            m.t_send = t + 0.001
            for k in range(4):
                m.note_chunk(t + 0.1 + k * 0.01 * (1 + i % 5))
            m.output_tokens = 4
            m.t_done = t + 0.2
            stats.add(FanoutResult(index=i, id=str(i), status="ok"), m)

    async def main() -> tuple[int, int]:
        stats = RunStats(FanoutOptions(schedule=Poisson(20.0)))
        feed(stats, 0, 2_000)
        stats.report(concurrency_history=[], peak_in_flight=0)
        tracemalloc.start()
        try:
            feed(stats, 2_000, 2_000)
            small = tracemalloc.get_traced_memory()[0]
            feed(stats, 4_000, 36_000)
            report = stats.report(concurrency_history=[], peak_in_flight=0)
            large = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert report.ok == 40_000
        assert report.lag.count == 40_000
        assert len(report.timeline) <= 2048
        return small, large

    small, large = trio.run(main)
    assert large - small < 256 * 1024, (small, large)


def rss() -> int:
    """The process's resident set size in bytes (Linux ``/proc``; else the peak RSS)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.slow
@pytest.mark.deadline(600)
async def test_100k_open_loop_items_flat_memory() -> None:
    """100,000 items, all due at once (the schedule outruns the process), through FirehoseWorker
    test doubles over loopback: ``max_concurrency`` holds them back, item tasks end with their
    items, and RSS does not grow after a warm-up."""
    n = 100_000
    workers = [FirehoseWorker(f"fh-{i}", capacity=256) for i in range(2)]
    counter = ItemTasks()
    trio.lowlevel.add_instrument(counter)
    try:
        async with (
            local_network(workers=workers, record_limit=100) as net,
            client_for(net) as sogni,
        ):
            await sogni.chat.wait_for_models()
            inputs = (
                FanoutItem(
                    index=i,
                    id=str(i),
                    model=MODEL,
                    messages=[{"role": "user", "content": f"q{i}"}],
                    params={"max_tokens": 1},
                )
                for i in range(n)
            )
            options = FanoutOptions(
                schedule=ConstantRate(1e7), max_concurrency=128, stream=False, dedup=False
            )
            done = 0
            samples: list[int] = []
            async with open_fanout(sogni, inputs, options) as run:
                async for result in run:
                    assert result.status == "ok"
                    done += 1
                    if done % 10_000 == 0:
                        gc.collect()
                        samples.append(rss())
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert done == n
    report = run.report()
    assert report.ok == n
    assert report.held_back > n // 2
    assert counter.spawned == n
    assert counter.peak <= 128
    assert len(report.timeline) <= 2048
    growth = max(samples[1:]) - samples[0]
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth} bytes over 90,000 items: {samples}"
