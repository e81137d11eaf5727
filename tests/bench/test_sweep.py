"""Sweeps and the knee: against a local network of known capacity (workers x capacity / service
time, `benchnet`), in virtual time, the knee a sweep finds is within 15 % of that capacity."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing
from benchnet import NETWORK_CAPACITY, SERVICE_TIME, START_LATENCY, simulated_network, workload

from trio_sogni import InvalidRequestError
from trio_sogni.bench._model import BenchPoint
from trio_sogni.bench._run import PointPlan, PointSettings, Window, run_point
from trio_sogni.bench._sweep import (
    attainment,
    carried_rate,
    find_knee,
    rate_label,
    run_sweep,
    sweep_rates,
)
from trio_sogni.fanout import ConstantRate, FanoutOptions, RunReport

SLO_TTFT = START_LATENCY + 0.2
"""TTFT is START_LATENCY plus one chunk interval (0.125 s) when a worker slot is free; a request
that waits for a slot misses it."""


@pytest.mark.deadline(600)
async def test_the_knee_of_a_sweep_is_within_15_percent_of_the_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = PointSettings(
        requests=64,
        warmup=Window(8),
        cooldown=Window(8),
        options=FanoutOptions(max_attempts=1, slo_ttft=SLO_TTFT),
    )
    async with simulated_network() as (_net, (sogni,)):

        async def measure(plan: PointPlan) -> BenchPoint:
            return await run_point(sogni, workload(), plan, settings)

        points = await run_sweep(measure, points=8, concurrency=32, schedule=ConstantRate)
    labels = [p.label for p in points]
    assert labels[:2] == ["synchronous", "throughput"]
    assert len(points) == 10
    sync, throughput = points[0].report, points[1].report
    assert sync.requests_per_s == pytest.approx(1 / SERVICE_TIME, rel=0.05)
    assert throughput.requests_per_s == pytest.approx(NETWORK_CAPACITY, rel=0.05)
    # Past the capacity requests queue at the network: the throughput point misses the SLO.
    assert (attainment(throughput) or 0) < 0.5
    knee = find_knee(points, 0.95)
    assert knee is not None
    assert knee.kind == "rate"
    assert abs(carried_rate(knee) - NETWORK_CAPACITY) <= 0.15 * NETWORK_CAPACITY
    for point in points:
        assert point.report.valid, point.report.invalid_reasons
        assert point.report.items_total == 64  # warm-up and cool-down not counted


def test_sweep_rates_are_evenly_spaced_strictly_between() -> None:
    assert sweep_rates(2, 16, 6) == pytest.approx([4, 6, 8, 10, 12, 14])
    assert sweep_rates(5, 5, 3) == []
    assert sweep_rates(9, 5, 3) == []
    with pytest.raises(InvalidRequestError, match="negative"):
        sweep_rates(1, 2, -1)
    assert rate_label(14.444444) == "rate-14.44"


@pytest.fixture
async def report(autojump_clock: trio.testing.MockClock) -> RunReport:
    """A real report of four requests (the knee tests edit its counts). The tests using it name
    ``autojump_clock`` too: pytest-trio takes the clock from the test's own arguments."""
    async with simulated_network() as (_net, (sogni,)):
        plan = PointPlan("rate-1", "rate", ConstantRate(10))
        settings = PointSettings(requests=4, options=FanoutOptions(slo_ttft=SLO_TTFT))
        point = await run_point(sogni, workload(), plan, settings)
    assert point.report.ok == 4
    assert point.report.valid, point.report.invalid_reasons
    return point.report


def point(report: RunReport, rate: float | None, **changes: object) -> BenchPoint:
    label = rate_label(rate) if rate is not None else "closed-8"
    kind = "rate" if rate is not None else "closed"
    changes.setdefault("offered_rps", rate)
    changed = msgspec.structs.replace(report, **changes)
    return BenchPoint(label=label, kind=kind, target_rps=rate, concurrency=None, report=changed)


async def test_the_knee_is_the_highest_valid_rate_meeting_the_attainment(
    autojump_clock: trio.testing.MockClock, report: RunReport
) -> None:
    points = [
        point(report, 5.0, slo_attainment=1.0),
        point(report, 10.0, slo_attainment=0.96),
        point(report, 20.0, slo_attainment=1.0, valid=False, invalid_reasons=["lag"]),
        point(report, 15.0, slo_attainment=0.9),
    ]
    knee = find_knee(points, 0.95)
    assert knee is not None
    assert knee.label == "rate-10"
    assert find_knee(points, 0.97) is points[0]
    assert find_knee(points[2:], 0.5) is points[3]
    assert find_knee(points[2:3], 0.5) is None
    with pytest.raises(InvalidRequestError, match=r"\(0, 1\]"):
        find_knee(points, 0)


async def test_failures_count_against_the_attainment(
    autojump_clock: trio.testing.MockClock, report: RunReport
) -> None:
    # 4 ok of which all met the SLO, plus 4 failed: half the requests met it.
    failing = msgspec.structs.replace(report, failed=4, slo_attainment=1.0)
    assert attainment(failing) == 0.5
    assert find_knee([point(failing, 5.0)], 0.95) is None
    empty = msgspec.structs.replace(report, ok=0, slo_attainment=None)
    assert attainment(empty) is None


async def test_a_closed_point_carries_its_measured_rate(
    autojump_clock: trio.testing.MockClock, report: RunReport
) -> None:
    closed = point(report, None, requests_per_s=12.5, slo_attainment=1.0)
    assert carried_rate(closed) == 12.5
    assert find_knee([closed, point(report, 10.0, slo_attainment=1.0)], 0.95) is closed


async def test_an_open_point_carries_the_rate_its_schedule_really_offered(
    autojump_clock: trio.testing.MockClock, report: RunReport
) -> None:
    # A short Poisson run offers more or less than its target: the knee is where the load was.
    short = point(report, 10.0, offered_rps=8.3, slo_attainment=1.0)
    assert carried_rate(short) == 8.3
    assert carried_rate(point(report, 10.0, offered_rps=None)) == 10.0
    assert find_knee([short, point(report, 9.0, slo_attainment=1.0)], 0.95) is not short
