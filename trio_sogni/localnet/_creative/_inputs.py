"""The media a hosted tool call may take as input: results of earlier tool calls of the same
conversation, found in its ``tool`` messages, and loaded back from localnet's own storage.

A conversation's **media context** lists, per media type and in order, the URLs of every
successful media tool result in its ``tool`` messages (JSON ``{success: true, media_type,
urls}``, as :class:`~._execute.ToolOutcome` writes them). The index arguments of the hosted tools
pick from it: ``sourceImageIndex`` (0-based; absent: the latest image), ``audioSourceIndex``,
``videoSourceIndex``, ``referenceImageIndices``, ``endImageIndex``. ``-1`` (the user's original
upload) is refused: localnet's hosted routes carry no uploads.

Only media localnet made for the same account is accepted: a URL must be a signed, unexpired
download URL of localnet's storage whose file belongs to the caller (a URL copied from another
account's conversation, forged or expired, is a failed call, ``media_input_invalid``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import parse_qsl, urlsplit

from .._jobs._hostedtools import MediaKind
from .._media._storage import DOWNLOAD_PREFIX, MediaStorage, StorageError, StoredFile

__all__ = ["InputMedia", "MediaContext", "load_input"]

_KINDS: Final = ("image", "video", "audio")

DATA_URI_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp"})
"""The content types an input given as a ``data:`` URI may have (the image adapters' sources)."""

MAX_DATA_URI_BYTES: Final = 10 * 1024 * 1024
"""Bytes an input given as a ``data:`` URI may decode to at most."""


class InputError(Exception):
    """An input that cannot be used; ``code`` and ``message`` as for a failed tool call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InputMedia:
    """One input of a project: its keyframe ``role`` (``contextImage1``, ``startingImage``,
    ``referenceImage``, ``referenceImageEnd``, ``referenceAudio``, ``referenceVideo``) and the
    URL of the earlier result it comes from."""

    role: str
    url: str


class MediaContext:
    """The earlier results of a conversation by media type (see the module docstring)."""

    def __init__(self, messages: Iterable[Mapping[str, Any]]) -> None:
        self.urls: dict[str, list[str]] = {kind: [] for kind in _KINDS}
        for message in messages:
            content = message.get("content")
            if message.get("role") != "tool" or not isinstance(content, str):
                continue
            try:
                value: object = json.loads(content)
            except (ValueError, RecursionError):
                continue
            if not isinstance(value, dict):
                continue
            result = cast("dict[str, Any]", value)
            kind, urls = result.get("media_type"), result.get("urls")
            if result.get("success") is True and kind in self.urls and isinstance(urls, list):
                self.urls[kind].extend(u for u in cast("list[Any]", urls) if isinstance(u, str))

    def pick(self, kind: MediaKind, index: object, argument: str, *, tool: str) -> str:
        """The URL an index argument names (``None``: the latest of ``kind``).

        Raises:
            InputError: ``media_input_required`` (none of that kind yet) or
                ``media_input_invalid`` (-1, not a whole number, out of range).
        """
        urls = self.urls[kind]
        if not urls:
            raise InputError(
                "media_input_required",
                f"{tool} needs an input {kind}, and no earlier tool result of this conversation "
                f"made one (localnet's hosted routes carry no uploads)",
            )
        if index is None:
            return urls[-1]
        if isinstance(index, bool) or not isinstance(index, int | float) or index != int(index):
            raise InputError("media_input_invalid", f"{argument} must be a whole number")
        n = int(index)
        if n == -1:
            raise InputError(
                "media_input_invalid",
                f"{argument} -1 names the user's upload; localnet's hosted routes carry none",
            )
        if not 0 <= n < len(urls):
            raise InputError(
                "media_input_invalid",
                f"{argument} {n} is out of range: this conversation has {len(urls)} {kind} "
                "result(s)",
            )
        return urls[n]


def _data_uri(uri: str) -> tuple[str, bytes]:
    """The content type and bytes of a base64 ``data:`` URI of a PNG, JPEG or WebP image of at
    most ``MAX_DATA_URI_BYTES`` bytes.

    Raises:
        InputError: ``media_input_invalid`` for anything else.
    """
    header, comma, payload = uri[5:].partition(",")
    content_type, _, encoding = header.partition(";")
    content_type = content_type.strip().lower()
    if not comma or encoding.strip().lower() != "base64":
        raise InputError("media_input_invalid", "an input data: URI must be base64-encoded")
    if content_type not in DATA_URI_TYPES:
        raise InputError(
            "media_input_invalid",
            f"an input data: URI must be one of {', '.join(sorted(DATA_URI_TYPES))}",
        )
    if len(payload) > (MAX_DATA_URI_BYTES + 2) // 3 * 4 + 4:
        raise InputError(
            "media_input_invalid", f"an input data: URI is above {MAX_DATA_URI_BYTES} bytes"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("media_input_invalid", "an input data: URI is not valid base64") from None
    if not data or len(data) > MAX_DATA_URI_BYTES:
        raise InputError(
            "media_input_invalid", f"an input data: URI must hold 1 to {MAX_DATA_URI_BYTES} bytes"
        )
    return content_type, data


def _stored(storage: MediaStorage, account_id: str, url: str) -> StoredFile:
    parts = urlsplit(url)
    bad = InputError("media_input_invalid", "an input is not a valid localnet result URL")
    if not parts.path.startswith(DOWNLOAD_PREFIX):
        raise bad
    try:
        storage.verify("GET", parts.path, dict(parse_qsl(parts.query)))
    except StorageError:
        raise InputError(
            "media_input_invalid", "an input's URL is not validly signed or has expired"
        ) from None
    stored = storage.file(parts.path[len(DOWNLOAD_PREFIX) :])
    if stored is None or stored.account_id != account_id:
        raise bad
    return stored


async def load_input(
    storage: MediaStorage, account_id: str, item: InputMedia, project_id: str
) -> None:
    """Store the result (or ``data:`` URI) ``item`` names as the upload of ``role`` for the project
    ``project_id`` of ``account_id`` (what the projects manager reads when the project starts).

    Raises:
        InputError: the URL is not the caller's localnet result, or storage refused it.
    """
    try:
        if item.url.startswith("data:"):
            content_type, data = _data_uri(item.url)
        else:
            stored = _stored(storage, account_id, item.url)
            content_type = stored.content_type
            async with aclosing(storage.chunks(stored)) as chunks:
                data = b"".join([piece async for piece in chunks])
        slot = storage.open_upload(
            account_id,
            project_id,
            item.role,
            content_types=frozenset({content_type}),
            max_size=max(1, len(data)),
        )
        await storage.receive_upload(slot.slot_id, content_type, data)
    except FileNotFoundError:
        raise InputError("media_input_invalid", "an input result is no longer stored") from None
    except StorageError as exc:
        raise InputError("media_input_unavailable", str(exc)) from None
