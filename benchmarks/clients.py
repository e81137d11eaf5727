"""One benchmark client run, in its own process, measured by its own process CPU time.

    python benchmarks/clients.py CLIENT SCENARIO --port P --api-key K --model M [--jobs J] [--chunks C]

CLIENT: ``floor`` | ``trio_sogni`` | ``trio_sogni_every`` (a per-job buffer so large that every
chunk is delivered to the consumer, none coalesced) | ``trio_sogni_tws`` (over trio-websocket) |
``official`` (the official Python SDK, ``sogni-client``).
SCENARIO: ``stream`` (J concurrent streaming jobs of C chunks), ``hold`` (J jobs held open: memory
per in-flight job), ``fanout`` (J short non-streaming jobs, all at once: jobs/s), ``latency``
(J paced jobs whose chunks carry the server's send time), ``sequence`` (J jobs one after another,
RSS sampled: memory must stay flat).

Prints one JSON object. CPU time covers the workload only (after connecting, before closing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any

import trio

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"benchmark job {i}"}]


def measured(fn: Any) -> Any:
    """Run ``fn`` and return its result plus cpu/wall seconds."""

    async def wrapper(*args: Any) -> dict[str, Any]:
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = await fn(*args)
        result["cpu_s"] = time.process_time() - cpu0
        result["wall_s"] = time.perf_counter() - wall0
        return result

    return wrapper


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


# --- trio_sogni -------------------------------------------------------------------------------


async def run_trio_sogni(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    import trio_sogni

    options = trio_sogni.SocketOptions(engine=engine)  # type: ignore[arg-type]
    async with trio_sogni.open_sogni_client(
        api_key=args.api_key,
        socket_endpoint=f"ws://127.0.0.1:{args.port}/",
        rest_endpoint=f"http://127.0.0.1:{args.port}",
        socket_options=options,
        max_buffered_chunks=args.buffer,
    ) as sogni:
        await sogni.chat.wait_for_models()
        model = args.model
        # Warm-up: one short job, so lazy imports and first-use costs are not measured.
        await sogni.chat.completions.create(model=model, messages=prompt(-1), max_tokens=1)

        if args.scenario == "stream":

            @measured
            async def workload() -> dict[str, Any]:
                counts = [0, 0, 0]

                async def one(i: int) -> None:
                    async with sogni.chat.completions.stream(
                        model=model, messages=prompt(i), max_tokens=args.chunks
                    ) as stream:
                        async for chunk in stream:
                            counts[1] += 1
                            counts[2] += len(chunk.content or "")
                    counts[0] += stream.statistics().chunks_received

                async with trio.open_nursery() as nursery:
                    for i in range(args.jobs):
                        nursery.start_soon(one, i)
                return {"chunks": counts[0], "delivered": counts[1], "chars": counts[2]}

            return await workload()

        if args.scenario == "fanout":

            @measured
            async def workload() -> dict[str, Any]:
                done = [0]

                async def one(i: int) -> None:
                    await sogni.chat.completions.create(
                        model=model, messages=prompt(i), max_tokens=args.chunks
                    )
                    done[0] += 1

                async with trio.open_nursery() as nursery:
                    for i in range(args.jobs):
                        nursery.start_soon(one, i)
                return {"jobs": done[0]}

            return await workload()

        if args.scenario == "hold":
            gc.collect()
            before = rss_bytes()
            streams = [
                await sogni.chat.completions.create(
                    model=model, messages=prompt(i), max_tokens=args.chunks, stream=True
                )
                for i in range(args.jobs)
            ]
            for stream in streams:  # every job in flight: its first chunk has arrived
                await stream.receive()
            gc.collect()
            after = rss_bytes()
            for stream in streams:
                await stream.aclose()
            return {"jobs": args.jobs, "rss_delta": after - before, "rss": after}

        if args.scenario == "latency":
            samples: list[float] = []

            async def one(i: int) -> None:
                async with sogni.chat.completions.stream(
                    model=model, messages=prompt(i), max_tokens=args.chunks
                ) as stream:
                    async for chunk in stream:
                        now = time.monotonic_ns()
                        stamps = (chunk.content or "").split()
                        samples.extend((now - int(stamp)) / 1e6 for stamp in stamps)

            async with trio.open_nursery() as nursery:
                for i in range(args.jobs):
                    nursery.start_soon(one, i)
            return {"chunks": len(samples), "latency_ms": percentiles(samples)}

        if args.scenario == "sequence":
            concurrency = 50
            per = max(1, args.jobs // 10 // concurrency)
            samples_rss: list[int] = []
            done = 0
            cpu0 = time.process_time()
            while done < args.jobs:
                gc.collect()
                samples_rss.append(rss_bytes())
                async with trio.open_nursery() as nursery:
                    for w in range(concurrency):
                        nursery.start_soon(
                            one_batch, sogni, model, args.chunks, per, done + w * per
                        )
                done += per * concurrency
            gc.collect()
            samples_rss.append(rss_bytes())
            return {
                "jobs": done,
                "rss_samples": samples_rss,
                "cpu_s": time.process_time() - cpu0,
                "live_jobs": sogni.chat.statistics().live_jobs,
            }
    raise SystemExit(f"unknown scenario {args.scenario}")


async def one_batch(sogni: Any, model: str, chunks: int, count: int, first: int) -> None:
    for k in range(count):
        await sogni.chat.completions.create(
            model=model, messages=prompt(first + k), max_tokens=chunks
        )


# --- the official Python SDK ------------------------------------------------------------------


async def run_official(args: argparse.Namespace) -> dict[str, Any]:
    from sogni_client import SogniClient

    client = await SogniClient.create(
        app_id=f"bench-official-{os.getpid()}",
        api_key=args.api_key,
        socket_endpoint=f"ws://127.0.0.1:{args.port}/",
        rest_endpoint=f"http://127.0.0.1:{args.port}",
    )
    try:
        await client.chat.wait_for_models(30)
        model = args.model
        await client.chat.completions.create(model=model, messages=prompt(-1), max_tokens=1)

        if args.scenario == "stream":
            gc.collect()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            counts = [0, 0]

            async def one(i: int) -> None:
                stream = await client.chat.completions.create(
                    model=model, messages=prompt(i), max_tokens=args.chunks, stream=True
                )
                async for chunk in stream:
                    counts[0] += 1
                    counts[1] += len(chunk.get("content") or "")

            await asyncio.gather(*(one(i) for i in range(args.jobs)))
            return {
                "chunks": counts[0],
                "delivered": counts[0],
                "chars": counts[1],
                "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0,
            }
        if args.scenario == "fanout":
            gc.collect()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=model, messages=prompt(i), max_tokens=args.chunks
                    )
                    for i in range(args.jobs)
                )
            )
            return {
                "jobs": len(results),
                "cpu_s": time.process_time() - cpu0,
                "wall_s": time.perf_counter() - wall0,
            }
        if args.scenario == "hold":
            gc.collect()
            before = rss_bytes()
            streams = [
                await client.chat.completions.create(
                    model=model, messages=prompt(i), max_tokens=args.chunks, stream=True
                )
                for i in range(args.jobs)
            ]
            for stream in streams:  # every job in flight: its first chunk has arrived
                await stream.__anext__()
            gc.collect()
            after = rss_bytes()
            return {"jobs": args.jobs, "rss_delta": after - before, "rss": after}
        if args.scenario == "latency":
            samples: list[float] = []

            async def one_latency(i: int) -> None:
                stream = await client.chat.completions.create(
                    model=model, messages=prompt(i), max_tokens=args.chunks, stream=True
                )
                async for chunk in stream:
                    now = time.monotonic_ns()
                    stamps = (chunk.get("content") or "").split()
                    samples.extend((now - int(stamp)) / 1e6 for stamp in stamps)

            await asyncio.gather(*(one_latency(i) for i in range(args.jobs)))
            return {"chunks": len(samples), "latency_ms": percentiles(samples)}
    finally:
        await client.aclose()
    raise SystemExit(f"scenario {args.scenario} is not run for the official SDK")


# --- the floor --------------------------------------------------------------------------------


async def run_floor_client(args: argparse.Namespace) -> dict[str, Any]:
    from floor import run_floor

    # Warm-up job (not measured), on its own connection.
    await run_floor("127.0.0.1", args.port, args.api_key, args.model, ["warm-up"], chunks=1)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    counts = await run_floor(
        "127.0.0.1",
        args.port,
        args.api_key,
        args.model,
        [f"benchmark job {i}" for i in range(args.jobs)],
        chunks=args.chunks,
    )
    counts["cpu_s"] = time.process_time() - cpu0
    counts["wall_s"] = time.perf_counter() - wall0
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "client", choices=["floor", "trio_sogni", "trio_sogni_every", "trio_sogni_tws", "official"]
    )
    parser.add_argument("scenario", choices=["stream", "hold", "fanout", "latency", "sequence"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--buffer", type=int, default=256)
    args = parser.parse_args()
    if args.client == "official":
        result = asyncio.run(run_official(args))
    elif args.client == "floor":
        result = trio.run(run_floor_client, args)
    else:
        engine = "trio-websocket" if args.client == "trio_sogni_tws" else "fast"
        if args.client == "trio_sogni_every":  # a buffer no job fills: nothing is coalesced
            args.buffer = 10_000_000
        result = trio.run(run_trio_sogni, args, engine)
    result["max_rss"] = rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
