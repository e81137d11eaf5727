"""``OpenAIImagesBridgeWorker``: REAL image generation from an OpenAI-compatible images API,
not a test double.

The worker joins an upstream (LocalAI, a stable-diffusion.cpp server, OpenAI, ...) to localnet:
an image render becomes ``POST {upstream}/images/generations`` (JSON), or, when the render has
an input image, ``POST {upstream}/images/edits`` (``multipart/form-data`` with the image). It
speaks HTTP/1.1 itself over ``trio.open_tcp_stream`` with h11 (TLS through the standard
library for ``https://``), one connection per request, every read bounded in time and size:
localnet never imports httpx.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import secrets
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import urlsplit

import h11
import msgspec
import trio
from typing_extensions import override

from ...protocol import decode_json
from .._workers._base import WorkerIdentity

if TYPE_CHECKING:
    from PIL import Image as PILImage

from ._render import (
    CONTENT_TYPES,
    MediaRenderError,
    MediaType,
    RenderedMedia,
    RenderRejected,
    RenderSpec,
    StepCallback,
    require_pillow,
)

__all__ = [
    "OpenAIImagesBridgeWorker",
    "UpstreamFailure",
    "UpstreamResponse",
    "multipart_body",
    "upstream_request",
]

_PIL_FORMATS: Final[Mapping[str, str]] = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
}
_RECEIVE: Final = 65_536


@dataclass(frozen=True)
class UpstreamResponse:
    """One upstream answer: status, headers (lower-case names) and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamFailure(Exception):
    """An upstream exchange failed: ``code`` is the render error code it becomes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def upstream_request(
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    connect_seconds: float = 10.0,
    exchange_seconds: float = 300.0,
    max_response_bytes: int = 64 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> UpstreamResponse:
    """One HTTP/1.1 request on a new connection (closed afterwards), with h11.

    ``connect_seconds`` bounds connecting (and the TLS handshake), ``exchange_seconds`` the
    whole exchange after that; the response body may hold at most ``max_response_bytes``. Cancellable
    throughout; the connection is always closed (forcefully, so cleanup never blocks).

    Raises:
        UpstreamFailure: ``upstream_unreachable`` (connect failed or timed out),
            ``upstream_timeout``, ``upstream_error`` (the peer broke HTTP or closed early;
            the body is too large). The messages never repeat request headers.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UpstreamFailure("upstream_error", "the upstream URL is not http(s)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream
    try:
        with trio.fail_after(connect_seconds):
            stream = await trio.open_tcp_stream(parts.hostname, port)
            if parts.scheme == "https":
                context = ssl_context or ssl.create_default_context()
                tls = trio.SSLStream(stream, context, server_hostname=parts.hostname)
                try:
                    await tls.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(tls)
                    raise
                stream = tls
    except trio.TooSlowError:
        raise UpstreamFailure(
            "upstream_unreachable", "connecting to the upstream timed out"
        ) from None
    except (OSError, trio.BrokenResourceError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UpstreamFailure(
            "upstream_unreachable", f"cannot reach the upstream: {reason}"
        ) from None
    try:
        with trio.fail_after(exchange_seconds):
            return await _exchange(
                stream, method, parts.netloc, target, headers, body, max_response_bytes
            )
    except trio.TooSlowError:
        raise UpstreamFailure(
            "upstream_timeout", f"the upstream took over {exchange_seconds} s"
        ) from None
    except (h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
        raise UpstreamFailure(
            "upstream_error", f"the upstream broke the HTTP exchange ({type(exc).__name__})"
        ) from None
    finally:
        await trio.aclose_forcefully(stream)


async def _exchange(
    stream: trio.abc.Stream,
    method: str,
    host: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    limit: int,
) -> UpstreamResponse:
    conn = h11.Connection(h11.CLIENT)
    request_headers = [
        ("host", host),
        ("user-agent", "trio-sogni-localnet"),
        ("connection", "close"),
        ("content-length", str(len(body))),
        *headers,
    ]
    data = conn.send(h11.Request(method=method, target=target, headers=request_headers))
    data += conn.send(h11.Data(data=body)) if body else b""
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE)))
        elif isinstance(event, h11.Response):
            status = event.status_code
            response_headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers
            }
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                raise UpstreamFailure(
                    "upstream_error", f"the upstream's answer is over {limit} bytes"
                )
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return UpstreamResponse(status, response_headers, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise UpstreamFailure("upstream_error", "the upstream closed the connection early")
        # h11.InformationalResponse (100 Continue...): keep reading


def multipart_body(
    fields: Mapping[str, str], files: Sequence[tuple[str, str, str, bytes]], boundary: str
) -> bytes:
    """A ``multipart/form-data`` body: text ``fields``, then ``files`` as ``(field name,
    file name, content type, bytes)``. Names must not contain quotes or line breaks."""
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, filename, content_type, data in files:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}";'
            f' filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def _as_dict(value: object) -> dict[str, Any] | None:
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _error_text(response: UpstreamResponse) -> str:
    try:
        payload = _as_dict(decode_json(response.body))
    except (msgspec.DecodeError, ValueError):
        payload = None
    if payload is not None:
        error: object = payload.get("error", payload)
        inner = _as_dict(error)
        message: object = inner.get("message") or inner.get("detail") if inner else error
        if message:
            return str(message)[:300]
    text = response.body[:300].decode("utf-8", "replace").strip()
    return text or "(no message)"


class OpenAIImagesBridgeWorker(WorkerIdentity):
    """A media worker that renders images through an OpenAI-compatible images API (REAL
    generation; see the module docstring).

    Args:
        upstream: the API base URL including ``/v1`` (``http://127.0.0.1:8080/v1``); no
            credentials in it (use ``api_key``).
        name: the worker's name (default ``images-bridge-worker-<n>``).
        upstream_model: the ``model`` sent upstream (default: the render's model id).
        api_key: sent as ``Authorization: Bearer <key>``; never logged, shown in a repr or
            repeated in an error (an upstream message that echoes it is redacted).
        models: the image model ids it serves (``None``: every image model of the catalog).
        capacity: renders forwarded at once.
        response_format: ``"b64_json"`` (default) or ``"url"`` to ask for, or ``None`` to send
            none (servers that reject the field); both kinds of answer are understood either
            way.
        extra: more JSON fields (or form fields, for edits) for every request, e.g.
            ``{"quality": "low"}``.
        connect_timeout, timeout: seconds to connect, and for each whole exchange.
        max_response_bytes: the largest upstream answer (and fetched image) accepted.
        max_pixels: the largest image decoded (upstream answers and inputs).

    Each render: ``model``, ``prompt``, ``n: 1``, ``size: "<width>x<height>"`` and
    ``response_format``; for an edit also the input image (``image``, PNG/JPEG/WebP as
    uploaded, other formats converted to PNG). The answer's first ``data`` item is decoded
    (``b64_json``, or fetched from its ``url``); an image of another size is fitted to the
    requested size, one of another format converted (Pillow), so the result is exactly what
    the spec asked for. Progress: one ``on_step(steps, steps)`` when the image is in (the
    upstream reports none). Failures raise ``MediaRenderError`` with ``upstream_error``
    (HTTP error status, with the upstream's message; malformed answer), ``upstream_timeout``
    or ``upstream_unreachable``.
    """

    def __init__(
        self,
        upstream: str,
        name: str | None = None,
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        capacity: int = 1,
        response_format: Literal["b64_json", "url"] | None = "b64_json",
        extra: Mapping[str, str | int | float | bool] | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 300.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        max_pixels: int = 4096 * 4096,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("upstream must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("put credentials in api_key, not in the upstream URL")
        super().__init__(name, "images-bridge-worker", models, capacity)
        for value in (connect_timeout, timeout):
            if not (math.isfinite(value) and value > 0):
                raise ValueError("timeouts must be positive")
        self.upstream = upstream.rstrip("/")
        self.upstream_model = upstream_model
        self._api_key = api_key
        self.response_format = response_format
        self.extra = dict(extra or {})
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_pixels = max_pixels

    @override
    def __repr__(self) -> str:
        return f"OpenAIImagesBridgeWorker({self.upstream!r}, {self._name!r})"

    @property
    def media_types(self) -> frozenset[MediaType]:
        return frozenset({"image"})

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<redacted>") if self._api_key else text

    def _auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._api_key}")] if self._api_key else []

    async def _call(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        try:
            return await upstream_request(
                method,
                url,
                headers=headers,
                body=body,
                connect_seconds=self.connect_timeout,
                exchange_seconds=self.timeout,
                max_response_bytes=self.max_response_bytes,
            )
        except UpstreamFailure as exc:
            raise MediaRenderError(exc.code, self._redact(exc.message)) from None

    def _fields(self, spec: RenderSpec) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.upstream_model or spec.model_id,
            "prompt": spec.prompt.encode("utf-8", "replace").decode("utf-8"),  # no lone surrogates
            "n": 1,
            "size": f"{spec.width}x{spec.height}",
        }
        if self.response_format is not None:
            fields["response_format"] = self.response_format
        fields.update(self.extra)
        return fields

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderedMedia:
        """Render ``spec`` upstream (see the class docstring). Cancellable at any point (the
        upstream connection is closed).

        Raises:
            RenderRejected: not an image spec, or over ``max_pixels``; an undecodable input.
            MediaRenderError: the upstream failed (see the class docstring).
            MediaDependencyError: Pillow is missing.
        """
        if spec.media_type != "image":
            raise RenderRejected(f"{self._name} renders images only")
        if spec.width * spec.height > self.max_pixels:
            raise RenderRejected(f"{spec.width}x{spec.height} is over {self.max_pixels} pixels")
        require_pillow()
        fields = self._fields(spec)
        source = spec.input_image
        if source is None:
            body = msgspec.json.encode(fields)
            headers = [("content-type", "application/json"), *self._auth()]
            response = await self._call(
                "POST", f"{self.upstream}/images/generations", headers, body
            )
        else:
            content_type, data = _edit_input(source.content_type, source.data, self.max_pixels)
            extension = content_type.split("/")[1]
            boundary = f"trio-sogni-{secrets.token_hex(12)}"
            body = multipart_body(
                {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()},
                [("image", f"image.{extension}", content_type, data)],
                boundary,
            )
            headers = [
                ("content-type", f"multipart/form-data; boundary={boundary}"),
                *self._auth(),
            ]
            response = await self._call("POST", f"{self.upstream}/images/edits", headers, body)
        if response.status >= 400:
            raise MediaRenderError(
                "upstream_error",
                self._redact(f"upstream HTTP {response.status}: {_error_text(response)}"),
            )
        image = await self._image_bytes(response)
        media = _conform(image, spec, self.max_pixels)
        await on_step(spec.steps, spec.steps)
        return media

    async def _image_bytes(self, response: UpstreamResponse) -> bytes:
        try:
            payload = _as_dict(decode_json(response.body))
        except (msgspec.DecodeError, ValueError):
            payload = None
        items: object = payload.get("data") if payload is not None else None
        first = _as_dict(items[0]) if isinstance(items, list) and items else None  # pyright: ignore[reportUnknownArgumentType]
        if first is None:
            raise MediaRenderError("upstream_error", "the upstream's answer has no image (data[0])")
        encoded = first.get("b64_json")
        if isinstance(encoded, str):
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise MediaRenderError(
                    "upstream_error", "the upstream's b64_json is not base64"
                ) from None
        url = first.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            fetched = await self._call("GET", url, [], b"")
            if fetched.status >= 400:
                raise MediaRenderError(
                    "upstream_error", f"fetching the upstream's image URL: HTTP {fetched.status}"
                )
            return fetched.body
        raise MediaRenderError(
            "upstream_error", "the upstream's answer has neither b64_json nor url"
        )


def _edit_input(content_type: str, data: bytes, max_pixels: int) -> tuple[str, bytes]:
    """The input image as sent upstream: PNG, JPEG and WebP as they are, others as PNG."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in {"image/png", "image/jpeg", "image/webp"}:
        return kind, data
    image, _ = _open_image(data, max_pixels, "the input image")
    out = io.BytesIO()
    image.save(out, "PNG")
    return "image/png", out.getvalue()


def _open_image(data: bytes, max_pixels: int, what: str) -> tuple[PILImage.Image, str | None]:
    """The decoded image and its format (checked against ``max_pixels`` before decoding)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise MediaRenderError("upstream_error", f"{what} ({width}x{height}) is too large")
            opened.load()
            return opened.copy(), opened.format
    except MediaRenderError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        if what == "the input image":
            raise RenderRejected(f"{what} cannot be decoded") from None
        raise MediaRenderError("upstream_error", f"{what} is not a decodable image") from None


def _conform(data: bytes, spec: RenderSpec, max_pixels: int) -> RenderedMedia:
    """The upstream's image as the spec asked: its bytes untouched when size and format match,
    else fitted and re-encoded with Pillow."""
    from PIL import ImageOps

    image, found = _open_image(data, max_pixels, "the upstream's image")
    wanted = _PIL_FORMATS[spec.output_format]
    if found != wanted or image.size != (spec.width, spec.height):
        converted = (
            image.convert("RGB") if wanted == "JPEG" or image.mode not in {"RGB", "RGBA"} else image
        )
        if converted.size != (spec.width, spec.height):
            converted = ImageOps.fit(converted, (spec.width, spec.height))
        out = io.BytesIO()
        converted.save(out, wanted)
        data = out.getvalue()
    return RenderedMedia(
        media_type="image",
        data=data,
        content_type=CONTENT_TYPES[spec.output_format],
        output_format=spec.output_format,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        steps=spec.steps,
    )
