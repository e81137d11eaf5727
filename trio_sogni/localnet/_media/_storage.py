"""Media files on disk: render results, uploads, and the signed URLs that reach them.

:class:`MediaStorage` keeps every file under ``<data_dir>/media`` (a temporary directory by
default, removed by :meth:`MediaStorage.close`) and an index in memory, so stored files last as
long as the network (not across a restart).

**Results** are keyed by ``(account, project id, render id)``: :meth:`MediaStorage.store_result`
writes one, :meth:`MediaStorage.result` finds one (another account's is simply not found), and
:meth:`MediaStorage.download_url` mints a signed ``GET`` URL for it.

**Uploads**: :meth:`MediaStorage.open_upload` mints an upload slot bound to the account that
asked, with a maximum size and a set of allowed content types, and a signed ``PUT`` URL for it;
:meth:`MediaStorage.receive_upload` checks and stores the bytes sent there; the projects manager
reads them back with :meth:`MediaStorage.read_upload`, which finds an upload only for the
account that opened its slot.

**Signed URLs**: ``<base>/localnet/media/<file>?expires=<unix seconds>&signature=<hex>``, the
signature being HMAC-SHA256 over ``METHOD + "\\n" + path + "\\n" + expires`` with a key drawn at
random per storage (per network). :meth:`MediaStorage.verify` refuses a tampered, foreign or
expired URL with :class:`StorageError` ``403``. Time comes from the injectable ``clock``
(seconds since the epoch), so tests move it.

**Bounds** (the policy):

* total bytes stored (results and uploads) stay under ``max_total_bytes`` and files under
  ``max_files``: to make room, the oldest *results* are deleted first (their URLs then answer
  404); when that is not enough (uploads fill the space) the new file is refused
  (:class:`StorageError` ``507``). Uploads are never evicted for room;
* pending upload slots (opened, not yet used, not expired) per account: at most
  ``max_pending_uploads``, and at most ``max_files`` in all (one more is ``429``); a slot
  expires with its URL (``upload_ttl``);
* a received upload lives ``upload_ttl`` seconds after it arrived, or until
  :meth:`MediaStorage.discard_project`; a second upload for the same ``(account, project,
  role)`` replaces the first.

File I/O runs in worker threads (``trio.to_thread``) unless ``offload_io=False`` (for
``MockClock`` tests, where a running thread lets the clock jump): then it blocks the Trio
thread, which is fine for small files. Downloads are read in :data:`CHUNK_SIZE` pieces, never
whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import os
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import trio
from typing_extensions import override

from ._render import MediaInput, RenderedMedia

__all__ = [
    "CHUNK_SIZE",
    "DOWNLOAD_PREFIX",
    "UPLOAD_PREFIX",
    "MediaStorage",
    "StorageError",
    "StoredFile",
    "UploadSlot",
    "normalize_content_type",
]

CHUNK_SIZE: Final = 64 * 1024
"""Bytes read from disk per piece of a download."""
DOWNLOAD_PREFIX: Final = "/localnet/media/files/"
UPLOAD_PREFIX: Final = "/localnet/media/uploads/"

_EXTENSIONS: Final[Mapping[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
}

T = TypeVar("T")


class StorageError(Exception):
    """A storage operation refused: ``status`` is the HTTP status the routes answer (403 bad
    or expired signature, 404 unknown file or slot, 413 too large, 415 content type not
    allowed, 429 too many pending uploads, 507 no room)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def normalize_content_type(value: str) -> str:
    """``"Image/PNG; charset=x"`` → ``"image/png"``."""
    return value.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class StoredFile:
    """A file in the storage (a result, or a received upload)."""

    file_id: str
    account_id: str = field(repr=False)
    project_id: str
    key: str
    """The render id (results) or the input role (uploads)."""
    content_type: str
    size: int
    created: float
    path: Path = field(repr=False)
    upload: bool = False


@dataclass(frozen=True)
class UploadSlot:
    """An upload slot: where one account may ``PUT`` one file of at most ``max_size`` bytes
    with one of ``content_types``, until ``expires`` (seconds since the epoch)."""

    slot_id: str
    account_id: str = field(repr=False)
    project_id: str
    role: str
    content_types: frozenset[str]
    max_size: int
    expires: int


class MediaStorage:
    """Results and uploads on disk, with signed, expiring URLs (see the module docstring).

    Args:
        data_dir: the network's data directory (files go to ``<data_dir>/media``); ``None``: a
            new temporary directory, removed by :meth:`close`.
        clock: seconds since the epoch (URL expiry; upload lifetimes).
        url_ttl: seconds a download URL stays valid.
        upload_ttl: seconds an upload URL stays valid, and a received upload is kept.
        max_total_bytes, max_files: the storage's bounds (see the module docstring).
        max_pending_uploads: open upload slots per account.
        offload_io: run file I/O in threads (``False`` for ``MockClock`` tests).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        url_ttl: float = 3600.0,
        upload_ttl: float = 3600.0,
        max_total_bytes: int = 2 * 1024**3,
        max_files: int = 10_000,
        max_pending_uploads: int = 32,
        offload_io: bool = True,
    ) -> None:
        if url_ttl <= 0 or upload_ttl <= 0:
            raise ValueError("url_ttl and upload_ttl must be positive")
        if max_total_bytes < 1 or max_files < 1 or max_pending_uploads < 1:
            raise ValueError("max_total_bytes, max_files and max_pending_uploads must be >= 1")
        self._owned = data_dir is None
        base = Path(tempfile.mkdtemp(prefix="localnet-")) if data_dir is None else Path(data_dir)
        self.root: Final = base / "media"
        """Where the files are (``<data_dir>/media``)."""
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.url_ttl = url_ttl
        self.upload_ttl = upload_ttl
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self.max_pending_uploads = max_pending_uploads
        self.offload_io = offload_io
        self._key = secrets.token_bytes(32)
        self._files: OrderedDict[str, StoredFile] = OrderedDict()  # oldest first
        self._results: dict[tuple[str, str, str], str] = {}
        self._uploads: dict[tuple[str, str, str], str] = {}
        self._slots: dict[str, UploadSlot] = {}
        self._total = 0
        self._names = itertools.count(1)

    @override
    def __repr__(self) -> str:
        return f"MediaStorage({str(self.root)!r}, files={len(self._files)}, bytes={self._total})"

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Forget every file; remove the directory if this storage created it (synchronous)."""
        self._files.clear()
        self._results.clear()
        self._uploads.clear()
        self._slots.clear()
        self._total = 0
        if self._owned:
            shutil.rmtree(self.root.parent, ignore_errors=True)

    @property
    def total_bytes(self) -> int:
        """Bytes stored now (results and uploads)."""
        return self._total

    @property
    def file_count(self) -> int:
        return len(self._files)

    def pending_uploads(self, account_id: str) -> int:
        """Open (unused, unexpired) upload slots of ``account_id``."""
        self._sweep()
        return sum(1 for slot in self._slots.values() if slot.account_id == account_id)

    # -- signing ----------------------------------------------------------------------------------

    def _signature(self, method: str, path: str, expires: int) -> str:
        message = f"{method.upper()}\n{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, ttl: float) -> str:
        """``path?expires=...&signature=...`` valid for ``method`` for ``ttl`` seconds."""
        expires = int(self.clock() + ttl)
        return f"{path}?expires={expires}&signature={self._signature(method, path, expires)}"

    def verify(self, method: str, path: str, query: Mapping[str, str]) -> None:
        """Check a signed request.

        Raises:
            StorageError: 403 when ``expires`` or ``signature`` is missing or malformed, the
                signature does not match ``method``, ``path`` and ``expires``, or the URL
                expired.
        """
        expires_text = query.get("expires", "")
        signature = query.get("signature", "")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
            raise StorageError(403, "This URL is not validly signed")
        expires = int(expires_text)
        expected = self._signature(method, path, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise StorageError(403, "This URL is not validly signed")
        if self.clock() >= expires:
            raise StorageError(403, "This URL has expired")

    # -- I/O helpers ------------------------------------------------------------------------------

    async def _io(self, fn: Callable[[], T]) -> T:
        if self.offload_io:
            return await trio.to_thread.run_sync(fn)
        await trio.lowlevel.checkpoint()
        return fn()

    def _new_id(self) -> str:
        return f"{secrets.token_urlsafe(18)}{next(self._names)}"

    def _sweep(self) -> None:
        """Drop expired slots and expired uploads (synchronous; unlinks small directory
        entries, so it is cheap)."""
        now = self.clock()
        for slot_id in [s for s, slot in self._slots.items() if now >= slot.expires]:
            del self._slots[slot_id]
        for key, file_id in list(self._uploads.items()):
            stored = self._files[file_id]
            if now >= stored.created + self.upload_ttl:
                del self._uploads[key]
                self._forget(file_id)

    def _forget(self, file_id: str) -> None:
        stored = self._files.pop(file_id, None)
        if stored is None:
            return
        self._total -= stored.size
        if not stored.upload:
            self._results.pop((stored.account_id, stored.project_id, stored.key), None)
        with contextlib.suppress(OSError):
            stored.path.unlink()

    def _make_room(self, size: int) -> None:
        """Evict the oldest results until ``size`` more bytes and one more file fit.

        Raises:
            StorageError: 507 when uploads alone leave no room.
        """
        self._sweep()
        if size > self.max_total_bytes:
            raise StorageError(507, f"A file of {size} bytes is over the storage limit")
        for file_id, stored in list(self._files.items()):
            if self._total + size <= self.max_total_bytes and len(self._files) < self.max_files:
                return
            if not stored.upload:
                self._forget(file_id)
        if self._total + size > self.max_total_bytes or len(self._files) >= self.max_files:
            raise StorageError(507, "The media storage is full")

    async def _write(self, path: Path, data: bytes) -> None:
        def write() -> None:
            try:
                with open(path, "wb") as out:
                    out.write(data)
            except OSError:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise

        try:
            await self._io(write)
        except OSError as exc:
            raise StorageError(507, f"Cannot store the file: {exc.strerror}") from None

    # -- results ----------------------------------------------------------------------------------

    async def store_result(
        self, account_id: str, project_id: str, render_id: str, media: RenderedMedia
    ) -> StoredFile:
        """Write one render's file (replacing an earlier one with the same key) and index it.
        A checkpoint (the write runs in a thread).

        Raises:
            StorageError: 507 when there is no room (see the module docstring).
        """
        return await self._store_result(
            account_id,
            project_id,
            render_id,
            media.data,
            media.content_type,
            _EXTENSIONS.get(media.content_type, media.output_format),
        )

    async def store(
        self, account: str, project: str, render_id: str, data: bytes, content_type: str
    ) -> None:
        """The projects manager's storage seam (its ``MediaStorage`` protocol): `store_result`
        for bytes of a known content type.

        Raises:
            StorageError: 507 when there is no room.
        """
        extension = _EXTENSIONS.get(normalize_content_type(content_type), "bin")
        await self._store_result(account, project, render_id, data, content_type, extension)

    async def _store_result(
        self,
        account_id: str,
        project_id: str,
        render_id: str,
        data: bytes,
        content_type: str,
        extension: str,
    ) -> StoredFile:
        key = (account_id, project_id, render_id)
        if key in self._results:
            self._forget(self._results[key])
        self._make_room(len(data))
        file_id = self._new_id()
        path = self.root / "files" / f"{file_id}.{extension}"
        # Accounted before the write, so concurrent stores cannot overshoot the bound together.
        stored = StoredFile(
            file_id=f"{file_id}.{extension}",
            account_id=account_id,
            project_id=project_id,
            key=render_id,
            content_type=content_type,
            size=len(data),
            created=self.clock(),
            path=path,
        )
        self._files[stored.file_id] = stored
        self._results[key] = stored.file_id
        self._total += stored.size
        try:
            await self._write(path, data)
        except BaseException:
            self._forget(stored.file_id)
            raise
        return stored

    def result(self, account_id: str, project_id: str, render_id: str) -> StoredFile | None:
        """The stored result of that render of that account's project, or ``None`` (also for
        another account's, and for one evicted for room)."""
        file_id = self._results.get((account_id, project_id, render_id))
        return None if file_id is None else self._files.get(file_id)

    def download_path(self, stored: StoredFile) -> str:
        """The signed path and query (no host) of a download URL for ``stored``."""
        return self.sign("GET", DOWNLOAD_PREFIX + stored.file_id, self.url_ttl)

    def download_url(self, stored: StoredFile, base_url: str) -> str:
        """A signed download URL for ``stored`` on ``base_url`` (``http://host:port``),
        valid ``url_ttl`` seconds."""
        return base_url.rstrip("/") + self.download_path(stored)

    def file(self, file_id: str) -> StoredFile | None:
        """A stored result by the last segment of its download path."""
        stored = self._files.get(file_id)
        return None if stored is None or stored.upload else stored

    async def chunks(self, stored: StoredFile) -> AsyncGenerator[bytes, None]:
        """The file's bytes in pieces of at most :data:`CHUNK_SIZE` (opened when iteration
        starts; a file evicted meanwhile raises ``FileNotFoundError``). Each piece is read in a
        thread; the file is closed when the iterator ends or is closed."""
        handle = await self._io(lambda: open(stored.path, "rb"))  # noqa: SIM115
        try:
            while True:
                piece = await self._io(lambda: handle.read(CHUNK_SIZE))
                if not piece:
                    return
                yield piece
        finally:
            handle.close()

    # -- uploads ----------------------------------------------------------------------------------

    def open_upload(
        self,
        account_id: str,
        project_id: str,
        role: str,
        *,
        content_types: frozenset[str],
        max_size: int,
    ) -> UploadSlot:
        """Open an upload slot for ``account_id`` (synchronous). Put the bytes at
        :meth:`upload_url`.

        Raises:
            StorageError: 429 when the account already has ``max_pending_uploads`` open slots,
                or ``max_files`` slots are open in all.
            ValueError: ``content_types`` is empty or ``max_size`` is not positive.
        """
        if not content_types or max_size < 1:
            raise ValueError("an upload slot needs content types and a positive max_size")
        self._sweep()
        if len(self._slots) >= self.max_files:
            raise StorageError(429, "Too many pending uploads; try again later")
        if self.pending_uploads(account_id) >= self.max_pending_uploads:
            raise StorageError(
                429, f"Too many pending uploads (at most {self.max_pending_uploads} per account)"
            )
        slot = UploadSlot(
            slot_id=self._new_id(),
            account_id=account_id,
            project_id=project_id,
            role=role,
            content_types=frozenset(normalize_content_type(t) for t in content_types),
            max_size=max_size,
            expires=int(self.clock() + self.upload_ttl),
        )
        self._slots[slot.slot_id] = slot
        return slot

    def upload_url(self, slot: UploadSlot, base_url: str) -> str:
        """The signed ``PUT`` URL of ``slot`` on ``base_url``, valid until the slot expires."""
        path = UPLOAD_PREFIX + slot.slot_id
        signature = self._signature("PUT", path, slot.expires)
        return f"{base_url.rstrip('/')}{path}?expires={slot.expires}&signature={signature}"

    def slot(self, slot_id: str) -> UploadSlot | None:
        """An open, unexpired slot by id."""
        self._sweep()
        return self._slots.get(slot_id)

    def check_upload(self, slot: UploadSlot, content_type: str | None, size: int | None) -> None:
        """Check an upload's content type and (declared) size against ``slot`` before its body
        is read (synchronous).

        Raises:
            StorageError: 415 for a missing or disallowed content type; 413 for a size over the
                slot's maximum.
        """
        kind = normalize_content_type(content_type or "")
        if kind not in slot.content_types:
            allowed = ", ".join(sorted(slot.content_types))
            raise StorageError(
                415, f"Content type {kind or '(none)'!r} is not allowed here ({allowed})"
            )
        if size is not None and size > slot.max_size:
            raise StorageError(413, f"The upload is over the limit of {slot.max_size} bytes")

    async def receive_upload(
        self, slot_id: str, content_type: str | None, data: bytes
    ) -> StoredFile:
        """Store the bytes ``PUT`` at a slot's URL (the slot is then used up). A checkpoint.

        Raises:
            StorageError: 404 unknown or expired slot; 415 / 413 (see :meth:`check_upload`);
                507 no room.
        """
        slot = self.slot(slot_id)
        if slot is None:
            raise StorageError(404, "This upload URL is unknown or expired")
        self.check_upload(slot, content_type, len(data))
        del self._slots[slot_id]
        key = (slot.account_id, slot.project_id, slot.role)
        if key in self._uploads:
            self._forget(self._uploads.pop(key))
        self._make_room(len(data))
        path = self.root / "uploads" / slot.slot_id
        stored = StoredFile(
            file_id=slot.slot_id,
            account_id=slot.account_id,
            project_id=slot.project_id,
            key=slot.role,
            content_type=normalize_content_type(content_type or ""),
            size=len(data),
            created=self.clock(),
            path=path,
            upload=True,
        )
        self._files[stored.file_id] = stored
        self._uploads[key] = stored.file_id
        self._total += stored.size
        try:
            await self._write(path, data)
        except BaseException:
            self._uploads.pop(key, None)
            self._forget(stored.file_id)
            raise
        return stored

    def upload_roles(self, account_id: str, project_id: str) -> list[str]:
        """The roles with a received upload for ``account_id``'s project (sorted)."""
        self._sweep()
        return sorted(r for (a, p, r) in self._uploads if a == account_id and p == project_id)

    async def read_upload(self, account_id: str, project_id: str, role: str) -> MediaInput | None:
        """The bytes uploaded for ``role`` of ``account_id``'s project, or ``None`` (no such
        upload, it expired, or it belongs to another account). For the projects manager;
        bounded by the slot's ``max_size``. A checkpoint."""
        self._sweep()
        file_id = self._uploads.get((account_id, project_id, role))
        stored = self._files.get(file_id) if file_id is not None else None
        if stored is None:
            await trio.lowlevel.checkpoint()
            return None
        data = await self._io(stored.path.read_bytes)
        return MediaInput(data=data, content_type=stored.content_type)

    def discard_project(self, account_id: str, project_id: str) -> None:
        """Delete the uploads and open slots of ``account_id``'s project (results stay until
        evicted). Synchronous."""
        for key in [k for k in self._uploads if k[:2] == (account_id, project_id)]:
            self._forget(self._uploads.pop(key))
        for slot_id, slot in list(self._slots.items()):
            if (slot.account_id, slot.project_id) == (account_id, project_id):
                del self._slots[slot_id]
