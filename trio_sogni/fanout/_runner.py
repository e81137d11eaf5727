"""`open_fanout`: run many chat completions through a fixed worker pool.

Structure (no task per item; memory flat in the number of items):

* one **producer** task iterates the input (sync or async iterable), skips what the journal says
  is done, and hands ``(seq, item)`` to the pool through an unbuffered memory channel (so it
  reads the input only as fast as the pool takes it);
* ``options.concurrency`` **workers** each take one item at a time and drive it through its
  stages: cache / single-flight lookup → budget and limiter admission → send → stream →
  settle, retrying per the `_retry` policy;
* results go to the consumer through an unbuffered channel (completion order), or, in ordered
  mode, through a reorder buffer drained by one **emitter** task; the producer does not hand out
  item ``seq`` until ``seq < next_to_emit + reorder_window``, so the buffer never holds more than
  ``reorder_window`` results.

Open loop (``options.schedule``): one **dispatcher** task replaces the producer and the pool. It
releases item *i* at ``t_start + offset_i`` into its own task (which ends with the item, so the
tasks alive are the items in process, capped by ``max_concurrency``), and a **loop probe** task
measures the event loop's wake-up overshoot while the run lasts.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Set as AbstractSet,
    Sized,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, NamedTuple, cast

import msgspec
import trio
from typing_extensions import override

from .. import SogniClient, SogniError, estimate_input_tokens
from ._limits import AdaptiveConcurrency, Limiter, Permit
from ._metrics import RunStats
from ._retry import CircuitBreaker, Classification, RetryBudget, backoff_delay, classify
from ._schedule import ArrivalSchedule
from ._types import (
    CacheProtocol,
    Deadline,
    ErrorInfo,
    FanoutItem,
    FanoutOptions,
    FanoutResult,
    ItemMetrics,
    JournalProtocol,
    RunReport,
    RunSnapshot,
    TokenUsage,
    content_key,
)

__all__ = ["FanoutRun", "open_fanout"]

_QUOTE_MARGIN: Final = 1e-6
"""Relative safety margin on quoted worst-case costs (quotes are rounded to 1e-12 USD)."""
_BATCH: Final = 64
"""The open-loop dispatcher checkpoints at least once per this many back-to-back releases."""
_PROBE_INTERVAL: Final = 0.010
"""The loop probe's sleep (seconds)."""
_UNBOUNDED: Final = sys.maxsize
"""The limiter's concurrency in an open-loop run without ``max_concurrency``."""
_SMALL_PROBE: Final = [{"role": "user", "content": "x"}]
_LARGE_PROBE: Final = [{"role": "user", "content": "x" * 4000}]


class _Flight:
    """An in-flight request that identical items wait for (single-flight dedup)."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: FanoutResult | None = None


class _CostModel:
    """Worst-case USD of an item from server quotes.

    For each (model, max_tokens) shape it asks ``sogni.chat.estimate_cost`` twice (a 1-token and
    a ~1000-token prompt) and fits ``cost = a + b * input_tokens`` (quotes are linear in input
    tokens for a fixed output budget); later items of the shape cost no request. The result is
    padded by `_QUOTE_MARGIN`.
    """

    def __init__(self, sogni: SogniClient) -> None:
        self._sogni = sogni
        self._lines: dict[tuple[str, int], tuple[float, float]] = {}
        self._locks: dict[tuple[str, int], trio.Lock] = {}

    async def worst_case(self, model: str, input_tokens: int, max_tokens: int) -> float:
        key = (model, max_tokens)
        line = self._lines.get(key)
        if line is None:
            lock = self._locks.setdefault(key, trio.Lock())
            async with lock:
                line = self._lines.get(key)
                if line is None:
                    line = await self._fit(model, max_tokens)
                    self._lines[key] = line
        intercept, slope = line
        return max(0.0, intercept + slope * input_tokens) * (1 + _QUOTE_MARGIN) + 1e-12

    async def _fit(self, model: str, max_tokens: int) -> tuple[float, float]:
        chat = self._sogni.chat
        small = await chat.estimate_cost(model=model, messages=_SMALL_PROBE, max_tokens=max_tokens)
        large = await chat.estimate_cost(model=model, messages=_LARGE_PROBE, max_tokens=max_tokens)
        span = large.input_tokens - small.input_tokens
        slope = max(0.0, (large.cost_in_usd - small.cost_in_usd) / span) if span > 0 else 0.0
        return small.cost_in_usd - slope * small.input_tokens, slope


class _Budget:
    """The run's USD / token budget: reservations at admission, settlement afterwards.

    `reserve` waits (cancellably) while other reservations are outstanding and the new one does
    not fit (their settlement may free room); with nothing outstanding and still no fit, the
    budget is exhausted. Spend is the settled cost; an attempt that was sent but whose cost the
    server did not report is charged its full reservation (the worst case is assumed).
    """

    def __init__(self, usd: float | None, tokens: int | None) -> None:
        self.cap_usd = usd
        self.cap_tokens = tokens
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.spent_tokens = 0
        self.reserved_tokens = 0
        self.outstanding = 0
        self.exhausted = False
        self._lot = trio.lowlevel.ParkingLot()

    def _fits(self, usd: float, tokens: int) -> bool:
        if self.cap_usd is not None and self.spent_usd + self.reserved_usd + usd > self.cap_usd:
            return False
        return not (
            self.cap_tokens is not None
            and self.spent_tokens + self.reserved_tokens + tokens > self.cap_tokens
        )

    async def reserve(self, usd: float, tokens: int) -> bool:
        while not self.exhausted:
            if self._fits(usd, tokens):
                self.reserved_usd += usd
                self.reserved_tokens += tokens
                self.outstanding += 1
                return True
            if not self.outstanding:
                self.exhausted = True
                self._lot.unpark_all()
                break
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        return False

    def settle(self, usd: float, tokens: int, spent_usd: float, spent_tokens: int) -> None:
        self.reserved_usd -= usd
        self.reserved_tokens -= tokens
        self.spent_usd += spent_usd
        self.spent_tokens += spent_tokens
        self.outstanding -= 1
        self._lot.unpark_all()


class _Outcome:
    """What one attempt produced."""

    __slots__ = (
        "cancelled",
        "content",
        "cost_usd",
        "deadline",
        "error",
        "finish_reason",
        "sent",
        "usage",
    )

    def __init__(self) -> None:
        self.content: str | None = None
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.cost_usd: float | None = None
        self.error: BaseException | None = None
        self.deadline: Deadline | None = None
        self.sent = False
        self.cancelled = False


class _Demand(NamedTuple):
    """What an item may consume, the same for each of its attempts."""

    max_tokens: int
    """The request's ``max_tokens``, else ``options.default_max_tokens``."""
    input_tokens: int
    """The estimated prompt tokens (0 when neither tokens nor USD are counted)."""
    worst_tokens: int
    """``input_tokens + max_tokens`` when tokens are counted (``tpm``, ``budget_tokens``), else 0."""
    usd_budget: bool
    """Whether the run has a USD budget (then each attempt is quoted)."""


class _Admission(NamedTuple):
    """An admitted attempt: what `FanoutRun._settle` must give back."""

    permit: Permit
    usd: float
    """The quoted worst-case USD (0.0 without a USD budget)."""
    reserved: bool
    """Whether the budget holds a reservation of ``usd`` and the worst-case tokens."""


class _Retry(NamedTuple):
    """The verdict "try again after ``delay`` seconds"."""

    delay: float


def _float(value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(cast("Any", value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _deadline_class(deadline: Deadline) -> Classification:
    retryable = deadline in ("first_token", "stall")
    name = f"{deadline}_timeout"
    messages = {
        "admission": "no limiter / budget admission within admission_timeout",
        "first_token": "no content within first_token_timeout of sending",
        "stall": "no content for stall_timeout between two chunks",
        "total": "the attempt did not finish within total_timeout",
    }
    info = ErrorInfo(type=name, message=messages[deadline], retryable=retryable)
    return Classification(name, retryable, False, None, info)


class FanoutRun:
    """A running fan-out (from `open_fanout`). Iterate it for `FanoutResult` s.

    Iteration yields every item's result exactly once: in completion order, or in input order
    with ``options.ordered``. It ends when every item taken from the input has a result. Results
    are not buffered beyond the reorder window: workers wait for the consumer, so iterate
    promptly (or the run stalls, by design).
    """

    def __init__(
        self,
        sogni: SogniClient,
        items: Iterable[FanoutItem] | AsyncIterable[FanoutItem],
        options: FanoutOptions,
        journal: JournalProtocol | None,
        cache: CacheProtocol | None,
    ) -> None:
        self._sogni = sogni
        self._items = items
        self.options = options
        self._journal = journal
        self._cache = cache if options.cache else None
        self._items_total: int | None = len(items) if isinstance(items, Sized) else None
        self.adaptive = (
            AdaptiveConcurrency(
                initial=options.concurrency,
                minimum=options.min_concurrency,
                maximum=options.concurrency,
                cooldown=options.adaptive_cooldown,
            )
            if options.adaptive
            else None
        )
        open_cap = options.max_concurrency if options.max_concurrency is not None else _UNBOUNDED
        self.limiter = Limiter(
            concurrency=open_cap if options.open_loop else options.concurrency,
            rpm=options.rpm,
            tpm=options.tpm,
            adaptive=self.adaptive,
        )
        self.breaker = CircuitBreaker(
            threshold=options.breaker_threshold, cooldown=options.breaker_cooldown
        )
        self._retry_budget = RetryBudget(options.retry_budget)
        self._budget = _Budget(options.budget_usd, options.budget_tokens)
        self._costs = _CostModel(sogni)
        self._stats = RunStats(options)
        self._flights: dict[str, _Flight] = {}
        self._out_send, self._out_recv = trio.open_memory_channel[FanoutResult](0)
        self._admitting = True
        self._producer_scope = trio.CancelScope()
        self._pending_scopes: set[trio.CancelScope] = set()
        self._attempt_scopes: set[trio.CancelScope] = set()
        self._busy = 0
        self._open_busy = 0
        """Open loop: items dispatched and not finished (what ``max_concurrency`` caps)."""
        self._slot_lot = trio.lowlevel.ParkingLot()
        """The open-loop dispatcher waits here while it holds an item back."""
        self._finished = trio.Event()
        # ordered mode
        self._reorder: dict[int, FanoutResult | None] = {}
        self._next = 0
        self._reorder_lot = trio.lowlevel.ParkingLot()
        self._window_lot = trio.lowlevel.ParkingLot()
        self._producing = True
        self.reorder_peak = 0
        """The most results the reorder buffer held at once (ordered mode)."""
        self._t_start = trio.current_time()

    # --- consumer side -------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[FanoutResult]:
        return self

    async def __anext__(self) -> FanoutResult:
        """The next result; waits for it (a checkpoint)."""
        try:
            return await self._out_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    @property
    def skipped(self) -> int:
        """Items skipped because the journal says they are done."""
        return self._stats.status["skipped"]

    @property
    def finished(self) -> bool:
        """True once every item has a result and the pool has stopped."""
        return self._finished.is_set()

    def snapshot(self) -> RunSnapshot:
        """Progress now (synchronous, O(number of error classes))."""
        in_flight = len(self._attempt_scopes)
        return self._stats.snapshot(
            items_total=self._items_total,
            in_flight=in_flight,
            queued=max(0, self._busy - in_flight),
            reserved_usd=self._budget.reserved_usd,
            concurrency_limit=(
                (self.options.max_concurrency or 0)
                if self.options.open_loop
                else self.limiter.limit
            ),
            breaker_open=self.breaker.is_open,
            admitting=self._admitting,
        )

    def progress(self, interval: float = 1.0) -> AsyncIterator[RunSnapshot]:
        """``async for snap in run.progress(1.0)``: a snapshot now, then every ``interval``
        seconds, and a last one when the run has finished (then the iteration ends). Run it in its
        own task; it holds no resources, so abandoning it is fine."""
        if not interval > 0:
            raise ValueError("interval must be positive")
        return _Progress(self, interval)

    def report(self) -> RunReport:
        """The summary of everything finished so far (final once the run has finished)."""
        options = self.options
        history: list[tuple[float, int, str]]
        if self.adaptive is not None:
            history = list(self.adaptive.history)
        elif options.open_loop:
            history = [(self._t_start, options.max_concurrency or 0, "open_loop")]
        else:
            history = [(self._t_start, options.concurrency, "fixed")]
        return self._stats.report(
            concurrency_history=history, peak_in_flight=self.limiter.peak_in_use
        )

    def stop_admitting(self) -> None:
        """Graceful stop: take no more items from the input and send nothing new (items waiting
        for admission or a retry end ``cancelled``, error ``stopped``); requests already sent
        finish normally. Items never taken get no result (a journal resumes them)."""
        if not self._admitting:
            return
        self._admitting = False
        self._producer_scope.cancel()
        for scope in list(self._pending_scopes):
            scope.cancel()

    def cancel_in_flight(self) -> None:
        """Abort: `stop_admitting`, and cancel every in-flight request. Leaving their streams
        sends the job abort to the server (a shielded, bounded send); those items end
        ``cancelled``."""
        self.stop_admitting()
        for scope in list(self._attempt_scopes):
            scope.cancel()

    # --- the run -------------------------------------------------------------------------------

    async def _main(self) -> None:
        done: AbstractSet[int] = (
            self._journal.done_indices() if self._journal is not None else frozenset()
        )
        try:
            async with trio.open_nursery() as outer:
                if self.options.ordered:
                    outer.start_soon(self._emit_ordered)
                if self.options.schedule is not None:
                    probe = trio.CancelScope()
                    outer.start_soon(self._probe_loop, probe)
                    try:
                        async with trio.open_nursery() as pool:
                            pool.start_soon(self._dispatch, self.options.schedule, pool, done)
                    finally:
                        probe.cancel()
                else:
                    send, recv = trio.open_memory_channel[tuple[int, FanoutItem]](0)
                    async with trio.open_nursery() as pool:
                        async with recv:
                            for _ in range(self.options.concurrency):
                                pool.start_soon(self._worker, recv.clone())
                        pool.start_soon(self._produce, send, done)
                self._producing = False
                self._reorder_lot.unpark_all()
        finally:
            self._out_send.close()
            self._finished.set()

    async def _pass_over(self, seq: int, item: FanoutItem, done: AbstractSet[int]) -> bool:
        """Settle ``item`` without sending it when the journal says it is done (``skipped``) or
        the budget is exhausted (``budget_exhausted``); return whether it was."""
        if item.index in done:
            now = trio.current_time()
            metrics = ItemMetrics(t_sched=now, t_done=now)
            result = FanoutResult(index=item.index, id=item.id, status="skipped")
            await self._finish(seq, result, metrics, emit=self.options.emit_skipped)
            return True
        if self._budget.exhausted:
            metrics = ItemMetrics(t_sched=trio.current_time())
            await self._finish(seq, self._budget_result(item), metrics)
            return True
        return False

    async def _produce(
        self, send: trio.MemorySendChannel[tuple[int, FanoutItem]], done: AbstractSet[int]
    ) -> None:
        seq = 0
        async with send:
            with self._producer_scope:
                async with aclosing(_aiter(self._items)) as source:
                    async for item in source:
                        if not self._admitting:
                            break
                        if self.options.ordered:
                            while seq >= self._next + self.options.reorder_window:
                                await self._window_lot.park()
                        if not await self._pass_over(seq, item, done):
                            await send.send((seq, item))
                        seq += 1
        if self._items_total is None or not self._admitting:
            self._items_total = seq

    async def _worker(self, recv: trio.MemoryReceiveChannel[tuple[int, FanoutItem]]) -> None:
        async with recv:
            async for seq, item in recv:
                now = trio.current_time()
                metrics = ItemMetrics(t_sched=now)
                self._stats.note_taken(now)
                await self._process_and_finish(seq, item, metrics)

    async def _process_and_finish(self, seq: int, item: FanoutItem, metrics: ItemMetrics) -> None:
        """Process one item (counted as busy meanwhile), then hand its result on."""
        self._busy += 1
        try:
            result = await self._process(item, metrics)
        finally:
            self._busy -= 1
        await self._finish(seq, result, metrics)

    # --- open loop -------------------------------------------------------------------------------

    def _full(self, seq: int, *, cap: bool = True) -> bool:
        """Whether the open-loop dispatcher must hold the next item back: (with ``cap``)
        ``max_concurrency`` items are in process, or (ordered) item ``seq`` is beyond the
        reorder window."""
        limit = self.options.max_concurrency
        if cap and limit is not None and self._open_busy >= limit:
            return True
        return self.options.ordered and seq >= self._next + self.options.reorder_window

    async def _dispatch(
        self, schedule: ArrivalSchedule, pool: trio.Nursery, done: AbstractSet[int]
    ) -> None:
        """The open-loop dispatcher: item *i* of the input is released at ``t_start +
        offset_i`` (`trio.sleep_until`) into its own task in ``pool``, whatever the earlier
        items are doing. Items whose time has already come are released back to back (a
        checkpoint every `_BATCH` of them), so a late wake-up costs one sleep, not one per item.

        An item due while `_full` holds it back waits (cancellably) for a slot; the wait is
        recorded as its ``held`` time, and any item that falls due before the wait ends is held
        back too (its lag counts from the end of the wait). Journal-done and budget-exhausted
        items are settled here and take no schedule slot. The run ends with the shorter of the
        input and the schedule.
        """
        stats = self._stats
        t_start = trio.current_time()
        stats.rebase(t_start)
        offsets = iter(schedule.offsets(random.Random(self.options.seed)))
        unblocked = -math.inf  # when the last hold-back ended
        batch = 0
        seq = 0
        offset: float | None = 0.0
        with self._producer_scope:
            async with aclosing(_aiter(self._items, checkpoint=False)) as source:
                async for item in source:
                    if not self._admitting:
                        break
                    now = trio.current_time()  # reading the input may have taken a while
                    if item.index in done or self._budget.exhausted:
                        # As the closed loop, bound the reorder buffer; a wait holds back what
                        # falls due meanwhile.
                        if self._full(seq, cap=False):
                            while self._full(seq, cap=False):
                                await self._slot_lot.park()
                            now = unblocked = trio.current_time()
                            batch = 0
                        await self._pass_over(seq, item, done)
                        seq += 1
                        continue
                    offset = next(offsets, None)
                    if offset is None:
                        break
                    intended = t_start + offset
                    if intended > now:
                        await trio.sleep_until(intended)
                        now = trio.current_time()
                        batch = 0
                    else:
                        batch += 1
                        if batch >= _BATCH:
                            await trio.lowlevel.checkpoint()
                            now = trio.current_time()
                            batch = 0
                    if self._full(seq):
                        while self._full(seq):
                            await self._slot_lot.park()
                        now = unblocked = trio.current_time()
                        batch = 0
                    metrics = ItemMetrics(t_sched=intended, t_intended=intended, t_dispatch=now)
                    if unblocked > intended:
                        metrics.held = unblocked - intended
                    stats.note_dispatch(metrics)
                    self._open_busy += 1
                    pool.start_soon(self._run_item, seq, item, metrics)
                    seq += 1
        if self._items_total is None or not self._admitting or offset is None:
            self._items_total = seq

    async def _run_item(self, seq: int, item: FanoutItem, metrics: ItemMetrics) -> None:
        """One open-loop item, from dispatch to its result; frees its slot at the end."""
        try:
            await self._process_and_finish(seq, item, metrics)
        finally:
            self._open_busy -= 1
            self._slot_lot.unpark()

    async def _probe_loop(self, scope: trio.CancelScope) -> None:
        """The event-loop saturation probe: sleep `_PROBE_INTERVAL` repeatedly and record each
        wake-up's overshoot in the ``loop_lag`` histogram, until ``scope`` is cancelled."""
        hist = self._stats.hist["loop_lag"]
        with scope:
            while True:
                target = trio.current_time() + _PROBE_INTERVAL
                await trio.sleep_until(target)
                hist.add(trio.current_time() - target)

    async def _finish(
        self, seq: int, result: FanoutResult, metrics: ItemMetrics, *, emit: bool = True
    ) -> None:
        """Account for, journal and emit an item's result; its row gets the derived
        `ItemSummary` of ``metrics``."""
        if metrics.t_done is None:
            metrics.t_done = trio.current_time()
        self._stats.add(result, metrics)
        result.metrics = metrics.summary(self._stats.started, chunk_times=self.options.chunk_times)
        if self._journal is not None and result.status != "skipped":
            await self._journal.record_outcome(result)
        if self.options.ordered:
            self._reorder[seq] = result if emit else None
            self.reorder_peak = max(self.reorder_peak, len(self._reorder))
            self._reorder_lot.unpark_all()
        elif emit:
            try:
                # The consumer is waiting (the usual case): hand the result over without a
                # schedule point of our own; else wait for it (a checkpoint).
                self._out_send.send_nowait(result)
            except trio.WouldBlock:
                await self._out_send.send(result)
        else:
            await trio.lowlevel.checkpoint()

    async def _emit_ordered(self) -> None:
        while True:
            if self._next in self._reorder:
                result = self._reorder.pop(self._next)
                self._next += 1
                self._window_lot.unpark_all()
                self._slot_lot.unpark_all()
                if result is not None:
                    await self._out_send.send(result)
                continue
            if not self._producing and not self._reorder:
                return
            await self._reorder_lot.park()

    # --- one item --------------------------------------------------------------------------------

    async def _process(self, item: FanoutItem, metrics: ItemMetrics) -> FanoutResult:
        options = self.options
        need_key = options.dedup or self._cache is not None or self._journal is not None
        key = content_key(item) if need_key else ""
        if self._cache is not None:
            hit = await self._cache.get(key)
            if hit is not None and hit.status == "ok":
                return self._copy(hit, item)
        flight: _Flight | None = None
        if options.dedup:
            leader = self._flights.get(key)
            if leader is not None:
                await leader.done.wait()
                if leader.result is not None:
                    return self._copy(leader.result, item)
            else:
                flight = self._flights[key] = _Flight()
        try:
            result = await self._attempts(item, key, metrics)
            if self._cache is not None and result.status == "ok":
                await self._cache.put(key, result)
        finally:
            if flight is not None:
                del self._flights[key]
                flight.done.set()
        if flight is not None:
            flight.result = result
        return result

    def _copy(self, source: FanoutResult, item: FanoutItem) -> FanoutResult:
        return msgspec.structs.replace(
            source, index=item.index, id=item.id, cached=True, attempts=0
        )

    def _budget_result(self, item: FanoutItem) -> FanoutResult:
        return FanoutResult(
            index=item.index,
            id=item.id,
            status="budget_exhausted",
            error=ErrorInfo(
                type="budget_exhausted",
                message="the budget cannot cover this item's worst case; it was not sent",
            ),
        )

    def _stopped(self, item: FanoutItem, attempts: int, kind: str) -> FanoutResult:
        text = {
            "stopped": "the run stopped admitting before this item was sent",
            "cancelled": "cancelled in flight (the job was aborted on the server)",
        }[kind]
        return FanoutResult(
            index=item.index,
            id=item.id,
            status="cancelled",
            error=ErrorInfo(type=kind, message=text),
            attempts=attempts,
        )

    def _failed(
        self,
        item: FanoutItem,
        attempts: int,
        error: ErrorInfo,
        *,
        deadline: Deadline | None = None,
        content: str | None = None,
    ) -> FanoutResult:
        return FanoutResult(
            index=item.index,
            id=item.id,
            status="failed",
            content=content,
            error=error,
            attempts=attempts,
            deadline=deadline,
        )

    def _circuit_open(self, item: FanoutItem, attempts: int) -> FanoutResult:
        breaker = self.breaker
        message = (
            f"circuit breaker open after {breaker.threshold} consecutive "
            f"{breaker.error_class} failures; not sent"
        )
        error = ErrorInfo(type="circuit_open", message=message)
        return self._failed(item, attempts, error)

    def _demand(self, item: FanoutItem) -> _Demand:
        """What ``item`` may consume; prompt tokens are estimated only when something counts
        tokens (``tpm``, ``budget_tokens``) or quotes USD (``budget_usd``)."""
        options = self.options
        max_tokens = item.params.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            max_tokens = options.default_max_tokens
        counting = options.tpm is not None or options.budget_tokens is not None
        usd_budget = options.budget_usd is not None
        input_tokens = estimate_input_tokens(item.messages) if counting or usd_budget else 0
        worst_tokens = input_tokens + max_tokens if counting else 0
        return _Demand(max_tokens, input_tokens, worst_tokens, usd_budget)

    async def _attempts(self, item: FanoutItem, key: str, metrics: ItemMetrics) -> FanoutResult:
        """Drive ``item`` to its result: per attempt, the gates (stopped, budget exhausted,
        circuit breaker), then `_admit`, `_send` (which `_settle` s) and `_verdict`; a retry
        verdict sleeps (`_backoff`) and loops.

        The journal records the intent once, before the first send. A half-open breaker's probe
        slot taken by `CircuitBreaker.allow` is given back unless the attempt reached a verdict
        (it ended at admission, or raised, or was cancelled before one). Cancellation from
        outside propagates after the permit and the budget reservation are settled.
        """
        demand = self._demand(item)
        attempts = 0
        while True:
            if not self._admitting:
                return self._stopped(item, attempts, "stopped")
            if self._budget.exhausted:
                return self._budget_result(item)
            probe = self.breaker.is_open
            if not self.breaker.allow():
                return self._circuit_open(item, attempts)
            judged = False
            try:
                admission = await self._admit(item, demand, metrics, attempts)
                if isinstance(admission, FanoutResult):
                    return admission
                attempts += 1
                outcome = await self._send(item, key, metrics, demand, admission, attempts)
                verdict = self._verdict(item, metrics, outcome, attempts)
                judged = True
            finally:
                if probe and not judged:
                    self.breaker.release_probe()
            if isinstance(verdict, FanoutResult):
                return verdict
            await self._backoff(verdict.delay)

    async def _admit(
        self, item: FanoutItem, demand: _Demand, metrics: ItemMetrics, attempts: int
    ) -> _Admission | FanoutResult:
        """Admit one attempt: quote its worst-case USD (with a USD budget), reserve it and its
        worst-case tokens in the budget (with any budget), then take a limiter permit (charging
        the worst-case tokens to the ``tpm`` bucket). Sets ``metrics.t_admit`` when admitted.

        Each wait is a checkpoint, inside one cancel scope that ``admission_timeout`` bounds and
        `stop_admitting` cancels. Returns the item's result instead when it ends here: a failed
        quote (``failed``, nothing sent), a budget that cannot cover it (``budget_exhausted``),
        a stop (``cancelled``, ``stopped``) or the admission deadline (``failed``,
        ``admission_timeout``). When no permit was taken (those cases, or a cancellation from
        outside, which propagates), a budget reservation already made is refunded in full.
        """
        options = self.options
        if not demand.usd_budget and options.budget_tokens is None:
            # Nothing to quote or reserve: a permit granted at once needs no wait, hence no
            # cancel scope (the send that follows is the attempt's checkpoint).
            permit = self.limiter.try_acquire(demand.worst_tokens if options.tpm else 0)
            if permit is not None:
                metrics.t_admit = trio.current_time()
                return _Admission(permit, 0.0, False)
        usd = 0.0
        reserved = False
        permit = None
        pending = trio.CancelScope()
        if options.admission_timeout is not None:
            pending.relative_deadline = options.admission_timeout
        self._pending_scopes.add(pending)
        try:
            with pending:
                if demand.usd_budget:
                    try:
                        usd = await self._costs.worst_case(
                            item.model, demand.input_tokens, demand.max_tokens
                        )
                    except SogniError as exc:
                        # No quote, no budget check: the item is not sent.
                        return self._failed(item, attempts, classify(exc).info)
                if demand.usd_budget or options.budget_tokens is not None:
                    if not await self._budget.reserve(usd, demand.worst_tokens):
                        return self._budget_result(item)
                    reserved = True
                permit = await self.limiter.acquire(demand.worst_tokens if options.tpm else 0)
        finally:
            self._pending_scopes.discard(pending)
            if permit is None and reserved:
                self._budget.settle(usd, demand.worst_tokens, 0.0, 0)
        if permit is None:
            if not self._admitting:
                return self._stopped(item, attempts, "stopped")
            info = _deadline_class("admission").info
            return self._failed(item, attempts, info, deadline="admission")
        metrics.t_admit = trio.current_time()
        return _Admission(permit, usd, reserved)

    async def _send(
        self,
        item: FanoutItem,
        key: str,
        metrics: ItemMetrics,
        demand: _Demand,
        admission: _Admission,
        attempt: int,
    ) -> _Outcome:
        """Send attempt number ``attempt`` (1-based) of an admitted item and return what it
        produced. Before the first, the journal records the intent (a checkpoint; its errors
        propagate and fail the run). The attempt is `_settle` d whatever happens, even when
        cancelled or when the journal fails."""
        outcome = _Outcome()
        try:
            if attempt == 1 and self._journal is not None:
                await self._journal.record_intent(item, key)
            if attempt > 1:
                self._stats.note_retry()
            if demand.usd_budget:
                self._stats.note_quote(admission.usd)
            await self._attempt(item, metrics, outcome)
        finally:
            self._settle(admission, demand, outcome)
        return outcome

    def _settle(self, admission: _Admission, demand: _Demand, outcome: _Outcome) -> None:
        """Settle an admitted attempt, whatever its end (synchronous: no checkpoint, so it also
        runs when the attempt was cancelled).

        The limiter permit is released: an attempt never sent refunds all its ``tpm`` tokens; a
        sent one is charged its reported usage (prompt + completion tokens), or its worst case
        when the server reported none. The reported cost is added to the run's spend. The budget
        reservation, if any, is settled: nothing spent when not sent; else the reported cost and
        usage, each falling back to the reserved worst case when not reported.
        """
        usage = outcome.usage
        actual_tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else None
        self.limiter.release(admission.permit, actual_tokens if outcome.sent else 0)
        if outcome.cost_usd is not None:
            self._stats.note_spend(outcome.cost_usd)
        if admission.reserved:
            if not outcome.sent:
                spent_usd, spent_tokens = 0.0, 0
            else:
                spent_usd = admission.usd if outcome.cost_usd is None else outcome.cost_usd
                spent_tokens = demand.worst_tokens if actual_tokens is None else actual_tokens
            self._budget.settle(admission.usd, demand.worst_tokens, spent_usd, spent_tokens)

    def _verdict(
        self, item: FanoutItem, metrics: ItemMetrics, outcome: _Outcome, attempts: int
    ) -> FanoutResult | _Retry:
        """Judge a settled attempt (synchronous): the item's result, or a `_Retry`.

        Cancelled in flight: ``cancelled`` (``cancelled``). Success: ``ok``; the breaker records
        a success and adaptive concurrency may grow (waiters are woken). Otherwise the error or
        deadline is classified (`classify`, `_deadline_class`); the breaker records the failure
        and an overload shrinks adaptive concurrency. A retryable failure is retried (the
        backoff delay, honouring a Retry-After) while attempts remain, the run is admitting and
        the run-wide retry budget pays for it; else the item ends ``failed`` with any partial
        content.
        """
        if outcome.cancelled:
            return self._stopped(item, attempts, "cancelled")
        if outcome.error is None and outcome.deadline is None:
            self.breaker.record_success()
            if self.adaptive is not None:
                self.adaptive.on_success()
                self.limiter.wake()
            if outcome.usage is not None:
                metrics.output_tokens = outcome.usage.completion_tokens
            return FanoutResult(
                index=item.index,
                id=item.id,
                status="ok",
                content=outcome.content,
                finish_reason=outcome.finish_reason,
                usage=outcome.usage,
                cost_usd=outcome.cost_usd,
                attempts=attempts,
            )
        options = self.options
        cls = (
            _deadline_class(outcome.deadline)
            if outcome.deadline is not None
            else classify(cast("BaseException", outcome.error))
        )
        self.breaker.record_failure(cls.error_class)
        if cls.overload and self.adaptive is not None:
            self.adaptive.on_overload(cls.retry_after)
        if (
            cls.retryable
            and attempts < options.max_attempts
            and self._admitting
            and self._retry_budget.try_spend()
        ):
            delay = backoff_delay(
                attempts,
                base=options.backoff_base,
                cap=options.backoff_max,
                retry_after=cls.retry_after,
                retry_after_max=options.retry_after_max,
            )
            return _Retry(delay)
        return self._failed(
            item,
            attempts,
            cls.info,
            deadline=outcome.deadline,
            content=outcome.content or None,
        )

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` seconds before a retry; `stop_admitting` cuts the sleep short (the
        next loop of `_attempts` then ends the item ``stopped``). A checkpoint."""
        wait = trio.CancelScope()
        self._pending_scopes.add(wait)
        try:
            with wait:
                await trio.sleep(delay)
        finally:
            self._pending_scopes.discard(wait)

    async def _attempt(self, item: FanoutItem, metrics: ItemMetrics, outcome: _Outcome) -> None:
        """One send. Fills ``outcome``; `SogniError` s and deadlines are recorded, not raised.

        The attempt runs in a cancel scope that `cancel_in_flight` cancels; the ``total`` and
        the chunk (``first_token`` / ``stall``) deadlines each get a nested scope only when
        their timeouts are set (a scope that can never fire costs a little per attempt)."""
        options = self.options
        metrics.t_first_token = metrics.t_last_token = None
        metrics.chunk_times = []
        metrics.chunks = 0
        attempt_scope = trio.CancelScope()
        total_scope: trio.CancelScope | None = None
        chunk_scope: trio.CancelScope | None = None
        attempt_scopes = self._attempt_scopes
        attempt_scopes.add(attempt_scope)
        now = trio.current_time()
        self._stats.note_in_flight(now, len(attempt_scopes))
        try:
            with attempt_scope:
                if options.total_timeout is not None:
                    total_scope = trio.CancelScope(deadline=now + options.total_timeout)
                if options.first_token_timeout is not None or options.stall_timeout is not None:
                    chunk_scope = trio.CancelScope()
                metrics.t_send = now
                self._stats.note_send(now)
                if total_scope is None and chunk_scope is None:
                    await self._call(item, metrics, outcome, None)
                elif total_scope is None:
                    assert chunk_scope is not None
                    with chunk_scope:
                        await self._call(item, metrics, outcome, chunk_scope)
                else:
                    with total_scope, chunk_scope or trio.CancelScope():
                        await self._call(item, metrics, outcome, chunk_scope)
        finally:
            attempt_scopes.discard(attempt_scope)
            self._stats.note_in_flight(trio.current_time(), len(attempt_scopes))
        if chunk_scope is not None and chunk_scope.cancelled_caught:
            outcome.deadline = "first_token" if metrics.t_first_token is None else "stall"
        elif total_scope is not None and total_scope.cancelled_caught:
            outcome.deadline = "total"
        elif attempt_scope.cancelled_caught:
            outcome.cancelled = True

    async def _call(
        self,
        item: FanoutItem,
        metrics: ItemMetrics,
        outcome: _Outcome,
        chunk_scope: trio.CancelScope | None,
    ) -> None:
        try:
            if self.options.stream:
                await self._stream(item, metrics, outcome, chunk_scope)
            else:
                await self._create(item, metrics, outcome)
        except SogniError as exc:
            outcome.error = exc

    async def _stream(
        self,
        item: FanoutItem,
        metrics: ItemMetrics,
        outcome: _Outcome,
        chunk_scope: trio.CancelScope | None,
    ) -> None:
        """Stream one attempt; with ``chunk_scope`` (a first-token or stall timeout is set), its
        deadline is the first-token deadline, then after each content chunk the stall deadline
        (none without a stall timeout)."""
        options = self.options
        scope = self._sogni.chat.completions.stream(
            model=item.model, messages=item.messages, **item.params
        )
        outcome.sent = True
        async with scope as stream:
            stall = options.stall_timeout
            if chunk_scope is not None and options.first_token_timeout is not None:
                chunk_scope.deadline = trio.current_time() + options.first_token_timeout
            try:
                async for chunk in stream:
                    if chunk.content:
                        now = trio.current_time()
                        metrics.note_chunk(now)
                        if chunk_scope is not None:
                            if stall is not None:
                                chunk_scope.deadline = now + stall
                            elif chunk_scope.deadline != math.inf:
                                chunk_scope.deadline = math.inf
            finally:
                outcome.content = stream.content
                outcome.finish_reason = stream.finish_reason
                usage = stream.usage
                if usage is not None:
                    outcome.usage = TokenUsage(
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                    )
                cost = stream.cost
                if cost is not None:
                    outcome.cost_usd = _float(cost.cost_in_usd)

    async def _create(self, item: FanoutItem, metrics: ItemMetrics, outcome: _Outcome) -> None:
        outcome.sent = True
        result = await self._sogni.chat.completions.create(
            model=item.model, messages=item.messages, stream=False, **item.params
        )
        metrics.t_last_token = trio.current_time()
        outcome.content = result.content
        outcome.finish_reason = result.finish_reason
        outcome.usage = TokenUsage(
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
        )
        if result.cost is not None:
            outcome.cost_usd = _float(result.cost.cost_in_usd)


class _Progress(AsyncIterator[RunSnapshot]):
    def __init__(self, run: FanoutRun, interval: float) -> None:
        self._run = run
        self._interval = interval
        self._first = True
        self._ended = False

    @override
    async def __anext__(self) -> RunSnapshot:
        if self._ended:
            raise StopAsyncIteration
        if self._first:
            self._first = False
            await trio.lowlevel.checkpoint()
        else:
            with trio.move_on_after(self._interval):
                await self._run._finished.wait()  # pyright: ignore[reportPrivateUsage]
        if self._run.finished:
            self._ended = True
        return self._run.snapshot()


async def _aiter(
    items: Iterable[FanoutItem] | AsyncIterable[FanoutItem], *, checkpoint: bool = True
) -> AsyncGenerator[FanoutItem]:
    """Iterate ``items``; an async iterator that has ``aclose`` (an async generator) is closed
    when the run stops reading it, so its cleanup runs inside the run. A sync iterable gets a
    checkpoint after each item unless ``checkpoint`` is False (the caller checkpoints)."""
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)
        try:
            async for item in iterator:
                yield item
        finally:
            close: Any = getattr(iterator, "aclose", None)
            if close is not None:
                await close()
    else:
        for item in items:
            yield item
            if checkpoint:
                await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_fanout(
    sogni: SogniClient,
    items: Iterable[FanoutItem] | AsyncIterable[FanoutItem],
    options: FanoutOptions,
    *,
    journal: JournalProtocol | None = None,
    cache: CacheProtocol | None = None,
) -> AsyncGenerator[FanoutRun]:
    """Run ``items`` through ``sogni`` for the duration of the block; iterate the `FanoutRun`
    for results::

        async with open_fanout(sogni, items, FanoutOptions(concurrency=64)) as run:
            async for result in run:
                out.write(result.to_json() + "\\n")
        report = run.report()

    The input is read lazily (sync or async iterable; at most one item ahead of the pool).
    ``journal``: items in ``journal.done_indices()`` are skipped; ``record_intent`` is awaited
    before an item is first sent and ``record_outcome`` before its result is yielded. ``cache``
    (used only with ``options.cache``): ``ok`` results are stored under `content_key` and reused.

    Leaving the block before the iteration ended cancels the run: in-flight jobs are aborted on
    the server. Per-item failures are results, never exceptions; an exception from the journal,
    the cache or the input fails the run and propagates out of the block.
    """
    run = FanoutRun(sogni, items, options, journal, cache)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run._main)  # pyright: ignore[reportPrivateUsage]
        try:
            yield run
        finally:
            if not run.finished:
                nursery.cancel_scope.cancel()
