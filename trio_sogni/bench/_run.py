"""One benchmark point: a load level run through `trio_sogni.fanout.open_fanout`, measured into a
`BenchPoint`.

A point has up to three *phases* laid out on one arrival schedule: a warm-up, the measured
window, and a cool-down. Only the measured window's requests count; the others run (and load
the network) but are not recorded. The fan-out runner computes a report over everything it ran,
so each phase is its own fan-out run:

* **open loop** (a schedule): the schedule's arrivals (seeded with ``PointSettings.seed``) are
  split into the three phases in order; the three runs start together and each replays its own
  slice of the one schedule at the original times, so the load is one continuous schedule while
  only the measured run's report is kept. ``max_concurrency`` applies to each run separately.
* **closed loop** (``concurrency`` workers): the warm-up run comes first, then the measured run.
  A cool-down does not apply (a closed loop has no arrivals to continue past its last request).

A *shard* ``k/N`` runs only requests whose index is ``k`` modulo ``N``: its arrivals keep their
times in the one schedule (round-robin over the generated arrivals, so the merged load is exactly
the unsharded schedule whatever its distribution). A closed loop's workers are split
``concurrency // N`` (+1 for the first ``concurrency % N`` shards); with fewer workers than
shards, the requests go round-robin to the shards that have one (the others report nothing). Request ``i`` is the same in
every shard (`Workload.item`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Final

import trio
from typing_extensions import override

from .. import InvalidRequestError, SogniClient
from ..fanout import (
    ArrivalSchedule,
    FanoutItem,
    FanoutOptions,
    FanoutResult,
    RunReport,
    open_fanout,
)
from ._model import BenchPoint, PointKind
from ._workload import Workload

__all__ = ["MAX_ARRIVALS", "PointPlan", "PointSettings", "Window", "run_point"]

MAX_ARRIVALS: Final = 10_000_000
"""The most arrivals one point may schedule (warm-up, measured and cool-down together), a guard
against a mistyped rate or duration (arrival times are generated, never stored)."""
_NO_END: Final = 1 << 62
"""The end of an index range that a duration, not a count, ends."""


@dataclass(frozen=True)
class Window:
    """A warm-up or cool-down: a number of requests, or seconds of the schedule. Parsed from
    ``"N"`` (requests) or ``"Ns"`` (seconds); ``"0"`` is none."""

    requests: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Window:
        """``"20"`` → 20 requests, ``"5s"`` / ``"0.5s"`` → seconds.

        Raises:
            InvalidRequestError: anything else, or a negative or non-finite value.
        """
        text = spec.strip()
        try:
            if text.endswith("s"):
                seconds = float(text[:-1])
                if not math.isfinite(seconds) or seconds < 0:
                    raise ValueError(text)
                return cls(seconds=seconds)
            requests = int(text)
            if requests < 0:
                raise ValueError(text)
            return cls(requests=requests)
        except ValueError:
            raise InvalidRequestError(
                f"window {spec!r}: expected a number of requests (20) or seconds (5s)"
            ) from None

    def __bool__(self) -> bool:
        return bool(self.requests or self.seconds)

    @override
    def __str__(self) -> str:
        return f"{self.seconds:g}s" if self.seconds else str(self.requests)


@dataclass(frozen=True)
class PointPlan:
    """What load one point applies.

    Attributes:
        label: unique in a run (``synchronous``, ``throughput``, ``rate-12``, ...).
        kind: see `trio_sogni.bench.PointKind`.
        schedule: an open-loop arrival schedule, or ``None`` for a closed loop.
        concurrency: closed loop: the number of workers (over all shards).
    """

    label: str
    kind: PointKind
    schedule: ArrivalSchedule | None = None
    concurrency: int = 1

    @property
    def target_rps(self) -> float | None:
        """The schedule's nominal rate (``None`` for a closed loop or a trace)."""
        return None if self.schedule is None else self.schedule.rate


@dataclass(frozen=True)
class PointSettings:
    """How every point of a run is measured.

    Attributes:
        requests: measured requests per point; or
        duration: seconds of measured schedule per point (closed loop: seconds of taking new
            requests). Exactly one of the two.
        warmup, cooldown: run but not recorded (see the module docs).
        seed: seeds the schedules (``random.Random(seed)``) and the synthetic workload.
        max_concurrency: open loop: the cap on requests in process; those due while it is full
            are held back and counted (``RunReport.held_back``). Split over the shards like a
            closed loop's workers (at least one each).
        options: the fan-out options of every run (SLOs, timeouts, attempts, lag threshold,
            chunk times); ``schedule``, ``max_concurrency``, ``concurrency``, ``dedup`` and
            ``cache`` are set per run (dedup and cache off: every request is sent).
        shard: ``(k, N)``: run only the requests whose index is ``k`` modulo ``N``.
    """

    requests: int | None = None
    duration: float | None = None
    warmup: Window = field(default_factory=Window)
    cooldown: Window = field(default_factory=Window)
    seed: int = 0
    max_concurrency: int | None = None
    options: FanoutOptions = field(default_factory=lambda: FanoutOptions(max_attempts=1))
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if (self.requests is None) == (self.duration is None):
            raise InvalidRequestError("give the number of requests or a duration, not both")
        if self.requests is not None and self.requests < 1:
            raise InvalidRequestError("requests must be at least 1")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise InvalidRequestError("duration must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise InvalidRequestError("max_concurrency must be at least 1")
        k, n = self.shard
        if not 0 <= k < n:
            raise InvalidRequestError(f"shard {k}/{n}: need 0 <= k < N")
        if self.max_concurrency is not None and self.max_concurrency < n:
            raise InvalidRequestError("max_concurrency is split over the shards: at least one each")


def _bounds(schedule: ArrivalSchedule, settings: PointSettings) -> tuple[int, int, int]:
    """Where warm-up, measured window and cool-down end, as arrival counts: the phases are laid
    out on the schedule in order, each ending at its request count, or at the first arrival
    past its end time (a finite schedule may end them early). One pass over the generated
    arrivals, nothing kept.

    Raises:
        InvalidRequestError: more than `MAX_ARRIVALS` arrivals.
    """
    arrivals = schedule.offsets(random.Random(settings.seed))
    limits = (
        (settings.warmup.requests, settings.warmup.seconds),
        (settings.requests or 0, settings.duration or 0.0),
        (settings.cooldown.requests, settings.cooldown.seconds),
    )
    ends: list[int] = []
    pending: float | None = None
    last: float | None = None
    phase_start = 0.0
    total = 0
    for count, seconds in limits:
        taken = 0
        end = phase_start + seconds
        while count or seconds:
            if pending is None:
                pending = next(arrivals, None)
                if pending is None:
                    break
            if (count and taken >= count) or (seconds and pending >= end):
                break
            last, pending = pending, None
            taken += 1
            total += 1
            if total > MAX_ARRIVALS:
                raise InvalidRequestError(
                    f"the point schedules more than {MAX_ARRIVALS:,} arrivals: lower the rate, "
                    "the duration or the request count"
                )
        ends.append(total)
        phase_start = end if seconds else (last if last is not None else phase_start)
    return ends[0], ends[1], ends[2]


@dataclass(frozen=True)
class _Slice:
    """An `ArrivalSchedule`: the arrivals ``start..stop-1`` of ``base`` (generated with
    ``random.Random(seed)``) whose index is ``k`` modulo ``N``, at their times in ``base``. It
    describes itself as ``base``, so the shards of a point report one schedule."""

    base: ArrivalSchedule
    seed: int
    start: int
    stop: int
    shard: tuple[int, int]

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """The slice's arrival times (``rng`` is unused: the slice replays ``base``'s seed)."""
        k, n = self.shard
        arrivals = islice(self.base.offsets(random.Random(self.seed)), self.start, self.stop)
        if n == 1:
            yield from arrivals
            return
        for j, offset in enumerate(arrivals, self.start):
            if j % n == k:
                yield offset

    def describe(self) -> dict[str, Any]:
        """``base.describe()``."""
        return self.base.describe()

    @property
    def rate(self) -> float | None:
        """``base.rate``."""
        return self.base.rate


def _share(start: int, stop: int, shard: tuple[int, int]) -> range:
    """The global indices in ``[start, stop)`` that are ``k`` modulo ``N``."""
    k, n = shard
    first = start + (k - start) % n
    return range(first, stop, n)


def _closed_share(concurrency: int, shard: tuple[int, int]) -> int:
    k, n = shard
    return concurrency // n + (1 if k < concurrency % n else 0)


def _items(workload: Workload, indices: range | Iterator[int]) -> Iterator[FanoutItem]:
    return (workload.item(i) for i in indices)


ResultSink = Callable[[FanoutResult], Awaitable[None]]
"""Receives each measured result (e.g. writes it to ``results.jsonl``)."""


async def _drain(
    sogni: SogniClient,
    items: Iterator[FanoutItem],
    options: FanoutOptions,
    sink: ResultSink | None,
    *,
    stop_after: float | None = None,
) -> RunReport:
    """Run ``items`` to the end (or, with ``stop_after``, stop taking new ones after that many
    seconds and let those in flight finish) and return the report."""
    async with open_fanout(sogni, items, options) as run, trio.open_nursery() as nursery:
        if stop_after is not None:

            async def stopper() -> None:
                await trio.sleep(stop_after)
                run.stop_admitting()

            nursery.start_soon(stopper)
        async for result in run:
            if sink is not None:
                await sink(result)
        nursery.cancel_scope.cancel()
    return run.report()


async def _sleep_until_wall(start_at: float | None) -> None:
    if start_at is not None:
        await trio.sleep(max(0.0, start_at - time.time()))


async def run_point(
    sogni: SogniClient,
    workload: Workload,
    plan: PointPlan,
    settings: PointSettings,
    *,
    sink: ResultSink | None = None,
    start_at: float | None = None,
) -> BenchPoint:
    """Run one point (this shard's share of it) and return it, with the measured window's
    `trio_sogni.fanout.RunReport`. A shard's point records its share of the load: ``target_rps / N`` and its part
    of the workers or of ``max_concurrency``, so `merge_runs` sums them back.

    ``sink`` gets every measured result as it finishes (warm-up and cool-down results are not
    passed on). ``start_at`` (a ``time.time()`` value) delays the start until then, so
    processes or machines running shards of one point start together.

    Raises:
        InvalidRequestError: a schedule that makes more than `MAX_ARRIVALS` arrivals.
    """
    base = replace(settings.options, dedup=False, cache=False, schedule=None)
    n = settings.shard[1]
    target = plan.target_rps
    if plan.schedule is not None:
        report = await _run_open(sogni, workload, plan.schedule, settings, base, sink, start_at)
        concurrency = settings.max_concurrency
        if concurrency is not None:
            concurrency = _closed_share(concurrency, settings.shard)
        if target is not None:
            target /= n
    else:
        report = await _run_closed(
            sogni, workload, plan.concurrency, settings, base, sink, start_at
        )
        concurrency = _closed_share(plan.concurrency, settings.shard)
    return BenchPoint(
        label=plan.label,
        kind=plan.kind,
        target_rps=target,
        concurrency=concurrency,
        report=report,
    )


async def _run_open(
    sogni: SogniClient,
    workload: Workload,
    schedule: ArrivalSchedule,
    settings: PointSettings,
    base: FanoutOptions,
    sink: ResultSink | None,
    start_at: float | None,
) -> RunReport:
    warm_end, measured_end, cool_end = _bounds(schedule, settings)
    shard = settings.shard
    reports: list[RunReport | None] = [None, None, None]

    async def one(position: int, start: int, stop: int) -> None:
        indices = _share(start, stop, shard)
        if not indices:
            if position == 1:  # an empty measured share still gets a (zero) report
                reports[1] = await _drain(sogni, iter(()), base, None)
            return
        cap = settings.max_concurrency
        options = replace(
            base,
            schedule=_Slice(schedule, settings.seed, start, stop, shard),
            max_concurrency=None if cap is None else _closed_share(cap, shard),
        )
        reports[position] = await _drain(
            sogni, _items(workload, indices), options, sink if position == 1 else None
        )

    await _sleep_until_wall(start_at)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0, 0, warm_end)
        nursery.start_soon(one, 1, warm_end, measured_end)
        nursery.start_soon(one, 2, measured_end, cool_end)
    measured = reports[1]
    assert measured is not None
    return measured


async def _run_closed(
    sogni: SogniClient,
    workload: Workload,
    concurrency: int,
    settings: PointSettings,
    base: FanoutOptions,
    sink: ResultSink | None,
    start_at: float | None,
) -> RunReport:
    workers = _closed_share(concurrency, settings.shard)
    await _sleep_until_wall(start_at)
    if not workers:
        return await _drain(sogni, iter(()), base, None)
    # Only the shards with a worker take requests (fewer workers than shards: the first ones).
    k, n = settings.shard
    shard = (k, min(n, concurrency))
    options = replace(base, concurrency=workers, max_concurrency=None)
    warmup = settings.warmup
    start = 0
    if warmup:
        if warmup.seconds:
            # Taken in order from index 0 until the time is up; the measured window starts
            # after the last index the warm-up took (each taken item gets a result).
            taken = [-1]

            async def note(result: FanoutResult) -> None:
                taken[0] = max(taken[0], result.index)

            await _drain(
                sogni,
                _items(workload, iter(_share(0, _NO_END, shard))),
                options,
                note,
                stop_after=warmup.seconds,
            )
            start = taken[0] + 1
        else:
            await _drain(
                sogni, _items(workload, iter(_share(0, warmup.requests, shard))), options, None
            )
            start = warmup.requests
    if settings.requests is not None:
        indices = _share(start, start + settings.requests, shard)
        return await _drain(sogni, _items(workload, iter(indices)), options, sink)
    indices = _share(start, _NO_END, shard)
    return await _drain(
        sogni, _items(workload, iter(indices)), options, sink, stop_after=settings.duration
    )
