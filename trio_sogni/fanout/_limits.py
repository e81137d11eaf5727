"""Admission control for fan-out runs: a concurrency cap, request and token buckets with
reserve-then-refund, and AIMD adaptive concurrency.

Everything is driven by ``trio.current_time()``, so a ``trio.testing.MockClock`` drives it in
tests. Every wait is a Trio checkpoint and is cancellable; a cancelled `Limiter.acquire` takes
nothing. Admission is FIFO: a request that arrives later never overtakes one that is waiting
(head-of-line waiting is deliberate: a large token reservation is not starved by small ones).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import trio

__all__ = ["AdaptiveConcurrency", "Limiter", "Permit", "TokenBucket"]

MAX_HISTORY: Final = 1000
"""`AdaptiveConcurrency.history` keeps at most this many changes (the latest)."""


class TokenBucket:
    """A token bucket refilled continuously at ``per_minute / 60`` per second, holding at most
    ``capacity`` (default: one minute's worth). It starts full.

    `take` may drive the level negative: a reservation larger than the capacity is allowed once
    the bucket is full (otherwise it could never run), and the debt is paid back by the refill
    before anything else is admitted.
    """

    def __init__(self, per_minute: float, *, capacity: float | None = None) -> None:
        if not per_minute > 0 or not math.isfinite(per_minute):
            raise ValueError("per_minute must be positive and finite")
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute if capacity is None else capacity)
        if not self.capacity > 0:
            raise ValueError("capacity must be positive")
        self._level = self.capacity
        self._stamp = trio.current_time()

    def level(self) -> float:
        """The current level (after refilling up to now)."""
        now = trio.current_time()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until `take` of ``amount`` may proceed (0 if now). An amount above the
        capacity needs a full bucket."""
        need = min(amount, self.capacity)
        level = self.level()
        if level >= need:
            return 0.0
        return (need - level) / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` (no check: call after `wait_time` returned 0)."""
        self.level()
        self._level -= amount

    def refund(self, amount: float) -> None:
        """Give back ``amount`` (an over-reservation), never above the capacity."""
        self.level()
        self._level = min(self.capacity, self._level + amount)


class AdaptiveConcurrency:
    """AIMD concurrency control.

    * **Additive increase:** after ``limit`` successes since the last change, ``limit += 1``
      (about one step per round of in-flight requests), up to ``maximum``.
    * **Multiplicative decrease:** on an overload signal (rate limit, queue cap, grace retry),
      ``limit = max(minimum, floor(limit * decrease))``, at most once per ``cooldown`` seconds
      (one episode of 429s shrinks the limit once). A server Retry-After longer than the
      cool-down extends it.
    * Other failures leave the limit alone.

    ``history`` records ``(time, limit, reason)`` for every change (``start``, ``increase``,
    ``decrease``), keeping the latest ``history.maxlen`` of them.
    """

    def __init__(
        self,
        *,
        initial: int,
        minimum: int = 1,
        maximum: int,
        decrease: float = 0.5,
        cooldown: float = 5.0,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self.limit = initial
        self.minimum = minimum
        self.maximum = maximum
        self.decrease = decrease
        self.cooldown = cooldown
        self._successes = 0
        self._quiet_until = -math.inf
        self.history: deque[tuple[float, int, str]] = deque(maxlen=MAX_HISTORY)
        self.history.append((trio.current_time(), initial, "start"))
        self.changed = trio.lowlevel.ParkingLot()
        """Unparked whenever the limit grows."""

    def on_success(self) -> None:
        """Count a success; grow the limit by one after ``limit`` of them."""
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self._successes = 0
            self.limit += 1
            self.history.append((trio.current_time(), self.limit, "increase"))
            self.changed.unpark_all()

    def on_overload(self, retry_after: float | None = None) -> bool:
        """An overload signal: shrink the limit unless a decrease happened within the cool-down.
        Returns True if the limit was decreased."""
        now = trio.current_time()
        self._successes = 0
        if now < self._quiet_until:
            return False
        self._quiet_until = now + max(self.cooldown, retry_after or 0.0)
        new = max(self.minimum, math.floor(self.limit * self.decrease))
        if new == self.limit:
            return False
        self.limit = new
        self.history.append((now, new, "decrease"))
        return True


class Permit:
    """One admitted request: the slot and the tokens it reserved. Give it back with
    `Limiter.release`."""

    __slots__ = ("released", "tokens")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.released = False


class Limiter:
    """Concurrency + requests/minute + tokens/minute admission, FIFO-fair.

    `acquire` waits (cancellably) until the request is first in line, a concurrency slot is free
    (``concurrency``, or the adaptive limit), the request bucket has 1 and the token bucket has
    the reservation; then it takes all of them at once. `release` frees the slot and refunds
    ``reserved - actual`` tokens when the actual count is known (the reservation stands
    otherwise: the worst case is assumed).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive: AdaptiveConcurrency | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.requests = TokenBucket(rpm) if rpm is not None else None
        self.tokens = TokenBucket(tpm) if tpm is not None else None
        self.adaptive = adaptive
        self.in_use = 0
        self.peak_in_use = 0
        self._line = trio.Lock()  # trio.Lock is fair: waiters acquire it in FIFO order
        self._freed = trio.lowlevel.ParkingLot()

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        if self.adaptive is not None:
            return min(self.concurrency, self.adaptive.limit)
        return self.concurrency

    @property
    def waiting(self) -> int:
        """Requests waiting in `acquire` (including the head of the line)."""
        stats = self._line.statistics()
        return stats.tasks_waiting + (1 if stats.locked else 0)

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait for admission and reserve ``tokens`` from the token bucket.

        Cancellable at every wait; if cancelled, nothing is taken.
        """
        async with self._line:
            while self.in_use >= self.limit:
                await self._freed.park()
            while True:
                delay = 0.0
                if self.requests is not None:
                    delay = self.requests.wait_time(1)
                if self.tokens is not None and tokens:
                    delay = max(delay, self.tokens.wait_time(tokens))
                if delay <= 0:
                    break
                # A refund may make room earlier than the refill would.
                with trio.move_on_after(delay):
                    await self._freed.park()
                while self.in_use >= self.limit:
                    await self._freed.park()
            return self._grant(tokens)  # still in line: nobody takes the slot first

    def try_acquire(self, tokens: int = 0) -> Permit | None:
        """`acquire` without waiting: the permit when it would be granted at once (nobody is in
        line, a concurrency slot is free and the buckets hold what it takes), else ``None`` and
        nothing is taken. Synchronous (no checkpoint); FIFO fairness holds, as it never
        overtakes a waiting request."""
        if self._line.locked() or self.in_use >= self.limit:
            return None
        if self.requests is not None and self.requests.wait_time(1) > 0:
            return None
        if self.tokens is not None and tokens and self.tokens.wait_time(tokens) > 0:
            return None
        return self._grant(tokens)

    def _grant(self, tokens: int) -> Permit:
        """Take one request and ``tokens`` from the buckets and a concurrency slot."""
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None and tokens:
            self.tokens.take(tokens)
        self.in_use += 1
        self.peak_in_use = max(self.peak_in_use, self.in_use)
        return Permit(tokens)

    def release(self, permit: Permit, actual_tokens: int | None = None) -> None:
        """Free the permit's slot; refund ``permit.tokens - actual_tokens`` when the actual count
        is known (or charge the excess when it used more). Releasing twice is a no-op.
        Synchronous (never blocks)."""
        if permit.released:
            return
        permit.released = True
        self.in_use -= 1
        if self.tokens is not None and actual_tokens is not None:
            extra = permit.tokens - actual_tokens
            if extra > 0:
                self.tokens.refund(extra)
            elif extra < 0:
                self.tokens.take(-extra)
        self._freed.unpark_all()

    def wake(self) -> None:
        """Re-check waiters (call after the adaptive limit grew)."""
        self._freed.unpark_all()
