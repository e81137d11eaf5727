"""The HTML report: `render_html`, one self-contained page (inline CSS and SVG, no script, no
external resource)."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from ._common import LATENCY, format_rate, format_seconds
from ._model import BenchPoint, BenchReportError, BenchRun
from ._table import header_lines, table_columns

__all__ = ["render_html"]

_CSS: Final = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #1b1b1b; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.knee td { background: #eef6ee; font-weight: 600; }
tr.invalid td { color: #a33; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
code, pre { font: 12px/1.4 ui-monospace, monospace; }
p.note { color: #555; }
"""

_e = html.escape


def _json(value: Any) -> str:
    return msgspec.json.encode(value, order="deterministic").decode()


def _table(head: Iterable[str], rows: Iterable[tuple[Iterable[str], str]], text_cols: int) -> str:
    """An HTML table; each row is (cells, CSS class); the first ``text_cols`` columns are text."""
    out = ["<table>", "<tr>"]
    out += [
        f'<th class="text">{_e(h)}</th>' if i < text_cols else f"<th>{_e(h)}</th>"
        for i, h in enumerate(head)
    ]
    out.append("</tr>")
    for cells, css in rows:
        out.append(f'<tr class="{css}">' if css else "<tr>")
        out += [
            f'<td class="text">{_e(c)}</td>' if i < text_cols else f"<td>{_e(c)}</td>"
            for i, c in enumerate(cells)
        ]
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def _row_class(run: BenchRun, point: BenchPoint) -> str:
    classes: list[str] = []
    if point.label == run.knee_label:
        classes.append("knee")
    if not point.report.valid:
        classes.append("invalid")
    return " ".join(classes)


def _summary(run: BenchRun) -> str:
    columns = table_columns()
    head = [f"{c.group} {c.name}".strip() for c in columns]
    rows: list[tuple[list[str], str]] = []
    for point in run.points:
        cells = [c.cell(run, point) for c in columns]
        cells[1] = point.label  # in full: the terminal's cut is for its width only
        rows.append((cells, _row_class(run, point)))
    return _table(head, rows, text_cols=3)


def _latencies(run: BenchRun) -> str:
    head = ["point", "metric", "count", "mean", "min", "p50", "p90", "p99", "max"]
    rows: list[tuple[list[str], str]] = []
    for point in run.points:
        for name, get in LATENCY.items():
            s = get(point.report)
            if not s.count:
                continue
            values = [s.mean, s.min, s.p50, s.p90, s.p99, s.max]
            rows.append(([point.label, name, str(s.count), *map(format_seconds, values)], ""))
    return _table(head, rows, text_cols=2)


def _counts(run: BenchRun) -> str:
    head = [
        "point", "kind", "target/s", "offered/s", "sent/s", "items", "ok", "failed",
        "cancelled", "held back", "retries", "in flight peak", "tokens in", "tokens out",
        "spend USD",
    ]  # fmt: skip
    rows: list[tuple[list[str], str]] = []
    for p in run.points:
        r = p.report
        rows.append(
            (
                [
                    p.label, p.kind, format_rate(p.target_rps), format_rate(r.offered_rps),
                    format_rate(r.sent_rps), str(r.items_total), str(r.ok), str(r.failed),
                    str(r.cancelled), str(r.held_back), str(r.retries), str(r.peak_in_flight),
                    str(r.input_tokens), str(r.output_tokens), f"{r.spend_usd:.6f}",
                ],
                _row_class(run, p),
            )
        )  # fmt: skip
    return _table(head, rows, text_cols=2)


def _errors(run: BenchRun) -> str:
    rows = [
        ([p.label, kind, str(count)], "")
        for p in run.points
        for kind, count in sorted(p.report.errors_by_class.items())
    ]
    if not rows:
        return '<p class="note">No request failed.</p>'
    return _table(["point", "error class", "count"], rows, text_cols=2)


def _invalid(run: BenchRun) -> str:
    items = [
        f"<li><b>{_e(p.label)}</b>: {_e('; '.join(p.report.invalid_reasons) or 'invalid')}</li>"
        for p in run.points
        if not p.report.valid
    ]
    if not items:
        return ""
    return (
        '<p class="note">Invalid points (the client fell behind its schedule: their numbers'
        " describe the client, not the network):</p>\n<ul>" + "".join(items) + "</ul>"
    )


def _mapping(title: str, values: Mapping[str, Any]) -> str:
    if not values:
        return f'<p class="note">{_e(title)}: none.</p>'
    rows = [([key, _json(values[key])], "") for key in sorted(values)]
    return f"<h3>{_e(title)}</h3>\n" + _table(["name", "value"], rows, text_cols=2)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n{svg}\n<figcaption>{_e(caption)}</figcaption>\n</figure>"


def _plots() -> tuple[Callable[[BenchRun], str], ...]:
    try:
        from . import _plots  # matplotlib is optional: imported on use
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "matplotlib":
            raise
        raise BenchReportError(
            "the HTML report draws its plots with matplotlib, which is not installed: "
            "pip install 'trio-sogni[bench]'"
        ) from exc
    return (_plots.plot_saturation, _plots.plot_cdfs, _plots.plot_timeline, _plots.plot_errors)


def render_html(run: BenchRun) -> str:
    """``run`` as one self-contained HTML page: the summary table (knee and invalid points
    marked), counts, latency percentiles, errors by class, the SLOs, workload and settings, and
    four plots as inline SVG drawn with matplotlib — the saturation curve (TTFT and ITL p50 /
    p99 and throughput against the request rate, the knee marked), the latency CDFs of every
    point (from the histograms), throughput and in-flight over time, and the error rate over
    time. No script and no external resource (fonts are drawn as paths), so it works offline
    and can be attached to a CI run. The same run renders to the same text.

    Raises:
        BenchReportError: matplotlib is not installed (``pip install 'trio-sogni[bench]'``).
    """
    saturation, cdfs, timeline, errors = _plots()
    head = header_lines(run)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('Benchmark: ' + head[0])}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e('Benchmark: ' + head[0])}</h1>",
        *(f"<p>{_e(line)}</p>" for line in head[1:]),
        "<h2>Summary</h2>",
        _summary(run),
        '<p class="note">Latencies are of successful requests; ok/s and tokens/s are over each'
        " point's wall time; good/s counts the ok requests meeting every SLO.</p>",
        _invalid(run),
        "<h2>Saturation</h2>",
        _figure(saturation(run), "Latency and throughput against the request rate (offered "
                "rate for open-loop points, achieved for closed-loop ones); hollow markers: "
                "invalid points; dashed: the knee."),
        "<h2>Latency distributions</h2>",
        _figure(cdfs(run), "Cumulative distribution of each latency metric per point (from "
                "the 2 %-bucket histograms)."),
        "<h2>Throughput and concurrency over time</h2>",
        _figure(timeline(run), "Per timeline interval, the points one after another."),
        "<h2>Errors over time</h2>",
        _figure(errors(run), "The share of the requests ending in each interval that failed."),
        "<h2>Errors by class</h2>",
        _errors(run),
        "<h2>Latency percentiles</h2>",
        _latencies(run),
        "<h2>Counts</h2>",
        _counts(run),
        "<h2>Settings</h2>",
        _mapping("SLO (seconds)", run.slo),
        _mapping("Workload", run.workload),
        _mapping("Settings", run.settings),
        "</body>",
        "</html>",
    ]  # fmt: skip
    return "\n".join(part for part in parts if part) + "\n"
