"""One media-projects benchmark client run, in its own process (see benchmarks/run.py).

    python benchmarks/media.py CLIENT SCENARIO --port P --api-key K --model M [--jobs N] [--chunks MB]

SCENARIO ``hold`` (server mode ``media-hold``: every render reports its first step, then is held
until cancelled): create N projects, wait until every one is *processing* on the server, and
measure what the client holds per in-flight project. CLIENT: ``trio_sogni`` / ``official``
(RSS, ``/proc/self/status`` ``VmRSS``, no tracemalloc) or ``trio_sogni_traced`` /
``official_traced`` (tracemalloc: Python allocations only, plus the top allocation sites).

SCENARIO ``download`` (server mode ``media-large``: every render is ``--chunks`` MB of bytes,
stored in localnet's media storage and served through a signed URL): create one project, wait
for it, then download its result to a file in a temporary directory and measure the peak RSS
growth (``VmHWM`` after the download, reset before it through ``/proc/self/clear_refs``, minus
``VmRSS`` before) and the throughput. CLIENT: ``trio_sogni`` (``MediaResult.save``), ``httpx``
(the floor: ``httpx.AsyncClient.stream`` of the same kind of URL straight to disk, the client
made before measuring), ``official`` (the official SDK's own path, ``get_result_data()``, then
the bytes written).

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import trio

STEPS = 4  # per render; the hold worker holds each render after its first step


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def top_allocations(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[Any]:
    """The allocation sites that grew most between the snapshots (file:line, bytes, blocks)."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    out = []
    for stat in stats[:15]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker, prefix in (
            ("site-packages/", ""),
            ("/trio_sogni/", "trio_sogni/"),
            ("/benchmarks/", "benchmarks/"),
            ("/lib/python3.", "python3."),
        ):
            if marker in name:
                name = prefix + name[name.index(marker) + len(marker) :]
                break
        out.append([f"{name}:{frame.lineno}", stat.size_diff, stat.count_diff])
    return out


class Meter:
    """Memory before and after a workload: RSS always, tracemalloc when ``traced``."""

    def __init__(self, traced: bool) -> None:
        self.traced = traced
        self.before: tracemalloc.Snapshot | None = None

    def start(self) -> None:
        gc.collect()
        if self.traced:
            tracemalloc.start()
            self.before = tracemalloc.take_snapshot()
        self.rss0 = status_kib("VmRSS") * 1024
        self.traced0 = tracemalloc.get_traced_memory()[0] if self.traced else 0

    def stop(self, count: int) -> dict[str, Any]:
        gc.collect()
        rss = status_kib("VmRSS") * 1024
        result: dict[str, Any] = {"projects": count, "rss": rss, "rss_delta": rss - self.rss0}
        if self.traced:
            assert self.before is not None
            result["traced_delta"] = tracemalloc.get_traced_memory()[0] - self.traced0
            result["top"] = top_allocations(self.before, tracemalloc.take_snapshot())
            tracemalloc.stop()
        return result


# --- trio_sogni ----------------------------------------------------------------------------------


def trio_sogni_client(args: argparse.Namespace) -> Any:
    import trio_sogni

    return trio_sogni.open_sogni_client(
        api_key=args.api_key,
        socket_endpoint=f"ws://127.0.0.1:{args.port}/",
        rest_endpoint=f"http://127.0.0.1:{args.port}",
    )


async def until_processing(projects: list[Any]) -> None:
    # Polling keeps the measured client free of anything the benchmark adds per project.
    while any(p.status != "processing" for p in projects):  # noqa: ASYNC110
        await trio.sleep(0.02)


async def trio_sogni_hold(args: argparse.Namespace, traced: bool) -> dict[str, Any]:
    async with trio_sogni_client(args) as sogni:
        await sogni.projects.wait_for_models()

        async def create(i: int) -> Any:
            return await sogni.projects.create(
                type="image", model=args.model, prompt=f"benchmark project {i}", steps=STEPS
            )

        # Warm-up: the catalog is fetched and cached, lazy imports done, one project held.
        warm = await create(-1)
        await until_processing([warm])
        await warm.aclose()
        meter = Meter(traced)
        meter.start()
        started = time.perf_counter()
        projects = [await create(i) for i in range(args.jobs)]
        await until_processing(projects)
        elapsed = time.perf_counter() - started
        result = meter.stop(len(projects))
        result["live"] = sogni.projects.statistics().live_projects
        result["wall_s"] = elapsed
        for project in projects:
            await project.aclose()
        return result


async def trio_sogni_download(args: argparse.Namespace, how: str) -> dict[str, Any]:
    size = args.chunks * 1_000_000
    directory = Path(tempfile.mkdtemp(prefix="bench-media-"))
    try:
        async with trio_sogni_client(args) as sogni:
            await sogni.projects.wait_for_models()
            async with await sogni.projects.create(
                type="video", model=args.model, prompt="a large result", steps=4
            ) as project:
                (result,) = await project.wait()
            target = directory / "result.mp4"
            if how == "httpx":
                import httpx

                async with httpx.AsyncClient() as http:  # made before measuring
                    url = await result.url()
                    meter = Meter(False)
                    meter.start()
                    reset = reset_peak_rss()
                    started = time.perf_counter()
                    async with http.stream("GET", url) as response:
                        response.raise_for_status()
                        # The floor: plain blocking writes, nothing in between.
                        with open(target, "wb") as out:  # noqa: ASYNC230
                            async for chunk in response.aiter_raw():
                                out.write(chunk)
                    elapsed = time.perf_counter() - started
            else:
                meter = Meter(False)
                meter.start()
                reset = reset_peak_rss()
                started = time.perf_counter()
                await result.save(target)
                elapsed = time.perf_counter() - started
            return download_result(meter, reset, elapsed, target, size)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def download_result(
    meter: Meter, reset: bool, elapsed: float, target: Path, size: int
) -> dict[str, Any]:
    peak = status_kib("VmHWM") * 1024
    written = target.stat().st_size
    if written != size:
        raise AssertionError(f"wrote {written} bytes, expected {size}")
    return {
        "bytes": written,
        "wall_s": elapsed,
        "rss_before": meter.rss0,
        "peak_growth": peak - meter.rss0 if reset else None,
        "rss_after_growth": status_kib("VmRSS") * 1024 - meter.rss0,
        "peak_reset": reset,
    }


# --- the official SDK (sogni-client, asyncio) ----------------------------------------------------


async def official_client(args: argparse.Namespace) -> Any:
    from sogni_client import SogniClient

    # The SDK leaves each cancelled project's completion future unretrieved; asyncio would log
    # every one at garbage collection.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    return await SogniClient.create(
        app_id="bench-official-media",
        api_key=args.api_key,
        rest_endpoint=f"http://127.0.0.1:{args.port}",
        socket_endpoint=f"ws://127.0.0.1:{args.port}/",
    )


def official_processing(project: Any) -> bool:
    return bool(project.jobs) and all(job.status == "processing" for job in project.jobs)


async def official_hold(args: argparse.Namespace, traced: bool) -> dict[str, Any]:
    client = await official_client(args)
    try:
        await client.projects.wait_for_models(timeout=30)

        async def create(i: int) -> Any:
            return await client.projects.create(
                type="image",
                modelId=args.model,
                positivePrompt=f"benchmark project {i}",
                numberOfMedia=1,
                steps=STEPS,
            )

        async def until(projects: list[Any]) -> None:
            while not all(official_processing(p) for p in projects):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        warm = await create(-1)
        await until([warm])
        await client.projects.cancel(warm.id)
        meter = Meter(traced)
        meter.start()
        started = time.perf_counter()
        projects = [await create(i) for i in range(args.jobs)]
        await until(projects)
        elapsed = time.perf_counter() - started
        result = meter.stop(len(projects))
        result["wall_s"] = elapsed
        for project in projects:
            await client.projects.cancel(project.id)
        return result
    finally:
        await client.aclose()


async def official_download(args: argparse.Namespace) -> dict[str, Any]:
    size = args.chunks * 1_000_000
    directory = Path(tempfile.mkdtemp(prefix="bench-media-"))
    client = await official_client(args)
    try:
        await client.projects.wait_for_models(timeout=30)
        project = await client.projects.create(
            type="video",
            modelId=args.model,
            positivePrompt="a large result",
            numberOfMedia=1,
            steps=4,
        )
        await project.wait_for_completion(timeout=300)
        (job,) = project.jobs
        target = directory / "result.mp4"
        meter = Meter(False)
        meter.start()
        reset = reset_peak_rss()
        started = time.perf_counter()
        data = await job.get_result_data()  # the SDK's download: the whole body in memory
        with open(target, "wb") as out:  # noqa: ASYNC230 - as the SDK's user would
            out.write(data)
        elapsed = time.perf_counter() - started
        del data
        return download_result(meter, reset, elapsed, target, size)
    finally:
        await client.aclose()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "client",
        choices=["trio_sogni", "trio_sogni_traced", "official", "official_traced", "httpx"],
    )
    parser.add_argument("scenario", choices=["hold", "download"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=200, help="download size in MB")
    args = parser.parse_args()
    traced = args.client.endswith("_traced")
    client = args.client.removesuffix("_traced")
    if args.scenario == "hold":
        if client == "official":
            result = asyncio.run(official_hold(args, traced))
        else:
            result = trio.run(trio_sogni_hold, args, traced)
    elif client == "official":
        result = asyncio.run(official_download(args))
    else:
        result = trio.run(trio_sogni_download, args, client)
    result["pid"] = os.getpid()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
