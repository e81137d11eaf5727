"""Regenerate the example report of docs/bench.md: a sweep against the embedded local network
(simulated test-double workers with a known capacity), its terminal table and its plots.

    python docs/examples/bench_example.py

Runs ``trio-sogni bench run --sweep`` (about a minute), then writes
docs/_static/bench-example-table.txt (the table), docs/_static/bench-example.json (the report)
and docs/_static/bench-*.svg (the plots of its HTML report, one file each).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from trio_sogni.bench import load_json, render_html

STATIC = Path(__file__).resolve().parent.parent / "_static"
COMMAND = [
    "bench", "run", "--sweep", "--sweep-points", "6", "--schedule", "poisson",
    "--requests", "150", "--warmup", "20", "--cooldown", "20", "--processes", "2",
    "--workers", "4", "--worker-capacity", "4", "--ttft", "0.2", "--tokens-per-second", "50",
    "--input-tokens", "uniform:64:256", "--output-tokens", "normal:25:5",
    "--slo-ttft", "0.4", "--seed", "1",
]  # fmt: skip
"""4 workers x 4 slots, 0.2 s + 25 tokens / 50 tokens/s = 0.7 s per request: ~23 requests/s."""
PLOTS = ("saturation", "cdfs", "timeline", "errors")
"""The names given to the HTML report's figures, in their order."""


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-m", "trio_sogni", *COMMAND, "--out", out],
            check=True,
            capture_output=True,
            text=True,
        )
        run = load_json(Path(out) / "report.json")
        (STATIC / "bench-example.json").write_bytes((Path(out) / "report.json").read_bytes())
    table = "$ trio-sogni " + " ".join(COMMAND) + "\n" + done.stdout
    (STATIC / "bench-example-table.txt").write_text(table)
    svgs = re.findall(r"<svg\b.*?</svg>", render_html(run), flags=re.DOTALL)
    for name, svg in zip(PLOTS, svgs, strict=False):
        (STATIC / f"bench-{name}.svg").write_text(svg + "\n")
    print(table)


if __name__ == "__main__":
    main()
