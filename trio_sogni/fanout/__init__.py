"""Fan-out for research harnesses: bounded, rate-limited, budgeted, resumable batch runs of chat
completions with streaming metrics. See ``docs/fanout.md``."""

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
