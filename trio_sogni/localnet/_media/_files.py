"""The media file REST routes: URLs for results and uploads, and the signed file endpoints.

Authenticated like every other REST route of localnet (an ``api-key`` header or an access
token; 401 without), answering ``{status: "success", data: {...}}`` or the Sogni error envelope
``{status: "error", message, errorCode}``. Query parameters are those the official SDKs send
(``sogni_client/projects.py``):

* ``GET /v1/image/downloadUrl?jobId=<project>&imageId=<render>&type=complete[&contentType=]``
  → ``{downloadUrl}`` for an image result. A video or audio result is refused with 404 "This
  result is media, not an image; request it from /v1/media/downloadUrl" (the message the
  Python SDK recognises to retry on the media endpoint);
* ``GET /v1/media/downloadUrl?jobId=<project>&id=<render>&type=complete[&contentType=]`` →
  ``{downloadUrl}`` for any result;
* ``GET /v1/image/uploadUrl?imageId=&jobId=<project>&type=<role>&contentType=`` and
  ``GET /v1/media/uploadUrl?jobId=<project>&type=<role>&contentType=`` → ``{uploadUrl}``, a
  signed ``PUT`` URL bound to the asking account (image endpoint: PNG, JPEG, WebP, GIF up to
  ``image_upload_limit`` bytes; media endpoint: ``referenceAudio*`` roles audio types,
  ``referenceVideo*`` video types, other roles images, up to ``media_upload_limit``).

An unknown ``(project, render)`` and another account's are the same 404. ``type`` other than
``complete`` is a 400; ``contentType`` on a download is a hint only (the file is served with
its own type). The URLs point at the host the request named in its ``Host`` header (when it is
a plain ``host[:port]``) or else at ``base_url()``.

The signed endpoints need no credentials (the signature is one):

* ``GET /localnet/media/files/<file>?expires=&signature=`` streams the file from disk in
  64 KiB pieces with its ``Content-Length`` and ``Content-Type`` (403 tampered or expired; 404
  a file evicted since);
* ``PUT /localnet/media/uploads/<slot>?expires=&signature=`` stores the body for the slot
  (200 ``{status: "success"}``). The checks run on the request head, before the body is read
  (:meth:`~trio_sogni.localnet._server.Router.add`'s ``admit``): 403 bad signature, 404 slot
  unknown, used or expired, 415 content type not allowed, 413 declared length over the slot's
  limit; a body that grows over the limit while it is read is cut with 413, so no more than
  the limit is ever buffered.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Final

from .._config import Account
from .._server import (
    AbortConnection,
    HeadVerdict,
    HTTPRequest,
    HTTPResponse,
    Router,
    error_response,
    json_response,
)
from ._storage import DOWNLOAD_PREFIX, UPLOAD_PREFIX, MediaStorage, StorageError, StoredFile

__all__ = [
    "AUDIO_UPLOAD_TYPES",
    "IMAGE_UPLOAD_TYPES",
    "MEDIA_REFUSAL",
    "VIDEO_UPLOAD_TYPES",
    "media_file_routes",
    "request_base_url",
]

IMAGE_UPLOAD_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
AUDIO_UPLOAD_TYPES: Final = frozenset(
    {
        "audio/mpeg",
        "audio/wav",
        "audio/x-wav",
        "audio/flac",
        "audio/ogg",
        "audio/webm",
        "audio/mp4",
        "audio/aac",
    }
)
VIDEO_UPLOAD_TYPES: Final = frozenset({"video/mp4", "video/webm", "video/quicktime", "video/ogg"})
MEDIA_REFUSAL: Final = "This result is media, not an image; request it from /v1/media/downloadUrl"
"""The image download endpoint's 404 message for a video or audio result."""

_MAX_ID: Final = 128
_ROLE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


def request_base_url(request: HTTPRequest, fallback: Callable[[], str]) -> str:
    """``http://<Host header>`` when the header is a plain ``host[:port]`` (DNS name, IPv4 or
    bracketed IPv6, port up to 65535), else ``fallback()``."""
    host = request.headers.get("host", "")
    if _HOST.fullmatch(host):
        _, colon, port = host.rpartition(":")
        if not colon or "]" in port or int(port) <= 65535:
            return f"http://{host}"
    return fallback()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _param(request: HTTPRequest, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise _BadRequest(400, f"The query parameter {name!r} is required")
    if len(value) > _MAX_ID or not value.isprintable():
        raise _BadRequest(400, f"The query parameter {name!r} is not a valid id")
    return value


def _check_type(request: HTTPRequest) -> None:
    kind = request.query.get("type", "complete") or "complete"
    if kind != "complete":
        raise _BadRequest(400, f"Unsupported download type {kind[:40]!r} (only 'complete')")


def media_file_routes(
    storage: MediaStorage,
    authenticate: Callable[[Mapping[str, str]], Account | None],
    *,
    base_url: Callable[[], str],
    image_upload_limit: int = 10 * 1024 * 1024,
    media_upload_limit: int = 16 * 1024 * 1024,
) -> Router:
    """A router with the media file endpoints (see the module docstring).

    ``base_url()`` is the network's ``http://host:port`` (used when the request's ``Host``
    header is missing or not a plain host). Upload limits are per file; the server's own
    ``max_body_size`` bounds them too.
    """
    return _FileEndpoints(
        storage, authenticate, base_url, image_upload_limit, media_upload_limit
    ).routes()


class _FileEndpoints:
    def __init__(
        self,
        storage: MediaStorage,
        authenticate: Callable[[Mapping[str, str]], Account | None],
        base_url: Callable[[], str],
        image_upload_limit: int,
        media_upload_limit: int,
    ) -> None:
        if image_upload_limit < 1 or media_upload_limit < 1:
            raise ValueError("upload limits must be positive")
        self._storage = storage
        self._authenticate = authenticate
        self._base_url = base_url
        self._image_limit = image_upload_limit
        self._media_limit = media_upload_limit

    def routes(self) -> Router:
        router = Router()
        router.add("GET", "/v1/image/downloadUrl", self._image_download_url)
        router.add("GET", "/v1/media/downloadUrl", self._media_download_url)
        router.add("GET", "/v1/image/uploadUrl", self._image_upload_url)
        router.add("GET", "/v1/media/uploadUrl", self._media_upload_url)
        router.add("GET", DOWNLOAD_PREFIX + "{file}", self._download)
        router.add("PUT", UPLOAD_PREFIX + "{slot}", self._upload, admit=self._admit_upload)
        return router

    def _account(self, request: HTTPRequest) -> Account:
        account = self._authenticate(request.headers)
        if account is None:
            raise _BadRequest(401, "Invalid or missing credentials")
        return account

    # -- URLs -------------------------------------------------------------------------------------

    def _find(self, request: HTTPRequest, render_param: str) -> StoredFile:
        account = self._account(request)
        project = _param(request, "jobId")
        render = _param(request, render_param)
        _check_type(request)
        stored = self._storage.result(account.id, project, render)
        if stored is None:
            raise _BadRequest(404, "No result for this project and render")
        return stored

    def _url_response(self, request: HTTPRequest, stored: StoredFile) -> HTTPResponse:
        base = request_base_url(request, self._base_url)
        url = base + self._storage.download_path(stored)
        return json_response(200, {"status": "success", "data": {"downloadUrl": url}})

    async def _image_download_url(
        self, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        try:
            stored = self._find(request, "imageId")
            if not stored.content_type.startswith("image/"):
                raise _BadRequest(404, MEDIA_REFUSAL)
        except _BadRequest as exc:
            return error_response(exc.status, exc.message)
        return self._url_response(request, stored)

    async def _media_download_url(
        self, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        try:
            stored = self._find(request, "id")
        except _BadRequest as exc:
            return error_response(exc.status, exc.message)
        return self._url_response(request, stored)

    def _open_upload(
        self, request: HTTPRequest, allowed: frozenset[str], limit: int
    ) -> HTTPResponse:
        try:
            account = self._account(request)
            project = _param(request, "jobId")
            role = request.query.get("type", "")
            if not _ROLE.fullmatch(role):
                raise _BadRequest(400, "The query parameter 'type' must name an input role")
            asked = request.query.get("contentType", "").split(";", 1)[0].strip().lower()
            if asked and asked not in allowed:
                raise _BadRequest(415, f"Content type {asked[:80]!r} cannot be uploaded here")
            types = frozenset({asked}) if asked else allowed
            slot = self._storage.open_upload(
                account.id, project, role, content_types=types, max_size=limit
            )
        except _BadRequest as exc:
            return error_response(exc.status, exc.message)
        except StorageError as exc:
            return error_response(exc.status, exc.message)
        url = self._storage.upload_url(slot, request_base_url(request, self._base_url))
        return json_response(200, {"status": "success", "data": {"uploadUrl": url}})

    async def _image_upload_url(
        self, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        return self._open_upload(request, IMAGE_UPLOAD_TYPES, self._image_limit)

    async def _media_upload_url(
        self, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        role = request.query.get("type", "")
        if role.startswith("referenceAudio"):
            allowed = AUDIO_UPLOAD_TYPES
        elif role.startswith("referenceVideo"):
            allowed = VIDEO_UPLOAD_TYPES
        else:
            allowed = IMAGE_UPLOAD_TYPES
        return self._open_upload(request, allowed, self._media_limit)

    # -- signed endpoints -------------------------------------------------------------------------

    async def _download(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            self._storage.verify("GET", request.path, request.query)
        except StorageError as exc:
            return error_response(exc.status, exc.message)
        stored = self._storage.file(params["file"])
        if stored is None:
            return error_response(404, "This file no longer exists")
        storage = self._storage

        async def body() -> AsyncIterator[bytes]:
            try:
                async with aclosing(storage.chunks(stored)) as pieces:
                    async for piece in pieces:
                        yield piece
            except FileNotFoundError:  # evicted between the answer's head and its body
                raise AbortConnection from None

        return HTTPResponse(
            200,
            content_type=stored.content_type,
            headers=[("content-length", str(stored.size)), ("cache-control", "private")],
            stream=body,
        )

    def _admit_upload(self, head: HTTPRequest, params: Mapping[str, str]) -> HeadVerdict:
        try:
            self._storage.verify("PUT", head.path, head.query)
            slot = self._storage.slot(params["slot"])
            if slot is None:
                raise StorageError(404, "This upload URL is unknown or expired")
            length = head.headers.get("content-length")
            text = (length or "").strip()
            declared = int(text) if text.isascii() and text.isdigit() else None
            self._storage.check_upload(slot, head.headers.get("content-type"), declared)
        except StorageError as exc:
            return error_response(exc.status, exc.message)
        return slot.max_size

    async def _upload(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        # In-process callers (RestAPI.handle) skip admission: every check is made again here.
        verdict = self._admit_upload(request, params)
        if isinstance(verdict, HTTPResponse):
            return verdict
        try:
            await self._storage.receive_upload(
                params["slot"], request.headers.get("content-type"), request.body
            )
        except StorageError as exc:
            return error_response(exc.status, exc.message)
        return json_response(200, {"status": "success"})
