"""Signing in: API keys, username/password and wallet logins, JWT sessions and their refresh.

Everything that touches a secret lives here, and no secret leaves this module except inside the
request that needs it. `SessionTokens`, `Credentials` and the `Session` hide their secrets from
``repr`` and ``str``; error messages never include one.

Modes (protocol.md §1.4):

* **API key**: REST sends ``api-key: <key>``; the WebSocket upgrade sends the same header.
* **Session** (username/password, wallet, or resumed ``tokens``): REST and the upgrade send
  ``Authorization: <JWT>`` (no ``Bearer``). The access token is refreshed before it expires
  (`Session.access_token`), single-flight, by ``POST /v1/account/refresh-token``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, final

import msgspec
import trio
from typing_extensions import override

from ._eip712 import EIP712Helper
from ._errors import APIStatusError, AuthenticationError, InvalidRequestError
from .protocol import decode_json

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ._transport import RestClient

__all__ = [
    "PBKDF2_ITERATIONS",
    "PBKDF2_SALT",
    "Session",
    "SessionTokens",
    "derive_wallet",
    "jwt_claims",
]

logger = logging.getLogger("trio_sogni.auth")

PBKDF2_SALT: Final = b"sogni-salt-value"
PBKDF2_ITERATIONS: Final = 10_000
REFRESH_MARGIN: Final = 60.0
"""Refresh this many seconds before the access token expires (clock-skew margin); capped at half
the token's lifetime."""


def derive_wallet(username: str, password: str) -> LocalAccount:
    """The wallet the official SDKs derive from a username and password: the private key is
    PBKDF2-HMAC-SHA256 over ``username.lower() + password`` with salt ``sogni-salt-value``,
    10,000 iterations, 32 bytes. The password is never sent anywhere.

    Raises:
        InvalidRequestError: an empty username or password.
    """
    if not username or not password:
        raise InvalidRequestError("username and password must not be empty")
    from eth_account import Account

    key = hashlib.pbkdf2_hmac(
        "sha256", (username.lower() + password).encode(), PBKDF2_SALT, PBKDF2_ITERATIONS, 32
    )
    return Account.from_key(key)


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, decoded **without** verifying its signature (as the official SDKs do:
    only the server can verify it).

    Raises:
        AuthenticationError: the token is not a JWT with a JSON object payload (the token itself
            is never part of the message).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthenticationError("the server sent a token that is not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = decode_json(base64.urlsafe_b64decode(payload))
    except (ValueError, msgspec.DecodeError):
        raise AuthenticationError("the server sent a JWT whose payload does not decode") from None
    if not isinstance(claims, dict):
        raise AuthenticationError("the server sent a JWT whose payload is not an object")
    return claims  # pyright: ignore[reportUnknownVariableType]


def _expiry(token: str) -> tuple[float, float | None]:
    claims = jwt_claims(token)
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise AuthenticationError("the server sent a JWT without a numeric 'exp' claim")
    iat = claims.get("iat")
    issued = float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None
    return float(exp), issued


@final
class SessionTokens:
    """A signed-in session: the access ``token`` and the ``refresh_token`` (both JWTs).

    Pass one to ``open_sogni_client(tokens=...)`` to resume a session. ``repr`` and ``str`` never
    show the tokens, only their expiry times.
    """

    __slots__ = ("refresh_token", "token")

    def __init__(self, token: str, refresh_token: str) -> None:
        if not isinstance(token, str) or not isinstance(refresh_token, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("tokens must be strings")
        if not token or not refresh_token:
            raise InvalidRequestError("token and refresh_token must not be empty")
        self.token = token
        self.refresh_token = refresh_token

    @classmethod
    def coerce(cls, value: object) -> SessionTokens:
        """A `SessionTokens`, or a mapping ``{token, refresh_token}`` (``refreshToken`` too).

        Raises:
            InvalidRequestError: anything else.
        """
        if isinstance(value, SessionTokens):
            return value
        if isinstance(value, dict):
            mapping: dict[str, object] = value  # pyright: ignore[reportUnknownVariableType]
            token = mapping.get("token")
            refresh = mapping.get("refresh_token", mapping.get("refreshToken"))
            if isinstance(token, str) and isinstance(refresh, str):
                return cls(token, refresh)
        raise InvalidRequestError("tokens must be SessionTokens or {'token', 'refresh_token'}")

    @property
    def expires_at(self) -> float | None:
        """The access token's ``exp`` (seconds since the epoch), if it has one."""
        try:
            return _expiry(self.token)[0]
        except AuthenticationError:
            return None

    @override
    def __repr__(self) -> str:
        return (
            f"SessionTokens(token=<hidden>, refresh_token=<hidden>, expires_at={self.expires_at})"
        )

    __str__ = __repr__

    @override
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionTokens):
            return NotImplemented
        return (self.token, self.refresh_token) == (other.token, other.refresh_token)

    @override
    def __hash__(self) -> int:
        return hash((self.token, self.refresh_token))


class _Flight:
    """One refresh in progress; waiters share its outcome."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: AuthenticationError | None = None


@final
class Session:
    """How this client proves who it is: an API key, or JWTs it keeps fresh.

    All methods are safe to call from many tasks at once. Refreshes are single-flight: concurrent
    callers share one ``POST /v1/account/refresh-token``. A failed refresh ends the session (the
    tokens are dropped) and raises `AuthenticationError`; it is never retried automatically.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        tokens: SessionTokens | None = None,
        eip712: EIP712Helper,
        rest: RestClient,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._api_key = api_key
        self._tokens = tokens
        self.eip712 = eip712
        self._clock = clock
        self._margin = refresh_margin
        self._rest = rest
        """Sends without credentials: login, nonce, signup and refresh carry their own proof."""
        self._flight: _Flight | None = None
        self._ended: AuthenticationError | None = None
        self._skew = 0.0
        """Server clock minus ours, estimated from the latest access token's ``iat``."""
        self.username: str | None = None
        self.refreshes = 0
        """How many refreshes succeeded (for tests and statistics)."""

    @override
    def __repr__(self) -> str:
        return f"<Session mode={self.mode!r} signed_in={self.signed_in}>"

    @property
    def mode(self) -> str:
        """``"api_key"`` or ``"session"``."""
        return "api_key" if self._api_key is not None else "session"

    @property
    def signed_in(self) -> bool:
        """An API key is set, or a refresh token is held that has not expired."""
        if self._api_key is not None:
            return True
        if self._tokens is None:
            return False
        try:
            exp, _ = _expiry(self._tokens.refresh_token)
        except AuthenticationError:
            return False
        return exp > self._clock()

    @property
    def tokens(self) -> SessionTokens | None:
        """The current tokens (they change at every refresh), or ``None``."""
        return self._tokens

    # --- headers --------------------------------------------------------------------------------

    async def rest_headers(self) -> dict[str, str]:
        """Auth headers for a REST call (refreshing the session first if it is about to expire)."""
        if self._api_key is not None:
            await trio.lowlevel.checkpoint()
            return {"api-key": self._api_key}
        return {"Authorization": await self.access_token()}

    async def socket_headers(self) -> list[tuple[bytes, bytes]]:
        """Auth headers for the WebSocket upgrade."""
        if self._api_key is not None:
            await trio.lowlevel.checkpoint()
            return [(b"api-key", self._api_key.encode())]
        return [(b"authorization", (await self.access_token()).encode())]

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it expires within the margin.

        Raises:
            AuthenticationError: not signed in, or the refresh failed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            tokens = self._tokens
            if tokens is None:
                raise self._ended or AuthenticationError("not signed in")
            exp, issued = _expiry(tokens.token)
            margin = self._margin if issued is None else min(self._margin, (exp - issued) / 2)
            if exp - self._skew - margin > self._clock():
                return tokens.token
            await self.refresh(tokens)

    # --- login, refresh, logout ---------------------------------------------------------------

    async def login(
        self, wallet: LocalAccount, *, app_source: str | None = None, remember_me: bool = True
    ) -> None:
        """Sign in with ``wallet``: nonce, EIP-712 ``authentication`` signature, login.

        Raises:
            AuthenticationError: the server refused (wrong password, unknown wallet, bad
                signature); the message is the server's, never a secret.
        """
        rest = self._rest
        address = wallet.address
        try:
            nonce = await self._nonce(address)
            signature = self.eip712.sign_typed_data(
                "authentication", {"walletAddress": address, "nonce": nonce}, signer=wallet
            )
            body: dict[str, Any] = {
                "walletAddress": address,
                "signature": signature,
                "rememberMe": remember_me,
            }
            if app_source:
                body["appSource"] = app_source
            data = _data(await rest.request("POST", "/v1/account/login", json=body, auth=False))
        except APIStatusError as exc:
            raise AuthenticationError(f"login failed (HTTP {exc.status_code}): {exc}") from None
        self._accept(data)
        username = data.get("username")
        self.username = username if isinstance(username, str) else None
        logger.info("signed in as wallet %s", address)

    async def signup(
        self,
        wallet: LocalAccount,
        *,
        app_id: str,
        username: str,
        email: str,
        subscribe: bool,
        turnstile_token: str,
        referral_code: str | None,
        app_source: str | None,
        remember_me: bool = True,
    ) -> SessionTokens:
        """Create an account for ``wallet`` (EIP-712 ``signup``); returns its tokens.

        Raises:
            AuthenticationError: the server refused (e.g. the name is taken).
        """
        rest = self._rest
        address = wallet.address
        try:
            nonce = await self._nonce(address)
            fields: dict[str, Any] = {
                "appid": app_id,
                "username": username,
                "email": email,
                "subscribe": 1 if subscribe else 0,
                "walletAddress": address,
                "turnstileToken": turnstile_token,
                "nonce": nonce,
            }
            signature = self.eip712.sign_typed_data("signup", fields, signer=wallet)
            body = {k: v for k, v in fields.items() if k != "nonce"}
            body.update(signature=signature, rememberMe=remember_me, referralCode=referral_code)
            if app_source:
                body["appSource"] = app_source
            data = _data(await rest.request("POST", "/v1/account/create", json=body, auth=False))
        except APIStatusError as exc:
            raise AuthenticationError(f"signup failed (HTTP {exc.status_code}): {exc}") from None
        return _tokens_from(data)

    async def _nonce(self, address: str) -> str:
        body = await self._rest.request(
            "POST", "/v1/account/nonce", json={"walletAddress": address}, auth=False
        )
        nonce = _data(body).get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise AuthenticationError("the server sent no nonce")
        return nonce

    def _accept(self, data: dict[str, Any]) -> None:
        tokens = _tokens_from(data)
        self._estimate_skew(tokens.token)
        self._tokens = tokens
        self._ended = None

    def _estimate_skew(self, token: str) -> None:
        """A token the server just issued carries its clock in ``iat``: judge expiry on the
        server's clock from now on (resumed tokens say nothing about the server's clock)."""
        try:
            _, issued = _expiry(token)
        except AuthenticationError:
            return
        if issued is not None:
            self._skew = issued - self._clock()

    async def refresh(self, seen: SessionTokens | None = None) -> None:
        """Refresh the session now. Concurrent calls share one request; a call made with the
        ``seen`` tokens that another call already replaced returns at once.

        Raises:
            AuthenticationError: the refresh token was refused or the answer was unusable; the
                session has ended.
        """
        flight = self._flight
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return
        tokens = self._tokens
        if tokens is None:
            await trio.lowlevel.checkpoint()
            raise self._ended or AuthenticationError("not signed in")
        if seen is not None and tokens is not seen:
            await trio.lowlevel.checkpoint()
            return
        flight = self._flight = _Flight()
        try:
            try:
                body = await self._rest.request(
                    "POST",
                    "/v1/account/refresh-token",
                    json={"refreshToken": tokens.refresh_token},
                    auth=False,
                )
                self._accept(_data(body))
            except APIStatusError as exc:
                raise self._end(
                    f"refreshing the session failed (HTTP {exc.status_code}): {exc}"
                ) from None
            except AuthenticationError as exc:
                raise self._end(f"refreshing the session failed: {exc}") from None
            self.refreshes += 1
            logger.debug("session refreshed")
        except AuthenticationError as exc:
            flight.error = exc
            raise
        finally:
            self._flight = None
            flight.done.set()

    def _end(self, message: str) -> AuthenticationError:
        self._tokens = None
        self._ended = AuthenticationError(message + "; the session has ended")
        logger.warning("%s", message)
        return self._ended

    async def reauthenticate(self) -> bool:
        """The server refused our access token (401): refresh once. Returns whether a retry
        makes sense (``False`` for API keys, or when the session already ended).

        Raises:
            AuthenticationError: the refresh itself was refused.
        """
        if self._api_key is not None or self._tokens is None:
            await trio.lowlevel.checkpoint()
            return False
        await self.refresh(self._tokens)
        return True

    async def logout(self) -> None:
        """End the session on the server (``POST /v1/account/logout``; a 401 there is fine) and
        drop the tokens. A no-op for API keys."""
        if self._api_key is not None or self._tokens is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            token = await self.access_token()
            await self._rest.request(
                "POST", "/v1/account/logout", json={}, headers={"Authorization": token}
            )
        except APIStatusError as exc:
            if exc.status_code != 401:
                raise
        except AuthenticationError:
            pass
        self._tokens = None
        self._ended = AuthenticationError("logged out")


def _data(body: object) -> dict[str, Any]:
    if isinstance(body, dict):
        data = body.get("data")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if isinstance(data, dict):
            return data  # pyright: ignore[reportUnknownVariableType]
    raise AuthenticationError("the server's answer has no 'data' object")


def _tokens_from(data: dict[str, Any]) -> SessionTokens:
    token, refresh = data.get("token"), data.get("refreshToken")
    if not isinstance(token, str) or not isinstance(refresh, str) or not token or not refresh:
        raise AuthenticationError("the server's answer has no token and refreshToken")
    _expiry(token)
    _expiry(refresh)
    return SessionTokens(token, refresh)
