"""Jobs that survive a reconnect, exactly: ``jobResume=1`` / ``resumeJobs`` / ``jobsResumed``.

A raw protocol client (trio-websocket over localnet's in-memory connections, virtual time) plays a
client whose connection died after it had received some frames of a job; it reconnects with the
same ``appId``, says how many frames it has, and must get exactly the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing
import trio_websocket

from trio_sogni.localnet import (
    FirehoseWorker,
    LocalNetwork,
    SimulatedWorker,
    Stall,
    open_local_network,
)
from trio_sogni.protocol import (
    Authenticated,
    ChatCompletionChunk,
    ClientMessage,
    JobsResumed,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ResumedJob,
    ResumeEntry,
    ResumeJobs,
    ServerMessage,
    SwarmLLMModels,
    decode_server_message,
    encode_client_message,
)

TEXT = " ".join(f"w{i}" for i in range(40))


@asynccontextmanager
async def connect(
    net: LocalNetwork, app_id: str, *, resume: bool = True, abrupt: bool = False
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Authenticated]]:
    """A socket of ``app_id``; on exit it closes with 1000, or (``abrupt``) its connection is
    cut without a close frame, as when a network dies."""
    query = f"/?appId={app_id}" + ("&jobResume=1" if resume else "")
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            net.connect_in_memory(),  # type: ignore[arg-type]
            "localnet",
            query,
            extra_headers=[(b"api-key", net.api_key.encode())],
            message_queue_size=100_000,
        )
        try:
            authenticated = await recv(ws)
            assert isinstance(authenticated, Authenticated)
            assert isinstance(await recv(ws), SwarmLLMModels)
            yield ws, authenticated
        finally:
            if abrupt:
                await trio.aclose_forcefully(ws._stream)  # pyright: ignore[reportPrivateUsage]
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def recv(ws: trio_websocket.WebSocketConnection) -> ServerMessage:
    message = decode_server_message(await ws.get_message())
    assert isinstance(message, ServerMessage)
    return message


async def send(ws: trio_websocket.WebSocketConnection, message: ClientMessage) -> None:
    await ws.send_message(encode_client_message(message))


async def frames_of(ws: trio_websocket.WebSocketConnection, job_id: str, n: int) -> list[object]:
    """The next ``n`` frames of ``job_id`` (other frames are skipped)."""
    out: list[object] = []
    while len(out) < n:
        message = await recv(ws)
        if getattr(message, "job_id", None) == job_id:
            out.append(message)
    return out


async def until_final(ws: trio_websocket.WebSocketConnection, job_id: str) -> list[object]:
    out: list[object] = []
    while True:
        message = await recv(ws)
        if getattr(message, "job_id", None) == job_id:
            out.append(message)
            if isinstance(message, LLMJobResult | LLMJobError):
                return out


def check_exact(frames: list[object]) -> LLMJobResult:
    """Every frame of one job exactly once: each job state once, every token chunk once."""
    states = [f.type for f in frames if isinstance(f, JobState)]
    assert states == ["pending", "queued", "assigned", "jobStarted"]
    result = frames[-1]
    assert isinstance(result, LLMJobResult)
    assert result.usage is not None
    chunks = [f for f in frames if isinstance(f, ChatCompletionChunk)]
    assert sum(1 for c in chunks if c.content) == result.usage.completion_tokens
    assert sum(1 for f in frames if isinstance(f, LLMJobResult)) == 1
    return result


async def test_a_job_resumes_from_the_clients_count(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=10)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        async with connect(net, "app") as (ws, authenticated):
            assert authenticated.job_resume is True
            await send(ws, make_request("J1", TEXT))
            first = await frames_of(ws, "J1", 8)
        await trio.sleep(1.5)  # the job goes on, detached: its frames are held
        assert net.statistics().detached_jobs == 1
        async with connect(net, "app") as (ws, authenticated):
            assert authenticated.active_llm_job_ids == ["J1"]
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="J1", received=8)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            (entry,) = answer.jobs
            assert entry.status == "resumed"
            assert entry.replayed > 0
            rest = await until_final(ws, "J1")
        check_exact(first + rest)
        assert net.frames_dropped == 0
        await net.wait_until(lambda: net.statistics().job_state_entries == 0)


async def test_frames_lost_in_flight_are_sent_again(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    """The client received 12 frames but only counts 5 (the rest died with the connection)."""
    worker = SimulatedWorker("w", tokens_per_second=10)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        async with connect(net, "app") as (ws, _):
            await send(ws, make_request("J1", TEXT))
            first = await frames_of(ws, "J1", 12)
        async with connect(net, "app") as (ws, _):
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="J1", received=5)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            rest = await until_final(ws, "J1")
        assert rest[:7] == first[5:12]
        check_exact(first[:5] + rest)


async def test_a_job_that_finished_while_away_is_resumed_from_its_lingering_frames(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=10)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        async with connect(net, "app") as (ws, _):
            await send(ws, make_request("J1", "short answer please"))
            first = await frames_of(ws, "J1", 5)
        await trio.sleep(10)  # long enough for the job to finish, detached
        assert net.live_jobs == 0
        async with connect(net, "app") as (ws, authenticated):
            assert authenticated.active_llm_job_ids == []
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="J1", received=5)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert answer.jobs[0].status == "resumed"
            rest = await until_final(ws, "J1")
        check_exact(first + rest)
        assert net.statistics().job_state_entries == 0


async def test_unknown_and_unlisted_jobs(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=2, capacity=4)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        async with connect(net, "app") as (ws, _):
            await send(ws, make_request("KEEP", TEXT))
            await send(ws, make_request("DROP", TEXT))
            await frames_of(ws, "KEEP", 1)
            await frames_of(ws, "DROP", 1)
        async with connect(net, "app") as (ws, authenticated):
            assert sorted(authenticated.active_llm_job_ids) == ["DROP", "KEEP"]
            entries = [ResumeEntry(job_id="KEEP", received=1), ResumeEntry(job_id="NOPE")]
            await send(ws, ResumeJobs(jobs=entries))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert [(j.job_id, j.status) for j in answer.jobs] == [
                ("KEEP", "resumed"),
                ("NOPE", "unknown"),
            ]
            await net.wait_until(lambda: net.live_jobs == 1)
            outcomes = {r.job_id: r.outcome for r in net.job_records}
            assert outcomes == {"DROP": "aborted"}  # not wanted: ended (its hold released)
            assert net.job_ids("app") == ["KEEP"]


async def test_a_gap_is_said_and_the_job_ended(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    """More than the job's window (256 KiB) was sent after the frames the client counts."""
    worker = FirehoseWorker("fire", batch=64)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        jobs = net._jobs  # pyright: ignore[reportPrivateUsage]
        async with connect(net, "app", abrupt=True) as (ws, _):
            await send(ws, make_request("BIG", max_tokens=30_000))
            await frames_of(ws, "BIG", 3)
            # Wait until the frames after the client's third are no longer all held.
            while not all(j.replay.floor > 3 for j in jobs.jobs.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)  # virtual time: polling costs nothing (no event to wait on)
        async with connect(net, "app") as (ws, _):
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="BIG", received=3)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert answer.jobs == [ResumedJob(job_id="BIG", status="gap")]
            # Nothing more for the job: the next frame on this socket is the answer to a new job.
            await send(ws, make_request("NEXT", "hi", max_tokens=2))
            message = await recv(ws)
            assert getattr(message, "job_id", None) == "NEXT"
        assert net.statistics().job_state_entries == 0


async def test_detached_frames_are_bounded_and_the_job_waits(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = FirehoseWorker("fire", batch=64)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=60) as net:
        async with connect(net, "app") as (ws, _):
            await send(ws, make_request("BIG", max_tokens=20_000))
            first = await frames_of(ws, "BIG", 4)
            # Leave at once: the rest of the output (about 2 MB) is produced while detached.
        await trio.sleep(30)
        jobs = net._jobs  # pyright: ignore[reportPrivateUsage]
        (job,) = jobs.jobs.values()
        assert job.replay.size <= jobs.replay_bytes + 64 * 200  # one item past the bound at most
        assert net.live_jobs == 1  # waiting, not dropped and not ended
        async with connect(net, "app") as (ws, _):
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="BIG", received=4)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert answer.jobs[0].status == "resumed"
            rest = await until_final(ws, "BIG")
        result = check_exact(first + rest)
        assert result.usage is not None
        assert result.usage.completion_tokens == 20_000


async def test_resume_frames_that_break_the_rules_are_rejected(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_local_network(listen=False, rebind_grace=30) as net:
        async with connect(net, "legacy", resume=False) as (ws, authenticated):
            assert authenticated.job_resume is None
            await send(ws, ResumeJobs(jobs=[]))
            await net.wait_until(lambda: len(net.rejected_frames) == 1)
        async with connect(net, "app") as (ws, _):
            await send(ws, ResumeJobs(jobs=[]))
            answer = await recv(ws)
            assert answer == JobsResumed(jobs=[])
            await send(ws, ResumeJobs(jobs=[]))  # a second one on the same socket
            await net.wait_until(lambda: len(net.rejected_frames) == 2)
        reasons = [r.reason for r in net.rejected_frames]
        assert "jobResume=1" in reasons[0]
        assert "once per connection" in reasons[1]


async def test_a_client_that_never_resumes_holds_nothing_past_the_grace(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    worker = SimulatedWorker("w", tokens_per_second=1, capacity=2)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=5) as net:
        async with connect(net, "app") as (ws, _):
            await send(ws, make_request("OLD", TEXT))
            await frames_of(ws, "OLD", 1)
        async with connect(net, "app") as (ws, _):
            # No resumeJobs: the old job's frames are held; after the grace it is expired.
            await trio.sleep(6)
            assert net.live_jobs == 0
            assert {r.job_id: r.outcome for r in net.job_records} == {"OLD": "expired"}
            await send(ws, make_request("NEW", "hi", max_tokens=3))
            frames = await until_final(ws, "NEW")
            assert isinstance(frames[-1], LLMJobResult)
            assert not any(getattr(f, "job_id", None) == "OLD" for f in frames)


async def test_the_last_frames_of_a_job_that_ended_just_before_a_drop_are_sent_again(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    """The job finished while the socket was up, but its last frames died in flight."""
    worker = SimulatedWorker("w", tokens_per_second=10)
    async with open_local_network(listen=False, workers=[worker], rebind_grace=30) as net:
        async with connect(net, "app", abrupt=True) as (ws, _):
            await send(ws, make_request("J1", "short answer please"))
            everything = await until_final(ws, "J1")
        counted = len(everything) - 3
        async with connect(net, "app") as (ws, authenticated):
            assert authenticated.active_llm_job_ids == []
            await send(ws, ResumeJobs(jobs=[ResumeEntry(job_id="J1", received=counted)]))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert answer.jobs == [ResumedJob(job_id="J1", status="resumed", replayed=3)]
            rest = await until_final(ws, "J1")
        assert rest == everything[counted:]
        check_exact(everything[:counted] + rest)


async def test_a_job_that_ended_with_an_answer_is_never_unknown(
    make_request: Callable[..., LLMJobRequest], autojump_clock: trio.testing.MockClock
) -> None:
    """Past the grace its frames are gone (``gap``), but it is remembered, so a client that had
    nothing of it is not invited to run (and pay for) it again; an expired job, unanswered and
    unbilled, may be sent again (``unknown``)."""
    worker = SimulatedWorker("w", tokens_per_second=10, capacity=2)

    def script(request: LLMJobRequest) -> list[object] | None:
        return [Stall()] if request.job_id == "STUCK" else None

    async with open_local_network(
        listen=False,
        workers=[worker],
        rebind_grace=2,
        script=script,  # type: ignore[arg-type]
    ) as net:
        async with connect(net, "app", abrupt=True) as (ws, _):
            await send(ws, make_request("DONE", "short"))
            await send(ws, make_request("STUCK", "x"))
            await frames_of(ws, "STUCK", 1)
        await trio.sleep(20)  # far past the grace: DONE completed, STUCK expired
        outcomes = {r.job_id: r.outcome for r in net.job_records}
        assert outcomes == {"DONE": "completed", "STUCK": "expired"}
        async with connect(net, "app") as (ws, _):
            entries = [ResumeEntry(job_id="DONE"), ResumeEntry(job_id="STUCK")]
            await send(ws, ResumeJobs(jobs=entries))
            answer = await recv(ws)
            assert isinstance(answer, JobsResumed)
            assert [(j.job_id, j.status) for j in answer.jobs] == [
                ("DONE", "gap"),
                ("STUCK", "unknown"),
            ]
