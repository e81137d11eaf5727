"""``trio-sogni chat``: stream one answer, or hold an interactive multi-turn session.

Where it runs: the Supernet at ``--endpoint`` (with credentials), else an embedded local one with
the llama.cpp worker (the ``local`` extra) or, with ``--simulated``, a simulated test-double
worker; the embedded choice is printed to stderr. The answer streams to stdout as it arrives
(``--json``: only the final result, as one JSON line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from trio_sogni import SogniClient

from ._connect import (
    DEFAULT_MODEL,
    UsageError,
    add_connection_arguments,
    local_worker,
    open_embedded_client,
    open_remote_client,
    remote_credentials,
)

__all__ = ["add_chat_arguments", "chat"]


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` options (and the connection options) to ``parser``."""
    parser.add_argument("prompt", nargs="?", help="the user message (omit for interactive mode)")
    add_connection_arguments(parser)
    parser.add_argument(
        "--model",
        default=None,
        help=f"model id (default: the local model, or {DEFAULT_MODEL} with --endpoint)",
    )
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the final result as JSON")
    think = parser.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None)
    think.add_argument("--no-think", dest="think", action="store_false")


@asynccontextmanager
async def _client_for(args: argparse.Namespace) -> AsyncGenerator[tuple[SogniClient, str]]:
    """Yield ``(client, model)``: on the remote Supernet with ``--endpoint``, else on an embedded
    one (announced on stderr).

    Raises:
        SystemExit: bad credentials, or the llama.cpp worker cannot run.
    """
    if args.endpoint:
        try:
            credentials = remote_credentials(args)
        except UsageError as exc:
            raise SystemExit(f"trio-sogni: {exc}") from None
        async with open_remote_client(args, credentials) as client:
            yield client, args.model or DEFAULT_MODEL
        return
    if args.simulated:
        worker = None
        model: str = args.model or DEFAULT_MODEL
        print(
            "trio-sogni: embedded local Supernet with simulated (test-double) workers: the "
            "answer is scripted text, not model inference.",
            file=sys.stderr,
        )
    else:
        worker = local_worker(args)
        model = worker.model_name
        print(f"trio-sogni: embedded local Supernet, llama.cpp running {model}", file=sys.stderr)
    async with open_embedded_client(args, worker, [model]) as client:
        yield client, model


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling keyword arguments the command line set."""
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.think is not None:
        params["think"] = args.think
    return params


async def _one_turn(
    client: SogniClient, model: str, messages: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    """Stream one answer to stdout (or print its final result as JSON); return its content."""
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


async def chat(args: argparse.Namespace) -> int:
    """Run ``trio-sogni chat``: one turn with a prompt, else an interactive session (prompts
    read from stdin in a thread; an empty line or end of input ends it) that keeps the history.
    Returns the exit status (0)."""
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
