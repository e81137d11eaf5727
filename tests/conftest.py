"""Shared fixtures: a local network over loopback TCP and a client for it, on each engine.

Test rules (after trio-websocket's): loopback only, port 0, every I/O test bounded by a Trio
deadline, no sleeps used as synchronisation (``net.wait_until`` and events instead).

Every Trio test (async fixtures included) runs under a deadline, 60 s by default and
``@pytest.mark.deadline(seconds)`` to change it; under a MockClock the deadline is virtual time.
See tests/deadline.py.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from deadline import pytest_collection_modifyitems as pytest_collection_modifyitems
from helpers import client_for, local_network

import trio_sogni
from trio_sogni.localnet import LocalNetwork


@pytest.fixture(params=["fast", "trio-websocket"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every end-to-end test runs on both WebSocket engines."""
    return str(request.param)


@pytest.fixture
async def net() -> AsyncGenerator[LocalNetwork]:
    async with local_network(workers=4) as network:
        yield network


@pytest.fixture
async def sogni(net: LocalNetwork, engine: str) -> AsyncGenerator[trio_sogni.SogniClient]:
    async with client_for(net, engine) as client:
        yield client
