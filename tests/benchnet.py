"""Shared setup of the benchmark tests (tests/bench, tests/cli/test_bench_cli.py): a local network of simulated workers with a known
service-time model, and a client on it over in-memory connections (virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from helpers import MODEL, client_in_memory, local_network

import trio_sogni
from trio_sogni.bench._workload import LengthDistribution, SyntheticWorkload
from trio_sogni.localnet import LocalNetwork, SimulatedWorker

WORKERS = 4
CAPACITY = 2
START_LATENCY = 0.25
TOKENS_PER_SECOND = 8.0
OUTPUT_TOKENS = 2
SERVICE_TIME = START_LATENCY + OUTPUT_TOKENS / TOKENS_PER_SECOND  # 0.5 s
NETWORK_CAPACITY = WORKERS * CAPACITY / SERVICE_TIME  # 16 requests/s


@asynccontextmanager
async def simulated_network(
    clients: int = 1,
) -> AsyncIterator[tuple[LocalNetwork, list[trio_sogni.SogniClient]]]:
    """`WORKERS` simulated workers of `CAPACITY` jobs, each job taking `START_LATENCY` then one
    chunk per 1/`TOKENS_PER_SECOND` s; ``clients`` clients on in-memory connections."""
    workers = [
        SimulatedWorker(
            f"sim-{i}",
            capacity=CAPACITY,
            start_latency=START_LATENCY,
            tokens_per_second=TOKENS_PER_SECOND,
        )
        for i in range(WORKERS)
    ]
    async with local_network(workers=workers, listen=False) as net:
        opened: list[trio_sogni.SogniClient] = []
        async with client_in_memory(net) as first:
            opened.append(first)
            if clients == 2:
                async with client_in_memory(net) as second:
                    opened.append(second)
                    for client in opened:
                        await client.chat.wait_for_models()
                    yield net, opened
                return
            await first.chat.wait_for_models()
            yield net, opened


def workload(seed: int = 0) -> SyntheticWorkload:
    """Short synthetic prompts asking for `OUTPUT_TOKENS` tokens."""
    return SyntheticWorkload(
        model=MODEL,
        input_tokens=LengthDistribution.parse("uniform:20:40"),
        output_tokens=LengthDistribution.parse(f"fixed:{OUTPUT_TOKENS}"),
        seed=seed,
    )
