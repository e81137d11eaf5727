"""Where ``chat`` and ``batch`` send requests: the shared connection options and the one way to
open a client on a remote Supernet or on an embedded local one.

* `add_connection_arguments` declares the options (``--endpoint`` and credentials, taken from the
  environment by default; ``--simulated`` and ``--model-path`` for the embedded network).
* `remote_credentials` checks the credentials of a remote Supernet (`UsageError` when missing).
* `local_worker` loads the llama.cpp worker of an embedded real-model network, or exits with a
  message saying how to get it.
* `open_embedded_client` starts an embedded local Supernet (simulated test-double workers, or the
  given llama.cpp worker) and opens a client on it; `open_embedded_media_client` does the same
  with one media worker and no chat worker; `open_remote_client` opens one on a remote Supernet.
  All are async context managers yielding a `trio_sogni.SogniClient`; leaving them closes the
  client, then stops the network.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import AsyncGenerator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio_sogni
from trio_sogni import SogniClient
from trio_sogni.localnet import (
    LlamaCppWorker,
    LocalNetwork,
    MediaWorker,
    ScriptFunction,
    open_local_network,
)

__all__ = [
    "DEFAULT_MODEL",
    "Credentials",
    "UsageError",
    "add_connection_arguments",
    "client_on",
    "local_worker",
    "open_embedded_client",
    "open_embedded_media_client",
    "open_remote_client",
    "remote_credentials",
]

DEFAULT_MODEL: Final = "qwen3.6-35b-a3b-gguf-iq4xs"
"""The model of a remote Supernet and of simulated workers when ``--model`` is not given."""


class UsageError(Exception):
    """A problem with the command line or the input; the command reports it as one line."""


def add_connection_arguments(parser: argparse.ArgumentParser, *, chat: bool = True) -> None:
    """The options that choose where requests go (shared by ``chat``, ``batch`` and the media
    commands): a remote Supernet (``--endpoint`` and credentials, taken from the environment by
    default) or the embedded local one (with ``chat``, its chat worker options ``--simulated``
    and ``--model-path``)."""
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
    if not chat:
        return
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="embedded network only: simulated test-double workers (scripted text, no model)",
    )
    parser.add_argument(
        "--model-path", help="embedded network only: a GGUF model for the llama.cpp worker"
    )


@dataclass(frozen=True)
class Credentials:
    """How to sign in to a remote Supernet: an API key, or a username and password."""

    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def remote_credentials(args: argparse.Namespace) -> Credentials:
    """The credentials for ``--endpoint``: username and password when either is given, else the
    API key.

    Raises:
        UsageError: only one of username and password, or no credentials at all.
    """
    if args.username or args.password:
        if not (args.username and args.password):
            raise UsageError("--username and --password go together")
        return Credentials(username=args.username, password=args.password)
    if args.api_key:
        return Credentials(api_key=args.api_key)
    raise UsageError(
        "--endpoint needs credentials: --api-key (or SOGNI_API_KEY), or --username and "
        "--password (or SOGNI_USERNAME / SOGNI_PASSWORD)"
    )


@asynccontextmanager
async def open_remote_client(
    args: argparse.Namespace, credentials: Credentials
) -> AsyncGenerator[SogniClient]:
    """A client on the Supernet at ``--endpoint`` signed in with ``credentials`` (from
    `remote_credentials`). The REST endpoint is ``--rest-endpoint``, else derived from the
    socket endpoint (``wss://socket.X`` → ``https://api.X``, ``ws://`` → ``http://``)."""
    endpoint: str = args.endpoint
    rest: str = args.rest_endpoint or endpoint.replace("wss://socket.", "https://api.").replace(
        "ws://", "http://"
    )
    async with trio_sogni.open_sogni_client(
        app_id=args.app_id,
        socket_endpoint=endpoint,
        rest_endpoint=rest,
        network=args.network,
        testnet=args.testnet,
        api_key=credentials.api_key,
        username=credentials.username,
        password=credentials.password,
    ) as client:
        yield client


def local_worker(args: argparse.Namespace) -> LlamaCppWorker:
    """The llama.cpp worker of an embedded real-model network: ``--model-path`` (default: the
    ``local`` extra's SmolLM2) serving ``--model`` (default: its own model name). Loading is
    synchronous.

    Raises:
        SystemExit: llama-cpp-python is not installed, or the model cannot be loaded (a message
            saying what to do, not a traceback).
    """
    try:
        importlib.import_module("llama_cpp")  # the optional 'local' extra
    except ImportError:
        raise SystemExit(
            "trio-sogni: the embedded network runs a real model with llama.cpp, which needs the "
            "'local' extra: pip install 'trio-sogni[local]' (the first install builds "
            "llama-cpp-python, about 5 minutes). Or pass --simulated for scripted test-double "
            "workers, or --endpoint for a remote Supernet."
        ) from None
    try:
        if args.model:
            return LlamaCppWorker(model_path=args.model_path, model_name=args.model)
        return LlamaCppWorker(model_path=args.model_path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"trio-sogni: cannot load the local model: {exc}") from None


@asynccontextmanager
async def open_embedded_client(
    args: argparse.Namespace,
    worker: LlamaCppWorker | None,
    models: Collection[str],
    *,
    capacity: int = 1,
    tokens_per_second: float | None = None,
    script: ScriptFunction | None = None,
    media_worker: MediaWorker | None = None,
) -> AsyncGenerator[SogniClient]:
    """An embedded local Supernet and a client on it (``--app-id``, ``--network``).

    ``script`` drives the simulated workers' answers (see ``localnet.load_script``);
    ``media_worker`` is added to serve media projects (and so media tools).

    With a ``worker`` the network runs just that llama.cpp worker, serving its model (``models``,
    ``capacity`` and ``tokens_per_second`` are then unused: the worker has its own capacity and
    runs at the model's pace). Without one it runs one simulated test-double worker serving
    ``models`` (in sorted order) with ``capacity`` concurrent jobs, each answer paced at
    ``tokens_per_second`` chunks per second (``None``: as fast as possible).
    """
    if worker is None:
        network = open_local_network(
            models=sorted(models),
            workers=1,
            capacity=capacity,
            tokens_per_second=tokens_per_second,
            script=script,
        )
    else:
        network = open_local_network(models=[worker.model_name], workers=[worker])
    async with network as net:
        if media_worker is not None:
            net.add_media_worker(media_worker)
        async with client_on(net, args) as client:
            yield client


@asynccontextmanager
async def client_on(net: LocalNetwork, args: argparse.Namespace) -> AsyncGenerator[SogniClient]:
    """A client on the embedded network ``net`` (its key and URLs; ``--app-id``, ``--network``)."""
    async with trio_sogni.open_sogni_client(
        app_id=args.app_id,
        api_key=net.api_key,
        socket_endpoint=net.socket_url,
        rest_endpoint=net.rest_url,
        network=args.network,
    ) as client:
        yield client


@asynccontextmanager
async def open_embedded_media_client(
    args: argparse.Namespace, worker: MediaWorker
) -> AsyncGenerator[SogniClient]:
    """An embedded local Supernet (loopback, a free port) whose only worker is the media
    ``worker``, serving every media model of the types it renders, and a client on it
    (``--app-id``, ``--network``)."""
    async with open_local_network(workers=0) as net:
        net.add_media_worker(worker)
        async with client_on(net, args) as client:
            yield client
