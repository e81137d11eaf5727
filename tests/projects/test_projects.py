"""``sogni.projects`` against localnet, in virtual time over in-memory connections: every phase
of a project, number_of_media renders, results downloaded and decoded, progress updates and
events, and options refused before anything is sent.

The media workers are TEST DOUBLES (see projectnet.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from mediadoubles import ScriptedMediaWorker
from PIL import Image
from projectnet import (
    AUDIO_MODEL,
    IMAGE_MODEL,
    VIDEO_MODEL,
    assert_no_client_state,
    assert_no_live_project,
    media_client,
    media_net,
    simulated,
)

import trio_sogni
from trio_sogni import (
    Completed,
    InvalidRequestError,
    Processing,
    ProjectError,
    ProjectUpdate,
    Queued,
    RenderCompleted,
)


async def test_an_image_project_through_every_phase(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with media_net(simulated()) as net, media_client(net) as sogni:
        assert await sogni.projects.wait_for_models() == {
            IMAGE_MODEL: 1,
            "z_image_turbo_bf16": 1,
            VIDEO_MODEL: 1,
            AUDIO_MODEL: 1,
        }
        async with await sogni.projects.create(
            type="image",
            model=IMAGE_MODEL,
            prompt="a red fox in snow",
            width=256,
            height=320,
            steps=3,
            seed=42,
        ) as project:
            assert project.status == "pending"
            updates: list[ProjectUpdate] = [u async for u in project.progress()]
            results = await project.wait()
        kinds = [type(u).__name__ for u in updates]
        assert kinds == [
            "Queued",
            "Processing",  # jobStarted
            "Processing",
            "Processing",
            "Processing",
            "RenderCompleted",
            "Completed",
        ]
        queued = updates[0]
        assert isinstance(queued, Queued)
        assert queued.position == 1
        steps = [(u.step, u.step_count, u.percent) for u in updates if isinstance(u, Processing)]
        assert steps == [(0, None, 0.0), (1, 3, 33.333), (2, 3, 66.667), (3, 3, 100.0)]
        assert project.status == "completed"
        assert project.done
        assert project.error is None
        assert len(results) == 1
        result = results[0]
        assert result.project_id == project.id
        assert result.seed == 42
        assert result.content_type == "image/png"
        final = updates[-1]
        assert isinstance(final, Completed)
        assert [r.render_id for r in final.results] == [result.render_id]
        rendered = updates[-2]
        assert isinstance(rendered, RenderCompleted)
        assert rendered.result is result
        data = await result.read()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert image.size == (256, 320)
        assert "http" not in repr(result)  # no signed URL in reprs
        assert_no_client_state(sogni)
        assert_no_live_project(net)
        assert not net.errors


async def test_number_of_media_renders_and_saving_them(tmp_path: Path) -> None:
    # Real time (saving runs file I/O in threads, which a MockClock would jump over); the
    # renders are tiny and unpaced.
    worker = simulated(capacity=2, seconds_per_step=0)
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await sogni.projects.create(
            type="image",
            model=IMAGE_MODEL,
            prompt="four foxes",
            number_of_media=4,
            width=256,
            height=256,
            steps=2,
            seed=7,
            output_format="jpg",
        ) as project:
            results = await project.wait()
        assert len(results) == 4
        assert sorted(r.seed for r in results) == [7, 8, 9, 10]  # type: ignore[type-var]
        assert len({r.render_id for r in results}) == 4
        for result in results:
            path = await result.save(tmp_path)
            assert path.suffix == ".jpg"
            with Image.open(path) as image:
                assert image.format == "JPEG"
                assert image.size == (256, 256)
        assert_no_client_state(sogni)
        assert_no_live_project(net)


@pytest.mark.parametrize(
    ("kind", "model", "options", "content_type"),
    [
        (
            "video",
            VIDEO_MODEL,
            {"duration": 1, "fps": 16, "width": 480, "height": 480},
            "video/mp4",
        ),
        ("audio", AUDIO_MODEL, {"duration": 10, "output_format": "wav", "steps": 4}, "audio/wav"),
    ],
)
async def test_video_and_audio_projects_give_downloadable_media(
    autojump_clock: trio.testing.MockClock,
    kind: str,
    model: str,
    options: dict[str, Any],
    content_type: str,
) -> None:
    async with media_net(simulated()) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await sogni.projects.create(
            type=kind,  # type: ignore[arg-type]
            model=model,
            prompt="calm",
            **options,
        ) as project:
            (result,) = await project.wait()
        assert result.media_type == kind
        assert result.content_type == content_type
        data = await result.read()
        if kind == "video":
            assert data[4:8] == b"ftyp"
        else:
            assert data[:4] == b"RIFF"
            assert data[8:12] == b"WAVE"
        assert_no_live_project(net)


BAD_OPTIONS = [
    ({"model": "no-such-model"}, "unknown media model"),
    ({"steps": 99}, "steps 99 is out of range"),
    ({"type": "video"}, "makes image, not video"),
    ({"sampler": "no-such-sampler"}, "is not allowed"),
    ({"number_of_media": 17}, "number_of_media must be between 1 and 16"),
    ({"width": 300}, "width and height must be given together"),
    ({"seed": -1}, "seed must be between"),
    ({"guidance": float("nan")}, "finite"),
    ({"no_such_option": 1}, "unknown project option"),
    ({"prompt": "\ud800"}, "lone surrogate"),
    ({"starting_image": b"not an image"}, "not a supported type"),
]


@pytest.mark.parametrize(("change", "message"), BAD_OPTIONS)
async def test_invalid_options_are_refused_with_nothing_sent(
    autojump_clock: trio.testing.MockClock, change: dict[str, object], message: str
) -> None:
    async with media_net(simulated()) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        before = net.frames_received
        arguments: dict[str, object] = {
            "type": "image",
            "model": IMAGE_MODEL,
            "prompt": "a fox",
            **change,
        }
        with pytest.raises(InvalidRequestError, match=message):
            await sogni.projects.create(**arguments)  # type: ignore[arg-type]
        assert net.frames_received == before
        assert not [r for r in net.http_requests if "uploadUrl" in r.path]
        assert_no_client_state(sogni)
        assert net._projects.statistics().live_projects == 0


async def test_events_through_subscribe_and_on(autojump_clock: trio.testing.MockClock) -> None:
    async with media_net(simulated()) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        seen: list[str] = []
        remove = sogni.projects.on("project", lambda event: seen.append(event.type))  # type: ignore[union-attr]
        async with sogni.projects.subscribe("job") as events:
            async with await sogni.projects.create(
                type="image", model=IMAGE_MODEL, prompt="fox", width=256, height=256, steps=2
            ) as project:
                await project.wait()
            kinds = [(await events.receive()).type for _ in range(4)]  # type: ignore[union-attr]
            assert events.dropped == 0
        remove()
        assert seen == ["queued", "completed"]
        assert kinds == ["started", "progress", "progress", "completed"]
        with pytest.raises(ValueError, match="unknown"):
            sogni.projects.on("token", lambda event: None)  # type: ignore[arg-type]


async def test_a_failed_render_and_a_failed_project_raise_project_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_sogni.localnet._media._render import FailRender

    worker = simulated(faults=lambda spec: FailRender(at_step=1, message="boom"))
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        net._projects.retry_budget = 0
        async with await sogni.projects.create(
            type="image", model=IMAGE_MODEL, prompt="fox", width=256, height=256, steps=2
        ) as project:
            with pytest.raises(ProjectError) as caught:
                await project.wait()
        error = caught.value
        assert error.project_id == project.id
        assert error.code == "genfailure"
        assert project.status == "failed"
        assert len(project.render_errors) == 1
        assert project.render_errors[0].img_id is not None
        assert_no_client_state(sogni)
        assert_no_live_project(net)


def test_the_public_names_exist() -> None:
    for name in ("Project", "ProjectsAPI", "MediaResult", "ProjectOptions", "Failed"):
        assert hasattr(trio_sogni, name)


async def test_a_retried_render_still_delivers_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w", fail_attempts=1)
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with sogni.projects.subscribe("job") as events:
            async with await sogni.projects.create(
                type="image", model=IMAGE_MODEL, prompt="fox", steps=2
            ) as project:
                (result,) = await project.wait()
            kinds = [(await events.receive()).type for _ in range(3)]  # type: ignore[union-attr]
        assert kinds == ["started", "retry", "started"]
        assert len(worker.specs) == 2
        assert result.render_id == project.results[0].render_id
        assert await result.read()
        assert_no_live_project(net)


async def test_a_render_withheld_by_the_safety_filter_has_no_media(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with media_net(ScriptedMediaWorker("w", nsfw=True)) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await sogni.projects.create(
            type="image", model=IMAGE_MODEL, prompt="fox", steps=2
        ) as project:
            (result,) = await project.wait()
        assert result.nsfw
        with pytest.raises(ProjectError) as caught:
            await result.read()
        assert caught.value.nsfw
        assert caught.value.img_id == result.render_id


async def test_a_starting_image_is_uploaded_before_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(picture, "PNG")
    async with media_net(ScriptedMediaWorker("w")) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await sogni.projects.create(
            type="image",
            model=IMAGE_MODEL,
            prompt="fox",
            steps=2,
            starting_image=picture.getvalue(),
            starting_image_strength=0.3,
        ) as project:
            await project.wait()
        # Uploaded (the PUT to the signed URL), then used and discarded with the finished project.
        assert [
            r.method for r in net.http_requests if r.path.startswith("/localnet/media/uploads/")
        ] == ["PUT"]
        assert net._media_storage.upload_roles(net.account.id, project.id) == []
        request = net._projects.finished[(net.account.id, project.id.upper())].request
        assert request.key_frames[0].has_starting_image is True
        assert "/v1/image/uploadUrl" in [r.path for r in net.http_requests]


async def test_results_live_under_the_given_data_dir_and_outlive_the_network(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with media_net(simulated(), data_dir=tmp_path) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await sogni.projects.create(
            type="image", model=IMAGE_MODEL, prompt="kept", width=256, height=256, steps=2
        ) as project:
            (result,) = await project.wait()
        data = await result.read()
    stored = [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [data]  # the one result, kept after the stop
