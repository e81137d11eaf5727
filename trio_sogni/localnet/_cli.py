"""``trio-sogni localnet serve``: run a local network from the command line.

:func:`add_serve_arguments` declares the options on a parser; :func:`serve_from_args` runs the
network. When it accepts connections it prints exactly one JSON line to stdout,
``{"rest_url": ..., "socket_url": ..., "api_key": ...}``, flushes, and serves until cancelled
(Ctrl-C in the CLI). It never prints anything else to stdout.
"""

from __future__ import annotations

import argparse
import json

import trio

from ._config import DEFAULT_MODEL, ModelSpec
from ._open import open_local_network
from ._workers import FirehoseWorker, Worker

__all__ = ["add_serve_arguments", "serve_from_args"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``localnet serve`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port for REST and WebSocket (default: any free)"
    )
    parser.add_argument("--api-key", default=None, help="API key to accept (default: random)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        default=None,
        help=f"a model to serve; repeatable (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="number of simulated workers (default: 1)"
    )
    parser.add_argument(
        "--capacity", type=int, default=1, help="concurrent jobs per worker (default: 1)"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="pace of the simulated output (default: as fast as possible)",
    )
    parser.add_argument(
        "--firehose",
        action="store_true",
        help="use FirehoseWorker load sources (test doubles for benchmarks: max_tokens "
        "pre-encoded chunks per job, unpaced) instead of simulated workers",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=None,
        metavar="N",
        help="the models' max_tokens limit (default: 32768)",
    )
    parser.add_argument(
        "--rebind-grace",
        type=float,
        default=30.0,
        help="seconds a disconnected app's jobs wait for a reconnect (default: 30)",
    )


async def serve_from_args(args: argparse.Namespace) -> None:
    """Run the network described by ``args`` (from :func:`add_serve_arguments`) until cancelled."""
    names: list[str] = args.models or [DEFAULT_MODEL]
    models: list[str | ModelSpec] = (
        [ModelSpec(name=name, max_output_tokens=args.max_output_tokens) for name in names]
        if args.max_output_tokens is not None
        else list(names)
    )
    workers: int | list[Worker] = (
        [
            FirehoseWorker(f"localnet-firehose-{i + 1}", capacity=args.capacity)
            for i in range(args.workers)
        ]
        if args.firehose
        else args.workers
    )
    async with open_local_network(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        models=models,
        workers=workers,
        capacity=args.capacity,
        tokens_per_second=args.tokens_per_second,
        rebind_grace=args.rebind_grace,
    ) as net:
        line = json.dumps(
            {"rest_url": net.rest_url, "socket_url": net.socket_url, "api_key": net.api_key}
        )
        print(line, flush=True)
        await trio.sleep_forever()
