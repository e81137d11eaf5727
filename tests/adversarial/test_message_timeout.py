"""Half a WebSocket message is bounded in time, not only in size: a peer that starts a message
and never finishes it (a frame header announcing more bytes than ever come, a fragmented
message without its final frame, half a frame header) is closed with 1008 ``message_timeout``
seconds after the message's first byte, and its jobs are handled as for any dropped socket
(detached for ``rebind_grace``, then rebound by a new socket of the same app).

In virtual time, over in-memory streams, with a WebSocket client written by hand (wsproto) so
the test controls every byte; :class:`MessageBoundaries` is also tested alone (sans-IO).
"""

from __future__ import annotations

import gc
import struct
import tracemalloc
from collections.abc import Callable

import pytest
import trio
import trio.testing
from helpers import MODEL, local_network
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from trio_sogni.localnet import LocalNetwork
from trio_sogni.localnet._server._ws import MESSAGE_TIMEOUT_CODE, MessageBoundaries
from trio_sogni.protocol import (
    Authenticated,
    ChatMessage,
    LLMJobRequest,
    decode_server_message,
    encode_client_message,
)

MESSAGE_TIMEOUT = 7.0
CLOSE_TIMEOUT = 2.0


def job(job_id: str) -> bytes:
    request = LLMJobRequest(
        job_id=job_id, model=MODEL, messages=[ChatMessage(role="user", content="hi")]
    )
    return encode_client_message(request)


class HandSocket:
    """A WebSocket client by hand: the test sends exactly the bytes it wants."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.closed_with: int | None = None
        self.messages: list[bytes] = []

    async def open(self, api_key: str, app_id: str) -> Authenticated:
        request = Request(
            host="localnet",
            target=f"/?appId={app_id}",
            extra_headers=[(b"api-key", api_key.encode())],
        )
        await self.stream.send_all(self.ws.send(request))
        while len(self.messages) < 2:  # authenticated, swarmLLMModels
            await self._read()
        first = decode_server_message(self.messages[0])
        assert isinstance(first, Authenticated)
        return first

    def frame(self, data: bytes, *, finished: bool = True) -> bytes:
        """The bytes of one (masked) binary frame, not sent."""
        return self.ws.send(BytesMessage(data, message_finished=finished))

    async def _read(self) -> bool:
        """Read once; ``False`` once the server closed the connection."""
        data = await self.stream.receive_some(65_536)
        if not data:
            return False
        self.ws.receive_data(bytes(data))
        for event in self.ws.events():
            match event:
                case BytesMessage(data=payload):
                    self.messages.append(bytes(payload))
                case CloseConnection(code=code):
                    self.closed_with = code
                case AcceptConnection() | Ping() | Pong() | TextMessage():
                    pass
                case _:  # pragma: no cover - nothing else is expected
                    raise AssertionError(event)
        return True

    async def read_until_closed(self) -> None:
        """Read (without answering a close) until the server ends the connection."""
        while await self._read():
            pass


async def open_socket(net: LocalNetwork, app_id: str = "app") -> HandSocket:
    sock = HandSocket(net.connect_in_memory())
    await sock.open(net.api_key, app_id)
    return sock


def cut_short(sock: HandSocket) -> bytes:
    """A frame header announcing 1,000 bytes, followed by 10 of them."""
    return sock.frame(b"x" * 1_000)[:20]


def unfinished_fragments(sock: HandSocket) -> bytes:
    """A fragmented message whose final frame never comes (a ping in between)."""
    return sock.frame(b'{"type":', finished=False) + sock.ws.send(Ping(b"p"))


def half_a_header(sock: HandSocket) -> bytes:
    """The first byte of a frame header."""
    return sock.frame(b"{}")[:1]


@pytest.mark.parametrize("partial", [cut_short, unfinished_fragments, half_a_header])
async def test_an_unfinished_message_is_closed_with_1008_at_message_timeout(
    autojump_clock: trio.testing.MockClock, partial: Callable[[HandSocket], bytes]
) -> None:
    async with local_network(
        listen=False,
        message_timeout=MESSAGE_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        rebind_grace=300.0,
        tokens_per_second=0.01,  # the job outlives the test's socket
    ) as net:
        sock = await open_socket(net)
        await sock.stream.send_all(sock.frame(job("HALF-1")))
        await net.wait_until(lambda: net.statistics().running_jobs == 1)
        await sock.stream.send_all(partial(sock))
        started = trio.current_time()
        with trio.fail_after(MESSAGE_TIMEOUT + CLOSE_TIMEOUT + 5):
            await sock.read_until_closed()
        closed = trio.current_time() - started
        assert sock.closed_with == MESSAGE_TIMEOUT_CODE
        # The close frame at the bound, the connection ended when no close reply came.
        assert closed == pytest.approx(MESSAGE_TIMEOUT + CLOSE_TIMEOUT, abs=0.01)
        with trio.fail_after(1):
            await net.wait_until(lambda: net.statistics().connected_sockets == 0)
        stats = net.statistics()
        assert stats.detached_jobs == 1  # as for any dropped socket: waiting for a rebind
        assert stats.stalled_sockets == 0
        again = await open_socket(net)
        authenticated = decode_server_message(again.messages[0])
        assert isinstance(authenticated, Authenticated)
        assert authenticated.active_llm_job_ids == ["HALF-1"]
        await trio.aclose_forcefully(again.stream)


async def test_a_slow_message_that_completes_in_time_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message trickled one byte a second passes if it ends within the bound; each new
    message gets the full time again, also when it begins in the same read as the end of the
    previous one."""
    async with local_network(listen=False, message_timeout=MESSAGE_TIMEOUT) as net:
        sock = await open_socket(net)
        first = sock.frame(job("SLOW-1"))
        second = sock.frame(job("SLOW-2"))
        third = sock.frame(job("SLOW-3"))
        # 1 byte/s for MESSAGE_TIMEOUT - 1 s, then the rest of the first message and the first
        # bytes of the second in one write; the second then also takes nearly the whole bound.
        trickle = int(MESSAGE_TIMEOUT) - 1
        for byte in first[:trickle]:
            await sock.stream.send_all(bytes([byte]))
            await trio.sleep(1.0)
        await sock.stream.send_all(first[trickle:] + second[:trickle])
        await trio.sleep(MESSAGE_TIMEOUT - 0.5)
        await sock.stream.send_all(second[trickle:] + third)
        with trio.fail_after(5):
            await net.wait_until(lambda: len(net.job_records) == 3)
        assert {r.outcome for r in net.job_records} == {"completed"}
        assert net.statistics().connected_sockets == 1
        await trio.aclose_forcefully(sock.stream)


async def test_an_idle_socket_between_messages_is_not_timed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The bound is on messages, not on silence: a socket that sends nothing stays open."""
    async with local_network(listen=False, message_timeout=MESSAGE_TIMEOUT) as net:
        sock = await open_socket(net)
        await trio.sleep(5 * MESSAGE_TIMEOUT)
        assert net.statistics().connected_sockets == 1
        await sock.stream.send_all(sock.frame(job("LATE-1")))
        with trio.fail_after(5):
            await net.wait_until(lambda: len(net.job_records) == 1)
        await trio.aclose_forcefully(sock.stream)


@pytest.mark.deadline(120)  # virtual seconds
async def test_half_sent_messages_are_freed_at_the_default_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """50 sockets each send 1 MiB of a 16 MiB message and stop (the default limits): the server
    holds the parts until ``message_timeout`` (30 s) + ``close_timeout`` (2 s), then nothing.
    Measured with tracemalloc (what this process allocated, client side included)."""
    sockets, part = 50, 1 << 20
    async with local_network(listen=False) as net:
        tracemalloc.start()
        try:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            opened: list[HandSocket] = []
            for i in range(sockets):
                sock = await open_socket(net, f"half-{i}")
                await sock.stream.send_all(sock.frame(b"x" * (16 << 20))[:part])
                opened.append(sock)
            started = trio.current_time()
            await trio.sleep(1.0)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            with trio.fail_after(60):
                await net.wait_until(lambda: net.statistics().connected_sockets == 0)
            freed_after = trio.current_time() - started
            for sock in opened:
                await trio.aclose_forcefully(sock.stream)
            opened.clear()
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    print(
        f"\n{sockets} sockets x 1 MiB of a 16 MiB message: {held / 1e6:.1f} MB held, every "
        f"socket closed after {freed_after:.1f} virtual s, {left / 1e6:.2f} MB left"
    )
    assert held > sockets * part  # the parts really were held
    assert freed_after == pytest.approx(30.0 + 2.0, abs=0.01)
    assert left < 2_000_000


# -- MessageBoundaries alone ----------------------------------------------------------------------


def header(first: int, length: int, *, masked: bool = True) -> bytes:
    mask = 0x80 if masked else 0
    if length < 126:
        head = bytes([first, mask | length])
    elif length < 1 << 16:
        head = bytes([first, mask | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, mask | 127]) + struct.pack("!Q", length)
    return head + (b"\x01\x02\x03\x04" if masked else b"")


FIN_BINARY, BINARY, CONTINUATION, FIN_CONTINUATION, PING = 0x82, 0x02, 0x00, 0x80, 0x89


@pytest.mark.parametrize("length", [0, 5, 125, 126, 65_535, 65_536, 70_000])
@pytest.mark.parametrize("masked", [True, False])
def test_boundaries_follow_one_frame_byte_by_byte(length: int, masked: bool) -> None:
    data = header(FIN_BINARY, length, masked=masked) + b"x" * length
    boundaries = MessageBoundaries()
    for i, byte in enumerate(data):
        assert boundaries.in_message == (i > 0)
        boundaries.feed(bytes([byte]))
    assert not boundaries.in_message
    assert boundaries.completed == 1
    boundaries.feed(data + data + data[:1])  # two whole frames and the start of a third
    assert boundaries.in_message
    assert boundaries.completed == 3


def test_boundaries_span_fragments_and_control_frames() -> None:
    boundaries = MessageBoundaries()
    boundaries.feed(header(BINARY, 3) + b"abc")  # first fragment: the message goes on
    assert boundaries.in_message
    boundaries.feed(header(PING, 2) + b"pp")  # a control frame inside it does not end it
    assert boundaries.in_message
    boundaries.feed(header(CONTINUATION, 1) + b"d")
    assert boundaries.in_message
    assert boundaries.completed == 0
    boundaries.feed(header(FIN_CONTINUATION, 0))  # the final fragment, empty
    assert not boundaries.in_message
    assert boundaries.completed == 1
    boundaries.feed(header(PING, 0))  # a control frame between messages
    assert not boundaries.in_message
    assert boundaries.completed == 2
    boundaries.feed(header(PING, 4) + b"pp")  # a control frame cut short
    assert boundaries.in_message
