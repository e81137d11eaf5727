"""Chat job events: bounded subscriber channels first, synchronous callbacks for parity.

Kinds (the official ``ChatApiEvents``): ``token``, ``completed``, ``error``, ``jobState``,
``modelsUpdated``. Each subscriber has its own bounded buffer; when it is full the *oldest* event is
dropped and counted (`EventSubscription.dropped`), so a slow subscriber never stalls the receive loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import final

import trio
from typing_extensions import override

from ._event_types import (
    CHAT_EVENT_KINDS,
    EVENT_KINDS,
    Callback,
    ChatEvent,
    CompletedEvent,
    ErrorEvent,
    EventKind,
    JobStateEvent,
    ModelsUpdatedEvent,
    ProjectEvent,
    ProjectEventKind,
    RenderEvent,
    TokenEvent,
)

__all__ = [
    "ChatEvent",
    "CompletedEvent",
    "ErrorEvent",
    "EventHub",
    "EventKind",
    "EventSubscription",
    "JobStateEvent",
    "ModelsUpdatedEvent",
    "ProjectEvent",
    "ProjectEventKind",
    "RenderEvent",
    "TokenEvent",
]

logger = logging.getLogger("trio_sogni.events")


@final
class EventSubscription(trio.abc.ReceiveChannel[ChatEvent]):
    """A bounded, drop-oldest channel of chat events (see ``sogni.chat.subscribe``).

    `receive` is a checkpoint and cancel-safe. The channel ends (`trio.EndOfChannel`) when the
    client closes; `aclose` unsubscribes.
    """

    def __init__(self, kinds: frozenset[str], max_buffer: int, hub: EventHub) -> None:
        self.kinds = kinds
        self.max_buffer = max_buffer
        self._hub = hub
        self._buffer: deque[ChatEvent] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._ended = False
        self.dropped = 0
        """How many events were dropped because this subscriber was behind."""

    def _put(self, event: ChatEvent) -> None:
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._ended = True
        self._lot.unpark_all()

    @override
    async def receive(self) -> ChatEvent:
        """The next event. Raises `trio.EndOfChannel` once the client has closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this subscription was closed")
            if self._buffer:
                event = self._buffer.popleft()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            if self._ended:
                raise trio.EndOfChannel
            await self._lot.park()

    @override
    async def aclose(self) -> None:
        """Unsubscribe. A checkpoint; idempotent."""
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            self._hub.unsubscribe(self)
            self._lot.unpark_all()
        await trio.lowlevel.checkpoint()


class EventHub:
    """Routes events to subscriptions and callbacks; cheap when nobody listens to a kind."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, list[EventSubscription]] = {k: [] for k in EVENT_KINDS}
        self._callbacks: dict[str, list[Callback]] = {k: [] for k in EVENT_KINDS}
        self.listening: set[str] = set()

    def _refresh(self, kind: str) -> None:
        if self._subscriptions[kind] or self._callbacks[kind]:
            self.listening.add(kind)
        else:
            self.listening.discard(kind)

    @staticmethod
    def check_kinds(
        kinds: Iterable[str], allowed: frozenset[str] = CHAT_EVENT_KINDS
    ) -> frozenset[str]:
        """``kinds`` checked against ``allowed`` (all of ``allowed`` when empty)."""
        chosen = frozenset(kinds) or allowed
        unknown = chosen - allowed
        if unknown:
            raise ValueError(
                f"unknown event kind(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
            )
        return chosen

    def subscribe(self, kinds: frozenset[str], max_buffer: int) -> EventSubscription:
        subscription = EventSubscription(kinds, max_buffer, self)
        for kind in kinds:
            self._subscriptions[kind].append(subscription)
            self._refresh(kind)
        return subscription

    def unsubscribe(self, subscription: EventSubscription) -> None:
        for kind in subscription.kinds:
            subs = self._subscriptions[kind]
            if subscription in subs:
                subs.remove(subscription)
            self._refresh(kind)

    def on(self, kind: str, callback: Callback) -> Callable[[], None]:
        self.check_kinds([kind], EVENT_KINDS)
        self._callbacks[kind].append(callback)
        self._refresh(kind)
        return lambda: self.off(kind, callback)

    def off(self, kind: str, callback: Callback) -> None:
        callbacks = self._callbacks.get(kind, [])
        if callback in callbacks:
            callbacks.remove(callback)
        self._refresh(kind)

    def emit(self, event: ChatEvent) -> None:
        kind = event.kind
        for subscription in self._subscriptions[kind]:
            subscription._put(event)  # pyright: ignore[reportPrivateUsage]
        for callback in tuple(self._callbacks[kind]):
            try:
                callback(event)
            except Exception:
                logger.exception("a %r event callback raised; ignored", kind)

    def close(self) -> None:
        for subs in self._subscriptions.values():
            for subscription in subs:
                subscription._end()  # pyright: ignore[reportPrivateUsage]
