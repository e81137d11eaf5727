"""A log of introspection records bounded in count *and* in bytes.

A hostile client controls the size of much of what a server might remember about it (frames,
headers, job requests). :class:`RecordLog` keeps the newest records while both their number
stays within ``max_items`` and their accounted size within ``max_bytes``, evicting the oldest
first. The size of each record is what ``size(record)`` says (an estimate of the payload bytes
it holds, plus a fixed overhead); callers store summaries of large payloads, so that no single
record approaches the budget. A record larger than the whole budget is not kept at all (it is
counted in :attr:`RecordLog.dropped`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar, overload

from typing_extensions import override

__all__ = ["RECORD_OVERHEAD", "RecordLog", "preview"]

T = TypeVar("T")

RECORD_OVERHEAD: Final = 64
"""Bytes accounted for each record besides its payload (object headers, references)."""


def preview(value: str, limit: int) -> str:
    """``value`` if it has at most ``limit`` characters, else its first ``limit`` characters
    followed by ``"…"``."""
    return value if len(value) <= limit else value[:limit] + "…"


class RecordLog(Sequence[T]):
    """The newest records, oldest first, within ``max_items`` records and ``max_bytes`` accounted
    bytes. Read it like a sequence (``len``, iteration, ``log[-1]``); only the network appends.
    """

    def __init__(self, *, max_items: int, max_bytes: int, size: Callable[[T], int]) -> None:
        if max_items < 0 or max_bytes < 0:
            raise ValueError("record limits must not be negative")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self.dropped = 0
        """Records evicted, or refused because one alone exceeded ``max_bytes``."""

    @property
    def accounted_bytes(self) -> int:
        """The accounted size of the records held (never above ``max_bytes``)."""
        return self._bytes

    def append(self, record: T) -> None:
        """Add ``record`` as the newest, evicting the oldest records as needed."""
        size = self._size(record)
        if size > self.max_bytes or self.max_items == 0:
            self.dropped += 1
            return
        self._items.append((record, size))
        self._bytes += size
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            _old, old_size = self._items.popleft()
            self._bytes -= old_size
            self.dropped += 1

    def clear(self) -> None:
        """Forget every record."""
        self._items.clear()
        self._bytes = 0

    @override
    def __len__(self) -> int:
        return len(self._items)

    @override
    def __iter__(self) -> Iterator[T]:
        return (record for record, _size in self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    @override
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [record for record, _size in list(self._items)[index]]
        return self._items[index][0]

    @override
    def __repr__(self) -> str:
        return (
            f"RecordLog({len(self._items)} records, {self._bytes} bytes; "
            f"max_items={self.max_items}, max_bytes={self.max_bytes})"
        )
