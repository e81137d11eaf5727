"""A WebSocket peer that stops reading must not hold a worker: every server write is bounded by
``write_timeout``; the stuck socket is aborted, its jobs aborted and their billing holds released,
and other accounts are served meanwhile. In virtual time, over in-memory streams: the stuck peer
sits on one end of ``trio.testing.lockstep_stream_pair()``, whose writes block until it reads.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from trio_sogni.localnet import LocalNetwork, Text, default_reply_text
from trio_sogni.protocol import (
    Authenticated,
    ChatMessage,
    LLMJobRequest,
    ServerMessage,
    SwarmLLMModels,
    UnknownMessage,
    decode_server_message,
    encode_client_message,
)

WRITE_TIMEOUT = 5.0
FLOOD = "flood"


def script(request: LLMJobRequest) -> Any:
    """The stuck account asks for a long reply (far more chunks than the outbox holds)."""
    if request.messages[-1].content == FLOOD:
        return [Text("word " * 2_000)]
    return None


class RawSocket:
    """A WebSocket client by hand (wsproto), so the test decides when it stops reading."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[bytes] = []

    async def open(self, api_key: str, app_id: str) -> list[ServerMessage | UnknownMessage]:
        request = Request(
            host="localnet",
            target=f"/?appId={app_id}",
            extra_headers=[(b"api-key", api_key.encode())],
        )
        await self.stream.send_all(self.ws.send(request))
        messages: list[ServerMessage | UnknownMessage] = []
        while len(messages) < 2:  # authenticated, swarmLLMModels
            self.ws.receive_data(bytes(await self.stream.receive_some(65_536)))
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    continue
                assert isinstance(event, BytesMessage), event  # localnet sends binary frames
                self._parts.append(bytes(event.data))
                if event.message_finished:
                    messages.append(decode_server_message(b"".join(self._parts)))
                    self._parts.clear()
        return messages

    async def send(self, request: LLMJobRequest) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(encode_client_message(request))))


async def test_a_socket_that_stops_reading_is_dropped_refunded_and_frees_the_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with local_network(
        listen=False,
        workers=1,
        capacity=1,
        script=script,
        write_timeout=WRITE_TIMEOUT,
        rebind_grace=300.0,  # the stuck app's jobs must not merely detach and wait
    ) as net:
        alice = net.add_account("alice", password="pw", balance=1_000)
        bob = net.add_account("bob", password="pw", balance=1_000)
        client_end, server_end = trio.testing.lockstep_stream_pair()
        net.serve_connection(server_end)
        stuck = RawSocket(client_end)
        first = await stuck.open(net.create_api_key(alice), "alice-app")
        assert isinstance(first[0], Authenticated)
        assert isinstance(first[1], SwarmLLMModels)

        job = LLMJobRequest(
            job_id="STUCK-1",
            model=MODEL,
            messages=[ChatMessage(role="user", content=FLOOD)],
            token_type="sogni",
        )
        await stuck.send(job)
        stopped_reading = trio.current_time()  # from here on, alice reads nothing
        await net.wait_until(lambda: held(net, alice.id) > 0)

        async with client_in_memory(net, api_key=net.create_api_key(bob)) as sogni:
            with trio.fail_after(WRITE_TIMEOUT + 10):
                reply = await sogni.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hello"}]
                )
            served = trio.current_time() - stopped_reading
        assert reply.content == default_reply_text([{"role": "user", "content": "hello"}])

        with trio.fail_after(1):
            await net.wait_until(lambda: net.statistics().stalled_sockets == 1)
        stats = net.statistics()
        # Dropped at the bound: the first write that made no progress waited write_timeout.
        assert served == pytest.approx(WRITE_TIMEOUT, abs=0.5)
        assert stats.connected_sockets == 0
        assert stats.live_jobs == 0  # aborted, not detached for the rebind grace
        (record,) = [r for r in net.job_records if r.job_id == "STUCK-1"]
        assert record.outcome == "aborted"
        assert held(net, alice.id) == 0
        assert net.balance(alice) == Decimal(1_000)  # refunded: nothing charged
        assert net.balance(bob) < Decimal(1_000)  # bob's job completed and was charged
        await trio.aclose_forcefully(client_end)


def held(net: LocalNetwork, account_id: str) -> Decimal:
    return net._accounts.ledger.held(account_id, "sogni")  # pyright: ignore[reportPrivateUsage]
