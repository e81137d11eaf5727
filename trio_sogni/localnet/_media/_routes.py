"""The media projects' REST routes (served on the socket host, as the official SDKs expect).

* ``GET /api/v1/models/list`` → ``[{id, name, SID, tier, media}]`` (raw JSON, no envelope)
* ``GET /api/v2/models/tiers`` → ``{tierName: tier}`` (raw)
* ``GET /api/v1/artist/projects/sync[?appId=]`` (credentials) → ``{activeProjects,
  unclaimedCompletedProjects, serverTime}`` of that app of the caller's account (every app
  without ``appId``); read-only: nothing is claimed
* ``GET /v1/projects/{id}`` (credentials) → ``{status: "success", data: {project}}`` for a
  *finished* project of the caller's account; 404 while it runs, for an unknown id and for
  another account's
* ``GET /api/v1/job/estimate/{tokenType}/{network}/{model}/{imageCount}/...`` (the image
  estimate, versions 2 and 3), ``GET /api/v1/job-video/estimate/{tokenType}/{model}/...`` and
  ``GET /api/v1/job-audio/estimate/{tokenType}/{model}/{duration}/{steps}/{count}`` →
  ``{quote: {project: {costInUSD, costInToken, costInSogni, costInSpark}}}``: the render price
  times the count, exactly what a project of that shape holds and, rendered in full, settles.

Errors are the Sogni envelope ``{status: "error", message, errorCode}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import trio

from .._config import Account, format_decimal
from .._server import Handler, HTTPRequest, HTTPResponse, Router, error_response, json_response
from ._manager import ProjectsManager
from ._projects import MAX_RENDERS

__all__ = ["media_routes"]

Authenticator = Callable[[Mapping[str, str]], Account | None]

_IMAGE_V2: Final = 10
_IMAGE_V3: Final = 13


def _authenticated(
    authenticate: Authenticator,
    handle: Callable[[Account, HTTPRequest, Mapping[str, str]], HTTPResponse],
) -> Handler:
    async def handler(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        await trio.lowlevel.checkpoint()
        account = authenticate(request.headers)
        if account is None:
            return error_response(401, "Authentication required")
        return handle(account, request, params)

    return handler


def _public(handle: Callable[[], object]) -> Handler:
    async def handler(request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        await trio.lowlevel.checkpoint()
        return json_response(200, handle())

    return handler


def _count(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not value.is_integer() or not 1 <= value <= MAX_RENDERS:
        return None
    return int(value)


def media_routes(projects: ProjectsManager, authenticate: Authenticator) -> Router:
    """The routes above, over ``projects`` (its catalog, records and prices)."""
    router = Router()
    catalog = projects.catalog

    def sync(account: Account, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        app_id = request.query.get("appId") or None
        active, unclaimed = projects.recovery(account.id, app_id, claim=False)
        return json_response(
            200,
            {
                "activeProjects": active,
                "unclaimedCompletedProjects": unclaimed,
                "serverTime": int(trio.current_time() * 1000),
            },
        )

    def project(account: Account, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        record = projects.record(account.id, params["id"])
        if record is None:
            return error_response(404, "Project not found", error_code=404)
        return json_response(200, {"status": "success", "data": {"project": record}})

    def quote(model_id: str, token_type: str, count: str) -> HTTPResponse:
        if token_type not in ("sogni", "spark"):
            return error_response(400, f"Unknown token type {token_type[:40]!r}")
        n = _count(count)
        if n is None:
            return error_response(400, f"The count must be a whole number from 1 to {MAX_RENDERS}")
        price = projects.quote(model_id, token_type)
        if price is None:
            return error_response(404, f"Unknown model {model_id[:200]!r}")
        return json_response(
            200,
            {
                "quote": {
                    "project": {
                        "costInUSD": format_decimal(price.usd * n),
                        "costInToken": format_decimal(price.token * n),
                        "costInSogni": format_decimal(price.sogni * n),
                        "costInSpark": format_decimal(price.spark * n),
                    }
                }
            },
        )

    def image_estimate(
        account: Account, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        # {tokenType}/{network}/{model}/{imageCount}/{steps}/{previews}/{cn}/{strength}/{w}/{h}
        return quote(params["p2"], params["p0"], params["p3"])

    def video_estimate(
        account: Account, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        # {tokenType}/{model}/{width}/{height}/{frames}/{fps}[/{steps}/{count}]
        return quote(params["p1"], params["p0"], params.get("p7", "1"))

    def audio_estimate(
        account: Account, request: HTTPRequest, params: Mapping[str, str]
    ) -> HTTPResponse:
        return quote(params["model"], params["token"], params["count"])

    router.add("GET", "/api/v1/models/list", _public(catalog.model_list))
    router.add("GET", "/api/v2/models/tiers", _public(catalog.tiers))
    router.add("GET", "/api/v1/artist/projects/sync", _authenticated(authenticate, sync))
    router.add("GET", "/v1/projects/{id}", _authenticated(authenticate, project))
    image = _authenticated(authenticate, image_estimate)
    video = _authenticated(authenticate, video_estimate)
    for version in ("v2", "v3"):
        for n in (_IMAGE_V2, _IMAGE_V3):
            pattern = f"/api/{version}/job/estimate/" + "/".join(f"{{p{i}}}" for i in range(n))
            router.add("GET", pattern, image)
    for n in (6, 8):
        pattern = "/api/v1/job-video/estimate/" + "/".join(f"{{p{i}}}" for i in range(n))
        router.add("GET", pattern, video)
    router.add(
        "GET",
        "/api/v1/job-audio/estimate/{token}/{model}/{duration}/{steps}/{count}",
        _authenticated(authenticate, audio_estimate),
    )
    return router
