"""Helpers of the client's media project tests (tests/projects): a localnet with media workers
and a real client on its in-memory connections, in virtual time.

The media workers are TEST DOUBLES: localnet's ``SimulatedMediaWorker`` (real, decodable, tiny
media drawn with Pillow / PyAV; ``encode_in_thread=False`` because under ``MockClock`` a running
thread would let the clock jump) or tests/mediadoubles.py's ``ScriptedMediaWorker`` (a few
deterministic bytes, with holds and scripted failures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from helpers import client_in_memory

import trio_sogni
from trio_sogni.localnet import LocalNetwork, open_local_network
from trio_sogni.localnet._media._render import SimulatedMediaWorker

IMAGE_MODEL = "flux1-schnell-fp8"
COMFY_MODEL = "z_image_turbo_bf16"
VIDEO_MODEL = "wan_v2.2-14b-fp8_t2v_lightx2v"
AUDIO_MODEL = "ace_step_1.5_turbo"


def simulated(name: str = "sim-1", **kwargs: Any) -> SimulatedMediaWorker:
    """A SimulatedMediaWorker TEST DOUBLE fit for virtual time."""
    kwargs.setdefault("seconds_per_step", 0.1)
    kwargs.setdefault("encode_in_thread", False)
    return SimulatedMediaWorker(name, **kwargs)


@asynccontextmanager
async def media_net(*workers: Any, **options: Any) -> AsyncIterator[LocalNetwork]:
    """A localnet (no listener) whose media storage writes in the Trio thread (virtual time),
    with ``workers`` (media workers: SimulatedMediaWorkers or tests/mediadoubles.py's) added."""
    options.setdefault("listen", False)
    options.setdefault("rebind_grace", 5.0)
    async with open_local_network(**options) as net:
        net._media_storage.offload_io = False
        for worker in workers:
            net._projects.add_worker(worker)
        yield net


@asynccontextmanager
async def media_client(net: LocalNetwork, **kwargs: Any) -> AsyncIterator[trio_sogni.SogniClient]:
    async with client_in_memory(net, **kwargs) as sogni:
        yield sogni


def assert_no_live_project(net: LocalNetwork) -> None:
    """localnet holds no live project, queued or running render."""
    stats = net._projects.statistics()
    assert (stats.live_projects, stats.queued_renders, stats.running_renders) == (0, 0, 0)


def assert_no_client_state(sogni: trio_sogni.SogniClient) -> None:
    """The client tracks no project any more."""
    stats = sogni.projects.statistics()
    assert stats.live_projects == 0
    assert stats.detached == 0
