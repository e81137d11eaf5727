"""The retry policy of fan-out runs: the error taxonomy, full-jitter backoff, the run-wide retry
budget and the circuit breaker.

The taxonomy (`classify`, first matching row wins; `RETRY_TABLE` is the same table as data):

=======================================================  ===========  ========  ==================
Error                                                    Class        Retry     Overload (AIMD ↓)
=======================================================  ===========  ========  ==================
`InvalidRequestError`                                    invalid_request  no    no
`AuthenticationError`                                    authentication   no    no
`ConnectionLost`, `ConnectError` (any `TransportError`)  transport    yes       no
``ChatJobError`` code 4079 (QUEUE_CAP)                   queue_cap    yes       yes
``ChatJobError`` code 4080 (GRACE_RETRY)                 grace_retry  yes       yes
``ChatJobError`` code 4078 / 4081 (subscription denial)  subscription no        no
``ChatJobError`` status 429 / type ``rate_limited``      rate_limited yes       yes
``ChatJobError`` type ``server_restarting``,             (the type)   yes       no
``transport_lost``, ``worker_disconnected``
``ChatJobError`` type ``model_unavailable``              model_unavailable yes  no
``ChatJobError`` type ``insufficient_balance``           insufficient_balance no no
``ChatJobError`` status 408 or ≥ 500                     http_<status> yes      no
any other ``ChatJobError`` (other 4xx, other types)      (the type)   no        no
`APIStatusError` 429                                     rate_limited yes       yes
`APIStatusError` 408, ≥ 500                              http_<status> yes      no
`APIStatusError` other                                   http_<status> no       no
`ProtocolError`, `ClientClosedError`, anything else      (class name) no        no
=======================================================  ===========  ========  ==================

``model_unavailable`` is retried: on a Supernet it means no worker serving the model is
connected right now, which is usually transient (a worker restarting); the attempt cap, the retry
budget and the circuit breaker bound the cost when it is not. A Retry-After is honoured when the
error carries one (`APIStatusError.retry_after`, or ``retryAfter`` in a chat error's
``limitation``): the next attempt waits exactly that long (capped), not a jittered delay.

Per-item deadlines are classified by the runner, not here: ``first_token`` and ``stall`` are
retried (a worker that hangs is usually a bad worker), ``admission`` and ``total`` are not.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

import trio

from .. import (
    SUBSCRIPTION_ERROR_CODES,
    APIStatusError,
    AuthenticationError,
    ChatJobError,
    InvalidRequestError,
    TransportError,
)
from ._types import ErrorInfo

__all__ = [
    "RETRYABLE_JOB_ERROR_TYPES",
    "RETRY_TABLE",
    "CircuitBreaker",
    "Classification",
    "RetryBudget",
    "backoff_delay",
    "classify",
]

RETRYABLE_JOB_ERROR_TYPES: Final = frozenset(
    {"server_restarting", "transport_lost", "worker_disconnected", "model_unavailable"}
)
"""``ChatJobError.error_type`` values the fan-out retries (wider than
`trio_sogni.RETRYABLE_CHAT_ERROR_TYPES`, which only lists what is *always* safe to resend)."""

RETRY_TABLE: Final[tuple[tuple[str, str, bool, bool], ...]] = (
    ("InvalidRequestError", "invalid_request", False, False),
    ("AuthenticationError", "authentication", False, False),
    ("TransportError (ConnectionLost, ConnectError)", "transport", True, False),
    ("ChatJobError code 4079 QUEUE_CAP", "queue_cap", True, True),
    ("ChatJobError code 4080 GRACE_RETRY", "grace_retry", True, True),
    ("ChatJobError code 4078 / 4081 subscription denial", "subscription", False, False),
    ("ChatJobError status 429 or type rate_limited", "rate_limited", True, True),
    ("ChatJobError type server_restarting", "server_restarting", True, False),
    ("ChatJobError type transport_lost", "transport_lost", True, False),
    ("ChatJobError type worker_disconnected", "worker_disconnected", True, False),
    ("ChatJobError type model_unavailable", "model_unavailable", True, False),
    ("ChatJobError type insufficient_balance", "insufficient_balance", False, False),
    ("ChatJobError status 408 or >= 500", "http_<status>", True, False),
    ("ChatJobError, any other", "<error_type>", False, False),
    ("APIStatusError 429", "rate_limited", True, True),
    ("APIStatusError 408 or >= 500", "http_<status>", True, False),
    ("APIStatusError, any other", "http_<status>", False, False),
    ("anything else", "<class name>", False, False),
)
"""`classify`'s rows as ``(error, class, retry, overload)``, in match order."""

_QUEUE_CAP: Final = str(SUBSCRIPTION_ERROR_CODES["QUEUE_CAP"])
_GRACE_RETRY: Final = str(SUBSCRIPTION_ERROR_CODES["GRACE_RETRY"])
_DENIALS: Final = frozenset(
    {
        str(SUBSCRIPTION_ERROR_CODES["NOT_ENTITLED"]),
        str(SUBSCRIPTION_ERROR_CODES["SUBSCRIPTION_FEATURE_REQUIRES_UPGRADE"]),
    }
)


@dataclass(frozen=True, slots=True)
class Classification:
    """What the policy makes of one failure.

    Attributes:
        error_class: the aggregation key (the table's "Class" column).
        retryable: whether another attempt may help.
        overload: whether it signals overload (AIMD decreases concurrency).
        retry_after: the server's requested delay in seconds, if it gave one.
        info: the `ErrorInfo` for the result.
    """

    error_class: str
    retryable: bool
    overload: bool
    retry_after: float | None
    info: ErrorInfo


def _retry_after_of(limitation: object) -> float | None:
    if isinstance(limitation, dict):
        for key in ("retryAfter", "retry_after", "retryAfterSeconds"):
            value = limitation.get(key)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                return float(value)
    return None


def _http_class(status: int) -> tuple[str, bool]:
    return f"http_{status}", status == 408 or status >= 500


def classify(exc: BaseException) -> Classification:
    """Classify ``exc`` by the module's table (first matching row wins)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, InvalidRequestError):
        return _make("invalid_request", False, False, None, exc, message)
    if isinstance(exc, AuthenticationError):
        return _make("authentication", False, False, None, exc, message)
    if isinstance(exc, TransportError):
        return _make("transport", True, False, None, exc, message)
    if isinstance(exc, ChatJobError):
        code = exc.code
        retry_after = _retry_after_of(exc.limitation)
        if code == _QUEUE_CAP:
            return _make("queue_cap", True, True, retry_after, exc, message)
        if code == _GRACE_RETRY:
            return _make("grace_retry", True, True, retry_after, exc, message)
        if code in _DENIALS or exc.is_subscription_limit:
            return _make("subscription", False, False, None, exc, message)
        if exc.status == 429 or exc.error_type == "rate_limited":
            return _make("rate_limited", True, True, retry_after, exc, message)
        kind = exc.error_type or "chat_job_error"
        if kind in RETRYABLE_JOB_ERROR_TYPES:
            return _make(kind, True, False, retry_after, exc, message)
        if kind == "insufficient_balance":
            return _make(kind, False, False, None, exc, message)
        if exc.status is not None and (exc.status == 408 or exc.status >= 500):
            return _make(f"http_{exc.status}", True, False, retry_after, exc, message)
        return _make(kind, False, False, None, exc, message)
    if isinstance(exc, APIStatusError):
        if exc.status_code == 429:
            return _make("rate_limited", True, True, exc.retry_after, exc, message)
        name, retry = _http_class(exc.status_code)
        return _make(name, retry, False, exc.retry_after if retry else None, exc, message)
    return _make(type(exc).__name__, False, False, None, exc, message)


def _make(
    error_class: str,
    retryable: bool,
    overload: bool,
    retry_after: float | None,
    exc: BaseException,
    message: str,
) -> Classification:
    code: str | None = None
    status: int | None = None
    if isinstance(exc, ChatJobError):
        code = exc.code
        status = exc.status
    elif isinstance(exc, APIStatusError):
        code = str(exc.error_code)
        status = exc.status_code
    info = ErrorInfo(
        type=error_class, message=message, code=code, retryable=retryable, http_status=status
    )
    return Classification(error_class, retryable, overload, retry_after, info)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_max: float = 120.0,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry).

    Full jitter: ``uniform(0, min(cap, base * 2 ** (attempt - 1)))``. When the server gave a
    Retry-After, exactly ``min(retry_after, retry_after_max)`` instead.
    """
    if attempt < 1:
        raise ValueError("attempt must be at least 1")
    if retry_after is not None:
        return min(retry_after, retry_after_max)
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return (rng or random).uniform(0.0, ceiling)


class RetryBudget:
    """A run-wide allowance of extra attempts (``None``: unbounded)."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.spent = 0

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is used up."""
        if self.total is not None and self.spent >= self.total:
            return False
        self.spent += 1
        return True


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed attempts of the same error class.

    * **closed:** everything is allowed. A success resets the count; a failure of a different
      class restarts it at 1.
    * **open:** `allow` is False (the runner fails queued items at once with a ``circuit_open``
      error naming the class) until ``cooldown`` seconds have passed.
    * **half-open:** after the cool-down, `allow` lets exactly one probe through; its success
      closes the breaker, its failure re-opens it for another cool-down.

    Uses ``trio.current_time()``.
    """

    def __init__(self, *, threshold: int, cooldown: float) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self.error_class: str | None = None
        self.count = 0
        self.opened_at: float | None = None
        self.probing = False
        self.trips = 0

    @property
    def is_open(self) -> bool:
        """True while open or half-open."""
        return self.opened_at is not None

    def allow(self) -> bool:
        """May an attempt start now? In half-open state this claims the single probe."""
        if self.opened_at is None:
            return True
        if self.probing:
            return False
        if trio.current_time() >= self.opened_at + self.cooldown:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        """An attempt succeeded: close and reset."""
        self.opened_at = None
        self.probing = False
        self.count = 0
        self.error_class = None

    def record_failure(self, error_class: str) -> None:
        """An attempt failed with ``error_class``."""
        if self.opened_at is not None:
            if self.probing:
                self.probing = False
                self.opened_at = trio.current_time()
            return
        if error_class == self.error_class:
            self.count += 1
        else:
            self.error_class = error_class
            self.count = 1
        if self.count >= self.threshold:
            self.opened_at = trio.current_time()
            self.trips += 1

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let another one through."""
        self.probing = False
