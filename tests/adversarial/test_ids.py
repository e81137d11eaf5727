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
