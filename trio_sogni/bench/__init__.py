"""Benchmark reports: the `BenchRun` model of a load sweep against a Sogni network (one
`BenchPoint` per load level, each with its `trio_sogni.fanout.RunReport`), and its renderers:
JSON (a documented, versioned schema), CSV, a terminal table, a self-contained HTML report with
plots (the ``bench`` extra: matplotlib), a side-by-side comparison of two runs, and the merge of
shard outputs. See ``docs/bench-report.md``.

And the load generation behind ``trio-sogni bench`` (``docs/bench.md``): workloads
(`SyntheticWorkload`, `FileWorkload`), one load level (`run_point`: open or closed loop, warm-up
and cool-down, shards), sweeps with the knee (`run_sweep`, `find_knee`), and shard processes
(`run_processes`)."""

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
from ._parallel import (
    READY_LINE as READY_LINE,
    BenchProcessError as BenchProcessError,
    run_processes as run_processes,
)
from ._run import (
    MAX_ARRIVALS as MAX_ARRIVALS,
    PointPlan as PointPlan,
    PointSettings as PointSettings,
    ResultSink as ResultSink,
    Window as Window,
    run_point as run_point,
)
from ._sweep import (
    attainment as attainment,
    carried_rate as carried_rate,
    find_knee as find_knee,
    rate_label as rate_label,
    run_sweep as run_sweep,
    sweep_rates as sweep_rates,
)
from ._table import summary_table as summary_table
from ._workload import (
    MAX_SYNTHETIC_TOKENS as MAX_SYNTHETIC_TOKENS,
    FileWorkload as FileWorkload,
    LengthDistribution as LengthDistribution,
    SyntheticWorkload as SyntheticWorkload,
    TokenCounter as TokenCounter,
    Workload as Workload,
)

__all__ = [
    "COMPARED_METRICS",
    "CSV_COLUMNS",
    "MAX_ARRIVALS",
    "MAX_REPORT_BYTES",
    "MAX_SYNTHETIC_TOKENS",
    "READY_LINE",
    "SCHEMA_VERSION",
    "BenchPoint",
    "BenchProcessError",
    "BenchReportError",
    "BenchRun",
    "CompareRow",
    "FileWorkload",
    "LengthDistribution",
    "PointKind",
    "PointPlan",
    "PointSettings",
    "ResultSink",
    "SyntheticWorkload",
    "TokenCounter",
    "Window",
    "Workload",
    "attainment",
    "carried_rate",
    "compare",
    "compare_rows",
    "dump_json",
    "find_knee",
    "load_json",
    "match_points",
    "merge_runs",
    "rate_label",
    "render_html",
    "run_point",
    "run_processes",
    "run_sweep",
    "summary_table",
    "sweep_rates",
    "to_csv",
]
