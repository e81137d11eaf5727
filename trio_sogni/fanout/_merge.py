"""`merge_reports`: one `RunReport` from the reports of a run split across processes or
machines (shards of one rate point, run in parallel)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from .. import InvalidRequestError
from ._metrics import HISTOGRAM_NAMES, MAX_TIMELINE_BUCKETS, LogHistogram
from ._types import LatencySummary, RunReport, TimelineBucket

__all__ = ["merge_reports"]


def _sum_counts(dicts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _merged_histograms(reports: Sequence[RunReport]) -> dict[str, LogHistogram]:
    merged: dict[str, LogHistogram] = {}
    for i, report in enumerate(reports):
        for name in HISTOGRAM_NAMES:
            data = report.histograms.get(name)
            if data is None:
                summary: LatencySummary | None = getattr(report, name, None)
                if summary is not None and summary.count:
                    raise InvalidRequestError(
                        f"report {i} has {name} values but no histogram (an older report?)"
                    )
                continue
            merged.setdefault(name, LogHistogram()).merge(LogHistogram.from_data(data))
    return merged


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _merged_timeline(reports: Sequence[RunReport], t0: float) -> tuple[float, list[TimelineBucket]]:
    """Sum the timelines bucket-wise on the coarsest interval (every interval must divide it
    by a power of two), each shifted by its ``t0_wall`` offset from ``t0`` (rounded down to a
    bucket), then halve the resolution until at most `MAX_TIMELINE_BUCKETS` remain."""
    interval = max(r.timeline_interval for r in reports)
    for i, report in enumerate(reports):
        ratio = interval / report.timeline_interval
        if abs(ratio - 2 ** round(math.log2(ratio))) > 1e-9 * ratio:
            raise InvalidRequestError(
                f"report {i}: timeline interval {report.timeline_interval} does not divide "
                f"{interval} by a power of two"
            )
    rows: dict[int, list[int]] = {}
    for report in reports:
        shift = report.t0_wall - t0
        peaks: dict[int, int] = {}  # this shard's peak per merged bucket
        for bucket in report.timeline:
            index = max(0, math.floor((bucket.t + shift) / interval + 1e-9))
            row = rows.setdefault(index, [0, 0, 0, 0, 0])
            row[0] += bucket.sent
            row[1] += bucket.ok
            row[2] += bucket.failed
            row[3] += bucket.output_tokens
            peaks[index] = max(peaks.get(index, 0), bucket.in_flight)
        for index, peak in peaks.items():
            rows[index][4] += peak  # summed across shards: an upper bound
    if not rows:
        return interval, []
    length = max(rows) + 1
    while length > MAX_TIMELINE_BUCKETS:
        coarse: dict[int, list[int]] = {}
        for index, row in rows.items():
            target = coarse.setdefault(index // 2, [0, 0, 0, 0, 0])
            for k in range(4):
                target[k] += row[k]
            target[4] = max(target[4], row[4])
        rows = coarse
        interval *= 2
        length = max(rows) + 1
    empty = [0, 0, 0, 0, 0]
    return interval, [TimelineBucket(i * interval, *rows.get(i, empty)) for i in range(length)]


def merge_reports(reports: Sequence[RunReport]) -> RunReport:
    """Combine the reports of one rate point run in parallel (processes, or shards on several
    machines) into one, as if one client had made every request:

    * counts, token totals, spend, retries, ``held_back``, ``errors_by_class``, ``deadlines``
      and ``retries_histogram`` are summed;
    * the histograms are merged exactly and every `LatencySummary` is recomputed from them
      (a report with values but no histograms, i.e. an older one, is refused);
    * ``wall_time`` is the union span, from the earliest first send to the latest completion
      (aligned by ``t0_wall``), and the rates are recomputed over it (``goodput_rps`` from each
      report's good-item count, ``goodput_rps · wall_time``);
    * ``offered_rps`` and ``sent_rps`` are summed (the shards offered their load at the same
      time); ``schedule`` is the common one, else ``{"kind": "mixed", "shards": [...]}``;
    * timelines are aligned by ``t0_wall`` and summed bucket-wise on the coarsest interval
      (intervals must differ by powers of two; a shard's offset is rounded down to a bucket);
    * ``valid`` only if every report is; reasons are prefixed ``shard i:``;
    * ``concurrency_history`` entries are concatenated with the reason prefixed ``shard i:``;
    * ``peak_in_flight`` and the timeline's ``in_flight`` are summed: an upper bound (the
      shards' peaks need not coincide);
    * ``budget_usd`` / ``budget_tokens`` are summed when every report has one; ``slo`` and
      ``lag_threshold``-based validity are taken from the reports as they are.

    Raises:
        InvalidRequestError: no reports, a report without histograms, or incompatible
            timeline intervals.
    """
    if not reports:
        raise InvalidRequestError("merge_reports needs at least one report")
    hists = _merged_histograms(reports)
    t0 = min(r.t0_wall for r in reports)
    starts = [r.t0_wall + r.wall_start for r in reports]
    ends = [s + r.wall_time for s, r in zip(starts, reports, strict=True)]
    begin = min(starts)
    wall = max(0.0, max(ends) - begin)

    def per_s(count: float) -> float:
        return count / wall if wall > 0 else 0.0

    ok = sum(r.ok for r in reports)
    good = sum(round(r.goodput_rps * r.wall_time) for r in reports)
    input_tokens = sum(r.input_tokens for r in reports)
    output_tokens = sum(r.output_tokens for r in reports)
    schedules = [r.schedule for r in reports]
    schedule = (
        schedules[0]
        if all(s == schedules[0] for s in schedules)
        else {"kind": "mixed", "shards": schedules}
    )
    reasons = [
        f"shard {i}: {reason}" for i, r in enumerate(reports) for reason in r.invalid_reasons
    ]
    history = [
        (t, limit, f"shard {i}: {reason}")
        for i, r in enumerate(reports)
        for t, limit, reason in r.concurrency_history
    ]
    interval, timeline = _merged_timeline(reports, t0)
    empty = LogHistogram()

    def summary(name: str) -> LatencySummary:
        return hists.get(name, empty).summary()

    projected = [r.projected_usd for r in reports]
    budgets_usd = [r.budget_usd for r in reports]
    budgets_tokens = [r.budget_tokens for r in reports]
    return RunReport(
        wall_time=wall,
        items_total=sum(r.items_total for r in reports),
        ok=ok,
        failed=sum(r.failed for r in reports),
        cancelled=sum(r.cancelled for r in reports),
        budget_exhausted=sum(r.budget_exhausted for r in reports),
        skipped=sum(r.skipped for r in reports),
        cached=sum(r.cached for r in reports),
        requests_per_s=per_s(ok),
        output_tokens_per_s=per_s(output_tokens),
        total_tokens_per_s=per_s(input_tokens + output_tokens),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        goodput_rps=per_s(good),
        slo_attainment=(good / ok) if ok else None,
        slo=dict(reports[0].slo),
        queue_time=summary("queue_time"),
        ttft=summary("ttft"),
        ttft_from_sched=summary("ttft_from_sched"),
        ttst=summary("ttst"),
        itl=summary("itl"),
        tpot=summary("tpot"),
        e2el=summary("e2el"),
        errors_by_class=_sum_counts([r.errors_by_class for r in reports]),
        deadlines=_sum_counts([r.deadlines for r in reports]),
        retries=sum(r.retries for r in reports),
        retries_histogram=dict(
            sorted(
                _sum_counts([r.retries_histogram for r in reports]).items(),
                key=lambda kv: int(kv[0]),
            )
        ),
        succeeded_after_retry=sum(r.succeeded_after_retry for r in reports),
        spend_usd=sum(r.spend_usd for r in reports),
        projected_usd=_sum_or_none(projected),
        budget_usd=None if None in budgets_usd else _sum_or_none(budgets_usd),
        budget_tokens=(
            None
            if any(b is None for b in budgets_tokens)
            else sum(b for b in budgets_tokens if b is not None)
        ),
        concurrency_history=history,
        peak_in_flight=sum(r.peak_in_flight for r in reports),
        schedule=schedule,
        offered_rps=_sum_or_none([r.offered_rps for r in reports]),
        sent_rps=_sum_or_none([r.sent_rps for r in reports]),
        lag=summary("lag"),
        loop_lag=summary("loop_lag"),
        held_back=sum(r.held_back for r in reports),
        valid=all(r.valid for r in reports),
        invalid_reasons=reasons,
        timeline_interval=interval,
        timeline=timeline,
        histograms={name: hist.to_data() for name, hist in hists.items()},
        t0_wall=t0,
        wall_start=begin - t0,
    )
