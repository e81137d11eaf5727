"""The REST side of the server layer: a small router.

:class:`Router` maps ``(method, pattern)`` to async handlers; a pattern segment written
``{name}`` matches one path segment, passed percent-decoded in ``params``. Features build their
own routers (``account_routes(...)``, ``run_routes(...)``...) and the network combines them with
:meth:`Router.include`; :class:`RestAPI` owns the combined router. Handlers are plain coroutines
from :class:`HTTPRequest` to :class:`HTTPResponse`, so they can be exercised without a socket
through :meth:`RestAPI.handle`. Nothing here knows accounts or any other domain type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import unquote

import msgspec

from ._http import HeadVerdict, HTTPRequest, HTTPResponse, error_response

__all__ = ["Admission", "Handler", "RestAPI", "Router"]

Handler: TypeAlias = Callable[[HTTPRequest, Mapping[str, str]], Awaitable[HTTPResponse]]
"""A route handler: the request and the pattern's captured parameters."""

Admission: TypeAlias = Callable[[HTTPRequest, Mapping[str, str]], HeadVerdict]
"""A route's check of a request head before its body is read (synchronous; ``body`` is
empty): its body limit, or an immediate answer (see :data:`~._http.HeadVerdict`)."""


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    handler: Handler
    admit: Admission | None = None

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
    method 405 (both in the Sogni error envelope).

    A handler that lets a :class:`msgspec.DecodeError` (a body that is not JSON, or nests too
    deeply) or :class:`msgspec.ValidationError` (a value of the wrong type or out of range)
    escape answers 400 with the error's message: malformed client input is never a 500."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(
        self, method: str, pattern: str, handler: Handler, *, admit: Admission | None = None
    ) -> None:
        """Register ``handler`` for ``method`` requests whose path matches ``pattern``.

        ``admit``, when given, sees the request head before its body is read, over TCP and
        in-memory connections (:meth:`admit`); ``handler`` runs only if it let the body in.
        Earlier registrations win when several patterns match.
        """
        self._routes.append(_Route(method.upper(), tuple(_split(pattern)), handler, admit))

    def routes(self) -> list[tuple[str, str]]:
        """``(method, pattern)`` of every route, in registration order."""
        return [(r.method, "/" + "/".join(r.segments)) for r in self._routes]

    def include(self, other: Router) -> None:
        """Append every route of ``other`` (in its order) after the routes registered so far."""
        self._routes.extend(other._routes)

    def admit(self, head: HTTPRequest) -> HeadVerdict:
        """The first matching route's :data:`Admission` verdict on a request head (``None``
        when that route has none, or no route matches)."""
        segments = _split(head.path)
        for route in self._routes:
            if route.method != head.method:
                continue
            params = route.match(segments)
            if params is not None:
                return route.admit(head, params) if route.admit is not None else None
        return None

    async def dispatch(self, request: HTTPRequest) -> HTTPResponse:
        """Run the first matching route's handler; 405 (with ``allow``) when only other methods
        match the path, else 404."""
        segments = _split(request.path)
        allowed: list[str] = []
        for route in self._routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            try:
                return await route.handler(request, params)
            except msgspec.ValidationError as exc:  # a DecodeError too: first
                return error_response(400, f"Invalid request: {exc}")
            except msgspec.DecodeError as exc:
                return error_response(400, f"The request body is not valid JSON: {exc}")
        if allowed:
            return error_response(
                405,
                f"Method {request.method} not allowed",
                headers=[("allow", ", ".join(sorted(set(allowed))))],
            )
        return error_response(404, f"Not found: {request.path}")


class RestAPI:
    """The network's REST endpoints (on the one port that also serves the socket): one
    :class:`Router` that every feature's routes are included into. Add routes of your own with
    ``net.rest.router.add(method, pattern, handler)``."""

    def __init__(self) -> None:
        self.router = Router()

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        """Answer one request (never raises for a client mistake)."""
        return await self.router.dispatch(request)

    def admit(self, head: HTTPRequest) -> HeadVerdict:
        """The router's verdict on a request head before its body is read
        (:meth:`Router.admit`); the server calls it for every request."""
        return self.router.admit(head)
