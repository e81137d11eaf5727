"""The CSV report: `to_csv`, one row per point, flat columns (`CSV_COLUMNS`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import Final

from ..fanout import RunReport
from ._common import latency
from ._model import BenchPoint, BenchRun

__all__ = ["CSV_COLUMNS", "CSV_LATENCY_METRICS", "to_csv"]

CSV_LATENCY_METRICS: Final = ("ttft", "ttst", "itl", "tpot", "e2el", "queue_time", "lag")
"""The latency metrics of the CSV, each as ``<metric>_p50``, ``_p90``, ``_p99`` (seconds)."""

_Getter = Callable[[BenchRun, BenchPoint], object]


def _latency(name: str, quantile: str) -> _Getter:
    def get(run: BenchRun, point: BenchPoint) -> object:
        summary = latency(point.report, name)
        return {"p50": summary.p50, "p90": summary.p90, "p99": summary.p99}[quantile]

    return get


def _report(get: Callable[[RunReport], object]) -> _Getter:
    return lambda run, point: get(point.report)


_COLUMNS: Final[dict[str, _Getter]] = {
    "label": lambda run, point: point.label,
    "kind": lambda run, point: point.kind,
    "target_rps": lambda run, point: point.target_rps,
    "concurrency": lambda run, point: point.concurrency,
    "knee": lambda run, point: point.label == run.knee_label,
    "valid": _report(lambda r: r.valid),
    "invalid_reasons": _report(lambda r: "; ".join(r.invalid_reasons)),
    "wall_time": _report(lambda r: r.wall_time),
    "offered_rps": _report(lambda r: r.offered_rps),
    "sent_rps": _report(lambda r: r.sent_rps),
    "requests_per_s": _report(lambda r: r.requests_per_s),
    "output_tokens_per_s": _report(lambda r: r.output_tokens_per_s),
    "goodput_rps": _report(lambda r: r.goodput_rps),
    "slo_attainment": _report(lambda r: r.slo_attainment),
    "items": _report(lambda r: r.items_total),
    "ok": _report(lambda r: r.ok),
    "failed": _report(lambda r: r.failed),
    "cancelled": _report(lambda r: r.cancelled),
    "held_back": _report(lambda r: r.held_back),
    "errors": _report(lambda r: ";".join(f"{k}={v}" for k, v in sorted(r.errors_by_class.items()))),
    "input_tokens": _report(lambda r: r.input_tokens),
    "output_tokens": _report(lambda r: r.output_tokens),
    "peak_in_flight": _report(lambda r: r.peak_in_flight),
    **{
        f"{name}_{q}": _latency(name, q)
        for name in CSV_LATENCY_METRICS
        for q in ("p50", "p90", "p99")
    },
    "spend_usd": _report(lambda r: r.spend_usd),
}

CSV_COLUMNS: Final = tuple(_COLUMNS)
"""The CSV's columns, in order (documented in ``docs/bench-report.md``)."""


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def to_csv(run: BenchRun) -> str:
    """``run`` as CSV: a header row of `CSV_COLUMNS`, then one row per point in run order.

    Numbers are written in full precision (Python's ``repr``), latencies in seconds; a missing
    value (no samples, no target rate, a non-finite number) is an empty cell; booleans are
    ``true`` / ``false``; ``errors`` is ``class=count`` pairs joined by ``;``, sorted by class.
    Lines end with ``\\r\\n`` (RFC 4180).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for point in run.points:
        writer.writerow([_cell(get(run, point)) for get in _COLUMNS.values()])
    return out.getvalue()
