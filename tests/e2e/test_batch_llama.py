"""`trio-sogni batch` on its default embedded network: the real llama.cpp worker (SmolLM2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_batch_runs_real_inference_by_default(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    rows = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": f"Name a colour. ({i})"}]}
        for i in range(4)
    ]
    requests.write_text("".join(json.dumps({**row, "max_tokens": 12}) + "\n" for row in rows))
    output = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "trio_sogni", "batch", str(requests), "-o", str(output), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "llama.cpp" in done.stderr.splitlines()[0]
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ["q0", "q1", "q2", "q3"]
    for result in results:
        assert result["status"] == "ok"
        assert result["content"]
        assert 1 <= result["usage"]["completion_tokens"] <= 12
    report = json.loads((tmp_path / "run_report.json").read_text())
    assert report["ok"] == 4
