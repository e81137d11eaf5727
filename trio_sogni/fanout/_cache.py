"""`ResultCache`: an on-disk cache of identical requests for fan-out runs.

The key is `content_key` of the item: the SHA-256 hex digest of the canonical JSON of
``{"messages": ..., "model": ..., "params": ...}`` (keys sorted, separators ``(",", ":")``,
non-ASCII kept, UTF-8). A row's ``id`` and position are not part of it, so the same request on
another row, in another input file or in a later run hits the cache; a different model name,
message or sampling parameter (``temperature``, ``max_tokens``, a ``seed``...) misses. To draw
independent samples of one prompt, give each row a distinct parameter such as ``seed``, or run
without a cache.

The file is append-only JSON Lines, one ``{"key": ..., "result": {FanoutResult fields}}`` per
line, written as one complete line. Opening it reads only the keys and their line offsets (the
results stay on disk: memory grows by about 100 bytes per entry), tolerates a torn last line
(cut off before the next append), and skips lines it cannot parse, since a cache is only an
optimisation. The first entry of a key wins. Only ``ok`` results are stored.
"""

from __future__ import annotations

import os
from typing import Final, Self

import msgspec
import trio

from ..protocol import JSONDecoder
from ._journal import complete_lines, open_append, write_line
from ._types import FanoutResult

__all__ = ["ResultCache"]


class _Entry(msgspec.Struct):
    key: str
    result: FanoutResult


class _KeyOnly(msgspec.Struct):
    key: str


_key_decoder: Final = JSONDecoder(_KeyOnly)
_entry_decoder: Final = JSONDecoder(_Entry)
_encoder: Final = msgspec.json.Encoder()


class ResultCache:
    """An on-disk cache of ``ok`` results by `content_key`; implements `CacheProtocol`.

    ``ResultCache(path)`` creates the file if needed and indexes it. Pass it to
    ``open_fanout(..., cache=cache)`` with ``FanoutOptions(cache=True)``; `close` it afterwards
    (it is also a context manager). ``hits``, ``misses`` and ``stored`` count the calls.

    Raises:
        OSError: the file cannot be read or created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._offsets: dict[str, tuple[int, int]] = {}
        keep = 0
        if os.path.exists(self.path):
            for _, end, line in complete_lines(self.path):
                keep = end
                try:
                    key = _key_decoder.decode(line).key
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                self._offsets.setdefault(key, (end - len(line), len(line)))
        self._fd: int | None = open_append(self.path, keep_bytes=keep)
        self._reader = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self.hits = 0
        self.misses = 0
        self.stored = 0

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, key: str) -> bool:
        return key in self._offsets

    async def get(self, key: str) -> FanoutResult | None:
        """The stored result for ``key`` (as it was stored: its ``index`` and ``id`` are those of
        the item that produced it), or ``None``. A line that no longer parses counts as a miss."""
        await trio.lowlevel.checkpoint()
        where = self._offsets.get(key)
        if where is None:
            self.misses += 1
            return None
        start, length = where
        self._reader.seek(start)
        try:
            entry = _entry_decoder.decode(self._reader.read(length))
        except (msgspec.DecodeError, msgspec.ValidationError):
            del self._offsets[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry.result

    async def put(self, key: str, result: FanoutResult) -> None:
        """Store ``result`` under ``key``, unless it is not ``ok`` or the key is stored already.
        The line is flushed to the OS before the call returns (not fsynced)."""
        await trio.lowlevel.checkpoint()
        if result.status != "ok" or key in self._offsets or self._fd is None:
            return
        line = _encoder.encode(_Entry(key=key, result=result)) + b"\n"
        start = os.fstat(self._fd).st_size
        write_line(self._fd, line)
        self._offsets[key] = (start, len(line))
        self.stored += 1

    def close(self) -> None:
        """Close the file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
