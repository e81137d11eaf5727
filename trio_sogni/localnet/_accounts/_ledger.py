"""Balances and billing: settled balances (persisted) and holds for live jobs (in memory).

A job *reserves* its worst-case cost (the ``estimatedCost`` of ``jobState pending``) when it is
accepted; the reservation is refused when the account's available balance (settled minus what
live jobs hold) cannot cover it. A completed job *settles*: its actual cost is debited (one
write) and its hold released; a job that ends any other way only releases its hold.

Balances as the protocol shows them (``authenticated.tokens``, ``balanceUpdate``,
``GET /v4/account/balance``): ``settled`` is the stored balance, ``debit`` the sum of live holds,
``credit`` is always 0, and ``net = settled + credit - debit``.

Settled balances are cached after the first read, so accepting a job costs no query; every write
goes through this class, which keeps the cache exact.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final, TypeAlias

from ...protocol import Balance
from .._config import format_decimal
from ._store import TOKEN_TYPES, Store, TokenType

__all__ = ["MAX_AMOUNT", "Amount", "Hold", "InsufficientBalance", "Ledger", "to_amount"]

Amount: TypeAlias = Decimal | str | int
"""A token amount as callers may give it; stored as :class:`~decimal.Decimal`."""

_ZERO = Decimal(0)

MAX_AMOUNT: Final = Decimal("9999999999999999.999999999999")
"""The largest amount (and balance) the ledger holds: amounts are kept to 12 decimal places
in Python's default 28-digit decimal context, so 16 digits before the point is the most that can
be rounded, shown and compared. Larger amounts, and funding that would make a balance larger,
are refused (:class:`ValueError`) before anything is stored."""


def to_amount(value: Amount) -> Decimal:
    """``value`` as a finite :class:`~decimal.Decimal` no larger in size than
    :data:`MAX_AMOUNT`.

    Raises:
        ValueError: not a finite decimal number, or too large.
    """
    if isinstance(value, bool):
        raise ValueError("an amount must be a decimal number")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"an amount must be a decimal number, got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"an amount must be finite, got {value!r}")
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"an amount must be below 1e16 in size, got {value!r}")
    return amount


class InsufficientBalance(Exception):
    """The account's available balance cannot cover a reservation."""

    def __init__(self, token_type: TokenType, needed: Decimal, available: Decimal) -> None:
        super().__init__(
            f"Insufficient {token_type} balance: this request may cost up to "
            f"{format_decimal(needed)} {token_type} and the account has "
            f"{format_decimal(available)} {token_type} available."
        )
        self.token_type: TokenType = token_type
        self.needed = needed
        self.available = available


class Hold:
    """An amount reserved for one live job; released or settled exactly once."""

    __slots__ = ("account_id", "active", "amount", "token_type")

    def __init__(self, account_id: str, token_type: TokenType, amount: Decimal) -> None:
        self.account_id = account_id
        self.token_type: TokenType = token_type
        self.amount = amount
        self.active = True


class Ledger:
    """Every account's settled balances (write-through cache over a :class:`Store`) and holds.

    Accounts the store does not know, and those in :attr:`unmetered`, are not billed:
    :meth:`reserve` returns ``None`` for them.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.unmetered: set[str] = set()
        """Ids of accounts whose jobs are neither checked nor charged."""
        self._settled: dict[str, dict[TokenType, Decimal] | None] = {}
        self._held: dict[tuple[str, TokenType], Decimal] = {}

    def forget(self, account_id: str) -> None:
        """Drop the cached balances of ``account_id`` (after the store changed behind us)."""
        self._settled.pop(account_id, None)

    def _balances(self, account_id: str) -> dict[TokenType, Decimal] | None:
        try:
            return self._settled[account_id]
        except KeyError:
            stored = self._store.balances(account_id)
            cached: dict[TokenType, Decimal] | None = (
                {t: stored.get(t, _ZERO) for t in TOKEN_TYPES} if stored else None
            )
            self._settled[account_id] = cached
            return cached

    def settled(self, account_id: str, token_type: TokenType) -> Decimal:
        """The settled ``token_type`` balance of ``account_id``.

        Raises:
            KeyError: the store does not know the account.
        """
        balances = self._balances(account_id)
        if balances is None:
            raise KeyError(account_id)
        return balances[token_type]

    def held(self, account_id: str, token_type: TokenType) -> Decimal:
        """What live jobs of ``account_id`` hold in ``token_type``."""
        return self._held.get((account_id, token_type), _ZERO)

    def balances(self, account_id: str) -> dict[str, Balance] | None:
        """The protocol's balance map (``sogni``, ``spark``) or ``None`` for an unknown account."""
        balances = self._balances(account_id)
        if balances is None:
            return None
        out: dict[str, Balance] = {}
        for token_type in TOKEN_TYPES:
            settled = balances[token_type]
            held = self.held(account_id, token_type)
            out[token_type] = Balance(
                settled=format_decimal(settled),
                credit="0",
                debit=format_decimal(held),
                net=format_decimal(settled - held),
            )
        return out

    def reserve(self, account_id: str, token_type: TokenType, amount: Decimal) -> Hold | None:
        """Hold ``amount`` of ``token_type`` for a new job (``None``: the account is not billed).

        Raises:
            InsufficientBalance: settled minus held is less than ``amount``.
        """
        if account_id in self.unmetered:
            return None
        balances = self._balances(account_id)
        if balances is None:
            return None
        key = (account_id, token_type)
        held = self._held.get(key, _ZERO)
        available = balances[token_type] - held
        if available < amount:
            raise InsufficientBalance(token_type, amount, max(available, _ZERO))
        self._held[key] = held + amount
        return Hold(account_id, token_type, amount)

    def release(self, hold: Hold) -> None:
        """Give ``hold`` back without charging anything (idempotent)."""
        if not hold.active:
            return
        hold.active = False
        key = (hold.account_id, hold.token_type)
        remaining = self._held.get(key, _ZERO) - hold.amount
        if remaining > 0:
            self._held[key] = remaining
        else:
            self._held.pop(key, None)

    def settle(self, hold: Hold, cost: Decimal) -> Decimal:
        """Release ``hold`` and debit ``cost`` (never below a zero balance) with one write.
        Returns the amount debited (0 if the hold was already released)."""
        if not hold.active:
            return _ZERO
        self.release(hold)
        balances = self._balances(hold.account_id)
        if balances is None:  # the account vanished from the store
            return _ZERO
        settled = balances[hold.token_type]
        debited = min(max(cost, _ZERO), max(settled, _ZERO))
        if debited:
            balances[hold.token_type] = settled - debited
            self._store.set_balance(hold.account_id, hold.token_type, settled - debited)
        return debited

    def adjust(self, account_id: str, token_type: TokenType, delta: Decimal) -> Decimal:
        """Add ``delta`` (may be negative) to the settled balance; returns the new balance.

        Raises:
            KeyError: the store does not know the account.
            ValueError: the balance would fall below zero or above :data:`MAX_AMOUNT`.
        """
        balances = self._balances(account_id)
        if balances is None:
            raise KeyError(account_id)
        new = balances[token_type] + delta
        if new < 0:
            raise ValueError("a balance cannot fall below zero")
        if new > MAX_AMOUNT:
            raise ValueError(f"a balance cannot exceed {MAX_AMOUNT} (the ledger's precision)")
        balances[token_type] = new
        self._store.set_balance(account_id, token_type, new)
        return new
