"""`trio-sogni bench run --llama --lengths tokenizer`: synthetic prompts fitted with the model's
own tokenizer (chat template included) reach the real llama.cpp worker (SmolLM2) with exactly
the asked number of prompt tokens, in one process and in shard processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from trio_sogni.bench import LengthDistribution


def bench_run(out: Path, *argv: str) -> list[dict[str, Any]]:
    """Run ``trio-sogni bench run --llama --lengths tokenizer`` and return its results."""
    command = [
        sys.executable, "-m", "trio_sogni", "bench", "run", "--llama", "--synthetic",
        "--lengths", "tokenizer", "--output-tokens", "fixed:3", "--out", str(out), "--quiet",
        "--no-html", *argv,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # llama.cpp's load log is not passed on
    report = json.loads((out / "report.json").read_text())
    assert "lengths=tokenizer" in report["workload"]["description"]
    assert "SmolLM2" in report["workload"]["token_count"]
    (point,) = report["points"]
    rows = (out / "results" / f"{point['label']}.jsonl").read_text().splitlines()
    return [json.loads(row) for row in rows]


def test_fixed_lengths_are_the_workers_prompt_tokens(tmp_path: Path) -> None:
    argv = ["--input-tokens", "fixed:77", "--concurrency", "1", "--requests", "4"]
    results = bench_run(tmp_path, *argv, "--processes", "1")
    assert len(results) == 4
    for result in results:
        assert result["status"] == "ok", result
        assert result["usage"]["prompt_tokens"] == 77


def test_sampled_lengths_are_exact_in_shard_processes_too(tmp_path: Path) -> None:
    spec = "uniform:45:400"
    argv = ["--input-tokens", spec, "--rate", "4", "--requests", "8", "--seed", "3"]
    results = bench_run(tmp_path, *argv, "--processes", "2")
    dist = LengthDistribution.parse(spec)
    asked = {i: dist.sample(random.Random(f"3:{i}")) for i in range(8)}
    assert len(set(asked.values())) > 4  # the lengths do vary
    assert sorted(r["index"] for r in results) == list(range(8))
    for result in results:
        assert result["status"] == "ok", result
        assert result["usage"]["prompt_tokens"] == asked[result["index"]], result
