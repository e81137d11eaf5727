"""Fan-out for research harnesses: bounded, rate-limited, budgeted, resumable batch runs of chat
completions with streaming metrics. See ``docs/fanout.md``."""

from ._cache import ResultCache as ResultCache
from ._journal import (
    FINAL_STATUSES as FINAL_STATUSES,
    Journal as Journal,
    JournalError as JournalError,
    ResultsWriter as ResultsWriter,
)
from ._limits import (
    AdaptiveConcurrency as AdaptiveConcurrency,
    Limiter as Limiter,
    Permit as Permit,
    TokenBucket as TokenBucket,
)
from ._metrics import LogHistogram as LogHistogram, RunStats as RunStats
from ._retry import (
    RETRY_TABLE as RETRY_TABLE,
    RETRYABLE_JOB_ERROR_TYPES as RETRYABLE_JOB_ERROR_TYPES,
    CircuitBreaker as CircuitBreaker,
    Classification as Classification,
    RetryBudget as RetryBudget,
    backoff_delay as backoff_delay,
    classify as classify,
)
from ._runner import FanoutRun as FanoutRun, open_fanout as open_fanout
from ._types import (
    MAX_CHUNK_TIMES as MAX_CHUNK_TIMES,
    CacheProtocol as CacheProtocol,
    Deadline as Deadline,
    ErrorInfo as ErrorInfo,
    FanoutItem as FanoutItem,
    FanoutOptions as FanoutOptions,
    FanoutResult as FanoutResult,
    ItemMetrics as ItemMetrics,
    JournalProtocol as JournalProtocol,
    LatencySummary as LatencySummary,
    ResultStatus as ResultStatus,
    RunReport as RunReport,
    RunSnapshot as RunSnapshot,
    TokenUsage as TokenUsage,
    content_key as content_key,
)

__all__ = [
    "FINAL_STATUSES",
    "MAX_CHUNK_TIMES",
    "RETRYABLE_JOB_ERROR_TYPES",
    "RETRY_TABLE",
    "AdaptiveConcurrency",
    "CacheProtocol",
    "CircuitBreaker",
    "Classification",
    "Deadline",
    "ErrorInfo",
    "FanoutItem",
    "FanoutOptions",
    "FanoutResult",
    "FanoutRun",
    "ItemMetrics",
    "Journal",
    "JournalError",
    "JournalProtocol",
    "LatencySummary",
    "Limiter",
    "LogHistogram",
    "Permit",
    "ResultCache",
    "ResultStatus",
    "ResultsWriter",
    "RetryBudget",
    "RunReport",
    "RunSnapshot",
    "RunStats",
    "TokenBucket",
    "TokenUsage",
    "backoff_delay",
    "classify",
    "content_key",
    "open_fanout",
]
