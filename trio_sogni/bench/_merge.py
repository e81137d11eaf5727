"""`merge_runs`: one `BenchRun` from the shard outputs of one run (several machines or
processes, each running its share of every point's load at the same time)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import InvalidRequestError
from ..fanout import merge_reports
from ._model import BenchPoint, BenchReportError, BenchRun, parse_shard

__all__ = ["merge_runs"]


def _sum(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _isum(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _check_alike(runs: Sequence[BenchRun]) -> None:
    first = runs[0]
    for i, run in enumerate(runs[1:], start=1):
        for name in ("model", "workload", "settings", "slo"):
            if getattr(run, name) != getattr(first, name):
                raise BenchReportError(
                    f"run {i} has another {name} than run 0: not shards of one run"
                )
        if [p.label for p in run.points] != [p.label for p in first.points]:
            raise BenchReportError(
                f"run {i} has other points than run 0: {[p.label for p in run.points]} against"
                f" {[p.label for p in first.points]}"
            )
    shards: dict[tuple[int, int], int] = {}
    for i, run in enumerate(runs):
        if run.shard is None:
            raise BenchReportError(f"run {i} is not a shard (no 'shard' field)")
        key = parse_shard(run.shard)
        if key in shards:
            raise BenchReportError(f"runs {shards[key]} and {i} are both shard {run.shard}")
        shards[key] = i
    if len({count for _, count in shards}) > 1:
        raise BenchReportError(f"the shard counts differ: {[run.shard for run in runs]}")


def _merge_point(label: str, points: Sequence[BenchPoint]) -> BenchPoint:
    first = points[0]
    for point in points[1:]:
        if point.kind != first.kind:
            raise BenchReportError(
                f"point {label}: kind {point.kind} in one shard, {first.kind} in another"
            )
    try:
        report = merge_reports([p.report for p in points])
    except InvalidRequestError as exc:
        raise BenchReportError(f"point {label}: {exc}") from exc
    return BenchPoint(
        label=label,
        kind=first.kind,
        target_rps=_sum([p.target_rps for p in points]),
        concurrency=_isum([p.concurrency for p in points]),
        report=report,
    )


def merge_runs(runs: Sequence[BenchRun], *, allow_partial: bool = False) -> BenchRun:
    """Combine the shard outputs of one run into one report, as if one client had applied the
    whole load.

    The runs must be shards of one run: each has a distinct ``shard`` (``"i/N"``, the same N),
    and they share the model, workload, settings, SLOs and point labels (in order). Each point's
    reports are combined with `trio_sogni.fanout.merge_reports` (counts summed, histograms
    merged exactly and percentiles recomputed, rates over the union of the wall times,
    timelines aligned by ``t0_wall``); its ``target_rps`` and ``concurrency`` are the shards'
    sums (each shard records its own share of the load). The result has ``shard`` ``None``,
    ``shards_merged`` the number of runs, ``processes`` the sum, ``created`` the earliest, and the
    shards' knee when they all agree on its label (``knee_rps`` then summed), else no knee
    (find it again on the merged points). Every shard ``0/N`` ... ``N-1/N`` must be there:
    a merge of some of them describes only part of the load, so it needs ``allow_partial``
    (its ``shards_merged`` then says how many of the N it holds).

    Raises:
        BenchReportError: no runs, a run that is not a shard, two runs of the same shard, shard
            counts that differ, a missing shard (without ``allow_partial``), another model / workload / settings / SLOs / point labels /
            point kind, or reports `trio_sogni.fanout.merge_reports` refuses (say, of an older
            version without histograms).
    """
    if not runs:
        raise BenchReportError("merge_runs needs at least one shard")
    _check_alike(runs)
    first = runs[0]
    if not allow_partial:
        count = parse_shard(first.shard or "0/1")[1]
        present = {parse_shard(run.shard or "0/1")[0] for run in runs}
        base = 1 if count in present else 0  # shards numbered 1..N rather than 0..N-1
        missing = [f"{i}/{count}" for i in range(base, base + count) if i not in present]
        if missing:
            raise BenchReportError(
                f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing: a merge "
                "of some shards describes only part of the load (allow_partial to merge anyway)"
            )
    points = [
        _merge_point(point.label, [run.points[i] for run in runs])
        for i, point in enumerate(first.points)
    ]
    knee_label: str | None = None
    knee_rps: float | None = None
    if first.knee_label is not None and all(run.knee_label == first.knee_label for run in runs):
        knee_label = first.knee_label
        knee_rps = _sum([run.knee_rps for run in runs])
    return BenchRun(
        tool=first.tool,
        created=min(run.created for run in runs),
        target=first.target,
        model=first.model,
        workload=first.workload,
        settings=first.settings,
        slo=first.slo,
        points=points,
        knee_rps=knee_rps,
        knee_label=knee_label,
        processes=sum(run.processes for run in runs),
        shard=None,
        shards_merged=len(runs),
    )
