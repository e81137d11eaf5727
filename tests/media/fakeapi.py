"""An in-test Sogni REST API over ``httpx.MockTransport`` (no sockets) that speaks the shapes the
official SDKs parse: the media model list and tiers (socket host), the upload-URL and
download-URL endpoints (REST host), and a signed-URL storage host for the PUTs and GETs.

Every host is a loopback address that nothing listens on: MockTransport answers in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import trio

from trio_sogni._transport import RestClient

REST = "http://127.0.0.1:8801"
SOCKET = "http://127.0.0.1:8802"
STORAGE = "http://127.0.0.1:8803"
SIGNATURE = "X-Signature=SECRETSIG0123456789"
"""The query every signed URL carries; no error, log or repr may show it."""

MODELS: list[dict[str, Any]] = [
    {
        "id": "flux1-schnell-fp8",
        "name": "Flux.1 Schnell",
        "SID": 101,
        "tier": "flux-schnell",
        "media": "image",
        "extraField": {"ignored": True},
    },
    {
        "id": "z_image_turbo_bf16",
        "name": "Z-Image Turbo",
        "SID": 102,
        "tier": "z-image",
        "media": "image",
    },
    {
        "id": "wan_v2.2-14b-fp8_t2v_lightx2v",
        "name": "Wan 2.2",
        "SID": 201,
        "tier": "wan",
        "media": "video",
    },
    {
        "id": "ace_step_1.5_turbo",
        "name": "ACE-Step 1.5",
        "SID": 301,
        "tier": "ace",
        "media": "audio",
    },
    {"id": "orphan-model", "name": "No tier", "SID": 9, "tier": "missing-tier", "media": "image"},
]

TIERS: dict[str, Any] = {
    "flux-schnell": {
        "type": "image",
        "benchmark": {"a": 1},
        "steps": {"min": 1, "max": 10, "default": 4},
        "guidance": {"min": 0, "max": 5, "default": 1, "decimals": 1},
        "width": {"min": 256, "max": 2048, "default": 1024},
        "height": {"min": 256, "max": 2048, "default": 1024},
        "sampler": {"allowed": ["Euler", "Euler a", "DPM++ 2M"], "default": "Euler"},
        "scheduler": {"allowed": ["Simple", "Karras"], "default": "Simple"},
        "unknownConstraint": [1, 2, 3],
    },
    "z-image": {
        "type": "image",
        "steps": {"min": 4, "max": 12, "default": 8},
        "guidance": {"min": 1, "max": 3, "default": 1.5},
        "comfySampler": {"allowed": ["euler", "res_multistep"], "default": "res_multistep"},
        "comfyScheduler": {"allowed": ["simple", "beta"], "default": "simple"},
    },
    "wan": {
        "type": "video",
        "steps": {"min": 4, "max": 8, "default": 4},
        "guidance": {"min": 1, "max": 2, "default": 1},
        "duration": {"min": 1, "max": 10, "default": 5},
        "fps": {"min": 16, "max": 32, "default": 16},
        "width": {"min": 480, "max": 1280, "default": 832},
        "height": {"min": 480, "max": 1280, "default": 480},
        "comfySampler": {"allowed": ["euler"], "default": "euler"},
        "comfyScheduler": {"allowed": ["simple"], "default": "simple"},
    },
    "ace": {
        "type": "audio",
        "steps": {"min": 4, "max": 16, "default": 8},
        "duration": {"min": 10, "max": 240, "default": 30},
        "bpm": {"min": 60, "max": 200, "default": 120},
        "timesignature": {"allowed": ["2", "3", "4", "6"], "default": "4"},
        "language": {"allowed": ["en", "ja"], "default": "en"},
        "keyscale": {"allowed": ["C major", "A minor"], "default": "C major"},
        "comfySampler": {"allowed": ["euler"], "default": "euler"},
        "comfyScheduler": {"allowed": ["simple"], "default": "simple"},
    },
    "broken-tier": {"type": "image", "steps": "not an object"},
}


class PatternStream(httpx.AsyncByteStream):
    """``size`` bytes of a repeating pattern, ``chunk`` at a time, made on the fly (one chunk
    object reused: the body is never in memory). ``reached`` is set once ``pause_after``
    bytes were sent, after which the stream waits on ``resume`` (if given); ``fail_after``
    raises a read error there instead."""

    def __init__(
        self,
        size: int,
        *,
        chunk: int = 64 * 1024,
        pause_after: int | None = None,
        resume: trio.Event | None = None,
        fail_after: int | None = None,
    ) -> None:
        self.size = size
        self.block = bytes(range(256)) * (chunk // 256)
        self.pause_after = pause_after
        self.resume = resume
        self.fail_after = fail_after
        self.reached = trio.Event()
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.size:
            if self.pause_after is not None and self.sent >= self.pause_after:
                self.reached.set()
                if self.resume is not None:
                    await self.resume.wait()
            if self.fail_after is not None and self.sent >= self.fail_after:
                raise httpx.ReadError("connection reset by the storage host")
            piece = self.block[: min(len(self.block), self.size - self.sent)]
            self.sent += len(piece)
            await trio.lowlevel.checkpoint()
            yield piece


def pattern_digest(size: int, chunk: int = 64 * 1024) -> str:
    block = bytes(range(256)) * (chunk // 256)
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        digest.update(piece)
        sent += len(piece)
    return digest.hexdigest()


@dataclass
class Upload:
    url: str
    content_type: str
    length: int
    digest: str
    chunk_sizes: list[int]
    headers: dict[str, str]
    data: bytes


@dataclass
class FakeSogniAPI:
    models: Any = field(default_factory=lambda: list(MODELS))
    tiers: Any = field(default_factory=lambda: dict(TIERS))
    calls: list[tuple[str, str]] = field(default_factory=list)
    """``(method, path?query)`` of every request, in order (storage requests included)."""
    catalog_gate: trio.Event | None = None
    """When set, the models-list answer waits for this event."""
    catalog_waiting: int = 0
    catalog_status: int = 200
    upload_status: int = 200
    uploads: list[Upload] = field(default_factory=list)
    blobs: dict[str, Callable[[], httpx.AsyncByteStream]] = field(default_factory=dict)
    blob_sizes: dict[str, int | None] = field(default_factory=dict)
    download_status: int = 200
    image_endpoint_says_media: bool = False
    keep_upload_bytes: int = 1 << 20

    def path_calls(self, prefix: str) -> list[str]:
        return [target for _, target in self.calls if target.startswith(prefix)]

    def add_blob(
        self, name: str, make: Callable[[], httpx.AsyncByteStream], size: int | None
    ) -> str:
        self.blobs[name] = make
        self.blob_sizes[name] = size
        return f"{STORAGE}/blob/{name}?{SIGNATURE}"

    async def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        target = url.raw_path.decode()
        self.calls.append((request.method, target))
        origin = f"{url.scheme}://{url.host}:{url.port}"
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        path = url.path
        if origin == SOCKET and path == "/api/v1/models/list":
            if self.catalog_gate is not None:
                self.catalog_waiting += 1
                await self.catalog_gate.wait()
            if self.catalog_status != 200:
                return httpx.Response(
                    self.catalog_status,
                    json={"status": "error", "message": "catalog unavailable", "errorCode": 1},
                )
            return httpx.Response(200, content=msgspec.json.encode(self.models))
        if origin == SOCKET and path == "/api/v2/models/tiers":
            return httpx.Response(200, content=msgspec.json.encode(self.tiers))
        if origin == REST and path in ("/v1/image/uploadUrl", "/v1/media/uploadUrl"):
            name = f"up-{len(self.calls)}"
            return httpx.Response(
                200,
                json={
                    "status": "success",
                    "data": {"uploadUrl": f"{STORAGE}/put/{name}?{SIGNATURE}"},
                },
            )
        if origin == STORAGE and request.method == "PUT":
            digest = hashlib.sha256()
            sizes: list[int] = []
            kept = bytearray()
            async for chunk in request.stream:  # type: ignore[union-attr]
                sizes.append(len(chunk))
                digest.update(chunk)
                if len(kept) < self.keep_upload_bytes:
                    kept += chunk[: self.keep_upload_bytes - len(kept)]
            self.uploads.append(
                Upload(
                    url=str(url),
                    content_type=request.headers.get("content-type", ""),
                    length=sum(sizes),
                    digest=digest.hexdigest(),
                    chunk_sizes=sizes,
                    headers=dict(request.headers),
                    data=bytes(kept),
                )
            )
            if self.upload_status != 200:
                body = f"<Error><Code>Refused</Code><Url>{url}</Url></Error>".encode()
                return httpx.Response(self.upload_status, content=body)
            return httpx.Response(200)
        if origin == REST and path == "/v1/image/downloadUrl":
            if self.image_endpoint_says_media:
                return httpx.Response(
                    404,
                    json={
                        "status": "error",
                        "message": "This result is media: use /v1/media/downloadUrl",
                        "errorCode": 404,
                    },
                )
            return self._download_answer(query["jobId"], query["imageId"])
        if origin == REST and path == "/v1/media/downloadUrl":
            return self._download_answer(query["jobId"], query["id"])
        if origin == STORAGE and request.method == "GET" and path.startswith("/blob/"):
            if self.download_status != 200:
                return httpx.Response(self.download_status, content=b"<Error>AccessDenied</Error>")
            name = path.removeprefix("/blob/")
            size = self.blob_sizes[name]
            headers = {"content-type": "application/octet-stream"}
            if size is not None:
                headers["content-length"] = str(size)
            return httpx.Response(200, headers=headers, stream=self.blobs[name]())
        return httpx.Response(
            404, json={"status": "error", "message": "no route", "errorCode": 404}
        )

    def _download_answer(self, job_id: str, render_id: str) -> httpx.Response:
        url = f"{STORAGE}/blob/{job_id}-{render_id}?{SIGNATURE}"
        return httpx.Response(200, json={"status": "success", "data": {"downloadUrl": url}})


async def credentials() -> dict[str, str]:
    return {"api-key": "TEST-API-KEY-secret"}


def rest_client(api: FakeSogniAPI, http: httpx.AsyncClient) -> RestClient:
    return RestClient(REST, SOCKET, credentials, http)


class StreamingMockTransport(httpx.AsyncBaseTransport):
    """Like ``httpx.MockTransport``, but the handler gets the request body unread (the mock
    transport reads it all first), so a test sees an upload's chunks as they are sent."""

    def __init__(self, handler: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> None:
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._handler(request)
        response.request = request
        return response


def mock_http(api: FakeSogniAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingMockTransport(api.handler))
