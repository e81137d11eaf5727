"""A consumer that never reads: what each coalesced chunk costs the client to keep.

The receive loop never waits for a consumer; a full buffer coalesces (docs/backpressure.md). The
text kept for it must be compact: a server streaming one character per frame to a job nobody
reads must not make the client hold a str object (about 50 bytes) per character, twice (the
job's accumulated content and the coalesced chunk).
"""

from __future__ import annotations

import tracemalloc

from trio_sogni._events import EventHub
from trio_sogni._jobstate import Coalesced, JobSlot
from trio_sogni._router import JobRouter
from trio_sogni.protocol import ChatCompletionChunk, encode_server_message

JOB_ID = "9F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43"
N = 100_000


def _bytes_per_chunk(text: str) -> tuple[float, JobSlot]:
    router = JobRouter(max_buffered_chunks=16, events=EventHub())
    slot = router.register(JOB_ID, "m")
    frame = encode_server_message(ChatCompletionChunk(job_id=JOB_ID, content=text))
    batch = [frame] * 400  # about one socket read
    router.feed_batch(batch)  # the buffer is full and coalescing from here on
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(N // 400):
            router.feed_batch(batch)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / N, slot


def test_a_never_read_job_keeps_under_8_bytes_per_one_character_chunk() -> None:
    """Measured: 66 bytes per coalesced one-character chunk before, about 3 after."""
    per_chunk, slot = _bytes_per_chunk("a")
    assert per_chunk <= 8, per_chunk
    assert slot.received == N + 400
    assert slot.coalesced > N
    # nothing is lost: the buffer and the accumulated content both hold every character
    tail = slot.buffer[-1]
    assert isinstance(tail, Coalesced)
    delivered = [c.content for c in slot.buffer if isinstance(c, ChatCompletionChunk)]
    assert "".join(x or "" for x in delivered) + (tail.build().content or "") == "a" * (N + 400)
    assert slot.content() == "a" * (N + 400)


def test_longer_chunks_cost_their_text_and_little_more() -> None:
    per_chunk, _ = _bytes_per_chunk("tok ")
    assert per_chunk <= 2 * 4 + 4, per_chunk  # the text, twice, plus a little


def test_folding_keeps_order_across_reads_of_the_content_and_mixed_chunks() -> None:
    slot = JobSlot(JOB_ID, "m", 8)
    slot.sent = True
    expected: list[str] = []
    pieces = ["a", "", "é", "日本", "😀", "xyz", None]
    for i in range(1000):
        text = pieces[i % len(pieces)]
        slot.push(ChatCompletionChunk(job_id=JOB_ID, content=text))
        expected.append(text or "")
        if i in (5, 130, 131, 700):
            assert slot.content() == "".join(expected)
    assert slot.content() == "".join(expected)
    got = []
    for entry in slot.buffer:
        built = entry.build() if isinstance(entry, Coalesced) else entry
        got.append(built.content or "")
    assert "".join(got) == "".join(expected)
