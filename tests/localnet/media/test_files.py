"""The media file routes over localnet: download and upload URLs, the signed file endpoints,
their refusals (401/403/404/413/415/429), and the official Python SDK's calls to them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import trio
from helpers import InMemoryHTTP
from PIL import Image
from sogni_client import SogniClient

from trio_sogni.localnet import LocalNetwork, open_local_network
from trio_sogni.localnet._media._files import MEDIA_REFUSAL, media_file_routes, request_base_url
from trio_sogni.localnet._media._render import RenderedMedia, RenderSpec, SimulatedMediaWorker
from trio_sogni.localnet._media._storage import CHUNK_SIZE, MediaStorage
from trio_sogni.localnet._server import HTTPRequest


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Media:
    net: LocalNetwork
    storage: MediaStorage
    clock: Clock
    http: httpx.AsyncClient

    @property
    def account(self) -> str:
        return self.net.account.id

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"api-key": key or self.net.api_key}


@asynccontextmanager
async def media_network(**limits: int) -> AsyncIterator[Media]:
    clock = Clock()
    storage = MediaStorage(clock=clock, url_ttl=60, upload_ttl=60, max_pending_uploads=3)
    try:
        async with open_local_network() as net:
            # This storage and these limits, ahead of the network's own file routes.
            routes = media_file_routes(
                storage, net.authenticate, base_url=lambda: net.rest_url, **limits
            )
            routes.include(net.rest.router)
            net.rest.router = routes
            async with httpx.AsyncClient(base_url=net.rest_url) as http:
                yield Media(net, storage, clock, http)
    finally:
        storage.close()


async def rendered(media_type: str = "image", fmt: str = "png") -> RenderedMedia:
    spec = RenderSpec(
        media_type=media_type,  # type: ignore[arg-type]
        model_id="m",
        prompt="a red fox",
        seed=5,
        width=96,
        height=64,
        frames=3,
        duration=0.2,
        output_format=fmt,
    )

    async def on_step(step: int, count: int) -> None:
        pass

    return await SimulatedMediaWorker().render(spec, on_step)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **changes}
    return parts._replace(query=urlencode(query)).geturl()


async def test_an_image_result_is_downloaded_through_a_signed_url() -> None:
    async with media_network() as m:
        image = await rendered()
        await m.storage.store_result(m.account, "P1", "R1", image)
        params = {"jobId": "P1", "imageId": "R1", "type": "complete", "contentType": "image/png"}
        answer = await m.http.get("/v1/image/downloadUrl", params=params, headers=m.auth())
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "success"
        url = body["data"]["downloadUrl"]
        assert url.startswith(f"{m.net.rest_url}/localnet/media/files/")
        async with httpx.AsyncClient() as plain:  # no credentials: the signature is one
            file = await plain.get(url)
        assert file.status_code == 200
        assert file.content == image.data
        assert file.headers["content-type"] == "image/png"
        assert file.headers["content-length"] == str(image.size)
        assert Image.open(io.BytesIO(file.content)).size == (96, 64)
        # The request log keeps no signature.
        logged = [r for r in m.net.http_requests if r.path.startswith("/localnet/media/")]
        assert logged[0].query["signature"] == "<redacted>"
        assert logged[0].status == 200


async def test_video_and_audio_results_come_from_the_media_endpoint() -> None:
    async with media_network() as m:
        video = await rendered("video", "mp4")
        await m.storage.store_result(m.account, "P", "V", video)
        refused = await m.http.get(
            "/v1/image/downloadUrl",
            params={"jobId": "P", "imageId": "V", "type": "complete"},
            headers=m.auth(),
        )
        assert refused.status_code == 404
        assert refused.json()["message"] == MEDIA_REFUSAL
        answer = await m.http.get(
            "/v1/media/downloadUrl",
            params={"jobId": "P", "id": "V", "type": "complete"},
            headers=m.auth(),
        )
        assert answer.status_code == 200
        file = await m.http.get(answer.json()["data"]["downloadUrl"])
        assert file.content == video.data
        assert file.headers["content-type"] == "video/mp4"


async def test_unknown_and_foreign_results_are_the_same_404() -> None:
    async with media_network() as m:
        await m.storage.store_result(m.account, "P", "R", await rendered())
        m.net.add_account("bob", password="bob-password")
        bob = m.net.create_api_key("bob")
        params = {"jobId": "P", "imageId": "R", "type": "complete"}
        foreign = await m.http.get("/v1/image/downloadUrl", params=params, headers=m.auth(bob))
        unknown = await m.http.get(
            "/v1/image/downloadUrl", params={**params, "imageId": "X"}, headers=m.auth()
        )
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json() == unknown.json()
        anonymous = await m.http.get("/v1/image/downloadUrl", params=params)
        assert anonymous.status_code == 401
        for bad in ({"jobId": "P"}, {**params, "type": "preview"}, {**params, "jobId": "x" * 129}):
            answer = await m.http.get("/v1/image/downloadUrl", params=bad, headers=m.auth())
            assert answer.status_code == 400, bad


async def test_a_tampered_or_expired_download_url_is_403() -> None:
    async with media_network() as m:
        await m.storage.store_result(m.account, "P", "R", await rendered())
        answer = await m.http.get(
            "/v1/image/downloadUrl",
            params={"jobId": "P", "imageId": "R", "type": "complete"},
            headers=m.auth(),
        )
        url = answer.json()["data"]["downloadUrl"]
        expires = dict(parse_qsl(urlsplit(url).query))["expires"]
        for tampered in (
            with_query(url, expires=str(int(expires) + 100)),
            with_query(url, signature="ab" * 32),
            url.replace("/files/", "/files/x"),
        ):
            assert (await m.http.get(tampered)).status_code == 403
        m.clock.now += 60
        expired = await m.http.get(url)
        assert expired.status_code == 403
        assert expired.json()["message"] == "This URL has expired"


async def test_urls_follow_the_host_the_client_used() -> None:
    async with media_network() as m:
        await m.storage.store_result(m.account, "P", "R", await rendered())
        params = {"jobId": "P", "imageId": "R", "type": "complete"}
        named = await m.http.get(
            "/v1/image/downloadUrl",
            params=params,
            headers={**m.auth(), "host": f"localhost:{m.net.port}"},
        )
        assert named.json()["data"]["downloadUrl"].startswith(f"http://localhost:{m.net.port}/")
    request = HTTPRequest.build("GET", "/", {"host": "evil host/x"})
    assert request_base_url(request, lambda: "http://fallback:1") == "http://fallback:1"
    for host, expected in [
        ("[::1]:8080", "http://[::1]:8080"),
        ("a.b-c.example", "http://a.b-c.example"),
        ("127.0.0.1:99999", "http://fallback:1"),
        ("x:1\r\nset-cookie: a", "http://fallback:1"),
    ]:
        built = HTTPRequest.build("GET", "/", {"host": host})
        assert request_base_url(built, lambda: "http://fallback:1") == expected


async def test_large_files_stream_in_pieces() -> None:
    async with media_network() as m:
        data = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)
        big = RenderedMedia(
            media_type="image", data=data, content_type="image/png", output_format="png"
        )
        await m.storage.store_result(m.account, "P", "R", big)
        answer = await m.http.get(
            "/v1/image/downloadUrl",
            params={"jobId": "P", "imageId": "R", "type": "complete"},
            headers=m.auth(),
        )
        received = bytearray()
        pieces = 0
        async with m.http.stream("GET", answer.json()["data"]["downloadUrl"]) as response:
            assert response.headers["content-length"] == str(len(data))
            async for piece in response.aiter_raw():
                received += piece
                pieces += 1
        assert bytes(received) == data
        assert pieces >= 2


async def test_an_evicted_file_is_404() -> None:
    async with media_network() as m:
        await m.storage.store_result(m.account, "P", "R", await rendered())
        answer = await m.http.get(
            "/v1/image/downloadUrl",
            params={"jobId": "P", "imageId": "R", "type": "complete"},
            headers=m.auth(),
        )
        await m.storage.store_result(m.account, "P", "R", await rendered("image", "jpg"))
        assert (await m.http.get(answer.json()["data"]["downloadUrl"])).status_code == 404


async def upload_url(
    m: Media, endpoint: str = "image", key: str | None = None, **query: str
) -> httpx.Response:
    params = {"jobId": "P", "type": "contextImage1", "contentType": "image/png", **query}
    if endpoint == "image":
        params.setdefault("imageId", "IMG")
    return await m.http.get(f"/v1/{endpoint}/uploadUrl", params=params, headers=m.auth(key))


async def test_an_upload_reaches_the_account_that_asked_only() -> None:
    async with media_network() as m:
        answer = await upload_url(m)
        assert answer.status_code == 200
        url = answer.json()["data"]["uploadUrl"]
        assert url.startswith(f"{m.net.rest_url}/localnet/media/uploads/")
        put = await m.http.put(url, content=b"\x89PNG fake", headers={"content-type": "image/png"})
        assert put.status_code == 200
        assert put.json() == {"status": "success"}
        upload = await m.storage.read_upload(m.account, "P", "contextImage1")
        assert upload is not None
        assert upload.data == b"\x89PNG fake"
        m.net.add_account("bob", password="bob-password")
        assert await m.storage.read_upload("bob", "P", "contextImage1") is None
        again = await m.http.put(url, content=b"x", headers={"content-type": "image/png"})
        assert again.status_code == 404  # a slot takes one upload


async def test_upload_refusals() -> None:
    async with media_network(image_upload_limit=1000) as m:
        url = (await upload_url(m)).json()["data"]["uploadUrl"]
        png = {"content-type": "image/png"}
        wrong_type = await m.http.put(url, content=b"x", headers={"content-type": "image/gif"})
        assert wrong_type.status_code == 415
        no_type = await m.http.put(url, content=b"x")
        assert no_type.status_code == 415
        too_big = await m.http.put(url, content=b"x" * 1001, headers=png)
        assert too_big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):  # no Content-Length: the limit is enforced while reading
                yield b"y" * 400

        streamed = await m.http.put(url, content=chunks(), headers=png)
        assert streamed.status_code == 413
        assert (
            await m.http.put(with_query(url, signature="0" * 64), content=b"x", headers=png)
        ).status_code == 403
        assert (
            await m.http.put(url.replace("/uploads/", "/uploads/z"), content=b"x", headers=png)
        ).status_code == 403
        assert await m.storage.read_upload(m.account, "P", "contextImage1") is None
        ok = await m.http.put(url, content=b"x" * 1000, headers=png)
        assert ok.status_code == 200
        m.clock.now += 60
        late_url = (await upload_url(m)).json()["data"]["uploadUrl"]
        m.clock.now += 60
        expired = await m.http.put(late_url, content=b"x", headers=png)
        assert expired.status_code == 403


async def _answer_to(m: Media, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` on a raw in-memory connection, never finishing the body, and
    return what the server answers before closing."""
    stream = m.net.connect_in_memory()
    async with stream:
        await stream.send_all(head + body)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_an_upload_is_refused_without_reading_past_its_limit() -> None:
    async with media_network(image_upload_limit=1000) as m:
        url = urlsplit((await upload_url(m)).json()["data"]["uploadUrl"])
        target = f"{url.path}?{url.query}".encode()
        # A declared length over the limit: answered before any byte of the body is sent.
        declared = await _answer_to(
            m,
            b"PUT " + target + b" HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n"
            b"content-length: 5000\r\n\r\n",
            b"",
        )
        assert declared.startswith(b"HTTP/1.1 413 ")
        # A chunked body that never ends: answered once 1001 bytes are in, the rest never read.
        chunked = await _answer_to(
            m,
            b"PUT " + target + b" HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n"
            b"transfer-encoding: chunked\r\n\r\n",
            b"3e9\r\n" + b"z" * 1001 + b"\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 413 ")
        assert b"Request body too large" in chunked
        # A wrong content type: answered from the head alone.
        wrong = await _answer_to(
            m,
            b"PUT " + target + b" HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n"
            b"content-length: 10\r\n\r\n",
            b"",
        )
        assert wrong.startswith(b"HTTP/1.1 415 ")
        assert await m.storage.read_upload(m.account, "P", "contextImage1") is None


async def test_the_in_process_path_checks_uploads_too() -> None:
    """``RestAPI.handle`` (no socket, so no admission step) makes the same checks."""
    async with media_network(image_upload_limit=10) as m:
        url = (await upload_url(m)).json()["data"]["uploadUrl"]
        async with httpx.AsyncClient(transport=InMemoryHTTP(m.net)) as memory:
            assert (
                await memory.put(url, content=b"x" * 11, headers={"content-type": "image/png"})
            ).status_code == 413
            assert (
                await memory.put(url, content=b"x", headers={"content-type": "image/gif"})
            ).status_code == 415
        target = urlsplit(url)
        request = HTTPRequest.build(
            "PUT", f"{target.path}?{target.query}", {"content-type": "image/png"}, b"x" * 11
        )
        assert (await m.net.handle_rest(request)).status == 413
        request = HTTPRequest.build(
            "PUT", f"{target.path}?{target.query}", {"content-type": "image/png"}, b"x" * 10
        )
        assert (await m.net.handle_rest(request)).status == 200


async def test_routes_without_admission_read_bodies_under_the_server_limit() -> None:
    async with media_network() as m:
        router = m.net.rest.router
        head = HTTPRequest.build("PUT", "/localnet/media/uploads/x?expires=1&signature=0")
        verdict = router.admit(head)
        assert verdict is not None
        assert not isinstance(verdict, int)
        assert verdict.status == 403
        assert router.admit(HTTPRequest.build("GET", "/v1/account/me")) is None
        assert router.admit(HTTPRequest.build("POST", "/no/such/route")) is None
        assert m.net.rest.admit(HTTPRequest.build("GET", "/v1/image/uploadUrl")) is None


async def test_upload_url_requests_are_validated() -> None:
    async with media_network() as m:
        assert (await upload_url(m, contentType="text/html")).status_code == 415
        assert (await upload_url(m, type="../x")).status_code == 400
        assert (await upload_url(m, jobId="")).status_code == 400
        assert (
            await m.http.get("/v1/image/uploadUrl", params={"jobId": "P", "type": "r"})
        ).status_code == 401
        audio = await upload_url(m, "media", type="referenceAudio", contentType="audio/mpeg")
        assert audio.status_code == 200
        assert (
            await upload_url(m, "media", type="referenceAudio", contentType="image/png")
        ).status_code == 415
        video = await upload_url(m, "media", type="referenceVideo1", contentType="video/mp4")
        assert video.status_code == 200
        # Without contentType any type of the endpoint is allowed; the PUT must name one.
        free = (await upload_url(m, contentType="")).json()["data"]["uploadUrl"]
        # Three slots are pending now: the fourth is refused.
        assert (await upload_url(m)).status_code == 429
        put = await m.http.put(free, content=b"GIF89a", headers={"content-type": "image/gif"})
        assert put.status_code == 200
        assert (await upload_url(m)).status_code == 200


async def run_sdk(rest_url: str, socket_url: str, api_key: str) -> dict[str, Any]:
    client = await SogniClient.create(
        app_id="official-sdk-media-files",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        upload = await client.projects.upload_url(
            {"imageId": "I1", "jobId": "P-SDK", "type": "startingImage", "contentType": "image/png"}
        )
        await client.projects.client.rest.put_bytes(
            upload, b"\x89PNG sdk bytes", content_type="image/png"
        )
        media_upload = await client.projects.media_upload_url(
            {"jobId": "P-SDK", "type": "referenceAudio", "contentType": "audio/mpeg"}
        )
        await client.projects.client.rest.put_bytes(
            media_upload, b"ID3 sdk audio", content_type="audio/mpeg"
        )
        image_url = await client.projects.download_url(
            {"jobId": "P-SDK", "imageId": "R1", "type": "complete"}
        )
        audio_url = await client.projects.media_download_url(
            {"jobId": "P-SDK", "id": "R2", "type": "complete", "contentType": "audio/mpeg"}
        )
        return {
            "image": await client.projects.client.rest.get_bytes(image_url),
            "audio": await client.projects.client.rest.get_bytes(audio_url),
        }
    finally:
        await client.aclose()


async def test_the_official_sdk_uploads_and_downloads() -> None:
    async with media_network() as m:
        image = await rendered()
        audio = await rendered("audio", "mp3")
        await m.storage.store_result(m.account, "P-SDK", "R1", image)
        await m.storage.store_result(m.account, "P-SDK", "R2", audio)
        out = await trio.to_thread.run_sync(
            asyncio.run, run_sdk(m.net.rest_url, m.net.socket_url, m.net.api_key)
        )
        await m.net.wait_until(lambda: m.net.connected_sockets == 0)
        assert out == {"image": image.data, "audio": audio.data}
        starting = await m.storage.read_upload(m.account, "P-SDK", "startingImage")
        reference = await m.storage.read_upload(m.account, "P-SDK", "referenceAudio")
        assert starting is not None
        assert reference is not None
        assert (starting.data, reference.data) == (b"\x89PNG sdk bytes", b"ID3 sdk audio")
        assert not m.net.errors
