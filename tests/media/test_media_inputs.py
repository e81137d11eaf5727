"""Media inputs: from bytes, a path or a data URI; content sniffing; role and size checks; the
upload through a signed URL (exact queries, streamed from disk, no credentials); refusals."""

from __future__ import annotations

import base64
import hashlib
import re
import tracemalloc
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
from media.fakeapi import SIGNATURE, FakeSogniAPI, mock_http, rest_client

from trio_sogni import APIStatusError, InvalidRequestError, ProtocolError
from trio_sogni._media._inputs import (
    CHUNK_SIZE,
    MediaInput,
    kind_of_role,
    media_input,
    sniff_content_type,
    upload_input,
)

UUID4 = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
MP3 = b"ID3\x04\x00" + bytes(200)


@pytest.mark.parametrize(
    ("head", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0", "image/png"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
        (b"\0\0\0\x20ftypisom\0\0", "video/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "video/webm"),
        (b"ID3\x04\0\0\0\0", "audio/mpeg"),
        (b"\xff\xfb\x90\x64\0\0", "audio/mpeg"),  # an MPEG audio frame sync
        (b"RIFF\x24\0\0\0WAVEfmt ", "audio/wav"),
        (b"fLaC\0\0\0\x22", "audio/flac"),
        (b"OggS\0\x02\0\0", "audio/ogg"),
        (b"GIF89a\0\0", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_content_types_are_sniffed_from_magic_bytes(head: bytes, content_type: str | None) -> None:
    assert sniff_content_type(head) == content_type


@pytest.mark.parametrize(
    ("role", "kind"),
    [
        ("startingImage", "image"),
        ("contextImage1", "image"),
        ("contextImage16", "image"),
        ("referenceImageEnd", "image"),
        ("referenceAudio", "audio"),
        ("referenceAudio2", "audio"),
        ("referenceVideo", "video"),
    ],
)
def test_roles_take_one_kind_of_media(role: str, kind: str) -> None:
    assert kind_of_role(role) == kind


@pytest.mark.parametrize("role", ["contextImage0", "contextImage17", "secret", "referenceVideo4"])
def test_unknown_roles_are_refused(role: str) -> None:
    with pytest.raises(InvalidRequestError, match="unknown media input role"):
        kind_of_role(role)


async def test_inputs_from_bytes_a_data_uri_and_a_path(tmp_path: Path) -> None:
    from_bytes = await media_input(PNG, "contextImage1")
    assert (from_bytes.content_type, from_bytes.size, from_bytes.data) == (
        "image/png",
        len(PNG),
        PNG,
    )
    # The declared type of a data URI is ignored: the bytes decide.
    uri = "data:image/jpeg;base64," + base64.b64encode(PNG).decode()
    from_uri = await media_input(uri, "startingImage")
    assert (from_uri.content_type, from_uri.data) == ("image/png", PNG)
    file = tmp_path / "song.bin"
    file.write_bytes(MP3)
    from_path = await media_input(file, "referenceAudio")
    assert (from_path.content_type, from_path.size, from_path.path, from_path.data) == (
        "audio/mpeg",
        len(MP3),
        file,
        None,
    )
    from_str = await media_input(str(file), "referenceAudio")
    assert from_str.path == file
    assert await media_input(from_path, "referenceAudio") is from_path
    assert "song.bin" in repr(from_path)
    assert repr(from_bytes) == f"MediaInput(image/png, {len(PNG)} bytes, bytes)"


@pytest.mark.parametrize(
    ("value", "role", "message"),
    [
        (b"", "contextImage1", "the media input is empty"),
        (b"%PDF-1.7 not media", "contextImage1", "not a supported type"),
        (MP3, "contextImage1", "contextImage1 takes image media"),
        (PNG, "referenceAudio", "referenceAudio takes audio media"),
        ("data:image/png,plain", "startingImage", "must be base64-encoded"),
        ("data:image/png;base64,***", "startingImage", "invalid base64"),
        ("data;nonsense", "startingImage", "cannot read the media input"),
        (12345, "startingImage", "must be bytes, a path or a data URI, not int"),
    ],
)
async def test_bad_inputs_are_refused(value: object, role: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        await media_input(value, role)  # type: ignore[arg-type]


async def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match=r"cannot read the media input .*nothing\.png"):
        await media_input(tmp_path / "nothing.png", "contextImage1")


async def test_sizes_are_checked_before_anything_is_read_or_sent(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="is 1000 bytes, more than 999 allowed"):
        await media_input(PNG + bytes(1000 - len(PNG)), "contextImage1", max_size=999)
    uri = "data:image/png;base64," + base64.b64encode(PNG + bytes(4000)).decode()
    with pytest.raises(InvalidRequestError, match="larger than 1000 bytes"):
        await media_input(uri, "contextImage1", max_size=1000)
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.write(PNG)
        file.truncate(10 * 1024 * 1024)  # sparse: nothing is written past the header
    with pytest.raises(InvalidRequestError, match=f"is {10 * 1024 * 1024} bytes, more than"):
        await media_input(big, "contextImage1", max_size=1024 * 1024)
    given = MediaInput.from_bytes(PNG)
    with pytest.raises(InvalidRequestError, match="more than 100 allowed"):
        await media_input(given, "contextImage1", max_size=100)


async def test_an_image_upload_asks_the_image_endpoint_then_puts_the_bytes() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        rest = rest_client(api, http)
        media = await media_input(PNG, "contextImage2")
        assert await upload_input(rest, "PROJECT-1", "contextImage2", media) == "image/png"
    (method, target), (put, put_target) = api.calls
    assert (method, urlsplit(target).path) == ("GET", "/v1/image/uploadUrl")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert sorted(query) == ["contentType", "imageId", "jobId", "type"]
    assert UUID4.match(query["imageId"])
    assert (query["jobId"], query["type"], query["contentType"]) == (
        "PROJECT-1",
        "contextImage2",
        "image/png",
    )
    assert put == "PUT"
    assert put_target.endswith(SIGNATURE)
    (upload,) = api.uploads
    assert (upload.data, upload.content_type, upload.length) == (PNG, "image/png", len(PNG))
    assert upload.headers["content-length"] == str(len(PNG))
    # The signed URL is the credential: none of ours goes to the storage host.
    assert "api-key" not in upload.headers
    assert "authorization" not in upload.headers


async def test_an_audio_upload_asks_the_media_endpoint() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = await media_input(MP3, "referenceAudio")
        await upload_input(rest_client(api, http), "PROJECT-2", "referenceAudio", media)
    target = api.calls[0][1]
    assert urlsplit(target).path == "/v1/media/uploadUrl"
    assert {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()} == {
        "jobId": "PROJECT-2",
        "type": "referenceAudio",
        "contentType": "audio/mpeg",
    }
    assert api.uploads[0].data == MP3


@pytest.mark.deadline(120)
async def test_a_file_upload_streams_from_disk_with_bounded_memory(tmp_path: Path) -> None:
    size = 24 * 1024 * 1024 + 123
    file = tmp_path / "clip.mp4"
    digest = hashlib.sha256()
    with file.open("wb") as out:
        head = b"\0\0\0\x20ftypisom" + bytes(20)
        out.write(head)
        digest.update(head)
        block = bytes(range(256)) * 4096
        left = size - len(head)
        while left:
            piece = block[: min(len(block), left)]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    api = FakeSogniAPI(keep_upload_bytes=0)
    async with mock_http(api) as http:
        rest = rest_client(api, http)
        media = await media_input(file, "referenceVideo")
        tracemalloc.start()
        try:
            await upload_input(rest, "PROJECT-3", "referenceVideo", media)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (upload,) = api.uploads
    assert (upload.length, upload.digest) == (size, digest.hexdigest())
    assert upload.content_type == "video/mp4"
    assert upload.headers["content-length"] == str(size)
    assert len(upload.chunk_sizes) >= size // CHUNK_SIZE
    assert max(upload.chunk_sizes) <= CHUNK_SIZE
    assert peak < 4 * 1024 * 1024, peak


async def test_a_file_that_shrinks_before_its_upload_fails_clearly(tmp_path: Path) -> None:
    file = tmp_path / "x.png"
    file.write_bytes(PNG)
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = await media_input(file, "startingImage")
        file.write_bytes(PNG[:20])
        with pytest.raises(InvalidRequestError, match="shrank while it was being uploaded"):
            await upload_input(rest_client(api, http), "P", "startingImage", media)


async def test_a_file_replaced_by_other_media_before_its_upload_fails_clearly(
    tmp_path: Path,
) -> None:
    file = tmp_path / "x.png"
    file.write_bytes(PNG)
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = await media_input(file, "startingImage")
        file.write_bytes(MP3[: len(PNG)])
        with pytest.raises(InvalidRequestError, match="changed while it was being uploaded"):
            await upload_input(rest_client(api, http), "P", "startingImage", media)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (413, "too large (HTTP 413)"),
        (415, "content type (HTTP 415)"),
        (403, "HTTP 403"),
        (500, "HTTP 500"),
    ],
)
async def test_a_refused_upload_is_typed_and_shows_no_signature(status: int, words: str) -> None:
    api = FakeSogniAPI(upload_status=status)
    async with mock_http(api) as http:
        media = await media_input(PNG, "startingImage")
        with pytest.raises(APIStatusError) as info:
            await upload_input(rest_client(api, http), "P", "startingImage", media)
    error = info.value
    assert error.status_code == status
    assert words in str(error)
    assert "startingImage" in str(error)
    for text in (
        str(error),
        repr(error),
        repr(error.payload),
        str(error.__cause__),
        str(error.__context__),
    ):
        assert "SECRETSIG" not in text
        assert "TEST-API-KEY" not in text


async def test_an_upload_url_answer_of_the_wrong_shape_is_a_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"url": "x"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        media = await media_input(PNG, "startingImage")
        with pytest.raises(ProtocolError, match="unexpected upload URL answer for startingImage"):
            await upload_input(rest_client(FakeSogniAPI(), http), "P", "startingImage", media)


async def test_an_upload_is_cancellable_mid_stream(tmp_path: Path) -> None:
    file = tmp_path / "big.png"
    with file.open("wb") as out:
        out.write(PNG)
        out.write(bytes(4 * 1024 * 1024))
    api = FakeSogniAPI(keep_upload_bytes=0)
    async with mock_http(api) as http:
        media = await media_input(file, "startingImage")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    upload_input, rest_client(api, http), "P", "startingImage", media
                )
                # Let the upload start, then cancel it while chunks are still flowing.
                while not any(method == "PUT" for method, _ in api.calls):
                    await trio.lowlevel.checkpoint()
                scope.cancel()
    assert scope.cancelled_caught
    assert api.uploads == []


async def test_a_file_that_grows_before_its_upload_fails_clearly(tmp_path: Path) -> None:
    file = tmp_path / "x.png"
    file.write_bytes(PNG)
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        media = await media_input(file, "startingImage")
        file.write_bytes(PNG + b"more")
        with pytest.raises(InvalidRequestError, match="grew while it was being uploaded"):
            await upload_input(rest_client(api, http), "P", "startingImage", media)


async def test_chunks_of_bytes_and_of_a_file_are_the_content(tmp_path: Path) -> None:
    data = PNG + bytes(CHUNK_SIZE * 2)
    file = tmp_path / "x.png"
    file.write_bytes(data)
    for media in (MediaInput.from_bytes(data), await MediaInput.from_path(file)):
        pieces = [chunk async for chunk in media.chunks()]
        assert b"".join(pieces) == data
        assert [len(p) for p in pieces] == [CHUNK_SIZE, CHUNK_SIZE, len(PNG)]


async def test_the_constructors_refuse_what_they_do_not_take() -> None:
    with pytest.raises(InvalidRequestError, match="must be bytes, a path or a data URI, not str"):
        MediaInput.from_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="must be a data: URI or a path"):
        MediaInput.from_data_uri("http://127.0.0.1/x.png")


async def test_an_upload_refuses_media_of_the_wrong_kind_for_its_role() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        with pytest.raises(
            InvalidRequestError, match="referenceVideo takes video media, not image/png"
        ):
            await upload_input(
                rest_client(api, http), "P", "referenceVideo", MediaInput.from_bytes(PNG)
            )
    assert api.calls == []
