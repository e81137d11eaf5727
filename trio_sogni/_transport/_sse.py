"""A sans-IO parser for server-sent events, with the official SDKs' framing rules (protocol.md
§3.5).

Feed it bytes as they arrive; it returns complete frames. A frame ends at the first blank line
(``\\n\\n`` or ``\\r\\n\\r\\n``); its lines split on ``\\r?\\n``. ``event:`` sets the name
(trimmed, default ``message``); each ``data:`` line adds its trimmed value, joined with ``\\n``;
``id:`` is kept (the official SDKs ignore it; the JSON's ``sequence`` is what counts). A frame
whose text starts with ``:`` is a comment (heartbeat) and is dropped, as is one with no (or empty)
data. Text is decoded as UTF-8 with invalid bytes replaced.

Linear and bounded: bytes are appended to one buffer, and the search for a frame's end resumes
where the previous search stopped, so a frame costs time in proportion to its size however it is
split. A frame (comments included) longer than ``max_frame`` bytes raises `ProtocolError` as soon
as it passes the limit, so a hostile or broken server can grow neither memory nor CPU time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .._errors import ProtocolError

__all__ = ["SSEFrame", "SSEParser"]

_BOUNDARY: Final = re.compile(rb"\r?\n\r?\n")
_LONGEST_BOUNDARY: Final = 4
_LINE: Final = re.compile(r"\r?\n")


@dataclass(frozen=True, slots=True)
class SSEFrame:
    """One complete event: its name, its data (lines joined with ``\\n``) and its ``id``."""

    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Incremental SSE framing. Not thread-safe; one parser per connection."""

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._scan = 0
        self._max_frame = max_frame
        self._error: ProtocolError | None = None
        self.scanned = 0
        """Bytes searched for a frame's end so far: at most about the bytes fed, however they
        were split (each byte is searched once, plus up to three at each seam)."""

    def feed(self, data: bytes) -> list[SSEFrame]:
        """Add ``data``; return every frame it completes, in order.

        Raises:
            ProtocolError: a frame is longer than ``max_frame`` bytes. Frames completed before it
                in the same ``data`` are returned first; the error is raised by the next call.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        frames: list[SSEFrame] = []
        start = 0
        pos = self._scan
        while True:
            match = _BOUNDARY.search(buffer, pos)
            if match is None:
                break
            end = match.start()
            self.scanned += match.end() - pos
            if end - start > self._max_frame:
                return self._too_long(frames)
            frame = _parse(buffer[start:end].decode("utf-8", "replace"))
            if frame is not None:
                frames.append(frame)
            start = pos = match.end()
        size = len(buffer)
        self.scanned += size - pos
        if start:
            del buffer[:start]  # O(1) for a bytearray's head
            size -= start
        # A boundary not found yet may begin in the last three bytes: resume the search there.
        self._scan = max(0, size - (_LONGEST_BOUNDARY - 1))
        if size > self._max_frame:
            return self._too_long(frames)
        return frames

    def finish(self) -> list[SSEFrame]:
        """The stream ended: parse whatever is left as a last frame (as the official SDKs do)."""
        if self._error is not None:
            raise self._error
        text = self._buffer.decode("utf-8", "replace")
        self._buffer = bytearray()
        self._scan = 0
        if not text.strip():
            return []
        frame = _parse(text.rstrip("\r\n"))
        return [frame] if frame is not None else []

    def _too_long(self, frames: list[SSEFrame]) -> list[SSEFrame]:
        """Drop the buffer; raise now, or after returning the frames that came before."""
        self._buffer = bytearray()
        self._scan = 0
        error = ProtocolError(f"a server-sent event frame is longer than {self._max_frame} bytes")
        if not frames:
            raise error
        self._error = error
        return frames


def _parse(text: str) -> SSEFrame | None:
    if not text or text.startswith(":"):
        return None
    event = "message"
    data: list[str] = []
    event_id: str | None = None
    for line in _LINE.split(text):
        if line.startswith("event:"):
            event = line[6:].strip() or "message"
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            event_id = line[3:].strip()
    joined = "\n".join(data)
    if not joined:
        return None
    return SSEFrame(event, joined, event_id)
