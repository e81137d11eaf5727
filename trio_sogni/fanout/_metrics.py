"""Run-wide aggregation of fan-out results into snapshots and the final report, in memory that
does not grow with the number of items.

Latency distributions are kept in `LogHistogram` s (log-spaced buckets, relative error ≤ 1 %),
never as per-item lists, so a 10^6-item run costs the same memory as a 10^3-item one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Final

import trio

from ._types import FanoutOptions, FanoutResult, LatencySummary, RunReport, RunSnapshot

__all__ = ["LogHistogram", "RunStats"]

_GROWTH: Final = 1.02
_LOG_GROWTH: Final = math.log(_GROWTH)


class LogHistogram:
    """A histogram of non-negative values in log-spaced buckets (each 2 % wider than the last).

    A percentile is reported as its bucket's geometric midpoint, clamped to the observed min and
    max, so its relative error is at most 1 %. Values ≤ 1 µs share one bucket (reported as the
    observed minimum). Memory is bounded by the range of values, not their count (about 1 200
    buckets between 1 µs and 3 hours).
    """

    __slots__ = ("_buckets", "_tiny", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self._tiny = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        """Record ``value`` (negative values are recorded as 0)."""
        value = max(0.0, value)
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value <= 1e-6:
            self._tiny += 1
        else:
            self._buckets[math.floor(math.log(value) / _LOG_GROWTH)] += 1

    def extend(self, values: Iterable[float]) -> None:
        """Record every value of ``values``."""
        for value in values:
            self.add(value)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0 ≤ q ≤ 100), or ``None`` when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = self._tiny
        if seen >= rank:
            return self.min
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                middle = math.exp((key + 0.5) * _LOG_GROWTH)
                return min(self.max, max(self.min, middle))
        return self.max  # pragma: no cover - the counts always add up

    def summary(self) -> LatencySummary:
        """Count, mean, p50 / p90 / p99, min, max."""
        if not self.count:
            return LatencySummary(
                count=0, mean=None, p50=None, p90=None, p99=None, min=None, max=None
            )
        return LatencySummary(
            count=self.count,
            mean=self.total / self.count,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p99=self.percentile(99),
            min=self.min,
            max=self.max,
        )


class RunStats:
    """Counters and histograms of one run, fed one `FanoutResult` at a time (`add`)."""

    def __init__(self, options: FanoutOptions) -> None:
        self.options = options
        self.started = trio.current_time()
        self.first_send: float | None = None
        self.last_done: float | None = None
        self.status: Counter[str] = Counter()
        self.cached = 0
        self.errors: Counter[str] = Counter()
        self.deadlines: Counter[str] = Counter()
        self.retry_histogram: Counter[int] = Counter()
        self.retries = 0
        self.succeeded_after_retry = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.spend_usd = 0.0
        self.projected_usd = 0.0
        self.quoted = False
        self.good = 0
        self.hist = {
            name: LogHistogram()
            for name in ("queue_time", "ttft", "ttft_from_sched", "ttst", "itl", "tpot", "e2el")
        }

    @property
    def done(self) -> int:
        """Items with an outcome (every status)."""
        return sum(self.status.values())

    def note_send(self, now: float) -> None:
        """An attempt was sent at ``now``."""
        if self.first_send is None:
            self.first_send = now

    def note_retry(self) -> None:
        """An extra attempt was started."""
        self.retries += 1

    def note_quote(self, usd: float) -> None:
        """A dispatched attempt's worst-case cost (the projection)."""
        self.quoted = True
        self.projected_usd += usd

    def note_spend(self, usd: float) -> None:
        """Settled cost of an attempt (including failed ones the server billed)."""
        self.spend_usd += usd

    def add(self, result: FanoutResult) -> None:
        """Account for one item's outcome."""
        self.status[result.status] += 1
        if result.metrics.t_done is not None:
            self.last_done = result.metrics.t_done
        if result.cached:
            self.cached += 1
        if result.error is not None and result.status != "skipped":
            self.errors[result.error.type] += 1
        if result.deadline is not None:
            self.deadlines[result.deadline] += 1
        if result.attempts:
            self.retry_histogram[result.attempts - 1] += 1
        if result.usage is not None and not result.cached:
            self.input_tokens += result.usage.prompt_tokens
            self.output_tokens += result.usage.completion_tokens
        if result.status != "ok" or result.cached:
            return
        if result.attempts > 1:
            self.succeeded_after_retry += 1
        m = result.metrics
        values = {
            "queue_time": m.queue_time,
            "ttft": m.ttft,
            "ttft_from_sched": m.ttft_from_sched,
            "ttst": m.ttst,
            "tpot": m.tpot,
            "e2el": m.e2el,
        }
        for name, value in values.items():
            if value is not None:
                self.hist[name].add(value)
        self.hist["itl"].extend(m.itl)
        if self._meets_slo(values):
            self.good += 1

    def _meets_slo(self, values: dict[str, float | None]) -> bool:
        for name, limit in self.options.slo.items():
            value = values[name]
            if value is None:
                if name == "tpot":
                    continue  # undefined for ≤ 1 output token: no decode phase to judge
                return False
            if value > limit:
                return False
        return True

    def wall_time(self, now: float | None = None) -> float:
        """First send → last completion (or ``now`` while running); 0 before the first send."""
        if self.first_send is None:
            return 0.0
        end = now if now is not None else (self.last_done or self.first_send)
        return max(0.0, end - self.first_send)

    def snapshot(
        self,
        *,
        items_total: int | None,
        in_flight: int,
        queued: int,
        reserved_usd: float,
        concurrency_limit: int,
        breaker_open: bool,
        admitting: bool,
    ) -> RunSnapshot:
        """A `RunSnapshot` of now."""
        now = trio.current_time()
        wall = self.wall_time(now)
        done = self.done
        ok = self.status["ok"]
        rate = done / wall if wall > 0 else 0.0
        eta: float | None = None
        projected: float | None = None
        if items_total is not None:
            remaining = max(0, items_total - done)
            if rate > 0:
                eta = remaining / rate
            if ok:
                projected = self.spend_usd + self.spend_usd / max(1, done) * remaining
        return RunSnapshot(
            elapsed=now - self.started,
            items_total=items_total,
            items_done=done,
            ok=ok,
            failed=self.status["failed"],
            cancelled=self.status["cancelled"],
            budget_exhausted=self.status["budget_exhausted"],
            skipped=self.status["skipped"],
            cached=self.cached,
            in_flight=in_flight,
            queued=queued,
            output_tokens=self.output_tokens,
            output_tokens_per_s=self.output_tokens / wall if wall > 0 else 0.0,
            requests_per_s=ok / wall if wall > 0 else 0.0,
            spend_usd=self.spend_usd,
            reserved_usd=reserved_usd,
            projected_usd=projected,
            errors_by_class=dict(self.errors),
            retries=self.retries,
            concurrency_limit=concurrency_limit,
            breaker_open=breaker_open,
            admitting=admitting,
            eta_seconds=eta,
        )

    def report(
        self, *, concurrency_history: list[tuple[float, int, str]], peak_in_flight: int
    ) -> RunReport:
        """The `RunReport` of everything added so far."""
        wall = self.wall_time()
        ok = self.status["ok"]

        def per_s(count: float) -> float:
            return count / wall if wall > 0 else 0.0

        options = self.options
        return RunReport(
            wall_time=wall,
            items_total=self.done,
            ok=ok,
            failed=self.status["failed"],
            cancelled=self.status["cancelled"],
            budget_exhausted=self.status["budget_exhausted"],
            skipped=self.status["skipped"],
            cached=self.cached,
            requests_per_s=per_s(ok),
            output_tokens_per_s=per_s(self.output_tokens),
            total_tokens_per_s=per_s(self.input_tokens + self.output_tokens),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            goodput_rps=per_s(self.good),
            slo_attainment=(self.good / ok) if ok else None,
            slo=options.slo,
            queue_time=self.hist["queue_time"].summary(),
            ttft=self.hist["ttft"].summary(),
            ttft_from_sched=self.hist["ttft_from_sched"].summary(),
            ttst=self.hist["ttst"].summary(),
            itl=self.hist["itl"].summary(),
            tpot=self.hist["tpot"].summary(),
            e2el=self.hist["e2el"].summary(),
            errors_by_class=dict(self.errors),
            deadlines=dict(self.deadlines),
            retries=self.retries,
            retries_histogram={str(k): v for k, v in sorted(self.retry_histogram.items())},
            succeeded_after_retry=self.succeeded_after_retry,
            spend_usd=self.spend_usd,
            projected_usd=self.projected_usd if self.quoted else None,
            budget_usd=options.budget_usd,
            budget_tokens=options.budget_tokens,
            concurrency_history=concurrency_history,
            peak_in_flight=peak_in_flight,
        )
