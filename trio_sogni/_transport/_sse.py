"""A sans-IO parser for server-sent events, with the official SDKs' framing rules (protocol.md
§3.5).

Feed it bytes as they arrive; it returns complete frames. A frame ends at the first blank line
(``\\n\\n`` or ``\\r\\n\\r\\n``); its lines split on ``\\r?\\n``. ``event:`` sets the name
(trimmed, default ``message``); each ``data:`` line adds its trimmed value, joined with ``\\n``;
``id:`` is kept (the official SDKs ignore it; the JSON's ``sequence`` is what counts). A frame
whose text starts with ``:`` is a comment (heartbeat) and is dropped, as is one with no (or empty)
data.

Bounded: a frame that grows past ``max_frame`` bytes without ending is discarded up to its end
and counted in `SSEParser.dropped`, so a hostile or broken server cannot grow memory.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["SSEFrame", "SSEParser"]

_BOUNDARY: Final = re.compile(r"\r?\n\r?\n")
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
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._max_frame = max_frame
        self._skipping = False
        self.dropped = 0
        """Frames discarded for being too large."""

    def feed(self, data: bytes) -> list[SSEFrame]:
        """Add ``data``; return every frame it completes, in order."""
        self._buffer += self._decoder.decode(data)
        frames: list[SSEFrame] = []
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                break
            text = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            if self._skipping:
                self._skipping = False
                continue
            frame = _parse(text)
            if frame is not None:
                frames.append(frame)
        if len(self._buffer) > self._max_frame:
            self._buffer = ""
            if not self._skipping:
                self.dropped += 1
            self._skipping = True
        return frames

    def finish(self) -> list[SSEFrame]:
        """The stream ended: parse whatever is left as a last frame (as the official SDKs do)."""
        self._buffer += self._decoder.decode(b"", final=True)
        text, self._buffer = self._buffer, ""
        if self._skipping or not text.strip():
            self._skipping = False
            return []
        frame = _parse(text.rstrip("\r\n"))
        return [frame] if frame is not None else []


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
