"""Hostile clients against localnet: one account reusing another account's ``appId``.

An app is an ``appId`` *of one account*. Another account sending the victim's ``appId`` is a
different client: it neither kicks the victim (4015) nor sees, receives or aborts its jobs, and
billing stays with each job's own account. Raw WebSocket clients on in-memory connections, in
virtual time.
"""

from __future__ import annotations

from decimal import Decimal

import trio
import trio.testing
import trio_websocket
from rawsocket import connect, recv, send

from trio_sogni.localnet import DEFAULT_MODEL, default_reply_text, open_local_network
from trio_sogni.protocol import (
    AbortJob,
    ChangeNetwork,
    ChatCompletionChunk,
    ChatMessage,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
)

SHARED_APP_ID = "shared-app-id"


def request(job_id: str, text: str = "one two three four five six") -> LLMJobRequest:
    return LLMJobRequest(
        job_id=job_id, model=DEFAULT_MODEL, messages=[ChatMessage(role="user", content=text)]
    )


async def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    """Read until the server closes ``ws``; its close code."""
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as closed:
        return None if closed.reason is None else closed.reason.code


async def until_job_ends(
    ws: trio_websocket.WebSocketConnection, job_id: str
) -> list[ServerMessage]:
    frames: list[ServerMessage] = []
    while True:
        message = await recv(ws)
        if getattr(message, "job_id", None) == job_id:
            frames.append(message)
            if isinstance(message, LLMJobResult | LLMJobError):
                return frames


async def frames_until_pong(ws: trio_websocket.WebSocketConnection) -> list[ServerMessage]:
    """Everything the socket has been sent so far (a ``changeNetwork`` round trip fences it)."""
    await send(ws, ChangeNetwork(network="fast"))
    frames: list[ServerMessage] = []
    while not isinstance(message := await recv(ws), ChangeNetwork):
        frames.append(message)
    return frames


async def test_same_app_id_from_another_account_cannot_take_over_a_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_network(
        listen=False, tokens_per_second=2, rebind_grace=30, price_per_million_tokens=1
    ) as net:
        net.add_account("victim", password="victim-password")
        net.add_account("attacker", password="attacker-password")
        victim_key = net.create_api_key("victim")
        attacker_key = net.create_api_key("attacker")
        victim_before = net.balance("victim")
        attacker_before = net.balance("attacker")
        with trio.fail_after(120):
            async with connect(net, victim_key, SHARED_APP_ID) as (victim, _):
                await send(victim, request("VICTIM-JOB"))
                frames: list[ServerMessage] = []
                while not any(isinstance(f, ChatCompletionChunk) for f in frames):
                    frames.append(await recv(victim))
                async with connect(net, attacker_key, SHARED_APP_ID) as (attacker, authenticated):
                    # Not told about the victim's job, and the victim is not kicked.
                    assert authenticated.active_llm_job_ids == []
                    assert net.connected_sockets == 2
                    await send(attacker, AbortJob(job_id="VICTIM-JOB"))
                    await send(attacker, AbortJob(job_id="victim-job"))  # ids are case-blind
                    await net.wait_until(lambda: len(net.aborted_job_ids) == 2)
                    assert list(net.cancelled_job_ids) == []
                    frames += await until_job_ends(victim, "VICTIM-JOB")
                    # The attacker received nothing of the victim's job.
                    leaked = [
                        f
                        for f in await frames_until_pong(attacker)
                        if getattr(f, "job_id", None) == "VICTIM-JOB"
                    ]
                    assert leaked == []
                    # The attacker leaving does not detach the victim's app either.
                await send(victim, request("VICTIM-2", "again"))
                frames2 = await until_job_ends(victim, "VICTIM-2")
                assert isinstance(frames2[-1], LLMJobResult)
        text = "".join(
            f.content or "" for f in frames if isinstance(f, ChatCompletionChunk) and f.content
        )
        assert text == default_reply_text(request("x"))
        result = frames[-1]
        assert isinstance(result, LLMJobResult)
        assert not any(isinstance(f, LLMJobError) for f in frames)
        assert [r.outcome for r in net.job_records] == ["completed", "completed"]
        # Each account pays for its own jobs only.
        second = frames2[-1]
        assert isinstance(second, LLMJobResult)
        assert result.cost is not None
        assert second.cost is not None
        spent = Decimal(str(result.cost.cost_in_token)) + Decimal(str(second.cost.cost_in_token))
        assert spent > 0
        assert net.balance("victim") == victim_before - spent
        assert net.balance("attacker") == attacker_before


async def test_other_accounts_jobs_are_not_rebound_to_a_same_app_id_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A detached job waits for its own account's socket, not any socket with its appId."""
    async with open_local_network(listen=False, tokens_per_second=2, rebind_grace=30) as net:
        net.add_account("victim", password="victim-password")
        net.add_account("attacker", password="attacker-password")
        victim_key = net.create_api_key("victim")
        attacker_key = net.create_api_key("attacker")
        with trio.fail_after(120):
            async with connect(net, victim_key, SHARED_APP_ID) as (victim, _):
                await send(victim, request("DETACHED"))
                while not isinstance(await recv(victim), ChatCompletionChunk):
                    pass
            await net.wait_until(lambda: net.statistics().detached_jobs == 1)
            async with connect(net, attacker_key, SHARED_APP_ID) as (attacker, authenticated):
                assert authenticated.active_llm_job_ids == []
                assert net.statistics().detached_jobs == 1
                await trio.sleep(1)
                assert not any(
                    getattr(f, "job_id", None) == "DETACHED"
                    for f in await frames_until_pong(attacker)
                )
            async with connect(net, victim_key, SHARED_APP_ID) as (victim, authenticated):
                assert authenticated.active_llm_job_ids == ["DETACHED"]
                frames = await until_job_ends(victim, "DETACHED")
                assert isinstance(frames[-1], LLMJobResult)


async def test_same_account_same_app_id_still_takes_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The legitimate reconnect: same account, same appId: 4015 for the old socket, and the new
    one is told about the job and receives the rest of it."""
    async with open_local_network(listen=False, tokens_per_second=2, rebind_grace=30) as net:
        net.add_account("owner", password="owner-password")
        key = net.create_api_key("owner")
        with trio.fail_after(120):
            async with connect(net, key, SHARED_APP_ID) as (old, _):
                await send(old, request("MINE"))
                while not isinstance(await recv(old), ChatCompletionChunk):
                    pass
                async with connect(net, key, SHARED_APP_ID) as (new, authenticated):
                    assert authenticated.active_llm_job_ids == ["MINE"]
                    assert await close_code(old) == 4015
                    frames = await until_job_ends(new, "MINE")
                    assert isinstance(frames[-1], LLMJobResult)
                    assert any(isinstance(f, ChatCompletionChunk) for f in frames)


async def test_internal_jobs_cannot_be_aborted_from_a_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``localnet-internal`` is just another appId to a client: a socket using it neither
    aborts nor receives the network's internal jobs (durable runs' LLM rounds)."""
    async with open_local_network(listen=False, tokens_per_second=2) as net:
        seen: list[ServerMessage] = []

        async def on_message(message: ServerMessage) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(message)

        result: list[LLMJobResult | LLMJobError] = []
        done = trio.Event()

        async def internal() -> None:
            result.append(
                await net._jobs.run_internal(  # pyright: ignore[reportPrivateUsage]
                    request("INTERNAL"), account_id=None, on_message=on_message
                )
            )
            done.set()

        with trio.fail_after(120):
            async with (
                trio.open_nursery() as nursery,
                connect(net, net.api_key, "localnet-internal") as (ws, authenticated),
            ):
                nursery.start_soon(internal)
                await net.wait_until(lambda: any(isinstance(m, JobState) for m in seen))
                assert authenticated.active_llm_job_ids == []
                await send(ws, AbortJob(job_id="INTERNAL"))
                await net.wait_until(lambda: "INTERNAL" in net.aborted_job_ids)
                await done.wait()
                assert not any(
                    getattr(f, "job_id", None) == "INTERNAL" for f in await frames_until_pong(ws)
                )
        assert isinstance(result[0], LLMJobResult)
        assert list(net.cancelled_job_ids) == []
