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

__all__ = [
    "MAX_CHUNK_TIMES",
    "CacheProtocol",
    "Deadline",
    "ErrorInfo",
    "FanoutItem",
    "FanoutOptions",
    "FanoutResult",
    "ItemMetrics",
    "JournalProtocol",
    "LatencySummary",
    "ResultStatus",
    "RunReport",
    "RunSnapshot",
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
            validate_messages(plain)
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
        t_sched: when the item was taken from the input (the intended send time: the run is
            closed-loop, so this is when the producer handed it to the pool queue).
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
        metrics: the timing record.
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
    metrics: ItemMetrics = msgspec.field(default_factory=ItemMetrics)
    cached: bool = False

    def to_json(self) -> str:
        """This result as one line of JSON (no trailing newline)."""
        return _encoder.encode(self).decode()

    @classmethod
    def from_json(cls, line: str | bytes) -> FanoutResult:
        """Parse a line written by `to_json`.

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: not a result line.
        """
        return _result_decoder.decode(line)


_encoder: Final = msgspec.json.Encoder()
_result_decoder: Final = JSONDecoder(FanoutResult)


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
        for name in ("adaptive", "ordered", "stream", "dedup", "cache", "emit_skipped"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(f"{name} must be a bool")

    @property
    def slo(self) -> dict[str, float]:
        """The configured SLOs by metric name (``ttft``, ``tpot``, ``e2el``)."""
        pairs = (("ttft", self.slo_ttft), ("tpot", self.slo_tpot), ("e2el", self.slo_e2el))
        return {name: value for name, value in pairs if value is not None}
