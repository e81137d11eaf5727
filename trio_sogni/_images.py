"""Vision inputs, the pure part: data URIs, PNG and JPEG pixel sizes, trusted image URLs.

Standard library only (plus the error type), synchronous and without I/O, so the request
builder (`trio_sogni._request`) runs every check here before anything is sent, Pillow or not.
The Trio half (fetching trusted URLs, resizing with Pillow) is `trio_sogni._vision`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from ._errors import InvalidRequestError

__all__ = [
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "DataImage",
    "ImageFormat",
    "TrustedURL",
    "check_trusted_url",
    "data_uri",
    "image_format",
    "image_size",
    "oversized_message",
    "parse_data_uri",
]

MAX_IMAGES: Final = 20
"""At most this many ``image_url`` parts per request (the official SDKs' limit)."""
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
"""The largest image, decoded: 10 MiB."""
MAX_IMAGE_SIDE: Final = 1024
"""The longest side an image may have, in pixels."""

ImageFormat = Literal["png", "jpeg"]

_DATA_URI: Final = re.compile(r"^data:image/(jpeg|jpg|png);base64,(.*)$", re.DOTALL | re.IGNORECASE)
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
_LABEL: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_S3_REGION: Final = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-[0-9]{1,2}$")
_JPEG_SOF: Final = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
"""The JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic);
not DHT (C4), JPG (C8) or DAC (CC), which share the range."""
_JPEG_STANDALONE: Final = frozenset((0x01, *range(0xD0, 0xD8)))
"""Markers without a length field: TEM and the restart markers RST0-RST7."""


def image_format(data: bytes) -> ImageFormat | None:
    """``"png"`` or ``"jpeg"`` by the magic bytes of ``data``, else ``None``."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    # signature (8), then the first chunk, which must be IHDR: length (4) = 13, type (4),
    # width (4), height (4), ...
    if len(data) < 24:
        raise ValueError("the PNG file is truncated before its IHDR header")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise ValueError("the PNG file does not start with an IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    if not 0 < width < 2**31 or not 0 < height < 2**31:
        raise ValueError(f"the PNG header declares an invalid size {width}x{height}")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Segments after SOI: 0xFF, any number of 0xFF fill bytes, the marker, then (except for
    # standalone markers) a 2-byte big-endian length that counts itself. The frame header
    # (SOFn) holds precision (1), height (2), width (2).
    end = len(data)
    i = 2
    while True:
        if i >= end:
            raise ValueError("the JPEG file is truncated before its frame header (SOF)")
        if data[i] != 0xFF:
            raise ValueError(f"the JPEG file is corrupt: no marker at byte {i}")
        while i < end and data[i] == 0xFF:
            i += 1
        if i >= end:
            raise ValueError("the JPEG file is truncated before its frame header (SOF)")
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            what = {0x00: "a stuffed byte", 0xD8: "a second SOI", 0xD9: "its end (EOI)"}
            raise ValueError(
                "the JPEG file has no frame header (SOF) before "
                + what.get(marker, "its scan data (SOS)")
            )
        if i + 2 > end:
            raise ValueError("the JPEG file is truncated before its frame header (SOF)")
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise ValueError(f"the JPEG file is corrupt: a segment of length {length}")
        if marker in _JPEG_SOF:
            if length < 8 or i + 7 > end:
                raise ValueError("the JPEG frame header (SOF) is truncated")
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            if height == 0:
                raise ValueError("the JPEG frame header leaves the height to a DNL marker")
            if width == 0:
                raise ValueError("the JPEG frame header declares a width of 0")
            return width, height
        i += length


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of a PNG (its IHDR header) or JPEG (its SOFn frame header,
    found by walking the markers: APPn/EXIF segments, fill bytes and restart markers are
    skipped). Only the headers are read, never the pixels.

    Raises:
        ValueError: not a PNG or JPEG, or a truncated or corrupt header (the message says why).
    """
    kind = image_format(data)
    if kind == "png":
        return _png_size(data)
    if kind == "jpeg":
        return _jpeg_size(data)
    raise ValueError("the bytes are not a PNG or JPEG image")


@dataclass(frozen=True, slots=True)
class DataImage:
    """A checked image: its bytes, format and pixel size."""

    data: bytes
    format: ImageFormat
    width: int
    height: int

    @property
    def longest_side(self) -> int:
        """The larger of width and height."""
        return max(self.width, self.height)


def check_image_bytes(data: bytes, where: str, declared: ImageFormat | None = None) -> DataImage:
    """Check decoded image bytes: at most 10 MiB, a PNG or JPEG by magic bytes (matching
    ``declared`` when given), with a readable pixel size. The size limit is not checked here.

    Raises:
        InvalidRequestError: naming ``where``.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequestError(f"{where}: the image is larger than {MAX_IMAGE_BYTES} bytes")
    kind = image_format(data)
    if kind is None or (declared is not None and kind != declared):
        expected = declared.upper() if declared is not None else "PNG or JPEG"
        raise InvalidRequestError(f"{where}: the image bytes are not a {expected} file")
    try:
        width, height = image_size(data)
    except ValueError as exc:
        raise InvalidRequestError(f"{where}: {exc}") from None
    return DataImage(data, kind, width, height)


def parse_data_uri(url: str, where: str) -> DataImage:
    """Decode and check a ``data:image/(png|jpeg|jpg);base64,...`` URI: strict base64, at most
    10 MiB decoded, magic bytes matching the declared type, a readable pixel size.

    Raises:
        InvalidRequestError: naming ``where``.
    """
    match = _DATA_URI.match(url)
    if match is None:
        raise InvalidRequestError(
            f"{where}: an image must be an inline base64 data URI of a JPEG or PNG image "
            "(data:image/jpeg;base64,... or data:image/png;base64,...) or an https URL on a "
            "trusted host"
        )
    declared: ImageFormat = "png" if match.group(1).lower() == "png" else "jpeg"
    payload = match.group(2)
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise InvalidRequestError(f"{where}: the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{where}: the image data is not valid base64") from None
    return check_image_bytes(data, where, declared)


def data_uri(data: bytes, kind: ImageFormat) -> str:
    """``data:image/<kind>;base64,<data>``."""
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def oversized_message(where: str, image: DataImage) -> str:
    """The error for an image whose longest side is over the limit, without permission to
    resize it."""
    return (
        f"{where}: the image is {image.width}x{image.height} pixels; its longest side must be "
        f"at most {MAX_IMAGE_SIDE} px (pass resize_images=True to have it resized, keeping its "
        "aspect ratio)"
    )


@dataclass(frozen=True, slots=True)
class TrustedURL:
    """An https image URL on a trusted host (`check_trusted_url`). ``host`` is lower-case; the
    URL's query (where signed S3 and CloudFront URLs carry their credentials) is never shown."""

    url: str
    host: str


def _is_trusted_host(host: str) -> bool:
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    if len(labels) >= 3 and labels[-2:] == ["sogni", "ai"]:
        return True  # *.sogni.ai (cdn.sogni.ai among them)
    if len(labels) >= 3 and labels[-2:] == ["cloudfront", "net"]:
        return True  # *.cloudfront.net
    if labels[-2:] != ["amazonaws", "com"]:
        return False
    rest = labels[:-2]
    # s3.amazonaws.com, <bucket>.s3.amazonaws.com, s3.<region>.amazonaws.com,
    # <bucket>.s3.<region>.amazonaws.com (a bucket name may hold dots).
    if rest and _S3_REGION.match(rest[-1]):
        rest = rest[:-1]
    return bool(rest) and rest[-1] == "s3"


def check_trusted_url(url: str, where: str) -> TrustedURL:
    """Check that ``url`` is an https URL the client may fetch: scheme ``https``; a host name
    under ``*.sogni.ai``, ``*.cloudfront.net``, ``s3.amazonaws.com`` or ``s3.<region>.amazonaws.com``
    (or a bucket under either); no user name or password; no port but 443; no IP address; ASCII
    only, no spaces, backslashes or control characters.

    Raises:
        InvalidRequestError: naming ``where`` and, at most, the host (never the query).
    """
    if not url.isascii() or any(c <= " " or c in "\\\x7f" for c in url):
        raise InvalidRequestError(
            f"{where}: the image URL holds spaces, backslashes, control or non-ASCII characters"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequestError(f"{where}: the image URL is malformed") from None
    if parts.scheme.lower() != "https":
        shown = f"{parts.scheme}:" if parts.scheme else "a URL without a scheme"
        raise InvalidRequestError(
            f"{where}: only https image URLs are fetched, not {shown} (or send inline data URIs)"
        )
    if "@" in parts.netloc:
        raise InvalidRequestError(f"{where}: an image URL must not carry a user name or password")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidRequestError(f"{where}: the image URL has no host")
    if port is not None and port != 443:
        raise InvalidRequestError(
            f"{where}: the image URL names port {port} on {host}; only the default https port "
            "is allowed"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise InvalidRequestError(f"{where}: the image URL's host is an IP address ({host})")
    if not _is_trusted_host(host):
        raise InvalidRequestError(
            f"{where}: the image host {host[:255]!r} is not trusted; images are fetched only from "
            "*.sogni.ai, *.cloudfront.net and Amazon S3 (otherwise send a data URI)"
        )
    return TrustedURL(url, host)
