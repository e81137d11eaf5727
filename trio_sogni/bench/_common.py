"""What the renderers share: the latency metrics of a `RunReport` by name, and number formats."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

from ..fanout import LatencySummary, RunReport

__all__ = [
    "LATENCY",
    "format_rate",
    "format_seconds",
    "latency",
    "printable",
    "request_rate",
]

LATENCY: Final[Mapping[str, Callable[[RunReport], LatencySummary]]] = {
    "ttft": lambda r: r.ttft,
    "ttft_from_sched": lambda r: r.ttft_from_sched,
    "ttst": lambda r: r.ttst,
    "itl": lambda r: r.itl,
    "tpot": lambda r: r.tpot,
    "e2el": lambda r: r.e2el,
    "queue_time": lambda r: r.queue_time,
    "lag": lambda r: r.lag,
    "loop_lag": lambda r: r.loop_lag,
}
"""The latency summaries of a report, by metric name."""


def latency(report: RunReport, name: str) -> LatencySummary:
    """``report``'s summary of the latency metric ``name`` (a key of `LATENCY`).

    Raises:
        KeyError: an unknown metric.
    """
    return LATENCY[name](report)


def request_rate(report: RunReport) -> float:
    """A point's request rate on the saturation curve's x axis (and the load the table's knee
    note compares): the offered rate of an open-loop point (``offered_rps``), else the
    achieved rate (``requests_per_s``)."""
    rate = report.offered_rps
    return rate if rate is not None and math.isfinite(rate) else report.requests_per_s


def format_seconds(value: float | None) -> str:
    """A duration in at most 6 characters with 3 significant digits: ``812us``, ``12.3ms``,
    ``1.23s``, ``45.6s``, ``512s``, ``0s``; ``-`` for ``None`` or a non-finite value."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0s"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= scale or unit == "us":
            scaled = value / scale
            if scaled >= 99.95:
                return f"{scaled:.0f}{unit}"
            if scaled >= 9.995:
                return f"{scaled:.1f}{unit}"
            return f"{scaled:.2f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_rate(value: float | None) -> str:
    """A rate (per second) with 3 significant digits (``0.512``, ``12.5``, ``1234``); ``-`` for
    ``None`` or a non-finite value."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 9.995:
        return f"{value:.1f}"
    if value >= 0.9995:
        return f"{value:.2f}"
    return f"{value:.3f}"


def printable(text: str) -> str:
    """``text`` with every non-printable character (control characters, terminal escapes, line
    breaks) replaced by ``?``, for a line of terminal output made of data read from a file."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
