"""Media projects in the sans-IO job router: routing by jobID, the completion rule, render
failures and retries, coalescing, malformed frames, and the shared detach / resume / reconcile
mechanism. Synchronous: no Trio run, no socket."""

from __future__ import annotations

from typing import Any

from routerdoubles import Clock, Events, Waker

from trio_sogni import ClientClosedError, ConnectionLost, ProjectError, ProtocolError
from trio_sogni._event_types import ProjectEvent, RenderEvent
from trio_sogni._projectstate import ProgressCell, ProjectEnd, ProjectSlot, RenderEnd
from trio_sogni._router import JobRouter
from trio_sogni.protocol import (
    ArtistCancelConfirmation,
    Authenticated,
    ChatCompletionChunk,
    JobError,
    JobETA,
    JobProgress,
    JobResult,
    JobRetry,
    JobsResumed,
    JobState,
    ProjectQueue,
    ProjectSnapshot,
    ResumedJob,
    ResumeEntry,
    ResumeJobs,
    SwarmModels,
    WorkerJobSnapshot,
    decode_client_message,
    encode_envelope,
    encode_server_message,
)

PROJECT = "0F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43"
CHAT = "9F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43"


def make(*kinds: str, window: float = 30.0) -> tuple[JobRouter, Events, Waker]:
    events, aborts = Events(*kinds), Waker()
    router = JobRouter(
        max_buffered_chunks=4,
        events=events,
        wake_aborts=aborts.unpark_all,
        clock=Clock(),
        resume_window=window,
    )
    return router, events, aborts


def sent(router: JobRouter, expected: int = 1, job_id: str = PROJECT) -> ProjectSlot:
    slot = router.register_project(
        job_id, "m", media_type="image", output_format="png", expected=expected
    )
    router.sent(slot, b"the jobRequest frame")
    return slot


def frame(message: Any) -> bytes:
    return encode_server_message(message)


def started(img: str, index: int) -> bytes:
    return frame(
        JobState(job_id=PROJECT, type="jobStarted", img_id=img, job_index=index, worker_name="w")
    )


def progress(img: str, index: int, step: int, count: int = 4) -> bytes:
    return frame(
        JobProgress(
            job_id=PROJECT,
            img_id=img,
            job_index=index,
            step=step,
            step_count=count,
            progress=step / count,
        )
    )


def result(img: str, index: int, **fields: Any) -> bytes:
    return frame(JobResult(job_id=PROJECT, img_id=img, job_index=index, last_seed="5", **fields))


COMPLETED = frame(JobState(job_id=PROJECT, type="jobCompleted"))


def drain(slot: ProjectSlot) -> list[object]:
    items: list[object] = []
    while (item := slot.take()) is not None:
        items.append(item)
    return items


def test_a_project_completes_when_the_server_says_so_and_every_render_ended() -> None:
    router, events, _ = make("project", "job")
    slot = sent(router, expected=2)
    router.feed_batch(
        [
            frame(JobState(job_id=PROJECT, type="queued", queue_position=3)),
            started("A", 0),
            progress("A", 0, 1),
            frame(JobETA(job_id=PROJECT, img_id="A", eta_seconds=1.5)),
            result("A", 0),
            started("B", 1),
        ]
    )
    assert slot.status == "processing"
    assert slot.renders[0].eta == 0.0
    assert not slot.done
    router.feed(COMPLETED)  # jobCompleted before the last render's result: not complete yet
    assert not slot.done
    router.feed(result("B", 1))
    assert slot.done
    assert slot.status == "completed"
    assert slot.error is None
    assert router.statistics().live_projects == 0
    assert slot.frames == 8
    kinds = [
        (type(e).__name__, e.type) for e in events.seen if isinstance(e, ProjectEvent | RenderEvent)
    ]  # type: ignore[union-attr]
    assert kinds == [
        ("ProjectEvent", "queued"),
        ("RenderEvent", "started"),
        ("RenderEvent", "progress"),
        ("RenderEvent", "completed"),
        ("RenderEvent", "started"),
        ("RenderEvent", "completed"),
        ("ProjectEvent", "completed"),
    ]


def test_progress_reports_coalesce_and_ends_are_never_dropped() -> None:
    router, _, _ = make()
    slot = sent(router, expected=2)
    router.feed(frame(JobState(job_id=PROJECT, type="queued", queue_position=5)))
    router.feed(frame(JobState(job_id=PROJECT, type="queued", queue_position=2)))
    router.feed_batch([started("A", 0), started("B", 1)])
    for step in range(1, 101):
        router.feed_batch([progress("A", 0, step, 100), progress("B", 1, step, 100)])
    router.feed_batch([result("A", 0), result("B", 1), COMPLETED])
    assert slot.updates_peak <= 2 * 2 + 2
    assert slot.coalesced >= 200
    items = drain(slot)
    queued = items[0]
    assert isinstance(queued, ProgressCell)
    assert queued.value == (2, None)  # the latest position
    cells = [i for i in items if isinstance(i, ProgressCell) and i.render is not None]
    assert {c.render.index: c.render.step for c in cells if c.render} == {0: 100, 1: 100}
    assert [type(i) for i in items[-3:]] == [RenderEnd, RenderEnd, ProjectEnd]


def test_a_render_error_fails_the_render_and_a_project_error_fails_the_project() -> None:
    router, _, _ = make()
    slot = sent(router, expected=2)
    router.feed_batch(
        [
            started("A", 0),
            frame(
                JobError(
                    job_id=PROJECT,
                    img_id="A",
                    job_index=0,
                    error="genfailure",
                    error_message="boom",
                    vendor_failure_category="capacity",
                    is_from_worker=True,
                )
            ),
        ]
    )
    render = slot.renders[0]
    assert render.status == "failed"
    assert isinstance(render.error, ProjectError)
    assert (render.error.code, render.error.img_id) == ("genfailure", "A")
    assert render.error.vendor_failure_category == "capacity"
    assert not slot.done
    router.feed(frame(JobError(job_id=PROJECT, error=4103, error_message="all failed")))
    assert slot.done
    assert slot.status == "failed"
    assert isinstance(slot.error, ProjectError)
    assert slot.error.code == "4103"
    assert slot.error.img_id is None
    assert router.statistics().live_projects == 0


def test_a_retried_render_keeps_its_index_and_ends_once() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed_batch(
        [
            started("A", 0),
            progress("A", 0, 2),
            frame(JobRetry(job_id=PROJECT, img_id="A", job_index=0)),
            started("A2", 0),
            progress("A2", 0, 1),
        ]
    )
    assert list(slot.renders) == [0]
    assert slot.renders[0].img_id == "A2"
    assert slot.renders[0].step == 1
    router.feed_batch([result("A2", 0), COMPLETED])
    assert slot.status == "completed"


def test_a_cancel_confirmation_ends_the_project_as_canceled() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed_batch(
        [
            started("A", 0),
            result("A", 0, user_canceled=True),
            frame(ArtistCancelConfirmation(job_id=PROJECT, did_cancel=True)),
        ]
    )
    assert slot.status == "canceled"
    assert isinstance(slot.error, ProjectError)
    assert slot.error.code == "artistCanceled"
    assert slot.renders[0].status == "canceled"


def test_release_cancels_a_running_project_and_frees_it() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed(started("A", 0))
    assert router.release(slot)  # the driver must send the cancel
    assert slot.status == "canceled"
    assert router.statistics().live_projects == 0
    router.feed(progress("A", 0, 2))
    assert router.statistics().late_frames == 1
    assert not router.release(slot)


def test_a_malformed_project_frame_fails_it_and_queues_its_cancel() -> None:
    router, _, aborts = make()
    slot = sent(router)
    router.feed(encode_envelope("jobProgress", {"jobID": PROJECT, "step": "x"}))
    assert isinstance(slot.error, ProtocolError)
    assert router.pop_abort() == PROJECT
    assert aborts.calls == 1
    assert router.statistics().malformed_frames == 1


def test_chat_jobs_and_projects_share_the_router_without_mixing() -> None:
    router, _, _ = make()
    project = sent(router)
    chat = router.register(CHAT, "llm")
    router.sent(chat)
    router.feed_batch(
        [
            frame(ChatCompletionChunk(job_id=CHAT, content="hi")),
            frame(JobState(job_id=CHAT, type="jobStarted")),
            started("A", 0),
            frame(SwarmModels(models={"m": 2})),
        ]
    )
    assert chat.content() == "hi"
    assert chat.frames == 2
    assert project.frames == 1
    assert router.media_models == {"m": 2}


def test_projects_detach_are_listed_in_resume_jobs_and_resume() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed_batch([started("A", 0), progress("A", 0, 1)])
    router.connection_lost(ConnectionLost("gone", close_code=1006))
    assert slot.detached
    assert not slot.done
    (hello,) = router.connected(Authenticated(job_resume=True))
    message = decode_client_message(hello)
    assert isinstance(message, ResumeJobs)
    assert message.jobs == [ResumeEntry(job_id=PROJECT, received=2)]
    answer = JobsResumed(jobs=[ResumedJob(job_id=PROJECT, status="resumed")])
    router.feed_batch([frame(answer), progress("A", 0, 2)])
    assert not slot.detached
    assert slot.renders[0].step == 2


def test_an_unresumed_project_the_server_lists_is_reconciled_from_its_snapshot() -> None:
    router, _, _ = make()
    slot = sent(router, expected=2)
    router.feed_batch([started("A", 0), started("B", 1)])
    router.connection_lost(ConnectionLost("gone", close_code=1006))
    snapshot = ProjectSnapshot(
        id=PROJECT,
        status="active",
        worker_jobs=[
            WorkerJobSnapshot(
                id="1",
                img_id="B",
                job_index=1,
                status="jobProgress",
                performed_steps=2,
                step_count=4,
            ),
        ],
        completed_worker_jobs=[
            WorkerJobSnapshot(id="0", img_id="A", job_index=0, status="jobCompleted", seed_used=9),
        ],
    )
    router.connected(Authenticated(job_resume=True, active_projects=[snapshot]))
    router.feed(frame(JobsResumed(jobs=[ResumedJob(job_id=PROJECT, status="unknown")])))
    assert not slot.done
    assert not slot.detached
    assert slot.renders[0].status == "completed"
    assert slot.renders[0].result is not None
    assert slot.renders[0].result.last_seed == "9"
    assert slot.renders[1].step == 2
    assert router.statistics().projects_reconciled == 1
    router.feed_batch([result("B", 1), COMPLETED])  # the live frames keep coming
    assert slot.status == "completed"


def test_a_project_that_ended_while_away_completes_from_its_snapshot() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed(started("A", 0))
    router.connection_lost(ConnectionLost("gone", close_code=1006))
    snapshot = ProjectSnapshot(
        id=PROJECT,
        status="completed",
        completed_worker_jobs=[
            WorkerJobSnapshot(id="0", img_id="A", job_index=0, status="jobCompleted"),
        ],
    )
    assert router.connected(Authenticated(unclaimed_completed_projects=[snapshot])) == []
    assert slot.status == "completed"
    assert router.statistics().live_projects == 0


def test_an_unknown_project_fails_retryably_unless_its_request_was_lost() -> None:
    router, _, aborts = make()
    known = sent(router)
    lost_in_flight = sent(router, job_id="1F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43")
    router.feed(started("A", 0))  # only the first one was heard of
    router.connection_lost(ConnectionLost("gone", close_code=1006))
    router.connected(Authenticated(job_resume=True))
    router.feed(
        frame(
            JobsResumed(
                jobs=[
                    ResumedJob(job_id=known.job_id, status="unknown"),
                    ResumedJob(job_id=lost_in_flight.job_id, status="unknown"),
                ]
            )
        )
    )
    assert isinstance(known.error, ProjectError)
    assert known.error.retryable
    assert known.error.code == "transport_lost"
    assert not lost_in_flight.done
    assert router.pop_resend() == b"the jobRequest frame"
    assert aborts.calls == 1


def test_closing_fails_projects_too() -> None:
    router, _, _ = make()
    slot = sent(router)
    live = router.close(ClientClosedError("closed"))
    assert live == [slot]
    assert isinstance(slot.error, ClientClosedError)


def test_a_project_listed_nowhere_is_looked_up_before_it_fails() -> None:
    lookups = Waker()
    router = JobRouter(
        max_buffered_chunks=4,
        events=Events(),
        wake_lookups=lookups.unpark_all,
        clock=Clock(),
        resume_window=30.0,
    )
    found = sent(router)
    unknown = sent(router, job_id="1F0E4A51-3C6B-4F0A-8E5D-2B7C1D9A6E43")
    router.feed_batch([started("A", 0), frame(JobState(job_id=unknown.job_id, type="queued"))])
    router.connection_lost(ConnectionLost("gone", close_code=1006))
    assert router.connected(Authenticated()) == []  # no resume, listed nowhere
    assert lookups.calls == 1
    assert not found.done
    assert not unknown.done
    assert router.pop_lookup() is found
    router.looked_up(
        found,
        ProjectSnapshot(
            id=PROJECT,
            status="completed",
            completed_worker_jobs=[
                WorkerJobSnapshot(id="0", img_id="A", job_index=0, status="jobCompleted")
            ],
        ),
    )
    assert found.status == "completed"
    assert router.pop_lookup() is unknown
    assert router.pop_lookup() is None
    router.looked_up(unknown, None)
    assert isinstance(unknown.error, ProjectError)
    assert unknown.error.retryable
    assert "no longer knows" in str(unknown.error)
    assert router.statistics().live_projects == 0


def test_frames_without_a_job_index_are_routed_by_img_id() -> None:
    router, _, _ = make()
    slot = sent(router, expected=2)
    router.feed_batch(
        [
            frame(JobState(job_id=PROJECT, type="jobStarted", img_id="A")),
            frame(JobState(job_id=PROJECT, type="jobStarted", img_id="B")),
            frame(JobProgress(job_id=PROJECT, img_id="B", step=3, step_count=4)),
            frame(JobETA(job_id=PROJECT, img_id="B", eta_seconds=2)),
            frame(JobETA(job_id=PROJECT, img_id="nobody", eta_seconds=2)),  # invents nothing
            frame(JobResult(job_id=PROJECT, img_id="A")),
        ]
    )
    assert {i: (r.img_id, r.step, r.status) for i, r in slot.renders.items()} == {
        0: ("A", 0, "completed"),
        1: ("B", 3, "processing"),
    }
    assert slot.renders[1].eta == 2.0
    assert slot.renders[1].progress == 0.75


def test_a_server_naming_too_many_renders_is_bounded() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed_batch([started(f"R{i}", i) for i in range(200)])
    assert len(slot.renders) == 64
    assert len(slot.by_img) <= 256


def test_a_project_queue_frame_updates_the_position() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed(frame(ProjectQueue(job_id=PROJECT, queue_position=7, estimated_start_seconds=12)))
    assert (slot.status, slot.queue_position, slot.eta) == ("queued", 7, 12.0)
    router.feed(frame(ProjectQueue(job_id=PROJECT, queue_status="waiting")))  # no position
    assert slot.queue_position == 7


def test_a_late_frame_of_an_older_attempt_changes_nothing() -> None:
    router, _, _ = make()
    slot = sent(router, expected=2)
    router.feed_batch([started("A", 0), result("A", 0), progress("A", 0, 1), started("X", 0)])
    render = slot.renders[0]
    assert (render.img_id, render.status, render.progress) == ("A", "completed", 1.0)


def test_a_failed_project_drops_later_frames_and_counts_them() -> None:
    router, _, _ = make()
    slot = sent(router)
    router.feed(frame(JobError(job_id=PROJECT, error="insufficient_balance")))
    assert slot.status == "failed"
    router.feed_batch([started("A", 0), COMPLETED])
    assert router.statistics().late_frames == 2
