"""The job router as the sans-IO state machine it is: frames in, slots / wake-ups / aborts out.

These tests are synchronous: no Trio run, no socket. Waiters are recorded, not parked on.
"""

from __future__ import annotations

import base64

import pytest
from routerdoubles import Clock, Events, Waker

from trio_sogni import (
    AuthenticationError,
    ChatJobError,
    ClientClosedError,
    ConnectionLost,
    InvalidRequestError,
)
from trio_sogni._jobstate import JobSlot
from trio_sogni._router import JobRouter
from trio_sogni.protocol import (
    Authenticated,
    ChatCompletionChunk,
    JobsResumed,
    JobState,
    LLMJobError,
    LLMJobResult,
    LLMModelInfo,
    ResumedJob,
    ResumeEntry,
    ResumeJobs,
    SwarmLLMModels,
    Usage,
    decode_client_message,
    encode_server_message,
)

JOB = "9F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43"
OTHER = "1B2C3D4E-5F60-4718-9A0B-C1D2E3F40516"
PROJECT = "7D3E9A10-4B2C-4E5F-8A6B-0C1D2E3F4A5B"


def make(*kinds: str) -> tuple[JobRouter, Events, Waker, Waker]:
    events, aborts, models = Events(*kinds), Waker(), Waker()
    router = JobRouter(
        max_buffered_chunks=4,
        events=events,
        wake_aborts=aborts.unpark_all,
        wake_models=models.unpark_all,
    )
    return router, events, aborts, models


def sent_job(router: JobRouter, job_id: str = JOB) -> JobSlot:
    slot = router.register(job_id, "m")
    router.sent(slot)
    return slot


def chunk(text: str, job_id: str = JOB) -> bytes:
    return encode_server_message(ChatCompletionChunk(job_id=job_id, content=text))


def test_chunks_and_result_fill_the_slot_and_wake_its_consumer() -> None:
    router, events, _, _ = make("token", "completed")
    slot = sent_job(router)
    consumer = Waker()
    slot.lot, slot.parked = consumer, True
    router.feed_batch([chunk("a "), chunk("b ")])
    assert consumer.calls == 1  # woken once for the batch it was parked for
    result = LLMJobResult(
        job_id=JOB, usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    )
    router.feed(encode_server_message(result))
    assert slot.done
    assert slot.error is None
    assert slot.result().content == "a b "
    assert [type(e).__name__ for e in events.seen] == ["TokenEvent", "TokenEvent", "CompletedEvent"]
    assert router.statistics().live_jobs == 0


def test_job_ids_are_matched_case_insensitively_and_late_frames_counted() -> None:
    router, _, _, _ = make()
    slot = sent_job(router)
    router.feed(chunk("x", job_id=JOB.lower()))
    assert slot.content() == "x"
    router.feed(chunk("y", job_id="00000000-0000-4000-8000-000000000000"))
    assert router.statistics().late_frames == 1


def test_an_error_frame_fails_the_job_with_a_typed_error() -> None:
    router, events, _, _ = make("error")
    slot = sent_job(router)
    router.feed(encode_server_message(LLMJobError(job_id=JOB, error="worker_failed")))
    assert isinstance(slot.error, ChatJobError)
    assert slot.error.error_type == "worker_failed"
    assert len(events.seen) == 1


def test_a_malformed_frame_for_a_live_job_fails_it_and_queues_an_abort() -> None:
    router, _, aborts, _ = make()
    slot = sent_job(router)
    payload = base64.b64encode(b'{"jobID":"%s","content":5}' % JOB.encode())
    router.feed(b'{"type":"jobTokens","data":"%s"}' % payload)
    assert slot.done
    assert slot.error is not None
    assert router.statistics().malformed_frames == 1
    assert aborts.calls == 1
    assert router.pop_abort() == JOB
    assert router.pop_abort() is None


def test_garbage_never_raises() -> None:
    router, _, _, _ = make()
    router.feed_batch([b"", b"{", b"[]", "not json", b'{"type":"x","data":1}', b"\xff" * 3])
    stats = router.statistics()
    assert stats.frames == 6
    assert stats.malformed_frames + stats.unknown_frames >= 5


def test_models_wake_waiters_only_when_non_empty() -> None:
    router, _, _, models = make()
    router.feed(encode_server_message(SwarmLLMModels(models={})))
    assert models.calls == 0
    router.feed(encode_server_message(SwarmLLMModels(models={"m": LLMModelInfo(workers=2)})))
    assert models.calls == 1
    assert router.models["m"].workers == 2


def test_lost_connection_fails_jobs_and_aborts_them_after_the_reconnect() -> None:
    router, _, aborts, _ = make()
    slot = sent_job(router)
    unsent = router.register("00000000-0000-4000-8000-000000000001", "m")
    router.connection_lost(ConnectionLost("gone", close_code=1006, reason=""))
    assert isinstance(slot.error, ChatJobError)
    assert slot.error.error_type == "transport_lost"
    assert slot.error.retryable
    assert isinstance(unsent.error, ChatJobError)
    # The server still runs the sent job after the reconnect: it is aborted; the unsent one is
    # not (the server never saw it).
    router.connected(
        Authenticated(active_llm_job_ids=[JOB.lower(), "00000000-0000-4000-8000-000000000001"])
    )
    assert aborts.calls == 1
    assert router.pop_abort() == JOB.lower()
    assert router.pop_abort() is None


def test_release_says_whether_an_abort_is_needed() -> None:
    router, _, _, _ = make()
    slot = sent_job(router)
    assert router.release(slot) is True
    assert isinstance(slot.error, ClientClosedError)
    assert router.release(slot) is False  # already done
    router.abort_done(JOB, sent=False)  # could not be sent: aborted after the next reconnect
    router.connected(Authenticated(active_llm_job_ids=[JOB]))
    assert router.pop_abort() == JOB


def test_registration_rules() -> None:
    router, _, _, _ = make()
    sent_job(router)
    with pytest.raises(InvalidRequestError):
        router.register(JOB, "m")
    live = router.close(ClientClosedError("closed"))
    assert [s.job_id for s in live] == [JOB]
    with pytest.raises(ClientClosedError):
        router.register("00000000-0000-4000-8000-000000000002", "m")


def test_the_router_loads_no_trio_and_no_io() -> None:
    import subprocess
    import sys

    code = (
        "import sys, trio_sogni._router\n"
        "bad = {'trio', 'trio_websocket', 'httpx', 'httpcore', 'anyio', 'h11', 'wsproto'} & set(sys.modules)\n"
        "ours = sorted(m for m in sys.modules if m.startswith('trio_sogni.'))\n"
        "print(sorted(bad)); print(ours)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    bad, ours = out.stdout.splitlines()
    assert bad == "[]"
    for layer in ("_transport", "_stream", "_driver", "_chat", "_client"):
        assert f"trio_sogni.{layer}" not in ours


# --- resuming jobs across a reconnect (sans-IO) -------------------------------------------------


def make_resuming(window: float = 30.0) -> tuple[JobRouter, Clock, Waker, Waker]:
    clock, aborts, detached = Clock(), Waker(), Waker()
    router = JobRouter(
        max_buffered_chunks=4,
        events=Events(),
        wake_aborts=aborts.unpark_all,
        wake_detached=detached.unpark_all,
        clock=clock,
        resume_window=window,
    )
    return router, clock, aborts, detached


def decode_hello(frames: list[bytes]) -> ResumeJobs:
    (frame,) = frames
    message = decode_client_message(frame)
    assert isinstance(message, ResumeJobs)
    return message


def lost() -> ConnectionLost:
    return ConnectionLost("gone", close_code=1006, reason="")


def test_every_frame_of_a_job_is_counted_and_a_drop_detaches_it() -> None:
    router, _, _, detached = make_resuming()
    slot = sent_job(router)
    state = encode_server_message(JobState(job_id=JOB, type="pending"))
    router.feed_batch([state, chunk("a"), chunk("b"), chunk("c", job_id="OTHER")])
    assert slot.frames == 3
    router.connection_lost(lost())
    assert slot.detached
    assert not slot.done
    assert router.detach_deadline == 130.0
    assert detached.calls == 1
    hello = decode_hello(router.connected(Authenticated(job_resume=True)))
    assert hello.jobs == [ResumeEntry(job_id=JOB, received=3)]
    router.feed(encode_server_message(JobsResumed(jobs=[ResumedJob(job_id=JOB, status="resumed")])))
    assert not slot.detached
    assert router.detach_deadline is None
    router.feed(chunk("d"))
    assert slot.content() == "abd"
    assert router.statistics().jobs_resumed == 1


def test_a_server_that_does_not_resume_fails_detached_jobs_and_aborts_them() -> None:
    router, _, aborts, _ = make_resuming()
    slot = sent_job(router)
    router.connection_lost(lost())
    assert router.connected(Authenticated(active_llm_job_ids=[JOB])) == []
    assert isinstance(slot.error, ChatJobError)
    assert slot.error.error_type == "transport_lost"
    assert slot.error.retryable
    assert "does not resume jobs" in str(slot.error)
    assert isinstance(slot.error.__cause__, ConnectionLost)
    assert router.pop_abort() == JOB  # the server still runs it: aborted
    assert aborts.calls == 1


def test_answers_other_than_resumed_fail_the_job_and_unanswered_jobs_fail_too() -> None:
    router, _, _, _ = make_resuming()
    gap, known, silent = (
        sent_job(router, f"00000000-0000-4000-8000-00000000000{i}") for i in "123"
    )
    router.feed(encode_server_message(JobState(job_id=known.job_id, type="pending")))
    router.connection_lost(lost())
    router.connected(Authenticated(job_resume=True))
    answer = JobsResumed(
        jobs=[
            ResumedJob(job_id=gap.job_id, status="gap"),
            ResumedJob(job_id=known.job_id, status="unknown"),  # it had frames: cannot resend
        ]
    )
    router.feed(encode_server_message(answer))
    for slot, why in (
        (gap, "no longer holds"),
        (known, "no longer knows"),
        (silent, "did not resume"),
    ):
        assert isinstance(slot.error, ChatJobError), slot.job_id
        assert why in str(slot.error)
    assert router.statistics().jobs_not_resumed == 3
    assert router.statistics().live_jobs == 0


def test_a_request_the_server_never_received_is_sent_again() -> None:
    router, _, aborts, _ = make_resuming()
    slot = router.register(JOB, "m")
    router.sent(slot, b"the request frame")
    router.connection_lost(lost())
    hello = decode_hello(router.connected(Authenticated(job_resume=True)))
    assert hello.jobs == [ResumeEntry(job_id=JOB, received=0)]
    router.feed(encode_server_message(JobsResumed(jobs=[ResumedJob(job_id=JOB, status="unknown")])))
    assert not slot.done
    assert aborts.calls == 1  # the driver's sender is woken
    assert router.pop_resend() == b"the request frame"
    assert router.pop_resend() is None
    router.feed(encode_server_message(JobState(job_id=JOB, type="pending")))
    assert slot.request is None  # answered: the frame is not kept any longer
    assert router.statistics().requests_resent == 1


def test_a_request_answered_before_its_send_returned_is_not_kept() -> None:
    """The server's first frames may be routed while ``send`` still waits (many requests sent
    back to back): the job is answered, so its request frame is not kept for a resend."""
    router, _, _, _ = make_resuming()
    job = router.register(JOB, "m")
    project = router.register_project(
        PROJECT, "flux1-schnell-fp8", media_type="image", output_format="png", expected=1
    )
    router.feed(encode_server_message(JobState(job_id=JOB, type="pending")))
    router.feed(encode_server_message(JobState(job_id=PROJECT, type="queued")))
    router.sent(job, b"the job's request frame")
    router.sent(project, b"the project's request frame")
    assert job.request is None
    assert project.request is None
    later = router.register(OTHER, "m")
    router.sent(later, b"not answered yet")
    assert later.request == b"not answered yet"


def test_detached_jobs_expire_at_the_end_of_the_window() -> None:
    router, clock, _, _ = make_resuming(window=12.0)
    slot = sent_job(router)
    router.connection_lost(lost())
    clock.now += 11.9
    assert router.expire_detached() == 112.0
    assert not slot.done
    clock.now += 0.1
    assert router.expire_detached() is None
    assert isinstance(slot.error, ChatJobError)
    assert "not resumed within 12 s" in str(slot.error)
    # A later connection that resumes jobs asks for none (and the server gets an empty list).
    assert decode_hello(router.connected(Authenticated(job_resume=True))).jobs == []


def test_without_a_window_jobs_fail_with_their_connection() -> None:
    router, _, _, detached = make_resuming(window=0.0)
    slot = sent_job(router)
    router.connection_lost(lost())
    assert isinstance(slot.error, ChatJobError)
    assert detached.calls == 0
    assert router.detach_deadline is None


def test_credentials_rejected_fail_jobs_even_with_a_window() -> None:
    router, _, _, _ = make_resuming()
    slot = sent_job(router)
    router.connection_lost(AuthenticationError("rejected"))
    assert isinstance(slot.error, AuthenticationError)
    assert not slot.detached


def test_a_closed_stream_leaves_no_detached_state() -> None:
    router, _, _, _ = make_resuming()
    slot = sent_job(router)
    router.connection_lost(lost())
    assert router.release(slot) is True  # still runs on the server: abort it
    assert router.statistics().detached_jobs == 0
    assert decode_hello(router.connected(Authenticated(job_resume=True))).jobs == []


def test_a_request_whose_send_failed_is_aborted_in_case_it_arrived() -> None:
    """A cancel or a loss can land after the request's bytes were written: the job is forgotten,
    and its abort queued (the server ignores an abort of a job it never saw)."""
    router, _, aborts, _ = make()
    slot = router.register(JOB, "m")
    router.unsent(slot)
    assert slot.closed
    assert aborts.calls == 1
    assert router.pop_abort() == JOB
    assert router.statistics().live_jobs == 0
    router.connected(Authenticated(active_llm_job_ids=[JOB]))  # still running there after all
    assert router.pop_abort() == JOB
