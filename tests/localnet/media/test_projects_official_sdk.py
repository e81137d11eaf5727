"""The official Python SDK (``sogni-client``, asyncio), unmodified, runs media projects against
localnet over loopback: model discovery (``swarmModels`` + models list + tiers), a two-render
image project with its per-render events, a music project, and a confirmed cancel.

The media worker is a TEST DOUBLE (tests/mediadoubles.py). Download URLs are not part of this
slice: the SDK's attempt to mint one is answered 404 and it completes the renders without URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import trio
from mediadoubles import (
    AUDIO_MODEL,
    COMFY_MODEL,
    IMAGE_MODEL,
    VIDEO_MODEL,
    MemoryStorage,
    ScriptedMediaWorker,
)
from sogni_client import SogniClient
from sogni_client.errors import ProjectError

from trio_sogni.localnet import open_local_network


async def run_sdk(rest_url: str, socket_url: str, api_key: str, hold: Any) -> dict[str, Any]:
    client = await SogniClient.create(
        app_id="official-sdk-media",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    events: list[dict[str, Any]] = []
    client.projects.on("job", lambda event: events.append(dict(event)))
    try:
        models = await client.projects.wait_for_models(timeout=10)
        project = await client.projects.create(
            type="image",
            modelId=IMAGE_MODEL,
            positivePrompt="a red fox in snow",
            numberOfMedia=2,
            steps=3,
            seed=7,
            tokenType="sogni",
        )
        await project.wait_for_completion(timeout=20)
        image = {
            "status": project.status,
            "jobs": [(job.status, job.seed, job.step) for job in project.jobs],
        }
        music = await client.projects.create(
            type="audio",
            modelId=AUDIO_MODEL,
            positivePrompt="calm piano",
            numberOfMedia=1,
            duration=15,
            steps=4,
        )
        await music.wait_for_completion(timeout=20)
        held = await client.projects.create(
            type="image", modelId=IMAGE_MODEL, positivePrompt="never", numberOfMedia=1, steps=4
        )
        started = asyncio.Event()
        held.on("jobStarted", lambda _job: started.set())
        if not held.jobs:
            await asyncio.wait_for(started.wait(), 10)
        await client.projects.cancel(held.id)
        with contextlib.suppress(ProjectError):  # a cancelled project's wait raises
            await held.wait_for_completion(timeout=5)
        return {
            "models": models,
            "image": image,
            "music": music.status,
            "held": (held.id, held.status),
            "events": events,
        }
    finally:
        hold.set()
        await client.aclose()


async def test_official_python_sdk_media_projects() -> None:
    worker = ScriptedMediaWorker("media-1", step_seconds=0.01)
    with trio.fail_after(60):
        async with open_local_network(rebind_grace=0) as net:
            net._projects.storage = MemoryStorage()
            net._projects.add_worker(worker)
            hold = worker.hold = trio.Event()
            worker.hold_prompt = "never"  # only the project that is cancelled waits

            class Hold:
                def set(self) -> None:
                    trio.from_thread.run_sync(hold.set)

            out = await trio.to_thread.run_sync(
                asyncio.run, run_sdk(net.rest_url, net.socket_url, net.api_key, Hold())
            )
            await net.wait_until(lambda: net._projects.statistics().live_projects == 0)
    assert {m["id"]: m["media"] for m in out["models"]} == {
        IMAGE_MODEL: "image",
        COMFY_MODEL: "image",
        VIDEO_MODEL: "video",
        AUDIO_MODEL: "audio",
    }
    assert out["image"]["status"] == "completed"
    assert sorted(out["image"]["jobs"]) == [("completed", 7, 3), ("completed", 8, 3)]
    assert out["music"] == "completed"
    assert out["held"][1] == "canceled"
    kinds = [e["type"] for e in out["events"] if e.get("projectId") != out["held"][0]]
    assert kinds.count("started") == 3
    assert kinds.count("completed") == 3
    assert kinds.count("progress") == 3 + 3 + 4
    assert not net.rejected_frames
    assert not net.errors
