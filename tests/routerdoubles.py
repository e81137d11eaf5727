"""Test doubles for driving the sans-IO `JobRouter` synchronously (no Trio run, no socket):
an event sink that records, a waker that counts, a clock a test moves by hand."""

from __future__ import annotations

from trio_sogni._event_types import ChatEvent


class Events:
    """An event sink listening to ``kinds``; what it gets is in ``seen``."""

    def __init__(self, *kinds: str) -> None:
        self.listening = set(kinds)
        self.seen: list[ChatEvent] = []

    def emit(self, event: ChatEvent) -> None:
        self.seen.append(event)


class Waker:
    """A parking lot that counts its wake-ups; nothing ever parks on it."""

    def __init__(self) -> None:
        self.calls = 0

    def unpark_all(self) -> None:
        self.calls += 1

    async def park(self) -> None:
        raise AssertionError("nothing parks in these tests")


class Clock:
    """The router's clock: ``now`` seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
