"""The retry taxonomy (every row of the table), full-jitter backoff bounds, the retry budget and
the circuit breaker (MockClock)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_sogni import (
    APIStatusError,
    AuthenticationError,
    ChatJobError,
    ClientClosedError,
    ConnectError,
    ConnectionLost,
    InvalidRequestError,
    ProtocolError,
)
from trio_sogni.fanout import (
    RETRY_TABLE,
    CircuitBreaker,
    RetryBudget,
    backoff_delay,
    classify,
)

ROWS: list[tuple[BaseException, str, bool, bool]] = [
    (InvalidRequestError("bad"), "invalid_request", False, False),
    (AuthenticationError("no"), "authentication", False, False),
    (ConnectionLost("gone", close_code=1006), "transport", True, False),
    (ConnectError("refused"), "transport", True, False),
    (ChatJobError("cap", code="4079", error_type="queue_cap"), "queue_cap", True, True),
    (ChatJobError("grace", code="4080", error_type="grace"), "grace_retry", True, True),
    (ChatJobError("plan", code="4078", error_type="denied"), "subscription", False, False),
    (ChatJobError("upgrade", code="4081", error_type="denied"), "subscription", False, False),
    (ChatJobError("slow", status=429, error_type="x"), "rate_limited", True, True),
    (ChatJobError("slow", error_type="rate_limited"), "rate_limited", True, True),
    (ChatJobError("r", error_type="server_restarting"), "server_restarting", True, False),
    (ChatJobError("t", error_type="transport_lost"), "transport_lost", True, False),
    (ChatJobError("w", error_type="worker_disconnected"), "worker_disconnected", True, False),
    (ChatJobError("m", error_type="model_unavailable"), "model_unavailable", True, False),
    (ChatJobError("b", error_type="insufficient_balance"), "insufficient_balance", False, False),
    (ChatJobError("x", status=503, error_type="upstream"), "http_503", True, False),
    (ChatJobError("x", status=408, error_type="timeout"), "http_408", True, False),
    (ChatJobError("x", status=400, error_type="invalid_request"), "invalid_request", False, False),
    (ChatJobError("x", error_type="worker_error"), "worker_error", False, False),
    (APIStatusError("slow", status_code=429, retry_after=7.0), "rate_limited", True, True),
    (APIStatusError("down", status_code=502), "http_502", True, False),
    (APIStatusError("timeout", status_code=408), "http_408", True, False),
    (APIStatusError("gone", status_code=404), "http_404", False, False),
    (ProtocolError("garbage"), "ProtocolError", False, False),
    (ClientClosedError("closed"), "ClientClosedError", False, False),
    (RuntimeError("bug"), "RuntimeError", False, False),
]


@pytest.mark.parametrize(("exc", "error_class", "retryable", "overload"), ROWS)
def test_classification_table(
    exc: BaseException, error_class: str, retryable: bool, overload: bool
) -> None:
    verdict = classify(exc)
    assert (verdict.error_class, verdict.retryable, verdict.overload) == (
        error_class,
        retryable,
        overload,
    )
    assert verdict.info.type == error_class
    assert verdict.info.retryable == retryable
    assert verdict.info.message


def test_every_documented_row_is_tested() -> None:
    documented = {cls for _, cls, _, _ in RETRY_TABLE if not cls.startswith(("<", "http_<"))}
    tested = {cls for _, cls, _, _ in ROWS}
    assert documented <= tested
    assert len(RETRY_TABLE) == 18


def test_error_info_carries_codes_and_statuses() -> None:
    info = classify(ChatJobError("cap", code="4079", status=None)).info
    assert info.code == "4079"
    info = classify(APIStatusError("x", status_code=503, error_code=17)).info
    assert (info.code, info.http_status) == ("17", 503)


def test_retry_after_is_honoured() -> None:
    assert classify(APIStatusError("slow", status_code=429, retry_after=7.0)).retry_after == 7.0
    job = ChatJobError("cap", code="4079", limitation={"retryAfter": 3})
    assert classify(job).retry_after == 3.0
    assert (
        classify(ChatJobError("cap", code="4079", limitation={"retryAfter": -1})).retry_after
        is None
    )
    assert backoff_delay(3, base=0.5, cap=30, retry_after=7.0) == 7.0
    assert backoff_delay(1, base=0.5, cap=30, retry_after=500.0, retry_after_max=120) == 120


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 100])
def test_backoff_is_full_jitter_within_bounds(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
    samples = [backoff_delay(attempt, base=0.5, cap=8.0, rng=rng) for _ in range(2000)]
    assert all(0 <= s <= ceiling for s in samples)
    # full jitter: spread over the whole range, not clustered at the top
    assert min(samples) < 0.05 * ceiling
    assert max(samples) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(samples) / len(samples) < 0.6 * ceiling


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, base=1, cap=1)


def test_retry_budget() -> None:
    budget = RetryBudget(2)
    assert [budget.try_spend() for _ in range(4)] == [True, True, False, False]
    unbounded = RetryBudget(None)
    assert all(unbounded.try_spend() for _ in range(1000))


async def test_breaker_opens_on_consecutive_same_class_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    breaker.record_failure("a")
    breaker.record_failure("a")
    breaker.record_failure("b")  # a different class restarts the count
    breaker.record_failure("b")
    assert breaker.allow()
    breaker.record_success()  # a success resets it
    breaker.record_failure("b")
    breaker.record_failure("b")
    assert not breaker.is_open
    breaker.record_failure("b")
    assert breaker.is_open
    assert not breaker.allow()
    await trio.sleep(9.9)
    assert not breaker.allow()
    await trio.sleep(0.1)
    assert breaker.allow()  # the half-open probe
    assert not breaker.allow()  # only one
    breaker.record_failure("b")  # the probe failed: open again
    assert not breaker.allow()
    await trio.sleep(10)
    assert breaker.allow()
    breaker.release_probe()  # probe cancelled: another may go
    assert breaker.allow()
    breaker.record_success()
    assert not breaker.is_open
    assert breaker.allow()
    assert breaker.trips == 1
