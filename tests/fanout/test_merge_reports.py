"""`merge_reports` (a split run equals the unsplit one in counts and histogram counts; timelines
aligned by ``t0_wall``), the histogram state (`HistogramData`) and the bounded `Timeline`, and
decoding of older reports and result rows."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network

from trio_sogni import InvalidRequestError
from trio_sogni.fanout import (
    MAX_TIMELINE_BUCKETS,
    ConstantRate,
    FanoutItem,
    FanoutOptions,
    FanoutResult,
    HistogramData,
    LogHistogram,
    RunReport,
    Timeline,
    merge_reports,
    open_fanout,
)
from trio_sogni.localnet import Pause, Text


def items(indices: range) -> list[FanoutItem]:
    return [
        FanoutItem(
            index=i, id=str(i), model=MODEL, messages=[{"role": "user", "content": f"q {i}"}]
        )
        for i in indices
    ]


async def run_report(sogni: Any, inputs: list[FanoutItem], rate: float) -> RunReport:
    options = FanoutOptions(schedule=ConstantRate(rate), max_concurrency=64)
    async with open_fanout(sogni, inputs, options) as run:
        async for _ in run:
            pass
    return run.report()


async def test_a_split_run_merges_to_the_unsplit_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = lambda request: [Pause(0.2), Text("one two three")]  # noqa: E731
    with trio.fail_after(60):
        async with (
            local_network(listen=False, workers=4, capacity=16, script=script) as net,
            client_in_memory(net) as sogni,
        ):
            await sogni.chat.wait_for_models()
            whole = await run_report(sogni, items(range(60)), 30.0)
            shards: list[RunReport] = []

            async def shard(k: int) -> None:
                shards.append(await run_report(sogni, items(range(k, 60, 3)), 10.0))

            async with trio.open_nursery() as nursery:
                for k in range(3):
                    nursery.start_soon(shard, k)
    merged = merge_reports(shards)
    for name in ("items_total", "ok", "failed", "input_tokens", "output_tokens", "held_back"):
        assert getattr(merged, name) == getattr(whole, name), name
    assert merged.ok == 60
    assert set(merged.histograms) == set(whole.histograms)
    for name, data in whole.histograms.items():
        if name == "loop_lag":
            continue  # one probe per process: three shards sampled three times as often
        assert merged.histograms[name].count == data.count, name
        summary = getattr(merged, name)
        assert summary.count == data.count, name
    assert merged.ttft.p50 == pytest.approx(whole.ttft.p50)
    assert merged.itl.count == 60 * 2
    assert merged.offered_rps == pytest.approx(30.0)  # three shards of 10 req/s at once
    assert sum(b.sent for b in merged.timeline) == 60
    assert sum(b.ok for b in merged.timeline) == 60
    assert merged.valid
    assert merged.schedule == {"kind": "constant", "rate": 10.0}
    assert merged.peak_in_flight == sum(s.peak_in_flight for s in shards)
    # the union span: shards started within real microseconds of each other (virtual time)
    assert merged.wall_time == pytest.approx(max(s.wall_time for s in shards), abs=0.05)
    assert merged.requests_per_s == pytest.approx(60 / merged.wall_time)
    assert [h[2] for h in merged.concurrency_history] == [
        "shard 0: open_loop",
        "shard 1: open_loop",
        "shard 2: open_loop",
    ]
    # encodable and decodable
    assert msgspec.json.decode(merged.to_json(), type=RunReport) == merged


def report(**fields: Any) -> RunReport:
    """A minimal report (closed-loop defaults) with ``fields`` replaced."""
    empty = LogHistogram().summary()
    base: dict[str, Any] = {
        "wall_time": 0.0,
        "items_total": 0,
        "ok": 0,
        "failed": 0,
        "cancelled": 0,
        "budget_exhausted": 0,
        "skipped": 0,
        "cached": 0,
        "requests_per_s": 0.0,
        "output_tokens_per_s": 0.0,
        "total_tokens_per_s": 0.0,
        "input_tokens": 0,
        "output_tokens": 0,
        "goodput_rps": 0.0,
        "slo_attainment": None,
        "slo": {},
        "queue_time": empty,
        "ttft": empty,
        "ttft_from_sched": empty,
        "ttst": empty,
        "itl": empty,
        "tpot": empty,
        "e2el": empty,
        "errors_by_class": {},
        "deadlines": {},
        "retries": 0,
        "retries_histogram": {},
        "succeeded_after_retry": 0,
        "spend_usd": 0.0,
        "projected_usd": None,
        "budget_usd": None,
        "budget_tokens": None,
        "concurrency_history": [],
        "peak_in_flight": 0,
    }
    base.update(fields)
    return RunReport(**base)


def timeline(interval: float, sent: list[int], in_flight: list[int] | None = None) -> Any:
    from trio_sogni.fanout import TimelineBucket

    flights = in_flight or [0] * len(sent)
    return [
        TimelineBucket(i * interval, s, s, 0, 10 * s, f)
        for i, (s, f) in enumerate(zip(sent, flights, strict=True))
    ]


def test_timelines_align_by_t0_wall_and_coarsen_to_the_largest_interval() -> None:
    a = report(
        t0_wall=1000.0,
        timeline_interval=1.0,
        timeline=timeline(1.0, [1, 2, 3, 4], [1, 5, 2, 0]),
        wall_time=4.0,
        ok=10,
    )
    b = report(
        t0_wall=1002.0,  # started 2 s later
        timeline_interval=0.5,
        timeline=timeline(0.5, [1, 1, 1, 1], [3, 1, 0, 0]),
        wall_time=2.0,
        wall_start=0.0,
        ok=4,
    )
    merged = merge_reports([a, b])
    assert merged.timeline_interval == 1.0
    assert [x.t for x in merged.timeline] == [0.0, 1.0, 2.0, 3.0]
    assert [x.sent for x in merged.timeline] == [1, 2, 3 + 2, 4 + 2]
    assert [x.output_tokens for x in merged.timeline] == [10, 20, 50, 60]
    # per shard the peak of the merged half-buckets, summed across shards
    assert [x.in_flight for x in merged.timeline] == [1, 5, 2 + 3, 0 + 0]
    assert merged.t0_wall == 1000.0
    assert merged.wall_time == pytest.approx(4.0)  # 1000 → 1004 covers b's 1002 → 1004
    assert merged.requests_per_s == pytest.approx(14 / 4.0)


def test_timelines_with_unrelated_intervals_are_refused() -> None:
    a = report(timeline_interval=1.0, timeline=timeline(1.0, [1]))
    b = report(timeline_interval=1.5, timeline=timeline(1.5, [1]))
    with pytest.raises(InvalidRequestError, match="power of two"):
        merge_reports([a, b])


def test_merged_timeline_stays_bounded() -> None:
    n = MAX_TIMELINE_BUCKETS
    a = report(t0_wall=0.0, timeline=timeline(1.0, [1] * n))
    b = report(t0_wall=float(n), timeline=timeline(1.0, [1] * n))  # right after a
    merged = merge_reports([a, b])
    assert len(merged.timeline) == n
    assert merged.timeline_interval == 2.0
    assert sum(x.sent for x in merged.timeline) == 2 * n


def test_sums_validity_and_errors() -> None:
    hist = LogHistogram()
    hist.extend([0.1, 0.2])
    a = report(
        ok=2,
        failed=1,
        items_total=3,
        errors_by_class={"worker_error": 1},
        deadlines={"total": 1},
        retries_histogram={"0": 2, "2": 1},
        wall_time=2.0,
        goodput_rps=0.5,  # one good item
        ttft=hist.summary(),
        histograms={"ttft": hist.to_data()},
        budget_usd=1.0,
        valid=False,
        invalid_reasons=["scheduling lag p99 ..."],
        concurrency_history=[(5.0, 4, "fixed")],
    )
    b = report(
        ok=1,
        items_total=1,
        errors_by_class={"worker_error": 2, "TooSlowError": 1},
        retries_histogram={"0": 1, "10": 1},
        wall_time=2.0,
        goodput_rps=0.5,
        budget_usd=None,
    )
    merged = merge_reports([a, b])
    assert merged.errors_by_class == {"worker_error": 3, "TooSlowError": 1}
    assert merged.deadlines == {"total": 1}
    assert merged.retries_histogram == {"0": 3, "2": 1, "10": 1}
    assert list(merged.retries_histogram) == ["0", "2", "10"]
    assert merged.goodput_rps == pytest.approx(2 / 2.0)
    assert merged.slo_attainment == pytest.approx(2 / 3)
    assert merged.ttft.count == 2
    assert merged.budget_usd is None  # not every shard had a budget
    assert not merged.valid
    assert merged.invalid_reasons == ["shard 0: scheduling lag p99 ..."]
    assert merged.concurrency_history == [(5.0, 4, "shard 0: fixed")]
    with pytest.raises(InvalidRequestError, match="at least one"):
        merge_reports([])
    old = report(ok=1, ttft=hist.summary())  # values, but no histograms
    with pytest.raises(InvalidRequestError, match="report 0 has ttft values but no histogram"):
        merge_reports([old])


def test_histogram_state_round_trips_and_merges_exactly() -> None:
    rng = random.Random(2)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(5000)] + [0.0, 1e-7]
    whole, left, right = LogHistogram(), LogHistogram(), LogHistogram()
    whole.extend(values)
    left.extend(values[:2000])
    right.extend(values[2000:])
    left.merge(right)
    assert left.to_data().buckets == whole.to_data().buckets
    assert left.count == whole.count
    assert left.to_data().tiny == whole.to_data().tiny == 2
    for q in (50, 90, 99, 100):
        assert left.percentile(q) == whole.percentile(q)
    data = whole.to_data()
    decoded = msgspec.json.decode(msgspec.json.encode(data), type=HistogramData)
    assert decoded == data  # int bucket keys survive JSON
    again = LogHistogram.from_data(decoded)
    assert again.summary() == whole.summary()
    empty = LogHistogram().to_data()
    assert (empty.count, empty.min, empty.max) == (0, None, None)
    assert LogHistogram.from_data(empty).summary().count == 0
    left.merge(LogHistogram())  # merging nothing changes nothing
    assert left.count == whole.count


def test_timeline_is_bounded_and_conserves_counts() -> None:
    tl = Timeline(0.5)
    tl.note_in_flight(0.0, 3)
    for k in range(20_000):
        tl.note_sent(k * 0.25)
        tl.note_done(k * 0.25 + 0.1, "ok" if k % 4 else "failed", 2)
    buckets = tl.buckets()
    assert len(buckets) <= MAX_TIMELINE_BUCKETS
    assert tl.interval == 4.0  # 5,000 s: 0.5 s buckets coarsened 3 times to fit 2,048
    assert sum(b.sent for b in buckets) == 20_000
    assert sum(b.ok for b in buckets) == 15_000
    assert sum(b.failed for b in buckets) == 5_000
    assert sum(b.output_tokens for b in buckets) == 40_000
    assert all(b.in_flight == 3 for b in buckets)  # the level carries over
    assert [b.t for b in buckets[:3]] == [0.0, 4.0, 8.0]
    tl.note_in_flight(9_999.0, 7)  # beyond 2,048 x 4 s: coarsened again
    assert tl.interval == 8.0
    extended = tl.buckets(until=10_010.0)
    assert extended[-1].t == 10_008.0
    assert extended[-1].in_flight == 7
    assert sum(b.sent for b in extended) == 20_000


def test_older_reports_and_result_rows_still_decode() -> None:
    current = json.loads(report(ok=1).to_json())
    for key in ("schedule", "lag", "loop_lag", "timeline", "histograms", "t0_wall", "valid"):
        current.pop(key)
    old = msgspec.json.decode(json.dumps(current), type=RunReport)
    assert old.valid
    assert old.histograms == {}
    assert old.lag.count == 0
    # a result row of the previous format: metrics were raw monotonic timestamps
    legacy_row = {
        "index": 3,
        "id": "x",
        "status": "ok",
        "content": 'says "t_sched": 1',
        "metrics": {
            "t_sched": 100.0,
            "t_admit": 100.5,
            "t_send": 101.0,
            "t_first_token": 101.25,
            "t_last_token": 102.0,
            "t_done": 102.0,
            "chunk_times": [101.25, 101.5, 102.0],
            "chunks": 3,
            "output_tokens": 3,
        },
    }
    result = FanoutResult.from_json(json.dumps(legacy_row))
    m = result.metrics
    assert (m.sched, m.done, m.lag) == (None, None, None)
    assert m.queue_time == 0.5
    assert m.ttft == 0.25
    assert m.e2el == 1.0
    assert m.ttst == 0.25
    assert (m.itl_p50, m.itl_max) == (0.25, 0.5)
    assert m.chunks == 3
    assert m.chunk_times is None
    # the marker inside content (escaped) does not trigger the legacy path
    row = FanoutResult(index=1, id="1", status="ok", content='"t_sched": 1')
    assert FanoutResult.from_json(row.to_json()) == row
