"""MediaStorage: results keyed by account, signed expiring URLs, bounded uploads and space."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from trio_sogni.localnet._media._render import RenderedMedia
from trio_sogni.localnet._media._storage import CHUNK_SIZE, MediaStorage, StorageError

BASE = "http://127.0.0.1:9"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def png(size: int, fill: int = 0) -> RenderedMedia:
    return RenderedMedia(
        media_type="image",
        data=bytes([fill]) * size,
        content_type="image/png",
        output_format="png",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def storage(clock: Clock, tmp_path: Path) -> Iterator[MediaStorage]:
    store = MediaStorage(tmp_path, clock=clock, url_ttl=60, upload_ttl=120, offload_io=False)
    yield store
    store.close()


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


async def test_results_are_stored_on_disk_per_account(storage: MediaStorage) -> None:
    stored = await storage.store_result("alice", "P1", "R1", png(10, 1))
    assert stored.path.read_bytes() == b"\x01" * 10
    assert stored.path.is_relative_to(storage.root)
    assert storage.result("alice", "P1", "R1") == stored
    assert storage.result("bob", "P1", "R1") is None
    assert storage.result("alice", "P1", "R2") is None
    assert storage.total_bytes == 10
    replaced = await storage.store_result("alice", "P1", "R1", png(4, 2))
    assert not stored.path.exists()
    assert storage.result("alice", "P1", "R1") == replaced
    assert storage.total_bytes == 4
    assert "alice" not in repr(stored)


async def test_downloads_are_streamed_in_chunks(storage: MediaStorage) -> None:
    stored = await storage.store_result("a", "P", "R", png(2 * CHUNK_SIZE + 5))
    pieces = [piece async for piece in storage.chunks(stored)]
    assert [len(p) for p in pieces] == [CHUNK_SIZE, CHUNK_SIZE, 5]


async def test_signed_urls_verify_and_refuse_tampering_and_expiry(
    storage: MediaStorage, clock: Clock
) -> None:
    stored = await storage.store_result("a", "P", "R", png(3))
    url = storage.download_url(stored, BASE)
    assert url.startswith(BASE + "/localnet/media/files/")
    path, query = split(url)
    assert int(query["expires"]) == clock.now + 60
    storage.verify("GET", path, query)
    tampered = [
        ("PUT", path, query),
        ("GET", path + "x", query),
        ("GET", path, {**query, "expires": str(int(query["expires"]) + 1)}),
        ("GET", path, {**query, "signature": "0" * 64}),
        ("GET", path, {"expires": query["expires"]}),
        ("GET", path, {**query, "expires": "-1"}),
        ("GET", path, {**query, "signature": "é"}),
    ]
    for method, p, q in tampered:
        with pytest.raises(StorageError, match="not validly signed") as caught:
            storage.verify(method, p, q)
        assert caught.value.status == 403
    clock.now += 60
    with pytest.raises(StorageError, match="expired") as caught:
        storage.verify("GET", path, query)
    assert caught.value.status == 403


async def test_another_storage_key_does_not_verify(storage: MediaStorage, tmp_path: Path) -> None:
    stored = await storage.store_result("a", "P", "R", png(3))
    path, query = split(storage.download_url(stored, BASE))
    other = MediaStorage(tmp_path / "other", offload_io=False)
    try:
        with pytest.raises(StorageError):
            other.verify("GET", path, query)
    finally:
        other.close()


async def test_the_oldest_results_make_room(tmp_path: Path) -> None:
    storage = MediaStorage(tmp_path, max_total_bytes=100, max_files=3, offload_io=False)
    try:
        first = await storage.store_result("a", "P", "1", png(40))
        second = await storage.store_result("a", "P", "2", png(40))
        third = await storage.store_result("a", "P", "3", png(40))  # 120 > 100: evicts "1"
        assert storage.result("a", "P", "1") is None
        assert not first.path.exists()
        assert storage.total_bytes == 80
        await storage.store_result("a", "P", "4", png(1))
        await storage.store_result("a", "P", "5", png(1))  # 4 files > 3: evicts "2"
        assert storage.result("a", "P", "2") is None
        assert not second.path.exists()
        assert storage.result("a", "P", "3") == third
        assert storage.file_count == 3
        with pytest.raises(StorageError, match="over the storage limit") as caught:
            await storage.store_result("a", "P", "6", png(101))
        assert caught.value.status == 507
    finally:
        storage.close()


async def test_uploads_are_bound_to_their_account_and_checked(
    storage: MediaStorage, clock: Clock
) -> None:
    slot = storage.open_upload(
        "alice", "P", "contextImage1", content_types=frozenset({"image/png"}), max_size=10
    )
    url = storage.upload_url(slot, BASE)
    path, query = split(url)
    storage.verify("PUT", path, query)
    with pytest.raises(StorageError) as refused:
        storage.verify("GET", path, query)
    assert refused.value.status == 403
    assert storage.pending_uploads("alice") == 1
    for content_type, data, status in [
        ("image/jpeg", b"x", 415),
        (None, b"x", 415),
        ("image/png", b"x" * 11, 413),
    ]:
        with pytest.raises(StorageError) as caught:
            await storage.receive_upload(slot.slot_id, content_type, data)
        assert caught.value.status == status
    stored = await storage.receive_upload(slot.slot_id, "Image/PNG; x=y", b"12345")
    assert stored.content_type == "image/png"
    assert storage.pending_uploads("alice") == 0
    with pytest.raises(StorageError) as used:
        await storage.receive_upload(slot.slot_id, "image/png", b"again")
    assert used.value.status == 404
    upload = await storage.read_upload("alice", "P", "contextImage1")
    assert upload is not None
    assert (upload.data, upload.content_type) == (b"12345", "image/png")
    assert await storage.read_upload("bob", "P", "contextImage1") is None
    assert await storage.read_upload("alice", "P", "startingImage") is None
    assert storage.upload_roles("alice", "P") == ["contextImage1"]
    assert storage.upload_roles("bob", "P") == []
    clock.now += 120  # uploads live upload_ttl seconds
    assert await storage.read_upload("alice", "P", "contextImage1") is None
    assert not stored.path.exists()
    assert storage.total_bytes == 0


async def test_upload_slots_expire_and_are_capped_per_account(tmp_path: Path) -> None:
    clock = Clock()
    storage = MediaStorage(
        tmp_path, clock=clock, upload_ttl=10, max_pending_uploads=2, offload_io=False
    )
    try:
        types = frozenset({"image/png"})
        first = storage.open_upload("a", "P", "r1", content_types=types, max_size=5)
        storage.open_upload("a", "P", "r2", content_types=types, max_size=5)
        with pytest.raises(StorageError, match="Too many pending uploads") as caught:
            storage.open_upload("a", "P", "r3", content_types=types, max_size=5)
        assert caught.value.status == 429
        storage.open_upload("b", "P", "r1", content_types=types, max_size=5)  # per account
        clock.now += 10
        assert storage.slot(first.slot_id) is None
        with pytest.raises(StorageError) as expired:
            await storage.receive_upload(first.slot_id, "image/png", b"x")
        assert expired.value.status == 404
        storage.open_upload("a", "P", "r3", content_types=types, max_size=5)
    finally:
        storage.close()


async def test_open_slots_are_capped_in_all(tmp_path: Path) -> None:
    storage = MediaStorage(tmp_path, max_files=2, offload_io=False)
    try:
        types = frozenset({"image/png"})
        storage.open_upload("a", "P", "r", content_types=types, max_size=5)
        storage.open_upload("b", "P", "r", content_types=types, max_size=5)
        with pytest.raises(StorageError, match="try again later") as caught:
            storage.open_upload("c", "P", "r", content_types=types, max_size=5)
        assert caught.value.status == 429
    finally:
        storage.close()


async def test_uploads_are_replaced_discarded_and_never_evicted(tmp_path: Path) -> None:
    storage = MediaStorage(tmp_path, max_total_bytes=10, offload_io=False)
    try:
        types = frozenset({"image/png"})
        slot = storage.open_upload("a", "P", "r", content_types=types, max_size=10)
        await storage.receive_upload(slot.slot_id, "image/png", b"123456")
        again = storage.open_upload("a", "P", "r", content_types=types, max_size=10)
        await storage.receive_upload(again.slot_id, "image/png", b"abcdef")
        upload = await storage.read_upload("a", "P", "r")
        assert upload is not None
        assert upload.data == b"abcdef"
        assert storage.total_bytes == 6
        with pytest.raises(StorageError, match="full") as caught:
            await storage.store_result("a", "P", "R", png(5))  # the upload is not evicted
        assert caught.value.status == 507
        pending = storage.open_upload("a", "P", "other", content_types=types, max_size=10)
        storage.discard_project("a", "P")
        assert await storage.read_upload("a", "P", "r") is None
        assert storage.slot(pending.slot_id) is None
        assert storage.total_bytes == 0
        await storage.store_result("a", "P", "R", png(5))
    finally:
        storage.close()


async def test_a_temporary_data_dir_is_removed_on_close() -> None:
    storage = MediaStorage(offload_io=False)
    stored = await storage.store_result("a", "P", "R", png(1))
    assert stored.path.exists()
    storage.close()
    assert not storage.root.exists()


async def test_threaded_io_reads_and_writes(tmp_path: Path) -> None:
    storage = MediaStorage(tmp_path)
    try:
        stored = await storage.store_result("a", "P", "R", png(CHUNK_SIZE + 1, 9))
        data = b"".join([piece async for piece in storage.chunks(stored)])
        assert data == b"\x09" * (CHUNK_SIZE + 1)
    finally:
        storage.close()


async def test_a_failed_write_is_a_507_and_leaves_nothing(tmp_path: Path) -> None:
    storage = MediaStorage(tmp_path, offload_io=False)
    try:
        (storage.root / "files").rmdir()
        with pytest.raises(StorageError, match="Cannot store the file") as caught:
            await storage.store_result("a", "P", "R", png(3))
        assert caught.value.status == 507
        assert storage.result("a", "P", "R") is None
        assert storage.total_bytes == 0
    finally:
        storage.close()
