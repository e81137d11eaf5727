"""Accounts and credentials: API keys, wallet login and signup with nonces, JWT sessions.

:class:`Accounts` is the one place that decides who a request is. It accepts

* an ``api-key`` header: the SHA-256 digest of the key must be stored for an account;
* an ``Authorization`` header holding an access token (a raw JWT, as the official SDKs send it;
  a ``Bearer`` prefix is accepted and ignored) that localnet issued, that has not expired and
  whose account exists;
* ``Authorization: Bearer <api key>`` (as the ``openai`` package and other OpenAI-compatible
  clients send a key): a bearer value that is not a valid access token is looked up as an API
  key.

When an ``api-key`` header is present it alone decides. Access tokens are HS256 JWTs signed with
a random secret kept in the store (so sessions survive a restart on a file database). Claims:
``sub`` (account id), ``addr`` (wallet), ``env`` (``"localnet"``), ``iat``, ``exp``, ``jti``;
refresh tokens carry ``type: "refresh"``, ``sub``, ``env``, ``iat``, ``exp``, ``jti`` and are
recorded (by ``jti``) so they can be rotated and revoked. Access tokens are not recorded: one
stays valid until it expires, also after a logout. Token times are wall-clock seconds from the
injectable ``clock``.

Login and signup follow protocol.md §1.4 and §5: the client asks for a nonce for its wallet,
signs the EIP-712 ``authentication`` (or ``signup``) message over it on this network's domain
(``testnet`` selects ``Sogni-testnet`` / chain 84532), and localnet recovers the signer. A nonce
is bound to one wallet, expires after ``nonce_ttl`` seconds and is consumed by the first login or
signup attempt that uses it, successful or not. Each wallet has at most one outstanding nonce
(asking again replaces it).

Failures raise :class:`AccountError` with the HTTP status the REST layer answers with: 400 for a
malformed request, 401 only for invalid or expired credentials, 404 for an unknown account, 409
for a taken username or wallet. No message ever contains a key, token, password or signature.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from ...protocol._eip712 import TypedDataKind
from .._config import Account, format_decimal
from ._jwt import InvalidToken, decode_jwt, encode_jwt
from ._ledger import Amount, Ledger, to_amount
from ._store import TOKEN_TYPES, AccountRecord, DuplicateAccount, Store, TokenType
from ._wallets import checksum_address, recover_typed_data_signer, wallet_from_password

__all__ = [
    "DEFAULT_SIGNUP_BALANCE",
    "JWT_ENV",
    "AccountError",
    "AccountRef",
    "Accounts",
    "TokenPair",
    "hash_api_key",
    "new_api_key",
]

JWT_ENV: Final = "localnet"
"""The ``env`` claim of every token localnet issues."""

DEFAULT_SIGNUP_BALANCE: Final[Mapping[TokenType, Decimal]] = {
    "sogni": Decimal(100),
    "spark": Decimal(0),
}
"""What an account created by signup (or :meth:`Accounts.add_account`) starts with."""

MAX_USERNAME_LENGTH: Final = 64
MAX_EMAIL_LENGTH: Final = 254

AccountRef = AccountRecord | str
"""An account, or its id, username (any case) or wallet address."""


class AccountError(Exception):
    """A login, signup, refresh or account operation failed; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TokenPair:
    """An access token and its refresh token (both JWTs; never shown in a repr)."""

    token: str = field(repr=False)
    refresh_token: str = field(repr=False)


def new_api_key() -> str:
    """A fresh random API key: 32 URL-safe characters that never start with ``-`` (so that a
    command line's ``--api-key KEY`` cannot mistake it for an option)."""
    return "k" + secrets.token_urlsafe(24)[1:]


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which an API key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def validate_username(username: str) -> str:
    """``username`` if acceptable: 1 to 64 printable characters, no whitespace.

    Raises:
        ValueError: otherwise.
    """
    if not username or len(username) > MAX_USERNAME_LENGTH:
        raise ValueError(f"a username has 1 to {MAX_USERNAME_LENGTH} characters")
    if not username.isprintable() or any(c.isspace() for c in username):
        raise ValueError("a username must not contain whitespace or control characters")
    return username


def validate_email(email: str) -> str:
    """``email`` if it looks like an address (``local@domain``, at most 254 characters).

    Raises:
        ValueError: otherwise.
    """
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > MAX_EMAIL_LENGTH:
        raise ValueError("an email address looks like name@domain")
    if any(c.isspace() for c in email):
        raise ValueError("an email address must not contain whitespace")
    return email


def _balances(balance: Mapping[TokenType, Amount] | Amount | None) -> dict[TokenType, Decimal]:
    if balance is None:
        return dict(DEFAULT_SIGNUP_BALANCE)
    if isinstance(balance, Mapping):
        unknown = set(balance) - set(TOKEN_TYPES)
        if unknown:
            raise ValueError(f"unknown token types: {', '.join(sorted(unknown))}")
        amounts: dict[TokenType, Decimal] = {t: to_amount(balance.get(t, 0)) for t in TOKEN_TYPES}
    else:
        amounts = {"sogni": to_amount(balance), "spark": Decimal(0)}
    if any(a < 0 for a in amounts.values()):
        raise ValueError("a balance cannot be negative")
    return amounts


class Accounts:
    """The account service of one network: store, ledger, nonces and tokens.

    Everything is synchronous (see :mod:`trio_sogni.localnet._accounts._store` for why). ``clock`` returns
    wall-clock seconds (default :func:`time.time`); assign another to move token time in tests.
    """

    def __init__(
        self,
        store: Store,
        *,
        testnet: bool,
        clock: Callable[[], float],
        access_token_ttl: float,
        refresh_token_ttl: float,
        nonce_ttl: float,
        signup_balance: Mapping[TokenType, Amount] | None,
    ) -> None:
        for name, ttl in (
            ("access_token_ttl", access_token_ttl),
            ("refresh_token_ttl", refresh_token_ttl),
            ("nonce_ttl", nonce_ttl),
        ):
            if not ttl > 0:
                raise ValueError(f"{name} must be positive")
        self.store = store
        self.ledger = Ledger(store)
        self.testnet = testnet
        self.clock = clock
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.nonce_ttl = nonce_ttl
        self.signup_balance = _balances(signup_balance)
        self._secret = store.secret("jwt-hs256-secret")
        self._nonces: dict[str, tuple[str, float]] = {}

    # -- accounts -------------------------------------------------------------------------------

    def resolve(self, ref: AccountRef) -> AccountRecord:
        """The stored account ``ref`` names (a record is looked up again by its id).

        Raises:
            KeyError: no such account.
        """
        if isinstance(ref, AccountRecord):
            record = self.store.account(ref.id)
        else:
            record = self.store.account(ref) or self.store.account_by_username(ref)
            if record is None:
                try:
                    record = self.store.account_by_wallet(checksum_address(ref))
                except ValueError:
                    record = None
        if record is None:
            raise KeyError("no such account")
        return record

    def add_account(
        self,
        username: str,
        *,
        password: str | None = None,
        wallet_address: str | None = None,
        email: str | None = None,
        balance: Mapping[TokenType, Amount] | Amount | None = None,
        account_id: str | None = None,
    ) -> AccountRecord:
        """Create an account. Its wallet is ``wallet_address``, or derived from ``username`` and
        ``password`` exactly as the official SDKs derive their login wallet (give one of the
        two). ``balance`` is a sogni amount or a ``{token type: amount}`` map (default
        :attr:`signup_balance`); ``email`` defaults to ``<username>@localnet.invalid``.

        Raises:
            ValueError: a bad username, email, wallet or balance, or neither/both of
                ``password`` and ``wallet_address``.
            DuplicateAccount: the id, username (any case) or wallet is taken.
        """
        if (password is None) == (wallet_address is None):
            raise ValueError("give exactly one of password and wallet_address")
        validate_username(username)
        if password is not None:
            wallet_address = wallet_from_password(username, password).address
        assert wallet_address is not None
        record = AccountRecord(
            id=account_id or str(uuid.uuid4()),
            username=username,
            email=validate_email(email if email is not None else f"{username}@localnet.invalid"),
            wallet_address=checksum_address(wallet_address),
            created_at=self.clock(),
        )
        amounts = self.signup_balance if balance is None else _balances(balance)
        self.store.insert_account(record, amounts)
        self.ledger.forget(record.id)
        return record

    def ensure_account(self, account: Account) -> AccountRecord:
        """Store ``account`` (the network's default account): insert it with its balances, or,
        if its id exists, update the profile and keep the stored balances.

        Raises:
            ValueError: a bad wallet or email, or username/wallet taken by another account.
        """
        record = AccountRecord(
            id=account.id,
            username=validate_username(account.username),
            email=validate_email(account.email),
            wallet_address=checksum_address(account.wallet_address),
            created_at=self.clock(),
        )
        existing = self.store.account(account.id)
        if existing is None:
            balances: dict[TokenType, Decimal] = {
                "sogni": to_amount(account.sogni_balance),
                "spark": to_amount(account.spark_balance),
            }
            self.store.insert_account(record, balances)
            self.ledger.forget(record.id)
            return record
        updated = AccountRecord(
            id=record.id,
            username=record.username,
            email=record.email,
            wallet_address=record.wallet_address,
            created_at=existing.created_at,
        )
        if updated != existing:
            self.store.update_profile(updated)
        return updated

    def to_account(self, record: AccountRecord) -> Account:
        """The :class:`Account` view of ``record`` (balances: its settled balances now)."""
        try:
            sogni = format_decimal(self.ledger.settled(record.id, "sogni"))
            spark = format_decimal(self.ledger.settled(record.id, "spark"))
        except KeyError:  # pragma: no cover - a record always has balances
            sogni = spark = "0"
        return Account(
            id=record.id,
            username=record.username,
            email=record.email,
            wallet_address=record.wallet_address,
            sogni_balance=sogni,
            spark_balance=spark,
        )

    # -- API keys -------------------------------------------------------------------------------

    def create_api_key(self, ref: AccountRef, key: str | None = None) -> str:
        """Store an API key (``key``, or a fresh random one) for the account; returns the key.

        Raises:
            KeyError: no such account.
            ValueError: an empty ``key``.
        """
        record = self.resolve(ref)
        if key is None:
            key = new_api_key()
        if not key:
            raise ValueError("an API key must not be empty")
        self.store.add_api_key(hash_api_key(key), record.id, self.clock())
        return key

    # -- credentials ----------------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> AccountRecord | None:
        """The account the request headers (lower-case names) prove, or ``None``."""
        key = headers.get("api-key")
        if key is not None:
            return self.store.account_for_api_key(hash_api_key(key)) if key else None
        authorization = headers.get("authorization")
        if authorization is None:
            return None
        token = authorization.strip()
        if token[:7].lower() != "bearer ":
            return self.verify_access_token(token)
        token = token[7:].strip()
        record = self.verify_access_token(token)
        if record is None and token:  # ``Bearer <api key>``, as OpenAI-compatible clients send
            record = self.store.account_for_api_key(hash_api_key(token))
        return record

    def _claims(self, token: str) -> dict[str, Any] | None:
        try:
            claims = decode_jwt(token, self._secret)
        except InvalidToken:
            return None
        exp = claims.get("exp")
        if claims.get("env") != JWT_ENV or not isinstance(claims.get("sub"), str):
            return None
        if isinstance(exp, bool) or not isinstance(exp, int | float) or exp <= self.clock():
            return None
        return claims

    def verify_access_token(self, token: str) -> AccountRecord | None:
        """The account of a valid, unexpired access token (not a refresh token), or ``None``."""
        claims = self._claims(token)
        if claims is None or "type" in claims:
            return None
        record = self.store.account(claims["sub"])
        if record is None or claims.get("addr") != record.wallet_address:
            return None
        return record

    def issue_tokens(self, ref: AccountRef) -> TokenPair:
        """A new session for the account: an access token and a recorded refresh token.

        Raises:
            KeyError: no such account.
        """
        record = self.resolve(ref)
        return self._issue(record, rotate=None)

    def _issue(self, record: AccountRecord, *, rotate: str | None) -> TokenPair:
        now = self.clock()
        iat = int(now)
        refresh_jti = secrets.token_hex(16)
        access = {
            "sub": record.id,
            "addr": record.wallet_address,
            "env": JWT_ENV,
            "iat": iat,
            "exp": int(now + self.access_token_ttl),
            "jti": secrets.token_hex(16),
        }
        refresh_exp = int(now + self.refresh_token_ttl)
        refresh = {
            "type": "refresh",
            "sub": record.id,
            "env": JWT_ENV,
            "iat": iat,
            "exp": refresh_exp,
            "jti": refresh_jti,
        }
        if rotate is None:
            self.store.prune_refresh_tokens(now)
            self.store.add_refresh_token(refresh_jti, record.id, refresh_exp)
        elif not self.store.rotate_refresh_token(rotate, refresh_jti, record.id, refresh_exp):
            raise AccountError(401, "Invalid or expired refresh token")
        return TokenPair(encode_jwt(access, self._secret), encode_jwt(refresh, self._secret))

    def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a session: a new pair for a valid refresh token, which is revoked.

        Raises:
            AccountError: 401 when the token is tampered with, expired, revoked or unknown.
        """
        claims = self._claims(refresh_token)
        if claims is None or claims.get("type") != "refresh":
            raise AccountError(401, "Invalid or expired refresh token")
        jti = claims.get("jti")
        row = self.store.refresh_token(jti) if isinstance(jti, str) else None
        record = self.store.account(claims["sub"])
        if (
            row is None
            or row.revoked
            or row.account_id != claims["sub"]
            or row.expires_at <= self.clock()
            or record is None
        ):
            raise AccountError(401, "Invalid or expired refresh token")
        return self._issue(record, rotate=row.jti)

    def revoke_refresh_tokens(self, ref: AccountRef) -> int:
        """Revoke every live refresh token of the account; returns how many.

        Raises:
            KeyError: no such account.
        """
        return self.store.revoke_refresh_tokens(self.resolve(ref).id)

    # -- nonces, login, signup ------------------------------------------------------------------

    @staticmethod
    def _wallet(value: object) -> str:
        if not isinstance(value, str):
            raise AccountError(400, "walletAddress must be a string")
        try:
            return checksum_address(value)
        except ValueError as exc:
            raise AccountError(400, f"walletAddress: {exc}") from None

    def issue_nonce(self, wallet_address: object) -> str:
        """A fresh single-use nonce for the wallet (replacing any outstanding one).

        Raises:
            AccountError: 400 for a malformed wallet address.
        """
        wallet = self._wallet(wallet_address)
        now = self.clock()
        for address, (_nonce, expires) in list(self._nonces.items()):
            if expires <= now:
                del self._nonces[address]
        nonce = secrets.token_hex(16)
        self._nonces[wallet] = (nonce, now + self.nonce_ttl)
        return nonce

    def _take_nonce(self, wallet: str) -> str:
        entry = self._nonces.pop(wallet, None)
        if entry is None or entry[1] <= self.clock():
            raise AccountError(401, "No valid nonce for this wallet; request a new one")
        return entry[0]

    def _check_signature(
        self, kind: TypedDataKind, data: dict[str, Any], signature: str, wallet: str
    ) -> None:
        signer = recover_typed_data_signer(kind, data, signature, testnet=self.testnet)
        if signer is None or signer.lower() != wallet.lower():
            raise AccountError(401, "Invalid signature")

    def login(self, wallet_address: object, signature: object) -> tuple[AccountRecord, TokenPair]:
        """Verify an EIP-712 ``authentication`` signature over the wallet's outstanding nonce and
        open a session. The nonce is consumed whatever happens.

        Raises:
            AccountError: 400 bad wallet or signature type; 401 no valid nonce or a signature by
                another key (including one made for the other domain); 404 no account has the
                wallet.
        """
        wallet = self._wallet(wallet_address)
        if not isinstance(signature, str):
            raise AccountError(400, "signature must be a string")
        nonce = self._take_nonce(wallet)
        self._check_signature(
            "authentication", {"walletAddress": wallet, "nonce": nonce}, signature, wallet
        )
        record = self.store.account_by_wallet(wallet)
        if record is None:
            raise AccountError(404, "No account has this wallet address")
        return record, self._issue(record, rotate=None)

    def signup(
        self,
        *,
        appid: object,
        username: object,
        email: object,
        subscribe: object,
        wallet_address: object,
        signature: object,
    ) -> tuple[AccountRecord, TokenPair]:
        """Verify an EIP-712 ``signup`` signature over the wallet's outstanding nonce, create the
        account (with :attr:`signup_balance`) and open a session. The nonce is consumed by any
        well-formed attempt.

        Raises:
            AccountError: 400 malformed fields; 401 no valid nonce or a bad signature; 409 the
                username or wallet is taken.
        """
        wallet = self._wallet(wallet_address)
        if not isinstance(appid, str) or not appid:
            raise AccountError(400, "appid must be a non-empty string")
        if not isinstance(username, str) or not isinstance(email, str):
            raise AccountError(400, "username and email must be strings")
        if isinstance(subscribe, bool):
            subscribe = int(subscribe)
        if not isinstance(subscribe, int) or subscribe not in (0, 1):
            raise AccountError(400, "subscribe must be 0 or 1")
        if not isinstance(signature, str):
            raise AccountError(400, "signature must be a string")
        try:
            validate_username(username)
            validate_email(email)
        except ValueError as exc:
            raise AccountError(400, str(exc)) from None
        nonce = self._take_nonce(wallet)
        data = {
            "appid": appid,
            "username": username,
            "email": email,
            "subscribe": subscribe,
            "walletAddress": wallet,
            "nonce": nonce,
        }
        self._check_signature("signup", data, signature, wallet)
        try:
            record = self.add_account(username, wallet_address=wallet, email=email)
        except DuplicateAccount as exc:
            raise AccountError(409, str(exc)) from None
        return record, self._issue(record, rotate=None)
