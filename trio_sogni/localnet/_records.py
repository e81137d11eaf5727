"""What a local network remembers for tests to inspect: immutable records and statistics.

The job-level record, :class:`~._jobs.JobRecord`, lives with the jobs layer that writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "REDACTED_HEADERS",
    "HTTPRequestRecord",
    "HandshakeRecord",
    "NetworkStatistics",
    "RejectedFrame",
    "redact",
]

REDACTED_HEADERS: Final = frozenset({"api-key", "authorization", "cookie"})


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with credential values replaced by ``"<redacted>"``."""
    return {k: ("<redacted>" if k in REDACTED_HEADERS else v) for k, v in headers.items()}


@dataclass(frozen=True)
class HTTPRequestRecord:
    """One REST request the network answered (credential headers redacted)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(repr=False)
    status: int


@dataclass(frozen=True)
class HandshakeRecord:
    """One WebSocket upgrade: its URL parameters and what became of it.

    ``outcome`` is ``"accepted"`` (``authenticated`` sent) or ``"rejected"`` (closed with
    ``close_code`` right after the upgrade: 4010 no ``appId``, 4021 bad credentials, 1001 shutting
    down).
    """

    path: str
    query: Mapping[str, str]
    app_id: str | None
    client_name: str | None
    headers: Mapping[str, str] = field(repr=False)
    outcome: Literal["accepted", "rejected"]
    close_code: int | None = None


@dataclass(frozen=True)
class RejectedFrame:
    """A client frame localnet refused (strict decoding or request validation failed)."""

    reason: str
    job_id: str | None
    message_type: str | None
    frame: bytes | str = field(repr=False)


@dataclass(frozen=True)
class NetworkStatistics:
    """A snapshot of a network's live state.

    ``job_state_entries`` counts every per-job entry the network holds anywhere (job table, app
    tables, queues, worker slots, detached apps); it returns to 0 once no job is live.
    """

    live_jobs: int
    queued_jobs: int
    running_jobs: int
    detached_jobs: int
    connected_sockets: int
    open_connections: int
    job_state_entries: int
