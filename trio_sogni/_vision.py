"""Vision inputs, the Trio half: trusted https image URLs fetched client-side, oversized images
resized with Pillow, and `image_part`.

The checks that need no I/O (data URIs, pixel sizes, trusted hosts) are in
`trio_sogni._images`; they run first, when the request is built, so a bad image fails before
anything is fetched or sent. This module sits beside the API facades: it uses the client's
``httpx.AsyncClient`` (one connection pool for REST and images) and imports no router, driver
or facade.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any, Final, Literal

import httpx
import msgspec
import trio
from typing_extensions import override

from ._errors import ConnectError, InvalidRequestError, SogniError, TransportError
from ._groups import unwrap_group
from ._images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_SIDE,
    DataImage,
    ImageFormat,
    check_image_bytes,
    check_trusted_url,
    data_uri,
    oversized_message,
    parse_data_uri,
)
from .protocol import ChatMessage, ImageURL, ImageURLPart

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "MAX_CONCURRENT_FETCHES",
    "MAX_RESIZE_PIXELS",
    "ImageFetcher",
    "image_part",
    "inline_images",
    "resize_image",
]

DEFAULT_FETCH_TIMEOUT: Final = 20.0
"""Seconds one image fetch may take, from the request to the last byte (the official SDKs')."""
MAX_CONCURRENT_FETCHES: Final = 4
"""Images of one request fetched (or resized) at the same time."""
MAX_RESIZE_PIXELS: Final = 80_000_000
"""The largest image (width x height) decoded for resizing: a decompression-bomb guard below
Pillow's own warning threshold (about 89 million pixels). 10 MiB of JPEG rarely holds more."""
_CLOSE_GRACE: Final = 5.0
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)
"""What Pillow raises for a corrupt or truncated file."""
_MEDIA_EXTRA: Final = "pip install 'trio-sogni[media]'"


class ImageFetcher:
    """Fetches trusted https images (`trio_sogni._images.check_trusted_url`) over one shared
    ``httpx.AsyncClient``, so connections to the image hosts are reused.

    Each fetch is a plain GET handed straight to the client's transport for the URL (the same
    connection pool, proxies and mounts), bypassing the client itself: none of its credentials,
    cookies, default headers or event hooks, no redirects followed (a 3xx fails it),
    ``Accept-Encoding: identity``; a ``Set-Cookie`` of the image host is dropped, never stored
    in the client's cookie jar (where later REST calls would send it), and httpx does not log
    the URL. The body is streamed and
    abandoned as soon as it passes 10 MiB (a larger ``Content-Length`` is refused before reading
    anything), and the bytes must be a PNG or JPEG by their magic bytes, whatever the
    ``Content-Type`` says. Errors name the host, never the URL's path or query (signed S3 and
    CloudFront URLs carry their credentials in the query).
    """

    __slots__ = ("_http", "_timeout")

    def __init__(self, http: httpx.AsyncClient, *, timeout: float = DEFAULT_FETCH_TIMEOUT) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
            or not 0 < timeout < float("inf")
        ):
            raise InvalidRequestError("image_fetch_timeout must be a positive number of seconds")
        self._http = http
        self._timeout = float(timeout)

    @override
    def __repr__(self) -> str:
        return f"<ImageFetcher timeout={self._timeout:g}s>"

    async def fetch(self, url: str, where: str) -> DataImage:
        """GET the trusted image at ``url`` and check it (PNG or JPEG, at most 10 MiB, a
        readable pixel size; the longest side is not checked here). Cancellable; bounded by the
        fetcher's timeout as a whole; the response is closed (shielded, bounded) on every exit.

        Raises:
            InvalidRequestError: an untrusted URL (nothing is fetched), a redirect, a non-2xx
                status, more than 10 MiB, or bytes that are not a PNG or JPEG image.
            ConnectError: the host could not be reached.
            TransportError: the timeout ran out, or the transfer failed.
        """
        trusted = check_trusted_url(url, where)
        host = trusted.host
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise InvalidRequestError(f"{where}: the image URL on {host} is malformed") from None
        if (
            target.scheme != "https"
            or target.host != host
            or target.port not in (None, 443)
            or target.userinfo
        ):
            # urllib and httpx read the URL differently: refuse rather than guess.
            raise InvalidRequestError(f"{where}: the image URL on {host} is ambiguous")
        request = httpx.Request(
            "GET",
            target,
            headers={"accept": "image/png, image/jpeg", "accept-encoding": "identity"},
            extensions={"timeout": httpx.Timeout(self._timeout).as_dict()},
        )
        data: bytes | None = None
        with trio.move_on_after(self._timeout):
            data = await self._get(request, where, host)
        if data is None:
            raise TransportError(
                f"{where}: fetching the image from {host} took more than {self._timeout:g} s"
            )
        return check_image_bytes(data, where)

    async def _get(self, request: httpx.Request, where: str, host: str) -> bytes:
        response: httpx.Response | None = None
        failure: SogniError | None = None
        try:
            # Straight to the transport the client would use for this URL (its connection pool,
            # proxy or mount), not through ``send``: the client would store the image host's
            # Set-Cookie in its shared jar (to be sent on later REST calls to any host the
            # cookie's domain covers, *.sogni.ai among them), and log the URL, signed query
            # and all, at INFO. httpx has no public way to skip either (encode/httpx#2992).
            transport = self._http._transport_for_url(request.url)  # pyright: ignore[reportPrivateUsage]
            response = await transport.handle_async_request(request)
        except httpx.ConnectError as exc:
            failure = ConnectError(f"{where}: cannot connect to {host} ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            failure = TransportError(
                f"{where}: fetching the image from {host} failed ({type(exc).__name__})"
            )
        if response is None:
            # Raised outside the handler: httpx's error text (which holds the URL) is neither
            # the cause nor the context.
            assert failure is not None
            raise failure
        try:
            return await self._read(response, where, host)
        finally:
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                await response.aclose()

    async def _read(self, response: httpx.Response, where: str, host: str) -> bytes:
        status = response.status_code
        if 300 <= status < 400:
            raise InvalidRequestError(
                f"{where}: {host} answered the image request with a redirect (HTTP {status}); "
                "redirects are not followed"
            )
        if not response.is_success:
            raise InvalidRequestError(
                f"{where}: {host} answered the image request with HTTP {status}"
            )
        too_large = f"{where}: the image from {host} is larger than {MAX_IMAGE_BYTES} bytes"
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise InvalidRequestError(
                f"{where}: {host} sent the image content-encoded ({encoding[:40]}), which is "
                "not accepted"
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
            raise InvalidRequestError(too_large)
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - async transports
            raise TransportError(f"{where}: the transport for {host} is not asynchronous")
        body = bytearray()
        failure: TransportError | None = None
        # The transport's body stream itself (identity encoding: nothing to decode), closed
        # explicitly when abandoned past the cap, not left to the garbage collector.
        chunks = aiter(stream)
        try:
            async for chunk in chunks:
                if len(body) + len(chunk) > MAX_IMAGE_BYTES:
                    raise InvalidRequestError(too_large)
                body += chunk
        except httpx.HTTPError as exc:
            failure = TransportError(
                f"{where}: reading the image from {host} failed ({type(exc).__name__})"
            )
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if failure is not None:
            raise failure
        return bytes(body)


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _target_size(width: int, height: int) -> tuple[int, int]:
    """The size with the longest side exactly `MAX_IMAGE_SIDE`, the aspect ratio kept."""
    if width >= height:
        return MAX_IMAGE_SIDE, max(1, round(height * MAX_IMAGE_SIDE / width))
    return max(1, round(width * MAX_IMAGE_SIDE / height)), MAX_IMAGE_SIDE


def _resize_sync(data: bytes, kind: ImageFormat) -> bytes:
    """Decode, orient (JPEG EXIF orientation), resize and re-encode. Runs in a worker thread."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        image: Any = opened
        width, height = image.size
        target = _target_size(width, height)
        if kind == "jpeg":
            # Orientations 5 to 8 turn the image a quarter: its upright size is the other way.
            turned = image.getexif().get(0x0112) in (5, 6, 7, 8)
            if turned:
                target = target[::-1]
            # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 when that still leaves enough pixels
            # (the draft size is in the stored orientation).
            image.draft(image.mode, target[::-1] if turned else target)
            image = ImageOps.exif_transpose(image)
            if image.mode not in ("L", "RGB", "CMYK"):
                image = image.convert("RGB")
        elif image.mode not in ("L", "LA", "RGB", "RGBA"):
            alpha = "transparency" in image.info or image.mode in ("PA", "RGBa", "La")
            image = image.convert("RGBA" if alpha else "RGB")
        resized = image.resize(target, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if kind == "jpeg":
            resized.save(out, "JPEG", quality=90)
        else:
            resized.save(out, "PNG")
        return out.getvalue()


def _check_resizable(image: DataImage, where: str) -> None:
    if image.width * image.height > MAX_RESIZE_PIXELS:
        raise InvalidRequestError(
            f"{where}: the image is {image.width}x{image.height} pixels, too many to resize "
            f"(at most {MAX_RESIZE_PIXELS:,}); resize it yourself to at most {MAX_IMAGE_SIDE} px"
        )
    if _pillow() is None:
        raise InvalidRequestError(
            f"{where}: the image is {image.width}x{image.height} pixels and resizing it needs "
            f"Pillow: install the media extra ({_MEDIA_EXTRA}) or send images of at most "
            f"{MAX_IMAGE_SIDE} px"
        )


def _resized(image: DataImage, data: bytes, where: str) -> DataImage:
    result = check_image_bytes(data, where, image.format)
    if result.longest_side != MAX_IMAGE_SIDE:  # pragma: no cover - Pillow's resize is exact
        raise InvalidRequestError(f"{where}: resizing gave {result.width}x{result.height}")
    return result


def _resize_now(image: DataImage, where: str) -> DataImage:
    _check_resizable(image, where)
    try:
        data = _resize_sync(image.data, image.format)
    except _DECODE_ERRORS as exc:
        raise InvalidRequestError(
            f"{where}: the image cannot be decoded for resizing ({type(exc).__name__})"
        ) from None
    return _resized(image, data, where)


async def resize_image(image: DataImage, where: str) -> DataImage:
    """``image`` with its longest side brought down to exactly 1024 px, the aspect ratio kept,
    in the same format (PNG stays PNG; JPEG is re-encoded at quality 90, turned upright by its
    EXIF orientation first; metadata is not kept). An image within the limit is returned as is.

    Decoding and encoding run in a worker thread (`trio.to_thread.run_sync`), which is not
    abandoned on cancellation: a resize is bounded by `MAX_RESIZE_PIXELS` and the 10 MiB input
    limit, so a cancellation waits at most for that one resize.

    Raises:
        InvalidRequestError: Pillow is missing (install the ``media`` extra), too many pixels,
            or the image cannot be decoded.
    """
    if image.longest_side <= MAX_IMAGE_SIDE:
        await trio.lowlevel.checkpoint()
        return image
    _check_resizable(image, where)
    try:
        data = await trio.to_thread.run_sync(_resize_sync, image.data, image.format)
    except _DECODE_ERRORS as exc:
        raise InvalidRequestError(
            f"{where}: the image cannot be decoded for resizing ({type(exc).__name__})"
        ) from None
    return _resized(image, data, where)


def needs_inlining(messages: list[ChatMessage], *, resize: bool) -> bool:
    """Whether `inline_images` would fetch or resize anything in ``messages`` (synchronous):
    an https image, or (with ``resize``) any image. When it would not, a caller that
    checkpoints anyway (it sends the request next) may skip it."""
    for message in messages:
        content = message.content
        if isinstance(content, list):
            for part in content:
                if isinstance(part, ImageURLPart) and (
                    resize or not part.image_url.url.startswith("data:")
                ):
                    return True
    return False


async def inline_images(
    messages: list[ChatMessage], fetcher: ImageFetcher | None, *, resize: bool
) -> tuple[list[ChatMessage], dict[str, str]]:
    """The messages as the server must get them: every trusted https image fetched and inlined
    as a data URI, and (with ``resize``) every image whose longest side is over 1024 px resized.
    The messages must have passed `trio_sogni._request.validate_messages` (with the same
    ``resize``).

    Always a checkpoint. Returns the new messages (``messages`` itself when nothing had to
    change) and ``{url: data URI}`` of the fetched images *before* any resizing
    (what the media tools use as edit sources). Fetches and resizes of one call run
    concurrently, at most `MAX_CONCURRENT_FETCHES` at a time; the first
    failure cancels the others and is raised, so nothing is sent when any image fails.

    Raises:
        InvalidRequestError, ConnectError, TransportError: see `ImageFetcher.fetch` and
            `resize_image`; ``where`` names the message and part (``messages[i].content[j]``).
    """
    work: list[tuple[int, int, ImageURLPart]] = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImageURLPart) and (
                    resize or not part.image_url.url.startswith("data:")
                ):
                    work.append((i, j, part))
    if not work:
        await trio.lowlevel.checkpoint()
        return messages, {}
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_FETCHES)
    replaced: dict[tuple[int, int], str] = {}
    fetched: dict[str, str] = {}
    failures: list[BaseException] = []

    async def one(i: int, j: int, part: ImageURLPart, cancel: trio.CancelScope) -> None:
        where = f"messages[{i}].content[{j}]"
        url = part.image_url.url
        try:
            async with limiter:
                if url.startswith("data:"):
                    image = parse_data_uri(url, where)
                else:
                    if fetcher is None:
                        raise InvalidRequestError(f"{where}: this client cannot fetch image URLs")
                    image = await fetcher.fetch(url, where)
                    fetched[url] = data_uri(image.data, image.format)
                if image.longest_side > MAX_IMAGE_SIDE:
                    if not resize:
                        raise InvalidRequestError(oversized_message(where, image))
                    image = await resize_image(image, where)
                    replaced[i, j] = data_uri(image.data, image.format)
                elif url in fetched:
                    replaced[i, j] = fetched[url]
        except SogniError as exc:
            if not failures:
                failures.append(exc)
            cancel.cancel()

    with unwrap_group():
        async with trio.open_nursery() as nursery:
            for i, j, part in work:
                nursery.start_soon(one, i, j, part, nursery.cancel_scope)
    if failures:
        raise failures[0]
    if not replaced:
        return messages, fetched
    out = list(messages)
    for i in sorted({i for i, _ in replaced}):
        content = out[i].content
        assert isinstance(content, list)
        parts = list(content)
        for (mi, j), url in replaced.items():
            if mi == i:
                old = parts[j]
                assert isinstance(old, ImageURLPart)
                parts[j] = ImageURLPart(image_url=ImageURL(url=url, detail=old.image_url.detail))
        out[i] = msgspec.structs.replace(out[i], content=parts)
    return out, fetched


def image_part(
    source: str | os.PathLike[str] | bytes,
    *,
    detail: Literal["auto", "low", "high"] | None = None,
    resize: bool = False,
) -> dict[str, Any]:
    """An OpenAI ``image_url`` content part for a local image: ``{"type": "image_url",
    "image_url": {"url": "data:image/png;base64,...", "detail": ...}}`` (``detail`` only when
    given), ready to put in a message's ``content`` list.

    ``source`` is a file path or the image's bytes; it must be a PNG or JPEG (by its magic
    bytes) of at most 10 MiB. An image whose longest side is over 1024 px is refused, unless
    ``resize`` is true: then it is resized to exactly 1024 px on its longest side (aspect ratio
    kept, same format; needs Pillow, the ``media`` extra).

    This function **blocks**: it reads the file and may resize the image, on the calling
    thread. It is meant for building messages up front (scripts, batch rows); inside a Trio
    program with large images, call it through ``await trio.to_thread.run_sync(image_part,
    path)``. Remote images need no helper: put their https URL in the part, and the client
    fetches it when it sends the request.

    Raises:
        InvalidRequestError: not a PNG or JPEG, more than 10 MiB, oversized without
            ``resize``, a URL given as a path, Pillow missing, or the file cannot be read.
    """
    where = "image_part"
    if detail is not None and detail not in ("auto", "low", "high"):
        raise InvalidRequestError(f"{where}: detail must be 'auto', 'low' or 'high'")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):  # pyright: ignore[reportUnnecessaryIsInstance]
        data = _read_file(os.fspath(source), where)
    else:
        raise InvalidRequestError(f"{where}: source must be a path or bytes")
    image = check_image_bytes(data, where)
    if image.longest_side > MAX_IMAGE_SIDE:
        if not resize:
            raise InvalidRequestError(
                oversized_message(where, image).replace("resize_images=True", "resize=True")
            )
        image = _resize_now(image, where)
    body: dict[str, Any] = {"url": data_uri(image.data, image.format)}
    if detail is not None:
        body["detail"] = detail
    return {"type": "image_url", "image_url": body}


def _read_file(path: str, where: str) -> bytes:
    if path.startswith(("data:", "http://", "https://")):
        raise InvalidRequestError(
            f"{where}: source is a path or bytes; put data URIs and https URLs in an "
            "image_url part directly"
        )
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise InvalidRequestError(
            f"{where}: cannot read {path!r}: {exc.strerror or type(exc).__name__}"
        ) from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(f"{where}: the image is larger than {MAX_IMAGE_BYTES} bytes")
    return data
