"""Test doubles and helpers for the media projects tests (tests/localnet/media).

``ScriptedMediaWorker`` and ``MemoryStorage`` are TEST DOUBLES: the worker does not render
anything (it returns a few deterministic bytes derived from the spec, after ``steps`` paced
steps), the storage keeps results in a dict. They stand in for the real ``SimulatedMediaWorker``
and result storage, which the projects manager reaches only through its small protocols.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket
from rawsocket import recv

from trio_sogni.localnet import LocalNetwork, open_local_network
from trio_sogni.localnet._media._projects import RenderSpec, StepCallback
from trio_sogni.localnet._server import HTTPRequest
from trio_sogni.protocol import (
    Authenticated,
    MediaJobRequest,
    MediaKeyFrame,
    ServerMessage,
    SwarmLLMModels,
    SwarmModels,
    decode_server_message,
    encode_envelope,
)

IMAGE_MODEL = "flux1-schnell-fp8"
COMFY_MODEL = "z_image_turbo_bf16"
VIDEO_MODEL = "wan_v2.2-14b-fp8_t2v_lightx2v"
AUDIO_MODEL = "ace_step_1.5_turbo"
ALL_MODELS = (IMAGE_MODEL, COMFY_MODEL, VIDEO_MODEL, AUDIO_MODEL)


@dataclass(frozen=True)
class FakeOutput:
    data: bytes
    content_type: str
    nsfw: bool = False


class WorkerFailed(Exception):
    pass


class ScriptedMediaWorker:
    """A TEST DOUBLE media worker: ``step_seconds`` per step, then deterministic bytes.

    ``fail_attempts`` renders fail (raise) before any succeeds; ``hold`` (an Event) makes every
    render (only those of prompt ``hold_prompt``, when set) wait after its first step until it
    is set.
    """

    def __init__(
        self,
        name: str,
        models: tuple[str, ...] = ALL_MODELS,
        *,
        capacity: int = 1,
        step_seconds: float = 0.1,
        fail_attempts: int = 0,
        nsfw: bool = False,
    ) -> None:
        self.name = name
        self.models = models
        self.capacity = capacity
        self.step_seconds = step_seconds
        self.fail_attempts = fail_attempts
        self.nsfw = nsfw
        self.hold: trio.Event | None = None
        self.hold_prompt: str | None = None
        self.specs: list[RenderSpec] = []
        self.running = 0

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> FakeOutput:
        self.specs.append(spec)
        self.running += 1
        try:
            for step in range(1, spec.steps + 1):
                await trio.sleep(self.step_seconds)
                if self.fail_attempts > 0:
                    self.fail_attempts -= 1
                    raise WorkerFailed("scripted failure")
                await on_step(step, spec.steps)
                held = self.hold_prompt is None or spec.prompt == self.hold_prompt
                if step == 1 and self.hold is not None and held:
                    await self.hold.wait()
        finally:
            self.running -= 1
        digest = hashlib.sha256(f"{spec.model}|{spec.prompt}|{spec.seed}".encode()).digest()
        kind = {"image": "image/png", "video": "video/mp4", "audio": "audio/mpeg"}
        return FakeOutput(digest, kind[spec.media_type], self.nsfw)


@dataclass
class MemoryStorage:
    """A TEST DOUBLE result store: ``(account, project, render) -> (bytes, content type)``."""

    items: dict[tuple[str, str, str], tuple[bytes, str]] = field(default_factory=dict)

    async def store(
        self, account: str, project: str, render_id: str, data: bytes, content_type: str
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.items[(account, project, render_id)] = (data, content_type)


def media_request(
    job_id: str,
    model: str = IMAGE_MODEL,
    *,
    count: int = 1,
    prompt: str = "a red fox in snow",
    **keyframe: Any,
) -> MediaJobRequest:
    top = {k: keyframe.pop(k) for k in ("output_format", "token_type") if k in keyframe}
    return MediaJobRequest(
        job_id=job_id,
        key_frames=[MediaKeyFrame(model_id=model, positive_prompt=prompt, **keyframe)],
        number_of_images=count,
        **top,
    )


def raw_job_request(payload: dict[str, Any]) -> bytes:
    return encode_envelope("jobRequest", payload)


@asynccontextmanager
async def media_network(
    *workers: ScriptedMediaWorker, **options: Any
) -> AsyncIterator[tuple[LocalNetwork, MemoryStorage]]:
    options.setdefault("listen", False)
    options.setdefault("rebind_grace", 5.0)
    async with open_local_network(**options) as net:
        storage = MemoryStorage()
        net._projects.storage = storage  # the storage seam (wired by the network later)
        for worker in workers:
            net._projects.add_worker(worker)
        yield net, storage


@asynccontextmanager
async def media_socket(
    net: LocalNetwork, key: str | None = None, app_id: str = "media-app"
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Authenticated]]:
    """An authenticated raw socket; ``swarmLLMModels`` and (with media workers) ``swarmModels``
    are read after ``authenticated``."""
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            net.connect_in_memory(),  # type: ignore[arg-type]
            "localnet",
            f"/?appId={app_id}",
            extra_headers=[(b"api-key", (key or net.api_key).encode())],
            message_queue_size=100_000,
        )
        try:
            authenticated = await recv(ws)
            assert isinstance(authenticated, Authenticated)
            assert isinstance(await recv(ws), SwarmLLMModels)
            if net._projects.workers:
                assert isinstance(await recv(ws), SwarmModels)
            yield ws, authenticated
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def project_frames(
    ws: trio_websocket.WebSocketConnection, job_id: str, *, until: tuple[str, ...] = ()
) -> list[ServerMessage]:
    """Frames of project ``job_id`` until its ``jobCompleted`` / project ``jobError`` (or a
    frame whose type name is in ``until``)."""
    frames: list[ServerMessage] = []
    while True:
        message = decode_server_message(await ws.get_message())
        if getattr(message, "job_id", None) != job_id:
            continue
        frames.append(message)  # type: ignore[arg-type]
        kind = type(message).__name__
        if kind in until:
            return frames
        if kind == "JobState" and message.type == "jobCompleted":  # type: ignore[union-attr]
            return frames
        if kind == "JobError" and message.img_id is None:  # type: ignore[union-attr]
            return frames


async def rest(net: LocalNetwork, target: str, key: str | None = None) -> tuple[int, Any]:
    headers = {"api-key": key} if key else {}
    response = await net.handle_rest(HTTPRequest.build("GET", target, headers))
    return response.status, json.loads(response.body)
