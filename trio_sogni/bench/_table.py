"""The terminal summary: `summary_table`, and the table rows `render_html` shares."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from ..fanout import RunReport
from ._common import format_rate, format_seconds, printable, request_rate
from ._model import BenchPoint, BenchRun

__all__ = ["MAX_LABEL", "Column", "header_lines", "summary_table", "table_columns"]

MAX_LABEL: Final = 24
"""Longer point labels are cut to this many characters in the terminal table."""


_WIDTH: Final = 100


class Column(NamedTuple):
    """One column of the summary table: a group heading (``""`` for none), a heading, and the
    cell text of a point."""

    group: str
    name: str
    cell: Callable[[BenchRun, BenchPoint], str]


def _mark(run: BenchRun, point: BenchPoint) -> str:
    return ("*" if point.label == run.knee_label else "") + ("" if point.report.valid else "!")


def _label(run: BenchRun, point: BenchPoint) -> str:
    label = point.label
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 3] + "..."


def _load(run: BenchRun, point: BenchPoint) -> str:
    if point.kind == "rate" and point.target_rps is not None:
        return f"{format_rate(point.target_rps)}/s"
    if point.kind == "closed" and point.concurrency is not None:
        return f"c={point.concurrency}"
    return {"synchronous": "sync", "throughput": "max"}.get(point.kind, "-")


def _slo(run: BenchRun, point: BenchPoint) -> str:
    attained = point.report.slo_attainment
    return "-" if attained is None else f"{attained * 100:.0f}%"


def _r(get: Callable[[RunReport], str]) -> Callable[[BenchRun, BenchPoint], str]:
    return lambda run, point: get(point.report)


def table_columns() -> Sequence[Column]:
    """The summary table's columns, in order."""
    return (
        Column("", "", _mark),
        Column("", "point", _label),
        Column("", "load", _load),
        Column("", "ok/s", _r(lambda r: format_rate(r.requests_per_s))),
        Column("", "tok/s", _r(lambda r: format_rate(r.output_tokens_per_s))),
        Column("", "good/s", _r(lambda r: format_rate(r.goodput_rps))),
        Column("", "SLO", _slo),
        Column("", "ok", _r(lambda r: str(r.ok))),
        Column("", "fail", _r(lambda r: str(r.failed))),
        Column("TTFT", "p50", _r(lambda r: format_seconds(r.ttft.p50))),
        Column("TTFT", "p99", _r(lambda r: format_seconds(r.ttft.p99))),
        Column("ITL", "p50", _r(lambda r: format_seconds(r.itl.p50))),
        Column("ITL", "p99", _r(lambda r: format_seconds(r.itl.p99))),
        Column("E2EL", "p99", _r(lambda r: format_seconds(r.e2el.p99))),
    )


def header_lines(run: BenchRun) -> list[str]:
    """The lines above the table: what was measured, how, the SLOs and the knee."""
    lines = [f"{run.model} on {run.target}"]
    about = [run.tool, run.created, f"{len(run.points)} points"]
    if run.processes > 1:
        about.append(f"{run.processes} processes")
    if run.shard is not None:
        about.append(f"shard {run.shard}")
    if run.shards_merged > 1:
        about.append(f"{run.shards_merged} shards merged")
    lines.append(", ".join(about))
    if run.slo:
        lines.append("SLO: " + ", ".join(f"{k} <= {format_seconds(v)}" for k, v in run.slo.items()))
    else:
        lines.append("SLO: none (goodput counts every ok request)")
    if run.knee_label is not None or run.knee_rps is not None:
        knee = "knee: "
        if run.knee_rps is not None:
            knee += f"{format_rate(run.knee_rps)} req/s "
        lines.append(knee + (f"(point {run.knee_label})" if run.knee_label else "").strip())
    else:
        lines.append("knee: not found")
    return lines


def _grid(run: BenchRun) -> list[str]:
    columns = table_columns()
    cells = [[column.cell(run, point) for column in columns] for point in run.points]
    widths = [
        max([len(column.name)] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)
    ]
    # A group heading spans its columns; widen the last one if the heading is longer.
    spans: list[tuple[str, int, int]] = []
    for i, column in enumerate(columns):
        if spans and spans[-1][0] == column.group:
            spans[-1] = (column.group, spans[-1][1], i)
        else:
            spans.append((column.group, i, i))
    for group, first, last in spans:
        span = sum(widths[first : last + 1]) + (last - first)
        if len(group) > span:
            widths[last] += len(group) - span

    def line(texts: Sequence[str]) -> str:
        parts: list[str] = []
        for i, text in enumerate(texts):
            left = i <= 1  # the mark and the label are text, the rest numbers
            parts.append(text.ljust(widths[i]) if left else text.rjust(widths[i]))
        return " ".join(parts).rstrip()

    groups: list[str] = []
    for group, first, last in spans:
        span = sum(widths[first : last + 1]) + (last - first)
        groups.append(group.ljust(span) if group else " " * span)
    lines = [" ".join(groups).rstrip()] if any(c.group for c in columns) else []
    lines.append(line([column.name for column in columns]))
    lines.extend(line(row) for row in cells)
    return lines


def summary_table(run: BenchRun) -> str:
    """``run`` as a plain-text table for a terminal, one row per point, with a few lines above
    (model, target, SLOs, knee) and below (errors by class, invalid points and why).

    Columns: the load (``12.5/s`` open loop, ``c=32`` closed loop, ``sync``, ``max``), ok
    requests/s, output tokens/s, goodput (requests/s meeting the SLOs), SLO attainment, ok and
    failed counts, TTFT p50 / p99, ITL p50 / p99 and E2EL p99. The knee's row is marked ``*``, an
    invalid point's ``!``. Lines are at most 100 characters for labels up to 24 characters
    (``MAX_LABEL``; longer ones are cut); non-printable characters of the data (terminal
    escapes, line breaks) are printed as ``?``; the text ends with a newline.
    """
    lines = [wrapped for line in header_lines(run) for wrapped in _wrap(line)]
    lines.append("")
    lines.extend(_grid(run))
    notes: list[str] = []
    if run.knee_label is not None:
        notes.append(_knee_note(run))
    for point in run.points:
        if not point.report.valid:
            reasons = "; ".join(point.report.invalid_reasons) or "invalid"
            notes.append(f"! {point.label} is not valid (the client fell behind): {reasons}")
    for point in run.points:
        errors = point.report.errors_by_class
        if errors:
            ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
            listed = ", ".join(f"{k}={v}" for k, v in ranked)
            notes.append(f"errors in {point.label}: {listed}")
    if notes:
        lines.append("")
        for note in notes:
            lines += _wrap(note)
    return "\n".join(printable(line) for line in lines) + "\n"


def _knee_note(run: BenchRun) -> str:
    """The knee's note: where latency degrades, or that no higher load was measured."""
    knee = next((point for point in run.points if point.label == run.knee_label), None)
    if knee is None:
        return "* the knee"
    beyond = [
        point
        for point in run.points
        if point is not knee and request_rate(point.report) > request_rate(knee.report)
    ]
    if beyond:
        return "* the knee: the highest load that met the SLOs (the loads above it did not)"
    return (
        "* the knee: the highest load measured, and it met the SLOs (no higher load was "
        "measured: the network may take more)"
    )


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, subsequent_indent="    ") or [""]
