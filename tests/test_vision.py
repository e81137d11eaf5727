"""Vision inputs, unit level: PNG/JPEG pixel sizes read without Pillow, the trusted-host rules,
the image fetcher over ``httpx.MockTransport`` (no network at all), resizing, `inline_images`
and `trio_sogni.image_part`.

Images are generated with Pillow (the ``media`` extra, installed for the tests); the code under
test reads sizes without it.
"""

from __future__ import annotations

import ast
import base64
import gzip
import io
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from PIL import Image

import trio_sogni
from trio_sogni import (
    ConnectError,
    InvalidRequestError,
    TransportError,
    image_part,
    validate_messages,
)
from trio_sogni._images import (
    MAX_IMAGE_BYTES,
    check_trusted_url,
    image_size,
    parse_data_uri,
)
from trio_sogni._transport._rest import RestClient
from trio_sogni._vision import ImageFetcher, inline_images, resize_image
from trio_sogni.protocol import ChatMessage, ImageURLPart

SECRET = "X-Amz-Signature=s3cr3t-signature"


# --- image makers --------------------------------------------------------------------------------


def png(size: tuple[int, int], mode: str = "RGB", color: Any = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(size: tuple[int, int], **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def exif(orientation: int) -> bytes:
    data = Image.Exif()
    data[0x0112] = orientation
    return data.tobytes()


def uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def user(*urls: str, detail: str | None = None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "look"}]
    for url in urls:
        image: dict[str, Any] = {"url": url}
        if detail is not None:
            image["detail"] = detail
        parts.append({"type": "image_url", "image_url": image})
    return [{"role": "user", "content": parts}]


def decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk only: a tiny, corrupt file declaring any size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


# --- pixel sizes without Pillow -----------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1024, 1024), (1025, 3), (3, 1025), (2000, 1000)])
def test_png_sizes(size: tuple[int, int]) -> None:
    assert image_size(png(size)) == size


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"progressive": True},
        {"exif": exif(6)},
        {"restart_marker_blocks": 1},
        {"progressive": True, "exif": exif(3), "restart_marker_rows": 1},
        {"icc_profile": b"\0" * 70_000},  # several APP2 segments before the frame header
    ],
    ids=["baseline", "progressive", "exif", "restart-markers", "everything", "big-app2"],
)
@pytest.mark.parametrize("size", [(1, 1), (1024, 768), (1025, 1025), (700, 2000)])
def test_jpeg_sizes(options: dict[str, Any], size: tuple[int, int]) -> None:
    data = jpeg(size, **options)
    assert image_size(data) == size


def test_jpeg_progressive_uses_sof2() -> None:
    data = jpeg((30, 20), progressive=True)
    assert b"\xff\xc2" in data
    assert b"\xff\xc0" not in data
    assert image_size(data) == (30, 20)


def test_jpeg_fill_bytes_and_standalone_markers_before_the_frame() -> None:
    data = jpeg((33, 44))
    # 0xFF fill bytes before a marker, and a stray restart marker between segments
    doctored = data[:2] + b"\xff\xd3" + b"\xff\xff\xff" + data[2:]
    assert image_size(doctored) == (33, 44)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IDAT" + b"\0" * 12, "IHDR"),
        (png_header(0, 5), "invalid size"),
        (b"\xff\xd8\xff", "truncated"),
        (b"\xff\xd8\xff\xe0\x00", "truncated"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
        (b"\xff\xd8\xff\xe0\x00\x04\x00\x00\x12", "no marker"),
        (b"\xff\xd8\xff\xda\x00\x08", "scan data"),
        (b"\xff\xd8\xff\xd9", "EOI"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03", "DNL"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x00\x03", "width of 0"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00", "truncated"),
        (b"\xff\xd8\xff\xe1\x00\x01", "length 1"),
        (b"GIF89a\x01\x00\x01\x00", "not a PNG or JPEG"),
    ],
)
def test_corrupt_headers_are_clear_errors(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        image_size(data)


def test_a_jpeg_cut_anywhere_before_its_frame_header_is_refused() -> None:
    data = jpeg((10, 10), exif=exif(1))
    sof = data.index(b"\xff\xc0")
    for cut in range(3, sof + 9):
        with pytest.raises(ValueError, match="truncated"):
            image_size(data[:cut])
    assert image_size(data[: sof + 9]) == (10, 10)


def test_sizes_are_read_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = jpeg((1500, 10), progressive=True)
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(InvalidRequestError, match=r"1500x10 pixels.*resize_images=True"):
        validate_messages(user(uri(data, "jpeg")))


# --- validate_messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1024, 1024), (1024, 7), (7, 1024)])
def test_images_up_to_1024_pass(size: tuple[int, int]) -> None:
    (message,) = validate_messages(user(uri(png(size)), uri(jpeg(size), "jpeg")))
    assert isinstance(message.content, list)


@pytest.mark.parametrize("size", [(1025, 1), (1, 1025), (2000, 1000)])
def test_oversized_images_name_the_part_the_size_and_the_fix(size: tuple[int, int]) -> None:
    messages = [{"role": "system", "content": "hi"}, *user(uri(png((4, 4))), uri(png(size)))]
    width, height = size
    with pytest.raises(InvalidRequestError) as caught:
        validate_messages(messages)
    text = str(caught.value)
    assert text.startswith("messages[1].content[2]: ")
    assert f"{width}x{height} pixels" in text
    assert "resize_images=True" in text
    # allowed to resize: valid (the resize happens when the request is sent)
    validate_messages(messages, resize_images=True)


def test_huge_declared_size_in_a_tiny_corrupt_header() -> None:
    with pytest.raises(InvalidRequestError, match="100000x100000 pixels"):
        validate_messages(user(uri(png_header(100_000, 100_000))))


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (uri(b"GIF89a" + b"\0" * 30), "not a PNG"),
        (uri(jpeg((2, 2))), "not a PNG"),  # declared PNG, JPEG bytes
        ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(), "truncated"),
        ("data:image/gif;base64,R0lGODlh", "data URI"),
        ("file:///etc/passwd", "only https"),
        ("/etc/passwd", "data URI"),
        ("http://cdn.sogni.ai/a.png", "only https"),
        ("https://example.com/a.png", "not trusted"),
    ],
)
def test_bad_image_parts(url: str, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        validate_messages(user(url))


def test_trusted_urls_pass_validation_without_fetching() -> None:
    (message,) = validate_messages(user(f"https://cdn.sogni.ai/a.png?{SECRET}"))
    assert isinstance(message.content, list)


def test_at_most_20_images_counting_urls() -> None:
    validate_messages(user(*["https://cdn.sogni.ai/a.png"] * 20))
    with pytest.raises(InvalidRequestError, match="at most 20 images"):
        validate_messages(user(*["https://cdn.sogni.ai/a.png"] * 21))


def test_resize_images_param_must_be_a_bool() -> None:
    from trio_sogni._request import build_llm_request

    with pytest.raises(InvalidRequestError, match="resize_images"):
        build_llm_request(
            model="m",
            messages=user(uri(png((2, 2)))),
            stream=False,
            params={"resize_images": "yes"},
            default_app_source=None,
        )
    request = build_llm_request(
        model="m",
        messages=user(uri(png((2000, 2)))),
        stream=False,
        params={"resize_images": True},
        default_app_source=None,
    )
    assert "resize" not in str(request)  # not a wire field


# --- trusted hosts -------------------------------------------------------------------------------

TRUSTED = [
    "https://cdn.sogni.ai/a.png",
    "https://CDN.Sogni.AI/a.png",
    "https://x.sogni.ai/a.png",
    "https://a.b-c.sogni.ai/a.png",
    "https://cdn.sogni.ai:443/a.png",
    "https://bucket.s3.amazonaws.com/key.png",
    "https://my.dotted.bucket.s3.amazonaws.com/key.png",
    "https://s3.amazonaws.com/bucket/key.png",
    "https://s3.us-east-1.amazonaws.com/bucket/key.png",
    "https://bucket.s3.eu-west-2.amazonaws.com/key.png",
    "https://bucket.s3.us-gov-west-1.amazonaws.com/key.png",
    "https://d111111abcdef8.cloudfront.net/a.png",
    f"https://d111111abcdef8.cloudfront.net/a.png?{SECRET}&Key-Pair-Id=K",
]

UNTRUSTED = [
    ("http://cdn.sogni.ai/a.png", "only https"),
    ("ftp://cdn.sogni.ai/a.png", "only https"),
    ("cdn.sogni.ai/a.png", "without a scheme"),
    ("https://sogni.ai/a.png", "not trusted"),
    ("https://sogni.ai.evil.com/a.png", "not trusted"),
    ("https://cdn.sogni.ai.evil.com/a.png", "not trusted"),
    ("https://evilsogni.ai/a.png", "not trusted"),
    ("https://sogni-ai.com/a.png", "not trusted"),
    ("https://cloudfront.net/a.png", "not trusted"),
    ("https://xcloudfront.net/a.png", "not trusted"),
    ("https://amazonaws.com/a.png", "not trusted"),
    ("https://ec2.us-east-1.amazonaws.com/a.png", "not trusted"),
    ("https://evil-s3.amazonaws.com/a.png", "not trusted"),
    ("https://s3.amazonaws.com.evil.com/a.png", "not trusted"),
    ("https://s3.not-a-region.amazonaws.com/a.png", "not trusted"),
    ("https://bucket_x.s3.amazonaws.com/a.png", "not trusted"),
    ("https://cdn.sogni.ai%2eevil.com/a.png", "not trusted"),
    ("https://cdn.sogni.ai:8443/a.png", "port 8443"),
    ("https://cdn.sogni.ai:80/a.png", "port 80"),
    ("https://cdn.sogni.ai:x/a.png", "malformed"),
    ("https://user:hunter2@cdn.sogni.ai/a.png", "user name or password"),
    ("https://cdn.sogni.ai@evil.com/a.png", "user name or password"),
    ("https://cdn.sogni.ai\\@evil.com/a.png", "backslashes"),
    ("https://cdn.sogni.ai /a.png", "spaces"),
    ("https://cdn.s\u043egni.ai/a.png", "non-ASCII"),
    ("https://127.0.0.1/a.png", "IP address"),
    ("https://[::1]/a.png", "IP address"),
    ("https://[::ffff:7f00:1]/a.png", "IP address"),
    ("https:///a.png", "no host"),
]


@pytest.mark.parametrize("url", TRUSTED)
def test_trusted_hosts(url: str) -> None:
    assert check_trusted_url(url, "x").host == url.split("/")[2].split(":")[0].lower()


@pytest.mark.parametrize(("url", "match"), UNTRUSTED)
def test_untrusted_urls_are_refused_naming_at_most_the_host(url: str, match: str) -> None:
    for candidate in (url, f"{url}?{SECRET}"):
        with pytest.raises(InvalidRequestError, match=match) as caught:
            check_trusted_url(candidate, "messages[0].content[1]")
        text = str(caught.value)
        assert text.startswith("messages[0].content[1]: ")
        assert "s3cr3t" not in text
        assert "hunter2" not in text
        assert "/a.png" not in text


# --- the fetcher ---------------------------------------------------------------------------------

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Counted(httpx.AsyncByteStream):
    """A response body of ``total`` bytes in ``chunk`` pieces, counting what was read."""

    def __init__(self, prefix: bytes, total: int, chunk: int = 65536) -> None:
        self.prefix = prefix
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first = self.prefix + b"\0" * (self.chunk - len(self.prefix))
        while self.sent < self.total:
            piece = first if self.sent == 0 else b"\0" * self.chunk
            self.sent += len(piece)
            yield piece
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True


def fetcher_for(handler: Handler, **client: Any) -> tuple[ImageFetcher, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(recording), **client)
    return ImageFetcher(http), seen


def serve(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(status, content=data, headers=headers or {})

    return handler


async def test_fetch_a_trusted_png_without_the_clients_credentials() -> None:
    image = png((30, 20))
    fetcher, seen = fetcher_for(
        serve(image, headers={"content-type": "application/octet-stream"}),
        headers={"authorization": "Bearer sk-secret", "api-key": "k"},
        cookies={"session": "c"},
    )
    got = await fetcher.fetch(f"https://cdn.sogni.ai/a.png?{SECRET}", "messages[0].content[1]")
    assert (got.data, got.format, got.width, got.height) == (image, "png", 30, 20)
    (request,) = seen
    assert request.url.query == SECRET.encode()
    assert request.method == "GET"
    for header in ("authorization", "api-key", "cookie"):
        assert header not in request.headers
    assert request.headers["accept-encoding"] == "identity"


async def test_an_image_hosts_set_cookie_never_reaches_the_shared_jar_or_rest_calls() -> None:
    # cdn.sogni.ai sets a cookie for all of .sogni.ai; api.sogni.ai sets one of its own. The
    # REST host's cookie comes back on the next REST call (the jar works), the image host's
    # never does, and neither is sent to the image host.
    image = png((8, 8))
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await trio.lowlevel.checkpoint()
        if request.url.host == "cdn.sogni.ai":
            cookies = [("set-cookie", "track=img; Domain=.sogni.ai; Path=/")]
            return httpx.Response(200, content=image, headers=cookies)
        cookies = [("set-cookie", "api=rest; Path=/")]
        return httpx.Response(200, json={"status": "success"}, headers=cookies)

    async def no_headers() -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        return {}

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fetcher = ImageFetcher(http)
        rest = RestClient("https://api.sogni.ai", "https://socket.sogni.ai", no_headers, http)
        await fetcher.fetch("https://cdn.sogni.ai/a.png", "w")
        assert dict(http.cookies) == {}
        await rest.request("GET", "/v1/first")
        await fetcher.fetch("https://cdn.sogni.ai/b.png", "w")
        await rest.request("GET", "/v1/second")
        assert dict(http.cookies) == {"api": "rest"}
    assert [str(r.url) for r in seen] == [
        "https://cdn.sogni.ai/a.png",
        "https://api.sogni.ai/v1/first",
        "https://cdn.sogni.ai/b.png",
        "https://api.sogni.ai/v1/second",
    ]
    assert [r.headers.get("cookie") for r in seen] == [None, None, None, "api=rest"]


async def test_httpx_does_not_log_a_signed_image_url(caplog: pytest.LogCaptureFixture) -> None:
    fetcher, _ = fetcher_for(serve(png((8, 8))))
    with caplog.at_level("DEBUG"):
        await fetcher.fetch(f"https://cdn.sogni.ai/a.png?{SECRET}", "w")
    assert "s3cr3t" not in caplog.text
    assert "cdn.sogni.ai/a.png" not in caplog.text


@pytest.mark.parametrize("follow", [False, True])
async def test_a_redirect_is_refused_not_followed(follow: bool) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(302, headers={"location": "https://cdn.sogni.ai/b.png"})

    fetcher, seen = fetcher_for(handler, follow_redirects=follow)
    with pytest.raises(
        InvalidRequestError, match=r"cdn\.sogni\.ai answered .* redirect \(HTTP 302\)"
    ):
        await fetcher.fetch(f"https://cdn.sogni.ai/a.png?{SECRET}", "w")
    assert len(seen) == 1


@pytest.mark.parametrize("status", [404, 403, 500])
async def test_an_error_status_names_the_host_not_the_url(status: int) -> None:
    fetcher, _ = fetcher_for(serve(b"nope", status))
    with pytest.raises(InvalidRequestError, match=f"HTTP {status}") as caught:
        await fetcher.fetch(f"https://bucket.s3.amazonaws.com/private/key.png?{SECRET}", "w")
    assert "bucket.s3.amazonaws.com" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert "private" not in str(caught.value)


async def test_a_declared_oversized_body_is_refused_before_reading() -> None:
    body = Counted(b"\x89PNG\r\n\x1a\n", MAX_IMAGE_BYTES + 1)

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(200, stream=body, headers={"content-length": str(body.total)})

    fetcher, _ = fetcher_for(handler)
    with pytest.raises(InvalidRequestError, match="larger than 10485760 bytes"):
        await fetcher.fetch("https://cdn.sogni.ai/big.png", "w")
    assert body.sent == 0


async def test_an_undeclared_oversized_body_is_abandoned_past_the_cap() -> None:
    body = Counted(b"\x89PNG\r\n\x1a\n", 64 * MAX_IMAGE_BYTES)

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(200, stream=body)

    fetcher, _ = fetcher_for(handler)
    with pytest.raises(InvalidRequestError, match="larger than 10485760 bytes"):
        await fetcher.fetch("https://cdn.sogni.ai/big.png", "w")
    assert MAX_IMAGE_BYTES < body.sent <= MAX_IMAGE_BYTES + body.chunk
    assert body.closed


@pytest.mark.parametrize(
    ("data", "headers", "match"),
    [
        (b"GIF89a" + b"\0" * 40, {}, "not a PNG or JPEG"),
        (b"<html>hello</html>", {"content-type": "image/png"}, "not a PNG or JPEG"),
        (png_header(5, 5)[:20], {}, "truncated"),
        (gzip.compress(png((2, 2))), {"content-encoding": "gzip"}, "content-encoded"),
    ],
)
async def test_bad_content(data: bytes, headers: dict[str, str], match: str) -> None:
    fetcher, _ = fetcher_for(serve(data, headers=headers))
    with pytest.raises(InvalidRequestError, match=match):
        await fetcher.fetch("https://cdn.sogni.ai/a.png", "w")


async def test_the_timeout_bounds_the_whole_fetch_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b"\x89PNG\r\n\x1a\n"
        await trio.sleep(3600)
        yield b""

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in slow_body():
                yield chunk

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(4)  # the headers come after 4 s, the body never ends
        return httpx.Response(200, stream=Slow())

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    fetcher = ImageFetcher(http, timeout=7.5)
    start = trio.current_time()
    with pytest.raises(TransportError, match=r"cdn\.sogni\.ai took more than 7\.5 s"):
        await fetcher.fetch(f"https://cdn.sogni.ai/a.png?{SECRET}", "w")
    assert trio.current_time() - start == pytest.approx(7.5)
    with pytest.raises(InvalidRequestError, match="image_fetch_timeout"):
        ImageFetcher(http, timeout=0)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(httpx.ConnectError, ConnectError), (httpx.ReadError, TransportError)],
)
async def test_network_errors_are_typed_and_hide_the_url(
    error: type[httpx.HTTPError], expected: type[Exception]
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        raise error(f"boom at {request.url}")

    fetcher, _ = fetcher_for(handler)
    with pytest.raises(expected) as caught:
        await fetcher.fetch(f"https://cdn.sogni.ai/a.png?{SECRET}", "w")
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_an_error_while_reading_the_body_is_a_transport_error() -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"\x89PNG\r\n\x1a\n"
            raise httpx.ReadError(f"reset while reading ?{SECRET}")

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(200, stream=Broken())

    fetcher, _ = fetcher_for(handler)
    with pytest.raises(TransportError, match=r"reading the image from cdn\.sogni\.ai") as caught:
        await fetcher.fetch("https://cdn.sogni.ai/a.png", "w")
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.__context__ is None


async def test_untrusted_urls_are_never_requested() -> None:
    fetcher, seen = fetcher_for(serve(png((1, 1))))
    with pytest.raises(InvalidRequestError, match="not trusted"):
        await fetcher.fetch("https://example.com/a.png", "w")
    assert seen == []


# --- resizing ------------------------------------------------------------------------------------


def image_of(data: bytes) -> Any:
    from trio_sogni._images import check_image_bytes

    return check_image_bytes(data, "w")


@pytest.mark.parametrize(
    ("size", "expected"),
    [((2000, 1000), (1024, 512)), ((1000, 3000), (341, 1024)), ((1025, 1025), (1024, 1024))],
)
@pytest.mark.parametrize("kind", ["png", "jpeg"])
async def test_resize_keeps_the_aspect_ratio_and_the_format(
    size: tuple[int, int], expected: tuple[int, int], kind: str
) -> None:
    data = png(size) if kind == "png" else jpeg(size)
    resized = await resize_image(image_of(data), "w")
    assert resized.format == kind
    with Image.open(io.BytesIO(resized.data)) as out:
        assert out.size == expected
        assert out.format == ("PNG" if kind == "png" else "JPEG")
        pixel = out.convert("RGB").getpixel((expected[0] // 2, expected[1] // 2))
    assert pixel == pytest.approx((200, 30, 30) if kind == "png" else (10, 120, 200), abs=6)


@pytest.mark.parametrize(
    ("mode", "color"),
    [("RGBA", (1, 2, 3, 100)), ("P", 5), ("L", 77), ("LA", (77, 9)), ("1", 1), ("I;16", 300)],
)
async def test_png_modes_stay_png(mode: str, color: Any) -> None:
    resized = await resize_image(image_of(png((1500, 100), mode, color)), "w")
    assert (resized.format, resized.width, resized.height) == ("png", 1024, 68)
    if mode == "RGBA":
        with Image.open(io.BytesIO(resized.data)) as out:
            assert out.mode == "RGBA"
            assert out.getpixel((5, 5)) == pytest.approx((1, 2, 3, 100), abs=2)


async def test_jpeg_exif_orientation_is_honoured() -> None:
    # stored 2000x1000 with orientation 6 (rotate 90° clockwise to display): upright 1000x2000
    stored = Image.new("RGB", (2000, 1000), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 200, 200))  # red in the stored top-left corner
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif(6), quality=95)
    resized = await resize_image(image_of(buffer.getvalue()), "w")
    assert (resized.width, resized.height) == (512, 1024)
    with Image.open(io.BytesIO(resized.data)) as out:
        assert out.getexif().get(0x0112) is None  # upright now: no orientation left to apply
        pixel: Any = out.convert("RGB").getpixel((500, 10))  # the top-right corner
        red, _, blue = pixel
        assert red > 200
        assert blue < 60


async def test_small_images_are_not_touched() -> None:
    image = image_of(png((1024, 3)))
    assert await resize_image(image, "w") is image


async def test_resizing_without_pillow_says_to_install_the_media_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = image_of(png((1100, 10)))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(InvalidRequestError, match=r"trio-sogni\[media\]"):
        await resize_image(image, "messages[0].content[1]")


async def test_decompression_bombs_and_corrupt_images_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="too many to resize"):
        await resize_image(image_of(png_header(100_000, 100_000)), "w")
    with pytest.raises(InvalidRequestError, match="cannot be decoded for resizing"):
        await resize_image(image_of(png_header(3000, 2000)), "w")


# --- inline_images -------------------------------------------------------------------------------


def converted(messages: list[dict[str, Any]], resize: bool = True) -> list[ChatMessage]:
    return validate_messages(messages, resize_images=resize)


def image_urls(messages: Iterable[ChatMessage]) -> list[str]:
    return [
        part.image_url.url
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, ImageURLPart)
    ]


async def test_nothing_to_do_returns_the_same_list() -> None:
    messages = converted(user(uri(png((3, 3)))), resize=False)
    assert await inline_images(messages, None, resize=False) == (messages, {})
    assert (await inline_images(messages, None, resize=True))[0] is messages


async def test_remote_images_are_inlined_and_oversized_ones_resized() -> None:
    small, big = png((10, 10)), jpeg((3000, 1500))
    served = {"/small.png": small, "/big.jpg": big}

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return httpx.Response(200, content=served[request.url.path])

    fetcher, _ = fetcher_for(handler)
    messages = converted(
        user(
            "https://cdn.sogni.ai/small.png",
            "https://d1.cloudfront.net/big.jpg",
            uri(png((2048, 64))),
            detail="low",
        )
    )
    out, fetched = await inline_images(messages, fetcher, resize=True)
    first, second, third = image_urls(out)
    assert first == uri(small)
    assert decoded(second).size == (1024, 512)
    assert second.startswith("data:image/jpeg;")
    assert decoded(third).size == (1024, 32)
    # the fetched bytes, before resizing, for the media tools
    assert fetched == {
        "https://cdn.sogni.ai/small.png": uri(small),
        "https://d1.cloudfront.net/big.jpg": uri(big, "jpeg"),
    }
    content = out[0].content
    assert isinstance(content, list)
    assert [p.image_url.detail for p in content if isinstance(p, ImageURLPart)] == ["low"] * 3
    assert image_urls(messages)[0] == "https://cdn.sogni.ai/small.png"  # the input is untouched


async def test_a_fetched_oversized_image_without_permission_is_refused() -> None:
    fetcher, _ = fetcher_for(serve(png((1030, 20))))
    messages = converted(user("https://cdn.sogni.ai/a.png"), resize=False)
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[1\].*1030x20"):
        await inline_images(messages, fetcher, resize=False)


async def test_fetches_run_at_most_four_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    running = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        return httpx.Response(200, content=png((5, 5)))

    fetcher, seen = fetcher_for(handler)
    urls = [f"https://cdn.sogni.ai/{i}.png" for i in range(10)]
    start = trio.current_time()
    out, _ = await inline_images(converted(user(*urls)), fetcher, resize=False)
    assert peak == 4
    assert len(seen) == 10
    assert trio.current_time() - start == pytest.approx(3)
    assert all(url.startswith("data:image/png;base64,") for url in image_urls(out))


async def test_the_first_failure_cancels_the_other_fetches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/missing.png":
            await trio.sleep(1)
            return httpx.Response(404)
        await trio.sleep(100)
        finished.append(request.url.path)
        return httpx.Response(200, content=png((5, 5)))

    fetcher, _ = fetcher_for(handler)
    messages = converted(user("https://cdn.sogni.ai/slow.png", "https://cdn.sogni.ai/missing.png"))
    start = trio.current_time()
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[2\].*HTTP 404"):
        await inline_images(messages, fetcher, resize=False)
    assert trio.current_time() - start == pytest.approx(1)
    assert finished == []


async def test_inline_images_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(10)
        return httpx.Response(200, content=png((5, 5)))

    fetcher, _ = fetcher_for(handler)
    with trio.move_on_after(2) as scope:
        await inline_images(converted(user("https://cdn.sogni.ai/a.png")), fetcher, resize=False)
    assert scope.cancelled_caught


async def test_a_client_without_a_fetcher_refuses_urls() -> None:
    with pytest.raises(InvalidRequestError, match="cannot fetch image URLs"):
        await inline_images(converted(user("https://cdn.sogni.ai/a.png")), None, resize=False)


# --- image_part ----------------------------------------------------------------------------------


def test_image_part_from_a_path_and_from_bytes(tmp_path: Path) -> None:
    data = png((40, 30))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (path, str(path), data):
        assert image_part(source) == {"type": "image_url", "image_url": {"url": uri(data)}}
    part = image_part(jpeg((8, 8)), detail="high")
    assert part["image_url"]["detail"] == "high"
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # round trip: what image_part makes, validate_messages accepts as is
    (message,) = validate_messages([{"role": "user", "content": [part]}])
    assert image_urls([message]) == [part["image_url"]["url"]]


def test_image_part_resizes_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "wide.jpg"
    path.write_bytes(jpeg((2000, 1000)))
    with pytest.raises(InvalidRequestError, match=r"2000x1000 pixels.*\(pass resize=True to"):
        image_part(path)
    part = image_part(path, resize=True)
    assert decoded(part["image_url"]["url"]).size == (1024, 512)
    assert trio_sogni.image_part is image_part


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (b"GIF89a" + b"\0" * 20, "not a PNG or JPEG"),
        ("https://cdn.sogni.ai/a.png", "put data URIs and https URLs"),
        ("data:image/png;base64,AAAA", "put data URIs and https URLs"),
        ("/no/such/file.png", "cannot read '/no/such/file.png'"),
        (12, "a path or bytes"),
    ],
)
def test_image_part_errors(source: Any, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        image_part(source)


def test_image_part_refuses_files_over_10_mib_without_reading_them_all(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES)
    with pytest.raises(InvalidRequestError, match="larger than 10485760 bytes"):
        image_part(path)
    with pytest.raises(InvalidRequestError, match="detail"):
        image_part(png((1, 1)), detail="max")  # type: ignore[arg-type]


def test_parse_data_uri_reports_the_size() -> None:
    image = parse_data_uri(uri(jpeg((17, 9), progressive=True), "jpg"), "w")
    assert (image.format, image.width, image.height) == ("jpeg", 17, 9)


# --- layering ------------------------------------------------------------------------------------


def test_the_pure_image_checks_import_only_the_stdlib_and_the_errors() -> None:
    """``_images`` runs inside the synchronous request builder: no Trio, no httpx, no Pillow."""
    path = Path(trio_sogni.__file__).parent / "_images.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    absolute = {m.split(".")[0] for m in imported if not m.startswith(".")}
    assert absolute <= set(sys.stdlib_module_names), absolute - set(sys.stdlib_module_names)
    assert {m for m in imported if m.startswith(".")} == {"._errors"}


def test_the_vision_module_loads_no_router_driver_facade_or_pillow() -> None:
    code = (
        "import sys, trio_sogni._vision, trio_sogni._request\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    modules = set(out.stdout.split())
    forbidden = {
        "trio_sogni._router",
        "trio_sogni._driver",
        "trio_sogni._chat",
        "trio_sogni._hosted",
        "trio_sogni._client",
        "trio_sogni._mediatools",
        "PIL",
    }
    assert "trio_sogni._vision" in modules
    assert not (modules & forbidden), modules & forbidden
