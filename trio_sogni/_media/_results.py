"""One render of a media project (`MediaResult`) and the download of its media.

Result URLs come from the ``jobResult`` frame (``resultUrl``) when the server put one there,
else from ``GET /v1/image/downloadUrl?jobId=&imageId=&type=complete`` (images) or
``GET /v1/media/downloadUrl?jobId=&id=&type=complete`` (video, audio), which answer
``{status: "success", data: {downloadUrl}}``: a short-lived signed URL, fetched with a plain
GET that carries no credentials. Downloads stream: `MediaResult.read` holds at most
``max_size`` bytes, `MediaResult.save` holds one network chunk at a time.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import msgspec
import trio
from typing_extensions import override

from .._errors import APIStatusError, ProjectError, ProtocolError, TransportError
from .._transport import RestClient
from ._request import MediaType, content_type_of_output

__all__ = ["DEFAULT_MAX_READ_SIZE", "DEFAULT_MAX_SAVE_SIZE", "MediaResult"]

DEFAULT_MAX_READ_SIZE: Final = 64 * 1024 * 1024
"""The largest body `MediaResult.read` accepts by default: 64 MiB (as REST responses)."""

DEFAULT_MAX_SAVE_SIZE: Final = 4 * 1024 * 1024 * 1024
"""The largest body `MediaResult.save` writes by default: 4 GiB."""

CLEANUP_GRACE: Final = 5.0
"""Seconds a cancelled or failed `MediaResult.save` may spend removing its partial file."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")

_EXTENSIONS: Final = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/flac": "flac",
}


class _DownloadData(msgspec.Struct):
    download_url: str = msgspec.field(name="downloadUrl")


class _DownloadAnswer(msgspec.Struct):
    data: _DownloadData


class MediaResult:
    """One finished render (``imgID``) of a project, and its media.

    Attributes:
        project_id: the project's id (``jobID``).
        render_id: the render's ``imgID``.
        media_type: ``image``, ``video`` or ``audio``.
        content_type: the media's content type, from the output format.
        seed: the seed the render used (``lastSeed``), if the server said.
        nsfw: true when the safety filter withheld the render (``triggeredNSFWFilter``): it
            has no media, and `url`, `read` and `save` raise `ProjectError` with ``nsfw``.
        nsfw_detected: true when the render was flagged but delivered (``nsfwDetected``).
        performed_steps: ``performedStepCount``, if the server said.
        last_frame_url: a video's last frame (``lastFrameUrl``), if the server gave one.

    The ``repr`` shows ids, type and flags, never a URL (signed URLs are credentials).
    """

    __slots__ = (
        "_output_format",
        "_rest",
        "_result_url",
        "content_type",
        "last_frame_url",
        "media_type",
        "nsfw",
        "nsfw_detected",
        "performed_steps",
        "project_id",
        "render_id",
        "seed",
    )

    def __init__(
        self,
        rest: RestClient,
        *,
        project_id: str,
        render_id: str,
        media_type: MediaType,
        output_format: str | None = None,
        seed: int | None = None,
        nsfw: bool = False,
        nsfw_detected: bool = False,
        performed_steps: int | None = None,
        result_url: str | None = None,
        last_frame_url: str | None = None,
    ) -> None:
        self._rest = rest
        self._output_format = output_format
        self._result_url = result_url or None
        self.project_id = project_id
        self.render_id = render_id
        self.media_type: MediaType = media_type
        self.content_type = content_type_of_output(media_type, output_format)
        self.seed = seed
        self.nsfw = nsfw
        self.nsfw_detected = nsfw_detected
        self.performed_steps = performed_steps
        self.last_frame_url = last_frame_url or None

    @override
    def __repr__(self) -> str:
        flags = " nsfw" if self.nsfw else ""
        return (
            f"<MediaResult {self.media_type} project={self.project_id} render={self.render_id} "
            f"{self.content_type} seed={self.seed}{flags}>"
        )

    def _withheld(self) -> ProjectError:
        return ProjectError(
            f"render {self.render_id} of project {self.project_id} was withheld by the "
            "safety filter (NSFW); it has no media",
            project_id=self.project_id,
            img_id=self.render_id,
            code="nsfw",
            nsfw=True,
        )

    async def url(self) -> str:
        """A URL the media can be fetched from: the result frame's own, or a fresh signed URL
        from the download-URL endpoint (asked on every call: they expire). A checkpoint.

        The URL is a credential for the media; do not log it.

        Raises:
            ProjectError: the render was withheld by the safety filter (``nsfw``).
            APIStatusError: the API refused (e.g. 404 when it no longer has the render).
            ProtocolError: the answer is not ``{data: {downloadUrl}}``.
            ConnectError, TransportError: the request could not be completed.
        """
        if self.nsfw:
            raise self._withheld()
        if self._result_url is not None:
            await trio.lowlevel.checkpoint()
            return self._result_url
        if self.media_type == "image":
            query: dict[str, str] = {
                "jobId": self.project_id,
                "imageId": self.render_id,
                "type": "complete",
            }
            if self._output_format is not None:
                query["contentType"] = self.content_type
            try:
                return await self._download_url(f"/v1/image/downloadUrl?{urlencode(query)}")
            except APIStatusError as exc:
                # The image endpoint answers 404 naming the media endpoint for a result that
                # is not an image (the official SDKs then ask that one).
                if exc.status_code != 404 or "/v1/media/downloadUrl" not in str(exc):
                    raise
        query = {"jobId": self.project_id, "id": self.render_id, "type": "complete"}
        if self.media_type == "audio":
            query["contentType"] = self.content_type
        return await self._download_url(f"/v1/media/downloadUrl?{urlencode(query)}")

    async def _download_url(self, path: str) -> str:
        body = await self._rest.request("GET", path)
        try:
            return msgspec.convert(body, _DownloadAnswer).data.download_url
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"unexpected download URL answer: {exc}") from None

    async def read(self, *, max_size: int = DEFAULT_MAX_READ_SIZE) -> bytes:
        """The media, in memory. Reads at most ``max_size`` bytes: a longer body (declared or
        found while reading) fails without reading on. Cancellable at every network read; a
        cancelled read keeps nothing.

        Raises:
            ProjectError: the render was withheld by the safety filter.
            TransportError: the body is larger than ``max_size``, or the download failed.
            APIStatusError, ProtocolError, ConnectError: as `url`, or the download was
                refused (the message shows the URL without its signature).
        """
        if max_size < 1:
            raise ValueError("max_size must be positive")
        url = await self.url()
        body = bytearray()
        async with self._rest.get_url(url) as download:
            self._check_declared_size(download.content_length, max_size)
            async for chunk in download:
                if len(body) + len(chunk) > max_size:
                    raise TransportError(self._too_large(max_size))
                body += chunk
        return bytes(body)

    async def save(
        self, path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_SAVE_SIZE
    ) -> Path:
        """Download the media to ``path`` and return the path written. An existing directory
        gets a file named ``<project id>-<render id>.<extension>`` in it; an existing file is
        replaced.

        The body streams into a new temporary file in the same directory (at most about 1 MiB
        in memory at a time), which gets the mode a new file gets (``0666`` less the umask) and
        is renamed to ``path`` only once the whole body is written, so ``path`` is either
        untouched or complete. (In a directory, characters of the ids other than letters,
        digits, ``-``, ``_`` and ``.`` become ``_``.) On any failure, cancellation included, the
        temporary file is removed (a shielded cleanup bounded by
        ``CLEANUP_GRACE``). Cancellable at every network read and file write.

        Raises:
            ProjectError: the render was withheld by the safety filter.
            TransportError: the body is larger than ``max_size``, or the download failed.
            APIStatusError, ProtocolError, ConnectError: as `read`.
            OSError: the file could not be written.
        """
        if max_size < 1:
            raise ValueError("max_size must be positive")
        target = trio.Path(path)
        if await target.is_dir():
            extension = _EXTENSIONS.get(self.content_type, "bin")
            name = _safe_name(f"{self.project_id}-{self.render_id}")
            target = target / f"{name}.{extension}"
        url = await self.url()
        async with self._rest.get_url(url) as download:
            self._check_declared_size(download.content_length, max_size)
            fd, temporary = await trio.to_thread.run_sync(
                lambda: tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".part", dir=os.fspath(target.parent)
                )
            )
            try:
                async with trio.wrap_file(os.fdopen(fd, "wb")) as file:
                    written = 0
                    pending = bytearray()  # one thread hop per WRITE_BATCH bytes, not per chunk
                    async for chunk in download:
                        written += len(chunk)
                        if written > max_size:
                            raise TransportError(self._too_large(max_size))
                        pending += chunk
                        if len(pending) >= WRITE_BATCH:
                            await file.write(pending)
                            pending.clear()
                    if pending:
                        await file.write(pending)
                # mkstemp makes the file private (0600); give it the mode a new file gets.
                await trio.to_thread.run_sync(os.chmod, temporary, 0o666 & ~_umask())
                await trio.Path(temporary).replace(target)
            except BaseException:
                with trio.move_on_after(CLEANUP_GRACE, shield=True):
                    await trio.to_thread.run_sync(_remove, temporary, abandon_on_cancel=True)
                raise
        return Path(target)

    def _check_declared_size(self, declared: int | None, max_size: int) -> None:
        if declared is not None and declared > max_size:
            raise TransportError(self._too_large(max_size))

    def _too_large(self, max_size: int) -> str:
        return (
            f"the media of render {self.render_id} of project {self.project_id} is larger "
            f"than {max_size} bytes (max_size)"
        )


WRITE_BATCH: Final = 1024 * 1024
"""`MediaResult.save` writes the file this many bytes at a time (the memory it holds)."""


def _umask() -> int:
    """The process's umask, read without changing it (Linux ``/proc``), else the usual 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _safe_name(name: str) -> str:
    """``name`` as one harmless file name: ids come from the server, so anything but letters,
    digits, ``-``, ``_`` and ``.`` becomes ``_`` and leading dots are dropped (no ``..``, no
    separators, no hidden files)."""
    return _UNSAFE.sub("_", name).lstrip(".")[:200] or "media"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
