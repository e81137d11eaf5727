"""The data model of a benchmark run: `BenchRun` (one run of a sweep, or one shard of it) made of
`BenchPoint` s (one load level each, with its `trio_sogni.fanout.RunReport`).

These Structs are the JSON report's schema (``docs/bench-schema.json``, ``docs/bench-report.md``).
Its stability promise: fields are only ever added, each with a default, so a reader of schema
`SCHEMA_VERSION` reads every file of that version; a change that would break a reader bumps
`SCHEMA_VERSION`, and `load_json` refuses files newer than the version it knows.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from .. import SogniError
from ..fanout import RunReport

__all__ = ["SCHEMA_VERSION", "BenchPoint", "BenchReportError", "BenchRun", "PointKind"]

SCHEMA_VERSION: Final = 1
"""The version of the JSON report schema this code writes and the newest it reads."""

PointKind = Literal["synchronous", "throughput", "rate", "closed"]
"""How a point's load was applied: ``synchronous`` (one request at a time), ``throughput`` (all
at once, as fast as the network takes them), ``rate`` (open loop at ``target_rps``), ``closed``
(a closed loop of ``concurrency`` workers)."""

_SHARD: Final = re.compile(r"([0-9]+)/([0-9]+)")


class BenchReportError(SogniError, ValueError):
    """A benchmark report cannot be read, built, compared or merged: an invalid or newer file,
    duplicate point labels, shards of different runs, a missing optional dependency (the
    ``bench`` extra for the HTML report), ..."""


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)``; ``N ≥ 1`` and ``0 ≤ i ≤ N`` (0- or 1-based shard numbers).

    Raises:
        BenchReportError: not of that form.
    """
    match = _SHARD.fullmatch(shard)
    if match is None:
        raise BenchReportError(f"shard must look like 'i/N', got {shard!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index > count:
        raise BenchReportError(f"shard {shard!r}: need N >= 1 and i <= N")
    return index, count


class BenchPoint(msgspec.Struct, kw_only=True, frozen=True):
    """One load level of a benchmark run and what it measured.

    Attributes:
        label: the point's name, unique within a run (``"synchronous"``, ``"throughput"``,
            ``"rate-12.5"``, ``"closed-32"``, ...); comparing and merging match points by it.
        kind: see `PointKind`.
        target_rps: the nominal request rate of the point's arrival schedule (``None`` for a
            closed loop).
        concurrency: the closed loop's pool size, or the open loop's ``max_concurrency``.
        report: the fan-out run's report for this point.

    Raises (on construction or decoding):
        BenchReportError: an empty label.
    """

    label: str
    kind: PointKind
    target_rps: float | None
    concurrency: int | None
    report: RunReport

    def __post_init__(self) -> None:
        if not self.label:
            raise BenchReportError("a point's label must not be empty")


class BenchRun(msgspec.Struct, kw_only=True, frozen=True):
    """A benchmark run (a sweep of load levels against one model), or one shard of it.

    Attributes:
        schema_version: the schema this run was written with (`SCHEMA_VERSION`).
        tool: what wrote it (``"trio-sogni 0.x.y"``).
        created: when, ISO 8601 in UTC.
        target: a human description of the network benchmarked (never a secret).
        model: the model benchmarked.
        workload: how requests were made (the workload's parameters).
        settings: how the sweep ran (its parameters: rates, durations, limits, ...).
        slo: the service-level objectives goodput was judged against, by metric name, in seconds.
        points: the load levels, in the order they ran.
        knee_rps: the request rate past which latency degrades (the saturation knee), if found.
        knee_label: the label of the point at the knee, if found.
        processes: how many client processes produced it.
        shard: ``"i/N"`` when this is one shard's output, else ``None``.
        shards_merged: how many shards were merged into it (`merge_runs`); 1 for a plain run.

    Raises (on construction or decoding):
        BenchReportError: duplicate point labels, a ``knee_label`` naming no point, a malformed
            ``shard``, or a ``processes`` / ``shards_merged`` / ``schema_version`` below 1.
    """

    schema_version: int = SCHEMA_VERSION
    tool: str
    created: str
    target: str
    model: str
    workload: dict[str, Any]
    settings: dict[str, Any]
    slo: dict[str, float]
    points: list[BenchPoint]
    knee_rps: float | None = None
    knee_label: str | None = None
    processes: int = 1
    shard: str | None = None
    shards_merged: int = 1

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for point in self.points:
            if point.label in seen:
                raise BenchReportError(f"duplicate point label {point.label!r}")
            seen.add(point.label)
        if self.knee_label is not None and self.knee_label not in seen:
            raise BenchReportError(f"knee_label {self.knee_label!r} names no point")
        if self.shard is not None:
            parse_shard(self.shard)
        for name in ("schema_version", "processes", "shards_merged"):
            if getattr(self, name) < 1:
                raise BenchReportError(f"{name} must be at least 1")

    def point(self, label: str) -> BenchPoint:
        """The point labelled ``label``.

        Raises:
            KeyError: no such point.
        """
        for point in self.points:
            if point.label == label:
                return point
        raise KeyError(label)
