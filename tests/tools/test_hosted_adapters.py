"""``sogni.chat.tools``: the hosted tools other than the six direct media tools run through
``chat.hosted.execute_tool`` (``POST /v1/creative-agent/tools/execute``) against localnet, in
virtual time, on in-memory connections.

localnet runs the image adapters (``apply_style``, ``restore_photo``, ``refine_result``,
``change_angle``, ``animate_photo``) as media projects on the media worker TEST DOUBLE
(localnet's SimulatedMediaWorker, wrapped by ``RecordingWorker`` to record what it renders): it
draws real, decodable media whose pixels depend on the input image, so a test can tell that an
adapter really used its source.
"""

from __future__ import annotations

import base64
import io
import json
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
from trio_sogni import MediaContext, ToolResult
from trio_sogni.localnet import LocalNetwork
from trio_sogni.localnet._media._render import FailRender, RenderSpec, SimulatedMediaWorker
from trio_sogni.localnet._workers._script import Text, ToolCall as ScriptedCall
from trio_sogni.protocol import FunctionCall, ToolCall

STEP = 0.1  # virtual seconds per render step
IMAGE = {"prompt": "a red fox in snow", "width": 256, "height": 256, "seed": 7}


class RecordingWorker(SimulatedMediaWorker):
    """The SimulatedMediaWorker TEST DOUBLE, recording every spec it renders."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("seconds_per_step", STEP)
        kwargs.setdefault("encode_in_thread", False)
        super().__init__(name, **kwargs)
        self.specs: list[RenderSpec] = []
        self.rendering = trio.Event()

    async def render(self, spec: RenderSpec, on_step: Any) -> Any:  # type: ignore[override]
        self.specs.append(spec)
        self.rendering.set()
        return await super().render(spec, on_step)


@asynccontextmanager
async def tools_net(
    step: float = STEP, **options: Any
) -> AsyncIterator[tuple[LocalNetwork, trio_sogni.SogniClient, list[RecordingWorker]]]:
    doubles = [RecordingWorker("sim-0", seconds_per_step=step)]
    options.setdefault("models", [MODEL])
    async with media_net(*doubles, **options) as net, media_client(net) as sogni:
        yield net, sogni, doubles


def call(name: str, call_id: str = "c1", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name=name, arguments=json.dumps(arguments)))


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def mean_rgb(data: bytes) -> tuple[float, float, float]:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((1, 1), Image.Resampling.BOX)
    red, green, blue = image.getpixel((0, 0))  # type: ignore[misc]
    return (float(red), float(green), float(blue))


def decoded(kind: str, data: bytes) -> Any:
    """Decode media bytes for real: an image's size, a video's frame count."""
    if kind == "image":
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.size
    with av.open(io.BytesIO(data), mode="r") as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def content(result: ToolResult) -> dict[str, Any]:
    return json.loads(result.content)


STYLE = "an oil painting in the manner of Van Gogh, thick brushstrokes"


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def test_apply_style_uses_the_contexts_image(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (net, sogni, (worker,)):
        outputs: list[bytes] = []
        for color in ((255, 0, 0), (0, 0, 255)):
            context = MediaContext()
            context.add("image", png(color))
            result = await sogni.chat.tools.execute(
                call("apply_style", prompt=STYLE), media_context=context
            )
            assert result.success, result.error
            body = content(result)
            assert body["success"] is True
            assert body["tool"] == "apply_style"
            assert body["media_type"] == "image"
            assert body["urls"] == result.result_urls
            assert body["result"]["urls"] == result.result_urls
            assert body["result"]["model"] in sogni.projects.media_models
            (url,) = result.result_urls
            (item,) = context.results["image"]
            assert item.url == url
            assert item.result is not None
            data = await item.result.read()
            assert decoded("image", data)
            outputs.append(data)
        red, blue = (mean_rgb(data) for data in outputs)
        assert red[0] > blue[0]
        assert blue[2] > red[2]
        assert [spec.inputs["startingImage"].data for spec in worker.specs] == [
            png((255, 0, 0)),
            png((0, 0, 255)),
        ]
        assert [spec.strength for spec in worker.specs] == [0.6, 0.6]
        assert all(spec.prompt == STYLE for spec in worker.specs)
        assert_no_live_project(net)
        assert_no_client_state(sogni)


async def test_restore_photo_works_on_the_original_upload_even_after_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        original = png((10, 200, 10))
        context = MediaContext()
        context.add("image", original)
        made = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE), media_context=context
        )
        assert made.success, made.error
        restored = await sogni.chat.tools.execute(
            call("restore_photo", prompt="remove the scratches", numberOfVariations=2),
            media_context=context,
        )
        assert restored.success, restored.error
        assert len(restored.result_urls) == 2
        _, restore_spec, _ = worker.specs
        assert restore_spec.inputs["startingImage"].data == original
        assert restore_spec.strength == 0.25
        assert [item.url for item in context.results["image"][1:]] == restored.result_urls
        first = context.results["image"][1].result
        assert first is not None
        # close to the green photo: the low strength keeps most of it
        red, green, blue = mean_rgb(await first.read())
        assert green > red
        assert green > blue


async def test_refine_result_takes_an_earlier_result_by_index(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        first = await sogni.chat.tools.execute(
            call("generate_image", **IMAGE, numberOfVariations=2), media_context=context
        )
        assert first.success, first.error
        refined = await sogni.chat.tools.execute(
            call("refine_result", prompt="warmer light", sourceImageIndex=1),
            media_context=context,
        )
        assert refined.success, refined.error
        second = context.results["image"][1].result
        assert second is not None
        assert worker.specs[-1].inputs["startingImage"].data == await second.read()
        angled = await sogni.chat.tools.execute(
            call("change_angle", description="left side view eye-level shot close-up"),
            media_context=context,
        )
        assert angled.success, angled.error
        latest = context.results["image"][2].result  # the refined image: the latest result
        assert latest is not None
        spec = worker.specs[-1]
        assert spec.inputs["startingImage"].data == await latest.read()
        assert spec.prompt == "the same subject, left side view eye-level shot close-up"


async def test_restore_then_animate_chains_in_the_tool_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: Any) -> Any:
        tool_messages = [m for m in request.messages if m.role == "tool"]
        if not tool_messages:
            return [ScriptedCall("restore_photo", {"prompt": "restore it"}, id="restore")]
        if len(tool_messages) == 1:
            return [ScriptedCall("animate_photo", {"prompt": "she smiles", "duration": 2})]
        return [Text("Here it is, restored and animated.")]

    photo = png((200, 30, 30))
    async with tools_net(script=script) as (net, sogni, (worker,)):
        context = MediaContext()
        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "restore this photo, then animate it"},
                        {"type": "image_url", "image_url": {"url": data_uri(photo)}},
                    ],
                }
            ],
            media_context=context,
            auto_execute_tools=True,
        )
        assert result.content == "Here it is, restored and animated."
        assert result.tool_history is not None
        (restored,) = result.tool_history[0].tool_results
        (animated,) = result.tool_history[1].tool_results
        assert restored.success, restored.error
        assert animated.success, animated.error
        assert content(animated)["media_type"] == "video"
        restore_spec, video_spec = worker.specs
        assert restore_spec.inputs["startingImage"].data == photo
        assert video_spec.media_type == "video"
        made = context.results["image"][0].result
        assert made is not None
        # the video's reference image is exactly the image the first round restored
        assert video_spec.inputs["referenceImage"].data == await made.read()
        (video,) = context.results["video"]
        assert video.url == animated.result_urls[0]
        assert video.result is not None
        assert decoded("video", await video.result.read()) > 0
        assert_no_live_project(net)


async def test_an_unsupported_tool_is_an_error_result_with_the_servers_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        context.add("video", b"\x00\x00\x00\x18ftypmp42" + bytes(64))
        result = await sogni.chat.tools.execute(
            call("stitch_video", videoIndices=[-1]), media_context=context
        )
        assert not result.success
        assert "not supported by localnet" in (result.error or "")
        assert content(result) == {"success": False, "error": result.error}
        assert worker.specs == []


@pytest.mark.parametrize(
    ("name", "arguments", "argument"),
    [
        ("apply_style", {}, "prompt"),
        ("apply_style", {"prompt": "x", "scale": 5}, "scale"),
        ("change_angle", {"description": 3}, "description"),
        ("animate_photo", {"prompt": "x", "ratio": "2:1"}, "ratio"),
    ],
)
async def test_schema_invalid_arguments_are_an_error_result_before_any_request(
    autojump_clock: trio.testing.MockClock, name: str, arguments: dict[str, Any], argument: str
) -> None:
    async with tools_net() as (net, sogni, _workers):
        context = MediaContext()
        context.add("image", png((1, 2, 3)))
        sent: list[str] = []
        original = sogni.chat.hosted.execute_tool

        async def spy(tool: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(tool)
            return await original(tool, *args, **kwargs)

        sogni.chat.tools._hosted.execute_tool = spy  # type: ignore[method-assign,union-attr]
        result = await sogni.chat.tools.execute(call(name, **arguments), media_context=context)
        assert not result.success
        assert (result.error or "").startswith(f"invalid argument {argument}")
        assert sent == []
        del net


async def test_a_tool_without_its_input_is_an_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        styled, restored = await sogni.chat.tools.execute_all(
            [call("apply_style", "s", prompt=STYLE), call("restore_photo", "r", prompt="x")]
        )
        assert not styled.success
        assert styled.error == "apply_style needs a source image; the conversation has none"
        assert not restored.success
        assert "original uploaded photo" in (restored.error or "")
        out_of_range = await sogni.chat.tools.execute(
            call("refine_result", prompt="x", sourceImageIndex=3)
        )
        assert not out_of_range.success
        assert "sourceImageIndex=3 is out of range" in (out_of_range.error or "")
        assert worker.specs == []


async def test_cancelling_a_hosted_adapter_cancels_its_project_on_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # slow render steps: the server notices a gone client at its next heartbeat (2 s)
    async with tools_net(step=5.0) as (net, sogni, (worker,)):
        context = MediaContext()
        context.add("image", png((9, 9, 9)))
        outcome: list[ToolResult] = []

        async def run() -> None:
            outcome.append(
                await sogni.chat.tools.execute(
                    call("animate_photo", prompt="waves", duration=5), media_context=context
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await worker.rendering.wait()
            await trio.sleep(1)  # the client is reading the answer's body
            nursery.cancel_scope.cancel()
        assert outcome == []
        assert len(worker.specs) == 1
        with trio.fail_after(5):
            await net.wait_until(
                lambda: [p.status for p in net._projects.finished.values()] == ["cancelled"]
            )
        assert_no_live_project(net)
        assert context.results["video"] == []


async def test_a_project_failing_after_admission_is_an_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (net, sogni, (worker,)):
        worker.faults = lambda spec: FailRender(at_step=1, message="the GPU caught fire")
        context = MediaContext()
        context.add("image", png((9, 9, 9)))
        result = await sogni.chat.tools.execute(
            call("refine_result", prompt="x"), media_context=context
        )
        assert not result.success
        assert "the GPU caught fire" in (result.error or "")
        assert content(result) == {"success": False, "error": result.error}
        assert context.results["image"] == []
        assert_no_live_project(net)


async def test_a_direct_tool_edits_what_a_hosted_tool_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tools_net() as (_net, sogni, (worker,)):
        context = MediaContext()
        context.add("image", png((200, 200, 0)))
        styled = await sogni.chat.tools.execute(
            call("apply_style", prompt=STYLE), media_context=context
        )
        assert styled.success, styled.error
        edited = await sogni.chat.tools.execute(
            call("edit_image", "c2", **IMAGE, sourceImageIndex=0), media_context=context
        )
        assert edited.success, edited.error
        made = context.results["image"][0].result
        assert made is not None
        # the hosted result is read back through the client and uploaded as the edit's input
        assert worker.specs[1].inputs["contextImage1"].data == await made.read()
        assert [item.url for item in context.results["image"]] == [
            *styled.result_urls,
            *edited.result_urls,
        ]
