"""Two runs side by side: `compare_rows` (data, for CI) and `compare` (a table)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Final, Literal

import msgspec

from ..fanout import RunReport
from ._common import format_rate, format_seconds, printable
from ._model import BenchPoint, BenchReportError, BenchRun

__all__ = ["COMPARED_METRICS", "CompareRow", "Unit", "compare", "compare_rows", "match_points"]


Unit = Literal["s", "rps", "tok/s", "ratio", "usd"]
"""What a compared metric counts: seconds, requests/s, output tokens/s, a fraction, US dollars."""


class _Metric(msgspec.Struct, frozen=True):
    unit: Unit
    better: Literal["lower", "higher"]
    get: Callable[[RunReport], float | None]


def _error_rate(report: RunReport) -> float | None:
    ended = report.ok + report.failed
    return report.failed / ended if ended else None


_METRICS: Final[dict[str, _Metric]] = {
    "requests_per_s": _Metric("rps", "higher", lambda r: r.requests_per_s),
    "output_tokens_per_s": _Metric("tok/s", "higher", lambda r: r.output_tokens_per_s),
    "goodput_rps": _Metric("rps", "higher", lambda r: r.goodput_rps),
    "slo_attainment": _Metric("ratio", "higher", lambda r: r.slo_attainment),
    "error_rate": _Metric("ratio", "lower", _error_rate),
    "ttft_p50": _Metric("s", "lower", lambda r: r.ttft.p50),
    "ttft_p99": _Metric("s", "lower", lambda r: r.ttft.p99),
    "ttst_p50": _Metric("s", "lower", lambda r: r.ttst.p50),
    "itl_p50": _Metric("s", "lower", lambda r: r.itl.p50),
    "itl_p99": _Metric("s", "lower", lambda r: r.itl.p99),
    "tpot_p50": _Metric("s", "lower", lambda r: r.tpot.p50),
    "e2el_p50": _Metric("s", "lower", lambda r: r.e2el.p50),
    "e2el_p99": _Metric("s", "lower", lambda r: r.e2el.p99),
    "queue_time_p99": _Metric("s", "lower", lambda r: r.queue_time.p99),
    "spend_usd": _Metric("usd", "lower", lambda r: r.spend_usd),
}

COMPARED_METRICS: Final = tuple(_METRICS)
"""The metrics `compare_rows` compares, in order. ``error_rate`` is failed / (ok + failed);
``slo_attainment`` and ``error_rate`` are fractions (0..1)."""


class CompareRow(msgspec.Struct, kw_only=True, frozen=True):
    """One metric of one pair of matched points.

    Attributes:
        label: the point's label in run A.
        label_b: the matched point's label in run B (differs from ``label`` when matched by
            position).
        metric: a name of `COMPARED_METRICS`.
        unit: ``"s"``, ``"rps"``, ``"tok/s"``, ``"ratio"`` or ``"usd"``.
        better: which direction is an improvement: ``lower`` (latencies, errors, spend) or
            ``higher`` (throughput, goodput, SLO attainment).
        a, b: the metric in run A and run B (``None``: not measured, e.g. no samples).
        change_pct: ``(b - a) / |a| x 100``; ``0.0`` when both are 0, ``±inf`` when only A is 0,
            ``None`` when either is missing.
        regression: the change is in the worse direction by more than the threshold given to
            `compare_rows` (always ``False`` without one).
        improvement: the change is in the better direction by more than the threshold.
    """

    label: str
    label_b: str
    metric: str
    unit: Unit
    better: Literal["lower", "higher"]
    a: float | None
    b: float | None
    change_pct: float | None
    regression: bool = False
    improvement: bool = False


def match_points(a: BenchRun, b: BenchRun) -> list[tuple[BenchPoint, BenchPoint]]:
    """Pair the points of ``a`` and ``b``: by label when the runs share at least one label
    (points whose label is in only one run are left out), else by position (the first with
    the first, ...; the longer run's extra points are left out). Pairs follow ``a`` 's order."""
    labels_b = {point.label: point for point in b.points}
    if any(point.label in labels_b for point in a.points):
        return [(point, labels_b[point.label]) for point in a.points if point.label in labels_b]
    return list(zip(a.points, b.points, strict=False))


def _change(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return None
    if a == 0:
        return 0.0 if b == 0 else math.copysign(math.inf, b)
    return (b - a) / abs(a) * 100.0


def compare_rows(a: BenchRun, b: BenchRun, *, threshold: float | None = None) -> list[CompareRow]:
    """Every metric of `COMPARED_METRICS` for every pair of `match_points`, A (the baseline)
    against B. With ``threshold`` (a percentage, e.g. ``10``), a row whose change is worse
    than ``threshold`` % is a ``regression`` and one better by more is an ``improvement``;
    ``any(row.regression for row in rows)`` is the CI verdict (``--fail-above``).

    Raises:
        BenchReportError: a negative or non-finite ``threshold``, or no pair of points to
            compare.
    """
    if threshold is not None and (not math.isfinite(threshold) or threshold < 0):
        raise BenchReportError(f"the threshold must be a finite percentage >= 0, got {threshold}")
    pairs = match_points(a, b)
    if not pairs:
        raise BenchReportError("the runs have no points to compare")
    rows: list[CompareRow] = []
    for point_a, point_b in pairs:
        for name, metric in _METRICS.items():
            value_a, value_b = metric.get(point_a.report), metric.get(point_b.report)
            change = _change(value_a, value_b)
            worse = better = False
            if threshold is not None and change is not None:
                signed = change if metric.better == "lower" else -change
                worse, better = signed > threshold, -signed > threshold
            rows.append(
                CompareRow(
                    label=point_a.label,
                    label_b=point_b.label,
                    metric=name,
                    unit=metric.unit,
                    better=metric.better,
                    a=value_a,
                    b=value_b,
                    change_pct=change,
                    regression=worse,
                    improvement=better,
                )
            )
    return rows


def _value(row: CompareRow, value: float | None) -> str:
    if value is None:
        return "-"
    match row.unit:
        case "s":
            return format_seconds(value)
        case "ratio":
            return f"{value * 100:.1f}%"
        case "usd":
            return f"${value:.4f}"
        case _:
            return format_rate(value)


def _pct(change: float | None) -> str:
    if change is None:
        return "-"
    if math.isinf(change):
        return "+inf%" if change > 0 else "-inf%"
    return f"{change:+.1f}%" if round(change, 1) else "+0.0%"


def _describe(run: BenchRun) -> str:
    return f"{run.model} on {run.target}, {run.created}"


def compare(
    a: BenchRun, b: BenchRun, *, threshold: float | None = None, names: Sequence[str] = ("A", "B")
) -> str:
    """A plain-text side-by-side table of `compare_rows` (one block per point pair: metric, A,
    B, change in %; a point that is not valid in a run says so), for a terminal or a CI log.
    With ``threshold``, regressions are marked
    ``!`` and improvements ``+``, and a last line counts the regressions. ``names`` head the two
    value columns. Table lines fit in 100 columns; non-printable characters of the data are
    printed as ``?``; the text ends with a newline.

    Raises:
        BenchReportError: as `compare_rows`, or ``names`` is not two names.
    """
    if len(names) != 2:
        raise BenchReportError("names must be two names, for run A and run B")
    rows = compare_rows(a, b, threshold=threshold)
    name_a, name_b = (name[:12] for name in names)
    lines = [f"{name_a}: {_describe(a)}", f"{name_b}: {_describe(b)}"]
    unmatched_a = [p.label for p in a.points if p.label not in {r.label for r in rows}]
    unmatched_b = [p.label for p in b.points if p.label not in {r.label_b for r in rows}]
    for name, unmatched in ((name_a, unmatched_a), (name_b, unmatched_b)):
        if unmatched:
            lines += textwrap.wrap(f"only in {name}: {', '.join(unmatched)}", 100)
    if threshold is not None:
        lines.append(f"threshold: {threshold:g}% (! worse, + better)")
    width = max(len(name) for name in COMPARED_METRICS)
    current: tuple[str, str] | None = None
    for row in rows:
        if (row.label, row.label_b) != current:
            current = (row.label, row.label_b)
            title = row.label if row.label == row.label_b else f"{row.label} vs {row.label_b}"
            invalid = [
                name
                for name, run, label in ((name_a, a, row.label), (name_b, b, row.label_b))
                if not run.point(label).report.valid
            ]
            if invalid:
                title += f" (not valid in {' and '.join(invalid)}: the client fell behind)"
            lines += ["", f"point {title}"]
            lines.append(f"  {'metric':<{width}} {name_a:>12} {name_b:>12} {'change':>9}")
        flag = "!" if row.regression else "+" if row.improvement else ""
        lines.append(
            f"  {row.metric:<{width}} {_value(row, row.a):>12} {_value(row, row.b):>12}"
            f" {_pct(row.change_pct):>9} {flag}".rstrip()
        )
    if threshold is not None:
        regressions = sum(row.regression for row in rows)
        lines += [
            "",
            f"{regressions} regression{'s' if regressions != 1 else ''} above {threshold:g}%",
        ]
    return "\n".join(printable(line) for line in lines) + "\n"
