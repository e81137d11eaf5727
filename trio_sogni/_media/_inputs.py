"""Media inputs of a project (edit and context images, a starting image, reference audio and
video): from bytes, a path or a data URI, sniffed, size-checked, then uploaded through the
signed upload URLs the API hands out.

Nothing here holds a whole file in memory for a path input: the upload streams it from disk in
`CHUNK_SIZE` pieces. The content type always comes from the bytes (magic numbers), never from a
file name or a data URI's declared type, and must suit the input's role.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlencode

import msgspec
import trio
from typing_extensions import override

from .._errors import APIStatusError, InvalidRequestError, ProtocolError
from .._transport import RestClient

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_INPUT_SIZE",
    "InputKind",
    "MediaInput",
    "kind_of_role",
    "media_input",
    "new_upload_id",
    "sniff_content_type",
    "upload_input",
]

InputKind = Literal["image", "audio", "video"]
"""What a role accepts."""

CHUNK_SIZE: Final = 256 * 1024
"""Bytes read from a file (and handed to the HTTP client) at a time during an upload."""

DEFAULT_MAX_INPUT_SIZE: Final = 100 * 1024 * 1024
"""The largest input uploaded by default: 100 MiB, the official SDKs' limit on an upload."""

SNIFF_BYTES: Final = 16
"""How many leading bytes `sniff_content_type` looks at."""

CONTENT_TYPES: Final[dict[InputKind, frozenset[str]]] = {
    "image": frozenset({"image/png", "image/jpeg", "image/webp"}),
    "video": frozenset({"video/mp4", "video/webm"}),
    "audio": frozenset({"audio/mpeg", "audio/wav", "audio/flac", "audio/ogg"}),
}
"""The content types each kind of role accepts."""

_IMAGE_ROLE: Final = re.compile(
    r"^(startingImage|referenceImage|referenceImageEnd|referenceMask|cnImage"
    r"|contextImage([1-9]|1[0-6]))$"
)
_AUDIO_ROLE: Final = re.compile(r"^referenceAudio([1-3])?$")
_VIDEO_ROLE: Final = re.compile(r"^referenceVideo([1-3])?$")
_DATA_URI: Final = re.compile(r"^data:([\w.+/-]*)((?:;[\w.+-]+=[\w.+-]+)*)(;base64)?,", re.ASCII)


def kind_of_role(role: str) -> InputKind:
    """The kind of media a keyframe input role takes (``startingImage``, ``contextImage1`` to
    ``contextImage16``, ``referenceImage``, ``referenceImageEnd``, ``referenceMask``, ``cnImage``:
    images; ``referenceAudio[1-3]``: audio; ``referenceVideo[1-3]``: video).

    Raises:
        InvalidRequestError: an unknown role.
    """
    if _IMAGE_ROLE.match(role):
        return "image"
    if _AUDIO_ROLE.match(role):
        return "audio"
    if _VIDEO_ROLE.match(role):
        return "video"
    raise InvalidRequestError(f"unknown media input role {role[:64]!r}")


def sniff_content_type(head: bytes) -> str | None:
    """The content type of media starting with ``head`` (its first `SNIFF_BYTES` bytes or
    more), from magic numbers: PNG, JPEG, WebP; MP4 (ISO BMFF ``ftyp``), WebM (EBML); MP3 (ID3
    or an MPEG audio frame sync), WAV (RIFF/WAVE), FLAC, Ogg. ``None`` for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def new_upload_id() -> str:
    """A fresh upper-case UUID4 (the ``imageId`` of an image upload, like a project id)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, eq=False, slots=True)
class MediaInput:
    """One media input: bytes in memory or a file on disk, with its sniffed content type and
    size. Build one with ``media_input`` (or the ``from_*`` constructors); the request builder
    turns it into the keyframe's flags and ``upload_input`` uploads it.

    For a file, only its first bytes and its size are read when the input is made; the upload
    streams the rest, so a large file is never held in memory. The file must not change in
    between (an upload that finds a different length fails).
    """

    content_type: str
    size: int
    data: bytes | None = None
    path: Path | None = None

    @override
    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path is not None else "bytes"
        return f"MediaInput({self.content_type}, {self.size} bytes, {where})"

    @property
    def kind(self) -> InputKind:
        """``image``, ``audio`` or ``video``, from the content type."""
        top = self.content_type.partition("/")[0]
        return "image" if top == "image" else "audio" if top == "audio" else "video"

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = DEFAULT_MAX_INPUT_SIZE) -> MediaInput:
        """An input from bytes in memory.

        Raises:
            InvalidRequestError: empty, larger than ``max_size``, or not a supported media type.
        """
        if not isinstance(data, bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError(
                f"a media input must be bytes, a path or a data URI, not {type(data).__name__}"
            )
        data = bytes(data)
        _check_size(len(data), max_size)
        return cls(content_type=_sniff_or_fail(data[:SNIFF_BYTES]), size=len(data), data=data)

    @classmethod
    def from_data_uri(cls, uri: str, *, max_size: int = DEFAULT_MAX_INPUT_SIZE) -> MediaInput:
        """An input from a base64 ``data:`` URI. The declared type is ignored: the decoded bytes
        are sniffed.

        Raises:
            InvalidRequestError: not a data URI, bad base64, too large, or not supported media.
        """
        match = _DATA_URI.match(uri)
        if match is None:
            raise InvalidRequestError("a media input string must be a data: URI or a path")
        payload = uri[match.end() :]
        if match.group(3) is None:
            raise InvalidRequestError("a media input data: URI must be base64-encoded")
        if len(payload) * 3 // 4 > max_size + 3:
            raise InvalidRequestError(
                f"the media input is larger than {max_size} bytes (about {len(payload) * 3 // 4})"
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("the media input data: URI holds invalid base64") from None
        return cls.from_bytes(data, max_size=max_size)

    @classmethod
    async def from_path(
        cls, path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_INPUT_SIZE
    ) -> MediaInput:
        """An input from a file: reads its size and first bytes (in a worker thread; a
        checkpoint), not the whole file.

        Raises:
            InvalidRequestError: the file cannot be read, is empty, larger than ``max_size``, or
                not a supported media type.
        """
        given = Path(path)

        def probe() -> tuple[Path, int, bytes]:
            resolved = given.expanduser()
            with resolved.open("rb") as file:
                return resolved, os.fstat(file.fileno()).st_size, file.read(SNIFF_BYTES)

        try:
            resolved, size, head = await trio.to_thread.run_sync(probe)
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read the media input {str(given)!r}: {exc.strerror or exc}"
            ) from None
        _check_size(size, max_size)
        return cls(content_type=_sniff_or_fail(head), size=size, path=resolved)

    async def chunks(self) -> AsyncGenerator[bytes]:
        """The content, `CHUNK_SIZE` bytes at a time: slices of the bytes, or reads of the file
        (a worker thread per read). Exactly `size` bytes or `InvalidRequestError`."""
        if self.data is not None:
            for start in range(0, len(self.data), CHUNK_SIZE):
                yield self.data[start : start + CHUNK_SIZE]
            return
        assert self.path is not None
        async with await trio.open_file(self.path, "rb") as file:
            sent = 0
            while sent < self.size:
                chunk = await file.read(min(CHUNK_SIZE, self.size - sent))
                if not chunk:
                    raise InvalidRequestError(
                        f"the media input {str(self.path)!r} shrank while it was being uploaded"
                    )
                if sent == 0 and sniff_content_type(chunk[:SNIFF_BYTES]) != self.content_type:
                    raise InvalidRequestError(
                        f"the media input {str(self.path)!r} changed while it was being uploaded"
                    )
                sent += len(chunk)
                yield chunk
            if await file.read(1):
                raise InvalidRequestError(
                    f"the media input {str(self.path)!r} grew while it was being uploaded"
                )


def _check_size(size: int, max_size: int) -> None:
    if size == 0:
        raise InvalidRequestError("the media input is empty")
    if size > max_size:
        raise InvalidRequestError(f"the media input is {size} bytes, more than {max_size} allowed")


def _sniff_or_fail(head: bytes) -> str:
    content_type = sniff_content_type(head)
    if content_type is None:
        raise InvalidRequestError(
            "the media input is not a supported type (PNG, JPEG or WebP images; MP4 or WebM "
            "video; MP3, WAV, FLAC or Ogg audio)"
        )
    return content_type


MediaInputSource = bytes | bytearray | memoryview | str | os.PathLike[str] | MediaInput
"""What a media input may be given as: bytes, a ``data:`` URI, a path, or a `MediaInput`."""


async def media_input(
    value: MediaInputSource, role: str, *, max_size: int = DEFAULT_MAX_INPUT_SIZE
) -> MediaInput:
    """``value`` as a `MediaInput` for ``role`` (see `kind_of_role`): bytes, a string starting
    with ``data:`` (a data URI), any other string or path-like (a file), or a `MediaInput`.
    A checkpoint (for a file, the probe runs in a worker thread).

    Raises:
        InvalidRequestError: unreadable, empty, too large, not supported media, or media of the
            wrong kind for the role (an audio file as ``contextImage1``...).
    """
    kind = kind_of_role(role)
    if isinstance(value, MediaInput):
        result = value
        _check_size(result.size, max_size)
    elif isinstance(value, bytes | bytearray | memoryview):
        result = MediaInput.from_bytes(bytes(value), max_size=max_size)
    elif isinstance(value, str) and value.startswith("data:"):
        result = MediaInput.from_data_uri(value, max_size=max_size)
    elif isinstance(value, str | os.PathLike):  # pyright: ignore[reportUnnecessaryIsInstance]
        result = await MediaInput.from_path(value, max_size=max_size)
    else:
        raise InvalidRequestError(
            f"{role}: a media input must be bytes, a path or a data URI, not {type(value).__name__}"
        )
    if result.content_type not in CONTENT_TYPES[kind]:
        raise InvalidRequestError(
            f"{role} takes {kind} media ({', '.join(sorted(CONTENT_TYPES[kind]))}), "
            f"not {result.content_type}"
        )
    await trio.lowlevel.checkpoint()
    return result


class _UploadData(msgspec.Struct):
    upload_url: str = msgspec.field(name="uploadUrl")


class _UploadAnswer(msgspec.Struct):
    data: _UploadData


_UPLOAD_REFUSALS: Final = {
    403: "refused (HTTP 403: the upload URL is not valid for this account, or it expired)",
    413: "refused as too large (HTTP 413)",
    415: "refused: the server does not accept this content type (HTTP 415)",
}


async def upload_input(rest: RestClient, project_id: str, role: str, media: MediaInput) -> str:
    """Upload ``media`` as ``role`` of project ``project_id``; returns its content type.

    Images ask ``GET /v1/image/uploadUrl?imageId=<new id>&jobId=&type=<role>&contentType=``,
    audio and video ``GET /v1/media/uploadUrl?jobId=&type=<role>&contentType=`` (the official
    SDKs' queries) for a signed URL, then PUT the bytes there, streamed `CHUNK_SIZE` at a time
    (from disk for a file). Cancellable at every step; a cancelled upload leaves nothing to
    clean up on this side.

    Raises:
        InvalidRequestError: the role does not take this kind of media, or the file changed
            while it was read.
        APIStatusError: the API refused the upload URL, or the PUT was refused (403, 413 too
            large, 415 type...); the message says which, never with the URL's signature.
        ProtocolError: the upload-URL answer is not ``{data: {uploadUrl}}``.
        ConnectError, TransportError: the requests could not be completed.
    """
    kind = kind_of_role(role)
    if media.content_type not in CONTENT_TYPES[kind]:
        raise InvalidRequestError(f"{role} takes {kind} media, not {media.content_type}")
    if kind == "image":
        query = urlencode(
            {
                "imageId": new_upload_id(),
                "jobId": project_id,
                "type": role,
                "contentType": media.content_type,
            }
        )
        path = f"/v1/image/uploadUrl?{query}"
    else:
        query = urlencode({"jobId": project_id, "type": role, "contentType": media.content_type})
        path = f"/v1/media/uploadUrl?{query}"
    body = await rest.request("GET", path)
    try:
        url = msgspec.convert(body, _UploadAnswer).data.upload_url
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"unexpected upload URL answer for {role}: {exc}") from None
    try:
        if media.data is not None:
            await rest.put_url(
                url, media.data, content_type=media.content_type, content_length=media.size
            )
        else:
            async with aclosing(media.chunks()) as chunks:
                await rest.put_url(
                    url, chunks, content_type=media.content_type, content_length=media.size
                )
    except APIStatusError as exc:
        reason = _UPLOAD_REFUSALS.get(exc.status_code, f"refused (HTTP {exc.status_code})")
        raise APIStatusError(
            f"the upload of {role} ({media.content_type}, {media.size} bytes) was {reason}",
            status_code=exc.status_code,
            error_code=exc.error_code,
            payload=exc.payload,
            retry_after=exc.retry_after,
        ) from None
    return media.content_type
