"""The accept loop: serve every connection of some listeners, and survive running out of file
descriptors.

:func:`serve_listeners` is :func:`trio.serve_listeners` with a different answer to ``EMFILE``,
``ENFILE``, ``ENOBUFS`` and ``ENOMEM`` from ``accept``: instead of retrying every 0.1 s and
logging a traceback each time, it backs off exponentially (from ``initial_delay`` up to
``max_delay``, reset by the next successful accept) and logs one line per ``log_period``
(:class:`LogThrottle`), with the number of failures since the last line.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

__all__ = ["ACCEPT_CAPACITY_ERRNOS", "LogThrottle", "serve_listeners"]

logger = logging.getLogger("trio_sogni.localnet")

ACCEPT_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""``accept`` errors that mean "out of resources for now": back off and try again."""


class LogThrottle:
    """Allows one log line per ``period`` seconds (Trio's clock) and counts what it held back."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._next = -float("inf")
        self.suppressed = 0
        """Events not logged since the last allowed line."""

    def allow(self) -> int | None:
        """``None`` to stay quiet; else log now, mentioning the returned count of events held
        back since the last line (which is reset)."""
        now = trio.current_time()
        if now < self._next:
            self.suppressed += 1
            return None
        self._next = now + self.period
        held, self.suppressed = self.suppressed, 0
        return held


async def serve_listeners(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    *,
    handler_nursery: trio.Nursery,
    initial_delay: float = 0.1,
    max_delay: float = 2.0,
    log_period: float = 60.0,
) -> None:
    """Accept connections on every listener until cancelled, running ``handler(stream)`` for
    each in ``handler_nursery`` (the handler owns the stream). Closes the listeners on exit.

    Raises:
        OSError: ``accept`` failed with an error that is not about resources.
    """
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                _serve_one,
                handler,
                listener,
                handler_nursery,
                initial_delay,
                max_delay,
                log_period,
            )


async def _serve_one(
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    listener: trio.abc.Listener[trio.abc.Stream],
    handler_nursery: trio.Nursery,
    initial_delay: float,
    max_delay: float,
    log_period: float,
) -> None:
    throttle = LogThrottle(log_period)
    delay = initial_delay
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                held = throttle.allow()
                if held is not None:
                    logger.warning(
                        "localnet: accept failed: %s (%s); backing off %.2f s (%d more such "
                        "failures since the last report)",
                        errno.errorcode.get(exc.errno or 0, "?"),
                        os.strerror(exc.errno or 0),
                        delay,
                        held,
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, max_delay)
            else:
                delay = initial_delay
                handler_nursery.start_soon(handler, stream)
