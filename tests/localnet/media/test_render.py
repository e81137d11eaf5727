"""The SimulatedMediaWorker test double: real, decodable, deterministic media; paced steps;
caps; fault injection."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace
from typing import Any

import av
import pytest
import trio
import trio.testing
from PIL import Image, ImageStat

from trio_sogni.localnet._media._render import (
    SIMULATED_LABEL,
    FailRender,
    FlagNSFW,
    HangRender,
    MediaInput,
    MediaLimits,
    MediaRenderError,
    MediaWorker,
    RenderedMedia,
    RenderRejected,
    RenderSpec,
    SimulatedMediaWorker,
)


class Steps:
    """Records ``on_step`` calls with the Trio time of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []

    async def __call__(self, step: int, count: int) -> None:
        self.calls.append((step, count, trio.current_time()))


def image(fmt: str = "png", **changes: Any) -> RenderSpec:
    spec = RenderSpec(
        media_type="image",
        model_id="flux1-schnell-fp8",
        prompt="a red fox in snow",
        seed=7,
        steps=4,
        width=320,
        height=192,
        output_format=fmt,
    )
    return replace(spec, **changes)


async def render(spec: RenderSpec, **worker: Any) -> RenderedMedia:
    return await SimulatedMediaWorker(**worker).render(spec, Steps())


def decode(media: RenderedMedia) -> Image.Image:
    picture = Image.open(io.BytesIO(media.data))
    picture.load()
    return picture


@pytest.mark.parametrize(("fmt", "pil"), [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")])
async def test_images_decode_at_the_requested_size_and_say_they_are_simulated(
    fmt: str, pil: str
) -> None:
    media = await render(image(fmt, width=333, height=201))
    picture = decode(media)
    assert picture.format == pil
    assert picture.size == (333, 201)
    assert (media.width, media.height, media.steps, media.seed) == (333, 201, 4, 7)
    assert (
        media.content_type == {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[fmt]
    )
    assert media.worker_name.startswith("simulated-media-worker-")
    if fmt == "png":
        assert picture.info["Software"] == SIMULATED_LABEL
    elif fmt == "jpg":
        assert picture.info["comment"] == SIMULATED_LABEL.encode()
    else:
        assert picture.getexif()[0x010E] == SIMULATED_LABEL


async def test_images_are_deterministic_and_depend_on_seed_and_prompt() -> None:
    first = await render(image())
    again = await render(image())
    other_seed = await render(image(seed=8))
    other_prompt = await render(image(prompt="a blue whale"))
    assert first.data == again.data
    assert len({first.data, other_seed.data, other_prompt.data}) == 3
    # Visibly different pictures, not just different metadata.
    a, b = decode(first).convert("RGB"), decode(other_seed).convert("RGB")
    assert a.tobytes() != b.tobytes()


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _mean(picture: Image.Image) -> tuple[float, float, float]:
    red, green, blue = ImageStat.Stat(picture.convert("RGB")).mean
    return red, green, blue


async def test_an_edit_blends_its_input_image() -> None:
    red = MediaInput(data=_png((255, 0, 0)), content_type="image/png")
    blue = MediaInput(data=_png((0, 0, 255)), content_type="image/png")
    plain = await render(image())
    on_red = await render(image(inputs={"contextImage1": red}, strength=0.25))
    on_red_again = await render(image(inputs={"contextImage1": red}, strength=0.25))
    on_blue = await render(image(inputs={"contextImage1": blue}, strength=0.25))
    assert on_red.data == on_red_again.data
    assert len({plain.data, on_red.data, on_blue.data}) == 3
    r_red, _, b_red = _mean(decode(on_red))
    r_blue, _, b_blue = _mean(decode(on_blue))
    # 75 % of every pixel is the input: the red input makes a red picture, the blue a blue one.
    assert r_red > 180 > b_red
    assert b_blue > 180 > r_blue


async def test_an_undecodable_or_huge_input_image_is_rejected() -> None:
    junk = MediaInput(data=b"not an image", content_type="image/png")
    with pytest.raises(RenderRejected, match="cannot be decoded"):
        await render(image(inputs={"startingImage": junk}))
    big = MediaInput(data=_png((1, 2, 3), (300, 300)), content_type="image/png")
    with pytest.raises(RenderRejected, match="over 10000 pixels"):
        await render(
            image(inputs={"startingImage": big}), limits=MediaLimits(max_input_pixels=10_000)
        )


async def test_video_is_h264_mp4_with_the_requested_frames_fps_and_size() -> None:
    spec = RenderSpec(
        media_type="video",
        model_id="wan_v2.2-14b-fp8_t2v_lightx2v",
        prompt="a fox running",
        seed=3,
        steps=2,
        width=160,
        height=96,
        frames=17,
        fps=16,
        output_format="mp4",
    )
    media = await render(spec)
    assert (media.frames, media.fps, media.duration) == (17, 16, 17 / 16)
    with av.open(io.BytesIO(media.data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 96)
        assert stream.average_rate is not None
        assert float(stream.average_rate) == 16
        assert container.metadata["comment"] == SIMULATED_LABEL
        frames = list(container.decode(video=0))
    assert len(frames) == 17
    assert frames[-1].time == pytest.approx(16 / 16)
    assert (await render(spec)).data == media.data
    assert (await render(replace(spec, seed=4))).data != media.data


async def test_video_frames_come_from_duration_and_start_from_the_input_image() -> None:
    white = MediaInput(data=_png((255, 255, 255)), content_type="image/png")
    spec = RenderSpec(
        media_type="video",
        model_id="m",
        prompt="p",
        width=64,
        height=64,
        duration=0.5,
        fps=8,
        output_format="mp4",
        strength=0.0,
        inputs={"startingImage": white},
    )
    media = await render(spec)
    assert media.frames == 4
    with av.open(io.BytesIO(media.data), mode="r") as container:
        first = next(iter(container.decode(video=0))).to_image()
    assert min(_mean(first)) > 200  # strength 0: the first frame is the (white) input


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "mp3"), ("wav", "pcm_s16le")])
async def test_audio_has_the_requested_duration(fmt: str, codec: str) -> None:
    spec = RenderSpec(
        media_type="audio",
        model_id="ace_step_1.5_turbo",
        prompt="a calm tune",
        seed=11,
        duration=2.5,
        output_format=fmt,
    )
    media = await render(spec)
    assert media.content_type == {"mp3": "audio/mpeg", "wav": "audio/wav"}[fmt]
    with av.open(io.BytesIO(media.data), mode="r") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name.startswith(codec)
        assert stream.codec_context.sample_rate == 44_100
        assert container.metadata["comment"] == SIMULATED_LABEL
        samples = sum(frame.samples for frame in container.decode(audio=0))
    # MP3 adds encoder delay and padding (< 2 frames of 1152 samples); WAV is exact.
    assert 2.5 * 44_100 <= samples <= 2.5 * 44_100 + (0 if fmt == "wav" else 2 * 1152 + 529)
    assert (await render(spec)).data == media.data
    assert (await render(replace(spec, seed=12))).data != media.data
    reference = MediaInput(data=b"ID3 some reference audio", content_type="audio/mpeg")
    with_reference = await render(replace(spec, inputs={"referenceAudio": reference}))
    assert with_reference.data != media.data


@pytest.mark.parametrize(
    "prompt", ["\ud800 a lone surrogate", "nul\x00 and \x1b", "🦊 中文 " * 50, ""]
)
@pytest.mark.parametrize(
    ("media_type", "fmt"), [("image", "png"), ("video", "mp4"), ("audio", "wav")]
)
async def test_any_prompt_text_renders(prompt: str, media_type: str, fmt: str) -> None:
    spec = RenderSpec(
        media_type=media_type,  # type: ignore[arg-type]
        model_id="m",
        prompt=prompt,
        width=64,
        height=64,
        frames=2,
        duration=0.05,
        output_format=fmt,
    )
    media = await render(spec)
    assert media.size > 0


async def test_steps_are_paced_in_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    steps = Steps()
    worker = SimulatedMediaWorker(seconds_per_step=0.5, encode_in_thread=False)
    start = trio.current_time()
    await worker.render(image(steps=3), steps)
    assert [(s, n) for s, n, _ in steps.calls] == [(1, 3), (2, 3), (3, 3)]
    assert [t - start for _, _, t in steps.calls] == [0.5, 1.0, 1.5]


@pytest.mark.deadline(3600)
async def test_paced_renders_take_no_real_time_under_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    steps = Steps()
    worker = SimulatedMediaWorker(seconds_per_step=30.0, encode_in_thread=False)
    media = await worker.render(image(steps=20), steps)
    assert decode(media).size == (320, 192)
    assert steps.calls[-1][2] == 600.0


@pytest.mark.parametrize(
    ("spec", "limits", "message"),
    [
        (image(width=5000, height=5000), MediaLimits(), "over the limit of 16777216 pixels"),
        (image(steps=300), MediaLimits(), "steps 300 is over the limit of 200"),
        (
            RenderSpec(
                media_type="video",
                model_id="m",
                prompt="p",
                width=64,
                height=64,
                frames=50,
                output_format="mp4",
            ),
            MediaLimits(max_video_frames=49),
            "50 video frames is over the limit of 49",
        ),
        (
            RenderSpec(
                media_type="video",
                model_id="m",
                prompt="p",
                width=65,
                height=64,
                frames=2,
                output_format="mp4",
            ),
            MediaLimits(),
            "even width and height",
        ),
        (
            RenderSpec(
                media_type="video",
                model_id="m",
                prompt="p",
                width=4096,
                height=4096,
                frames=2,
                output_format="mp4",
            ),
            MediaLimits(),
            "video frame of 4096x4096",
        ),
        (
            RenderSpec(
                media_type="video",
                model_id="m",
                prompt="p",
                width=64,
                height=64,
                frames=2,
                fps=121,
                output_format="mp4",
            ),
            MediaLimits(),
            "121 fps is over the limit of 120.0",
        ),
        (
            RenderSpec(
                media_type="audio", model_id="m", prompt="p", duration=601, output_format="mp3"
            ),
            MediaLimits(),
            "601 s of audio is over the limit of 600.0 s",
        ),
    ],
)
async def test_over_cap_specs_are_rejected_before_any_step(
    spec: RenderSpec, limits: MediaLimits, message: str
) -> None:
    steps = Steps()
    with pytest.raises(RenderRejected, match=message) as caught:
        await SimulatedMediaWorker(limits=limits).render(spec, steps)
    assert steps.calls == []
    assert caught.value.code == "invalid_render"
    assert not caught.value.is_from_worker


def test_specs_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="not a image format"):
        image("mp3")
    with pytest.raises(ValueError, match="unknown media type"):
        RenderSpec(media_type="3d", model_id="m", prompt="p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32-bit"):
        image(seed=2**32)
    with pytest.raises(ValueError, match="steps"):
        image(steps=0)
    with pytest.raises(ValueError, match="fps"):
        RenderSpec(
            media_type="video", model_id="m", prompt="p", fps=float("nan"), output_format="mp4"
        )
    inputs = {"startingImage": MediaInput(data=b"x", content_type="image/png")}
    spec = image(inputs=inputs)
    inputs.clear()
    assert list(spec.inputs) == ["startingImage"]  # a read-only copy
    with pytest.raises(TypeError):
        spec.inputs["x"] = MediaInput(data=b"", content_type="image/png")  # type: ignore[index]
    assert "data" not in repr(spec.inputs["startingImage"])


def test_a_worker_refuses_media_types_it_does_not_render() -> None:
    worker = SimulatedMediaWorker("w", media_types=frozenset({"audio"}))
    with pytest.raises(RenderRejected, match="w does not render image"):
        worker.check(image())
    assert "test double" in repr(worker)
    implements: MediaWorker = worker  # the protocol the projects manager uses
    assert implements.capacity == 1


async def test_fail_at_a_step() -> None:
    steps = Steps()
    worker = SimulatedMediaWorker(
        faults=lambda spec: FailRender("boom", "it broke", at_step=2, vendor_failure_category="x")
    )
    with pytest.raises(MediaRenderError) as caught:
        await worker.render(image(), steps)
    assert [s for s, _, _ in steps.calls] == [1, 2]
    assert (caught.value.code, caught.value.message) == ("boom", "it broke")
    assert caught.value.vendor_failure_category == "x"
    assert caught.value.is_from_worker


async def test_fail_after_the_last_step_and_flag_nsfw() -> None:
    worker = SimulatedMediaWorker(faults=lambda spec: FailRender(at_step=spec.steps))
    with pytest.raises(MediaRenderError, match="workerError"):
        await worker.render(image(), Steps())
    flagged = await SimulatedMediaWorker(faults=lambda spec: FlagNSFW()).render(image(), Steps())
    assert flagged.nsfw
    assert decode(flagged).size == (320, 192)
    assert not (await render(image())).nsfw


async def test_a_hung_render_ends_only_by_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    steps = Steps()
    worker = SimulatedMediaWorker(faults=lambda spec: HangRender(at_step=1), encode_in_thread=False)
    with trio.move_on_after(30) as scope:
        await worker.render(image(), steps)
    assert scope.cancelled_caught
    assert [s for s, _, _ in steps.calls] == [1]


async def test_a_threaded_encode_is_abandoned_on_cancel() -> None:
    worker = SimulatedMediaWorker()
    big = RenderSpec(
        media_type="video",
        model_id="m",
        prompt="p",
        width=640,
        height=480,
        frames=200,
        output_format="mp4",
    )
    with trio.move_on_after(0.05) as scope:
        await worker.render(big, Steps())
    assert scope.cancelled_caught


_WITHOUT_EXTRA = """
import sys
sys.modules["PIL"] = None  # as if the media extra were not installed
sys.modules["av"] = None
import trio
import trio_sogni.localnet
from trio_sogni.localnet._media._render import MediaDependencyError, RenderSpec, SimulatedMediaWorker

async def main():
    async def on_step(step, count):
        pass
    for media_type, fmt in (("image", "png"), ("audio", "mp3")):
        spec = RenderSpec(media_type=media_type, model_id="m", prompt="p", output_format=fmt)
        try:
            await SimulatedMediaWorker().render(spec, on_step)
        except MediaDependencyError as exc:
            print(exc)

trio.run(main)
"""


def test_localnet_runs_without_the_media_extra_and_names_it_when_needed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRA], check=True, capture_output=True, text=True
    )
    assert out.stdout.splitlines() == [
        "media rendering needs Pillow: pip install 'trio-sogni[media]'",
        "video and audio rendering need PyAV: pip install 'trio-sogni[media]'",
    ]
