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
    │   └── ChatJobError           a chat job failed: ``code``, ``error_type``, ``job_id``, ``payload``
    ├── ProtocolError              a frame could not be decoded (a server bug); ``frame`` excerpt
    ├── ClientClosedError          the client was closed while the operation was pending
    └── ToolLoopError              the automatic tool loop ran out of rounds

Cancellation (``trio.Cancelled``) and the caller's own ``trio.TooSlowError`` are never wrapped.
Lower-layer exceptions (trio-websocket, httpx, msgspec) never reach users: they are translated at
the boundary and kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any, Final

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
    "ProtocolError",
    "SogniError",
    "ToolLoopError",
    "TransportError",
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


class ProtocolError(SogniError):
    """The server sent a frame that could not be decoded. ``frame`` holds a short excerpt."""

    def __init__(self, message: str, *, frame: bytes = b"") -> None:
        super().__init__(message)
        self.frame = frame[:200]


class ClientClosedError(SogniError):
    """The client was closed while this operation was still pending."""


class ToolLoopError(SogniError):
    """The automatic tool loop hit ``max_tool_rounds`` without a final answer."""
