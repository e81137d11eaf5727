"""Benchmark reports: the `BenchRun` model of a load sweep against a Sogni network (one
`BenchPoint` per load level, each with its `trio_sogni.fanout.RunReport`), and its renderers:
JSON (a documented, versioned schema), CSV, a terminal table, a self-contained HTML report with
plots (the ``bench`` extra: matplotlib), a side-by-side comparison of two runs, and the merge of
shard outputs. See ``docs/bench-report.md``."""

from ._compare import (
    COMPARED_METRICS as COMPARED_METRICS,
    CompareRow as CompareRow,
    compare as compare,
    compare_rows as compare_rows,
    match_points as match_points,
)
from ._csv import CSV_COLUMNS as CSV_COLUMNS, to_csv as to_csv
from ._html import render_html as render_html
from ._json import (
    MAX_REPORT_BYTES as MAX_REPORT_BYTES,
    dump_json as dump_json,
    load_json as load_json,
)
from ._merge import merge_runs as merge_runs
from ._model import (
    SCHEMA_VERSION as SCHEMA_VERSION,
    BenchPoint as BenchPoint,
    BenchReportError as BenchReportError,
    BenchRun as BenchRun,
    PointKind as PointKind,
)
from ._table import summary_table as summary_table

__all__ = [
    "COMPARED_METRICS",
    "CSV_COLUMNS",
    "MAX_REPORT_BYTES",
    "SCHEMA_VERSION",
    "BenchPoint",
    "BenchReportError",
    "BenchRun",
    "CompareRow",
    "PointKind",
    "compare",
    "compare_rows",
    "dump_json",
    "load_json",
    "match_points",
    "merge_runs",
    "render_html",
    "summary_table",
    "to_csv",
]
