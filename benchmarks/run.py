"""Run every benchmark scenario side by side and write docs/benchmarks.md and docs/benchmarks.json.

    python benchmarks/run.py [--quick] [--reps N] [--only a,b1,...]

Each scenario starts one localnet server process (benchmarks/server.py); every client runs in its
own process (benchmarks/clients.py; the media projects scenarios g and h: benchmarks/media.py)
and measures its own CPU time or memory. Repetitions interleave the
clients (client order rotates each repetition) so machine noise hits all of them alike; tables
report medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMES = {
    "floor": "floor (minimal parser + msgspec)",
    "trio_sogni": "trio_sogni (fast engine)",
    "trio_sogni_every": "trio_sogni, no coalescing (every chunk delivered)",
    "trio_sogni_tws": "trio_sogni over trio-websocket",
    "official": "official Python SDK (sogni-client)",
    "httpx": "floor: httpx stream straight to disk",
}
MEDIA_NAMES = {
    "trio_sogni": "trio_sogni (`sogni.projects`)",
    "official": "official Python SDK (sogni-client)",
}
SAVE_NAMES = {
    "trio_sogni": "trio_sogni `MediaResult.save(path)`",
    "httpx": "floor: httpx `AsyncClient.stream` straight to disk",
    "official": "official Python SDK: `job.get_result_data()`, then written",
}
MEDIA_PROJECT_GOAL = 8 * 1024
"""Bytes of client memory per in-flight media project (issue 13)."""
SAVE_GROWTH_GOAL = 8 * 2**20
"""Peak RSS growth while saving a 200 MB result (issue 13)."""


@dataclass
class Scenario:
    key: str
    title: str
    mode: str  # server mode
    kind: str  # client scenario
    clients: list[str]
    jobs: int
    chunks: int
    quick_jobs: int
    quick_chunks: int
    tokens_per_second: float = 1.0
    reps: int | None = None
    script: str = "clients.py"
    elapsed: float = 0.0
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


SCENARIOS = [
    Scenario("a", "(a) one job, 100,000 chunks", "firehose", "stream",
             ["floor", "trio_sogni", "trio_sogni_every", "trio_sogni_tws", "official"], 1, 100_000, 1, 20_000),
    Scenario("b1", "(b) 40 jobs x 2,500 chunks on one connection", "firehose", "stream",
             ["floor", "trio_sogni", "trio_sogni_every", "trio_sogni_tws", "official"], 40, 2_500, 40, 500),
    Scenario("b2", "(b) 400 jobs x 250 chunks on one connection", "firehose", "stream",
             ["floor", "trio_sogni", "trio_sogni_every", "trio_sogni_tws", "official"], 400, 250, 400, 50),
    Scenario("c", "(c) 10,000 concurrent jobs held open (paced, slow)", "paced", "hold",
             ["trio_sogni", "trio_sogni_tws", "official"], 10_000, 1_000, 2_000, 1_000,
             tokens_per_second=0.05, reps=3),
    Scenario("d", "(d) 10,000 short non-streaming jobs fanned out", "firehose", "fanout",
             ["trio_sogni", "trio_sogni_tws", "official"], 10_000, 16, 2_000, 16),
    Scenario("e", "(e) chunk delivery latency, 200 jobs x 20 chunks/s", "latency", "latency",
             ["trio_sogni", "trio_sogni_tws", "official"], 200, 100, 100, 40,
             tokens_per_second=20.0),
    Scenario("f", "(f) 100,000 completed jobs in sequence (50 at a time)", "firehose", "sequence",
             ["trio_sogni"], 100_000, 4, 10_000, 4, reps=1),
    # Media projects. jobs: projects held in flight; chunks: the download's size in MB.
    Scenario("g", "(g) media projects held in flight: client memory per project", "media-hold",
             "media_hold", ["trio_sogni", "trio_sogni_traced", "official", "official_traced"],
             5_000, 0, 1_000, 0, reps=3, script="media.py"),
    Scenario("h", "(h) a 200 MB media result saved to a file", "media-large", "media_download",
             ["trio_sogni", "httpx", "official"], 1, 200, 1, 200, script="media.py"),
]  # fmt: skip


class Server:
    def __init__(self, mode: str, tokens_per_second: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--mode", mode,
             "--tokens-per-second", str(tokens_per_second)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_client(
    server: Server, client: str, scenario: Scenario, jobs: int, chunks: int
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(HERE / scenario.script), client, scenario.kind.removeprefix("media_"),
        "--port", str(server.info["port"]), f"--api-key={server.info['api_key']}",
        "--model", server.info["model"], "--jobs", str(jobs), "--chunks", str(chunks),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=HERE)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(scenario: Scenario) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for client, runs in scenario.results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            summary[client] = {"error": 1.0}
            continue
        row: dict[str, float] = {"runs": float(len(ok))}
        if scenario.kind in ("stream", "fanout", "sequence"):
            row["cpu_s"] = median([r["cpu_s"] for r in ok])
        if scenario.kind == "stream":
            row["us_per_chunk"] = median([r["cpu_s"] / r["chunks"] * 1e6 for r in ok])
            row["chunks_per_s"] = median([r["chunks"] / r["wall_s"] for r in ok])
            row["max_rss_mib"] = median([r["max_rss"] / 2**20 for r in ok])
        elif scenario.kind == "fanout":
            row["jobs_per_s"] = median([r["jobs"] / r["wall_s"] for r in ok])
            row["cpu_us_per_job"] = median([r["cpu_s"] / r["jobs"] * 1e6 for r in ok])
        elif scenario.kind == "hold":
            row["bytes_per_job"] = median([r["rss_delta"] / r["jobs"] for r in ok])
            row["rss_mib"] = median([r["rss"] / 2**20 for r in ok])
        elif scenario.kind == "latency":
            for q in ("p50", "p90", "p99", "max"):
                row[f"{q}_ms"] = median([r["latency_ms"][q] for r in ok])
        elif scenario.kind == "sequence":
            samples = ok[0]["rss_samples"]
            row["rss_first_mib"] = samples[1] / 2**20 if len(samples) > 1 else samples[0] / 2**20
            row["rss_last_mib"] = samples[-1] / 2**20
            row["jobs"] = float(ok[0]["jobs"])
            row["live_jobs_after"] = float(ok[0]["live_jobs"])
        elif scenario.kind == "media_hold":
            row["projects"] = float(ok[0]["projects"])
            row["rss_per_project"] = median([r["rss_delta"] / r["projects"] for r in ok])
            row["rss_mib"] = median([r["rss"] / 2**20 for r in ok])
            row["create_s"] = median([r["wall_s"] for r in ok])
            if "traced_delta" in ok[0]:
                row["traced_per_project"] = median([r["traced_delta"] / r["projects"] for r in ok])
        elif scenario.kind == "media_download":
            row["mb"] = ok[0]["bytes"] / 1e6
            row["mb_per_s"] = median([r["bytes"] / r["wall_s"] / 1e6 for r in ok])
            row["wall_s"] = median([r["wall_s"] for r in ok])
            row["peak_growth_mib"] = median([r["peak_growth"] / 2**20 for r in ok])
            row["max_peak_growth_mib"] = max(r["peak_growth"] / 2**20 for r in ok)
            row["after_growth_mib"] = median([r["rss_after_growth"] / 2**20 for r in ok])
        summary[client] = row
    return summary


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in (
        "trio",
        "trio-websocket",
        "wsproto",
        "msgspec",
        "httpx",
        "sogni-client",
        "websockets",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render(
    scenarios: list[Scenario], info: dict[str, str], command: str, elapsed: float, quick: bool
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `nox -s bench` (benchmarks/run.py); do not edit by hand. Raw data: "
        "`benchmarks.json` beside this file.",
        "",
        f"- command: `{command}`{' (quick variant: smaller sizes, fewer repetitions)' if quick else ''}",
        f"- machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}; {info['platform']}",
        "- versions: "
        + ", ".join(
            f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores", "python", "platform")
        ),
        f"- run time: {elapsed:.0f} s",
        "",
        "Every client runs in its own process against the same localnet server process, and "
        "measures its own CPU time (`time.process_time()`) over the workload only (connected and "
        "warmed up). The server's workers are test doubles: the firehose writes pre-encoded frames "
        "many per `send_all` so it is never the bottleneck. Values are medians over the repetitions; "
        "the two cores are shared by server and client, so wall-clock rates are indicative, CPU per "
        "chunk is the primary measure.",
        "",
    ]
    for s in scenarios:
        summary = summarise(s)
        lines += [f"## {s.title}", ""]
        floor = summary.get("floor", {}).get("us_per_chunk", float("nan"))
        official = summary.get("official", {})
        if s.kind == "stream":
            lines += ["| client | CPU µs/chunk | × floor | × official | chunks/s | max RSS MiB |",
                      "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
            for client, row in summary.items():
                if "error" in row:
                    lines.append(f"| {NAMES[client]} | failed | | | | |")
                    continue
                us = row["us_per_chunk"]
                lines.append(
                    f"| {NAMES[client]} | {fmt(us, 2)} | {fmt(us / floor, 2)} | "
                    f"{fmt(us / official.get('us_per_chunk', float('nan')), 2)} | "
                    f"{fmt(row['chunks_per_s'])} | {fmt(row['max_rss_mib'])} |"
                )
        elif s.kind == "fanout":
            lines += ["| client | jobs/s | CPU µs/job | × official (CPU) |", "|---|---:|---:|---:|"]
            for client, row in summary.items():
                if "error" in row:
                    lines.append(f"| {NAMES[client]} | failed | | |")
                    continue
                ratio = row["cpu_us_per_job"] / official.get("cpu_us_per_job", float("nan"))
                lines.append(
                    f"| {NAMES[client]} | {fmt(row['jobs_per_s'])} | {fmt(row['cpu_us_per_job'])} | {fmt(ratio, 2)} |"
                )
        elif s.kind == "hold":
            lines += ["| client | RSS bytes per in-flight job | RSS MiB |", "|---|---:|---:|"]
            for client, row in summary.items():
                if "error" in row:
                    lines.append(f"| {NAMES[client]} | failed | |")
                    continue
                lines.append(
                    f"| {NAMES[client]} | {fmt(row['bytes_per_job'], 0)} | {fmt(row['rss_mib'])} |"
                )
        elif s.kind == "latency":
            lines += ["| client | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
            for client, row in summary.items():
                if "error" in row:
                    lines.append(f"| {NAMES[client]} | failed | | | |")
                    continue
                lines.append(
                    f"| {NAMES[client]} | {fmt(row['p50_ms'], 2)} | {fmt(row['p90_ms'], 2)} | "
                    f"{fmt(row['p99_ms'], 2)} | {fmt(row['max_ms'], 2)} |"
                )
        elif s.kind == "sequence":
            lines += ["| client | jobs | RSS after first batch MiB | RSS at end MiB | live jobs after |",
                      "|---|---:|---:|---:|---:|"]  # fmt: skip
            for client, row in summary.items():
                if "error" in row:
                    lines.append(f"| {NAMES[client]} | failed | | | |")
                    continue
                lines.append(
                    f"| {NAMES[client]} | {fmt(row['jobs'])} | {fmt(row['rss_first_mib'])} | "
                    f"{fmt(row['rss_last_mib'])} | {fmt(row['live_jobs_after'], 0)} |"
                )
        elif s.kind == "media_hold":
            lines += media_hold_table(s, summary)
        elif s.kind == "media_download":
            lines += media_download_table(summary)
        errors = {c: [r["error"] for r in runs if "error" in r] for c, runs in s.results.items()}
        for client, errs in errors.items():
            if errs:
                lines.append(f"\n{NAMES[client]}: {len(errs)} failed run(s): `{errs[0]}`")
        lines.append("")
    lines += targets(scenarios)
    return "\n".join(lines) + "\n"


def media_hold_table(scenario: Scenario, summary: dict[str, dict[str, float]]) -> list[str]:
    """One row per client: tracemalloc bytes per project (its ``_traced`` runs) and RSS bytes
    per project (its plain runs), then where trio_sogni's bytes go (its last traced run)."""
    nan = float("nan")
    projects = next((r["projects"] for r in summary.values() if "projects" in r), nan)
    official = summary.get("official", {}).get("rss_per_project", nan)
    official_traced = summary.get("official_traced", {}).get("traced_per_project", nan)
    lines = [
        f"{fmt(projects)} image projects created one after another on one connection and held "
        "in flight: localnet's `HoldMediaWorker` test double (benchmarks/server.py) reports each "
        "render's first step and then holds it until cancelled, so every project is *processing* "
        "when memory is measured (after `gc.collect()`), relative to the same client just before "
        "(connected, catalog cached, one project created and cancelled as a warm-up). "
        "tracemalloc counts Python allocations only (its runs are separate, as tracing inflates "
        "RSS); RSS (`VmRSS`) is what the process really grew by, page-granular and noisier.",
        "",
        "| client | tracemalloc B/project | × official | RSS B/project | × official | RSS MiB | "
        "create + all processing s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for client in ("trio_sogni", "official"):
        plain = summary.get(client, {"error": 1.0})
        traced = summary.get(f"{client}_traced", {"error": 1.0})
        t = traced.get("traced_per_project", nan)
        r = plain.get("rss_per_project", nan)
        lines.append(
            f"| {MEDIA_NAMES[client]} | {fmt(t, 0)} | {fmt(t / official_traced, 2)} | "
            f"{fmt(r, 0)} | {fmt(r / official, 2)} | {fmt(plain.get('rss_mib', nan))} | "
            f"{fmt(plain.get('create_s', nan), 2)} |"
        )
    traced_runs = [r for r in scenario.results.get("trio_sogni_traced", []) if "top" in r]
    if traced_runs:
        run = traced_runs[-1]
        n = run["projects"]
        lines += [
            "",
            "Where trio_sogni's memory goes (tracemalloc, the allocation sites that grew most, "
            f"its last run: {fmt(run['traced_delta'] / n, 0)} B/project in all):",
            "",
            "| allocation site | B/project | blocks/project |",
            "|---|---:|---:|",
        ]
        for site, size, count in run["top"][:12]:
            lines.append(f"| `{site}` | {fmt(size / n, 0)} | {count / n:.2f} |")
    return lines


def media_download_table(summary: dict[str, dict[str, float]]) -> list[str]:
    nan = float("nan")
    size = next((r["mb"] for r in summary.values() if "mb" in r), nan)
    floor = summary.get("httpx", {}).get("mb_per_s", nan)
    lines = [
        f"One video project whose result is {fmt(size, 0)} MB (localnet's `LargeMediaWorker` test "
        "double, stored in localnet's media storage and served in 64 KiB pieces through a signed "
        "URL on the same port), downloaded to a new file. Each client runs in its own process; "
        "RSS growth is the peak (`VmHWM`, reset through `/proc/self/clear_refs` just before) "
        "minus `VmRSS` before the download; the time covers minting the URL (not for the floor) "
        "and the whole download.",
        "",
        "| client | MB/s | × floor MB/s | peak RSS growth MiB | worst run MiB | RSS growth after MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for client, row in summary.items():
        if "error" in row:
            lines.append(f"| {SAVE_NAMES[client]} | failed | | | | |")
            continue
        lines.append(
            f"| {SAVE_NAMES[client]} | {fmt(row['mb_per_s'])} | {fmt(row['mb_per_s'] / floor, 2)} | "
            f"{fmt(row['peak_growth_mib'])} | {fmt(row['max_peak_growth_mib'])} | "
            f"{fmt(row['after_growth_mib'])} |"
        )
    return lines


def targets(scenarios: list[Scenario]) -> list[str]:
    by_key = {s.key: summarise(s) for s in scenarios}
    out = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]

    def us(key: str, client: str) -> float:
        return by_key.get(key, {}).get(client, {}).get("us_per_chunk", float("nan"))

    checks = [
        ("trio_sogni ≤ 0.2 × official CPU/chunk in (a)", us("a", "trio_sogni") / us("a", "official"), 0.2),
        ("trio_sogni ≤ 0.4 × official CPU/chunk in (b) 40×2,500", us("b1", "trio_sogni") / us("b1", "official"), 0.4),
        ("trio_sogni ≤ 0.4 × official CPU/chunk in (b) 400×250", us("b2", "trio_sogni") / us("b2", "official"), 0.4),
        ("trio_sogni ≤ 2.5 × floor CPU/chunk in (a)", us("a", "trio_sogni") / us("a", "floor"), 2.5),
        ("trio_sogni ≤ 2.5 × floor CPU/chunk in (b) 40×2,500", us("b1", "trio_sogni") / us("b1", "floor"), 2.5),
        ("trio_sogni ≤ 2.5 × floor CPU/chunk in (b) 400×250", us("b2", "trio_sogni") / us("b2", "floor"), 2.5),
    ]  # fmt: skip
    for text, value, limit in checks:
        met = "yes" if value <= limit else ("-" if value != value else "no")
        out.append(f"| {text} | {fmt(value, 2)}× | {met} |")
    hold = by_key.get("c", {}).get("trio_sogni", {}).get("bytes_per_job", float("nan"))
    out.append(
        f"| ≤ 4 KiB RSS per in-flight idle job in (c) | {fmt(hold, 0)} B | {'yes' if hold <= 4096 else ('-' if hold != hold else 'no')} |"
    )
    seq = by_key.get("f", {}).get("trio_sogni", {})
    if seq and "error" not in seq:
        growth = seq["rss_last_mib"] - seq["rss_first_mib"]
        out.append(
            f"| no memory growth in (f) | {growth:+.1f} MiB over {fmt(seq['jobs'])} jobs | {'yes' if growth < 2 else 'no'} |"
        )
    held = by_key.get("g", {})
    if held:
        traced = held.get("trio_sogni_traced", {}).get("traced_per_project", float("nan"))
        rss = held.get("trio_sogni", {}).get("rss_per_project", float("nan"))
        for what, value in (("tracemalloc", traced), ("RSS", rss)):
            met = "-" if value != value else ("yes" if value <= MEDIA_PROJECT_GOAL else "no")
            out.append(
                f"| ≤ 8 KiB client memory per in-flight media project in (g), {what} | "
                f"{fmt(value, 0)} B | {met} |"
            )
    saved = by_key.get("h", {}).get("trio_sogni", {})
    if saved and "error" not in saved:
        worst = saved["max_peak_growth_mib"]
        met = "yes" if worst * 2**20 <= SAVE_GROWTH_GOAL else "no"
        out.append(
            f"| ≤ 8 MiB RSS growth saving a {fmt(saved['mb'], 0)} MB result in (h) (worst run) | "
            f"{fmt(worst)} MiB | {met} |"
        )
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.key in args.only.split(",")]
    started = time.perf_counter()
    for s in chosen:
        reps = args.reps or (1 if args.quick else (s.reps or 5))
        jobs, chunks = (s.quick_jobs, s.quick_chunks) if args.quick else (s.jobs, s.chunks)
        server = Server(s.mode, s.tokens_per_second)
        try:
            scenario_started = time.perf_counter()
            for rep in range(reps):
                order = s.clients[rep % len(s.clients) :] + s.clients[: rep % len(s.clients)]
                for client in order:
                    result = run_client(server, client, s, jobs, chunks)
                    s.results.setdefault(client, []).append(result)
                    print(
                        f"{s.key} rep {rep + 1}/{reps} {client}: {json.dumps(result)[:160]}",
                        flush=True,
                    )
        finally:
            server.close()
        s.elapsed = time.perf_counter() - scenario_started
        print(f"{s.key}: {s.elapsed:.0f} s", flush=True)
        for client in s.clients:  # stable column order
            s.results[client] = s.results.pop(client)
    elapsed = time.perf_counter() - started
    info = machine()
    command = "nox -s bench" + (" -- --quick" if args.quick else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = {"machine": info, "command": command, "quick": args.quick, "elapsed_s": elapsed,
           "scenarios": {s.key: {"title": s.title, "results": s.results, "summary": summarise(s)} for s in chosen}}  # fmt: skip
    (out / "benchmarks.json").write_text(json.dumps(raw, indent=1) + "\n")
    (out / "benchmarks.md").write_text(render(chosen, info, command, elapsed, args.quick))
    print(f"wrote {out / 'benchmarks.md'} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
