"""Run-wide aggregation of fan-out results into snapshots and the final report, in memory that
does not grow with the number of items.

Latency distributions are kept in `LogHistogram` s (log-spaced buckets, relative error ≤ 1 %),
never as per-item lists, so a 10^6-item run costs the same memory as a 10^3-item one.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from typing import Final

import trio

from ._types import (
    FanoutOptions,
    FanoutResult,
    HistogramData,
    ItemMetrics,
    LatencySummary,
    RunReport,
    RunSnapshot,
    TimelineBucket,
)

__all__ = ["HISTOGRAM_NAMES", "MAX_TIMELINE_BUCKETS", "LogHistogram", "RunStats", "Timeline"]

MAX_TIMELINE_BUCKETS: Final = 2048
"""`Timeline` keeps at most this many buckets (then neighbours merge, the interval doubles)."""

HISTOGRAM_NAMES: Final = (
    "queue_time",
    "ttft",
    "ttft_from_sched",
    "ttst",
    "itl",
    "tpot",
    "e2el",
    "lag",
    "loop_lag",
)
"""The run's histograms (`RunReport.histograms` keys)."""

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
        """Record ``value`` (negative values and NaN are recorded as 0). O(1)."""
        if not value > 1e-6:
            if not value >= 0.0:
                value = 0.0
            self._tiny += 1
        else:
            buckets = self._buckets
            key = math.floor(math.log(value) / _LOG_GROWTH)
            buckets[key] = buckets.get(key, 0) + 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

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

    def merge(self, other: LogHistogram) -> None:
        """Add every value recorded in ``other`` (exact: same buckets)."""
        if not other.count:
            return
        self._buckets.update(other._buckets)
        self._tiny += other._tiny
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def to_data(self) -> HistogramData:
        """The full state, encodable (`HistogramData`)."""
        empty = not self.count
        return HistogramData(
            count=self.count,
            total=self.total,
            min=None if empty else self.min,
            max=None if empty else self.max,
            tiny=self._tiny,
            buckets=dict(self._buckets),
        )

    @classmethod
    def from_data(cls, data: HistogramData) -> LogHistogram:
        """A histogram with the state ``data`` (from `to_data`, possibly of another process)."""
        hist = cls()
        hist._buckets.update(data.buckets)
        hist._tiny = data.tiny
        hist.count = data.count
        hist.total = data.total
        if data.count:
            hist.min = data.min if data.min is not None else 0.0
            hist.max = data.max if data.max is not None else 0.0
        return hist

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


class Timeline:
    """Per-interval counts of a run (`TimelineBucket` s) in at most `MAX_TIMELINE_BUCKETS`
    buckets: when an event falls beyond the last one, neighbouring buckets merge pairwise and
    the interval doubles (as often as needed). Times are seconds from the run's start (earlier
    ones count in the first bucket)."""

    __slots__ = ("_level", "_rows", "interval", "limit")

    def __init__(self, interval: float, limit: int = MAX_TIMELINE_BUCKETS) -> None:
        self.interval = interval
        self.limit = limit
        self._rows: list[list[int]] = []  # [sent, ok, failed, output_tokens, in_flight]
        self._level = 0  # the in-flight count now

    def _row(self, t: float) -> list[int]:
        index = max(0, int(t / self.interval))
        while index >= self.limit:
            self._coarsen()
            index = max(0, int(t / self.interval))
        rows = self._rows
        while len(rows) <= index:
            rows.append([0, 0, 0, 0, self._level])  # what is in flight carries over
        return rows[index]

    def _coarsen(self) -> None:
        rows = self._rows
        merged: list[list[int]] = []
        for i in range(0, len(rows), 2):
            pair = rows[i : i + 2]
            merged.append([sum(r[k] for r in pair) for k in range(4)] + [max(r[4] for r in pair)])
        self._rows = merged
        self.interval *= 2

    def note_sent(self, t: float) -> None:
        """An item was dispatched at ``t``."""
        self._row(t)[0] += 1

    def note_done(self, t: float, status: str, output_tokens: int) -> None:
        """An item ended with ``status`` at ``t``."""
        row = self._row(t)
        if status == "ok":
            row[1] += 1
        elif status == "failed":
            row[2] += 1
        row[3] += output_tokens

    def note_in_flight(self, t: float, level: int) -> None:
        """``level`` requests are in flight from ``t`` on."""
        row = self._row(t)
        self._level = level
        row[4] = max(row[4], level)

    def buckets(self, until: float | None = None) -> list[TimelineBucket]:
        """The buckets, extended to ``until`` (seconds from the start) if given."""
        if until is not None:
            self._row(until)
        step = self.interval
        return [TimelineBucket(i * step, *row) for i, row in enumerate(self._rows)]


class RunStats:
    """Counters and histograms of one run, fed one `FanoutResult` at a time (`add`), and the
    open-loop dispatcher's records (`note_dispatch`, the loop probe's ``hist["loop_lag"]``).
    Memory does not grow with the number of items."""

    def __init__(self, options: FanoutOptions) -> None:
        self.options = options
        self.started = trio.current_time()
        self.t0_wall = time.time()
        self.timeline = Timeline(options.timeline_interval)
        self.held_back = 0
        self.scheduled = 0
        self.first_intended: float | None = None
        self.last_intended = 0.0
        self.dispatched = 0
        self.first_dispatch: float | None = None
        self.last_dispatch = 0.0
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
        self.hist = {name: LogHistogram() for name in HISTOGRAM_NAMES}

    def rebase(self, now: float) -> None:
        """Restart the run's clock at ``now`` (the open-loop dispatcher's time zero), before
        anything was recorded."""
        self.started = now
        self.t0_wall = time.time()

    def note_taken(self, now: float) -> None:
        """Closed loop: a worker took an item at ``now``."""
        self.timeline.note_sent(now - self.started)

    def note_dispatch(self, metrics: ItemMetrics) -> None:
        """Open loop: the dispatcher released an item (``t_intended``, ``t_dispatch``,
        ``held`` set). O(1)."""
        intended = metrics.t_intended
        dispatch = metrics.t_dispatch
        assert intended is not None
        assert dispatch is not None
        self.scheduled += 1
        if self.first_intended is None:
            self.first_intended = intended
        self.last_intended = intended
        self.dispatched += 1
        if self.first_dispatch is None:
            self.first_dispatch = dispatch
        self.last_dispatch = dispatch
        if metrics.held > 0:
            self.held_back += 1
        self.hist["lag"].add(dispatch - intended - metrics.held)
        self.timeline.note_sent(dispatch - self.started)

    def note_in_flight(self, now: float, level: int) -> None:
        """The number of requests in flight changed to ``level`` at ``now``."""
        self.timeline.note_in_flight(now - self.started, level)

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

    def add(self, result: FanoutResult, metrics: ItemMetrics) -> None:
        """Account for one item's outcome (``metrics``: its raw timing record)."""
        self.status[result.status] += 1
        if metrics.t_done is not None:
            self.last_done = metrics.t_done
            tokens = 0
            if result.usage is not None and not result.cached:
                tokens = result.usage.completion_tokens
            self.timeline.note_done(metrics.t_done - self.started, result.status, tokens)
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
        m = metrics
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

    @staticmethod
    def _rate(n: int, first: float | None, last: float) -> float | None:
        if first is None or n < 2 or last <= first:
            return None
        return (n - 1) / (last - first)

    def validity(self, offered: float | None, sent: float | None) -> list[str]:
        """Why an open-loop run's numbers describe the client rather than the server (empty:
        valid). Closed loop: always valid."""
        if not self.options.open_loop:
            return []
        threshold = self.options.lag_threshold
        reasons: list[str] = []
        for name, what in (("lag", "scheduling lag"), ("loop_lag", "event-loop lag")):
            p99 = self.hist[name].percentile(99)
            if p99 is not None and p99 > threshold:
                reasons.append(
                    f"{what} p99 {p99 * 1e3:.3f} ms > lag_threshold {threshold * 1e3:.3f} ms: "
                    "the client fell behind its schedule"
                )
        if offered is not None and sent is not None and not self.held_back and sent < 0.9 * offered:
            reasons.append(
                f"sent {sent:.3f} req/s < 90 % of the offered {offered:.3f} req/s "
                "(nothing held back): the client could not keep up"
            )
        return reasons

    def report(
        self, *, concurrency_history: list[tuple[float, int, str]], peak_in_flight: int
    ) -> RunReport:
        """The `RunReport` of everything added so far."""
        wall = self.wall_time()
        ok = self.status["ok"]
        offered = self._rate(self.scheduled, self.first_intended, self.last_intended)
        sent = self._rate(self.dispatched, self.first_dispatch, self.last_dispatch)
        reasons = self.validity(offered, sent)
        schedule = self.options.schedule
        end = self.last_done if self.last_done is not None else self.first_send
        timeline = self.timeline.buckets(None if end is None else end - self.started)

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
            schedule=schedule.describe() if schedule is not None else None,
            offered_rps=offered,
            sent_rps=sent,
            lag=self.hist["lag"].summary(),
            loop_lag=self.hist["loop_lag"].summary(),
            held_back=self.held_back,
            valid=not reasons,
            invalid_reasons=reasons,
            timeline_interval=self.timeline.interval,
            timeline=timeline,
            histograms={name: hist.to_data() for name, hist in self.hist.items()},
            t0_wall=self.t0_wall,
            wall_start=0.0 if self.first_send is None else self.first_send - self.started,
        )
