"""Points, phases and shards: a sharded run merged equals the unsharded one in counts and in
its schedule (virtual time, both shards against one local network); warm-up and cool-down run
but are not recorded; closed loops split their workers."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from benchnet import simulated_network, workload

from trio_sogni import InvalidRequestError
from trio_sogni.bench._run import (
    MAX_ARRIVALS,
    PointPlan,
    PointSettings,
    Window,
    _bounds,
    run_point,
)
from trio_sogni.fanout import (
    ConstantRate,
    FanoutOptions,
    FanoutResult,
    Gamma,
    Poisson,
    merge_reports,
)


class Sink:
    def __init__(self) -> None:
        self.results: list[FanoutResult] = []

    async def __call__(self, result: FanoutResult) -> None:
        self.results.append(result)


def sched_times(results: list[FanoutResult]) -> list[float]:
    times = [r.metrics.sched for r in results]
    assert None not in times
    return sorted(t for t in times if t is not None)


@pytest.mark.deadline(300)
@pytest.mark.parametrize("schedule", [Poisson(20), Gamma(20, 0.3)], ids=["poisson", "gamma"])
async def test_two_shards_merged_equal_the_unsharded_run(
    autojump_clock: trio.testing.MockClock, schedule: Poisson | Gamma
) -> None:
    plan = PointPlan("rate-20", "rate", schedule)

    def settings(shard: tuple[int, int]) -> PointSettings:
        return PointSettings(
            requests=60, warmup=Window(7), cooldown=Window(5), seed=11, shard=shard
        )

    async with simulated_network(clients=2) as (_net, (first, second)):
        whole_sink = Sink()
        whole = await run_point(first, workload(), plan, settings((0, 1)), sink=whole_sink)
        sinks = [Sink(), Sink()]
        shards: list[object] = [None, None]

        async def shard(k: int) -> None:
            client = (first, second)[k]
            shards[k] = await run_point(client, workload(), plan, settings((k, 2)), sink=sinks[k])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(shard, 0)
            nursery.start_soon(shard, 1)
    reports = [s.report for s in shards]  # type: ignore[union-attr]
    merged = merge_reports(reports)
    for name in ("items_total", "ok", "failed", "cancelled", "output_tokens", "input_tokens"):
        assert getattr(merged, name) == getattr(whole.report, name), name
    assert whole.report.items_total == 60
    assert [r.items_total for r in reports] == [30, 30]
    assert merged.schedule == whole.report.schedule == schedule.describe()
    # The same requests, at the same intended times (round-robin over one schedule).
    shard_results = sinks[0].results + sinks[1].results
    assert sorted(r.index for r in shard_results) == sorted(r.index for r in whole_sink.results)
    assert sorted(r.index for r in whole_sink.results) == list(range(7, 67))
    assert sched_times(shard_results) == pytest.approx(sched_times(whole_sink.results))
    assert {r.index % 2 for r in sinks[1].results} == {1}


def test_phases_are_laid_out_in_order_by_count_or_seconds() -> None:
    counts = PointSettings(requests=10, warmup=Window(3), cooldown=Window(2))
    assert _bounds(ConstantRate(10), counts) == (3, 13, 15)
    # 10/s: warm-up 0.0..0.45 (5 arrivals), 1 s measured (10), cool-down 0.3 s (3).
    seconds = PointSettings(
        duration=1.0, warmup=Window(seconds=0.45), cooldown=Window.parse("0.3s")
    )
    assert _bounds(ConstantRate(10), seconds) == (5, 15, 18)
    plain = PointSettings(requests=4)
    assert _bounds(Poisson(5), plain) == (0, 4, 4)
    with pytest.raises(InvalidRequestError, match="more than"):
        _bounds(ConstantRate(1e9), PointSettings(duration=1.0))
    assert MAX_ARRIVALS >= 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", Window()), ("20", Window(requests=20)), ("2.5s", Window(seconds=2.5))],
)
def test_windows_parse(text: str, expected: Window) -> None:
    assert Window.parse(text) == expected
    assert bool(expected) == (text != "0")


@pytest.mark.parametrize("text", ["-1", "x", "5m", "-2s", "infs", ""])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="expected a number of requests"):
        Window.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "not both"),
        ({"requests": 1, "duration": 1.0}, "not both"),
        ({"requests": 0}, "at least 1"),
        ({"duration": -1.0}, "positive"),
        ({"requests": 1, "max_concurrency": 0}, "max_concurrency"),
        ({"requests": 1, "shard": (2, 2)}, "0 <= k < N"),
    ],
)
def test_bad_point_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        PointSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.deadline(300)
async def test_a_closed_loop_warms_up_first_and_splits_its_workers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = PointPlan("closed-3", "closed", None, 3)
    async with simulated_network() as (_net, (sogni,)):
        sinks = [Sink(), Sink(), Sink(), Sink()]
        points = []
        for k in range(4):
            settings = PointSettings(requests=12, warmup=Window(4), shard=(k, 4))
            points.append(await run_point(sogni, workload(), plan, settings, sink=sinks[k]))
        timed = Sink()
        settings = PointSettings(
            duration=2.0, warmup=Window(seconds=1.0), options=FanoutOptions(max_attempts=1)
        )
        by_time = await run_point(sogni, workload(), plan, settings, sink=timed)
    # 3 workers over 4 shards: shards 0..2 get one each and share the requests, shard 3 none
    # (an empty report).
    assert [p.report.items_total for p in points] == [4, 4, 4, 0]
    assert [p.report.peak_in_flight for p in points] == [1, 1, 1, 0]
    assert sorted(r.index for s in sinks for r in s.results) == list(range(4, 16))
    # Warm-up by time took the first second (3 workers x 2 requests/s); the measured window
    # starts after the last index it took and lasts 2 s of new requests.
    indices = sorted(r.index for r in timed.results)
    assert indices[0] == 6
    assert len(indices) == by_time.report.items_total == 12
    assert by_time.concurrency == 3


@pytest.mark.deadline(300)
async def test_held_back_requests_are_counted_not_hidden(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = PointPlan("rate-40", "rate", ConstantRate(40))
    settings = PointSettings(requests=40, max_concurrency=4)
    async with simulated_network() as (_net, (sogni,)):
        capped = await run_point(sogni, workload(), plan, settings)
    assert capped.concurrency == 4
    assert capped.report.held_back > 20  # 4 in process at 0.5 s each serve 8/s of 40/s
    assert capped.report.peak_in_flight <= 4
    assert capped.target_rps == 40
