"""Arrival schedules: validation, mean rates, goodness of fit of the inter-arrival distributions
(a hand-rolled Kolmogorov-Smirnov statistic against the exponential and gamma CDFs), the ramp's
per-window counts, trace replay from JSON Lines, and generation speed."""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_sogni import InvalidRequestError
from trio_sogni.fanout import (
    ArrivalSchedule,
    ConstantRate,
    FanoutOptions,
    Gamma,
    Poisson,
    Ramp,
    TraceReplay,
)

N = 20_000
KS_CRITICAL_1PCT = 1.63  # sqrt(n) * D above this rejects the fit at the 1 % level


def take(schedule: ArrivalSchedule, n: int, seed: int = 7) -> list[float]:
    return list(itertools.islice(schedule.offsets(random.Random(seed)), n))


def gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


def ks_statistic(sample: list[float], cdf: Callable[[float], float]) -> float:
    """sup |F_n(x) - F(x)| over the sample points."""
    ordered = sorted(sample)
    n = len(ordered)
    worst = 0.0
    for i, x in enumerate(ordered):
        f = cdf(x)
        worst = max(worst, f - i / n, (i + 1) / n - f)
    return worst


def gamma_cdf(shape: float, scale: float) -> Callable[[float], float]:
    """The regularized lower incomplete gamma function P(shape, x / scale): its power series
    below ``shape + 1``, else Lentz's continued fraction for the upper tail."""

    def cdf(x: float) -> float:
        z = x / scale
        if z <= 0:
            return 0.0
        log_prefix = shape * math.log(z) - z - math.lgamma(shape)
        if z < shape + 1:
            term = total = 1.0 / shape
            a = shape
            while abs(term) > 1e-15 * abs(total):
                a += 1
                term *= z / a
                total += term
            return total * math.exp(log_prefix)
        tiny = 1e-300
        b = z + 1 - shape
        c = 1 / tiny
        d = 1 / b
        h = d
        for i in range(1, 10_000):
            an = -i * (i - shape)
            b += 2
            d = an * d + b
            d = tiny if abs(d) < tiny else d
            c = b + an / c
            c = tiny if abs(c) < tiny else c
            d = 1 / d
            delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-15:
                break
        return 1.0 - math.exp(log_prefix) * h

    return cdf


def test_gamma_cdf_helper_matches_known_values() -> None:
    # shape 1 is the exponential; shape 2: 1 - e^-x (1 + x)
    assert gamma_cdf(1.0, 1.0)(0.7) == pytest.approx(1 - math.exp(-0.7), abs=1e-12)
    for x in (0.5, 2.0, 6.0):
        assert gamma_cdf(2.0, 1.0)(x) == pytest.approx(1 - math.exp(-x) * (1 + x), abs=1e-12)


def test_constant_rate_is_exact() -> None:
    offsets = take(ConstantRate(250.0), 1001)
    assert offsets[0] == 0.0
    assert offsets[-1] == pytest.approx(4.0)
    assert all(g == pytest.approx(0.004) for g in gaps(offsets))
    assert ConstantRate(250.0).rate == 250.0
    assert ConstantRate(250.0).describe() == {"kind": "constant", "rate": 250.0}


def test_poisson_mean_rate_and_exponential_fit() -> None:
    offsets = take(Poisson(100.0), N)
    assert offsets[0] == 0.0
    assert offsets == sorted(offsets)
    sample = gaps(offsets)
    assert (len(sample) / offsets[-1]) == pytest.approx(100.0, rel=0.02)
    d = ks_statistic(sample, lambda x: 1 - math.exp(-100.0 * x))
    assert math.sqrt(len(sample)) * d < KS_CRITICAL_1PCT
    # ... and the statistic does reject a wrong rate (the check can fail)
    wrong = ks_statistic(sample, lambda x: 1 - math.exp(-80.0 * x))
    assert math.sqrt(len(sample)) * wrong > KS_CRITICAL_1PCT
    assert Poisson(100.0).describe() == {"kind": "poisson", "rate": 100.0}


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 2.0, 4.0])
def test_gamma_mean_rate_fit_and_coefficient_of_variation(burstiness: float) -> None:
    rate = 50.0
    schedule = Gamma(rate, burstiness)
    sample = gaps(take(schedule, N + 1))
    mean = statistics.fmean(sample)
    assert 1 / mean == pytest.approx(rate, rel=0.02)
    cv = statistics.pstdev(sample) / mean
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)
    cdf = gamma_cdf(burstiness, 1 / (rate * burstiness))
    assert math.sqrt(len(sample)) * ks_statistic(sample, cdf) < KS_CRITICAL_1PCT
    if burstiness != 1.0:  # the exponential is the wrong shape: rejected
        exponential = ks_statistic(sample, lambda x: 1 - math.exp(-rate * x))
        assert math.sqrt(len(sample)) * exponential > KS_CRITICAL_1PCT
    assert schedule.rate == rate
    assert schedule.describe() == {"kind": "gamma", "rate": rate, "burstiness": burstiness}


def test_gamma_burstiness_one_is_poisson() -> None:
    sample = gaps(take(Gamma(20.0), N))
    d = ks_statistic(sample, lambda x: 1 - math.exp(-20.0 * x))
    assert math.sqrt(len(sample)) * d < KS_CRITICAL_1PCT


def test_a_seed_reproduces_the_arrivals() -> None:
    assert take(Poisson(10.0), 100, seed=3) == take(Poisson(10.0), 100, seed=3)
    assert take(Poisson(10.0), 100, seed=3) != take(Poisson(10.0), 100, seed=4)
    assert take(Gamma(10.0, 0.5), 100, seed=3) == take(Gamma(10.0, 0.5), 100, seed=3)


def expected_ramp_count(ramp: Ramp, a: float, b: float) -> float:
    """∫_a^b rate(t) dt."""

    def cumulative(t: float) -> float:
        s, e, d = ramp.start_rate, ramp.end_rate, ramp.duration
        if t <= d:
            return s * t + (e - s) * t * t / (2 * d)
        return d * (s + e) / 2 + e * (t - d)

    return cumulative(b) - cumulative(a)


@pytest.mark.parametrize(
    ("start", "end"), [(0.0, 200.0), (10.0, 400.0), (300.0, 20.0), (100.0, 100.0)]
)
def test_ramp_counts_per_window_follow_the_rate(start: float, end: float) -> None:
    ramp = Ramp(start_rate=start, end_rate=end, duration=10.0)
    total = expected_ramp_count(ramp, 0, 12.0)
    offsets = [t for t in take(ramp, int(total) + 10) if t < 12.0]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0.0
    for window in range(12):
        a, b = float(window), window + 1.0
        got = sum(1 for t in offsets if a <= t < b)
        assert abs(got - expected_ramp_count(ramp, a, b)) <= 1.0, (window, got)
    assert ramp.rate == (start + end) / 2


def test_ramp_with_poisson_arrivals_follows_the_rate_on_average() -> None:
    ramp = Ramp(start_rate=50.0, end_rate=450.0, duration=20.0, poisson=True)
    offsets = [t for t in take(ramp, 6000) if t < 20.0]
    for window in range(0, 20, 4):
        a, b = float(window), window + 4.0
        got = sum(1 for t in offsets if a <= t < b)
        expected = expected_ramp_count(ramp, a, b)
        assert abs(got - expected) < 4 * math.sqrt(expected), (window, got, expected)
    # not the deterministic ramp
    assert offsets[:50] != take(Ramp(50.0, 450.0, 20.0), 50)
    assert ramp.describe()["poisson"] is True


def test_trace_replay_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text('{"timestamp": 1700000000500}\n\n{"timestamp": 1700000000750, "x": 1}\n')
    path.write_text(path.read_text() + '{"timestamp": 1700000002500}\n')
    trace = TraceReplay.from_jsonl(path, scale=0.001)  # milliseconds
    assert trace.offsets_s == pytest.approx((0.0, 0.25, 2.0))
    assert take(trace, 10) == list(trace.offsets_s)  # finite: ends with the trace
    assert trace.rate is None
    assert trace.describe() == {"kind": "trace", "count": 3, "span": pytest.approx(2.0)}
    other = tmp_path / "other.jsonl"
    other.write_text('{"t": 3}\n{"t": 3}\n{"t": 4.5}\n')
    assert TraceReplay.from_jsonl(other, field="t").offsets_s == (0.0, 0.0, 1.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"timestamp": 2}\n{"timestamp": 1}\n', "sorted"),
        ('{"timestamp": 2}\n{"time": 3}\n', ":2: no numeric 'timestamp'"),
        ('{"timestamp": "2"}\n', "no numeric"),
        ('{"timestamp": true}\n', "no numeric"),
        ("[1]\n", "no numeric"),
        ("{nope\n", "not JSON"),
        ("\n\n", "no rows"),
    ],
)
def test_trace_replay_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(text)
    with pytest.raises(InvalidRequestError, match=message):
        TraceReplay.from_jsonl(path)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantRate(0),
        lambda: ConstantRate(-1),
        lambda: ConstantRate(math.inf),
        lambda: Poisson(math.nan),
        lambda: Poisson(True),
        lambda: Gamma(10, 0),
        lambda: Gamma(10, -1),
        lambda: Gamma("10"),  # pyright: ignore[reportArgumentType]
        lambda: Ramp(-1, 10, 5),
        lambda: Ramp(0, 0, 5),
        lambda: Ramp(1, 10, 0),
        lambda: Ramp(1, 10, 5, poisson=1),  # pyright: ignore[reportArgumentType]
        lambda: TraceReplay(()),
        lambda: TraceReplay((0.0, 2.0, 1.0)),
        lambda: TraceReplay((-1.0, 2.0)),
        lambda: TraceReplay((0.0, math.inf)),
    ],
)
def test_schedules_validate_at_construction(make: Callable[[], Any]) -> None:
    with pytest.raises(InvalidRequestError):
        make()


def test_trace_replay_keeps_a_tuple() -> None:
    trace = TraceReplay([0, 1, 2.5])  # pyright: ignore[reportArgumentType]
    assert trace.offsets_s == (0.0, 1.0, 2.5)
    assert isinstance(trace, ArrivalSchedule)


@pytest.mark.parametrize(
    "schedule", [Poisson(1000.0), Gamma(1000.0, 0.5), Gamma(1000.0, 4.0), Ramp(0.0, 1e4, 10.0)]
)
def test_generation_is_cheap(schedule: ArrivalSchedule) -> None:
    """At least 100,000 offsets per second even on a loaded machine: 200,000 within 2 s."""
    offsets: Iterator[float] = schedule.offsets(random.Random(1))
    started = time.perf_counter()
    for _ in itertools.islice(offsets, 200_000):
        pass
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": object()}, "ArrivalSchedule"),
        ({"max_concurrency": 4}, "open-loop"),
        ({"schedule": Poisson(1.0), "adaptive": True}, "closed-loop only"),
        ({"schedule": Poisson(1.0), "max_concurrency": 0}, "max_concurrency"),
        ({"schedule": Poisson(1.0), "max_concurrency": 2.5}, "max_concurrency"),
        ({"lag_threshold": 0.0}, "lag_threshold"),
        ({"timeline_interval": -1.0}, "timeline_interval"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"chunk_times": 1}, "chunk_times"),
    ],
)
def test_open_loop_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        FanoutOptions(**kwargs)


def test_open_loop_options() -> None:
    options = FanoutOptions(schedule=Poisson(5.0), max_concurrency=3, seed=1)
    assert options.open_loop
    assert not FanoutOptions().open_loop
