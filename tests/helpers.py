"""Helpers shared by the end-to-end tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio_sogni
from trio_sogni import SocketOptions
from trio_sogni.localnet import LocalNetwork, open_local_network

MODEL = "test-model"


@asynccontextmanager
async def local_network(**kwargs: Any) -> AsyncIterator[LocalNetwork]:
    kwargs.setdefault("models", [MODEL])
    kwargs.setdefault("rebind_grace", 1.0)
    async with open_local_network(**kwargs) as net:
        yield net


@asynccontextmanager
async def client_for(
    net: LocalNetwork, engine: str = "fast", **kwargs: Any
) -> AsyncIterator[trio_sogni.SogniClient]:
    options = kwargs.pop("socket_options", None) or SocketOptions(
        engine=engine,  # type: ignore[arg-type]
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.2,
    )
    async with trio_sogni.open_sogni_client(
        api_key=kwargs.pop("api_key", net.api_key),
        socket_endpoint=net.socket_url,
        rest_endpoint=net.rest_url,
        socket_options=options,
        **kwargs,
    ) as client:
        yield client
