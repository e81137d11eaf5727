"""The exception tree of trio_sogni.

::

    SogniError
    ├── InvalidRequestError        bad input, raised before anything is sent (also a ValueError)
    ├── AuthenticationError        credentials rejected (close code 4021, HTTP 401); never holds secrets
    ├── TransportError             the connection to the Supernet failed
    │   ├── ConnectError           could not connect, or no ``authenticated`` frame in time
    │   └── ConnectionLost         the socket died; ``close_code``, ``reason``; retryable
    ├── APIError                   the server said no
    │   ├── APIStatusError         a REST call failed: ``status_code``, ``error_code``, ``payload``
    │   ├── ChatJobError           a chat job failed: ``code``, ``error_type``, ``job_id``, ``payload``
    │   │   └── RunStateError      a durable run refused the request in its state (HTTP 409)
    │   └── ProjectError           a media project (or one render of it) failed: ``code``,
    │                              ``project_id``, ``img_id``, ``vendor_failure_category``,
    │                              ``nsfw``, ``retryable``
    ├── ProtocolError              a frame could not be decoded (a server bug); ``frame`` excerpt
    ├── ClientClosedError          the client was closed while the operation was pending
    └── ToolLoopError              the automatic tool loop ran out of rounds

Cancellation (``trio.Cancelled``) and the caller's own ``trio.TooSlowError`` are never wrapped.
Lower-layer exceptions (trio-websocket, httpx, msgspec) never reach users: they are translated at
the boundary and kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any, Final

from typing_extensions import override

__all__ = [
    "RETRYABLE_CHAT_ERROR_TYPES",
    "SUBSCRIPTION_ERROR_CODES",
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "ChatJobError",
    "ClientClosedError",
    "ConnectError",
    "ConnectionLost",
    "InvalidRequestError",
    "ProjectError",
    "ProtocolError",
    "RunStateError",
    "SogniError",
    "ToolLoopError",
    "TransportError",
    "as_chat_error",
    "chat_error_from_payload",
]

SUBSCRIPTION_ERROR_CODES: Final[dict[str, int]] = {
    "NOT_ENTITLED": 4078,
    "QUEUE_CAP": 4079,
    "GRACE_RETRY": 4080,
    "SUBSCRIPTION_FEATURE_REQUIRES_UPGRADE": 4081,
}
"""Numeric ``error_code`` values of subscription denials (protocol.md §4.6)."""

RETRYABLE_CHAT_ERROR_TYPES: Final[frozenset[str]] = frozenset(
    {"server_restarting", "transport_lost"}
)
"""``ChatJobError.error_type`` values after which sending the same request again is safe."""


class SogniError(Exception):
    """Base class of every error trio_sogni raises."""


class InvalidRequestError(SogniError, ValueError):
    """The request is malformed; it was refused before anything was sent."""


class AuthenticationError(SogniError):
    """The credentials were rejected, or signing in failed. The message never contains secrets."""


class TransportError(SogniError):
    """The connection to the Supernet failed. The underlying error is in ``__cause__``."""


class ConnectError(TransportError):
    """Connecting failed: refused, timed out, handshake rejected, or no ``authenticated`` frame."""


class ConnectionLost(TransportError):
    """The socket closed or died while it was in use.

    Attributes:
        close_code: the WebSocket close code, or ``None`` when the connection broke without one.
        reason: the close reason or a description of the failure.
    """

    retryable: bool = True

    def __init__(self, message: str, *, close_code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason


class APIError(SogniError):
    """The server refused or failed a request."""


class APIStatusError(APIError):
    """A REST call returned a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        error_code: ``errorCode`` from the ``{status: "error", message, errorCode}`` envelope (or
            the status when the body has none).
        payload: the decoded JSON body, or ``None``.
        retry_after: seconds from the body's ``retryAfter`` or the ``Retry-After`` header.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: int | str | None = None,
        payload: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code if error_code is not None else status_code
        self.payload = payload
        self.retry_after = retry_after


class ChatJobError(APIError):
    """A chat job failed (an ``llmJobError`` frame, a lost connection, or a hosted/run error).

    Attributes:
        code: the wire ``error_code`` as a string (e.g. ``"4081"``), or ``None``.
        error_type: the machine tag (``error``), e.g. ``"insufficient_balance"``,
            ``"model_unavailable"``, ``"server_restarting"``, ``"transport_lost"``.
        job_id: the job's id.
        status: the HTTP status for REST-borne errors, else ``None``.
        payload: the raw error payload (a protocol struct or decoded JSON).
        worker_name: the worker that failed the job, if the server said.
        subscription_limit, required_plans, feature, limitation: subscription-denial details.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        error_type: str | None = None,
        job_id: str | None = None,
        status: int | None = None,
        payload: Any = None,
        worker_name: str | None = None,
        subscription_limit: bool | None = None,
        required_plans: list[str] | None = None,
        feature: str | None = None,
        limitation: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.error_type = error_type
        self.job_id = job_id
        self.status = status
        self.payload = payload
        self.worker_name = worker_name
        self.subscription_limit = subscription_limit
        self.required_plans = required_plans
        self.feature = feature
        self.limitation = limitation

    @property
    def error_code(self) -> str | None:
        """Alias of `code`, the official SDKs' name."""
        return self.code

    @property
    def retryable(self) -> bool:
        """True when the same request may simply be sent again (transport loss, server restart)."""
        return self.error_type in RETRYABLE_CHAT_ERROR_TYPES

    @property
    def subscription_error_code(self) -> int | None:
        """The numeric code when this is a subscription denial (4078 to 4081), else ``None``."""
        if self.code is not None and self.code.isdigit():
            value = int(self.code)
            if value in SUBSCRIPTION_ERROR_CODES.values():
                return value
        return None

    @property
    def is_subscription_limit(self) -> bool:
        """True for a subscription limit (``subscriptionLimit`` or code 4081)."""
        return self.subscription_limit is True or self.code == "4081"


def chat_error_from_payload(
    payload: object, *, status: int | None = None, fallback: str = ""
) -> ChatJobError | None:
    """A `ChatJobError` for an error body in one of the two shapes the official SDKs recognise
    (protocol.md §3.8), or ``None`` when the body is neither:

    1. ``{error: {message?, type?, code?, subscription?}}`` with a string ``code`` or ``type``,
       or ``subscription.subscriptionLimit`` true;
    2. ``{error, error_code?, error_message?, subscriptionLimit?, requiredPlans?, feature?,
       limitation?}`` with ``error_code``, or both ``error`` and ``error_message``, or
       ``subscriptionLimit`` true.
    """
    if not isinstance(payload, dict):
        return None
    body: dict[str, Any] = payload  # pyright: ignore[reportUnknownVariableType]
    nested = body.get("error")
    if isinstance(nested, dict):
        err: dict[str, Any] = nested  # pyright: ignore[reportUnknownVariableType]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        kind = err.get("type") if isinstance(err.get("type"), str) else None
        raw_sub = err.get("subscription")
        sub: dict[str, Any] = raw_sub if isinstance(raw_sub, dict) else {}  # pyright: ignore[reportUnknownVariableType]
        if code is None and kind is None and sub.get("subscriptionLimit") is not True:
            return None
        message = err.get("message")
        return ChatJobError(
            message if isinstance(message, str) and message else (kind or code or fallback),
            code=code,
            error_type=kind,
            status=status,
            payload=payload,
            subscription_limit=_opt_bool(sub.get("subscriptionLimit")),
            required_plans=_opt_str_list(sub.get("requiredPlans")),
            feature=sub.get("feature") if isinstance(sub.get("feature"), str) else None,
            limitation=sub.get("limitation"),
        )
    error = body.get("error")
    code = body.get("error_code")
    message = body.get("error_message")
    limit = body.get("subscriptionLimit") is True
    if code is None and not (error is not None and message is not None) and not limit:
        return None
    return ChatJobError(
        str(message) if message else str(error or fallback),
        code=None if code is None else str(code),
        error_type=None if error is None else str(error),
        status=status,
        payload=payload,
        subscription_limit=_opt_bool(body.get("subscriptionLimit")),
        required_plans=_opt_str_list(body.get("requiredPlans")),
        feature=body.get("feature") if isinstance(body.get("feature"), str) else None,
        limitation=body.get("limitation"),
    )


def _opt_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _opt_str_list(value: object) -> list[str] | None:
    if isinstance(value, list):
        items: list[object] = value  # pyright: ignore[reportUnknownVariableType]
        return [str(v) for v in items]
    return None


def as_chat_error(exc: APIStatusError) -> APIStatusError | ChatJobError:
    """``exc`` as a `ChatJobError` when its body is a recognised chat error, else itself."""
    mapped = chat_error_from_payload(exc.payload, status=exc.status_code, fallback=str(exc))
    if mapped is None:
        return exc
    mapped.__cause__ = exc
    return mapped


class RunStateError(ChatJobError):
    """A durable run refused the request in its current state (HTTP 409): e.g. confirming the
    cost of a run that is not waiting for it, with a stale cost preview, or cancelling a run that
    has ended. ``code`` / ``error_type`` say which when the server told (e.g.
    ``cost_preview_stale``); ``status`` is 409."""


class ProjectError(APIError):
    """A media project failed, or one render (``imgID``) of it did: a ``jobError`` frame, a
    render withheld by the NSFW filter, or a project the server no longer knows after a
    reconnect.

    Attributes:
        code: the wire ``error`` value as a string (a numeric code such as ``"4103"`` or a
            symbol such as ``"artistCanceled"``), or ``None``.
        project_id: the project's id (the ``jobID`` of its frames).
        img_id: the render that failed (``imgID``), or ``None`` when the whole project failed.
        vendor_failure_category: ``vendorFailureCategory`` of an external (partner) model's
            failure, when the server gave one.
        nsfw: true when the result was withheld by the safety filter.
        is_from_worker: ``isFromWorker`` of the frame (the worker, not the server, failed it).
        retryable: true when creating the same project again may succeed (the server lost the
            project, a worker vanished); set by whoever raises the error.
        payload: the raw error payload (a decoded frame or JSON), or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        project_id: str,
        code: str | None = None,
        img_id: str | None = None,
        vendor_failure_category: str | None = None,
        nsfw: bool = False,
        is_from_worker: bool = False,
        retryable: bool = False,
        payload: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.project_id = project_id
        self.img_id = img_id
        self.vendor_failure_category = vendor_failure_category
        self.nsfw = nsfw
        self.is_from_worker = is_from_worker
        self.retryable = retryable
        self.payload = payload

    @override
    def __repr__(self) -> str:
        fields = [f"{self.args[0]!r}" if self.args else "", f"project_id={self.project_id!r}"]
        if self.img_id is not None:
            fields.append(f"img_id={self.img_id!r}")
        if self.code is not None:
            fields.append(f"code={self.code!r}")
        if self.nsfw:
            fields.append("nsfw=True")
        if self.retryable:
            fields.append("retryable=True")
        return f"ProjectError({', '.join(f for f in fields if f)})"


class ProtocolError(SogniError):
    """The server sent a frame that could not be decoded. ``frame`` holds a short excerpt."""

    def __init__(self, message: str, *, frame: bytes = b"") -> None:
        super().__init__(message)
        self.frame = frame[:200]


class ClientClosedError(SogniError):
    """The client was closed while this operation was still pending."""


class ToolLoopError(SogniError):
    """The automatic tool loop hit ``max_tool_rounds`` without a final answer."""
