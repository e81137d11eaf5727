"""The firehose load source (a localnet test double) and the socket writer's batched framing."""

from __future__ import annotations

import pytest
import trio
from helpers import MODEL, client_for, local_network
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from trio_sogni import ChatJobError
from trio_sogni.localnet import (
    DEFAULT_FIREHOSE_WORDS,
    FirehoseWorker,
    JobContext,
    ModelSpec,
    PreparedChunk,
    firehose_text,
)
from trio_sogni.localnet._server import Outbox, OutEncoded, OutFrame, encode_frame

TIMEOUT = 20


def _client_side_decode(wire: bytes) -> list[bytes | str]:
    """Decode server-to-client bytes with wsproto acting as the client (the oracle)."""
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    next(client.events())
    client.receive_data(wire)
    out: list[bytes | str] = []
    for event in client.events():
        assert isinstance(event, TextMessage | BytesMessage)
        assert event.message_finished
        out.append(bytes(event.data) if isinstance(event, BytesMessage) else event.data)
    return out


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_encode_frame_matches_wsproto(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    binary = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = encode_frame(text) + encode_frame(binary)
    assert _client_side_decode(wire) == [text, binary]


def test_firehose_text_cycles_words() -> None:
    assert firehose_text(0) == ""
    assert firehose_text(3, ("a", "b")) == "aba"
    assert (
        firehose_text(len(DEFAULT_FIREHOSE_WORDS) + 1) == "".join(DEFAULT_FIREHOSE_WORDS) + " the"
    )


def test_firehose_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FirehoseWorker(capacity=0)
    with pytest.raises(ValueError, match="batch"):
        FirehoseWorker(batch=0)
    with pytest.raises(ValueError, match="words"):
        FirehoseWorker(words=["a", ""])


async def test_outbox_get_all_takes_everything_and_wakes_blocked_putters() -> None:
    outbox = Outbox(limit=2)
    assert outbox.put_nowait(OutFrame(b"1"))
    assert outbox.put_nowait(OutFrame(b"2"))
    done: list[int] = []

    async def putter(i: int) -> None:
        await outbox.put(OutEncoded(bytes([i])))
        done.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(putter, 3)
        nursery.start_soon(putter, 4)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # both wait: the outbox is full
        assert [item.payload for item in await outbox.get_all() if isinstance(item, OutFrame)] == [
            b"1",
            b"2",
        ]
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done) == [3, 4]
    assert len(outbox) == 2
    outbox.close()
    assert await outbox.get_all() == []
    assert not outbox.put_nowait(OutFrame(b"late"))


@pytest.mark.parametrize("max_tokens", [1, 7, 64, 1_000, 4_099])
async def test_firehose_job_streams_exact_text(max_tokens: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            local_network(workers=[FirehoseWorker(batch=16)]) as net,
            client_for(net) as sogni,
        ):
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=max_tokens,
                stream=True,
            )  # fmt: skip
            async with stream:
                async for _ in stream:
                    pass
            assert stream.content == firehose_text(max_tokens)
            assert stream.finish_reason == "length"
            assert stream.usage is not None
            assert stream.usage.completion_tokens == max_tokens
            assert stream.statistics().chunks_received == max_tokens + 1
            await net.wait_until(lambda: net.live_jobs == 0)


async def test_firehose_jobs_on_one_socket_progress_together() -> None:
    """Jobs take turns in the socket's outbox: a job started while another one is streaming
    gets its first chunks long before the first job ends."""
    with trio.fail_after(TIMEOUT):
        async with (
            local_network(workers=[FirehoseWorker(capacity=8, batch=32)]) as net,
            client_for(net, max_buffered_chunks=1_000_000) as sogni,
        ):
            order: list[str] = []
            contents: dict[str, str] = {}

            async def one(name: str, max_tokens: int) -> None:
                async with sogni.chat.completions.stream(
                    model=MODEL, messages=[{"role": "user", "content": name}], max_tokens=max_tokens
                ) as stream:
                    # Appended as chunks arrive: the order across tasks is what is checked.
                    async for chunk in stream:
                        if chunk.content:
                            order.append(name)  # noqa: PERF401
                    contents[name] = stream.content

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(one, f"job{i}", 20_000)
            for i in range(4):
                assert contents[f"job{i}"] == firehose_text(20_000)
            # Every job delivered chunks before the halfway point of the combined stream.
            half = order[: len(order) // 2]
            assert {f"job{i}" for i in range(4)} <= set(half)
            await net.wait_until(lambda: net.live_jobs == 0)


async def test_leaving_a_firehose_stream_aborts_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            local_network(
                models=[ModelSpec(name=MODEL, max_output_tokens=10_000_000)],
                workers=[FirehoseWorker()],
            ) as net,
            client_for(net) as sogni,
        ):
            async with sogni.chat.completions.stream(
                model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=5_000_000
            ) as stream:
                async for chunk in stream:
                    if chunk.content:
                        break
            job_id = stream.job_id
            await net.wait_until(lambda: job_id in net.cancelled_job_ids)
            await net.wait_until(lambda: net.statistics().job_state_entries == 0)
            assert sogni.chat.statistics().live_jobs == 0


async def test_send_prepared_checks_its_arguments() -> None:
    checked: list[str] = []

    class Checker:
        name = "checker"
        models = None
        capacity = 1

        async def run(self, job: JobContext) -> None:
            mine = job.prepare_chunk("x")
            foreign = PreparedChunk("other-job", mine.frame, 1)
            with pytest.raises(RuntimeError, match="another job"):
                await job.send_prepared([foreign])
            with pytest.raises(ValueError, match="repeat"):
                await job.send_prepared([mine], repeat=-1)
            await job.send_prepared([mine], repeat=0)
            await job.send_prepared([mine, mine], repeat=3)
            assert job.completion_tokens == 6
            job.fail("test_failure", "done")
            with pytest.raises(RuntimeError, match="after fail"):
                await job.send_prepared([mine])
            checked.append("ok")

    with trio.fail_after(TIMEOUT):
        async with local_network(workers=[Checker()]) as net, client_for(net) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True
            )
            async with stream:
                with pytest.raises(ChatJobError, match="done"):
                    await stream.wait()
            assert checked == ["ok"]
