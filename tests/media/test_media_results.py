"""MediaResult: download URL resolution (image and media endpoints, the image endpoint's
media fallback, a result URL given by the frame), bounded reads, streamed atomic saves (a 50 MB
body under a tracemalloc bound), and cancellation or failure mid-download leaving no file."""

from __future__ import annotations

import hashlib
import os
import stat
import tracemalloc
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
import trio.testing
from media.fakeapi import (
    SIGNATURE,
    STORAGE,
    FakeSogniAPI,
    PatternStream,
    mock_http,
    pattern_digest,
    rest_client,
)

from trio_sogni import (
    APIError,
    APIStatusError,
    ProjectError,
    ProtocolError,
    SogniError,
    TransportError,
)
from trio_sogni._media._request import MediaType
from trio_sogni._media._results import MediaResult


def result(
    api: FakeSogniAPI, http: httpx.AsyncClient, media_type: MediaType = "image", **kwargs: object
) -> MediaResult:
    return MediaResult(
        rest_client(api, http),
        project_id="PROJ",
        render_id="IMG1",
        media_type=media_type,
        **kwargs,  # type: ignore[arg-type]
    )


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def query_of(target: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}


def serve(
    api: FakeSogniAPI, size: int, name: str = "PROJ-IMG1", **stream: object
) -> list[PatternStream]:
    made: list[PatternStream] = []

    def make() -> PatternStream:
        made.append(PatternStream(size, **stream))  # type: ignore[arg-type]
        return made[-1]

    api.add_blob(name, make, size)
    return made


async def test_an_image_url_comes_from_the_image_endpoint() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        url = await result(api, http).url()
        await result(api, http, output_format="jpg").url()
    assert url == f"{STORAGE}/blob/PROJ-IMG1?{SIGNATURE}"
    (first, second) = (target for _, target in api.calls)
    assert urlsplit(first).path == "/v1/image/downloadUrl"
    assert query_of(first) == {"jobId": "PROJ", "imageId": "IMG1", "type": "complete"}
    assert query_of(second) == {
        "jobId": "PROJ",
        "imageId": "IMG1",
        "type": "complete",
        "contentType": "image/jpeg",
    }


@pytest.mark.parametrize(
    ("media_type", "output_format", "query"),
    [
        ("video", None, {"jobId": "PROJ", "id": "IMG1", "type": "complete"}),
        (
            "audio",
            None,
            {"jobId": "PROJ", "id": "IMG1", "type": "complete", "contentType": "audio/mpeg"},
        ),
        (
            "audio",
            "wav",
            {"jobId": "PROJ", "id": "IMG1", "type": "complete", "contentType": "audio/wav"},
        ),
    ],
)
async def test_video_and_audio_urls_come_from_the_media_endpoint(
    media_type: MediaType, output_format: str | None, query: dict[str, str]
) -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        await result(api, http, media_type, output_format=output_format).url()
    ((_, target),) = api.calls
    assert urlsplit(target).path == "/v1/media/downloadUrl"
    assert query_of(target) == query


async def test_the_image_endpoint_can_send_a_result_to_the_media_endpoint() -> None:
    api = FakeSogniAPI(image_endpoint_says_media=True)
    async with mock_http(api) as http:
        assert (await result(api, http).url()).startswith(f"{STORAGE}/blob/PROJ-IMG1")
    assert [urlsplit(t).path for _, t in api.calls] == [
        "/v1/image/downloadUrl",
        "/v1/media/downloadUrl",
    ]


async def test_other_refusals_of_the_download_url_are_raised() -> None:
    async def gone(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"status": "error", "message": "no such result", "errorCode": 404}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(gone)) as http:
        with pytest.raises(APIStatusError, match="no such result") as info:
            await result(FakeSogniAPI(), http).url()
    assert info.value.status_code == 404


async def test_a_download_url_answer_of_the_wrong_shape_is_a_protocol_error() -> None:
    async def bad_shape(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(bad_shape)) as http:
        with pytest.raises(ProtocolError, match="unexpected download URL answer"):
            await result(FakeSogniAPI(), http, "audio").url()


async def test_a_result_url_from_the_frame_is_used_as_is() -> None:
    api = FakeSogniAPI()
    serve(api, 1000)
    async with mock_http(api) as http:
        given = f"{STORAGE}/blob/PROJ-IMG1?{SIGNATURE}"
        media = result(api, http, result_url=given)
        assert await media.url() == given
        assert len(await media.read()) == 1000
    assert [method for method, _ in api.calls] == ["GET"]
    assert api.calls[0][1].startswith("/blob/")


async def test_read_returns_the_body_and_the_attributes_hold_the_frame() -> None:
    api = FakeSogniAPI()
    serve(api, 200_000)
    async with mock_http(api) as http:
        media = result(
            api,
            http,
            output_format="webp",
            seed=42,
            nsfw_detected=True,
            performed_steps=4,
            last_frame_url=None,
        )
        body = await media.read()
    assert hashlib.sha256(body).hexdigest() == pattern_digest(200_000)
    assert (
        media.content_type,
        media.seed,
        media.nsfw,
        media.nsfw_detected,
        media.performed_steps,
    ) == (
        "image/webp",
        42,
        False,
        True,
        4,
    )
    assert repr(media) == "<MediaResult image project=PROJ render=IMG1 image/webp seed=42>"


@pytest.mark.parametrize("declared", [True, False])
async def test_read_refuses_a_body_over_max_size(declared: bool) -> None:
    api = FakeSogniAPI()
    streams = serve(api, 10 * 1024 * 1024)
    if not declared:
        api.blob_sizes["PROJ-IMG1"] = None
    async with mock_http(api) as http:
        with pytest.raises(TransportError, match="larger than 1000000 bytes"):
            await result(api, http).read(max_size=1_000_000)
    # Refused without reading on: at most one chunk past the limit (none when declared).
    sent = streams[0].sent if streams else 0
    assert sent <= 1_000_000 + 64 * 1024
    if declared:
        assert sent == 0


async def test_a_withheld_render_raises_project_error_without_a_request() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = result(api, http, nsfw=True)
        for call in (media.url, media.read):
            with pytest.raises(ProjectError) as info:
                await call()
            error = info.value
            assert (error.nsfw, error.project_id, error.img_id, error.code) == (
                True,
                "PROJ",
                "IMG1",
                "nsfw",
            )
            assert isinstance(error, APIError)
            assert isinstance(error, SogniError)
        with pytest.raises(ProjectError):
            await media.save(Path("unused"))
    assert api.calls == []
    assert "nsfw" in repr(media)


async def test_a_refused_download_shows_no_signature() -> None:
    api = FakeSogniAPI(download_status=403)
    serve(api, 10)
    async with mock_http(api) as http:
        with pytest.raises(APIStatusError) as info:
            await result(api, http).read()
    assert info.value.status_code == 403
    assert "HTTP 403" in str(info.value)
    assert "/blob/PROJ-IMG1" in str(info.value)
    for text in (
        str(info.value),
        repr(info.value),
        str(info.value.__cause__),
        str(info.value.__context__),
    ):
        assert "SECRETSIG" not in text


@pytest.mark.deadline(120)
async def test_save_streams_50_mb_to_disk_with_bounded_memory(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    api = FakeSogniAPI()
    serve(api, size)
    target = tmp_path / "fox.png"
    target.write_bytes(b"old content")
    async with mock_http(api) as http:
        media = result(api, http)
        tracemalloc.start()
        try:
            saved = await media.save(target)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert saved == target
    assert peak < 2 * 1024 * 1024, peak
    digest = hashlib.sha256()
    with target.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    assert (target.stat().st_size, digest.hexdigest()) == (size, pattern_digest(size))
    assert names(tmp_path) == ["fox.png"]


async def test_save_into_a_directory_names_the_file(tmp_path: Path) -> None:
    api = FakeSogniAPI()
    serve(api, 1234)
    async with mock_http(api) as http:
        saved = await result(api, http, "audio", output_format="flac").save(tmp_path)
    assert saved == tmp_path / "PROJ-IMG1.flac"
    assert saved.stat().st_size == 1234
    # The mode a new file gets (mkstemp's 0600 would hide it from the user's other tools).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o666 & ~umask


async def test_ids_from_the_server_cannot_escape_the_directory(tmp_path: Path) -> None:
    api = FakeSogniAPI()
    inside = tmp_path / "out"
    inside.mkdir()
    async with mock_http(api) as http:
        media = MediaResult(
            rest_client(api, http),
            project_id="../..",
            render_id="x/y z",
            media_type="image",
            result_url=f"{STORAGE}/blob/r?{SIGNATURE}",
        )
        api.add_blob("r", lambda: PatternStream(10), 10)
        saved = await media.save(inside)
    assert saved == inside / "_..-x_y_z.png"
    assert names(inside) == ["_..-x_y_z.png"]
    assert names(tmp_path) == ["out"]


@pytest.mark.parametrize("declared", [True, False])
async def test_save_refuses_a_body_over_max_size_and_leaves_nothing(
    tmp_path: Path, declared: bool
) -> None:
    api = FakeSogniAPI()
    serve(api, 3 * 1024 * 1024)
    if not declared:
        api.blob_sizes["PROJ-IMG1"] = None
    async with mock_http(api) as http:
        with pytest.raises(TransportError, match="larger than 1048576 bytes"):
            await result(api, http).save(tmp_path / "x.png", max_size=1024 * 1024)
    assert names(tmp_path) == []


async def test_cancelling_save_mid_download_leaves_no_file(tmp_path: Path) -> None:
    api = FakeSogniAPI()
    streams = serve(api, 8 * 1024 * 1024, pause_after=2 * 1024 * 1024, resume=trio.Event())
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous")
    async with mock_http(api) as http:
        media = result(api, http, "video")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(media.save, target)
                while not streams or not streams[0].reached.is_set():
                    await trio.testing.wait_all_tasks_blocked()
                # The partial file exists now, next to the target...
                assert any(name.endswith(".part") for name in names(tmp_path))
                scope.cancel()
    assert scope.cancelled_caught
    # ...and is gone; the old target is untouched.
    assert names(tmp_path) == ["clip.mp4"]
    assert target.read_bytes() == b"previous"


async def test_a_download_that_breaks_leaves_no_file(tmp_path: Path) -> None:
    api = FakeSogniAPI()
    serve(api, 4 * 1024 * 1024, fail_after=1024 * 1024)
    async with mock_http(api) as http:
        with pytest.raises(TransportError, match="ReadError") as info:
            await result(api, http, "video").save(tmp_path / "clip.mp4")
    assert "SECRETSIG" not in str(info.value)
    assert info.value.__context__ is None
    assert names(tmp_path) == []


async def test_read_and_save_take_a_positive_max_size(tmp_path: Path) -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = result(api, http)
        with pytest.raises(ValueError, match="max_size"):
            await media.read(max_size=0)
        with pytest.raises(ValueError, match="max_size"):
            await media.save(tmp_path, max_size=0)
