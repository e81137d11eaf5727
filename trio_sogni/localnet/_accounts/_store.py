"""localnet's persistent state: accounts, API keys, balances and refresh tokens, in SQLite.

The store is synchronous on purpose. Every query is a primary-key or unique-index lookup or a
one-row write on a small database, which SQLite answers in microseconds (an in-memory database,
the default) to well under a millisecond (a file in WAL mode with ``synchronous=NORMAL``). That
is cheaper than a hop to a worker thread, and it keeps every state change atomic with respect to
other Trio tasks, like the rest of localnet. A test server accepts the rare fsync stall of a file
database on the Trio thread.

Secrets are never stored: API keys as their SHA-256 hex digest, refresh tokens by their ``jti``
only. Balances are :class:`~decimal.Decimal` values stored as plain decimal TEXT.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Generator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

__all__ = [
    "SCHEMA_VERSION",
    "TOKEN_TYPES",
    "AccountRecord",
    "DuplicateAccount",
    "RefreshTokenRecord",
    "Store",
    "TokenType",
]

TokenType: TypeAlias = Literal["sogni", "spark"]
TOKEN_TYPES: Final[tuple[TokenType, ...]] = ("sogni", "spark")

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    wallet_address TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS balances (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_type TEXT NOT NULL CHECK (token_type IN ('sogni', 'spark')),
    amount TEXT NOT NULL,
    PRIMARY KEY (account_id, token_type)
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_account ON refresh_tokens (account_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_expiry ON refresh_tokens (expires_at);
"""


@dataclass(frozen=True, kw_only=True)
class AccountRecord:
    """One stored account. ``username`` is unique ignoring case; ``wallet_address`` is
    EIP-55 checksummed and unique; ``created_at`` is wall-clock seconds since the epoch."""

    id: str
    username: str
    email: str
    wallet_address: str
    created_at: float


@dataclass(frozen=True, kw_only=True)
class RefreshTokenRecord:
    """What the store knows of an issued refresh token (never the token itself)."""

    jti: str
    account_id: str
    expires_at: float
    revoked: bool


class DuplicateAccount(ValueError):
    """Another account already has this ``field`` (``"id"``, ``"username"`` or
    ``"wallet_address"``)."""

    def __init__(self, field: Literal["id", "username", "wallet_address"]) -> None:
        super().__init__(f"an account with this {field.replace('_', ' ')} already exists")
        self.field: Literal["id", "username", "wallet_address"] = field


def _amount(value: Decimal) -> str:
    return format(value, "f")


def _account(row: tuple[str, str, str, str, float]) -> AccountRecord:
    return AccountRecord(
        id=row[0], username=row[1], email=row[2], wallet_address=row[3], created_at=row[4]
    )


_ACCOUNT_COLUMNS: Final = "id, username, email, wallet_address, created_at"


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Generator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection; ``ROLLBACK`` (and re-raise)
    on any exception, cancellation included."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Store:
    """An open SQLite database (``":memory:"`` or a file path, created if missing).

    All methods are synchronous and each is one transaction. Callers validate and normalise
    values (checksummed addresses, known token types); the store enforces uniqueness.

    Raises:
        ValueError: the file holds a localnet schema of another version.
    """

    def __init__(self, database: str | os.PathLike[str] = ":memory:") -> None:
        self._db = sqlite3.connect(database, isolation_level=None)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            if str(database) != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(
                    f"the database has localnet schema version {version}, "
                    f"this localnet needs {SCHEMA_VERSION}"
                )
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (autocommit mode), for sibling tables kept in the same database
        (e.g. durable chat runs, see :mod:`trio_sogni.localnet._runs._store`)."""
        return self._db

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db)

    # -- meta -----------------------------------------------------------------------------------

    def secret(self, name: str, nbytes: int = 32) -> bytes:
        """The random secret ``name``, created on first use and kept with the database."""
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
            if row is not None:
                return bytes.fromhex(row[0])
            value = secrets.token_bytes(nbytes)
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value.hex()))
            return value

    # -- accounts -------------------------------------------------------------------------------

    def _check_unique(
        self, db: sqlite3.Connection, record: AccountRecord, *, exclude_id: str | None
    ) -> None:
        other = exclude_id or ""
        if db.execute(
            "SELECT 1 FROM accounts WHERE username_key = ? AND id != ?",
            (record.username.lower(), other),
        ).fetchone():
            raise DuplicateAccount("username")
        if db.execute(
            "SELECT 1 FROM accounts WHERE wallet_address = ? AND id != ?",
            (record.wallet_address, other),
        ).fetchone():
            raise DuplicateAccount("wallet_address")

    def insert_account(self, record: AccountRecord, balances: Mapping[TokenType, Decimal]) -> None:
        """Add ``record`` with its initial ``balances`` (missing token types start at 0).

        Raises:
            DuplicateAccount: the id, username (any case) or wallet address is taken.
        """
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM accounts WHERE id = ?", (record.id,)).fetchone():
                raise DuplicateAccount("id")
            self._check_unique(db, record, exclude_id=None)
            db.execute(
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}, username_key) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.username,
                    record.email,
                    record.wallet_address,
                    record.created_at,
                    record.username.lower(),
                ),
            )
            db.executemany(
                "INSERT INTO balances (account_id, token_type, amount) VALUES (?, ?, ?)",
                [(record.id, t, _amount(balances.get(t, Decimal(0)))) for t in TOKEN_TYPES],
            )

    def update_profile(self, record: AccountRecord) -> None:
        """Set the username, email and wallet of the existing account ``record.id``.

        Raises:
            DuplicateAccount: another account has that username or wallet address.
            KeyError: no account has that id.
        """
        with self._transaction() as db:
            self._check_unique(db, record, exclude_id=record.id)
            cursor = db.execute(
                "UPDATE accounts SET username = ?, username_key = ?, email = ?, wallet_address = ?"
                " WHERE id = ?",
                (
                    record.username,
                    record.username.lower(),
                    record.email,
                    record.wallet_address,
                    record.id,
                ),
            )
            if cursor.rowcount != 1:
                raise KeyError(record.id)

    def _one_account(self, where: str, value: str) -> AccountRecord | None:
        row = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {where} = ?", (value,)
        ).fetchone()
        return None if row is None else _account(row)

    def account(self, account_id: str) -> AccountRecord | None:
        return self._one_account("id", account_id)

    def account_by_username(self, username: str) -> AccountRecord | None:
        """The account whose username equals ``username`` ignoring case."""
        return self._one_account("username_key", username.lower())

    def account_by_wallet(self, checksummed_address: str) -> AccountRecord | None:
        return self._one_account("wallet_address", checksummed_address)

    def accounts(self) -> list[AccountRecord]:
        """Every account, oldest first."""
        rows = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"
        ).fetchall()
        return [_account(row) for row in rows]

    # -- API keys -------------------------------------------------------------------------------

    def add_api_key(self, key_hash: str, account_id: str, created_at: float) -> None:
        """Let the key with SHA-256 hex digest ``key_hash`` act for ``account_id`` (re-adding a
        known key moves it to that account)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO api_keys (key_hash, account_id, created_at)"
                " VALUES (?, ?, ?)",
                (key_hash, account_id, created_at),
            )

    def account_for_api_key(self, key_hash: str) -> AccountRecord | None:
        row = self._db.execute(
            "SELECT a.id, a.username, a.email, a.wallet_address, a.created_at"
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?",
            (key_hash,),
        ).fetchone()
        return None if row is None else _account(row)

    # -- balances -------------------------------------------------------------------------------

    def balances(self, account_id: str) -> dict[TokenType, Decimal]:
        """The settled balance of every token type (empty for an unknown account)."""
        rows: list[tuple[TokenType, str]] = self._db.execute(
            "SELECT token_type, amount FROM balances WHERE account_id = ?", (account_id,)
        ).fetchall()
        return {token_type: Decimal(amount) for token_type, amount in rows}

    def set_balance(self, account_id: str, token_type: TokenType, amount: Decimal) -> None:
        """Store ``amount`` as the settled ``token_type`` balance of ``account_id`` (one write)."""
        self._db.execute(
            "INSERT INTO balances (account_id, token_type, amount) VALUES (?, ?, ?)"
            " ON CONFLICT (account_id, token_type) DO UPDATE SET amount = excluded.amount",
            (account_id, token_type, _amount(amount)),
        )

    # -- refresh tokens -------------------------------------------------------------------------

    def add_refresh_token(self, jti: str, account_id: str, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO refresh_tokens (jti, account_id, expires_at) VALUES (?, ?, ?)",
            (jti, account_id, expires_at),
        )

    def refresh_token(self, jti: str) -> RefreshTokenRecord | None:
        row = self._db.execute(
            "SELECT jti, account_id, expires_at, revoked FROM refresh_tokens WHERE jti = ?",
            (jti,),
        ).fetchone()
        if row is None:
            return None
        return RefreshTokenRecord(
            jti=row[0], account_id=row[1], expires_at=row[2], revoked=bool(row[3])
        )

    def rotate_refresh_token(
        self, old_jti: str, new_jti: str, account_id: str, expires_at: float
    ) -> bool:
        """Revoke the live token ``old_jti`` and record ``new_jti`` in one transaction. Returns
        ``False`` (changing nothing) when ``old_jti`` is unknown or already revoked."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE jti = ? AND revoked = 0", (old_jti,)
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO refresh_tokens (jti, account_id, expires_at) VALUES (?, ?, ?)",
                (new_jti, account_id, expires_at),
            )
            return True

    def revoke_refresh_tokens(self, account_id: str) -> int:
        """Revoke every live refresh token of ``account_id``; returns how many."""
        cursor = self._db.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE account_id = ? AND revoked = 0",
            (account_id,),
        )
        return cursor.rowcount

    def prune_refresh_tokens(self, now: float) -> int:
        """Forget refresh tokens that expired before ``now``; returns how many."""
        return self._db.execute("DELETE FROM refresh_tokens WHERE expires_at < ?", (now,)).rowcount
