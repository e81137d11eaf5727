"""The §4 metric formulas on fixed timestamps, the log histogram's accuracy, and the run report
(goodput against SLOs, retries histogram, errors by class)."""

from __future__ import annotations

import random

import pytest
import trio

from trio_sogni.fanout import (
    MAX_CHUNK_TIMES,
    ErrorInfo,
    FanoutOptions,
    FanoutResult,
    ItemMetrics,
    LogHistogram,
    RunStats,
    TokenUsage,
)


def test_item_metric_formulas() -> None:
    m = ItemMetrics(t_sched=10.0, t_admit=10.5, t_send=11.0)
    for t in (11.4, 11.5, 11.7, 12.0):
        m.note_chunk(t)
    m.output_tokens = 7
    assert m.queue_time == pytest.approx(0.5)
    assert m.ttft == pytest.approx(0.4)
    assert m.ttft_from_sched == pytest.approx(1.4)
    assert m.ttst == pytest.approx(0.1)
    assert m.itl == pytest.approx([0.1, 0.2, 0.3])
    assert m.e2el == pytest.approx(1.0)
    assert m.e2el_from_sched == pytest.approx(2.0)
    # (E2EL - TTFT) / (output_tokens - 1): chunks may carry several tokens
    assert m.tpot == pytest.approx((1.0 - 0.4) / 6)
    m.output_tokens = None  # falls back to the chunk count
    assert m.tpot == pytest.approx(0.6 / 3)


def test_undefined_metrics_are_none() -> None:
    m = ItemMetrics()
    assert (m.queue_time, m.ttft, m.ttst, m.e2el, m.tpot) == (None,) * 5
    assert m.itl == []
    m = ItemMetrics(t_send=1.0)
    m.note_chunk(2.0)
    m.output_tokens = 1
    assert m.ttst is None
    assert m.tpot is None  # output_tokens <= 1


def test_chunk_times_are_bounded() -> None:
    m = ItemMetrics(t_send=0.0)
    for i in range(MAX_CHUNK_TIMES + 500):
        m.note_chunk(float(i))
    assert len(m.chunk_times) == MAX_CHUNK_TIMES
    assert m.chunks == MAX_CHUNK_TIMES + 500
    assert m.t_last_token == MAX_CHUNK_TIMES + 499  # the end still counts every chunk


def test_log_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(-2, 1) for _ in range(20_000)]
    hist = LogHistogram()
    hist.extend(values)
    values.sort()
    for q in (50, 90, 99):
        exact = values[max(0, int(q / 100 * len(values) + 0.999999) - 1)]
        got = hist.percentile(q)
        assert got is not None
        assert got == pytest.approx(exact, rel=0.011)
    summary = hist.summary()
    assert summary.count == 20_000
    assert summary.min == values[0]
    assert summary.max == values[-1]
    assert LogHistogram().summary().p50 is None
    zeros = LogHistogram()
    zeros.extend([0.0, 0.0, -1.0])
    assert zeros.percentile(99) == 0.0


def _ok(
    index: int, ttft: float, e2el: float, tokens: int, attempts: int = 1
) -> tuple[FanoutResult, ItemMetrics]:
    m = ItemMetrics(t_sched=0.0, t_admit=0.0, t_send=0.0)
    m.note_chunk(ttft)
    m.note_chunk(e2el)
    m.output_tokens = tokens
    m.t_done = e2el
    result = FanoutResult(
        index=index,
        id=str(index),
        status="ok",
        content="x",
        usage=TokenUsage(prompt_tokens=10, completion_tokens=tokens),
        attempts=attempts,
    )
    return result, m


async def test_report_goodput_errors_and_retries() -> None:
    stats = RunStats(FanoutOptions(slo_ttft=0.5, slo_e2el=2.0))
    stats.note_send(0.0)
    stats.add(*_ok(0, 0.1, 1.0, 11))  # good
    stats.add(*_ok(1, 0.9, 1.0, 11))  # TTFT too slow
    stats.add(*_ok(2, 0.2, 3.0, 11, attempts=3))  # E2EL too slow
    stats.add(*_ok(3, 0.2, 1.5, 11, attempts=2))  # good
    failed = FanoutResult(
        index=4,
        id="4",
        status="failed",
        error=ErrorInfo(type="worker_error", message="boom"),
        attempts=1,
    )
    stats.add(failed, ItemMetrics(t_done=4.0))
    report = stats.report(concurrency_history=[], peak_in_flight=3)
    assert report.wall_time == pytest.approx(4.0)
    assert report.ok == 4
    assert report.failed == 1
    assert report.goodput_rps == pytest.approx(2 / 4.0)
    assert report.slo_attainment == pytest.approx(0.5)
    assert report.requests_per_s == pytest.approx(1.0)
    assert report.output_tokens == 44
    assert report.errors_by_class == {"worker_error": 1}
    assert report.retries_histogram == {"0": 3, "1": 1, "2": 1}
    assert report.succeeded_after_retry == 2
    assert report.ttft.count == 4  # failures excluded from latency statistics
    assert report.e2el.max == pytest.approx(3.0)
    assert report.slo == {"ttft": 0.5, "e2el": 2.0}
    snap = stats.snapshot(
        items_total=10,
        in_flight=0,
        queued=0,
        reserved_usd=0.0,
        concurrency_limit=1,
        breaker_open=False,
        admitting=True,
    )
    assert snap.items_done == 5
    assert snap.elapsed >= 0
    assert trio.current_time() >= 0
    assert b'"goodput_rps"' in report.to_json()


def test_item_summary_of_fixed_timestamps() -> None:
    m = ItemMetrics(t_sched=10.0, t_intended=10.0, t_dispatch=10.5, held=0.4, t_admit=10.6)
    m.t_send = 11.0
    for t in (11.4, 11.5, 11.7, 12.0, 12.05):
        m.note_chunk(t)
    m.output_tokens = 9
    m.t_done = 12.1
    assert m.lag == pytest.approx(0.1)  # 0.5 late, of which 0.4 held back by the cap
    s = m.summary(8.0)
    assert s.sched == pytest.approx(2.0)
    assert s.done == pytest.approx(4.1)
    assert s.lag == pytest.approx(0.1)
    assert s.held == pytest.approx(0.4)
    assert s.queue_time == pytest.approx(0.6)
    assert s.ttft == pytest.approx(0.4)
    assert s.ttft_from_sched == pytest.approx(1.4)
    assert s.ttst == pytest.approx(0.1)
    assert s.e2el == pytest.approx(1.05)
    assert s.tpot == pytest.approx((1.05 - 0.4) / 8)
    # gaps 0.1, 0.2, 0.3, 0.05: nearest-rank median is the 2nd smallest
    assert s.itl_p50 == pytest.approx(0.1)
    assert s.itl_max == pytest.approx(0.3)
    assert (s.chunks, s.output_tokens) == (5, 9)
    assert s.chunk_times is None
    timed = m.summary(8.0, chunk_times=True)
    assert timed.chunk_times == pytest.approx([0.4, 0.5, 0.7, 1.0, 1.05])
    closed = ItemMetrics(t_sched=1.0).summary(None)
    assert (closed.sched, closed.lag, closed.held, closed.itl_p50) == (None, None, None, None)
