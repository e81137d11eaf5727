"""Over-long ids from a hostile client: refused at the door, never kept or echoed at length."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network

import trio_sogni
from trio_sogni.localnet._jobs._session import MAX_APP_ID_LENGTH, MAX_JOB_ID_LENGTH
from trio_sogni.protocol import AbortJob, encode_client_message


async def test_an_over_long_app_id_is_refused_with_4010(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with local_network(listen=False) as net:
        with pytest.raises(trio_sogni.ConnectError, match="4010"):
            async with client_in_memory(net, app_id="a" * (MAX_APP_ID_LENGTH + 1)):
                pass
        (record,) = net.handshakes
        assert record.close_code == 4010
        assert net.statistics().connected_sockets == 0
        async with client_in_memory(net, app_id="a" * MAX_APP_ID_LENGTH) as sogni:
            assert sogni.is_connected  # the longest allowed appId is fine


async def test_an_abort_with_an_over_long_job_id_is_refused_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with local_network(listen=False) as net, client_in_memory(net) as sogni:
        huge = "J" * 100_000
        frame = encode_client_message(AbortJob(job_id=huge))
        await sogni._transport.send(frame)  # pyright: ignore[reportPrivateUsage]
        with trio.fail_after(5):
            await net.wait_until(lambda: len(net.rejected_frames) == 1)
        (rejected,) = net.rejected_frames
        assert str(MAX_JOB_ID_LENGTH) in rejected.reason
        assert huge not in list(net.aborted_job_ids)
        # The socket is still served, and nothing was sent back for the refused frame.
        assert sogni.chat.statistics().unknown_frames == 0
        result = await sogni.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "still here"}]
        )
        assert result.content
        assert sogni.chat.statistics().late_frames == 0


async def test_job_ids_are_scoped_to_their_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another account that sends a live job's id learns nothing: its job is simply accepted
    (before, it was told "already in use"), and its abort of that id stops only its own job."""
    from rawsocket import connect, recv, send

    from trio_sogni.localnet import Stall, Text
    from trio_sogni.protocol import ChatCompletionChunk, ChatMessage, LLMJobError, LLMJobRequest

    shared = "5D5D5D5D-0000-4000-8000-000000000001"

    def request() -> LLMJobRequest:
        return LLMJobRequest(
            job_id=shared, model=MODEL, messages=[ChatMessage(role="user", content="x")]
        )

    script = lambda r: [Text("mine"), Stall()]  # noqa: E731
    async with local_network(listen=False, script=script, capacity=2) as net:
        net.add_account("victim", password="victim-password")
        net.add_account("attacker", password="attacker-password")
        victim_key = net.create_api_key("victim")
        attacker_key = net.create_api_key("attacker")
        async with (
            connect(net, victim_key, "app") as (victim, _),
            connect(net, attacker_key, "app") as (attacker, _),
        ):
            await send(victim, request())
            while not isinstance(await recv(victim), ChatCompletionChunk):
                pass
            await send(attacker, request())
            while not isinstance(message := await recv(attacker), ChatCompletionChunk):
                assert not isinstance(message, LLMJobError), message.error_message
            assert net.live_jobs == 2
            await send(attacker, AbortJob(job_id=shared))
            with trio.fail_after(5):
                await net.wait_until(lambda: net.live_jobs == 1)
            (survivor,) = net._jobs.jobs.values()  # pyright: ignore[reportPrivateUsage]
            assert survivor.account == net.get_account("victim").id
