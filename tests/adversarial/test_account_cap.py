"""One account cannot multiply the per-socket job cap by opening many apps: its live socket jobs
over all its sockets and ``appId`` values are capped by ``max_jobs_per_account``, the excess
refused with ``llmJobError too_many_jobs`` (``"429"``), exactly as the per-socket cap answers.
Raw WebSocket clients on in-memory connections, in virtual time.
"""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket
from rawsocket import connect, recv, send

from trio_sogni.localnet import DEFAULT_MODEL, LocalNetwork, open_local_network
from trio_sogni.protocol import AbortJob, ChatMessage, JobState, LLMJobError, LLMJobRequest

PER_SOCKET, PER_ACCOUNT = 10, 25


def request(job_id: str) -> LLMJobRequest:
    return LLMJobRequest(
        job_id=job_id, model=DEFAULT_MODEL, messages=[ChatMessage(role="user", content="x")]
    )


async def submit(ws: trio_websocket.WebSocketConnection, ids: list[str]) -> dict[str, str]:
    """Submit ``ids``; return each one's answer: ``"accepted"`` (its ``pending`` state) or the
    ``llmJobError.error`` that refused it."""
    for job_id in ids:
        await send(ws, request(job_id))
    answers: dict[str, str] = {}
    while len(answers) < len(ids):
        message = await recv(ws)
        match message:
            case JobState(type="pending"):
                answers[message.job_id] = "accepted"
            case LLMJobError():
                assert message.error_code == "429"
                assert "account already has" in (message.error_message or "")
                answers[message.job_id] = str(message.error)
            case _:
                continue
    return answers


def refused(answers: dict[str, str]) -> int:
    return sum(1 for answer in answers.values() if answer != "accepted")


async def test_one_account_with_many_app_ids_is_capped_across_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_network(
        listen=False,
        workers=1,
        tokens_per_second=0.001,  # nothing finishes during the test
        max_jobs_per_socket=PER_SOCKET,
        max_jobs_per_account=PER_ACCOUNT,
        rebind_grace=600.0,
    ) as net:
        net.add_account("flooder", password="flooder-password")
        net.add_account("other", password="other-password")
        key, other_key = net.create_api_key("flooder"), net.create_api_key("other")
        async with connect(net, key, "app-1") as (ws1, _), connect(net, key, "app-2") as (ws2, _):
            first = await submit(ws1, [f"a1-{i}" for i in range(PER_SOCKET)])
            assert refused(first) == 0
            second = await submit(ws2, [f"a2-{i}" for i in range(PER_SOCKET)])
            assert refused(second) == 0
            async with connect(net, key, "app-3") as (ws3, _):
                third = await submit(ws3, [f"a3-{i}" for i in range(PER_SOCKET)])
                # 25 of 30: each socket is under its own cap, the account is not.
                assert refused(third) == 3 * PER_SOCKET - PER_ACCOUNT
                assert set(third.values()) == {"accepted", "too_many_jobs"}
            # app-3's socket is gone: its 5 jobs are detached, and still count.
            await net.wait_until(lambda: net.statistics().detached_jobs == 5)
            async with connect(net, key, "app-4") as (ws4, _):
                assert refused(await submit(ws4, ["a4-0"])) == 1
                # Another account is not affected.
                async with connect(net, other_key, "app-1") as (other, _):
                    assert refused(await submit(other, ["o-0", "o-1"])) == 0
                # A job that ends frees its place at once.
                await send(ws1, AbortJob(job_id="a1-0"))
                await net.wait_until(lambda: net.statistics().live_jobs == PER_ACCOUNT + 1)
                assert refused(await submit(ws4, ["a4-1", "a4-2"])) == 1
            assert live_jobs_of(net, "flooder") == PER_ACCOUNT


async def test_the_count_returns_to_zero_when_every_job_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_network(
        listen=False,
        workers=2,
        capacity=8,
        tokens_per_second=1000.0,
        max_jobs_per_account=PER_ACCOUNT,
    ) as net:
        key = net.create_api_key(net.account.id)
        for round_ in range(3):  # each round may use the whole cap again
            async with connect(net, key, f"round-{round_}") as (ws, _):
                answers = await submit(ws, [f"r{round_}-{i}" for i in range(PER_ACCOUNT)])
                assert refused(answers) == 0
                await net.wait_until(lambda: net.statistics().live_jobs == 0)
        assert net.statistics().job_state_entries == 0


def live_jobs_of(net: LocalNetwork, account: str) -> int:
    jobs = net._jobs.jobs.values()  # pyright: ignore[reportPrivateUsage]
    account_id = net.get_account(account).id
    return sum(1 for job in jobs if job.account == account_id)
