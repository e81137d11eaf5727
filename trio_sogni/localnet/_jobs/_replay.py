"""A job's frames, numbered, kept so that a client that reconnects can take the job back.

Every frame localnet sends for a socket job (``jobState``, ``jobTokens``, the final
``llmJobResult`` / ``llmJobError``; media frames too) goes through the job's :class:`ReplayLog`
first, and gets the next number (0, 1, 2...). A client that lost its connection tells the new
one how many frames of each job it has (``resumeJobs``, a localnet extension); the log gives back
the frames after those, or says it no longer holds them.

What is kept is bounded: while the job's app holds a socket, only the newest frames up to a
*window* (the ones that may still be in flight when a connection dies); while it has none,
frames accumulate up to a *limit*, and the job waits (backpressure) rather than drop one. The
log is synchronous and knows no socket.
"""

from __future__ import annotations

from collections import deque

from .._server import OutEncoded, OutFrame, Silenceable, skip_frames

__all__ = ["ReplayLog"]


class ReplayLog:
    """The numbered frames of one job, the newest kept.

    Each entry is one outbox item: a single frame (an ``OutFrame`` payload) or several frames
    encoded together (an ``OutEncoded`` block, e.g. a test double's batch of chunks).
    """

    __slots__ = ("_items", "count", "detached_at", "floor", "size")

    def __init__(self) -> None:
        self._items: deque[tuple[bytes | str, bool, int]] = deque()
        self.count = 0
        """Frames logged so far (the next frame's number)."""
        self.floor = 0
        """The number of the oldest frame still held (``count`` when none is)."""
        self.size = 0
        """Bytes held."""
        self.detached_at = 0
        """``count`` when the job's app last lost its socket: frames from here on were never
        sent anywhere."""

    def __len__(self) -> int:
        return len(self._items)

    def append(self, payload: bytes | str, *, encoded: bool = False, frames: int = 1) -> None:
        """Log one outbox item: a frame's payload, or (``encoded``) ``frames`` complete encoded
        WebSocket frames."""
        self._items.append((payload, encoded, frames))
        self.count += frames
        self.size += len(payload)

    def trim(self, limit: int) -> None:
        """Forget the oldest items until at most ``limit`` bytes are held."""
        items = self._items
        while self.size > limit and items:
            payload, _, frames = items.popleft()
            self.size -= len(payload)
            self.floor += frames

    def since(
        self, received: int, job: Silenceable | None = None
    ) -> list[OutFrame | OutEncoded] | None:
        """The outbox items that carry every frame after the first ``received``, tied to ``job``
        (so they are skipped if it is silenced), or ``None`` when some of those frames are no
        longer held (or ``received`` is more than was ever logged)."""
        if received < self.floor or received > self.count:
            return None
        skip = received - self.floor
        out: list[OutFrame | OutEncoded] = []
        for payload, encoded, frames in self._items:
            if skip >= frames:
                skip -= frames
                continue
            if encoded:
                data = payload if isinstance(payload, bytes) else payload.encode()
                out.append(OutEncoded(skip_frames(data, skip) if skip else data, job))
            else:
                out.append(OutFrame(payload, job))
            skip = 0
        return out

    def unsent(self, job: Silenceable | None = None) -> list[OutFrame | OutEncoded]:
        """The items logged since the app lost its socket (never sent to any socket)."""
        items = self.since(max(self.detached_at, self.floor), job)
        return items if items is not None else []

    def clear(self) -> None:
        """Forget every frame (the numbering goes on)."""
        self._items.clear()
        self.floor = self.count
        self.size = 0
