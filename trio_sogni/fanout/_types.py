"""The data types of `trio_sogni.fanout`: items, results, per-item metrics, run snapshots and
reports, options, and the journal / cache protocols.

Everything a run emits is a msgspec Struct, so results, snapshots and reports encode to JSON with
``msgspec.json.encode`` (and `FanoutResult.to_json` gives one JSONL line). Timestamps are
``trio.current_time()`` values (monotonic seconds of the run's Trio clock, so a
``MockClock`` drives them in tests).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, get_type_hints

import msgspec

from .. import CompletionParams, InvalidRequestError, validate_messages
from ..protocol import JSONDecoder
from ._schedule import ArrivalSchedule

__all__ = [
    "MAX_CHUNK_TIMES",
    "CacheProtocol",
    "Deadline",
    "ErrorInfo",
    "FanoutItem",
    "FanoutOptions",
    "FanoutResult",
    "HistogramData",
    "ItemMetrics",
    "ItemSummary",
    "JournalProtocol",
    "LatencySummary",
    "ResultStatus",
    "RunReport",
    "RunSnapshot",
    "TimelineBucket",
    "TokenUsage",
    "content_key",
]

MAX_CHUNK_TIMES: Final = 4096
"""`ItemMetrics.chunk_times` keeps the arrival times of at most this many content chunks per item
(the first ones); `ItemMetrics.chunks` still counts them all."""

ResultStatus = Literal["ok", "failed", "skipped", "cancelled", "budget_exhausted"]
"""How an item ended: ``ok`` (an answer, possibly from the cache or an identical in-flight
request), ``failed`` (an error, after any retries), ``skipped`` (the journal says it already
finished; only emitted with ``emit_skipped``), ``cancelled`` (`FanoutRun.cancel_in_flight`, or it
was still queued when the run stopped early), ``budget_exhausted`` (never dispatched: the budget
could not cover its worst case)."""

Deadline = Literal["admission", "first_token", "stall", "total"]
"""Which per-item deadline fired (see `FanoutOptions`)."""

_PARAM_KEYS: Final[frozenset[str]] = frozenset(get_type_hints(CompletionParams))
_ROW_KEYS: Final = _PARAM_KEYS | {"id", "model", "messages"}


class FanoutItem(msgspec.Struct, kw_only=True, frozen=True):
    """One request of a fan-out run.

    Attributes:
        index: the item's position in the input (0-based); results carry it.
        id: the input row's ``id`` (as a string), else ``str(index)``.
        model: the model to run.
        messages: OpenAI-style message dicts.
        params: the other ``chat.completions.create`` keyword arguments (``max_tokens``,
            ``temperature``, ...; the keys of `trio_sogni.CompletionParams`).
    """

    index: int
    id: str
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = msgspec.field(default_factory=dict[str, Any])

    @classmethod
    def from_row(
        cls, index: int, row: Mapping[str, Any], default_model: str | None = None
    ) -> FanoutItem:
        """Parse one JSONL row in the OpenAI / Sogni chat shape:
        ``{"id"?, "model"?, "messages": [...], "max_tokens"?, "temperature"?, ...}``.

        ``model`` falls back to ``default_model``. The messages are validated as
        ``chat.completions.create`` validates them; every other key must be a
        `trio_sogni.CompletionParams` key.

        Raises:
            InvalidRequestError: not an object, an unknown key, no messages, no model, or
                invalid messages.
        """
        if not isinstance(row, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError(f"row {index}: expected a JSON object")
        unknown = sorted(set(row) - _ROW_KEYS)
        if unknown:
            raise InvalidRequestError(f"row {index}: unknown keys {unknown}")
        raw_id = row.get("id")
        if raw_id is None:
            item_id = str(index)
        elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
            item_id = str(raw_id)
        else:
            raise InvalidRequestError(f"row {index}: id must be a string or an integer")
        model = row.get("model", default_model)
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(f"row {index}: no model (give one in the row or a default)")
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(f"row {index}: messages must be a non-empty list")
        plain: list[dict[str, Any]] = []
        for message in messages:  # pyright: ignore[reportUnknownVariableType]
            if not isinstance(message, dict):
                raise InvalidRequestError(f"row {index}: every message must be an object")
            plain.append(dict(message))  # pyright: ignore[reportUnknownArgumentType]
        try:
            validate_messages(plain, resize_images=row.get("resize_images") is True)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"row {index}: {exc}") from None
        params = {k: v for k, v in row.items() if k in _PARAM_KEYS}
        return cls(index=index, id=item_id, model=model, messages=plain, params=params)


def content_key(item: FanoutItem) -> str:
    """The cache / dedup key of an item: the SHA-256 hex digest of the canonical JSON of
    ``{"messages": item.messages, "model": item.model, "params": item.params}`` — keys sorted,
    separators ``(",", ":")``, ``ensure_ascii=False``, UTF-8. ``index`` and ``id`` are not part
    of it, so identical requests on different rows share a key. Add a ``seed`` (or any sampling
    parameter) to a row's params to make otherwise identical rows independent."""
    canonical = json.dumps(
        {"messages": item.messages, "model": item.model, "params": item.params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ItemMetrics(msgspec.Struct, kw_only=True):
    """The raw timing record of one item, in ``trio.current_time()`` seconds, and the §4
    metrics derived from it. Any timestamp is ``None`` when the item never reached that stage.

    Attributes:
        t_sched: the intended send time: in a closed-loop run, when a worker took the item from
            the input; in an open-loop run, the schedule's time for it (`t_intended`), so the
            queue time includes any wait for ``max_concurrency`` and any dispatcher lag.
        t_intended: open loop: ``t_start + offset`` of the schedule; ``None`` in a closed loop.
        t_dispatch: open loop: when the dispatcher released the item (started its task);
            ``None`` in a closed loop.
        held: open loop: seconds of ``t_dispatch - t_intended`` spent held back by
            ``max_concurrency`` or the reorder window (waiting for a slot, or behind an item
            that was); 0 otherwise. `lag` excludes it.
        t_admit: when the limiter admitted the final attempt (concurrency, RPM, TPM and budget).
        t_send: when the final attempt's request frame was handed to the socket.
        t_first_token: arrival of the first non-empty content chunk of the final attempt.
        t_last_token: arrival of the last non-empty content chunk of the final attempt (a trailing
            usage-only or finish-only chunk does not count). Non-streaming: the result's arrival.
        t_done: when the item's outcome was settled (success, final failure, cancellation).
        chunk_times: arrival times of the final attempt's non-empty content chunks, at most
            `MAX_CHUNK_TIMES` (the first ones). Empty for non-streaming items.
        chunks: how many non-empty content chunks arrived (not bounded).
        output_tokens: completion tokens from the server's usage, when it reported them.
    """

    t_sched: float | None = None
    t_intended: float | None = None
    t_dispatch: float | None = None
    held: float = 0.0
    t_admit: float | None = None
    t_send: float | None = None
    t_first_token: float | None = None
    t_last_token: float | None = None
    t_done: float | None = None
    chunk_times: list[float] = msgspec.field(default_factory=list[float])
    chunks: int = 0
    output_tokens: int | None = None

    def note_chunk(self, now: float) -> None:
        """Record a non-empty content chunk that arrived at ``now``."""
        if self.t_first_token is None:
            self.t_first_token = now
        self.t_last_token = now
        self.chunks += 1
        if len(self.chunk_times) < MAX_CHUNK_TIMES:
            self.chunk_times.append(now)

    @property
    def lag(self) -> float | None:
        """Scheduling lag (open loop) — ``t_dispatch - t_intended - held``: how late the
        dispatcher released the item compared with when it could have (its intended time, or
        the end of a hold-back). ``None`` in a closed loop."""
        if self.t_dispatch is None or self.t_intended is None:
            return None
        return self.t_dispatch - self.t_intended - self.held

    @property
    def queue_time(self) -> float | None:
        """Client queue time — ``t_admit - t_sched``."""
        if self.t_admit is None or self.t_sched is None:
            return None
        return self.t_admit - self.t_sched

    @property
    def ttft(self) -> float | None:
        """Time to first token — ``t_chunk[0] - t_send`` (first non-empty content chunk)."""
        if self.t_first_token is None or self.t_send is None:
            return None
        return self.t_first_token - self.t_send

    @property
    def ttft_from_sched(self) -> float | None:
        """TTFT from the schedule — ``t_chunk[0] - t_sched`` (includes client queueing and earlier
        attempts)."""
        if self.t_first_token is None or self.t_sched is None:
            return None
        return self.t_first_token - self.t_sched

    @property
    def ttst(self) -> float | None:
        """Time to second token — ``t_chunk[1] - t_chunk[0]``; ``None`` with fewer than 2 chunks."""
        times = self.chunk_times
        if len(times) < 2:
            return None
        return times[1] - times[0]

    @property
    def itl(self) -> list[float]:
        """Inter-chunk gaps (vLLM's "ITL", AIPerf's "ICL") — ``t_chunk[i] - t_chunk[i-1]`` for
        i ≥ 1, over the recorded `chunk_times`. A gap is per *chunk*, not per token: a chunk
        may carry several tokens."""
        times = self.chunk_times
        return [times[i] - times[i - 1] for i in range(1, len(times))]

    @property
    def e2el(self) -> float | None:
        """End-to-end latency — ``t_last_chunk - t_send`` (last non-empty content chunk of the
        final attempt; non-streaming: the result's arrival)."""
        if self.t_last_token is None or self.t_send is None:
            return None
        return self.t_last_token - self.t_send

    @property
    def e2el_from_sched(self) -> float | None:
        """End-to-end latency from the schedule — ``t_last_chunk - t_sched`` (includes queueing and
        retries)."""
        if self.t_last_token is None or self.t_sched is None:
            return None
        return self.t_last_token - self.t_sched

    @property
    def tpot(self) -> float | None:
        """Time per output token (AIPerf's "ITL") — ``(E2EL - TTFT) / (output_tokens - 1)``, with
        ``output_tokens`` the server's completion tokens (else the chunk count). ``None`` when
        ``output_tokens ≤ 1`` or a term is missing."""
        e2el, ttft = self.e2el, self.ttft
        tokens = self.output_tokens if self.output_tokens is not None else self.chunks
        if e2el is None or ttft is None or tokens <= 1:
            return None
        return (e2el - ttft) / (tokens - 1)

    def summary(self, t_start: float | None, *, chunk_times: bool = False) -> ItemSummary:
        """The derived per-item values of a result row (`ItemSummary`), with times relative to
        ``t_start`` (the run's start; ``None`` leaves ``sched`` and ``done`` unset) and, with
        ``chunk_times``, the recorded chunk arrival times relative to ``t_send``. O(k log k) in
        the ≤ `MAX_CHUNK_TIMES` recorded chunks."""
        times = self.chunk_times
        itl_p50: float | None = None
        itl_max: float | None = None
        if len(times) >= 2:
            gaps = sorted(times[i] - times[i - 1] for i in range(1, len(times)))
            itl_p50 = gaps[math.ceil(len(gaps) / 2) - 1]
            itl_max = gaps[-1]
        relative: list[float] | None = None
        if chunk_times and self.t_send is not None:
            send = self.t_send
            relative = [t - send for t in times]
        return ItemSummary(
            sched=_since(self.t_sched, t_start),
            lag=self.lag,
            held=self.held if self.t_intended is not None else None,
            queue_time=self.queue_time,
            ttft=self.ttft,
            ttft_from_sched=self.ttft_from_sched,
            ttst=self.ttst,
            tpot=self.tpot,
            e2el=self.e2el,
            itl_p50=itl_p50,
            itl_max=itl_max,
            chunks=self.chunks,
            output_tokens=self.output_tokens,
            done=_since(self.t_done, t_start),
            chunk_times=relative,
        )


def _since(t: float | None, start: float | None) -> float | None:
    return None if t is None or start is None else t - start


class ItemSummary(msgspec.Struct, kw_only=True, frozen=True):
    """The per-item metrics of a result row (`FanoutResult.metrics`), in seconds; each is
    ``None`` when undefined for the item (never reached that stage, not streamed, a closed-loop
    run for ``lag`` / ``held``).

    Attributes:
        sched: the intended send time, relative to the run's start (open loop: the schedule's
            offset; closed loop: when a worker took the item).
        lag: open-loop scheduling lag (`ItemMetrics.lag`).
        held: open loop: seconds held back by ``max_concurrency`` / the reorder window.
        queue_time: ``t_admit - t_sched`` (includes ``held`` and ``lag``).
        ttft: ``t_chunk[0] - t_send``.
        ttft_from_sched: ``t_chunk[0] - t_sched``.
        ttst: ``t_chunk[1] - t_chunk[0]``.
        tpot: ``(e2el - ttft) / (output_tokens - 1)``.
        e2el: ``t_last_chunk - t_send``.
        itl_p50, itl_max: nearest-rank median and maximum of the inter-chunk gaps (over the
            first `MAX_CHUNK_TIMES` chunks).
        chunks: non-empty content chunks received.
        output_tokens: the server's completion tokens, when reported.
        done: when the outcome was settled, relative to the run's start.
        chunk_times: chunk arrival times relative to ``t_send`` (at most `MAX_CHUNK_TIMES`),
            only with ``FanoutOptions.chunk_times``; else ``None``.
    """

    sched: float | None = None
    lag: float | None = None
    held: float | None = None
    queue_time: float | None = None
    ttft: float | None = None
    ttft_from_sched: float | None = None
    ttst: float | None = None
    tpot: float | None = None
    e2el: float | None = None
    itl_p50: float | None = None
    itl_max: float | None = None
    chunks: int = 0
    output_tokens: int | None = None
    done: float | None = None
    chunk_times: list[float] | None = None


class TokenUsage(msgspec.Struct, kw_only=True, frozen=True):
    """Server-reported token counts of an item."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ErrorInfo(msgspec.Struct, kw_only=True, frozen=True):
    """Why an item failed.

    Attributes:
        type: the error class: a `~trio_sogni.ChatJobError`'s ``error_type`` (``model_unavailable``, ...),
            else the exception's class name (``ConnectionLost``, ``InvalidRequestError``,
            ``TooSlowError`` for a deadline, ``CircuitOpen``, ...).
        code: the wire error code (``"4079"``) or the REST ``error_code``, if any.
        message: the error's text.
        retryable: whether the retry policy considered it transient.
        http_status: the HTTP status for REST-borne errors, else ``None``.
    """

    type: str
    message: str
    code: str | None = None
    retryable: bool = False
    http_status: int | None = None


class FanoutResult(msgspec.Struct, kw_only=True):
    """The outcome of one item. `to_json` renders it as one JSONL line.

    Attributes:
        index, id: the item's position and id.
        status: see `ResultStatus`.
        content: the answer text (``ok``), else ``None`` (or the partial text of a failed or
            cancelled stream).
        finish_reason: the server's finish reason, when it sent one.
        usage: server-reported token counts, when reported.
        cost_usd: the settled cost in USD, when the server reported it.
        error: why it failed / was cancelled / was not run.
        attempts: how many times it was sent (0 if never).
        deadline: which deadline fired on the final attempt, if one did.
        metrics: the item's derived metrics (`ItemSummary`; the raw `ItemMetrics` live only
            while the item runs).
        cached: True when the result came from the cache or from an identical in-flight request
            (single-flight dedup) instead of its own request.
    """

    index: int
    id: str
    status: ResultStatus
    content: str | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    cost_usd: float | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    deadline: Deadline | None = None
    metrics: ItemSummary = msgspec.field(default_factory=ItemSummary)
    cached: bool = False

    def to_json(self) -> str:
        """This result as one line of JSON (no trailing newline)."""
        return _encoder.encode(self).decode()

    @classmethod
    def from_json(cls, line: str | bytes) -> FanoutResult:
        """Parse a line written by `to_json`. A line of an older version, whose ``metrics`` was
        the raw `ItemMetrics` (monotonic timestamps), is converted to an `ItemSummary` (its
        ``sched`` and ``done`` are ``None``: the run's start is unknown).

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: not a result line.
        """
        raw = line.encode() if isinstance(line, str) else line
        if _LEGACY_MARK in raw:
            legacy = _legacy_decoder.decode(raw)
            fields = msgspec.structs.asdict(legacy)
            fields["metrics"] = legacy.metrics.summary(None)
            return FanoutResult(**fields)
        return _result_decoder.decode(raw)


class _LegacyResult(FanoutResult, kw_only=True):
    metrics: ItemMetrics = msgspec.field(default_factory=ItemMetrics)  # pyright: ignore[reportIncompatibleVariableOverride]


_LEGACY_MARK: Final = b'"t_sched":'
"""Only a raw-`ItemMetrics` metrics object has this key (in ``content`` the quote is escaped)."""
_encoder: Final = msgspec.json.Encoder()
_result_decoder: Final = JSONDecoder(FanoutResult)
_legacy_decoder: Final = JSONDecoder(_LegacyResult)


class LatencySummary(msgspec.Struct, kw_only=True, frozen=True):
    """Summary statistics of one latency metric over the successful items, in seconds.
    Percentiles come from a log-bucketed histogram (relative error ≤ 1 %)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    min: float | None
    max: float | None


def _empty_summary() -> LatencySummary:
    return LatencySummary(count=0, mean=None, p50=None, p90=None, p99=None, min=None, max=None)


class HistogramData(msgspec.Struct, frozen=True):
    """The full state of a `LogHistogram` (`LogHistogram.to_data` / `LogHistogram.from_data`),
    so that histograms of runs in other processes can be merged exactly.

    Attributes:
        count, total: number and sum of the recorded values.
        min, max: the extremes (``None`` when empty).
        tiny: values ≤ 1 µs (one bucket).
        buckets: bucket index → count; bucket ``k`` holds ``[1.02^k, 1.02^(k+1))``.
    """

    count: int
    total: float
    min: float | None
    max: float | None
    tiny: int
    buckets: dict[int, int]


class TimelineBucket(msgspec.Struct, frozen=True):
    """One interval of a run's timeline (``RunReport.timeline``).

    Attributes:
        t: the bucket's start, in seconds from the run's start.
        sent: items dispatched in the bucket (open loop: released by the dispatcher; closed
            loop: taken by a worker).
        ok, failed: items that ended ``ok`` / ``failed`` in the bucket.
        output_tokens: completion tokens of the items that ended in the bucket (not cached).
        in_flight: the peak number of requests in flight (sent to the server, not finished)
            during the bucket.
    """

    t: float
    sent: int
    ok: int
    failed: int
    output_tokens: int
    in_flight: int


class RunSnapshot(msgspec.Struct, kw_only=True, frozen=True):
    """Live progress of a run (see `FanoutRun.snapshot`). Rates are over the time since the first
    send; ``eta_seconds`` extrapolates the item completion rate (``None`` while unknown or when
    the input's length is unknown)."""

    elapsed: float
    items_total: int | None
    items_done: int
    ok: int
    failed: int
    cancelled: int
    budget_exhausted: int
    skipped: int
    cached: int
    in_flight: int
    queued: int
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    spend_usd: float
    reserved_usd: float
    projected_usd: float | None
    errors_by_class: dict[str, int]
    retries: int
    concurrency_limit: int
    breaker_open: bool
    admitting: bool
    eta_seconds: float | None


class RunReport(msgspec.Struct, kw_only=True, frozen=True):
    """The final summary of a run (see `FanoutRun.report`; ``run_report.json``).

    Throughput is over ``wall_time`` = first send → last completion. ``goodput_rps`` counts only
    ``ok`` items meeting every configured SLO (all ``ok`` items when none is set);
    ``slo_attainment`` is that count over the ``ok`` count. Latency summaries use successful items
    only; failures are counted in ``errors_by_class``. ``retries_histogram`` maps the number of
    attempts beyond the first (as a string) to the number of items.

    Open-loop fields (defaults in a closed-loop run, and when decoding older reports):

    Attributes:
        schedule: the schedule's `ArrivalSchedule.describe`; ``None`` for a closed loop.
        offered_rps: ``(n - 1) / (last - first intended time)`` over the n scheduled items
            (``None`` with fewer than 2 or a zero span).
        sent_rps: the same over the dispatch times of the dispatched items.
        lag: scheduling lag (`ItemMetrics.lag`) of every dispatched item.
        loop_lag: the event-loop probe's overshoot (a task sleeping 10 ms repeatedly).
        held_back: items due while ``max_concurrency`` (or the reorder window) was full.
        valid, invalid_reasons: ``False`` with one reason each when the client fell behind:
            lag p99 or loop-lag p99 above ``lag_threshold``, or ``sent_rps`` below 90 % of
            ``offered_rps`` with nothing held back. The numbers then describe the client, not
            the server.
        timeline_interval, timeline: per-interval counts from the run's start; at most 2,048
            buckets (beyond, neighbours merge and the interval doubles).
        histograms: the run's `LogHistogram` s by metric name (``queue_time``, ``ttft``,
            ``ttft_from_sched``, ``ttst``, ``itl``, ``tpot``, ``e2el``, ``lag``,
            ``loop_lag``), for `merge_reports`.
        t0_wall: ``time.time()`` at the run's start (aligns reports of other processes).
        wall_start: seconds from the run's start to the first send (where ``wall_time``
            begins).
    """

    wall_time: float
    items_total: int
    ok: int
    failed: int
    cancelled: int
    budget_exhausted: int
    skipped: int
    cached: int
    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    input_tokens: int
    output_tokens: int
    goodput_rps: float
    slo_attainment: float | None
    slo: dict[str, float]
    queue_time: LatencySummary
    ttft: LatencySummary
    ttft_from_sched: LatencySummary
    ttst: LatencySummary
    itl: LatencySummary
    tpot: LatencySummary
    e2el: LatencySummary
    errors_by_class: dict[str, int]
    deadlines: dict[str, int]
    retries: int
    retries_histogram: dict[str, int]
    succeeded_after_retry: int
    spend_usd: float
    projected_usd: float | None
    budget_usd: float | None
    budget_tokens: int | None
    concurrency_history: list[tuple[float, int, str]]
    peak_in_flight: int
    schedule: dict[str, Any] | None = None
    offered_rps: float | None = None
    sent_rps: float | None = None
    lag: LatencySummary = msgspec.field(default_factory=_empty_summary)
    loop_lag: LatencySummary = msgspec.field(default_factory=_empty_summary)
    held_back: int = 0
    valid: bool = True
    invalid_reasons: list[str] = msgspec.field(default_factory=list[str])
    timeline_interval: float = 1.0
    timeline: list[TimelineBucket] = msgspec.field(default_factory=list[TimelineBucket])
    histograms: dict[str, HistogramData] = msgspec.field(default_factory=dict[str, HistogramData])
    t0_wall: float = 0.0
    wall_start: float = 0.0

    def to_json(self) -> bytes:
        """The report as compact JSON bytes (``run_report.json``)."""
        return _encoder.encode(self)


class JournalProtocol(Protocol):
    """What `open_fanout` needs from a journal (`trio_sogni.fanout.Journal` implements it).

    The runner calls `done_indices` once before it starts and skips those items; it awaits
    `record_intent` before each item's first send and `record_outcome` after each item's
    outcome (before the result is yielded to the consumer). An exception from either fails the
    run.
    """

    def done_indices(self) -> AbstractSet[int]:
        """Indices of items whose outcome is already final (skipped on resume)."""
        ...

    async def record_intent(self, item: FanoutItem, key: str) -> None:
        """Record that ``item`` (with `content_key` ``key``) is about to be sent."""
        ...

    async def record_outcome(self, result: FanoutResult) -> None:
        """Record an item's outcome."""
        ...


class CacheProtocol(Protocol):
    """A result cache keyed by `content_key` (`trio_sogni.fanout.ResultCache` implements it).
    The runner only `put` s ``ok`` results, and only consults it when ``options.cache``."""

    async def get(self, key: str) -> FanoutResult | None:
        """The cached result for ``key``, or ``None``."""
        ...

    async def put(self, key: str, result: FanoutResult) -> None:
        """Store ``result`` under ``key``."""
        ...


def _check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError(f"{name} must be a number")
    if integer and not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer")
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(f"{name} must be positive and finite, got {value}")


@dataclass(frozen=True, kw_only=True)
class FanoutOptions:
    """How `open_fanout` runs. Every field is validated on construction
    (`~trio_sogni.InvalidRequestError`).

    Attributes:
        concurrency: the worker-pool size, the hard cap on in-flight requests (the adaptive
            limit's maximum when ``adaptive``).
        rpm: requests per minute (a token bucket holding at most one minute's worth).
        tpm: tokens per minute, charged at dispatch as prompt estimate + ``max_tokens``
            (``default_max_tokens`` when the item has none) and refunded to actual usage.
        adaptive: AIMD concurrency: +1 per ``limit`` successes, x ``0.5`` on a rate-limit /
            capacity error (at most once per ``adaptive_cooldown`` s), within
            [``min_concurrency``, ``concurrency``]; starts at ``concurrency``.
        max_attempts: attempts per item, including the first.
        retry_budget: extra attempts allowed over the whole run (``None``: unbounded).
        backoff_base, backoff_max: full-jitter exponential backoff: attempt *n* (n ≥ 1) waits
            ``uniform(0, min(backoff_max, backoff_base·2^(n-1)))``, or the server's Retry-After
            when it gave one (not jittered, capped at ``retry_after_max``).
        breaker_threshold, breaker_cooldown: the circuit breaker opens after this many
            consecutive final-attempt failures of one error class; it allows one probe after the
            cool-down.
        ordered, reorder_window: emit results in input order, holding at most
            ``reorder_window`` finished results out of order; the pool stops taking items while
            the window is full.
        admission_timeout: max seconds waiting for the limiter (per attempt).
        first_token_timeout: max seconds from send to the first content chunk.
        stall_timeout: max seconds between two content chunks.
        total_timeout: max seconds from send to the end of the attempt.
        budget_usd, budget_tokens: hard caps enforced before dispatch (worst case reserved).
        slo_ttft, slo_tpot, slo_e2el: goodput thresholds in seconds.
        stream: stream the answers (per-chunk metrics), else one ``create`` per item.
        dedup: single-flight identical in-flight requests (same `content_key`).
        cache: consult / fill the cache passed to `open_fanout`.
        default_max_tokens: the output reservation of items without ``max_tokens``.
        emit_skipped: also yield a ``skipped`` result for items the journal marked done.
        schedule: an `ArrivalSchedule` makes the run **open-loop**: item *i* is dispatched at
            its scheduled time whatever the earlier requests are doing (``concurrency`` is then
            ignored). ``None`` (the default): closed loop, ``concurrency`` workers.
        max_concurrency: open loop: the cap on items in process (dispatched, not finished); an
            item due while it is full waits for a slot and counts as held back. ``None``: no
            cap. Only with ``schedule``; ``adaptive`` is closed-loop only.
        seed: seeds the schedule's ``random.Random`` (``None``: fresh entropy).
        lag_threshold: the p99 scheduling lag / loop lag (seconds) above which an open-loop run
            is reported not ``valid``.
        timeline_interval: the initial width (seconds) of ``RunReport.timeline`` buckets.
        chunk_times: put each item's chunk arrival times (relative to its send) in its result
            row (`ItemSummary.chunk_times`).
    """

    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = False
    min_concurrency: int = 1
    adaptive_cooldown: float = 5.0
    max_attempts: int = 4
    retry_budget: int | None = None
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    breaker_threshold: int = 20
    breaker_cooldown: float = 30.0
    ordered: bool = False
    reorder_window: int = 1024
    admission_timeout: float | None = None
    first_token_timeout: float | None = None
    stall_timeout: float | None = None
    total_timeout: float | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    slo_e2el: float | None = None
    stream: bool = True
    dedup: bool = True
    cache: bool = False
    default_max_tokens: int = 4096
    emit_skipped: bool = False
    schedule: ArrivalSchedule | None = None
    max_concurrency: int | None = None
    seed: int | None = None
    lag_threshold: float = 0.005
    timeline_interval: float = 1.0
    chunk_times: bool = False

    def __post_init__(self) -> None:
        for name in ("concurrency", "min_concurrency", "max_attempts", "reorder_window"):
            _check_positive(name, getattr(self, name), integer=True)
        for name in ("breaker_threshold", "default_max_tokens"):
            _check_positive(name, getattr(self, name), integer=True)
        for name in (
            "rpm",
            "tpm",
            "admission_timeout",
            "first_token_timeout",
            "stall_timeout",
            "total_timeout",
            "budget_usd",
            "slo_ttft",
            "slo_tpot",
            "slo_e2el",
            "backoff_base",
            "backoff_max",
            "retry_after_max",
            "breaker_cooldown",
            "adaptive_cooldown",
        ):
            _check_positive(name, getattr(self, name))
        _check_positive("budget_tokens", self.budget_tokens, integer=True)
        if self.retry_budget is not None:
            if isinstance(self.retry_budget, bool) or not isinstance(self.retry_budget, int):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidRequestError("retry_budget must be an integer")
            if self.retry_budget < 0:
                raise InvalidRequestError("retry_budget must not be negative")
        if self.min_concurrency > self.concurrency:
            raise InvalidRequestError("min_concurrency must not exceed concurrency")
        for name in (
            "adaptive",
            "ordered",
            "stream",
            "dedup",
            "cache",
            "emit_skipped",
            "chunk_times",
        ):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(f"{name} must be a bool")
        _check_positive("max_concurrency", self.max_concurrency, integer=True)
        _check_positive("lag_threshold", self.lag_threshold)
        _check_positive("timeline_interval", self.timeline_interval)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)  # pyright: ignore[reportUnnecessaryIsInstance]
        ):
            raise InvalidRequestError("seed must be an integer")
        if self.schedule is not None:
            if not isinstance(self.schedule, ArrivalSchedule):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidRequestError(
                    "schedule must be an ArrivalSchedule (offsets, describe, rate)"
                )
            if self.adaptive:
                raise InvalidRequestError("adaptive concurrency is closed-loop only (no schedule)")
        elif self.max_concurrency is not None:
            raise InvalidRequestError("max_concurrency is for open-loop runs (set a schedule)")

    @property
    def open_loop(self) -> bool:
        """Whether the run is open-loop (a ``schedule`` is set)."""
        return self.schedule is not None

    @property
    def slo(self) -> dict[str, float]:
        """The configured SLOs by metric name (``ttft``, ``tpot``, ``e2el``)."""
        pairs = (("ttft", self.slo_ttft), ("tpot", self.slo_tpot), ("e2el", self.slo_e2el))
        return {name: value for name, value in pairs if value is not None}
