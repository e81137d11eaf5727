"""The ``jobRequest`` builder: the captured official frames reproduced field by field, the
video frame rules, each media type's keyframe, and every check that runs before sending."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trio_sogni import InvalidRequestError
from trio_sogni._media._inputs import MediaInput
from trio_sogni._media._request import (
    MAX_PROMPT_LENGTH,
    ProjectOptions,
    build_job_request,
    calculate_video_frames,
    new_project_id,
)

WIRE = Path(__file__).parent / "wire"
"""The official SDK's jobRequest frames captured on the wire (a copy of
../shared/reference/media-wire/)."""
PNG = MediaInput.from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
JPEG = MediaInput.from_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
MP3 = MediaInput.from_bytes(b"ID3\x04" + b"\0" * 64)
MP4 = MediaInput.from_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 64)
UUID4 = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$")


def captured(name: str) -> dict[str, Any]:
    return json.loads((WIRE / name).read_text())["data"]


def on_the_wire(request: dict[str, Any]) -> dict[str, Any]:
    """The request as the server would decode it (msgspec-encoded, then parsed)."""
    return json.loads(msgspec.json.encode(request))


def assert_same_fields(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if key == "keyFrames":
            assert len(ours[key]) == len(value) == 1
            mine, official = ours[key][0], value[0]
            assert sorted(mine) == sorted(official)
            for field, expected in official.items():
                assert mine[field] == expected, field
                assert type(mine[field]) is type(expected), field
        else:
            assert ours[key] == value, key
            assert type(ours[key]) is type(value), key


def test_the_projects_create_frame_is_reproduced_field_by_field() -> None:
    official = captured("jobRequest-projects-create.json")
    ours = on_the_wire(
        build_job_request(
            ProjectOptions(
                type="image",
                model="flux1-schnell-fp8",
                prompt="a red fox in snow",
                steps=4,
                guidance=1,
                number_of_media=1,
                token_type="spark",
                output_format="png",
                random_seed=False,
            ),
            project_id=official["jobID"],
        )
    )
    assert_same_fields(ours, official)


def test_the_generate_image_tool_frame_is_reproduced_field_by_field() -> None:
    official = captured("jobRequest-generate_image-tool.json")
    ours = build_job_request(
        ProjectOptions(
            type="image",
            model="flux1-schnell-fp8",
            prompt="a red fox",
            token_type="spark",
            random_seed=False,
        )
    )
    assert UUID4.match(ours["jobID"])
    ours["jobID"] = official["jobID"]
    assert_same_fields(on_the_wire(ours), official)


def test_project_ids_are_upper_case_uuid4() -> None:
    ids = {new_project_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(UUID4.match(i) for i in ids)


def test_a_missing_seed_is_a_random_32_bit_seed_unless_the_server_should_pick() -> None:
    seeds = {
        build_job_request(ProjectOptions(type="image", model="m", prompt="p"))["keyFrames"][0][
            "seed"
        ]
        for _ in range(20)
    }
    assert len(seeds) > 1
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    given = build_job_request(ProjectOptions(type="image", model="m", prompt="p", seed=2**32 - 1))
    assert given["keyFrames"][0]["seed"] == 2**32 - 1
    left_out = build_job_request(
        ProjectOptions(type="image", model="m", prompt="p", random_seed=False)
    )
    assert "seed" not in left_out["keyFrames"][0]


@pytest.mark.parametrize(
    ("model", "duration", "fps", "frames"),
    [
        ("wan_v2.2-14b-fp8_t2v_lightx2v", 5, 16, 81),  # 16·d + 1
        ("wan_v2.2-14b-fp8_i2v", 2.5, 24, 41),  # fps is ignored by Wan
        ("ltx2-19b-fp8_t2v", 5, 24, 121),  # fps·d + 1 = 121 = 8·15 + 1
        ("ltx23-22b-fp8_t2v_distilled", 3, 25, 73),  # 76 snapped to 8n + 1
        ("minimax-h3-fl2va-fp8_i2v", 6, 24, 141),  # 144 snapped to 124 + 17n
        ("minimax-h3-fl2va-fp8_t2v", 1, 24, 124),  # clamped to the minimum
        ("minimax-h3-fl2va-fp8_t2v", 60, 24, 362),  # clamped to the maximum
        ("seedance-2-0", 5, 24, 121),  # others: fps·d + 1
        ("flashvsr_v1.1_tiny_long_bf16", 2, 30, 60),  # an upscale keeps fps·d
        ("some-new-video-model", 0.5, 25, 14),  # 12.5 rounds half up (JavaScript)
    ],
)
def test_video_frame_counts_follow_each_family(
    model: str, duration: float, fps: float, frames: int
) -> None:
    assert calculate_video_frames(model, duration, fps) == frames


def test_a_video_request_sends_frames_fps_and_the_comfy_fields() -> None:
    wan = build_job_request(
        ProjectOptions(
            type="video",
            model="wan_v2.2-14b-fp8_t2v_lightx2v",
            prompt="a fox runs",
            negative_prompt="blurry",
            duration=5,
            width=832,
            height=480,
            sampler="euler",
            scheduler="simple",
            random_seed=False,
        )
    )
    kf = wan["keyFrames"][0]
    assert (kf["frames"], kf["width"], kf["height"]) == (81, 832, 480)
    assert "fps" not in kf  # Wan sends no fps unless given
    assert (kf["comfySampler"], kf["comfyScheduler"]) == ("euler", "simple")
    assert kf["negativePrompt"] == "blurry"
    assert wan["outputFormat"] == "mp4"
    assert wan["previews"] == 0
    h3 = build_job_request(
        ProjectOptions(type="video", model="minimax-h3-fl2va-fp8_t2v", prompt="x", duration=6)
    )["keyFrames"][0]
    assert (h3["frames"], h3["fps"]) == (141, 24)
    assert "negativePrompt" not in h3
    with pytest.raises(InvalidRequestError, match="MiniMax H3 models take no negative prompt"):
        build_job_request(
            ProjectOptions(
                type="video", model="minimax-h3-fl2va-fp8_t2v", prompt="x", negative_prompt="n"
            )
        )
    partner = build_job_request(
        ProjectOptions(
            type="video", model="seedance-2-0", prompt="x", negative_prompt="dropped", duration=5
        )
    )["keyFrames"][0]
    assert "negativePrompt" not in partner  # partner models take none: dropped, as the SDKs do
    wan3 = build_job_request(
        ProjectOptions(type="video", model="wan3.0-video", prompt="x", duration=2)
    )
    assert (wan3["keyFrames"][0]["fps"], wan3["keyFrames"][0]["frames"]) == (30, 61)
    framed = build_job_request(
        ProjectOptions(type="video", model="ltx2-19b-fp8_t2v", prompt="x", frames=97, fps=24)
    )
    assert (framed["keyFrames"][0]["frames"], framed["keyFrames"][0]["fps"]) == (97, 24)


def test_a_video_request_flags_its_inputs_with_their_content_types() -> None:
    kf = build_job_request(
        ProjectOptions(
            type="video",
            model="wan_v2.2-14b-fp8_s2v",
            prompt="x",
            reference_image=PNG,
            reference_image_end=JPEG,
            context_images=(PNG,),
            reference_audio=MP3,
            reference_video=MP4,
        )
    )["keyFrames"][0]
    assert kf["hasReferenceImage"] is True
    assert kf["referenceImageContentType"] == "image/png"
    assert kf["hasContextImage2"] is True  # slot 1 belongs to the reference image
    assert "hasContextImage1" not in kf
    assert (kf["hasReferenceImageEnd"], kf["referenceImageEndContentType"]) == (True, "image/jpeg")
    assert (kf["hasReferenceAudio"], kf["referenceAudioContentType"]) == (True, "audio/mpeg")
    assert (kf["hasReferenceVideo"], kf["referenceVideoContentType"]) == (True, "video/mp4")
    h3 = build_job_request(
        ProjectOptions(
            type="video", model="minimax-h3-ref2va-fp8_r2v", prompt="x", reference_audio=MP3
        )
    )["keyFrames"][0]
    assert (h3["hasReferenceAudio1"], h3["referenceAudio1ContentType"]) == (True, "audio/mpeg")


def test_an_image_request_with_inputs_sizes_and_a_comfy_model() -> None:
    request = build_job_request(
        ProjectOptions(
            type="image",
            model="z_image_turbo_bf16",
            prompt="p",
            negative_prompt="n",
            style_prompt="s",
            number_of_media=4,
            number_of_previews=2,
            width=1024,
            height=768,
            sampler="euler",
            scheduler="simple",
            output_format="webp",
            starting_image=PNG,
            starting_image_strength=0.7,
            context_images=(PNG, JPEG),
            disable_safety=True,
            network="relaxed",
            app_source="tests",
            token_type="sogni",
        ),
        project_id="P",
    )
    kf = request["keyFrames"][0]
    assert (kf["comfySampler"], kf["comfyScheduler"], kf["vae"]) == ("euler", "simple", None)
    assert (kf["scheduler"], kf["timeStepSpacing"]) == (None, None)
    assert (kf["sizePreset"], kf["width"], kf["height"]) == ("custom", 1024, 768)
    assert kf["hasStartingImage"] is True
    assert math.isclose(kf["strength"], 0.3)
    assert [kf[f"hasContextImage{i}"] for i in range(1, 17)] == [True, True] + [False] * 14
    assert (kf["negativePrompt"], kf["stylePrompt"]) == ("n", "s")
    assert (request["numberOfImages"], request["previews"], request["outputFormat"]) == (
        4,
        2,
        "webp",
    )
    assert (request["disableSafety"], request["network"], request["appSource"]) == (
        True,
        "relaxed",
        "tests",
    )
    assert (request["tokenType"], request["jobID"]) == ("sogni", "P")
    preset = build_job_request(
        ProjectOptions(type="image", model="flux1-schnell-fp8", prompt="p", size_preset="square_hd")
    )
    kf = preset["keyFrames"][0]
    assert kf["sizePreset"] == "square_hd"
    assert "width" not in kf
    sampled = build_job_request(
        ProjectOptions(
            type="image",
            model="flux1-schnell-fp8",
            prompt="p",
            sampler="euler_a",
            scheduler="karras",
        )
    )["keyFrames"][0]
    assert (sampled["scheduler"], sampled["timeStepSpacing"]) == ("euler_a", "karras")
    assert "comfySampler" not in sampled


def test_an_audio_request_carries_the_music_fields() -> None:
    request = build_job_request(
        ProjectOptions(
            type="audio",
            model="ace_step_1.5_turbo",
            prompt="calm piano",
            negative_prompt="dropped",
            duration=30,
            bpm=90,
            timesignature="4",
            language="en",
            lyrics="[verse]\nla la",
            keyscale="C major",
            composer_mode=True,
            prompt_strength=2.0,
            creativity=0.5,
            output_format="flac",
            reference_audio=MP3,
        )
    )
    kf = request["keyFrames"][0]
    expected = {
        "duration": 30,
        "bpm": 90,
        "timesignature": "4",
        "language": "en",
        "lyrics": "[verse]\nla la",
        "keyscale": "C major",
        "composerMode": True,
        "promptStrength": 2.0,
        "creativity": 0.5,
        "hasReferenceAudio": True,
        "referenceAudioContentType": "audio/mpeg",
        "comfySampler": None,
        "comfyScheduler": None,
    }
    assert {k: kf[k] for k in expected} == expected
    assert "negativePrompt" not in kf
    assert request["outputFormat"] == "flac"
    assert (
        build_job_request(ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x"))[
            "outputFormat"
        ]
        == "mp3"
    )


def surrogate() -> str:
    return "bad \ud800 text"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "3d"}, 'type must be "image", "video" or "audio"'),
        ({"model": ""}, "model must not be empty"),
        ({"prompt": 5}, "prompt must be a string, not int"),
        ({"prompt": "x" * (MAX_PROMPT_LENGTH + 1)}, f"the limit is {MAX_PROMPT_LENGTH}"),
        ({"prompt": surrogate()}, "prompt holds a lone surrogate"),
        ({"negative_prompt": surrogate()}, "negative_prompt holds a lone surrogate"),
        ({"number_of_media": 0}, "number_of_media must be between 1 and 16, got 0"),
        ({"number_of_media": 17}, "number_of_media must be between 1 and 16, got 17"),
        ({"number_of_media": True}, "number_of_media must be an integer, not bool"),
        ({"steps": 2.5}, "steps must be an integer, not float"),
        ({"guidance": math.nan}, "guidance must be a finite number, got nan"),
        ({"guidance": math.inf}, "guidance must be a finite number, got inf"),
        ({"guidance": "7"}, "guidance must be a number, not str"),
        ({"seed": -1}, "seed must be between 0 and 4294967295, got -1"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295, got 4294967296"),
        ({"width": 1024}, "width and height must be given together"),
        ({"width": 100, "height": 1024}, "width must be between 256 and 16384, got 100"),
        ({"output_format": "mp4"}, "output_format 'mp4' is not one of png, jpg, webp for image"),
        ({"token_type": "gold"}, 'token_type must be "spark" or "sogni"'),
        ({"network": "slow"}, 'network must be "fast" or "relaxed"'),
        ({"sampler": surrogate()}, "sampler holds a lone surrogate"),
        ({"duration": 5}, "duration is not an option of image projects"),
        ({"reference_audio": MP3}, "reference_audio is not an input of image projects"),
        ({"context_images": (MP3,)}, "contextImage1 takes image media, not audio/mpeg"),
        ({"context_images": (PNG,) * 4}, "flux1-schnell-fp8 takes at most 3 context_images, got 4"),
        ({"starting_image_strength": 0.5}, "starting_image_strength needs a starting_image"),
        ({"starting_image": PNG, "starting_image_strength": 1.5}, "between 0 and 1, got 1.5"),
        ({"disable_safety": "yes"}, "disable_safety must be a bool"),
    ],
)
def test_bad_image_options_are_refused_before_sending(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"type": "image", "model": "flux1-schnell-fp8", "prompt": "p"}
    fields.update(changes)
    with pytest.raises(InvalidRequestError) as info:
        build_job_request(ProjectOptions(**fields))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duration": math.inf}, "duration must be a finite number, got inf"),
        ({"duration": 11}, "duration must be between 1 and 10, got 11"),
        (
            {"model": "ltx2-19b-fp8_t2v", "duration": 21},
            "duration must be between 1 and 20, got 21",
        ),
        ({"model": "minimax-h3-fl2va-fp8_t2v", "duration": 5}, "duration must be between 5.16667"),
        ({"duration": 5, "frames": 81}, "give duration or frames, not both"),
        ({"fps": 0}, "fps must be between 1 and 120, got 0"),
        ({"fps": math.nan}, "fps must be a finite number, got nan"),
        ({"width": 320, "height": 480}, "width must be between 480 and 16384, got 320"),
        ({"bpm": 90}, "bpm is not an option of video projects"),
        ({"starting_image": PNG}, "starting_image is not an input of video projects"),
        ({"reference_video": MP3}, "referenceVideo takes video media, not audio/mpeg"),
        ({"output_format": "gif"}, "output_format 'gif' is not one of mp4 for video"),
    ],
)
def test_bad_video_options_are_refused_before_sending(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "type": "video",
        "model": "wan_v2.2-14b-fp8_t2v_lightx2v",
        "prompt": "p",
    }
    fields.update(changes)
    with pytest.raises(InvalidRequestError) as info:
        build_job_request(ProjectOptions(**fields))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duration": 0.5}, "duration must be between 1 and 600, got 0.5"),
        ({"bpm": 0}, "bpm must be between 1 and 400, got 0"),
        ({"creativity": math.nan}, "creativity must be a finite number"),
        ({"lyrics": surrogate()}, "lyrics holds a lone surrogate"),
        ({"lyrics": "l" * (MAX_PROMPT_LENGTH + 1)}, "lyrics is"),
        ({"width": 512, "height": 512}, "width is not an option of audio projects"),
        ({"context_images": (PNG,)}, "context_images is not an input of audio projects"),
        ({"reference_audio": PNG}, "referenceAudio takes audio media, not image/png"),
        ({"output_format": "ogg"}, "output_format 'ogg' is not one of mp3, wav, flac for audio"),
        ({"composer_mode": 1}, "composer_mode must be a bool"),
    ],
)
def test_bad_audio_options_are_refused_before_sending(
    changes: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {"type": "audio", "model": "ace_step_1.5_turbo", "prompt": "p"}
    fields.update(changes)
    with pytest.raises(InvalidRequestError) as info:
        build_job_request(ProjectOptions(**fields))
    assert message in str(info.value)


def test_music_options_are_refused_on_images() -> None:
    for name, value in (("keyscale", "C major"), ("prompt_strength", 1.0), ("composer_mode", True)):
        fields: dict[str, Any] = {"type": "image", "model": "m", "prompt": "p", name: value}
        with pytest.raises(InvalidRequestError, match=f"{name} is not an option of image projects"):
            build_job_request(ProjectOptions(**fields))


def test_the_inputs_in_upload_order() -> None:
    options = ProjectOptions(
        type="video",
        model="wan_v2.2-14b-fp8_i2v",
        prompt="p",
        reference_image=PNG,
        context_images=(JPEG, PNG),
        reference_image_end=PNG,
        reference_audio=MP3,
    )
    assert [role for role, _ in options.inputs()] == [
        "referenceImage",
        "contextImage2",
        "contextImage3",
        "referenceImageEnd",
        "referenceAudio",
    ]
    image = ProjectOptions(
        type="image", model="m", prompt="p", starting_image=PNG, context_images=(JPEG,)
    )
    assert [role for role, _ in image.inputs()] == ["startingImage", "contextImage1"]


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("gpt-image-2", 16),
        ("flux3_image_klein_9b", 10),
        ("seedream-5-0-pro-uncensored", 10),
        ("flux1-kontext-dev", 2),
    ],
)
def test_context_image_limits_follow_the_model(model: str, limit: int) -> None:
    fits = ProjectOptions(type="image", model=model, prompt="p", context_images=(PNG,) * limit)
    assert build_job_request(fits)["keyFrames"][0][f"hasContextImage{limit}"] is True
    if limit < 16:
        with pytest.raises(InvalidRequestError, match=f"takes at most {limit} context_images"):
            build_job_request(
                ProjectOptions(
                    type="image", model=model, prompt="p", context_images=(PNG,) * (limit + 1)
                )
            )
    with pytest.raises(InvalidRequestError, match="at most 16 context_images are allowed, got 17"):
        build_job_request(
            ProjectOptions(type="image", model=model, prompt="p", context_images=(PNG,) * 17)
        )


@pytest.mark.parametrize(
    ("model", "duration", "ok"),
    [
        ("happyhorse-1.1-t2v", 3, True),
        ("happyhorse-1.1-t2v", 2.9, False),
        ("seedance-2-5", 30, True),
        ("seedance-2-0", 16, False),
        ("wan_v2.2-14b-fp8_animate-move_lightx2v", 20, True),
        ("flashvsr_v1.1_tiny_long_bf16", 0.05, True),
    ],
)
def test_video_duration_bounds_follow_the_family(model: str, duration: float, ok: bool) -> None:
    options = ProjectOptions(type="video", model=model, prompt="p", duration=duration)
    if ok:
        assert build_job_request(options)["keyFrames"][0]["frames"] >= 1
    else:
        with pytest.raises(InvalidRequestError, match="duration must be between"):
            build_job_request(options)


def test_minimax_h3_takes_small_canvases_and_inputs_must_be_media_inputs() -> None:
    kf = build_job_request(
        ProjectOptions(
            type="video", model="minimax-h3-fl2va-fp8_t2v", prompt="p", width=384, height=224
        )
    )["keyFrames"][0]
    assert (kf["width"], kf["height"]) == (384, 224)
    raw: Any = b"raw"
    with pytest.raises(InvalidRequestError, match="startingImage must be a MediaInput"):
        build_job_request(ProjectOptions(type="image", model="m", prompt="p", starting_image=raw))


# The official Python SDK (a test dependency) builds the same frames: ours must equal its
# create_job_request_message output key for key, for the same inputs.
DIFFERENTIAL_CASES: list[tuple[dict[str, Any], dict[str, Any], ProjectOptions]] = [
    (
        {
            "type": "image",
            "modelId": "z_image_turbo_bf16",
            "positivePrompt": "p",
            "negativePrompt": "n",
            "stylePrompt": "s",
            "numberOfMedia": 3,
            "width": 1024,
            "height": 768,
            "steps": 8,
            "guidance": 1.5,
            "seed": 7,
            "sampler": "euler",
            "scheduler": "simple",
            "outputFormat": "webp",
            "tokenType": "sogni",
            "disableNSFWFilter": True,
            "network": "fast",
        },
        {"type": "image", "sampler": {"allowed": ["euler"]}, "scheduler": {"allowed": ["simple"]}},
        ProjectOptions(
            type="image",
            model="z_image_turbo_bf16",
            prompt="p",
            negative_prompt="n",
            style_prompt="s",
            number_of_media=3,
            width=1024,
            height=768,
            steps=8,
            guidance=1.5,
            seed=7,
            sampler="euler",
            scheduler="simple",
            output_format="webp",
            token_type="sogni",
            disable_safety=True,
            network="fast",
        ),
    ),
    (
        {
            "type": "image",
            "modelId": "flux1-schnell-fp8",
            "positivePrompt": "p",
            "numberOfMedia": 1,
            "startingImage": b"x",
            "startingImageStrength": 0.7,
            "contextImages": [b"a", b"b"],
            "sizePreset": "square",
            "numberOfPreviews": 3,
        },
        {"type": "image"},
        ProjectOptions(
            type="image",
            model="flux1-schnell-fp8",
            prompt="p",
            starting_image=PNG,
            starting_image_strength=0.7,
            context_images=(PNG, JPEG),
            size_preset="square",
            number_of_previews=3,
            random_seed=False,
        ),
    ),
    (
        {
            "type": "video",
            "modelId": "wan_v2.2-14b-fp8_t2v_lightx2v",
            "positivePrompt": "p",
            "negativePrompt": "n",
            "numberOfMedia": 1,
            "duration": 5,
            "width": 832,
            "height": 480,
            "steps": 4,
            "seed": 1,
            "sampler": "euler",
            "scheduler": "simple",
        },
        {"type": "video", "sampler": {"allowed": ["euler"]}, "scheduler": {"allowed": ["simple"]}},
        ProjectOptions(
            type="video",
            model="wan_v2.2-14b-fp8_t2v_lightx2v",
            prompt="p",
            negative_prompt="n",
            duration=5,
            width=832,
            height=480,
            steps=4,
            seed=1,
            sampler="euler",
            scheduler="simple",
        ),
    ),
    (
        {
            "type": "video",
            "modelId": "minimax-h3-fl2va-fp8_t2v",
            "positivePrompt": "p",
            "numberOfMedia": 2,
            "duration": 6,
        },
        {"type": "video"},
        ProjectOptions(
            type="video",
            model="minimax-h3-fl2va-fp8_t2v",
            prompt="p",
            number_of_media=2,
            duration=6,
            random_seed=False,
        ),
    ),
    (
        {
            "type": "video",
            "modelId": "ltx2-19b-fp8_t2v",
            "positivePrompt": "p",
            "numberOfMedia": 1,
            "duration": 3,
            "fps": 25,
        },
        {"type": "video"},
        ProjectOptions(
            type="video",
            model="ltx2-19b-fp8_t2v",
            prompt="p",
            duration=3,
            fps=25,
            random_seed=False,
        ),
    ),
    (
        {
            "type": "video",
            "modelId": "seedance-2-0",
            "positivePrompt": "p",
            "negativePrompt": "n",
            "numberOfMedia": 1,
            "duration": 5,
        },
        {"type": "video"},
        ProjectOptions(
            type="video",
            model="seedance-2-0",
            prompt="p",
            negative_prompt="n",
            duration=5,
            random_seed=False,
        ),
    ),
    (
        {
            "type": "video",
            "modelId": "wan_v2.2-14b-fp8_i2v",
            "positivePrompt": "p",
            "numberOfMedia": 1,
            "referenceImage": b"x",
            "referenceImageEnd": b"y",
            "frames": 33,
        },
        {"type": "video"},
        ProjectOptions(
            type="video",
            model="wan_v2.2-14b-fp8_i2v",
            prompt="p",
            reference_image=PNG,
            reference_image_end=JPEG,
            frames=33,
            random_seed=False,
        ),
    ),
    (
        {
            "type": "audio",
            "modelId": "ace_step_1.5_turbo",
            "positivePrompt": "p",
            "negativePrompt": "n",
            "numberOfMedia": 1,
            "duration": 30,
            "bpm": 90,
            "timesignature": "4",
            "language": "en",
            "lyrics": "la",
            "keyscale": "C major",
            "composerMode": True,
            "promptStrength": 2.0,
            "creativity": 0.5,
            "outputFormat": "wav",
            "steps": 8,
            "referenceAudio": b"x",
        },
        {"type": "audio"},
        ProjectOptions(
            type="audio",
            model="ace_step_1.5_turbo",
            prompt="p",
            negative_prompt="n",
            duration=30,
            bpm=90,
            timesignature="4",
            language="en",
            lyrics="la",
            keyscale="C major",
            composer_mode=True,
            prompt_strength=2.0,
            creativity=0.5,
            output_format="wav",
            steps=8,
            reference_audio=MP3,
            random_seed=False,
        ),
    ),
]


@pytest.mark.parametrize(
    ("params", "tier", "options"),
    DIFFERENTIAL_CASES,
    ids=[c[0]["modelId"] for c in DIFFERENTIAL_CASES],
)
def test_the_frames_equal_the_official_python_sdk_output(
    params: dict[str, Any], tier: dict[str, Any], options: ProjectOptions
) -> None:
    from sogni_client.projects import create_job_request_message

    official = create_job_request_message("PID", params, tier)
    # The SDK adds an input's content type to the keyframe after uploading it; ours knows it
    # from the start (sniffed), so add what the SDK's upload would.
    for role, media in options.inputs():
        if options.type != "image" and not role.startswith("contextImage"):
            official["keyFrames"][0][f"{role}ContentType"] = media.content_type
    assert_same_fields(
        on_the_wire(build_job_request(options, project_id="PID")), on_the_wire(official)
    )


def test_frame_counts_equal_the_official_python_sdk_for_every_family() -> None:
    from sogni_client.utils import calculate_video_frames as official

    models = [
        "wan_v2.2-14b-fp8_t2v_lightx2v",
        "ltx2-19b-fp8_t2v",
        "ltx23-22b-fp8_i2v_distilled",
        "minimax-h3-fl2va-fp8_i2v",
        "seedance-2-0",
        "happyhorse-1.1-t2v",
        "wan3.0-video",
        "flashvsr_v1.1_tiny_long_bf16",
    ]
    checked = 0
    for model in models:
        for quarter in range(2, 121):
            for fps in (16, 24, 25, 30):
                duration = quarter / 4
                assert calculate_video_frames(model, duration, fps) == official(
                    model, duration, fps
                ), (
                    model,
                    duration,
                    fps,
                )
                checked += 1
    assert checked == len(models) * 119 * 4
