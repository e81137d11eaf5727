"""Benchmark server: a localnet in its own process.

    python benchmarks/server.py --mode firehose|paced|latency|media-hold|media-large
        [--tokens-per-second R] [--media-bytes B]

Prints one JSON line ``{"host", "port", "api_key", "model"}`` when ready and serves until its
standard input closes (the harness closes it to stop the server) or it is interrupted.

Modes (all workers are test doubles, not inference):

* ``firehose``: `FirehoseWorker`: each job streams ``max_tokens`` pre-encoded chunks as fast as
  the socket takes them, many frames per ``send_all``.
* ``paced``: `PacedWorker` (below): the first chunk at once, then ``--tokens-per-second`` per
  job, unbounded capacity: used to hold thousands of slow jobs open.
* ``latency``: `TimestampWorker` (below): every chunk carries the server's ``time.monotonic_ns()``
  at send time, paced, each job with a random phase, so clients can compute send-to-consumer
  latency (CLOCK_MONOTONIC is shared by processes on one machine).
* ``media-hold``: `HoldMediaWorker` (below) serves the image model ``flux1-schnell-fp8``: every
  render reports its first step, then is held until the project is cancelled, so thousands of
  media projects stay in flight (client memory per in-flight project).
* ``media-large``: `LargeMediaWorker` (below) serves the video model
  ``wan_v2.2-14b-fp8_t2v_lightx2v``: every render is ``--media-bytes`` bytes (zeros, labelled
  ``video/mp4``, not a real video), stored in localnet's media storage and served through its
  signed download URLs (large downloads).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

from trio_sogni import localnet
from trio_sogni.localnet._media._render import (
    MediaType,
    RenderedMedia,
    RenderSpec,
    StepCallback,
)

MODEL = "bench-model"
CAPACITY = 100_000


class _BenchWorker:
    """A paced TEST DOUBLE serving every model with practically unlimited capacity."""

    worker_name = "bench-worker"

    def __init__(self, tokens_per_second: float) -> None:
        self._interval = 1.0 / tokens_per_second

    @property
    def name(self) -> str:
        return self.worker_name

    @property
    def models(self) -> Sequence[str] | None:
        return None

    @property
    def capacity(self) -> int:
        return CAPACITY


class TimestampWorker(_BenchWorker):
    """A TEST DOUBLE for latency measurements: each chunk's content is the send time in ns."""

    worker_name = "timestamp-worker"

    async def run(self, job: Any) -> None:
        # A random phase per job: jobs that start in one burst would otherwise tick in lockstep
        # and measure the server's own queueing of 200 simultaneous chunks, not delivery.
        deadline = trio.current_time() + random.uniform(0, self._interval)
        for _ in range(job.max_tokens):
            deadline += self._interval
            await trio.sleep_until(deadline)
            await job.send_chunk(f"{time.monotonic_ns()} ")
        await job.send_chunk(None, finish_reason="stop")


class PacedWorker(_BenchWorker):
    """A TEST DOUBLE that holds jobs open: one chunk at once, then one every 1/R seconds."""

    worker_name = "paced-worker"

    async def run(self, job: Any) -> None:
        for i in range(job.max_tokens):
            if i:
                await trio.sleep(self._interval)
            await job.send_chunk(" tok")
        await job.send_chunk(None, finish_reason="length")


# --- media projects (the projects manager's worker protocol: name, models, capacity, render) ----

MEDIA_IMAGE_MODEL = "flux1-schnell-fp8"
MEDIA_VIDEO_MODEL = "wan_v2.2-14b-fp8_t2v_lightx2v"


class HoldMediaWorker:
    """A TEST DOUBLE media worker that never finishes: each render reports step 1, then waits
    until it is cancelled (its project cancelled, or the network closed)."""

    name = "hold-media-worker"
    models: Sequence[str] = (MEDIA_IMAGE_MODEL,)
    media_types: frozenset[MediaType] = frozenset({"image"})
    capacity = CAPACITY

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderedMedia:
        await on_step(1, spec.steps)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class LargeMediaWorker:
    """A TEST DOUBLE media worker whose every render is ``size`` bytes of zeros (``video/mp4``
    by label only), after one step."""

    name = "large-media-worker"
    models: Sequence[str] = (MEDIA_VIDEO_MODEL,)
    media_types: frozenset[MediaType] = frozenset({"video"})
    capacity = 1

    def __init__(self, size: int) -> None:
        self.size = size

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderedMedia:
        await on_step(1, 1)
        return RenderedMedia(
            media_type="video",
            data=bytes(self.size),
            content_type="video/mp4",
            output_format="mp4",
            steps=1,
            seed=spec.seed,
            worker_name=self.name,
        )


def _workers(mode: str, tokens_per_second: float) -> list[Any]:
    if mode == "latency":
        return [TimestampWorker(tokens_per_second)]
    if mode == "paced":
        return [PacedWorker(tokens_per_second)]
    if mode.startswith("media"):
        return []
    return [localnet.FirehoseWorker(capacity=CAPACITY)]


async def main(args: argparse.Namespace) -> None:
    async with localnet.open_local_network(
        models=[localnet.ModelSpec(name=MODEL, max_output_tokens=10_000_000)],
        workers=_workers(args.mode, args.tokens_per_second),
        rebind_grace=0,
        record_limit=16,
        max_jobs_per_socket=CAPACITY,  # scenarios (c), (d): 10,000 jobs in flight on one socket
        # One account holds them all: (c), (d) and the 5,000 media projects of (g) are over
        # localnet's default per-account cap (4,000).
        max_jobs_per_account=CAPACITY,
    ) as net:
        model = MODEL
        # Media workers join through the projects manager (localnet has no public method for a
        # manager-level worker yet).
        if args.mode == "media-hold":
            net._projects.add_worker(HoldMediaWorker())
            model = MEDIA_IMAGE_MODEL
        elif args.mode == "media-large":
            net._projects.add_worker(LargeMediaWorker(args.media_bytes))
            model = MEDIA_VIDEO_MODEL
        print(
            json.dumps(
                {"host": "127.0.0.1", "port": net.port, "api_key": net.api_key, "model": model}
            ),
            flush=True,
        )
        # Serve until the harness closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--mode",
        choices=["firehose", "paced", "latency", "media-hold", "media-large"],
        default="firehose",
    )
    parser.add_argument("--tokens-per-second", type=float, default=1.0)
    parser.add_argument("--media-bytes", type=int, default=200_000_000)
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        pass
