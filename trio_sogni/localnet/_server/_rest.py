"""The REST side of localnet: a small router and the account endpoints the SDKs call.

:class:`Router` maps ``(method, pattern)`` to async handlers; a pattern segment written
``{name}`` matches one path segment, passed percent-decoded in ``params``. :class:`RestAPI` owns
a router with localnet's routes; later features add theirs with :meth:`Router.add`.
Handlers are plain coroutines from :class:`HTTPRequest` to :class:`HTTPResponse`, so they can be
exercised without a socket through :meth:`RestAPI.handle`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

from .._config import Account
from ._http import HTTPRequest, HTTPResponse, error_response, json_response

__all__ = ["Handler", "RestAPI", "Router"]

Handler: TypeAlias = Callable[[HTTPRequest, Mapping[str, str]], Awaitable[HTTPResponse]]
"""A route handler: the request and the pattern's captured parameters."""

Authenticator: TypeAlias = Callable[[Mapping[str, str]], Account | None]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    handler: Handler

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for pattern, actual in zip(self.segments, segments, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                params[pattern[1:-1]] = unquote(actual)
            elif unquote(actual) != pattern:
                return None
        return params


def _split(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


class Router:
    """Routes requests by method and path. Unknown paths get 404, known paths with another
    method 405 (both in the Sogni error envelope)."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` requests whose path matches ``pattern``.

        Earlier registrations win when several patterns match.
        """
        self._routes.append(_Route(method.upper(), tuple(_split(pattern)), handler))

    async def dispatch(self, request: HTTPRequest) -> HTTPResponse:
        segments = _split(request.path)
        allowed: list[str] = []
        for route in self._routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            return await route.handler(request, params)
        if allowed:
            return error_response(
                405,
                f"Method {request.method} not allowed",
                headers=[("allow", ", ".join(sorted(set(allowed))))],
            )
        return error_response(404, f"Not found: {request.path}")


class RestAPI:
    """localnet's REST endpoints (on the one port that also serves the socket):

    * ``GET /v1/account/me`` → ``{status: "success", data: {username, currentEmail, walletAddress}}``
    * ``GET /v1/subscriptions/status`` → ``{status: "success", data: {subscription: {active:
      false, ...}}}``
    * ``GET /api/v1/artist/projects/sync`` → ``{activeProjects: [], unclaimedCompletedProjects:
      []}`` (the official SDKs' media recovery call; localnet has no media jobs)

    Every route needs valid credentials (``authenticate``); otherwise 401 in the error envelope.
    """

    def __init__(self, authenticate: Authenticator) -> None:
        self.authenticate = authenticate
        self.router = Router()
        self.router.add("GET", "/v1/account/me", self._me)
        self.router.add("GET", "/v1/subscriptions/status", self._subscription_status)
        self.router.add("GET", "/api/v1/artist/projects/sync", self._projects_sync)

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        """Answer one request (never raises for a client mistake)."""
        return await self.router.dispatch(request)

    def _account(self, request: HTTPRequest) -> Account | HTTPResponse:
        account = self.authenticate(request.headers)
        if account is None:
            return error_response(401, "Invalid or missing credentials")
        return account

    async def _me(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        account = self._account(request)
        if isinstance(account, HTTPResponse):
            return account
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

    async def _subscription_status(
        self, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        account = self._account(request)
        if isinstance(account, HTTPResponse):
            return account
        return json_response(
            200,
            {
                "status": "success",
                "data": {"subscription": {"active": False, "status": "none", "subscription": None}},
            },
        )

    async def _projects_sync(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        account = self._account(request)
        if isinstance(account, HTTPResponse):
            return account
        return json_response(200, {"activeProjects": [], "unclaimedCompletedProjects": []})
