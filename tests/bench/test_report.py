"""trio_sogni.bench's reports: the model and its JSON (round trip, schema versions, bad files),
CSV, the terminal table, the HTML report, compare and merge.

The runs are built from structs (every number chosen, so the tests can check the renderers'
output against them: `sample_run`) or measured by real fan-out runs against localnet in virtual
time (`measured_sweep`)."""

from __future__ import annotations

import csv
import html.parser
import io
import json
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network

import trio_sogni.bench
from trio_sogni.bench import (
    COMPARED_METRICS,
    CSV_COLUMNS,
    SCHEMA_VERSION,
    BenchPoint,
    BenchReportError,
    BenchRun,
    PointKind,
    compare,
    compare_rows,
    dump_json,
    load_json,
    match_points,
    merge_runs,
    render_html,
    summary_table,
    to_csv,
)
from trio_sogni.bench._common import format_seconds
from trio_sogni.bench._plots import _offsets, cdf_points, point_colors  # pyright: ignore[reportPrivateUsage]
from trio_sogni.fanout import (
    ConstantRate,
    FanoutItem,
    FanoutOptions,
    LatencySummary,
    LogHistogram,
    RunReport,
    TimelineBucket,
    open_fanout,
)
from trio_sogni.localnet import Fail, Step, Text

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"


def histogram(values: Sequence[float]) -> LogHistogram:
    hist = LogHistogram()
    hist.extend(values)
    return hist


def make_report(
    *,
    ok: int = 100,
    failed: int = 0,
    wall: float = 10.0,
    ttft: Sequence[float] = (0.1, 0.2, 0.3),
    itl: Sequence[float] = (0.01, 0.02),
    errors: dict[str, int] | None = None,
    valid: bool = True,
    reasons: Sequence[str] = (),
    offered: float | None = 10.0,
    spend: float = 0.5,
    timeline: int = 10,
    t0_wall: float = 1_800_000_000.0,
    **overrides: Any,
) -> RunReport:
    """A report of ``ok`` successes and ``failed`` failures over ``wall`` seconds whose TTFT and
    ITL samples are ``ttft`` and ``itl`` (the other latencies derived from them), with a
    timeline of ``timeline`` one-second buckets and histograms consistent with the summaries."""
    samples: dict[str, Sequence[float]] = {
        "ttft": ttft,
        "ttft_from_sched": [t + 0.01 for t in ttft],
        "queue_time": [0.005] * len(ttft),
        "ttst": [itl[0]] * len(ttft),
        "itl": itl,
        "tpot": [sum(itl) / len(itl)] * len(ttft),
        "e2el": [t + 1.0 for t in ttft],
        "lag": [0.0005] * len(ttft),
        "loop_lag": [0.0002] * 4,
    }
    hists = {name: histogram(values) for name, values in samples.items()}
    summaries: dict[str, LatencySummary] = {name: h.summary() for name, h in hists.items()}
    per_bucket = [ok // timeline] * timeline
    per_bucket[-1] += ok - sum(per_bucket)
    fails = [0] * timeline
    for i in range(failed):
        fails[i % timeline] += 1
    fields: dict[str, Any] = {
        "wall_time": wall,
        "items_total": ok + failed,
        "ok": ok,
        "failed": failed,
        "cancelled": 0,
        "budget_exhausted": 0,
        "skipped": 0,
        "cached": 0,
        "requests_per_s": ok / wall,
        "output_tokens_per_s": ok * 50 / wall,
        "total_tokens_per_s": ok * 60 / wall,
        "input_tokens": ok * 10,
        "output_tokens": ok * 50,
        "goodput_rps": ok / wall * 0.9,
        "slo_attainment": 0.9,
        "slo": {"ttft": 0.5},
        **summaries,
        "errors_by_class": errors if errors is not None else ({"model_unavailable": failed} if failed else {}),
        "deadlines": {},
        "retries": 0,
        "retries_histogram": {"0": ok + failed},
        "succeeded_after_retry": 0,
        "spend_usd": spend,
        "projected_usd": None,
        "budget_usd": None,
        "budget_tokens": None,
        "concurrency_history": [],
        "peak_in_flight": 8,
        "schedule": {"kind": "constant", "rate": offered} if offered is not None else None,
        "offered_rps": offered,
        "sent_rps": offered,
        "held_back": 0,
        "valid": valid,
        "invalid_reasons": list(reasons),
        "timeline_interval": 1.0,
        "timeline": [
            TimelineBucket(float(i), per_bucket[i] + fails[i], per_bucket[i], fails[i], per_bucket[i] * 50, 3)
            for i in range(timeline)
        ],
        "histograms": {name: h.to_data() for name, h in hists.items()},
        "t0_wall": t0_wall,
        "wall_start": 0.0,
    }  # fmt: skip
    fields.update(overrides)
    return RunReport(**fields)


def make_point(
    label: str,
    report: RunReport,
    *,
    kind: PointKind = "rate",
    target_rps: float | None = 10.0,
    concurrency: int | None = None,
) -> BenchPoint:
    return BenchPoint(
        label=label, kind=kind, target_rps=target_rps, concurrency=concurrency, report=report
    )


def make_run(points: Sequence[BenchPoint], **overrides: Any) -> BenchRun:
    fields: dict[str, Any] = {
        "tool": "trio-sogni 0.9.0",
        "created": "2026-12-05T03:00:00Z",
        "target": "localnet (4 simulated workers)",
        "model": MODEL,
        "workload": {"kind": "synthetic", "prompt_tokens": 128, "max_tokens": 64},
        "settings": {"rates": [2.0, 8.0], "duration": 10.0, "seed": 7},
        "slo": {"ttft": 0.5},
        "points": list(points),
    }
    fields.update(overrides)
    return BenchRun(**fields)


def sample_run() -> BenchRun:
    """Three points: a healthy low rate, the knee, and an invalid overloaded point with
    errors."""
    return make_run(
        [
            make_point("rate-2", make_report(ok=20, ttft=[0.1, 0.12], offered=2.0), target_rps=2.0),
            make_point("rate-8", make_report(ok=80, ttft=[0.2, 0.4], offered=8.0), target_rps=8.0),
            make_point(
                "rate-32",
                make_report(
                    ok=90,
                    failed=10,
                    ttft=[1.5, 3.0],
                    offered=32.0,
                    valid=False,
                    reasons=["lag p99 0.2 s above the 0.005 s threshold"],
                    errors={"model_unavailable": 7, "TooSlowError": 3},
                ),
                target_rps=32.0,
            ),
        ],
        knee_rps=8.0,
        knee_label="rate-8",
    )


def _script(request: Any) -> Sequence[Step]:
    text = request.messages[-1].content
    if isinstance(text, str) and text.endswith("7"):
        return [Fail(error="model_unavailable", message="no worker")]
    return [Text(" ".join(["token"] * 20))]


async def measured_point(sogni: Any, label: str, options: FanoutOptions, n: int) -> BenchPoint:
    items = [
        FanoutItem(
            index=i, id=str(i), model=MODEL, messages=[{"role": "user", "content": f"q {i}"}]
        )
        for i in range(n)
    ]
    async with open_fanout(sogni, items, options) as run:
        async for _ in run:
            pass
    schedule = options.schedule
    kind: PointKind = "rate" if schedule is not None else "closed"
    return BenchPoint(
        label=label,
        kind=kind,
        target_rps=schedule.rate if schedule is not None else None,
        concurrency=options.max_concurrency if schedule is not None else options.concurrency,
        report=run.report(),
    )


async def measured_sweep(*, shard: str | None = None, n: int = 20) -> BenchRun:
    """A real sweep against localnet (one simulated worker of capacity 1 streaming 100
    tokens/s: 20-token answers take 0.2 s, so it serves 5 requests/s): open loop at 2 and 8
    requests/s, then a closed loop of 2. Every item whose prompt ends in 7 fails. Run it under
    a MockClock (virtual time)."""
    async with (
        local_network(
            workers=1, capacity=1, tokens_per_second=100, listen=False, script=_script
        ) as net,
        client_in_memory(net) as sogni,
    ):
        await sogni.chat.wait_for_models()
        points: list[BenchPoint] = []
        for rate in (2.0, 8.0):
            options = FanoutOptions(
                schedule=ConstantRate(rate), max_attempts=1, slo_ttft=0.5, timeline_interval=0.5
            )
            points.append(await measured_point(sogni, f"rate-{rate:g}", options, n))
        closed = FanoutOptions(concurrency=2, max_attempts=1, slo_ttft=0.5, timeline_interval=0.5)
        points.append(await measured_point(sogni, "closed-2", closed, n))
        await trio.lowlevel.checkpoint()
    return make_run(points, shard=shard, created=f"2026-12-05T03:00:0{len(shard or '')}Z")


_S = TypeVar("_S", BenchRun, BenchPoint, RunReport)


def replace(struct: _S, **changes: Any) -> _S:
    return msgspec.structs.replace(struct, **changes)


# -- the model and JSON ---------------------------------------------------------------------------


def test_json_round_trip_is_exact_and_stable() -> None:
    run = sample_run()
    data = dump_json(run)
    assert load_json(data) == run
    assert load_json(data.decode()) == run
    assert dump_json(load_json(data)) == data  # same run, same bytes
    text = data.decode()
    assert text.startswith('{\n  "schema_version": 1,\n  "tool": "trio-sogni 0.9.0",')
    assert text.endswith("}\n")
    # dictionary keys sorted: workload's keys in order, histogram buckets numerically
    assert (
        text.index('"kind": "synthetic"')
        < text.index('"max_tokens": 64')
        < text.index('"prompt_tokens": 128')
    )


def test_load_json_reads_a_file(tmp_path: Path) -> None:
    run = sample_run()
    path = tmp_path / "run.json"
    path.write_bytes(dump_json(run))
    assert load_json(path) == run
    with pytest.raises(BenchReportError, match="cannot read"):
        load_json(tmp_path / "missing.json")


def test_load_json_refuses_a_newer_schema_version() -> None:
    doc = json.loads(dump_json(sample_run()))
    doc["schema_version"] = SCHEMA_VERSION + 1
    doc["points"] = "a shape this version cannot read"
    with pytest.raises(BenchReportError, match=r"schema_version 2 is newer.*upgrade"):
        load_json(json.dumps(doc))


def test_load_json_ignores_fields_it_does_not_know() -> None:
    # the stability promise: a later version of schema 1 may add fields
    doc = json.loads(dump_json(sample_run()))
    doc["added_later"] = {"x": 1}
    doc["points"][0]["also_new"] = [1, 2]
    assert load_json(json.dumps(doc)) == sample_run()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a benchmark report"),
        (b'{"tool": "x"}', "not a benchmark report"),
        (b'{"schema_version": "1"}', "not a benchmark report"),
        (b'{"schema_version": 1, "tool": "x"}', "not a valid benchmark report"),
    ],
)
def test_load_json_refuses_what_is_not_a_report(data: bytes, message: str) -> None:
    with pytest.raises(BenchReportError, match=message):
        load_json(data)


def test_load_json_of_a_path_as_a_string_says_to_pass_a_path() -> None:
    with pytest.raises(BenchReportError, match=re.escape("to read a file, pass a pathlib.Path")):
        load_json("bench.json")


def test_load_json_refuses_an_inconsistent_report() -> None:
    doc = json.loads(dump_json(sample_run()))
    doc["points"][1]["label"] = doc["points"][0]["label"]
    doc["knee_label"] = None
    with pytest.raises(BenchReportError, match="duplicate point label 'rate-2'"):
        load_json(json.dumps(doc))


def test_the_model_refuses_inconsistent_runs() -> None:
    report = make_report()
    with pytest.raises(BenchReportError, match="duplicate point label"):
        make_run([make_point("a", report), make_point("a", report)])
    with pytest.raises(BenchReportError, match="knee_label 'b' names no point"):
        make_run([make_point("a", report)], knee_label="b")
    with pytest.raises(BenchReportError, match="shard must look like"):
        make_run([make_point("a", report)], shard="first")
    with pytest.raises(BenchReportError, match="i <= N"):
        make_run([make_point("a", report)], shard="3/2")
    with pytest.raises(BenchReportError, match="processes must be at least 1"):
        make_run([make_point("a", report)], processes=0)
    with pytest.raises(BenchReportError, match="label must not be empty"):
        make_point("", report)
    assert make_run([make_point("a", report)]).point("a").report == report
    with pytest.raises(KeyError):
        make_run([make_point("a", report)]).point("b")


def _structure(schema: Any) -> Any:
    """A JSON Schema without its prose (descriptions come from docstrings, which may change
    without changing the format)."""
    if isinstance(schema, dict):
        return {
            k: _structure(v)
            for k, v in schema.items()
            if not (k in {"description", "title"} and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_structure(v) for v in schema]
    return schema


def test_the_schema_document_is_the_models() -> None:
    schema = json.loads((DOCS / "bench-schema.json").read_text("utf-8"))
    assert _structure(schema) == _structure(msgspec.json.schema(BenchRun)), (
        "docs/bench-schema.json is stale: regenerate it with python -c 'import json, msgspec;"
        " from trio_sogni.bench import BenchRun; print(json.dumps(msgspec.json.schema(BenchRun),"
        " indent=2, sort_keys=True))' > docs/bench-schema.json"
    )
    assert schema["$defs"]["BenchRun"]["description"].startswith("A benchmark run")
    assert "RunReport" in schema["$defs"]


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_has_the_documented_columns_and_the_reports_numbers() -> None:
    run = sample_run()
    text = to_csv(run)
    assert "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["label"] for r in rows] == ["rate-2", "rate-8", "rate-32"]
    for row, point in zip(rows, run.points, strict=True):
        r = point.report
        assert row["kind"] == "rate"
        assert float(row["target_rps"]) == point.target_rps
        assert row["concurrency"] == ""  # None
        assert float(row["offered_rps"]) == r.offered_rps
        assert float(row["requests_per_s"]) == r.requests_per_s
        assert float(row["output_tokens_per_s"]) == r.output_tokens_per_s
        assert float(row["goodput_rps"]) == r.goodput_rps
        assert (int(row["ok"]), int(row["failed"])) == (r.ok, r.failed)
        for metric in ("ttft", "ttst", "itl", "tpot", "e2el", "queue_time", "lag"):
            summary = getattr(r, metric)
            for q in ("p50", "p90", "p99"):
                assert float(row[f"{metric}_{q}"]) == getattr(summary, q), (metric, q)
        assert float(row["spend_usd"]) == r.spend_usd
    assert [r["knee"] for r in rows] == ["false", "true", "false"]
    assert [r["valid"] for r in rows] == ["true", "true", "false"]
    assert rows[2]["invalid_reasons"] == "lag p99 0.2 s above the 0.005 s threshold"
    assert rows[2]["errors"] == "TooSlowError=3;model_unavailable=7"
    assert rows[0]["errors"] == ""


def test_csv_leaves_missing_values_empty() -> None:
    report = make_report(ok=0, ttft=[], itl=[0.01], offered=None)
    run = make_run([make_point("closed-4", report, kind="closed", target_rps=None, concurrency=4)])
    (row,) = csv.DictReader(io.StringIO(to_csv(run)))
    assert row["target_rps"] == row["offered_rps"] == row["ttft_p50"] == ""
    assert row["concurrency"] == "4"


# -- the terminal table ---------------------------------------------------------------------------


def test_summary_table_marks_the_knee_and_invalid_points() -> None:
    text = summary_table(sample_run())
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    rows = {
        line.split()[1] if line[0] in "*!" else line.split()[0]: line
        for line in lines
        if "rate-" in line and "/s" in line
    }
    assert rows["rate-8"].startswith("* rate-8")
    assert rows["rate-32"].startswith("! rate-32")
    assert rows["rate-2"].startswith("  rate-2")
    # the numbers: rate-8 ran 80 ok in 10 s; TTFT p50 of 0.2 and 0.4 s is 0.2 s (bucket-rounded)
    assert rows["rate-8"].split()[2:5] == ["8.00/s", "8.00", "400"]
    assert "! rate-32 is not valid (the client fell behind): lag p99 0.2 s above" in text
    assert "errors in rate-32: model_unavailable=7, TooSlowError=3" in text
    assert "knee: 8.00 req/s (point rate-8)" in text
    assert "* the knee: the highest load that met the SLOs (the loads above it did not)" in text
    assert "SLO: ttft <= 500ms" in text
    header = next(line for line in lines if line.split()[:1] == ["point"])
    assert header.split() == [
        "point",
        "load",
        "ok/s",
        "tok/s",
        "good/s",
        "SLO",
        "ok",
        "fail",
        "p50",
        "p99",
        "p50",
        "p99",
        "p99",
    ]


def test_terminal_output_neutralises_control_characters() -> None:
    report = make_report(failed=1, errors={"\x1b[2Jboom": 1})
    run = make_run([make_point("evil\x1b]0;title\x07", report)], target="net\nwork")
    for text in (summary_table(run), compare(run, run)):
        assert "\x1b" not in text
        assert "\x07" not in text
    assert summary_table(run).startswith("test-model on net work\n")  # wrapped: a space
    assert "test-model on net?work, " in compare(run, run)
    assert "?[2Jboom=1" in summary_table(run)


def test_summary_table_fits_100_columns_with_long_labels_and_many_errors() -> None:
    errors = {f"error_class_number_{i}": i + 1 for i in range(20)}
    report = make_report(failed=210, errors=errors)
    run = make_run([make_point("x" * 60, report)], target="t " * 80, processes=4, shard="1/2")
    text = summary_table(run)
    assert max(map(len, text.splitlines())) <= 100
    assert "x" * 21 + "..." in text
    assert "knee: not found" in text
    assert "4 processes, shard 1/2" in text
    assert "error_class_number_19=20" in text


# -- compare --------------------------------------------------------------------------------------


def test_compare_rows_computes_relative_changes() -> None:
    a = make_run([make_point("p", make_report(ok=100, ttft=[0.2], spend=1.0))])
    b = make_run([make_point("p", make_report(ok=95, ttft=[0.24], spend=1.0, failed=5))])
    rows = {row.metric: row for row in compare_rows(a, b, threshold=10)}
    assert tuple(rows) == COMPARED_METRICS
    ttft = rows["ttft_p50"]
    assert ttft.a == a.points[0].report.ttft.p50
    assert ttft.b == b.points[0].report.ttft.p50
    assert ttft.change_pct == pytest.approx((ttft.b - ttft.a) / ttft.a * 100)  # type: ignore[operator]
    assert ttft.change_pct == pytest.approx(20, abs=2)  # bucket midpoints: within 2 %
    assert (ttft.regression, ttft.improvement, ttft.better) == (True, False, "lower")
    rps = rows["requests_per_s"]
    assert rps.change_pct == pytest.approx(-5.0)
    assert (rps.regression, rps.improvement) == (False, False)  # worse, but within 10 %
    errors = rows["error_rate"]
    assert (errors.a, errors.b) == (0.0, 0.05)
    assert errors.change_pct == math.inf
    assert errors.regression
    spend = rows["spend_usd"]
    assert (spend.change_pct, spend.regression) == (0.0, False)
    # the other way round, the same changes are improvements
    back = {row.metric: row for row in compare_rows(b, a, threshold=10)}
    assert back["ttft_p50"].improvement
    assert not back["ttft_p50"].regression
    assert back["error_rate"].change_pct == -100.0
    assert back["error_rate"].improvement
    # no threshold: nothing flagged
    assert not any(r.regression or r.improvement for r in compare_rows(a, b))


def test_compare_flags_higher_is_better_metrics_falling() -> None:
    a = make_run([make_point("p", make_report(ok=100))])
    b = make_run([make_point("p", make_report(ok=80))])
    rows = {row.metric: row for row in compare_rows(a, b, threshold=10)}
    assert rows["requests_per_s"].change_pct == pytest.approx(-20.0)
    assert rows["requests_per_s"].regression
    assert rows["goodput_rps"].regression
    assert not any(rows[m].regression for m in ("ttft_p50", "itl_p99", "e2el_p99"))


def test_compare_matches_points_by_label_then_by_position() -> None:
    report = make_report()
    a = make_run([make_point("rate-2", report), make_point("rate-4", report)])
    b = make_run([make_point("rate-4", report), make_point("rate-16", report)])
    assert [(p.label, q.label) for p, q in match_points(a, b)] == [("rate-4", "rate-4")]
    c = make_run([make_point("x", report), make_point("y", report), make_point("z", report)])
    assert [(p.label, q.label) for p, q in match_points(a, c)] == [("rate-2", "x"), ("rate-4", "y")]
    text = compare(a, b)
    assert "only in A: rate-2" in text
    assert "only in B: rate-16" in text
    assert "point rate-2 vs x" in compare(a, c)
    with pytest.raises(BenchReportError, match="no points to compare"):
        compare_rows(a, make_run([]))


def test_compare_text_shows_both_sides_and_the_verdict() -> None:
    a = make_run([make_point("p", make_report(ok=100, ttft=[0.2]))])
    b = make_run([make_point("p", make_report(ok=100, ttft=[0.3]))])
    text = compare(a, b, threshold=10, names=("main", "branch"))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    ttft = next(line for line in lines if line.strip().startswith("ttft_p50"))
    assert ttft.split() == ["ttft_p50", "200ms", "300ms", "+50.0%", "!"]
    rps = next(line for line in lines if line.strip().startswith("requests_per_s"))
    assert rps.split() == ["requests_per_s", "10.0", "10.0", "+0.0%"]
    assert lines[-1] == "2 regressions above 10%"  # TTFT p50 and p99
    assert lines[0].startswith("main: test-model on localnet")
    assert "threshold: 10% (! worse, + better)" in text
    assert "regression" not in compare(a, b)
    starved = make_run([make_point("p", make_report(valid=False, reasons=["lag"]))])
    assert "point p (not valid in branch: the client fell behind)" in compare(
        a, starved, names=("main", "branch")
    )
    with pytest.raises(BenchReportError, match="threshold"):
        compare(a, b, threshold=-1)
    with pytest.raises(BenchReportError, match="two names"):
        compare(a, b, names=("one",))


# -- merge ----------------------------------------------------------------------------------------


def shard(index: int, ok: int, **overrides: Any) -> BenchRun:
    run = make_run(
        [
            make_point("rate-4", make_report(ok=ok, ttft=[0.1 * index]), target_rps=2.0),
            make_point(
                "closed-2", make_report(ok=ok), kind="closed", target_rps=None, concurrency=1
            ),
        ],
        shard=f"{index}/2",
        knee_label="rate-4",
        knee_rps=2.0,
    )
    return replace(run, **overrides)


def test_merge_runs_sums_the_shards() -> None:
    one, two = shard(1, ok=40), shard(2, ok=60, created="2026-12-05T02:59:00Z")
    merged = merge_runs([one, two])
    assert merged.shards_merged == 2
    assert merged.shard is None
    assert merged.processes == 2
    assert merged.created == "2026-12-05T02:59:00Z"
    assert (merged.knee_label, merged.knee_rps) == ("rate-4", 4.0)
    rate, closed = merged.points
    assert (rate.label, rate.target_rps, rate.concurrency) == ("rate-4", 4.0, None)
    assert (closed.label, closed.target_rps, closed.concurrency) == ("closed-2", None, 2)
    assert rate.report.ok == 100
    assert rate.report.ttft.count == 2  # one sample per shard, histograms merged
    assert rate.report.histograms["ttft"].count == 2
    assert rate.report.offered_rps == 20.0
    assert load_json(dump_json(merged)) == merged
    assert "2 shards merged" in summary_table(merged)


def test_merge_runs_refuses_what_is_not_one_run() -> None:
    one = shard(1, ok=40)
    cases: list[tuple[list[BenchRun], str]] = [
        ([], "at least one"),
        ([one, shard(2, ok=1, settings={"rates": [1.0]})], "another settings"),
        ([one, shard(2, ok=1, model="other")], "another model"),
        ([one, shard(2, ok=1, workload={})], "another workload"),
        ([one, shard(2, ok=1, slo={})], "another slo"),
        ([one, shard(1, ok=1)], "both shard 1/2"),
        ([one, shard(2, ok=1, shard=None)], "not a shard"),
        ([one, shard(2, ok=1, shard="2/3")], "shard counts differ"),
        ([one, replace(shard(2, ok=1), points=one.points[:1])], "other points"),
    ]
    for runs, message in cases:
        with pytest.raises(BenchReportError, match=message):
            merge_runs(runs)
    closed = replace(one.points[1], kind="throughput")
    with pytest.raises(BenchReportError, match="kind"):
        merge_runs([one, replace(shard(2, ok=1), points=[one.points[0], closed])])
    old = replace(one.points[0], report=replace(one.points[0].report, histograms={}))
    with pytest.raises(BenchReportError, match="no histogram"):
        merge_runs([replace(one, points=[old, one.points[1]]), shard(2, ok=1)])


def test_summary_table_says_when_the_knee_is_the_highest_load_measured() -> None:
    run = sample_run()
    lower = make_run(run.points[:2], knee_rps=8.0, knee_label="rate-8")
    text = " ".join(summary_table(lower).split())
    assert "* the knee: the highest load measured, and it met the SLOs" in text
    assert "the network may take more" in text


def test_merge_runs_refuses_missing_shards_unless_partial() -> None:
    with pytest.raises(BenchReportError, match=r"shard 0/2 missing"):
        merge_runs([shard(1, ok=40)])
    partial = merge_runs([shard(1, ok=40)], allow_partial=True)
    assert partial.shards_merged == 1
    assert partial.points[0].report.ok == 40
    zero_based = [shard(1, ok=1, shard="0/3"), shard(2, ok=1, shard="2/3")]
    with pytest.raises(BenchReportError, match=r"shard 1/3 missing"):
        merge_runs(zero_based)
    assert merge_runs([*zero_based, shard(1, ok=1, shard="1/3")]).shards_merged == 3


def test_merge_runs_drops_a_knee_the_shards_disagree_on() -> None:
    merged = merge_runs([shard(1, ok=1), shard(2, ok=1, knee_label="closed-2")])
    assert (merged.knee_label, merged.knee_rps) == (None, None)


# -- a real sweep ---------------------------------------------------------------------------------


async def test_a_measured_sweep_goes_through_every_renderer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await measured_sweep()
    slow, fast, closed = run.points
    for point in run.points:
        assert (point.report.ok, point.report.failed) == (18, 2)  # items 7 and 17 fail
        assert point.report.errors_by_class == {"model_unavailable": 2}
        assert point.report.valid
    assert slow.report.offered_rps == pytest.approx(2.0)
    assert fast.report.offered_rps == pytest.approx(8.0)
    assert closed.report.offered_rps is None
    # one worker serves 5 requests/s: at 8/s requests wait at the server and TTFT grows
    assert fast.report.ttft.p99 is not None
    assert slow.report.ttft.p99 is not None
    assert fast.report.ttft.p99 > 5 * slow.report.ttft.p99
    assert load_json(dump_json(run)) == run
    rows = list(csv.DictReader(io.StringIO(to_csv(run))))
    assert [(r["label"], r["ok"], r["failed"]) for r in rows] == [
        ("rate-2", "18", "2"), ("rate-8", "18", "2"), ("closed-2", "18", "2"),
    ]  # fmt: skip
    assert float(rows[1]["ttft_p99"]) == fast.report.ttft.p99
    table = summary_table(run)
    assert "errors in rate-8: model_unavailable=2" in table
    assert re.search(r"^ +closed-2 +c=2 +5\.00 +100 ", table, re.MULTILINE)
    page = render_html(run)
    assert page.count("<svg") == 4
    check_self_contained(page)


async def test_measured_shards_merge(autojump_clock: trio.testing.MockClock) -> None:
    one = await measured_sweep(shard="1/2", n=10)
    two = await measured_sweep(shard="2/2", n=10)
    merged = merge_runs([one, two])
    assert merged.shards_merged == 2
    for point, a, b in zip(merged.points, one.points, two.points, strict=True):
        assert point.report.ok == a.report.ok + b.report.ok == 18
        assert point.report.errors_by_class == {"model_unavailable": 2}
        assert point.report.ttft.count == a.report.ttft.count + b.report.ttft.count
    assert merged.points[0].target_rps == 4.0
    assert render_html(merged).count("<svg") == 4


# -- HTML -----------------------------------------------------------------------------------------


class _Checker(html.parser.HTMLParser):
    """Records the tags, that every opened element is closed in order, and every attribute
    that loads something (src, href, url())."""

    VOID = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()
        self.loads: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.loads += [v or "" for k, v in attrs if k in {"src", "href", "xlink:href", "action"}]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.loads += [v or "" for k, v in attrs if k in {"src", "href", "xlink:href", "action"}]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1:] == [tag], (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_self_contained(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    assert page.startswith("<!DOCTYPE html>")
    assert not [v for v in checker.loads if not v.startswith("#")], checker.loads
    assert "url(" not in page.replace("url(#", "")
    assert checker.tags["script"] == checker.tags["link"] == checker.tags["img"] == 0
    assert "@import" not in page
    return checker


def test_html_is_self_contained_and_holds_the_numbers() -> None:
    run = sample_run()
    page = render_html(run)
    checker = check_self_contained(page)
    assert checker.tags["svg"] == page.count("<svg") == 4
    assert checker.tags["figure"] == 4
    text = " ".join(checker.text)
    for point in run.points:
        assert point.label in text
    assert "knee: 8.00 req/s (point rate-8)" in text
    assert "lag p99 0.2 s above the 0.005 s threshold" in text
    assert '<tr class="knee">' in page
    assert '<tr class="invalid">' in page
    assert "TooSlowError" in text
    assert "model_unavailable" in text
    assert '"prompt_tokens"' not in text
    assert "prompt_tokens" in text
    assert "[2.0,8.0]" in text  # settings values as JSON
    fast = run.points[1].report
    for value in (fast.ttft.p50, fast.ttft.p99, fast.itl.p50, fast.e2el.p99):
        assert format_seconds(value) in text
    assert render_html(run) == page  # deterministic


def test_html_escapes_what_it_is_given() -> None:
    report = make_report()
    run = make_run(
        [make_point("<script>alert(1)</script>", report), make_point("a & $x$", report)],
        target='"><img src=http://evil.example/x>',
        settings={"<b>": "</table>"},
    )
    page = render_html(run)
    check_self_contained(page)
    long_label = "x" * 60
    assert f'<td class="text">{long_label}</td>' in render_html(
        make_run([make_point(long_label, report)])
    )  # the HTML summary shows labels in full
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") == 4


def test_html_draws_what_a_report_without_histograms_or_timeline_has() -> None:
    # an older report (no histograms, no timeline) still renders, with notes in the plots
    report = replace(make_report(), histograms={}, timeline=[])
    page = render_html(make_run([make_point("old", report)]))
    check_self_contained(page)
    assert page.count("<svg") == 4


@pytest.mark.parametrize(
    "points",
    [
        [],
        [make_point("all-failed", make_report(ok=0, failed=5, ttft=[], itl=[0.0]))],
        [make_point("zeros", make_report(ttft=[0.0, 0.0], itl=[0.0], timeline=1))],
        [make_point("no-rate", make_report(offered=None, requests_per_s=0.0))],
    ],
    ids=["no-points", "all-failed", "all-zero", "no-rate"],
)
def test_degenerate_runs_render_everywhere_without_a_warning(points: list[BenchPoint]) -> None:
    # pytest turns warnings into errors: matplotlib's (log axis of zeros, empty legend) too
    run = make_run(points)
    page = render_html(run)
    check_self_contained(page)
    assert page.count("<svg") == 4
    assert summary_table(run).count("\n") >= 5
    assert len(to_csv(run).splitlines()) == 1 + len(points)
    assert load_json(dump_json(run)) == run


def test_timelines_are_laid_out_along_the_sweep() -> None:
    def at(t0: float, buckets: int = 10) -> BenchPoint:
        return make_point(f"p{t0}-{buckets}", make_report(t0_wall=t0, timeline=buckets))

    # in sequence by the wall clock (10 one-second buckets each): where they ran, gaps included
    assert _offsets([at(1000.0), at(1012.0), at(1030.0)]) == [0.0, 12.0, 30.0]
    # overlapping (or no wall clock): one after another
    assert _offsets([at(1000.0), at(1005.0, 4), at(1006.0)]) == [0.0, 10.0, 14.0]
    assert _offsets([at(0.0), at(0.0, 3)]) == [0.0, 10.0]
    assert _offsets([]) == []


def test_points_keep_their_color_and_many_points_get_distinct_ones() -> None:
    few = make_run([make_point(f"p{i}", make_report()) for i in range(3)])
    assert point_colors(few) == {"p0": "C0", "p1": "C1", "p2": "C2"}
    many = make_run([make_point(f"p{i}", make_report(timeline=2)) for i in range(14)])
    colors = point_colors(many)
    assert len(set(colors.values())) == 14
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors.values())
    page = render_html(many)  # no legend beyond 12 points, still 4 plots
    check_self_contained(page)
    assert page.count("<svg") == 4


def test_cdf_points_follow_the_histogram() -> None:
    hist = histogram([0.0, 0.1, 0.1, 0.2, 0.4])
    xs, ys = cdf_points(hist.to_data())
    assert xs == sorted(xs)
    assert ys == sorted(ys)
    assert (xs[0], ys[0]) == (1e-6, 0.0)  # the minimum, not below 1 us (for a log axis)
    assert xs[1] == 1e-6
    assert ys[1] == pytest.approx(0.2)  # the tiny bucket
    assert xs[-1] == 0.4
    assert ys[-1] == 1.0
    assert 0.1 <= xs[2] <= 0.1 * 1.02
    assert ys[2] == pytest.approx(0.6)
    assert cdf_points(LogHistogram().to_data()) == ([], [])


def test_html_without_matplotlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "trio_sogni.bench._plots", raising=False)
    monkeypatch.delitem(sys.modules, "trio_sogni.bench._mpl", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.delattr(trio_sogni.bench, "_plots", raising=False)
    monkeypatch.delattr(trio_sogni.bench, "_mpl", raising=False)
    with pytest.raises(BenchReportError, match=re.escape("pip install 'trio-sogni[bench]'")):
        render_html(sample_run())


def test_the_report_keeps_out_of_pyplot_and_loads_matplotlib_only_for_html() -> None:
    code = (
        "import sys, trio_sogni.bench as b\n"
        "assert 'matplotlib' not in sys.modules\n"
        "sys.path.insert(0, 'tests'); sys.path.insert(0, 'tests/bench')\n"
        "from test_report import sample_run\n"
        "b.render_html(sample_run())\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
