"""The report's plots, as inline SVG (matplotlib through `_mpl`): latency CDFs, the saturation
curve, throughput and in-flight over time, and errors over time.

Every plot is built from the bounded data of the reports (histogram buckets, at most a few
thousand timeline buckets per point), never from per-request records.
"""

from __future__ import annotations

import colorsys
import itertools
import math
from collections.abc import Sequence
from typing import Final

from ..fanout import HistogramData, TimelineBucket
from ._common import request_rate
from ._model import BenchPoint, BenchRun
from ._mpl import PlotAxes, plain, render_svg

__all__ = [
    "CDF_METRICS",
    "cdf_points",
    "plot_cdfs",
    "plot_errors",
    "plot_saturation",
    "plot_timeline",
    "point_colors",
    "request_rate",
]

CDF_METRICS: Final = ("ttft", "ttst", "itl", "tpot", "e2el", "queue_time")
"""The metrics whose distributions the report plots, one panel each."""

_TITLES: Final = {
    "ttft": "TTFT",
    "ttst": "TTST",
    "itl": "ITL (inter-chunk)",
    "tpot": "TPOT",
    "e2el": "E2EL",
    "queue_time": "client queue time",
}
_GROWTH: Final = 1.02  # LogHistogram's bucket ratio: bucket k covers [g^k, g^(k+1))
_FLOOR: Final = 1e-6  # LogHistogram's "tiny" bound
_MIN_SPAN: Final = 100.0
_MAX_LEGEND: Final = 12
_WIDTH: Final = 10.0


def point_colors(run: BenchRun) -> dict[str, str]:
    """A color per point label, the same in every plot: matplotlib's 10-color cycle for up to 10
    points, else a hue ramp (so that no two points share a color)."""
    count = len(run.points)
    if count <= 10:
        return {p.label: f"C{i}" for i, p in enumerate(run.points)}
    colors: dict[str, str] = {}
    for i, point in enumerate(run.points):
        red, green, blue = colorsys.hsv_to_rgb(0.8 * i / (count - 1), 0.75, 0.85)
        colors[point.label] = (
            f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
        )
    return colors


def _legend(ax: PlotAxes, entries: int) -> None:
    if 0 < entries <= _MAX_LEGEND:
        ax.legend(fontsize="small", ncols=2 if entries > 6 else 1)


def _no_data(ax: PlotAxes, what: str) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center")


def cdf_points(data: HistogramData) -> tuple[list[float], list[float]]:
    """The empirical CDF of a histogram: x (seconds, each bucket's upper edge clamped to the
    observed range) and y (the fraction of values up to x), ascending; empty lists for an empty
    histogram. It starts at (minimum, 0); values ≤ 1 µs (``tiny``) count at the observed minimum,
    and no x is below 1 µs (the plots' log axis cannot show 0)."""
    if not data.count or data.min is None or data.max is None:
        return [], []
    low, high = max(_FLOOR, data.min), max(_FLOOR, data.max)
    seen = data.tiny
    xs, ys = [low, low], [0.0, seen / data.count]
    for key in sorted(data.buckets):
        seen += data.buckets[key]
        xs.append(min(high, max(low, _GROWTH ** (key + 1))))
        ys.append(seen / data.count)
    return xs, ys


def _decades(low: float, high: float) -> tuple[float, float]:
    """An x range around [low, high] spanning at least ``_MIN_SPAN`` (so that a log axis labels
    its decades, not a crowd of minor ticks)."""
    span = max(_MIN_SPAN, high / low * 1.2)
    middle = math.sqrt(low * high)
    return middle / math.sqrt(span), middle * math.sqrt(span)


def plot_cdfs(run: BenchRun) -> str:
    """One panel per metric of `CDF_METRICS`: the latency CDF of every point (log x axis)."""
    colors = point_colors(run)

    def draw(axes: list[PlotAxes]) -> None:
        for ax, metric in zip(axes, CDF_METRICS, strict=True):
            drawn = 0
            low, high = math.inf, 0.0
            for point in run.points:
                data = point.report.histograms.get(metric)
                if data is None:
                    continue
                xs, ys = cdf_points(data)
                if xs:
                    color = colors[point.label]
                    ax.plot(xs, ys, label=plain(point.label), color=color, drawstyle="steps-post")
                    drawn += 1
                    low, high = min(low, xs[0]), max(high, xs[-1])
            ax.set_title(_TITLES[metric])
            ax.set_xlabel("seconds")
            ax.set_ylabel("fraction of requests")
            ax.set_ylim(0.0, 1.0)
            if drawn:
                ax.set_xscale("log")
                ax.set_xlim(*_decades(low, high))
            else:
                _no_data(ax, "no samples")
            _legend(ax, drawn if metric == "ttft" else 0)

    return render_svg(draw, rows=2, cols=3, width=_WIDTH, height=6.0)


def plot_saturation(run: BenchRun) -> str:
    """TTFT p50 / p99, ITL p50 / p99 and throughput (ok/s, goodput/s) against the request rate
    (`request_rate`), one marker per point (hollow: an invalid point), the knee as a dashed
    line."""
    points = sorted(run.points, key=lambda p: request_rate(p.report))

    def series(ax: PlotAxes, values: Sequence[float | None], label: str, color: str) -> None:
        pairs = [
            (request_rate(p.report), v, p.report.valid)
            for p, v in zip(points, values, strict=True)
            if v is not None
        ]
        ax.plot(
            [x for x, _, _ in pairs],
            [y for _, y, _ in pairs],
            label=label,
            color=color,
            marker="o",
            markersize=4,
        )
        hollow = [(x, y) for x, y, valid in pairs if not valid]
        if hollow:
            ax.plot(
                [x for x, _ in hollow],
                [y for _, y in hollow],
                color=color,
                linestyle="none",
                marker="o",
                markersize=9,
                markerfacecolor="white",
            )

    def draw(axes: list[PlotAxes]) -> None:
        ttft, itl, throughput = axes
        series(ttft, [p.report.ttft.p50 for p in points], "TTFT p50", "C0")
        series(ttft, [p.report.ttft.p99 for p in points], "TTFT p99", "C1")
        series(itl, [p.report.itl.p50 for p in points], "ITL p50", "C0")
        series(itl, [p.report.itl.p99 for p in points], "ITL p99", "C1")
        series(throughput, [p.report.requests_per_s for p in points], "ok/s", "C2")
        series(throughput, [p.report.goodput_rps for p in points], "goodput/s", "C3")
        for ax, title, unit in (
            (ttft, "TTFT against request rate", "seconds"),
            (itl, "ITL against request rate", "seconds"),
            (throughput, "throughput against request rate", "requests/s"),
        ):
            ax.set_title(title)
            ax.set_xlabel("request rate (req/s)")
            ax.set_ylabel(unit)
            ax.set_ylim(bottom=0.0)
            if run.knee_rps is not None and math.isfinite(run.knee_rps):
                ax.axvline(run.knee_rps, color="0.4", linestyle="--", label="knee")
            ax.legend(fontsize="small")

    return render_svg(draw, rows=1, cols=3, width=_WIDTH, height=3.4)


def _offsets(points: Sequence[BenchPoint]) -> list[float]:
    """Where each point's timeline starts on the sweep's time axis: its ``t0_wall`` after the
    first point's when every point has one and each starts after the previous one's last
    timeline bucket began (a sweep run point after point), else one after another."""
    timelines = [p.report.timeline for p in points]
    last = [t[-1].t if t else 0.0 for t in timelines]
    starts = [p.report.t0_wall for p in points]
    if all(t > 0 for t in starts) and all(
        start >= previous + span
        for previous, start, span in zip(starts, starts[1:], last, strict=False)
    ):
        return [t - starts[0] for t in starts]
    lengths = [
        span + p.report.timeline_interval if p.report.timeline else 0.0
        for p, span in zip(points, last, strict=True)
    ]
    return list(itertools.accumulate(lengths, initial=0.0))[: len(points)]


def _timelines(run: BenchRun) -> list[tuple[BenchPoint, float, list[TimelineBucket]]]:
    return [
        (point, offset, point.report.timeline)
        for point, offset in zip(run.points, _offsets(run.points), strict=True)
        if point.report.timeline
    ]


def plot_timeline(run: BenchRun) -> str:
    """Requests ok/s, output tokens/s and the peak in-flight count per timeline bucket, the
    points one after another on the sweep's time axis."""
    colors = point_colors(run)

    def draw(axes: list[PlotAxes]) -> None:
        ok_ax, tokens_ax, flight_ax = axes
        lines = _timelines(run)
        for point, offset, buckets in lines:
            step = point.report.timeline_interval
            xs = [offset + b.t for b in buckets]
            color = colors[point.label]
            label = plain(point.label)
            ok_ax.plot(
                xs, [b.ok / step for b in buckets], label=label, color=color, drawstyle="steps-post"
            )
            tokens_ax.plot(
                xs, [b.output_tokens / step for b in buckets], color=color, drawstyle="steps-post"
            )
            flight_ax.plot(
                xs, [float(b.in_flight) for b in buckets], color=color, drawstyle="steps-post"
            )
        for ax, title, unit in (
            (ok_ax, "requests completed ok", "requests/s"),
            (tokens_ax, "output tokens", "tokens/s"),
            (flight_ax, "in flight (peak per interval)", "requests"),
        ):
            ax.set_title(title)
            ax.set_ylabel(unit)
            if not lines:
                _no_data(ax, "no timeline")
        flight_ax.set_xlabel("seconds into the run")
        _legend(ok_ax, len(lines))

    return render_svg(draw, rows=3, cols=1, width=_WIDTH, height=7.5)


def plot_errors(run: BenchRun) -> str:
    """The failed share of the requests that ended in each timeline bucket (%), the points one
    after another on the sweep's time axis."""
    colors = point_colors(run)

    def draw(axes: list[PlotAxes]) -> None:
        (ax,) = axes
        lines = _timelines(run)
        for point, offset, buckets in lines:
            ended = [b for b in buckets if b.ok + b.failed]
            ax.plot(
                [offset + b.t for b in ended],
                [100.0 * b.failed / (b.ok + b.failed) for b in ended],
                label=plain(point.label),
                color=colors[point.label],
                marker=".",
                linewidth=1.0,
            )
        ax.set_title("error rate over time")
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("% of ended requests failed")
        ax.set_ylim(0.0, 100.0)
        if not lines:
            _no_data(ax, "no timeline")
        _legend(ax, len(lines))

    return render_svg(draw, rows=1, cols=1, width=_WIDTH, height=3.0)
