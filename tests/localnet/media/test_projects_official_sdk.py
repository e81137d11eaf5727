"""The official Python SDK (``sogni-client``, asyncio), unmodified, runs media projects against
localnet over loopback: model discovery (``swarmModels`` + models list + tiers), a two-render
image project with its per-render events, a music project, and a confirmed cancel; then an image,
a video and a music project whose results the SDK downloads through its own path (signed URLs
minted by ``/v1/image/downloadUrl`` and ``/v1/media/downloadUrl``), decoded with Pillow and PyAV.

The media workers are TEST DOUBLES: tests/mediadoubles.py's ``ScriptedMediaWorker`` (a few
deterministic bytes, kept in a ``MemoryStorage``: no URLs), and localnet's
``SimulatedMediaWorker`` (real, decodable media, stored and served by localnet).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import Any

import av
import httpx
import pytest
import trio
from mediadoubles import (
    AUDIO_MODEL,
    COMFY_MODEL,
    IMAGE_MODEL,
    VIDEO_MODEL,
    MemoryStorage,
    ScriptedMediaWorker,
)
from PIL import Image
from sogni_client import SogniClient
from sogni_client.errors import ProjectError

from trio_sogni.localnet import LocalNetwork, Text, ToolCall, open_local_network
from trio_sogni.localnet._media._render import SIMULATED_LABEL, SimulatedMediaWorker


def add_simulated_media_worker(net: LocalNetwork, worker: SimulatedMediaWorker) -> None:
    """Register ``worker`` (for every catalog model of the media types it renders)."""
    net._projects.add_worker(worker)


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


async def run_sdk_downloads(rest_url: str, socket_url: str, api_key: str) -> dict[str, Any]:
    """An image, a video and a music project through the SDK, each result fetched through the
    SDK's own download path (``get_result_url`` then ``get_result_data``)."""
    client = await SogniClient.create(
        app_id="official-sdk-downloads",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        await client.projects.wait_for_models(timeout=10)
        requests: dict[str, dict[str, Any]] = {
            "image": {
                "type": "image",
                "modelId": IMAGE_MODEL,
                "width": 320,
                "height": 256,
                "steps": 2,
                "outputFormat": "png",
            },
            "video": {
                "type": "video",
                "modelId": VIDEO_MODEL,
                "width": 480,
                "height": 480,
                "duration": 1,
                "fps": 16,
                "steps": 4,
            },
            "music": {
                "type": "audio",
                "modelId": AUDIO_MODEL,
                "duration": 10,
                "steps": 4,
                "outputFormat": "mp3",
            },
        }
        out: dict[str, Any] = {}
        for name, request in requests.items():
            project = await client.projects.create(
                positivePrompt=f"a simulated {name}", numberOfMedia=1, **request
            )
            urls = await project.wait_for_completion(timeout=60)
            (job,) = project.jobs
            url = await job.get_result_url()
            out[name] = {
                "status": project.status,
                "urls": urls,
                "url": url,
                "data": await job.get_result_data(),
            }
        return out
    finally:
        await client.aclose()


def decode_video(data: bytes) -> dict[str, Any]:
    """Every frame of the first video stream of ``data``, decoded with PyAV."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        return {
            "format": container.format.name,
            "codec": stream.codec_context.name,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": len(frames),
            "sizes": {(f.width, f.height) for f in frames},
            "last_time": frames[-1].time,
            "comment": container.metadata.get("comment"),
        }


def decode_audio(data: bytes) -> dict[str, Any]:
    """Every frame of the first audio stream of ``data``, decoded with PyAV."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return {
            "format": container.format.name,
            "codec": stream.codec_context.name,
            "rate": stream.codec_context.sample_rate,
            "samples": samples,
            "comment": container.metadata.get("comment"),
        }


@pytest.mark.deadline(120)
async def test_official_python_sdk_downloads_decodable_image_video_and_music() -> None:
    """The SDK creates an image, a video and a music project against localnet's
    SimulatedMediaWorker TEST DOUBLE (real media drawn with Pillow and PyAV), waits for each,
    mints its signed download URL and fetches the bytes, all unmodified; the bytes decode to
    what was asked for."""
    with trio.fail_after(100):
        async with open_local_network(rebind_grace=0) as net:
            add_simulated_media_worker(net, SimulatedMediaWorker("sim-media", capacity=2))
            out = await trio.to_thread.run_sync(
                asyncio.run, run_sdk_downloads(net.rest_url, net.socket_url, net.api_key)
            )
            await net.wait_until(lambda: net._projects.statistics().live_projects == 0)
            assert not net.rejected_frames
            assert not net.errors
            # The SDK minted each URL itself (the image endpoint for the image, the media
            # endpoint for the video and the music), then fetched it.
            asked = [(r.method, r.path, r.status) for r in net.http_requests]
    assert asked.count(("GET", "/v1/image/downloadUrl", 200)) == 1
    assert asked.count(("GET", "/v1/media/downloadUrl", 200)) == 2
    downloads = [a for a in asked if a[1].startswith("/localnet/media/files/")]
    assert [status for _, _, status in downloads] == [200, 200, 200]
    for name in ("image", "video", "music"):
        assert out[name]["status"] == "completed"
        # The signed URL is on localnet's own port, and it is the one the SDK reported.
        assert out[name]["url"].startswith(net.rest_url + "/localnet/media/files/")
        assert out[name]["urls"] == [out[name]["url"]]

    with Image.open(io.BytesIO(out["image"]["data"])) as image:
        assert image.format == "PNG"
        assert image.size == (320, 256)
        image.load()

    video = decode_video(out["video"]["data"])
    assert "mp4" in video["format"]
    assert video["codec"] == "h264"
    assert video["size"] == (480, 480)
    assert video["sizes"] == {(480, 480)}
    assert video["frames"] == 17  # Wan: 16 fps x 1 s + 1
    assert video["last_time"] == pytest.approx(16 / 16)
    assert video["comment"] == SIMULATED_LABEL

    music = decode_audio(out["music"]["data"])
    assert music["format"] == "mp3"
    assert music["codec"].startswith("mp3")  # PyAV names the decoder: mp3float
    assert music["rate"] == 44_100
    # MP3 adds encoder delay and padding (< 2 frames of 1152 samples).
    assert 10 * 44_100 <= music["samples"] <= 10 * 44_100 + 2 * 1152 + 529
    assert music["comment"] == SIMULATED_LABEL


async def run_sdk_tools(rest_url: str, socket_url: str, api_key: str, model: str) -> dict[str, Any]:
    client = await SogniClient.create(
        app_id="official-sdk-tools",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        call = {
            "id": "call_direct",
            "type": "function",
            "function": {
                "name": "generate_image",
                "arguments": json.dumps(
                    {"prompt": "a red fox in snow", "width": 320, "height": 256}
                ),
            },
        }
        direct = await client.chat.tools.execute(call, {"timeout": 60})
        direct_bytes = b""
        if direct.get("success"):
            async with httpx.AsyncClient(timeout=30) as http:
                direct_bytes = (await http.get(direct["resultUrls"][0])).content
        looped = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "draw me a fox"}],
            tools=[GENERATE_IMAGE_TOOL],
            autoExecuteTools=True,
        )
        return {"direct": direct, "direct_bytes": direct_bytes, "looped": looped}
    finally:
        await client.aclose()


GENERATE_IMAGE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "generate_image",
        "description": "Generate an image",
        "parameters": {
            "type": "object",
            "properties": {"prompt": {"type": "string"}},
            "required": ["prompt"],
        },
    },
}


async def test_official_python_sdk_executes_generate_image_and_loops_with_it() -> None:
    """The SDK's ``chat.tools.execute(generate_image)`` and its auto tool loop with a media tool
    succeed against localnet, unmodified: the chat test double (scripted) asks for an image,
    the SDK runs it as a project on the SimulatedMediaWorker TEST DOUBLE, and answers."""

    def script(request: Any) -> Any:
        if request.messages[-1].role == "tool":
            return [Text("Here is your fox.")]
        return [ToolCall("generate_image", {"prompt": "a fox", "width": 320, "height": 256})]

    with trio.fail_after(100):
        async with open_local_network(rebind_grace=0, script=script, models=["chat-model"]) as net:
            add_simulated_media_worker(net, SimulatedMediaWorker("sim-media", capacity=2))
            out = await trio.to_thread.run_sync(
                asyncio.run, run_sdk_tools(net.rest_url, net.socket_url, net.api_key, "chat-model")
            )
            assert not net.errors
    direct = out["direct"]
    assert direct["success"] is True, direct
    assert direct["toolName"] == "generate_image"
    assert json.loads(direct["content"])["media_type"] == "image"
    with Image.open(io.BytesIO(out["direct_bytes"])) as image:
        assert image.size == (320, 256)
    looped = out["looped"]
    assert looped["content"] == "Here is your fox."
    (round_,) = looped["toolHistory"]
    assert round_["toolResults"][0]["success"] is True
