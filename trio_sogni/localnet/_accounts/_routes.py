"""The account REST endpoints: nonce, login, signup, token refresh, logout, balance.

Every success is ``{"status": "success", "data": ...}``; every failure is the error envelope
``{"status": "error", "message", "errorCode"}`` with the HTTP status of the
:class:`~trio_sogni.localnet._accounts._accounts.AccountError` (400 malformed body, 401 invalid or expired
credentials, 404 unknown account, 409 taken username or wallet).

* ``POST /v1/account/nonce`` ``{walletAddress}`` → ``{nonce}``
* ``POST /v1/account/login`` ``{walletAddress, signature, appSource?, rememberMe?}`` →
  ``{token, refreshToken, username}``
* ``POST /v1/account/create`` ``{appid, username, email, subscribe, walletAddress,
  turnstileToken, appSource?, referralCode?, signature, rememberMe?}`` → ``{token,
  refreshToken}`` (``turnstileToken`` is not checked; ``rememberMe`` does not change the TTLs)
* ``POST /v1/account/refresh-token`` ``{refreshToken}``, no credentials → ``{token,
  refreshToken}``; the presented refresh token is revoked
* ``POST /v1/account/logout`` (credentials) → revokes every refresh token of the account
* ``GET /v4/account/balance`` (credentials) → ``{sogni: {settled, credit, debit, net}, spark:
  {...}}``

:func:`profile_routes` adds the read-only profile endpoints the SDKs call (credentials needed,
401 otherwise):

* ``GET /v1/account/me`` → ``{status: "success", data: {username, currentEmail, walletAddress}}``
* ``GET /v1/subscriptions/status`` → ``{status: "success", data: {subscription: {active:
  false, ...}}}``

The media recovery call (``GET /api/v1/artist/projects/sync``) belongs to ``_media``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, cast

import msgspec

from ...protocol import decode_json
from .._config import Account
from .._server import Handler, HTTPRequest, HTTPResponse, Router, error_response, json_response
from ._accounts import AccountError, Accounts, TokenPair

__all__ = ["Authenticator", "account_routes", "profile_routes"]

Authenticator: TypeAlias = Callable[[Mapping[str, str]], Account | None]
"""Maps request headers (lower-case names) to an account, or ``None`` without valid credentials."""

_OPTIONAL_STRINGS = ("appSource", "referralCode", "turnstileToken")


def _success(data: object) -> HTTPResponse:
    return json_response(200, {"status": "success", "data": data})


def _tokens(pair: TokenPair, **extra: str) -> HTTPResponse:
    return _success({"token": pair.token, "refreshToken": pair.refresh_token, **extra})


def _body(request: HTTPRequest) -> dict[str, Any]:
    try:
        body = decode_json(request.body)
    except msgspec.DecodeError:
        raise AccountError(400, "The request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise AccountError(400, "The request body must be a JSON object")
    fields = cast("dict[str, Any]", body)
    for name in _OPTIONAL_STRINGS:
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise AccountError(400, f"{name} must be a string")
    if fields.get("rememberMe") is not None and not isinstance(fields["rememberMe"], bool):
        raise AccountError(400, "rememberMe must be a boolean")
    return fields


def _endpoint(handle: Callable[[HTTPRequest], HTTPResponse]) -> Handler:
    """A route handler running the synchronous ``handle``; an :class:`AccountError` becomes the
    error envelope with its status."""

    async def handler(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            return handle(request)
        except AccountError as exc:
            return error_response(exc.status, exc.message)

    return handler


def account_routes(accounts: Accounts, authenticate: Authenticator) -> Router:
    """A router with the account endpoints (see the module docstring).

    ``authenticate`` maps headers to an :class:`Account` (the network's, so an
    ``authenticator=`` override applies here too); ``accounts`` does the work.
    """
    endpoints = _AccountEndpoints(accounts, authenticate)
    router = Router()
    router.add("POST", "/v1/account/nonce", _endpoint(endpoints.nonce))
    router.add("POST", "/v1/account/login", _endpoint(endpoints.login))
    router.add("POST", "/v1/account/create", _endpoint(endpoints.create))
    router.add("POST", "/v1/account/refresh-token", _endpoint(endpoints.refresh))
    router.add("POST", "/v1/account/logout", _endpoint(endpoints.logout))
    router.add("GET", "/v4/account/balance", _endpoint(endpoints.balance))
    return router


class _AccountEndpoints:
    """The synchronous account handlers; :class:`AccountError` becomes the error envelope."""

    def __init__(self, accounts: Accounts, authenticate: Authenticator) -> None:
        self._accounts = accounts
        self._authenticate = authenticate

    def nonce(self, request: HTTPRequest) -> HTTPResponse:
        body = _body(request)
        return _success({"nonce": self._accounts.issue_nonce(body.get("walletAddress"))})

    def login(self, request: HTTPRequest) -> HTTPResponse:
        body = _body(request)
        record, pair = self._accounts.login(body.get("walletAddress"), body.get("signature"))
        return _tokens(pair, username=record.username)

    def create(self, request: HTTPRequest) -> HTTPResponse:
        body = _body(request)
        _record, pair = self._accounts.signup(
            appid=body.get("appid"),
            username=body.get("username"),
            email=body.get("email"),
            subscribe=body.get("subscribe"),
            wallet_address=body.get("walletAddress"),
            signature=body.get("signature"),
        )
        return _tokens(pair)

    def refresh(self, request: HTTPRequest) -> HTTPResponse:
        token = _body(request).get("refreshToken")
        if not isinstance(token, str):
            raise AccountError(400, "refreshToken must be a string")
        return _tokens(self._accounts.refresh(token))

    def _account(self, request: HTTPRequest) -> Account:
        account = self._authenticate(request.headers)
        if account is None:
            raise AccountError(401, "Invalid or missing credentials")
        return account

    def logout(self, request: HTTPRequest) -> HTTPResponse:
        account = self._account(request)
        try:
            self._accounts.revoke_refresh_tokens(account.id)
        except KeyError:  # an authenticator= account unknown to the store has no sessions
            pass
        return json_response(200, {"status": "success"})

    def balance(self, request: HTTPRequest) -> HTTPResponse:
        account = self._account(request)
        balances = self._accounts.ledger.balances(account.id) or account.balances()
        return _success(
            {
                name: {
                    "settled": str(b.settled),
                    "credit": str(b.credit),
                    "debit": str(b.debit),
                    "net": str(b.net),
                }
                for name, b in balances.items()
            }
        )


def profile_routes(authenticate: Authenticator) -> Router:
    """A router with the profile endpoints (see the module docstring); every one answers 401 in
    the error envelope unless ``authenticate`` accepts the request's headers."""

    def authenticated(answer: Callable[[Account], HTTPResponse]) -> Handler:
        async def handler(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
            account = authenticate(request.headers)
            if account is None:
                return error_response(401, "Invalid or missing credentials")
            return answer(account)

        return handler

    def me(account: Account) -> HTTPResponse:
        return json_response(
            200,
            {
                "status": "success",
                "data": {
                    "id": account.id,
                    "username": account.username,
                    "currentEmail": account.email,
                    "walletAddress": account.wallet_address,
                    "emailVerified": True,
                },
            },
        )

    def subscription_status(account: Account) -> HTTPResponse:
        return json_response(
            200,
            {
                "status": "success",
                "data": {"subscription": {"active": False, "status": "none", "subscription": None}},
            },
        )

    router = Router()
    router.add("GET", "/v1/account/me", authenticated(me))
    router.add("GET", "/v1/subscriptions/status", authenticated(subscription_status))
    return router
