"""Durable chat runs in SQLite: run records and their event logs, beside the account tables.

Two tables live in the same database as the accounts (:class:`~trio_sogni.localnet._accounts._store.Store`
owns the connection):

* ``chat_runs``: one row per run — its owner account, the optional idempotency key (unique per
  owner), the status, the client-visible record (``ChatRunRecord`` of protocol.md §3.7 without
  ``events``, as JSON) and the executor's checkpoint (JSON, never shown to clients);
* ``chat_run_events``: the event log, ``PRIMARY KEY (run_id, sequence)``.

Like the account store this is synchronous on purpose (see :mod:`trio_sogni.localnet._accounts._store`): each call is one
short transaction of primary-key reads or a few row writes, which SQLite answers in well under a
millisecond; staying on the Trio thread makes every append atomic with respect to other tasks
and to cancellation (there is no checkpoint inside a write, so a shutdown can never leave an
event written without its record update, or the reverse).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ...protocol import JSONDecoder
from .._accounts._store import immediate_transaction

__all__ = ["RunCheckpoint", "RunRow", "RunStore", "StoredEvent"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chat_runs (
    run_id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    next_sequence INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chat_runs_by_idempotency_key
    ON chat_runs (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS chat_runs_by_status ON chat_runs (status);
CREATE TABLE IF NOT EXISTS chat_run_events (
    run_id TEXT NOT NULL REFERENCES chat_runs (run_id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (run_id, sequence)
);
"""

_encode: Final = msgspec.json.Encoder()
_decode_object: Final = JSONDecoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a run's log: its place (``sequence``), ``type``, the run's ``status`` right
    after it, its ISO-8601 UTC time ``at`` and its ``payload`` object."""

    sequence: int
    type: str
    status: str
    at: str
    payload: dict[str, Any]


class RunCheckpoint(msgspec.Struct, kw_only=True, rename="camel"):
    """Where a run's executor is: the LLM ``round`` reached, the ``conversation`` the next
    round sends, the tool calls still ``pending`` (in order), the calls whose cost was
    ``confirmed``, how many tool calls failed, the last billing preview's version, and the
    idempotency keys already used for cost confirmations."""

    round: int = 0
    conversation: list[dict[str, Any]] = msgspec.field(default_factory=list[dict[str, Any]])
    pending: list[dict[str, Any]] = msgspec.field(default_factory=list[dict[str, Any]])
    confirmed: list[str] = msgspec.field(default_factory=list[str])
    failed_tools: int = 0
    preview_version: int = 0
    confirm_keys: list[str] = msgspec.field(default_factory=list[str])


_decode_checkpoint: Final = JSONDecoder(RunCheckpoint)


@dataclass(frozen=True, slots=True)
class RunRow:
    """A stored run: who owns it, its status, record, checkpoint and next event sequence."""

    run_id: str
    owner_id: str
    idempotency_key: str | None
    status: str
    record: dict[str, Any]
    checkpoint: RunCheckpoint
    next_sequence: int


class RunStore:
    """The run tables on an open connection (created if missing). Synchronous; see the module
    docstring for why."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db)

    def insert(
        self,
        row: RunRow,
        first: StoredEvent,
        *,
        created_at: float,
    ) -> bool:
        """Store a new run with its first event. Returns ``False`` (storing nothing) when the
        owner already has a run with this idempotency key."""
        with self._transaction() as db:
            try:
                db.execute(
                    "INSERT INTO chat_runs (run_id, owner_id, idempotency_key, status, record,"
                    " checkpoint, next_sequence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.run_id,
                        row.owner_id,
                        row.idempotency_key,
                        row.status,
                        _encode.encode(row.record),
                        _encode.encode(row.checkpoint),
                        first.sequence + 1,
                        created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            self._insert_events(db, row.run_id, [first])
            return True

    @staticmethod
    def _insert_events(db: sqlite3.Connection, run_id: str, events: Sequence[StoredEvent]) -> None:
        db.executemany(
            "INSERT INTO chat_run_events (run_id, sequence, type, status, at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (run_id, e.sequence, e.type, e.status, e.at, _encode.encode(e.payload))
                for e in events
            ],
        )

    def append(
        self,
        run_id: str,
        event: StoredEvent,
        *,
        record: dict[str, Any] | None,
        checkpoint: RunCheckpoint | None,
    ) -> None:
        """Add ``event`` and, in the same transaction, set the run's status to the event's and
        its next sequence past it, and replace the record and checkpoint when given."""
        with self._transaction() as db:
            self._insert_events(db, run_id, [event])
            assignments = ["status = ?", "next_sequence = ?"]
            values: list[object] = [event.status, event.sequence + 1]
            if record is not None:
                assignments.append("record = ?")
                values.append(_encode.encode(record))
            if checkpoint is not None:
                assignments.append("checkpoint = ?")
                values.append(_encode.encode(checkpoint))
            values.append(run_id)
            db.execute(f"UPDATE chat_runs SET {', '.join(assignments)} WHERE run_id = ?", values)

    def load(self, run_id: str) -> RunRow | None:
        """The run ``run_id``, or ``None``."""
        row = self._db.execute(
            "SELECT run_id, owner_id, idempotency_key, status, record, checkpoint, next_sequence"
            " FROM chat_runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return None if row is None else _row(row)

    def find_by_idempotency_key(self, owner_id: str, key: str) -> str | None:
        """The id of ``owner_id``'s run created with idempotency key ``key``, or ``None``."""
        row = self._db.execute(
            "SELECT run_id FROM chat_runs WHERE owner_id = ? AND idempotency_key = ?",
            (owner_id, key),
        ).fetchone()
        return None if row is None else str(row[0])

    def events_after(self, run_id: str, after: int) -> list[StoredEvent]:
        """The events of ``run_id`` with a sequence greater than ``after``, in order."""
        rows = self._db.execute(
            "SELECT sequence, type, status, at, payload FROM chat_run_events"
            " WHERE run_id = ? AND sequence > ? ORDER BY sequence",
            (run_id, after),
        ).fetchall()
        return [
            StoredEvent(
                sequence=r[0], type=r[1], status=r[2], at=r[3], payload=_decode_object.decode(r[4])
            )
            for r in rows
        ]

    def unfinished(self, statuses: Sequence[str]) -> list[str]:
        """Ids of the runs whose status is one of ``statuses``, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        rows = self._db.execute(
            f"SELECT run_id FROM chat_runs WHERE status IN ({marks}) ORDER BY created_at, run_id",
            tuple(statuses),
        ).fetchall()
        return [str(r[0]) for r in rows]


def _row(row: tuple[Any, ...]) -> RunRow:
    return RunRow(
        run_id=row[0],
        owner_id=row[1],
        idempotency_key=row[2],
        status=row[3],
        record=_decode_object.decode(row[4]),
        checkpoint=_decode_checkpoint.decode(row[5]),
        next_sequence=row[6],
    )
