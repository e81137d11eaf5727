"""The open-loop rate benchmark of ``trio-sogni bench``: the highest Poisson rate that one client
process (and ``--processes 2``) sustains against the firehose server with a p99 scheduling lag
under 5 ms.

    python benchmarks/bench_rate.py [--quick] [--reps N] [--processes 1,2]

The server is benchmarks/server.py ``--mode firehose`` in its own process (a FirehoseWorker
TEST DOUBLE: every job streams its ``max_tokens`` chunks as fast as the socket takes them).
Each probe is one ``python -m trio_sogni bench run`` against it: a Poisson schedule at the probed
rate for ``--duration`` seconds (after a 0.5 s warm-up), 16-token prompts, 4 output tokens.
A rate is *sustained* when the point's report is valid (p99 scheduling lag and p99 event-loop
lag under 5 ms, and at least 90 % of the offered rate sent) and under 1 % of its requests
failed. The search doubles the rate from 100/s until a probe fails, then bisects between the
last sustained and the first failed rate (to within 6 %). Each search is repeated ``--reps``
times; the result is the median. A second table probes fixed rates (``--profile-rates``) once
each and shows what the client sent and its lag percentiles, whatever the verdict. Writes docs/bench-rate.json and docs/bench-rate.inc (the
table included by docs/bench.md) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import Server  # benchmarks/run.py: benchmarks/server.py in its own process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAG_GOAL = 0.005
RATE_GOAL = 5000.0


def probe(server: Server, rate: float, processes: int, duration: float) -> dict[str, Any]:
    """One ``bench run`` at ``rate``; the measured point's verdict and numbers."""
    port = server.info["port"]
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "trio_sogni", "bench", "run",
            "--endpoint", f"ws://127.0.0.1:{port}/", "--rest-endpoint", f"http://127.0.0.1:{port}",
            "--model", server.info["model"], "--schedule", "poisson", "--rate", repr(rate),
            "--duration", repr(duration), "--warmup", "0.5s", "--cooldown", "0.2s",
            "--input-tokens", "fixed:16", "--output-tokens", "fixed:4",
            "--processes", str(processes), "--lag-threshold", repr(LAG_GOAL),
            "--out", out, "--quiet", "--no-html",
        ]  # fmt: skip
        env = {**os.environ, "SOGNI_API_KEY": server.info["api_key"]}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
            return {"rate": rate, "ok": False, "error": tail[0]}
        run = json.loads((Path(out) / "report.json").read_text())
    report = run["points"][0]["report"]
    total = report["ok"] + report["failed"] + report["cancelled"]
    failed = (report["failed"] + report["cancelled"]) / total if total else 1.0
    return {
        "rate": rate,
        "ok": bool(report["valid"]) and failed < 0.01,
        "lag_p50": report["lag"]["p50"],
        "valid": report["valid"],
        "reasons": report["invalid_reasons"],
        "failed_fraction": failed,
        "sent_rps": report["sent_rps"],
        "requests_per_s": report["requests_per_s"],
        "lag_p99": report["lag"]["p99"],
        "loop_lag_p99": report["loop_lag"]["p99"],
        "items": total,
    }


def search(server: Server, processes: int, duration: float, log: list[dict[str, Any]]) -> float:
    """The highest sustained rate: double from 100/s, then bisect to within 6 %."""
    good, bad = 0.0, None
    rate = 100.0
    while bad is None and rate <= 200_000:
        result = probe(server, rate, processes, duration)
        log.append({"processes": processes, **result})
        print(f"  processes={processes} rate={rate:.0f}: {_verdict(result)}", file=sys.stderr)
        if result["ok"]:
            good, rate = rate, rate * 2
        else:
            bad = rate
    while bad is not None and bad - good > 0.06 * bad:
        rate = (good + bad) / 2 if good else bad / 2
        result = probe(server, rate, processes, duration)
        log.append({"processes": processes, **result})
        print(f"  processes={processes} rate={rate:.0f}: {_verdict(result)}", file=sys.stderr)
        if result["ok"]:
            good = rate
        else:
            bad = rate
        if rate < 10:
            break
    return good


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def _verdict(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    lag = result["lag_p99"] or 0.0
    loop = result["loop_lag_p99"] or 0.0
    verdict = "sustained" if result["ok"] else "NOT sustained " + "; ".join(result["reasons"])
    return (
        f"{verdict} (lag p99 {lag * 1e3:.2f} ms, loop lag p99 {loop * 1e3:.2f} ms, "
        f"sent {result['sent_rps'] or 0:.0f}/s, failed {result['failed_fraction']:.2%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 repetition, 2 s probes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument(
        "--profile-rates", default="100,200,400,800", help="fixed rates for the second table"
    )
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    duration = 2.0 if args.quick else args.duration
    counts = [int(p) for p in args.processes.split(",")]
    started = time.perf_counter()
    log: list[dict[str, Any]] = []
    found: dict[int, list[float]] = {p: [] for p in counts}
    load_before = os.getloadavg()
    profile: list[dict[str, Any]] = []
    server = Server("firehose", 1.0)  # the firehose ignores the pacing rate
    try:
        for rep in range(reps):
            for processes in counts:
                print(f"search {rep + 1}/{reps}, {processes} process(es)", file=sys.stderr)
                found[processes].append(search(server, processes, duration, log))
        for processes in counts:
            for rate in (float(r) for r in args.profile_rates.split(",")):
                result = {"processes": processes, **probe(server, rate, processes, duration)}
                print(f"  fixed rate {rate:.0f}, {processes}: {_verdict(result)}", file=sys.stderr)
                profile.append(result)
    finally:
        server.close()
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - started
    command = "python benchmarks/bench_rate.py" + (" --quick" if args.quick else "")
    lines = [
        "| client processes | highest sustained Poisson rate (median) | searches | goal |",
        "|---:|---:|---|---|",
    ]
    for processes in counts:
        rates = found[processes]
        lines.append(
            f"| {processes} | {statistics.median(rates):,.0f} requests/s | "
            f"{', '.join(f'{r:,.0f}' for r in rates)} | "
            f"{'met' if statistics.median(rates) >= RATE_GOAL else 'not met'} "
            f"(≥ {RATE_GOAL:,.0f}/s) |"
        )
    lines += [
        "",
        f"Measured with `{command}` ({reps} search{'es' if reps > 1 else ''} per row, "
        f"{duration:g} s probes, {elapsed:.0f} s in all) on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. Sustained: p99 scheduling lag and p99 "
        f"event-loop lag under {LAG_GOAL * 1e3:g} ms, at least 90 % of the offered rate sent, "
        f"under 1 % failed. Load average (1 min) {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
        f"{' (other work shared the machine)' if max(load_before[0], load_after[0]) > 2 else ''}.",
        "",
        "At fixed rates (one probe each): what the client sent and how late.",
        "",
        "| processes | offered/s | sent/s | lag p50 | lag p99 | loop lag p99 | failed | valid |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in profile:
        if "error" in row:
            lines.append(f"| {row['processes']} | {row['rate']:.0f} | error: {row['error']} |")
            continue
        lines.append(
            f"| {row['processes']} | {row['rate']:.0f} | {row['sent_rps'] or 0:.0f} | "
            f"{_ms(row['lag_p50'])} | {_ms(row['lag_p99'])} | {_ms(row['loop_lag_p99'])} | "
            f"{row['failed_fraction']:.1%} | {'yes' if row['valid'] else 'no'} |"
        )
    table = "\n".join(lines) + "\n"
    (ROOT / "docs" / "bench-rate.inc").write_text(table)
    (ROOT / "docs" / "bench-rate.json").write_text(
        json.dumps(
            {"command": command, "found": found, "probes": log, "fixed_rates": profile}, indent=2
        )
        + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
