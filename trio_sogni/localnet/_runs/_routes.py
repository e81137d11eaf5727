"""The REST routes of durable chat runs (protocol.md §3.4-3.5) over :class:`RunManager`.

Every route needs credentials like the other routes (``api-key`` or an access token), else 401.
Successes are enveloped ``{status: "success", data: {run, idempotent?}}``. Errors are
``{status: "error", message, errorCode, error, error_code, error_message}``: the Sogni REST
envelope (``errorCode`` is the HTTP status) plus the flat chat-error shape of protocol.md §3.8
(``error`` / ``error_code`` carry the machine code, e.g. ``cost_preview_stale``), so the official
SDKs raise a ``ChatJobError`` with that code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import msgspec

from ...protocol import decode_json
from .._config import Account
from .._server import HTTPRequest, HTTPResponse, Router, json_response
from ._manager import RunManager
from ._state import RunError

__all__ = ["run_routes"]


def _error(status: int, code: str, message: str) -> HTTPResponse:
    return json_response(
        status,
        {
            "status": "error",
            "message": message,
            "errorCode": status,
            "error": code,
            "error_code": code,
            "error_message": message,
        },
    )


def _success(status: int, run: dict[str, Any], idempotent: bool | None = None) -> HTTPResponse:
    data: dict[str, Any] = {"run": run}
    if idempotent is not None:
        data["idempotent"] = idempotent
    return json_response(status, {"status": "success", "data": data})


def _body(request: HTTPRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        value = decode_json(request.body)
    except msgspec.DecodeError:
        raise RunError(400, "invalid_json", "The request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise RunError(400, "invalid_request", "The request body must be a JSON object")
    return cast("dict[str, Any]", value)


def _idempotency_key(request: HTTPRequest) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise RunError(400, "invalid_request", "Idempotency-Key must have 1 to 255 characters")
    return key


MAX_EVENT_SEQUENCE: Final = 2**63 - 1
"""The largest ``Last-Event-ID`` accepted (event sequences are SQLite integers)."""


def _last_event_id(text: str) -> int:
    """The sequence a ``Last-Event-ID`` header names: an integer in ``[0, MAX_EVENT_SEQUENCE]``
    (ASCII digits only), else 400 (before the stream starts)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_EVENT_SEQUENCE:
        raise RunError(
            400,
            "invalid_request",
            f"Last-Event-ID must be an event sequence (an integer in [0, {MAX_EVENT_SEQUENCE}])",
        )
    return int(text)


def run_routes(
    runs: RunManager, authenticate: Callable[[Mapping[str, str]], Account | None]
) -> Router:
    """A router with the durable-run routes (see :class:`_RunEndpoints`)."""
    return _RunEndpoints(runs, authenticate).routes()


class _RunEndpoints:
    """The durable-run endpoints (:meth:`routes`):

    * ``POST /v1/chat/runs`` — create (202 ``{run}``; 200 ``{run, idempotent: true}`` for an
      ``Idempotency-Key`` this owner already used);
    * ``GET /v1/chat/runs/{runId}`` — the record (404 unknown or another owner's);
    * ``POST /v1/chat/runs/{runId}/cancel`` ``{reason?}`` — 200, or 409 for an ended run;
    * ``POST /v1/chat/runs/{runId}/confirm-cost`` ``{tool_call_id, decision, overrides?,
      reason?, acceptedCostPreview?}`` (optional ``Idempotency-Key``) — see
      :meth:`RunManager.confirm_cost` for 400/409;
    * ``GET /v1/chat/runs/{runId}/events/stream`` — ``text/event-stream`` (``Last-Event-ID``:
      replay after that sequence; anything but an integer in ``[0, 2**63 - 1]`` is a 400).
    """

    def __init__(
        self,
        runs: RunManager,
        authenticate: Callable[[Mapping[str, str]], Account | None],
    ) -> None:
        self._runs = runs
        self._authenticate = authenticate

    def routes(self) -> Router:
        """A new router with these endpoints."""
        router = Router()
        router.add("POST", "/v1/chat/runs", self._create)
        router.add("GET", "/v1/chat/runs/{runId}", self._get)
        router.add("POST", "/v1/chat/runs/{runId}/cancel", self._cancel)
        router.add("POST", "/v1/chat/runs/{runId}/confirm-cost", self._confirm)
        router.add("GET", "/v1/chat/runs/{runId}/events/stream", self._stream)
        return router

    def _account(self, request: HTTPRequest) -> Account:
        account = self._authenticate(request.headers)
        if account is None:
            raise RunError(401, "unauthorized", "Invalid or missing credentials")
        return account

    async def _create(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            account = self._account(request)
            key = _idempotency_key(request)
            run, idempotent = self._runs.create(
                owner_id=account.id,
                owner_wallet=account.wallet_address,
                body=_body(request),
                idempotency_key=key,
            )
        except RunError as exc:
            return _error(exc.status, exc.code, exc.message)
        return _success(200, run, True) if idempotent else _success(202, run, False)

    async def _get(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            run = self._runs.get(self._account(request).id, params["runId"])
        except RunError as exc:
            return _error(exc.status, exc.code, exc.message)
        return _success(200, run)

    async def _cancel(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            account = self._account(request)
            body = _body(request)
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise RunError(400, "invalid_request", "'reason' must be a string")
            run = self._runs.cancel(account.id, params["runId"], reason)
        except RunError as exc:
            return _error(exc.status, exc.code, exc.message)
        return _success(200, run)

    async def _confirm(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            account = self._account(request)
            run, idempotent = self._runs.confirm_cost(
                account.id, params["runId"], _body(request), _idempotency_key(request)
            )
        except RunError as exc:
            return _error(exc.status, exc.code, exc.message)
        return _success(200, run, True if idempotent else None)

    async def _stream(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        try:
            account = self._account(request)
            last = request.headers.get("last-event-id")
            last_id: int | None = None
            if last is not None and last.strip():
                last_id = _last_event_id(last.strip())
            body = await self._runs.events(account.id, params["runId"], last_id)
        except RunError as exc:
            return _error(exc.status, exc.code, exc.message)
        return HTTPResponse(
            200,
            content_type="text/event-stream; charset=utf-8",
            headers=[("cache-control", "no-cache"), ("x-accel-buffering", "no")],
            stream=body,
        )
