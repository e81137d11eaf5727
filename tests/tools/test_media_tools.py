"""``sogni.chat.tools``: the six direct media tools run as media projects against localnet, in
virtual time, on in-memory connections.

The media worker is a TEST DOUBLE (localnet's SimulatedMediaWorker, wrapped to record what it
was asked to render; see tests/projectnet.py): it draws real, decodable media whose pixels
depend on its inputs, so a test can tell that an edit really used its source image.
"""

from __future__ import annotations

import base64
import io
import json
import math
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import av
import pytest
import trio
import trio.testing
from helpers import MODEL
from PIL import Image
from projectnet import assert_no_client_state, assert_no_live_project, media_client, media_net

import trio_sogni
from trio_sogni import MediaContext, ToolProgress, ToolResult
from trio_sogni.localnet import LocalNetwork
from trio_sogni.localnet._media._render import RenderSpec, SimulatedMediaWorker
from trio_sogni.localnet._workers._script import Text, ToolCall as ScriptedCall
from trio_sogni.protocol import FunctionCall, ToolCall

STEP = 0.1  # virtual seconds per render step


class RecordingWorker(SimulatedMediaWorker):
    """The SimulatedMediaWorker TEST DOUBLE, recording every spec it renders."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("seconds_per_step", STEP)
        kwargs.setdefault("encode_in_thread", False)
        super().__init__(name, **kwargs)
        self.specs: list[RenderSpec] = []

    async def render(self, spec: RenderSpec, on_step: Any) -> Any:  # type: ignore[override]
        self.specs.append(spec)
        return await super().render(spec, on_step)


@asynccontextmanager
async def tools_net(
    workers: int = 1, **options: Any
) -> AsyncIterator[tuple[LocalNetwork, trio_sogni.SogniClient, list[RecordingWorker]]]:
    doubles = [RecordingWorker(f"sim-{i}") for i in range(workers)]
    options.setdefault("models", [MODEL])
    async with media_net(*doubles, **options) as net, media_client(net) as sogni:
        yield net, sogni, doubles


def call(name: str, call_id: str = "c1", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=json.dumps(arguments)))


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def wav(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(
            b"".join(
                int(8000 * math.sin(i / 10)).to_bytes(2, "little", signed=True)
                for i in range(int(8000 * seconds))
            )
        )
    return buffer.getvalue()


def mean_rgb(data: bytes) -> tuple[float, float, float]:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1), Image.Resampling.BOX)
    red, green, blue = image.getpixel((0, 0))  # type: ignore[misc]
    return (float(red), float(green), float(blue))


def decoded(kind: str, data: bytes) -> Any:
    """Decode media bytes for real: an image's size, a video's frame count, an audio's
    duration in samples."""
    if kind == "image":
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.size
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        return sum(1 for _ in container.decode(stream))


def content(result: ToolResult) -> dict[str, Any]:
    return json.loads(result.content)


IMAGE = {"prompt": "a red fox in snow", "width": 256, "height": 256, "seed": 7}
VIDEO = {"prompt": "waves", "width": 480, "height": 480, "duration": 2}


# --- each tool end to end --------------------------------------------------------------------


async def test_generate_image_end_to_end(autojump_clock: trio.testing.MockClock) -> None:
    async with tools_net() as (net, sogni, (worker,)):
        context = MediaContext()
        result = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE, numberOfVariations=2), media_context=context
        )
        assert result.success, result.error
        body = content(result)
        assert body["success"] is True
        assert body["media_type"] == "image"
        assert body["model"] in sogni.projects.media_models
        assert body["prompt"] == IMAGE["prompt"]
        assert body["urls"] == result.result_urls
        assert len(result.result_urls) == 2
        assert [spec.width for spec in worker.specs] == [256, 256]
        (first, second) = context.results["image"]
        assert first.result is not None
        assert second.result is not None
        assert decoded("image", await first.result.read()) == (256, 256)
        assert await first.result.read() != await second.result.read()
        assert_no_live_project(net)
        assert_no_client_state(sogni)


async def test_number_of_variations_is_clamped(autojump_clock: trio.testing.MockClock) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        result = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE, numberOfVariations=0.2)
        )
        assert result.success, result.error
        assert len(result.result_urls) == 1
        result = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE, numberOfVariations=40)
        )
        assert result.success, result.error
        assert len(result.result_urls) == 16
        assert len(worker.specs) == 17


async def test_edit_image_really_uses_its_source(autojump_clock: trio.testing.MockClock) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        outputs: list[bytes] = []
        for color in ((255, 0, 0), (0, 0, 255)):
            context = MediaContext()
            context.add("image", png(color))
            result = await sogni.chat.tools.execute(
                call("edit_image", **IMAGE, sourceImageIndex=-1), media_context=context
            )
            assert result.success, result.error
            (item,) = context.results["image"]
            assert item.result is not None
            outputs.append(await item.result.read())
        red, blue = (mean_rgb(data) for data in outputs)
        assert red != blue
        assert red[0] > blue[0]
        assert blue[2] > red[2]
        assert [spec.inputs["contextImage1"].data for spec in worker.specs] == [
            png((255, 0, 0)),
            png((0, 0, 255)),
        ]


async def test_generate_video_end_to_end_from_a_generated_image(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        image = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE), media_context=context
        )
        assert image.success, image.error
        video = await sogni.chat.tools.execute(
            call("generate_video", "c2", **VIDEO, referenceImageIndices=[0]),
            media_context=context,
        )
        assert video.success, video.error
        assert content(video)["media_type"] == "video"
        (item,) = context.results["video"]
        assert item.result is not None
        assert decoded("video", await item.result.read()) > 1
        image_item = context.results["image"][0]
        assert image_item.result is not None
        assert worker.specs[1].inputs["referenceImage"].data == await image_item.result.read()


async def test_sound_to_video_uses_the_uploaded_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        context.add("audio", wav())
        context.add("image", png((0, 200, 0)))
        result = await sogni.chat.tools.execute(
            call("sound_to_video", **VIDEO, audioSourceIndex=0, sourceImageIndex=-1),
            media_context=context,
        )
        assert result.success, result.error
        (item,) = context.results["video"]
        assert item.result is not None
        assert decoded("video", await item.result.read()) > 1
        (spec,) = worker.specs
        assert spec.inputs["referenceAudio"].data == wav()
        assert spec.inputs["referenceImage"].data == png((0, 200, 0))


async def test_video_to_video_transforms_the_latest_video(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        first = await sogni.chat.tools.execute(
            call("generate_video", **VIDEO), media_context=context
        )
        assert first.success, first.error
        result = await sogni.chat.tools.execute(
            call("video_to_video", "c2", **VIDEO), media_context=context
        )
        assert result.success, result.error
        source, made = context.results["video"]
        assert source.result is not None
        assert made.result is not None
        assert worker.specs[1].inputs["referenceVideo"].data == await source.result.read()
        assert decoded("video", await made.result.read()) > 1


async def test_generate_music_end_to_end(autojump_clock: trio.testing.MockClock) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        result = await sogni.chat.tools.execute(
            call("generate_music", prompt="lo-fi beat", duration=10, bpm=90, model="turbo"),
            media_context=context,
        )
        assert result.success, result.error
        body = content(result)
        assert body["media_type"] == "audio"
        assert body["model"] == "ace_step_1.5_turbo"
        (item,) = context.results["audio"]
        assert item.result is not None
        assert decoded("audio", await item.result.read()) > 0
        assert worker.specs[0].bpm == 90


# --- the model choice ------------------------------------------------------------------------


async def test_the_model_with_the_most_workers_is_chosen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    workers = [
        RecordingWorker("flux-1", models=["flux1-schnell-fp8"]),
        RecordingWorker("z-1", models=["z_image_turbo_bf16"]),
        RecordingWorker("z-2", models=["z_image_turbo_bf16"]),
    ]
    async with media_net(*workers) as _net, media_client(_net) as sogni:
        result = await sogni.chat.tools.execute(call("generate_image", **IMAGE))
        assert content(result)["model"] == "z_image_turbo_bf16"
        # a named (aliased) model wins when available
        result = await sogni.chat.tools.execute(call("generate_image", **IMAGE, model="z-turbo"))
        assert content(result)["model"] == "z_image_turbo_bf16"


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("generate_image", {}, "prompt: is required"),
        ("generate_image", {"prompt": 5}, "prompt: must be string"),
        ("generate_image", {"prompt": "x", "width": "big"}, "width: must be number"),
        ("generate_image", {"prompt": "x", "model": "nope"}, "model: must be one of"),
        ("generate_image", {"prompt": "x", "loras": []}, "loras: must have at least 1"),
        ("generate_image", {"prompt": "x", "loras": [""]}, "loras[0]: must be at least 1"),
        ("generate_music", {"prompt": "x", "duration": 5}, "duration: must be at least 10"),
        ("generate_music", {"prompt": "x", "timesig": 5}, "timesig: must be one of"),
        ("sound_to_video", {"prompt": "x"}, "sound_to_video needs a source audio"),
        (
            "edit_image",
            {"prompt": "x", "sourceImageIndex": 3},
            "sourceImageIndex=3 is out of range",
        ),
        ("video_to_video", {"prompt": "x"}, "video_to_video needs a source video"),
        ("generate_video", {"prompt": "x", "referenceImageIndices": [0, 4]}, "out of range"),
        ("generate_image", {"prompt": "x", "source_image_url": "/etc/passwd"}, "data: URI"),
    ],
)
async def test_bad_arguments_are_error_results_naming_the_argument(
    autojump_clock: trio.testing.MockClock, name: str, arguments: dict[str, Any], expected: str
) -> None:
    async with tools_net() as (net, sogni, (worker,)):
        context = MediaContext()
        context.add("image", png((1, 2, 3)))
        result = await sogni.chat.tools.execute(call(name, **arguments), media_context=context)
        assert not result.success
        assert result.error is not None
        assert expected in result.error
        assert content(result) == {"success": False, "error": result.error}
        assert result.result_urls == []
        assert worker.specs == []
        assert not net._projects.finished


async def test_arguments_that_are_not_json_are_an_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, _workers):
        bad = ToolCall(id="c1", function=FunctionCall(name="generate_image", arguments="{"))
        result = await sogni.chat.tools.execute(bad)
        assert not result.success
        assert "not valid JSON" in (result.error or "")


# --- execute_all: concurrency, progress, bounds, cancel --------------------------------------


async def test_execute_all_runs_media_calls_concurrently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net(workers=4) as (_net, sogni, _workers):
        start = trio.current_time()
        (one,) = await sogni.chat.tools.execute_all([call("generate_image", **IMAGE)])
        single = trio.current_time() - start
        assert one.success, one.error
        calls = [call("generate_image", f"c{i}", **IMAGE) for i in range(4)]
        start = trio.current_time()
        results = await sogni.chat.tools.execute_all(calls)
        together = trio.current_time() - start
        assert [r.tool_call_id for r in results] == ["c0", "c1", "c2", "c3"]
        assert all(r.success for r in results)
        assert single > 0
        assert together < 1.5 * single  # four calls take about the time of one, not four


async def test_progress_reports_each_call_by_callback_and_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, str]] = []

    def on_progress(tool_call: ToolCall, progress: ToolProgress) -> None:
        seen.append((tool_call.id, progress.status))

    async with tools_net(workers=2) as (_net, sogni, _workers):
        send, receive = trio.open_memory_channel[ToolProgress](100)
        calls = [call("generate_image", "a", **IMAGE), call("generate_image", "b", prompt=5)]
        async with send, receive:
            results = await sogni.chat.tools.execute_all(
                calls, on_tool_progress=on_progress, progress=send
            )
            reports = []
            while True:
                try:
                    reports.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
        assert [r.success for r in results] == [True, False]
        statuses = [r.status for r in reports if r.tool_call_id == "a"]
        assert statuses[:2] == ["creating", "queued"]
        assert "processing" in statuses
        assert statuses[-1] == "completed"
        assert reports[-1].urls == tuple(results[0].result_urls)
        percents = [r.percent for r in reports if r.status == "processing"]
        assert percents == sorted(percents)
        assert 0 < percents[-1] <= 100
        assert [s for i, s in seen if i == "a"] == statuses
        assert [s for i, s in seen if i == "b"] == []  # refused before creating anything


async def test_at_most_eight_media_calls_run_per_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net(workers=2) as (_net, sogni, (w1, w2)):
        calls = [call("generate_image", f"c{i}", **IMAGE) for i in range(9)]
        results = await sogni.chat.tools.execute_all(calls)
        assert [r.success for r in results] == [True] * 8 + [False]
        assert "at most 8" in (results[8].error or "")
        assert len(w1.specs) + len(w2.specs) == 8


async def test_cancelling_execute_all_cancels_the_projects_on_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net(workers=2) as (net, sogni, _workers):
        send, receive = trio.open_memory_channel[ToolProgress](100)
        calls = [call("generate_video", f"c{i}", **VIDEO) for i in range(2)]
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: sogni.chat.tools.execute_all(calls, progress=send)  # type: ignore[arg-type,return-value]
                )
                processing: set[str] = set()
                async for report in receive:
                    if report.status == "processing":
                        processing.add(report.tool_call_id)
                    if processing == {"c0", "c1"}:
                        scope.cancel()
        assert scope.cancelled_caught
        await net.wait_until(
            lambda: sum(1 for p in net._projects.finished.values() if p.status == "cancelled") == 2
        )
        assert_no_live_project(net)
        assert_no_client_state(sogni)


# --- the automatic tool loop -------------------------------------------------------------------


async def test_a_two_round_loop_makes_a_video_of_the_first_rounds_image(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: Any) -> Any:
        tool_messages = [m for m in request.messages if m.role == "tool"]
        if not tool_messages:
            return [ScriptedCall("generate_image", IMAGE, id="img")]
        if len(tool_messages) == 1:
            return [
                ScriptedCall("generate_video", {**VIDEO, "referenceImageIndices": [0]}, id="vid")
            ]
        return [Text("Here is your video.")]

    async with tools_net(script=script) as (_net, sogni, (worker,)):
        context = MediaContext()
        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "draw a fox, then animate it"}],
            media_context=context,
            tools=[{"type": "function", "function": {"name": "generate_image", "parameters": {}}}],
            auto_execute_tools=True,
        )
        assert result.content == "Here is your video."
        assert result.tool_history is not None
        assert [r.round for r in result.tool_history] == [0, 1]
        (image,) = result.tool_history[0].tool_results
        (video,) = result.tool_history[1].tool_results
        assert image.success, image.error
        assert video.success, video.error
        assert content(video)["media_type"] == "video"
        image_spec, video_spec = worker.specs
        assert image_spec.media_type == "image"
        assert video_spec.media_type == "video"
        # the video's reference image is exactly the image the first round made
        made = context.results["image"][0].result
        assert made is not None
        assert video_spec.inputs["referenceImage"].data == await made.read()
        assert [len(context.results[kind]) for kind in ("image", "video")] == [1, 1]


async def test_the_loop_uses_the_conversations_image(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: Any) -> Any:
        if request.messages[-1].role == "tool":
            return [Text("done")]
        return [ScriptedCall("edit_image", {**IMAGE, "sourceImageIndex": -1})]

    source = png((250, 10, 10))
    uri = "data:image/png;base64," + base64.b64encode(source).decode()
    async with tools_net(script=script) as (_net, sogni, (worker,)):
        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "make it blue"},
                        {"type": "image_url", "image_url": {"url": uri}},
                    ],
                }
            ],
            auto_execute_tools=True,
        )
        assert result.content == "done"
        (spec,) = worker.specs
        assert spec.inputs["contextImage1"].data == source


# --- the synchronous hosted tools ----------------------------------------------------------------


async def test_synchronous_hosted_tools_run_through_the_hosted_api(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, _workers):
        arguments = {
            "prompt": "a cat on a roof",
            "target_output": "image_prompt",
            "destination_model": "sdxl",
        }
        enhance, refused, styled = await sogni.chat.tools.execute_all(
            [
                call("enhance_prompt", "e", **arguments),
                call("enhance_prompt", "r", prompt="x"),  # the server checks the arguments
                call("apply_style", "s", prompt="x"),
            ]
        )
        assert enhance.success, enhance.error
        body = content(enhance)
        assert body["success"] is True
        assert body["tool"] == "enhance_prompt"
        assert isinstance(body["result"], dict)
        assert not refused.success
        assert content(refused) == {"success": False, "error": refused.error}
        assert not styled.success  # runs through the hosted API, which needs a source image
        assert styled.error == "apply_style needs a source image; the conversation has none"


# --- review: media models awaited, mixed rounds, source_image_url ---------------------------------


async def test_a_call_made_before_any_media_worker_waits_for_the_models(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net(workers=0) as (net, sogni, _):
        worker = RecordingWorker("late")
        result: list[ToolResult] = []

        async def run() -> None:
            result.append(await sogni.chat.tools.execute(call("generate_image", **IMAGE)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            assert result == []  # waiting for a media model, not failing
            net._projects.add_worker(worker)
        (done,) = result
        assert done.success, done.error
        assert len(worker.specs) == 1


async def test_no_media_model_within_the_wait_is_an_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net(workers=0) as (_net, sogni, _):
        start = trio.current_time()
        result = await sogni.chat.tools.execute(call("generate_image", **IMAGE))
        assert not result.success
        assert "no image model is available" in (result.error or "")
        assert trio.current_time() - start >= 10.0


async def test_execute_all_sends_client_tools_to_on_tool_call_and_keeps_call_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handled: list[str] = []

    async def on_tool_call(tool_call: ToolCall) -> str:
        handled.append(tool_call.function.name)
        await trio.lowlevel.checkpoint()
        return "sunny"

    async with tools_net() as (_net, sogni, (worker,)):
        calls = [
            call("generate_image", "m1", **IMAGE),
            call("get_weather", "w1", city="Oslo"),
            call("generate_image", "m2", **IMAGE),
        ]
        results = await sogni.chat.tools.execute_all(calls, on_tool_call=on_tool_call)
        assert [r.tool_call_id for r in results] == ["m1", "w1", "m2"]
        assert [r.success for r in results] == [True, True, True]
        assert results[1].content == "sunny"
        assert handled == ["get_weather"]
        assert len(worker.specs) == 2


async def test_source_image_url_takes_a_result_of_the_context_or_a_data_uri(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        made = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE), media_context=context
        )
        assert made.success, made.error
        (url,) = made.result_urls
        (item,) = context.results["image"]
        assert item.result is not None
        generated = await item.result.read()
        source = png((0, 250, 0))
        data_uri = "data:image/png;base64," + base64.b64encode(source).decode()
        for given in (url, data_uri):
            edited = await sogni.chat.tools.execute(
                call("edit_image", **IMAGE, source_image_url=given), media_context=context
            )
            assert edited.success, edited.error
        assert [spec.inputs["contextImage1"].data for spec in worker.specs[1:]] == [
            generated,
            source,
        ]
