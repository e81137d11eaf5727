"""What a local network remembers for tests to inspect: immutable records and statistics.

The job-level record, :class:`~._jobs.JobRecord`, lives with the jobs layer that writes it.

Records hold *summaries* of what clients sent, never whole payloads of unbounded size: header
and query values, paths and ids are cut to 256 (``PREVIEW_CHARS``) characters, at most
64 (``MAX_FIELDS``) headers or query parameters are kept, and a rejected frame keeps its first
512 (``FRAME_PREVIEW``) characters (or bytes) plus its full size. Each log is a
:class:`~._server.RecordLog` bounded in count (``record_limit``) and in accounted bytes
(``record_bytes``); the ``*_size`` functions here give each record's accounted size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from ._server import RECORD_OVERHEAD, preview

__all__ = [
    "FRAME_PREVIEW",
    "MAX_FIELDS",
    "PREVIEW_CHARS",
    "REDACTED_HEADERS",
    "REDACTED_QUERY",
    "HTTPRequestRecord",
    "HandshakeRecord",
    "NetworkStatistics",
    "RejectedFrame",
    "handshake_size",
    "http_request_size",
    "redact",
    "rejected_frame_size",
    "summarize_fields",
]

REDACTED_HEADERS: Final = frozenset({"api-key", "authorization", "cookie"})
REDACTED_QUERY: Final = frozenset({"signature"})
"""Query parameters that are credentials (a signed media URL's ``signature``)."""
PREVIEW_CHARS: Final = 256
"""Longest header value, query value, path or id a record keeps (longer ones end in ``…``)."""
MAX_FIELDS: Final = 64
"""Most headers (or query parameters) a record keeps: the first ones, in order."""
FRAME_PREVIEW: Final = 512
"""How much of a rejected frame its record keeps."""
_FIELD_OVERHEAD: Final = 16


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with credential values replaced by ``"<redacted>"``."""
    return {k: ("<redacted>" if k in REDACTED_HEADERS else v) for k, v in headers.items()}


def summarize_fields(fields: Mapping[str, str], *, redacted: bool = False) -> dict[str, str]:
    """The first 64 (``MAX_FIELDS``) items of ``fields``, names and values cut to
    256 (``PREVIEW_CHARS``) (credential headers redacted when ``redacted``)."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if len(out) >= MAX_FIELDS:
            break
        if redacted and name in REDACTED_HEADERS:
            value = "<redacted>"
        out[preview(name, PREVIEW_CHARS)] = preview(value, PREVIEW_CHARS)
    return out


def _fields_size(fields: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) + _FIELD_OVERHEAD for k, v in fields.items())


def _strings_size(values: Iterable[str | None]) -> int:
    return sum(len(v) for v in values if v is not None)


@dataclass(frozen=True)
class HTTPRequestRecord:
    """One REST request the network answered: a summary (credential headers and query
    parameters redacted, values cut to 256 (``PREVIEW_CHARS``), at most 64 (``MAX_FIELDS``)
    headers and query parameters)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(repr=False)
    status: int

    @classmethod
    def summarize(
        cls,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        status: int,
    ) -> HTTPRequestRecord:
        return cls(
            preview(method, PREVIEW_CHARS),
            preview(path, PREVIEW_CHARS),
            summarize_fields(
                {k: ("<redacted>" if k in REDACTED_QUERY else v) for k, v in query.items()}
            ),
            summarize_fields(headers, redacted=True),
            status,
        )


def http_request_size(record: HTTPRequestRecord) -> int:
    """The accounted size of an :class:`HTTPRequestRecord`."""
    return (
        RECORD_OVERHEAD
        + len(record.method)
        + len(record.path)
        + _fields_size(record.query)
        + _fields_size(record.headers)
    )


@dataclass(frozen=True)
class HandshakeRecord:
    """One WebSocket upgrade: its URL parameters and what became of it (a summary, like
    :class:`HTTPRequestRecord`).

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


def handshake_size(record: HandshakeRecord) -> int:
    """The accounted size of a :class:`HandshakeRecord`."""
    return (
        RECORD_OVERHEAD
        + _strings_size((record.path, record.app_id, record.client_name))
        + _fields_size(record.query)
        + _fields_size(record.headers)
    )


@dataclass(frozen=True)
class RejectedFrame:
    """A client frame localnet refused (strict decoding or request validation failed).

    ``frame`` is the frame's first 512 (``FRAME_PREVIEW``) characters (text frames) or bytes
    (binary ones) and ``size`` its whole length, so ``truncated`` tells whether ``frame`` is all
    of it. ``reason``, ``job_id`` and ``message_type`` are cut to 256 (``PREVIEW_CHARS``).
    """

    reason: str
    job_id: str | None
    message_type: str | None
    frame: bytes | str = field(repr=False)
    size: int = 0

    @property
    def truncated(self) -> bool:
        return self.size > len(self.frame)

    @classmethod
    def summarize(
        cls, reason: str, job_id: str | None, message_type: str | None, frame: bytes | str
    ) -> RejectedFrame:
        return cls(
            preview(reason, PREVIEW_CHARS),
            None if job_id is None else preview(job_id, PREVIEW_CHARS),
            None if message_type is None else preview(message_type, PREVIEW_CHARS),
            frame[:FRAME_PREVIEW],
            len(frame),
        )


def rejected_frame_size(record: RejectedFrame) -> int:
    """The accounted size of a :class:`RejectedFrame`."""
    return (
        RECORD_OVERHEAD
        + len(record.frame)
        + _strings_size((record.reason, record.job_id, record.message_type))
    )


@dataclass(frozen=True)
class NetworkStatistics:
    """A snapshot of a network's live state.

    ``job_state_entries`` counts every per-job entry the network holds anywhere (job table, app
    tables, queues, worker slots, detached apps); it returns to 0 once no job is live.
    ``lingering_jobs`` counts the finished jobs whose last frames are kept for clients that
    resume jobs (``jobResume=1``), each for ``rebind_grace`` at most, and at most
    ``max_jobs_per_socket`` and 16 MiB per app (see ``docs/connections.md``).
    ``refused_connections`` counts connections answered ``503`` because ``max_connections`` were
    open, ``timed_out_connections`` those cut by a read or write bound, and ``stalled_sockets``
    the WebSockets dropped because they stopped reading (all since the network started).
    """

    live_jobs: int
    queued_jobs: int
    running_jobs: int
    detached_jobs: int
    connected_sockets: int
    open_connections: int
    job_state_entries: int
    refused_connections: int = 0
    timed_out_connections: int = 0
    stalled_sockets: int = 0
    lingering_jobs: int = 0
