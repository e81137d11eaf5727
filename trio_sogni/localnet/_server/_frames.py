"""Server-to-client WebSocket output: frame encoding and the per-socket outbox.

:func:`encode_frame` builds complete RFC 6455 data frames (unmasked, unfragmented, no
extensions), so a worker can pre-encode a job's chunks once. :class:`Outbox` is the FIFO of one
socket, drained by :class:`~._ws.WebSocketDriver`'s writer. An item may be tied to an owner
(anything :class:`Silenceable`, e.g. a job): the writer skips it once that owner is silenced.
This module knows nothing of jobs or the Sogni protocol.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

import trio

__all__ = [
    "OutClose",
    "OutDrop",
    "OutEncoded",
    "OutFrame",
    "OutItem",
    "Outbox",
    "Silenceable",
    "encode_frame",
    "skip_frames",
]

WRITE_BATCH_BYTES: Final = 262_144
"""The writer flushes once this many bytes of frames are pending (and whenever the outbox is
empty)."""


class Silenceable(Protocol):
    """The owner of queued output (a job): once ``silenced`` is true its frames are skipped."""

    @property
    def silenced(self) -> bool: ...


def encode_frame(payload: bytes | str) -> bytes:
    """One complete server-to-client WebSocket data frame (RFC 6455 §5.2): FIN set, unmasked,
    opcode text for ``str`` and binary for ``bytes``."""
    if isinstance(payload, str):
        data, opcode = payload.encode(), 0x81
    else:
        data, opcode = payload, 0x82
    n = len(data)
    if n < 126:
        header = bytes((opcode, n))
    elif n < 65_536:
        header = struct.pack("!BBH", opcode, 126, n)
    else:
        header = struct.pack("!BBQ", opcode, 127, n)
    return header + data


@dataclass(frozen=True, eq=False)
class OutFrame:
    """One message for the client: ``bytes`` go as a binary message, ``str`` as a text message.

    A frame tied to a ``job`` is skipped if that job has been silenced (aborted) meanwhile.
    """

    payload: bytes | str
    job: Silenceable | None = None


@dataclass(frozen=True)
class OutClose:
    """Send a close frame (after everything queued before it), then wait for the reply."""

    code: int
    reason: str = ""


@dataclass(frozen=True)
class OutDrop:
    """Drop the TCP connection without a close frame (after everything queued before it)."""

    reset: bool = False


@dataclass(frozen=True, eq=False)
class OutEncoded:
    """Complete WebSocket data frames, already encoded (:func:`encode_frame`), written as they are.

    Skipped, like :class:`OutFrame`, if its ``job`` has been silenced meanwhile.
    """

    data: bytes
    job: Silenceable | None = None


OutItem: TypeAlias = OutFrame | OutEncoded | OutClose | OutDrop


class Outbox:
    """The outgoing FIFO of one socket.

    :meth:`put` waits while ``limit`` items are queued (backpressure for job output) and is always
    a checkpoint; :meth:`put_nowait` never waits (control messages). Both return ``False`` and drop
    the item once the outbox is closed.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[OutItem] = deque()
        self._limit = limit
        self._closed = False
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: OutItem) -> bool:
        if self._closed:
            return False
        self._items.append(item)
        self._readers.unpark_all()
        return True

    async def put(self, item: OutItem) -> bool:
        await trio.lowlevel.checkpoint()
        while not self._closed and len(self._items) >= self._limit:
            await self._writers.park()
        return self.put_nowait(item)

    async def get_all(self) -> list[OutItem]:
        """Every queued item (at least one), or ``[]`` once closed. A checkpoint only when it has
        to wait. Wakes as many blocked :meth:`put` callers as items were taken."""
        while not self._items:
            if self._closed:
                return []
            await self._readers.park()
        items = list(self._items)
        self._items.clear()
        self._writers.unpark(count=len(items))
        return items

    def close(self) -> None:
        """Refuse further items, discard queued ones and wake everyone."""
        self._closed = True
        self._items.clear()
        self._readers.unpark_all()
        self._writers.unpark_all()


def skip_frames(data: bytes, count: int) -> bytes:
    """``data`` (complete frames as :func:`encode_frame` writes them) without its first ``count``
    frames. Reads only the frame headers: O(count).

    Raises:
        ValueError: ``data`` holds fewer than ``count`` complete frames.
    """
    offset = 0
    for _ in range(count):
        if offset + 2 > len(data):
            raise ValueError("fewer frames than asked to skip")
        length = data[offset + 1] & 0x7F
        if length == 126:
            (length,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + length
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, offset + 2)
            offset += 10 + length
        else:
            offset += 2 + length
        if offset > len(data):
            raise ValueError("fewer frames than asked to skip")
    return data[offset:]
