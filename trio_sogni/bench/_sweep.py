"""Rate sweeps (GuideLLM's profile) and the knee.

A sweep measures the **synchronous** point (a closed loop of one worker: the latency floor) and
the **throughput** point (a closed loop of many workers: the most the network serves), then
``points`` open-loop points at rates evenly spaced strictly between the two measured request
rates. The **knee** is the highest carried rate among the *valid* points (the client kept up,
`RunReport.valid`) whose SLO attainment over every measured request (`attainment`) reaches the
threshold: the most load the network takes while still meeting its SLOs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

from .. import InvalidRequestError
from ..fanout import ArrivalSchedule, RunReport
from ._model import BenchPoint
from ._run import PointPlan

__all__ = ["attainment", "carried_rate", "find_knee", "rate_label", "run_sweep", "sweep_rates"]


def attainment(report: RunReport) -> float | None:
    """The fraction of the measured requests that succeeded *and* met every SLO (all successes
    when no SLO is set): ``slo_attainment`` of `trio_sogni.fanout.RunReport` counts over the
    ``ok`` requests only, this counts failed, cancelled and unbudgeted ones as misses. ``None``
    when nothing was measured."""
    total = report.ok + report.failed + report.cancelled + report.budget_exhausted
    if not total:
        return None
    met = (report.slo_attainment or 0.0) * report.ok
    return met / total


def carried_rate(point: BenchPoint) -> float:
    """The rate a point put on the network: the rate its schedule really offered (open loop:
    ``offered_rps``, the requests scheduled over the span of their intended times; a short
    Poisson run offers more or less than its target rate), else its target rate when the
    report has no offered rate, else the measured request rate (a closed loop). The saturation
    plot's x axis uses the same rate."""
    if point.target_rps is not None:
        offered = point.report.offered_rps
        if offered is not None and math.isfinite(offered) and offered > 0:
            return offered
        return point.target_rps
    return point.report.requests_per_s


def find_knee(points: Sequence[BenchPoint], min_attainment: float) -> BenchPoint | None:
    """The point with the highest `carried_rate` among those whose report is valid and whose
    `attainment` is at least ``min_attainment``; ``None`` when no point qualifies.

    Raises:
        InvalidRequestError: ``min_attainment`` outside (0, 1].
    """
    if not 0 < min_attainment <= 1:
        raise InvalidRequestError("the SLO attainment threshold must be in (0, 1]")
    best: BenchPoint | None = None
    for point in points:
        met = attainment(point.report)
        if not point.report.valid or met is None or met < min_attainment:
            continue
        if best is None or carried_rate(point) > carried_rate(best):
            best = point
    return best


def sweep_rates(low: float, high: float, count: int) -> list[float]:
    """``count`` rates evenly spaced strictly between ``low`` and ``high`` (the synchronous and
    throughput request rates); none when ``high <= low``."""
    if count < 0:
        raise InvalidRequestError("the number of sweep points must not be negative")
    if high <= low:
        return []
    step = (high - low) / (count + 1)
    return [low + step * (i + 1) for i in range(count)]


def rate_label(rate: float) -> str:
    """A rate point's label: ``rate-<rate with 4 significant digits>``."""
    return f"rate-{rate:.4g}"


async def run_sweep(
    measure: Callable[[PointPlan], Awaitable[BenchPoint]],
    *,
    points: int,
    concurrency: int,
    schedule: Callable[[float], ArrivalSchedule],
) -> list[BenchPoint]:
    """Run a sweep with ``measure`` (which runs one point, in this process or across several)
    and return its points in the order they ran: ``synchronous``, ``throughput`` (a closed loop
    of ``concurrency`` workers), then ``points`` open-loop points made by ``schedule(rate)``
    (`sweep_rates` between the first two points' request rates, labelled `rate_label`)."""
    if concurrency < 1:
        raise InvalidRequestError("the throughput point needs at least one worker")
    done = [await measure(PointPlan("synchronous", "synchronous", None, 1))]
    done.append(await measure(PointPlan("throughput", "throughput", None, concurrency)))
    low, high = done[0].report.requests_per_s, done[1].report.requests_per_s
    for rate in sweep_rates(low, high, points):
        point = await measure(PointPlan(rate_label(rate), "rate", schedule(rate), 1))
        done.append(point)
    return done
