"""What a flood of large messages or unauthenticated requests leaves in localnet's introspection
records: bounded in bytes (``record_bytes`` per log), holding summaries, with the newest records
still readable. Measured on the records themselves (their payload bytes), not on RSS.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket
from helpers import local_network

from trio_sogni.localnet import LocalNetwork, RecordLog
from trio_sogni.localnet._records import FRAME_PREVIEW
from trio_sogni.protocol import (
    AbortJob,
    ChatMessage,
    LLMJobRequest,
    encode_client_message,
    encode_envelope,
)

MiB = 1024 * 1024
RECORD_BYTES = 4 * MiB  # the default
MESSAGE = 512 * 1024
PAD = 24 * 1024


def fields_bytes(fields: Iterable[tuple[str, str]]) -> int:
    return sum(len(k) + len(v) for k, v in fields)


def retained_bytes(net: LocalNetwork) -> int:
    """The payload bytes the records hold, measured independently of their own accounting."""
    total = sum(len(r.frame) + len(r.reason) for r in net.rejected_frames)
    total += sum(len(msgspec.json.encode(r)) for r in net.job_requests)
    total += sum(len(j) for j in net.aborted_job_ids)
    for record in net.http_requests:
        total += len(record.path) + fields_bytes(record.headers.items())
        total += fields_bytes(record.query.items())
    for handshake in net.handshakes:
        total += len(handshake.path) + fields_bytes(handshake.headers.items())
        total += fields_bytes(handshake.query.items()) + len(handshake.app_id or "")
    return total


async def test_a_flood_of_large_frames_leaves_bounded_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """60 half-megabyte messages: 20 rejected frames, 20 job requests (for a model no worker
    serves, so each is recorded and refused), and 20 aborts naming huge job ids (rejected frames
    too: no job has such an id)."""
    async with local_network(listen=False) as net, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            net.connect_in_memory(),  # type: ignore[arg-type]
            "localnet",
            "/?appId=flood",
            extra_headers=[(b"api-key", net.api_key.encode())],
            message_queue_size=1024,
        )
        big = "x" * MESSAGE
        for i in range(20):
            bad = {"jobID": f"BAD-{i}", "model": 7, "pad": big}
            await ws.send_message(encode_envelope("llmJobRequest", bad))
            request = LLMJobRequest(
                job_id=f"BIG-{i}",
                model="no-such-model",
                messages=[ChatMessage(role="user", content=big)],
            )
            await ws.send_message(encode_client_message(request))
            await ws.send_message(encode_client_message(AbortJob(job_id=big)))
        await net.wait_until(lambda: net.frames_received == 60)
        await ws.aclose()
        nursery.cancel_scope.cancel()

        sent = 60 * MESSAGE
        retained = retained_bytes(net)
        assert retained <= 3 * RECORD_BYTES, f"{retained} of {sent} bytes retained"
        for log in (net.rejected_frames, net.job_requests, net.aborted_job_ids):
            assert log.accounted_bytes <= RECORD_BYTES
        # Summaries: every rejected frame is recorded (size and preview), the newest job
        # requests are kept whole.
        assert len(net.rejected_frames) == 40
        bad = [r for r in net.rejected_frames if r.job_id is not None]
        assert [r.job_id for r in bad] == [f"BAD-{i}" for i in range(20)]
        last = bad[-1]
        assert last.size > MESSAGE
        assert last.truncated
        assert len(last.frame) == FRAME_PREVIEW
        assert net.job_requests[-1].job_id == "BIG-19"
        assert net.job_requests[-1].messages[0].content == big
        aborts = [r for r in net.rejected_frames if r.job_id is None]
        assert len(aborts) == 20
        assert all(len(r.frame) <= FRAME_PREVIEW for r in aborts)
        assert len(net.aborted_job_ids) == 0


async def test_a_flood_of_unauthenticated_requests_leaves_bounded_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """300 requests with 24 KiB of headers each, all answered 401, on one keep-alive
    connection, then 50 unauthenticated WebSocket upgrades with a 24 KiB appId and 24 KiB of headers."""
    requests = 300
    async with local_network(listen=False) as net:
        stream = net.connect_in_memory()
        pad = b"p" * PAD
        head = b"GET /v1/account/me?q=%s HTTP/1.1\r\nhost: x\r\napi-key: wrong\r\nx-pad: %s\r\n\r\n"
        for _ in range(requests):
            await stream.send_all(head % (pad[:1024], pad))
            response = b""
            while b"\r\n\r\n" not in response or not response.endswith(b"}"):
                response += await stream.receive_some(65_536)
            assert response.startswith(b"HTTP/1.1 401 ")
        await stream.aclose()
        for i in range(50):
            upgrade = net.connect_in_memory()
            await upgrade.send_all(
                b"GET /?appId=%s HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"sec-websocket-version: 13\r\napi-key: wrong\r\nx-pad: %s\r\n\r\n" % (pad, pad)
            )
            await net.wait_until(lambda: len(net.handshakes) == i + 1)  # noqa: B023
            await trio.aclose_forcefully(upgrade)
        assert len(net.http_requests) == requests  # every request is recorded, summarized

        sent = requests * PAD + 50 * 2 * PAD
        retained = retained_bytes(net)
        assert retained <= 2 * RECORD_BYTES, f"{retained} of {sent} bytes retained"
        assert retained < sent / 10
        assert net.http_requests.accounted_bytes <= RECORD_BYTES
        assert net.handshakes.accounted_bytes <= RECORD_BYTES
        last = net.http_requests[-1]
        assert last.status == 401
        assert last.headers["api-key"] == "<redacted>"
        assert last.headers["x-pad"].endswith("…")
        assert len(last.headers["x-pad"]) <= 257
        assert net.handshakes[-1].outcome == "rejected"
        assert len(net.handshakes[-1].app_id or "") <= 257


def test_a_record_log_is_bounded_in_count_and_in_bytes() -> None:
    log = RecordLog[str](max_items=3, max_bytes=100, size=len)
    for word in ("a" * 10, "b" * 10, "c" * 10, "d" * 10):
        log.append(word)
    assert list(log) == ["b" * 10, "c" * 10, "d" * 10]  # the count bound
    log.append("e" * 80)
    assert list(log) == ["c" * 10, "d" * 10, "e" * 80]  # the byte bound evicts the oldest
    assert log.accounted_bytes == 100
    log.append("f" * 101)  # alone larger than the budget: not kept
    assert list(log) == ["c" * 10, "d" * 10, "e" * 80]
    assert log.dropped == 3
    assert log[-1] == "e" * 80
    assert log[:1] == ["c" * 10]
    log.clear()
    assert not log
    assert log.accounted_bytes == 0


@pytest.mark.parametrize(
    "option",
    [
        {"write_timeout": 0},
        {"idle_timeout": -1},
        {"header_timeout": 0},
        {"body_timeout": 0},
        {"max_connections": 0},
    ],
)
async def test_server_limits_must_be_positive(option: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        async with local_network(listen=False, **option):
            pass  # pragma: no cover
