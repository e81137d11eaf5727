"""Media projects on localnet over in-memory sockets, in virtual time: every phase, bad requests,
retries, cancel at every phase, recovery, swarmModels and scale.

The media worker and result storage here are TEST DOUBLES (tests/mediadoubles.py)."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
import trio
import trio.testing
from mediadoubles import (
    AUDIO_MODEL,
    COMFY_MODEL,
    IMAGE_MODEL,
    VIDEO_MODEL,
    ScriptedMediaWorker,
    media_network,
    media_request,
    media_socket,
    project_frames,
    raw_job_request,
    rest,
)
from PIL import Image
from rawsocket import recv, send

from trio_sogni.localnet import SimulatedWorker
from trio_sogni.localnet._accounts._ledger import Ledger
from trio_sogni.localnet._media._render import MediaInput, SimulatedMediaWorker
from trio_sogni.protocol import (
    AbortJob,
    ArtistCancelConfirmation,
    ChatMessage,
    JobError,
    JobETA,
    JobProgress,
    JobResult,
    JobRetry,
    JobState,
    LLMJobError,
    LLMJobRequest,
    ProjectQueue,
    ServerMessage,
    SetSocketEventSubscriptions,
    SocketEventSubscriptionsUpdated,
    SwarmModels,
    decode_server_message,
    encode_client_message,
)


def kinds(frames: list[ServerMessage]) -> list[str]:
    return [
        f"{type(f).__name__}:{f.type}" if isinstance(f, JobState) else type(f).__name__
        for f in frames
    ]


def assert_empty(net: object) -> None:
    projects = net._projects  # type: ignore[attr-defined]
    stats = projects.statistics()
    assert (stats.live_projects, stats.queued_renders, stats.running_renders) == (0, 0, 0)
    queued, running, entries = projects.scheduler.statistics()
    assert (queued, running, entries) == (0, 0, 0)
    assert projects._by_app == {}


async def test_every_phase_of_a_two_render_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1", capacity=2)
    async with media_network(worker) as (net, storage), media_socket(net) as (ws, _):
        await send(ws, media_request("P1", count=2, steps=3, seed=100))  # type: ignore[arg-type]
        frames = await project_frames(ws, "P1")
        sequence = kinds(frames)
        assert sequence[0] == "JobState:queued"
        assert sequence[-1] == "JobState:jobCompleted"
        results = [f for f in frames if isinstance(f, JobResult)]
        assert len(results) == 2
        for result in results:
            mine = [f for f in frames if getattr(f, "img_id", None) == result.img_id]
            assert kinds(mine) == [
                "JobState:assigned",
                "JobState:jobStarted",
                "JobProgress",
                "JobETA",
                "JobProgress",
                "JobProgress",
                "JobResult",
            ]
            progress = [f for f in mine if isinstance(f, JobProgress)]
            assert [(f.step, f.step_count, f.progress) for f in progress] == [
                (1, 3, 0.333333),
                (2, 3, 0.666667),
                (3, 3, 1.0),
            ]
            started = mine[1]
            assert isinstance(started, JobState)
            assert started.positive_prompt == "a red fox in snow"
            assert started.worker_name == "m1"
            assert result.performed_step_count == 3
            assert result.output_format == "png"
            assert not result.user_canceled
            eta = mine[3]
            assert isinstance(eta, JobETA)
            assert eta.eta_seconds == pytest.approx(0.2)
        assert sorted(r.job_index for r in results) == [0, 1]  # type: ignore[type-var]
        assert sorted(r.last_seed for r in results) == ["100", "101"]  # type: ignore[type-var]
        # Each result is in storage under (account, project, imgID).
        assert set(storage.items) == {(net.account.id, "P1", r.img_id) for r in results}
        assert {ct for _, ct in storage.items.values()} == {"image/png"}
        # The worker got the tier's resolved settings.
        spec = worker.specs[0]
        assert (spec.steps, spec.width, spec.height, spec.model_id) == (3, 1024, 1024, IMAGE_MODEL)
        plan = net._projects.finished[(net.account.id, "P1")].plan
        assert (plan.sampler, plan.scheduler) == ("euler", "simple")
        assert_empty(net)


@pytest.mark.parametrize(
    ("model", "fields", "check"),
    [
        (VIDEO_MODEL, {"duration": 2, "fps": 16}, ("frames", 33)),
        (AUDIO_MODEL, {"duration": 12, "bpm": 90, "output_format": "wav"}, ("duration", 12.0)),
        (COMFY_MODEL, {"comfy_sampler": "euler", "comfy_scheduler": "beta"}, ("scheduler", "beta")),
    ],
)
async def test_video_audio_and_comfy_settings_reach_the_worker(
    autojump_clock: trio.testing.MockClock,
    model: str,
    fields: dict[str, object],
    check: tuple[str, object],
) -> None:
    worker = ScriptedMediaWorker("m1", step_seconds=0.01)
    async with media_network(worker) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("P", model, steps=4, **fields))  # type: ignore[arg-type]
        frames = await project_frames(ws, "P")
        assert kinds(frames)[-1] == "JobState:jobCompleted"
        plan = net._projects.finished[(net.account.id, "P")].plan
        target = plan if check[0] == "scheduler" else worker.specs[0]
        assert getattr(target, check[0]) == check[1]
        result = next(f for f in frames if isinstance(f, JobResult))
        assert result.output_format == worker.specs[0].output_format


BAD_REQUESTS = [
    ({"model": "no-such-model"}, "Unknown model"),
    ({"steps": 99}, "steps must be between 1 and 12, got 99"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"guidance_scale": 50}, "guidanceScale must be between 0 and 10"),
    ({"scheduler": "ddim"}, "sampler 'ddim' is not allowed"),
    ({"model": COMFY_MODEL, "comfy_sampler": "nope"}, "comfySampler 'nope' is not allowed"),
    ({"count": 0}, "numberOfImages must be between 1 and 16, got 0"),
    ({"count": 17}, "numberOfImages must be between 1 and 16, got 17"),
    ({"prompt": "x" * 10_001}, "positivePrompt is longer than 10000 characters"),
    ({"width": 4096}, "width must be between 256 and 2048, got 4096"),
    ({"seed": -1}, "seed must be between 0 and 4294967295"),
    ({"output_format": "mp4"}, "outputFormat 'mp4' is not available for image"),
    ({"model": VIDEO_MODEL, "frames": 10_000}, "frames must be between 1 and 481"),
    ({"model": VIDEO_MODEL, "duration": 30}, "duration must be between 1 and 10, got 30"),
    ({"model": VIDEO_MODEL, "fps": 24}, "fps 24 is not allowed"),
    ({"model": AUDIO_MODEL, "width": 512}, "a audio model takes no width or height"),
    ({"model": AUDIO_MODEL, "bpm": 1000}, "bpm must be between 30 and 300"),
    ({"model": AUDIO_MODEL, "language": "xx"}, "language 'xx' is not allowed"),
    ({"duration": 3}, "an image model takes no frames or duration"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_REQUESTS)
async def test_bad_job_requests_get_a_project_job_error_and_leave_nothing(
    autojump_clock: trio.testing.MockClock, fields: dict[str, object], message: str
) -> None:
    worker = ScriptedMediaWorker("m1")
    fields = dict(fields)
    model = str(fields.pop("model", IMAGE_MODEL))
    count = int(fields.pop("count", 1))  # type: ignore[call-overload]
    prompt = str(fields.pop("prompt", "fox"))
    async with media_network(worker) as (net, _), media_socket(net) as (ws, _):
        request = media_request("BAD", model, count=count, prompt=prompt, **fields)
        await send(ws, request)  # type: ignore[arg-type]
        error = await recv(ws)
        assert isinstance(error, JobError)
        assert (error.job_id, error.img_id, error.error) == ("BAD", None, "invalid_request")
        assert error.error_message is not None
        assert message in error.error_message
        assert worker.specs == []
        assert_empty(net)


async def test_malformed_job_requests_are_refused_with_a_job_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with media_network(ScriptedMediaWorker("m1")) as (net, _), media_socket(net) as (ws, _):
        for payload in (
            {"jobID": "M1", "keyFrames": "not a list"},
            {"jobID": "M2", "keyFrames": [{"modelID": IMAGE_MODEL}], "numberOfImages": "two"},
            {"jobID": "M3", "keyFrames": []},
            {  # an oversized request (a few KiB is normal)
                "jobID": "M4",
                "keyFrames": [{"modelID": IMAGE_MODEL}],
                "cnVideoFrames": ["x" * 1000] * 100,
            },
        ):
            await ws.send_message(raw_job_request(payload))
            error = await recv(ws)
            assert isinstance(error, JobError), error
            assert not isinstance(error, LLMJobError)
            assert (error.job_id, error.img_id) == (payload["jobID"], None)
        assert_empty(net)


async def test_unknown_model_and_no_worker(autojump_clock: trio.testing.MockClock) -> None:
    worker = ScriptedMediaWorker("m1", (AUDIO_MODEL,))
    async with media_network(worker) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("P", IMAGE_MODEL))  # type: ignore[arg-type]
        error = await recv(ws)
        assert isinstance(error, JobError)
        assert (error.error, error.img_id) == ("model_unavailable", None)
        # A duplicate live id is refused too.
        worker = ScriptedMediaWorker("m2", (IMAGE_MODEL,))
        worker.hold = trio.Event()
        net._projects.add_worker(worker)
        assert isinstance(await recv(ws), SwarmModels)
        await send(ws, media_request("P", IMAGE_MODEL))  # type: ignore[arg-type]
        await send(ws, media_request("p", IMAGE_MODEL))  # type: ignore[arg-type]
        while True:
            message = await recv(ws)
            if isinstance(message, JobError):
                break
        assert message.error_message is not None
        assert "already in use" in message.error_message
        worker.hold.set()
        await project_frames(ws, "P")


async def test_a_failing_worker_is_retried_then_the_render_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = ScriptedMediaWorker("flaky", fail_attempts=1)
    async with media_network(flaky) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("R1", steps=2))  # type: ignore[arg-type]
        frames = await project_frames(ws, "R1")
        retries = [f for f in frames if isinstance(f, JobRetry)]
        assert len(retries) == 1
        result = next(f for f in frames if isinstance(f, JobResult))
        assert result.img_id != retries[0].img_id  # a new attempt, a new imgID
        assert (result.job_index, retries[0].job_index) == (0, 0)
        assert kinds(frames)[-1] == "JobState:jobCompleted"

        flaky.fail_attempts = 100  # more than the retry budget (2)
        await send(ws, media_request("R2", count=2, steps=2))  # type: ignore[arg-type]
        frames = await project_frames(ws, "R2")
        assert len([f for f in frames if isinstance(f, JobRetry)]) == 4
        render_errors = [f for f in frames if isinstance(f, JobError) and f.img_id]
        assert len(render_errors) == 2
        assert {e.error for e in render_errors} == {"genfailure"}
        last = frames[-1]
        assert isinstance(last, JobError)
        assert last.img_id is None  # every render failed: the project fails
        assert_empty(net)


async def test_a_removed_worker_s_render_moves_to_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = ScriptedMediaWorker("first")
    first.hold = trio.Event()
    async with media_network(first) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("W", steps=3))  # type: ignore[arg-type]
        frames = await project_frames(ws, "W", until=("JobProgress",))
        net._projects.add_worker(ScriptedMediaWorker("second"))
        net._projects.remove_worker("first")
        frames += await project_frames(ws, "W")
        retry = next(f for f in frames if isinstance(f, JobRetry))
        assert retry.worker_name == "first"
        result = next(f for f in frames if isinstance(f, JobResult))
        assert result.worker_name == "second"
        assert_empty(net)


def ledger(net: object) -> Ledger:
    book = net._projects.ledger  # type: ignore[attr-defined]
    assert isinstance(book, Ledger)
    return book


async def test_projects_of_a_model_left_without_workers_fail_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("only")
    worker.hold = trio.Event()
    async with media_network(worker) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("RUN", steps=2))  # type: ignore[arg-type]
        await project_frames(ws, "RUN", until=("JobProgress",))
        await send(ws, media_request("WAIT", steps=2))  # type: ignore[arg-type]
        await project_frames(ws, "WAIT", until=("JobState",))
        net._projects.remove_worker("only")
        for project_id in ("RUN", "WAIT"):
            last = (await project_frames(ws, project_id))[-1]
            assert isinstance(last, JobError)
            assert (last.error, last.img_id) == ("model_unavailable", None)
        assert_empty(net)
        assert ledger(net).held(net.account.id, "sogni") == 0


@pytest.mark.parametrize("phase", ["queued", "started", "finished"])
async def test_cancel_at_every_phase(autojump_clock: trio.testing.MockClock, phase: str) -> None:
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    async with media_network(worker) as (net, storage), media_socket(net) as (ws, _):
        # A blocker keeps the only worker busy, so the next project stays queued.
        await send(ws, media_request("BLOCK", steps=2))  # type: ignore[arg-type]
        await project_frames(ws, "BLOCK", until=("JobProgress",))
        if phase != "queued":
            worker.hold.set()
            await project_frames(ws, "BLOCK")
            worker.hold = trio.Event()
        await send(ws, media_request("C", count=3, steps=4))  # type: ignore[arg-type]
        if phase == "started":
            await project_frames(ws, "C", until=("JobProgress",))
        elif phase == "finished":
            worker.hold.set()
            await project_frames(ws, "C")
        else:
            frames = await project_frames(ws, "C", until=("JobState",))
            assert kinds(frames) == ["JobState:queued"]
        await send(ws, AbortJob(job_id="C"))
        frames = await project_frames(ws, "C", until=("ArtistCancelConfirmation",))
        confirmation = frames[-1]
        assert isinstance(confirmation, ArtistCancelConfirmation)
        canceled = [f for f in frames if isinstance(f, JobResult) and f.user_canceled]
        if phase == "finished":
            assert not confirmation.did_cancel
            assert canceled == []
        else:
            assert confirmation.did_cancel
            assert len(canceled) == (1 if phase == "started" else 0)
        worker.hold.set()
        if phase == "queued":
            await project_frames(ws, "BLOCK")
        # Nothing more for C arrives; its state, queue entries and slots are gone.
        await send(ws, media_request("AFTER", steps=1))  # type: ignore[arg-type]
        after = await project_frames(ws, "AFTER")
        assert kinds(after)[-1] == "JobState:jobCompleted"
        assert "C" not in {k[1] for k in storage.items} or phase == "finished"
        assert_empty(net)
        assert ledger(net).held(net.account.id, "sogni") == 0


async def test_another_accounts_cancel_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    async with media_network(worker) as (net, _):
        net.add_account("mallory", password="pw", balance=10)
        mallory = net.create_api_key("mallory")
        async with media_socket(net) as (ws, _), media_socket(net, mallory) as (evil, _):
            await send(ws, media_request("SAME", steps=2))  # type: ignore[arg-type]
            await project_frames(ws, "SAME", until=("JobProgress",))
            await send(evil, AbortJob(job_id="SAME"))
            await net.wait_until(lambda: "SAME" in list(net.aborted_job_ids))
            assert net._projects.statistics().live_projects == 1
            worker.hold.set()
            frames = await project_frames(ws, "SAME")
            assert kinds(frames)[-1] == "JobState:jobCompleted"


async def test_billing_holds_settles_per_render_and_quotes_match(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1", capacity=4)
    async with media_network(worker) as (net, _):
        net.add_account("payer", password="pw", balance=Decimal("1"))
        key = net.create_api_key("payer")
        status, quote = await rest(net, f"/api/v3/job/estimate/sogni/fast/{IMAGE_MODEL}/3/4/0/0/0/1024/1024/1/euler/0", key)  # fmt: skip
        assert status == 200
        cost = Decimal(quote["quote"]["project"]["costInToken"])
        assert cost == Decimal("0.6")  # 3 renders x 0.002 USD x 100 sogni per USD
        async with media_socket(net, key) as (ws, _):
            await send(ws, media_request("B1", count=3, steps=2))  # type: ignore[arg-type]
            updates: list[object] = []
            while True:
                message = decode_server_message(await ws.get_message())
                if type(message).__name__ == "BalanceUpdate":
                    updates.append(message)
                if isinstance(message, JobState) and message.type == "jobCompleted":
                    break
            assert len(updates) == 3  # one balanceUpdate per settled render
            assert net.balance("payer") == Decimal("1") - cost
            assert ledger(net).held(net.get_account("payer").id, "sogni") == 0
            # More renders than the balance covers: refused before anything is queued.
            await send(ws, media_request("B2", count=16))  # type: ignore[arg-type]
            error = await recv(ws)
            assert isinstance(error, JobError)
            assert (error.error, error.img_id) == ("insufficient_balance", None)
            assert ledger(net).held(net.get_account("payer").id, "sogni") == 0
            assert_empty(net)


async def test_renders_share_the_chat_scheduler_fairly_between_accounts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    async with media_network(worker) as (net, _):
        assert net._projects.scheduler is net._jobs.scheduler
        net.add_account("bob", password="pw", balance=100)
        bob = net.create_api_key("bob")
        async with media_socket(net) as (ws, _), media_socket(net, bob) as (ws_bob, _):
            await send(ws, media_request("A0", steps=1, prompt="A0"))  # type: ignore[arg-type]
            await project_frames(ws, "A0", until=("JobProgress",))
            for i in range(1, 6):
                await send(ws, media_request(f"A{i}", steps=1, prompt=f"A{i}"))  # type: ignore[arg-type]
            await net.wait_until(lambda: net._projects.statistics().queued_renders == 5)
            await send(ws_bob, media_request("B", steps=1, prompt="B"))  # type: ignore[arg-type]
            queued = await project_frames(ws_bob, "B", until=("JobState",))
            # Behind at most the head of the flooding account's queue, not all five.
            assert queued[0].queue_position == 2  # type: ignore[union-attr]
            worker.hold.set()
            worker.hold = None
            await project_frames(ws_bob, "B")
            for i in range(1, 6):
                await project_frames(ws, f"A{i}")
            assert [spec.prompt for spec in worker.specs] == [
                "A0",
                "A1",
                "B",
                "A2",
                "A3",
                "A4",
                "A5",
            ]
            assert_empty(net)


async def test_swarm_models_follow_media_workers(autojump_clock: trio.testing.MockClock) -> None:
    async with media_network() as (net, _), media_socket(net) as (ws, _):
        net._projects.add_worker(ScriptedMediaWorker("m1", (IMAGE_MODEL, VIDEO_MODEL)))
        first = await recv(ws)
        assert first == SwarmModels(models={IMAGE_MODEL: 1, VIDEO_MODEL: 1})
        net._projects.add_worker(ScriptedMediaWorker("m2", (IMAGE_MODEL,)))
        assert await recv(ws) == SwarmModels(models={IMAGE_MODEL: 2, VIDEO_MODEL: 1})
        net._projects.remove_worker("m1")
        assert await recv(ws) == SwarmModels(models={IMAGE_MODEL: 1})
    async with media_network(ScriptedMediaWorker("m3", (AUDIO_MODEL,))) as (net, _):
        async with media_socket(net) as (ws, authenticated):
            assert authenticated.active_projects == []
            assert authenticated.unclaimed_completed_projects == []
        with pytest.raises(ValueError, match="not in the media catalog"):
            net._projects.add_worker(ScriptedMediaWorker("x", ("nope",)))
    async with media_network(models=[IMAGE_MODEL]) as (net, _):
        with pytest.raises(ValueError, match="is a chat model"):
            net._projects.add_worker(ScriptedMediaWorker("y", (IMAGE_MODEL,)))


async def test_a_project_finished_while_away_is_recovered_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    async with media_network(worker) as (net, _):
        async with media_socket(net, app_id="app") as (ws, _):
            await send(ws, media_request("AWAY", count=2, steps=2))  # type: ignore[arg-type]
            await project_frames(ws, "AWAY", until=("JobProgress",))
        async with media_socket(net, app_id="app") as (ws, authenticated):
            assert authenticated.active_projects is not None
            (active,) = authenticated.active_projects
            assert (active.id, active.status, active.app_id) == ("AWAY", "active", "app")
            assert active.model is not None
            assert active.model.id == IMAGE_MODEL
        status, body = await rest(net, "/v1/projects/AWAY", net.api_key)
        assert status == 404  # not finished yet
        worker.hold.set()
        await net.wait_until(lambda: net._projects.statistics().live_projects == 0)
        status, body = await rest(net, "/api/v1/artist/projects/sync?appId=app", net.api_key)
        assert status == 200
        assert [p["id"] for p in body["unclaimedCompletedProjects"]] == ["AWAY"]
        done = body["unclaimedCompletedProjects"][0]["completedWorkerJobs"]
        assert sorted(j["jobIndex"] for j in done) == [0, 1]
        assert {j["status"] for j in done} == {"jobCompleted"}
        async with media_socket(net, app_id="app") as (ws, authenticated):
            assert authenticated.unclaimed_completed_projects is not None
            assert [p.id for p in authenticated.unclaimed_completed_projects] == ["AWAY"]
        async with media_socket(net, app_id="app") as (ws, authenticated):
            assert authenticated.unclaimed_completed_projects == []  # claimed
        status, body = await rest(net, "/v1/projects/away", net.api_key)
        assert status == 200
        assert body["data"]["project"]["status"] == "completed"
        net.add_account("eve", password="pw", balance=1)
        status, _ = await rest(net, "/v1/projects/AWAY", net.create_api_key("eve"))
        assert status == 404
        status, _ = await rest(net, "/v1/projects/NOPE", net.api_key)
        assert status == 404
        status, _ = await rest(net, "/api/v1/artist/projects/sync")
        assert status == 401


async def test_models_list_and_tiers_are_what_the_sdks_parse(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with media_network() as (net, _):
        status, models = await rest(net, "/api/v1/models/list")
        assert status == 200
        assert {m["id"]: m["media"] for m in models} == {
            IMAGE_MODEL: "image",
            COMFY_MODEL: "image",
            VIDEO_MODEL: "video",
            AUDIO_MODEL: "audio",
        }
        assert all(set(m) == {"id", "name", "SID", "tier", "media"} for m in models)
        status, tiers = await rest(net, "/api/v2/models/tiers")
        assert status == 200
        by_model = {m["id"]: tiers[m["tier"]] for m in models}
        assert by_model[IMAGE_MODEL]["sampler"] == {
            "allowed": ["euler", "euler_a", "dpmpp_2m", "lcm"],
            "default": "euler",
        }
        assert "comfySampler" in by_model[COMFY_MODEL]
        assert by_model[VIDEO_MODEL]["fps"] == {"allowed": [16, 32], "default": 16}
        assert by_model[AUDIO_MODEL]["type"] == "audio"
        assert by_model[IMAGE_MODEL]["steps"] == {"min": 1, "max": 12, "default": 4}


async def test_shutdown_fails_live_projects_with_server_restarting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    frames: list[ServerMessage] = []
    async with media_network(worker) as (net, _), media_socket(net) as (ws, _):
        await send(ws, media_request("S", steps=2))  # type: ignore[arg-type]
        frames += await project_frames(ws, "S", until=("JobProgress",))
        net._projects.close()
        frames += await project_frames(ws, "S")
        assert_empty(net)
    last = frames[-1]
    assert isinstance(last, JobError)
    assert (last.error, last.img_id) == ("serverRestarting", None)


@pytest.mark.deadline(120)
async def test_a_hundred_concurrent_projects_on_one_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    workers = [ScriptedMediaWorker(f"m{i}", capacity=4, step_seconds=0.05) for i in range(4)]
    async with media_network(*workers) as (net, storage), media_socket(net) as (ws, _):
        for i in range(100):
            await ws.send_message(
                encode_client_message(media_request(f"P{i:03}", count=2, steps=3))
            )
        completed: set[str] = set()
        results = 0
        while len(completed) < 100:
            message = decode_server_message(await ws.get_message())
            if isinstance(message, JobResult):
                results += 1
            elif isinstance(message, JobState) and message.type == "jobCompleted":
                completed.add(message.job_id)
            assert not isinstance(message, JobError), message
        assert results == 200
        assert len(storage.items) == 200
        assert_empty(net)
        assert net._projects.statistics().finished_records == 100


async def test_fairness_is_per_account_across_chat_jobs_and_renders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One scheduler: an account's chat backlog counts against its media renders too, so
    another account's render goes first although it was submitted later."""
    media = ScriptedMediaWorker("m1", step_seconds=0.01)
    media.hold = trio.Event()
    chat = SimulatedWorker("chat", tokens_per_second=1)
    async with media_network(media, workers=[chat], models=["chat-model"]) as (net, _):
        net.add_account("bob", password="pw", balance=100)
        bob = net.create_api_key("bob")
        async with media_socket(net) as (ws, _), media_socket(net, bob) as (ws_bob, _):
            await send(ws, media_request("BUSY", steps=1, prompt="BUSY"))  # type: ignore[arg-type]
            await project_frames(ws, "BUSY", until=("JobProgress",))
            for i in range(10):
                message = ChatMessage(role="user", content="a b c d e f")
                await send(
                    ws, LLMJobRequest(job_id=f"C{i}", model="chat-model", messages=[message])
                )
            await net.wait_until(lambda: net.statistics().queued_jobs >= 9)
            await send(ws, media_request("MINE", steps=1, prompt="MINE"))  # type: ignore[arg-type]
            await send(ws_bob, media_request("BOBS", steps=1, prompt="BOBS"))  # type: ignore[arg-type]
            await net.wait_until(lambda: net._projects.statistics().queued_renders == 2)
            media.hold.set()
            media.hold = None
            await project_frames(ws, "MINE")
            assert [s.prompt for s in media.specs] == ["BUSY", "BOBS", "MINE"]


async def test_project_queue_frames_only_for_subscribed_sockets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1", step_seconds=0.01)
    async with media_network(worker) as (net, _):
        for subscribe, expected in ((False, 0), (True, 1)):
            app = f"app-{subscribe}"
            async with media_socket(net, app_id=app) as (ws, _):
                if subscribe:
                    await send(
                        ws, SetSocketEventSubscriptions(subscriptions={"projectQueue": True})
                    )
                    assert isinstance(await recv(ws), SocketEventSubscriptionsUpdated)
                await send(ws, media_request(app, steps=1))  # type: ignore[arg-type]
                frames = await project_frames(ws, app)
                queue = [f for f in frames if isinstance(f, ProjectQueue)]
                assert len(queue) == expected
                if queue:
                    assert (queue[0].queue_position, queue[0].queue_status) == (1, "waiting")


async def test_frames_made_while_the_socket_was_gone_arrive_on_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Project frames go through the jobs' delivery: held while the app has no socket, then
    sent to the socket that takes the app back (before the project's later frames)."""
    worker = ScriptedMediaWorker("m1")
    first = worker.hold = trio.Event()
    async with media_network(worker) as (net, _):
        async with media_socket(net, app_id="app") as (ws, _):
            await send(ws, media_request("GAP", count=2, steps=3))  # type: ignore[arg-type]
            await worker.parked.wait()  # render 0 is at its first step
            seen = await project_frames(ws, "GAP", until=("JobProgress",))
        await net.wait_until(lambda: net.connected_sockets == 0)
        worker.parked = trio.Event()
        second = worker.hold = trio.Event()
        first.set()  # render 0 finishes and render 1 starts, with no socket
        await worker.parked.wait()
        async with media_socket(net, app_id="app") as (ws, authenticated):
            assert authenticated.active_projects is not None
            assert [p.id for p in authenticated.active_projects] == ["GAP"]
            second.set()
            frames = await project_frames(ws, "GAP")
    results = [f for f in frames if isinstance(f, JobResult)]
    assert len(results) == 2  # render 0's result was made while no socket held the app
    assert kinds(frames)[-1] == "JobState:jobCompleted"
    assert kinds(seen)[0] == "JobState:queued"
    assert net.frames_dropped == 0


async def test_uploaded_inputs_reach_the_worker_and_missing_ones_are_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("m1")
    async with media_network(worker) as (net, storage), media_socket(net) as (ws, _):
        picture = MediaInput(data=b"\x89PNG...", content_type="image/png")
        storage.uploads[(net.account.id, "IN", "startingImage")] = picture
        storage.uploads[(net.account.id, "IN", "contextImage2")] = picture
        request = media_request("IN", has_starting_image=True, has_context_image2=True)
        await send(ws, request)  # type: ignore[arg-type]
        frames = await project_frames(ws, "IN")
        assert kinds(frames)[-1] == "JobState:jobCompleted"
        assert set(worker.specs[0].inputs) == {"startingImage", "contextImage2"}
        assert (net.account.id, "IN") in storage.discarded  # uploads go with the project
        await send(ws, media_request("NO", has_starting_image=True))  # type: ignore[arg-type]
        error = await recv(ws)
        assert isinstance(error, JobError)
        assert error.error_message is not None
        assert (
            "startingImage is flagged in the keyframe but was not uploaded" in error.error_message
        )
        assert_empty(net)


async def test_the_simulated_media_worker_renders_real_images(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The real SimulatedMediaWorker (a TEST DOUBLE that draws with Pillow) behind the manager:
    each render stored is a decodable PNG of the requested size."""
    worker = SimulatedMediaWorker("sim", encode_in_thread=False)
    async with media_network() as (net, storage), media_socket(net) as (ws, _):
        net._projects.add_worker(worker)
        assert isinstance(await recv(ws), SwarmModels)
        await send(ws, media_request("SIM", count=2, steps=2, width=320, height=256))  # type: ignore[arg-type]
        frames = await project_frames(ws, "SIM")
        assert kinds(frames)[-1] == "JobState:jobCompleted"
        assert len(storage.items) == 2
        for data, content_type in storage.items.values():
            assert content_type == "image/png"
            image = Image.open(io.BytesIO(data))
            assert (image.format, image.size) == ("PNG", (320, 256))


async def test_project_ids_are_scoped_to_their_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another account reusing a live project id gets its own project and learns nothing."""
    worker = ScriptedMediaWorker("m1", capacity=2)
    worker.hold = trio.Event()
    async with media_network(worker) as (net, _):
        net.add_account("carol", password="pw", balance=100)
        carol = net.create_api_key("carol")
        async with media_socket(net) as (ws, _), media_socket(net, carol) as (other, _):
            await send(ws, media_request("SHARED", steps=1))  # type: ignore[arg-type]
            await send(other, media_request("shared", steps=1))  # type: ignore[arg-type]
            await net.wait_until(lambda: net._projects.statistics().live_projects == 2)
            worker.hold.set()
            for sock, project_id in ((ws, "SHARED"), (other, "shared")):
                frames = await project_frames(sock, project_id)
                assert kinds(frames)[-1] == "JobState:jobCompleted"
            status, body = await rest(net, "/v1/projects/SHARED", carol)
            assert (status, body["data"]["project"]["id"]) == (200, "shared")


async def test_one_account_is_capped_across_its_apps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Like chat jobs: ``max_jobs_per_account`` live projects over all of an account's apps
    (before, each app had its own ``max_jobs_per_socket``, so N apps held N times as many)."""
    worker = ScriptedMediaWorker("m1")
    worker.hold = trio.Event()
    async with (
        media_network(worker, max_jobs_per_socket=2, max_jobs_per_account=3) as (net, _),
        media_socket(net, app_id="a1") as (a1, _),
        media_socket(net, app_id="a2") as (a2, _),
    ):
        for i in range(2):
            await send(a1, media_request(f"A{i}", steps=2))  # type: ignore[arg-type]
            await project_frames(a1, f"A{i}", until=("JobState",))
        await send(a2, media_request("B0", steps=2))  # type: ignore[arg-type]
        await project_frames(a2, "B0", until=("JobState",))
        await send(a2, media_request("B1", steps=2))  # type: ignore[arg-type]
        (refused,) = await project_frames(a2, "B1")
        assert isinstance(refused, JobError)
        assert refused.error == "too_many_jobs"
        assert "This account already has 3 live projects" in (refused.error_message or "")
        worker.hold.set()
        for i in range(2):
            await project_frames(a1, f"A{i}")
        await project_frames(a2, "B0")
        assert net._projects._by_account == {}  # pyright: ignore[reportPrivateUsage]
