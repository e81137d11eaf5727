"""Limiter: token buckets, reserve-then-refund, concurrency, FIFO fairness, cancellation, AIMD.
Driven by trio.testing.MockClock (autojump), so waits take no real time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sogni.fanout import AdaptiveConcurrency, Limiter, TokenBucket


@pytest.mark.deadline(1200)  # virtual seconds (autojump): it sleeps 1010
async def test_token_bucket_refills_continuously_up_to_capacity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(60)  # 1 per second, holds 60
    assert bucket.level() == 60
    bucket.take(60)
    assert bucket.wait_time(1) == pytest.approx(1.0)
    await trio.sleep(10)
    assert bucket.level() == pytest.approx(10)
    await trio.sleep(1000)
    assert bucket.level() == 60
    bucket.take(30)
    bucket.refund(100)
    assert bucket.level() == 60  # a refund never overfills


async def test_a_reservation_above_capacity_needs_a_full_bucket_and_leaves_debt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(60)
    assert bucket.wait_time(600) == 0  # full: allowed
    bucket.take(600)
    assert bucket.level() == -540
    assert bucket.wait_time(1) == pytest.approx(541.0)


@pytest.mark.deadline(120)  # virtual seconds (autojump): 90 of spacing
async def test_rpm_spaces_requests(autojump_clock: trio.testing.MockClock) -> None:
    limiter = Limiter(concurrency=100, rpm=2)  # bucket of 2, one every 30 s
    start = trio.current_time()
    times: list[float] = []
    for _ in range(5):
        permit = await limiter.acquire()
        times.append(trio.current_time() - start)
        limiter.release(permit)
    assert times == pytest.approx([0, 0, 30, 60, 90])


async def test_tpm_reserves_then_refunds_the_unused_part(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = Limiter(concurrency=10, tpm=100)
    first = await limiter.acquire(80)
    admitted_at: list[float] = []

    async def second() -> None:
        permit = await limiter.acquire(50)
        admitted_at.append(trio.current_time())
        limiter.release(permit, 50)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not admitted_at  # 20 left, 50 needed
        await trio.sleep(1)
        limiter.release(first, actual_tokens=10)  # 70 refunded at t=1
    # Without the refund the refill alone would need (50 - 20) / (100/60) = 18 s.
    assert admitted_at[0] - start == pytest.approx(1.0)
    assert limiter.tokens is not None
    # 20 left + 1 s of refill + the 70 refunded - the 50 taken
    assert limiter.tokens.level() == pytest.approx(20 + 100 / 60 + 70 - 50)


async def test_tpm_charges_usage_above_the_reservation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = Limiter(concurrency=10, tpm=600)
    permit = await limiter.acquire(100)
    limiter.release(permit, actual_tokens=250)
    assert limiter.tokens is not None
    assert limiter.tokens.level() == pytest.approx(350)


async def test_concurrency_cap_and_fifo_order(autojump_clock: trio.testing.MockClock) -> None:
    limiter = Limiter(concurrency=1)
    held = await limiter.acquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        permit = await limiter.acquire()
        order.append(n)
        await trio.sleep(1)
        limiter.release(permit)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(waiter, n)
            await trio.testing.wait_all_tasks_blocked()
        assert limiter.waiting == 5
        assert limiter.in_use == 1
        limiter.release(held)
    assert order == [0, 1, 2, 3, 4]
    assert limiter.peak_in_use == 1


async def test_a_small_request_does_not_overtake_a_large_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = Limiter(concurrency=10, tpm=60)  # 1 token/s
    first = await limiter.acquire(60)
    limiter.release(first, 60)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        permit = await limiter.acquire(tokens)
        order.append(name)
        limiter.release(permit, tokens)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "large", 30)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "small", 1)
    assert order == ["large", "small"]


async def test_try_acquire_takes_only_what_is_free_at_once_and_never_overtakes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = Limiter(concurrency=2, tpm=60)  # 1 token/s
    first = limiter.try_acquire(30)
    assert first is not None
    assert limiter.in_use == 1
    assert limiter.try_acquire(31) is None  # the bucket holds 30
    assert limiter.in_use == 1
    second = limiter.try_acquire(30)
    assert second is not None
    assert limiter.try_acquire() is None  # no slot free
    limiter.release(first, 30)
    limiter.release(second, 30)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        permit = await limiter.acquire(tokens)
        order.append(name)
        limiter.release(permit, tokens)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "large", 30)  # waits 30 s for the bucket
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.try_acquire(0) is None  # a slot and no tokens needed, but one is in line
    assert order == ["large"]
    assert limiter.try_acquire(0) is not None


async def test_a_cancelled_acquire_takes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    limiter = Limiter(concurrency=1, tpm=100)
    held = await limiter.acquire(100)
    with trio.move_on_after(5) as scope:
        await limiter.acquire(50)
    assert scope.cancelled_caught
    assert limiter.in_use == 1
    limiter.release(held, 0)
    assert limiter.in_use == 0
    assert limiter.tokens is not None
    assert limiter.tokens.level() == pytest.approx(100)


async def test_aimd_increases_additively_and_decreases_multiplicatively(
    autojump_clock: trio.testing.MockClock,
) -> None:
    aimd = AdaptiveConcurrency(initial=8, minimum=2, maximum=10, cooldown=5)
    for _ in range(8):
        aimd.on_success()
    assert aimd.limit == 9
    assert aimd.on_overload()
    assert aimd.limit == 4
    assert not aimd.on_overload()  # same episode (within the cool-down)
    assert aimd.limit == 4
    await trio.sleep(5)
    assert aimd.on_overload()
    assert aimd.limit == 2
    await trio.sleep(5)
    assert not aimd.on_overload()  # at the floor
    assert aimd.limit == 2
    for _ in range(1000):
        aimd.on_success()
    assert aimd.limit == 10  # capped
    assert [reason for _, _, reason in aimd.history][:4] == [
        "start",
        "increase",
        "decrease",
        "decrease",
    ]


async def test_aimd_retry_after_extends_the_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    aimd = AdaptiveConcurrency(initial=16, maximum=16, cooldown=1)
    assert aimd.on_overload(retry_after=30)
    await trio.sleep(10)
    assert not aimd.on_overload()
    await trio.sleep(21)
    assert aimd.on_overload()
    assert aimd.limit == 4


async def test_limiter_follows_the_adaptive_limit(autojump_clock: trio.testing.MockClock) -> None:
    aimd = AdaptiveConcurrency(initial=2, maximum=4)
    limiter = Limiter(concurrency=4, adaptive=aimd)
    permits = [await limiter.acquire(), await limiter.acquire()]
    got: list[int] = []

    async def third() -> None:
        got.append(1)
        permits.append(await limiter.acquire())
        got.append(2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [1]
        aimd.on_success()
        aimd.on_success()  # limit 3
        limiter.wake()
    assert got == [1, 2]
    assert limiter.limit == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="per_minute"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="concurrency"):
        Limiter(concurrency=0)
