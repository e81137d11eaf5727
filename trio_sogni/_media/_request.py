"""Building the ``jobRequest`` of a media project (image, video or audio) from typed options.

Everything here is synchronous and pure. `build_job_request` checks every option first and
raises `InvalidRequestError` naming the option before anything could be sent; its output is a
plain ``dict`` (msgspec-encodable) with the keys and constants the official SDKs put on the wire
(docs: ../shared/docs/media-protocol.md §2; the captured frames in
../shared/reference/media-wire/). Checks that need the model catalog (ranges, allowed samplers,
the tier's media type) live in `trio_sogni._media._models`.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from typing import Any, Final, Literal

from .._errors import InvalidRequestError
from ._inputs import MediaInput

__all__ = [
    "MAX_NUMBER_OF_MEDIA",
    "MAX_PROMPT_LENGTH",
    "OUTPUT_FORMATS",
    "MediaType",
    "ProjectOptions",
    "build_job_request",
    "calculate_video_frames",
    "check_options",
    "content_type_of_output",
    "is_comfy_model",
    "new_project_id",
]

MediaType = Literal["image", "video", "audio"]
"""The kind of media a project makes."""

MAX_NUMBER_OF_MEDIA: Final = 16
"""The most renders one project may ask for (``numberOfImages``)."""

MAX_PROMPT_LENGTH: Final = 32_768
"""The longest prompt, negative prompt, style prompt or lyrics, in characters."""

MAX_PREVIEWS: Final = 20
"""The most intermediate previews an image project may ask for."""

OUTPUT_FORMATS: Final[dict[MediaType, tuple[str, ...]]] = {
    "image": ("png", "jpg", "webp"),
    "video": ("mp4",),
    "audio": ("mp3", "wav", "flac"),
}
"""The output formats of each media type; the first is the default."""

_CONTENT_TYPES: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
}

_COMFY_PREFIXES: Final = (
    "z_image_",
    "dark_beast_z_image_",
    "krea2_",
    "dark_beast_krea2_",
    "qwen_image_",
    "flux3_",
    "moss_image_",
    "wan_",
    "ace_step",
    "rtx_vsr_",
    "flashvsr_",
    "minimax_music3",
)
"""Model ids whose sampler and scheduler travel as ``comfySampler`` / ``comfyScheduler`` (the
official SDKs' list); other image models use ``scheduler`` / ``timeStepSpacing``."""

_CONTEXT_IMAGE_SLOTS: Final = 16

# Video families, by model id (the SDKs' frame and duration rules differ per family).
_H3_FPS: Final = 24
_H3_BASE_FRAMES: Final = 124
_H3_FRAME_STEP: Final = 17
_H3_MAX_FRAMES: Final = 362
_LTX_FRAME_STEP: Final = 8


def _family(model: str) -> str:
    if model.startswith("wan_v2.2-"):
        return "wan"
    if model.startswith(("ltx2-", "ltx23-", "ltx25-")):
        return "ltx"
    if model.startswith("minimax-h3-"):
        return "h3"
    if model.startswith("seedance-"):
        return "seedance25" if model.startswith("seedance-2-5") else "seedance"
    if model.startswith("happyhorse-"):
        return "happyhorse"
    if model.startswith("wan3.0-"):
        return "wan3"
    if model.startswith("flashvsr_"):
        return "upscale"
    return "other"


_EXTERNAL_FAMILIES: Final = frozenset({"seedance", "seedance25", "happyhorse", "wan3"})
"""Partner-API video models: no negative prompt, an explicit ``fps``."""

_DURATION_BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "h3": (_H3_BASE_FRAMES / _H3_FPS, _H3_MAX_FRAMES / _H3_FPS),
    "wan3": (2, 30),
    "happyhorse": (3, 15),
    "seedance": (4, 15),
    "seedance25": (4, 30),
    "ltx": (1, 20),
}
"""Video duration bounds in seconds per family (the SDKs'); Wan animate 1-20, others 1-10."""


def is_comfy_model(model: str) -> bool:
    """Whether ``model`` takes ``comfySampler`` / ``comfyScheduler`` (and a ``vae``) rather
    than ``scheduler`` / ``timeStepSpacing`` on an image keyframe."""
    return model.startswith(_COMFY_PREFIXES)


def _js_round(value: float) -> int:
    # JavaScript's Math.round: halves go up (the SDKs compute frame counts with it).
    return math.floor(value + 0.5)


def calculate_video_frames(model: str, duration: float, fps: float) -> int:
    """The frame count a video project of ``duration`` seconds asks for: Wan 2.2
    ``16·d + 1``; LTX ``fps·d + 1`` snapped to ``8n + 1``; MiniMax H3 ``24·d`` snapped to the
    nearest ``124 + 17n`` (124 to 362); FlashVSR upscales ``fps·d``; others ``fps·d + 1``
    (rounded half up, as the official SDKs do)."""
    family = _family(model)
    if family == "upscale":
        return _js_round(duration * fps)
    if family == "wan":
        return _js_round(duration * 16) + 1
    if family == "h3":
        step = _js_round((_js_round(duration * _H3_FPS) - _H3_BASE_FRAMES) / _H3_FRAME_STEP)
        top = (_H3_MAX_FRAMES - _H3_BASE_FRAMES) // _H3_FRAME_STEP
        return _H3_BASE_FRAMES + min(top, max(0, step)) * _H3_FRAME_STEP
    frames = _js_round(duration * fps) + 1
    if family == "ltx":
        frames = _js_round((frames - 1) / _LTX_FRAME_STEP) * _LTX_FRAME_STEP + 1
    return frames


def content_type_of_output(media_type: MediaType, output_format: str | None) -> str:
    """The content type of a render in ``output_format`` (the type's default when ``None``)."""
    return _CONTENT_TYPES[output_format or OUTPUT_FORMATS[media_type][0]]


def new_project_id() -> str:
    """A fresh project id: an upper-case random UUID (version 4), as the official SDKs mint."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ProjectOptions:
    """What to make: the typed options of one media project. ``None`` means "not given": the
    request leaves the field out and the Supernet (or `ModelOptions.apply_defaults`, from the
    model's tier) decides.

    Common: ``type``, ``model``, ``prompt``, ``negative_prompt``, ``style_prompt``,
    ``number_of_media`` (1 to 16), ``width``/``height`` (both or neither) or ``size_preset``,
    ``steps``, ``guidance``, ``seed`` (0 to 2**32 - 1), ``sampler``, ``scheduler``,
    ``output_format`` (image ``png``/``jpg``/``webp``, video ``mp4``, audio
    ``mp3``/``wav``/``flac``), ``token_type``, ``disable_safety``, ``network``,
    ``app_source``.

    ``seed=None`` with ``random_seed=True`` (the default) sends a random 32-bit seed chosen
    here, so the seed of every render is known in advance; ``random_seed=False`` sends no seed
    and lets the Supernet choose (what the official SDKs do; each result reports its seed).

    Video: ``duration`` (seconds; the frame count follows the model family's rule, see
    ``calculate_video_frames``) or ``frames``, ``fps``. Audio: ``duration``, ``bpm``,
    ``timesignature``, ``language``, ``lyrics``, ``keyscale``, ``composer_mode``,
    ``prompt_strength``, ``creativity``.

    Inputs (`MediaInput`, uploaded separately): image ``starting_image`` (with
    ``starting_image_strength``, 0 to 1) and ``context_images``; video ``reference_image``,
    ``reference_image_end``, ``context_images``, ``reference_audio``, ``reference_video``; audio
    ``reference_audio``.
    """

    type: MediaType
    model: str
    prompt: str
    negative_prompt: str = ""
    style_prompt: str = ""
    number_of_media: int = 1
    number_of_previews: int = 0
    width: int | None = None
    height: int | None = None
    size_preset: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    random_seed: bool = True
    sampler: str | None = None
    scheduler: str | None = None
    output_format: str | None = None
    token_type: Literal["spark", "sogni"] | None = None
    disable_safety: bool = False
    network: Literal["fast", "relaxed"] | None = None
    app_source: str | None = None
    duration: float | None = None
    fps: float | None = None
    frames: int | None = None
    bpm: int | None = None
    timesignature: str | None = None
    language: str | None = None
    lyrics: str | None = None
    keyscale: str | None = None
    composer_mode: bool | None = None
    prompt_strength: float | None = None
    creativity: float | None = None
    starting_image: MediaInput | None = None
    starting_image_strength: float | None = None
    context_images: tuple[MediaInput, ...] = ()
    reference_image: MediaInput | None = None
    reference_image_end: MediaInput | None = None
    reference_audio: MediaInput | None = None
    reference_video: MediaInput | None = None

    def inputs(self) -> list[tuple[str, MediaInput]]:
        """The media inputs as ``(role, input)`` in upload order (the roles of
        `trio_sogni._media._inputs.kind_of_role`). Context images of a video project with a
        ``reference_image`` start at ``contextImage2`` (slot 1 is the reference image's)."""
        found: list[tuple[str, MediaInput]] = []
        if self.starting_image is not None:
            found.append(("startingImage", self.starting_image))
        if self.reference_image is not None:
            found.append(("referenceImage", self.reference_image))
        offset = 1 if self.type == "video" and self.reference_image is not None else 0
        found.extend(
            (f"contextImage{offset + index}", image)
            for index, image in enumerate(self.context_images, 1)
        )
        if self.reference_image_end is not None:
            found.append(("referenceImageEnd", self.reference_image_end))
        suffix = "1" if _is_h3_reference(self.model) else ""
        if self.reference_audio is not None:
            found.append((f"referenceAudio{suffix}", self.reference_audio))
        if self.reference_video is not None:
            found.append((f"referenceVideo{suffix}", self.reference_video))
        return found


def _is_h3_reference(model: str) -> bool:
    return _family(model) == "h3" and "_r2v" in model


def _max_context_images(model: str) -> int:
    # The SDKs' per-model limits on edit/context images.
    if model.startswith("gpt-image"):
        return 16
    if model.startswith(("flux3_image_klein", "seedream-")):
        return 10
    if "kontext" in model or "identity_edit" in model:
        return 2
    return 3


def _text(name: str, value: object, *, limit: int = MAX_PROMPT_LENGTH, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, not {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidRequestError(f"{name} must not be empty")
    if len(value) > limit:
        raise InvalidRequestError(f"{name} is {len(value)} characters long; the limit is {limit}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError(
                f"{name} holds a lone surrogate (not valid Unicode); it cannot be sent"
            ) from None
    return value


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _real(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _check_common(options: ProjectOptions) -> None:
    if options.type not in OUTPUT_FORMATS:
        raise InvalidRequestError(
            f'type must be "image", "video" or "audio", not {str(options.type)[:32]!r}'
        )
    _text("model", options.model, limit=256, empty=False)
    _text("prompt", options.prompt)
    _text("negative_prompt", options.negative_prompt)
    _text("style_prompt", options.style_prompt)
    _integer("number_of_media", options.number_of_media, 1, MAX_NUMBER_OF_MEDIA)
    _integer("number_of_previews", options.number_of_previews, 0, MAX_PREVIEWS)
    for name in ("sampler", "scheduler", "size_preset", "app_source", "language", "keyscale"):
        value = getattr(options, name)
        if value is not None:
            _text(name, value, limit=256, empty=False)
    if options.timesignature is not None:
        _text("timesignature", options.timesignature, limit=16, empty=False)
    if options.lyrics is not None:
        _text("lyrics", options.lyrics)
    if options.steps is not None:
        _integer("steps", options.steps, 1, 1000)
    if options.guidance is not None:
        _real("guidance", options.guidance, 0, 100)
    if options.seed is not None:
        _integer("seed", options.seed, 0, 2**32 - 1)
    if (options.width is None) != (options.height is None):
        raise InvalidRequestError("width and height must be given together")
    if (
        options.output_format is not None
        and options.output_format not in OUTPUT_FORMATS[options.type]
    ):
        raise InvalidRequestError(
            f"output_format {str(options.output_format)[:32]!r} is not one of "
            f"{', '.join(OUTPUT_FORMATS[options.type])} for {options.type}"
        )
    if options.token_type not in (None, "spark", "sogni"):
        raise InvalidRequestError(
            f'token_type must be "spark" or "sogni", not {str(options.token_type)[:32]!r}'
        )
    if options.network not in (None, "fast", "relaxed"):
        raise InvalidRequestError(
            f'network must be "fast" or "relaxed", not {str(options.network)[:32]!r}'
        )
    for name in ("disable_safety", "random_seed"):
        if not isinstance(getattr(options, name), bool):
            raise InvalidRequestError(f"{name} must be a bool")
    if options.composer_mode is not None and not isinstance(options.composer_mode, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError("composer_mode must be a bool")
    allowed_inputs = {
        "image": {"starting_image", "context_images"},
        "video": {
            "reference_image",
            "reference_image_end",
            "context_images",
            "reference_audio",
            "reference_video",
        },
        "audio": {"reference_audio"},
    }[options.type]
    for name in (
        "starting_image",
        "context_images",
        "reference_image",
        "reference_image_end",
        "reference_audio",
        "reference_video",
    ):
        value = getattr(options, name)
        if value and name not in allowed_inputs:
            raise InvalidRequestError(f"{name} is not an input of {options.type} projects")
    for role, media in options.inputs():
        if not isinstance(media, MediaInput):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError(f"{role} must be a MediaInput (see media_input)")
    expected = {"referenceAudio": "audio", "referenceVideo": "video"}
    for role, media in options.inputs():
        kind = expected.get(role.rstrip("123"), "image")
        if media.kind != kind:
            raise InvalidRequestError(f"{role} takes {kind} media, not {media.content_type}")
    if len(options.context_images) > _CONTEXT_IMAGE_SLOTS:
        raise InvalidRequestError(
            f"at most {_CONTEXT_IMAGE_SLOTS} context_images are allowed, "
            f"got {len(options.context_images)}"
        )
    if options.type == "image":
        limit = _max_context_images(options.model)
        if len(options.context_images) > limit:
            raise InvalidRequestError(
                f"{options.model} takes at most {limit} context_images, "
                f"got {len(options.context_images)}"
            )
    if options.starting_image_strength is not None:
        if options.starting_image is None:
            raise InvalidRequestError("starting_image_strength needs a starting_image")
        _real("starting_image_strength", options.starting_image_strength, 0, 1)
    media_only = {
        "image": ("duration", "fps", "frames", "bpm", "timesignature", "language", "lyrics"),
        "video": ("size_preset", "bpm", "timesignature", "language", "lyrics"),
        "audio": ("width", "height", "size_preset", "fps", "frames"),
    }[options.type]
    for name in media_only:
        if getattr(options, name) is not None:
            raise InvalidRequestError(f"{name} is not an option of {options.type} projects")
    if options.type != "audio":
        for name in ("keyscale", "composer_mode", "prompt_strength", "creativity"):
            if getattr(options, name) is not None:
                raise InvalidRequestError(f"{name} is not an option of {options.type} projects")


def _check_sizes(options: ProjectOptions) -> None:
    if options.width is None or options.height is None:
        return
    if options.type == "image":
        low = 256
    elif _family(options.model) == "h3":
        low = 32
    else:
        low = 480
    _integer("width", options.width, low, 16384)
    _integer("height", options.height, low, 16384)


def _check_video_timing(options: ProjectOptions) -> None:
    if options.fps is not None:
        _real("fps", options.fps, 1, 120)
    if options.frames is not None:
        _integer("frames", options.frames, 1, 100_000)
        if options.duration is not None:
            raise InvalidRequestError("give duration or frames, not both")
    if options.duration is not None:
        family = _family(options.model)
        if family == "upscale":
            low, high = 1 / (options.fps or 24), 3600.0
        else:
            default_high = 20.0 if "_animate-" in options.model else 10.0
            low, high = _DURATION_BOUNDS.get(family, (1, default_high))
        _real("duration", options.duration, low, high)


def _video_fps(options: ProjectOptions) -> tuple[float | None, float]:
    """``(fps sent on the keyframe or None, fps the frame count uses)``."""
    family = _family(options.model)
    if options.fps is not None:
        return options.fps, options.fps
    if family == "wan3":
        return 30, 30
    if family in _EXTERNAL_FAMILIES or family == "h3":
        return 24, 24
    return None, 24


def _template_keyframe(options: ProjectOptions, seed: int | None) -> dict[str, Any]:
    keyframe: dict[str, Any] = {
        "stepsIsEnabled": True,
        "siRotation": 0,
        "siDragOffsetIsEnabled": True,
        "strength": 0.5,
        "siZoomScaleIsEnabled": True,
        "isEnabled": True,
        "processing": "CPU, GPU",
        "useLastImageAsGuideImageInAnimation": True,
        "guidanceScaleIsEnabled": True,
        "siImageBackgroundColor": "black",
        "cnDragOffset": [0, 0],
        "scheduler": None,
        "timeStepSpacing": None,
    }
    if options.steps is not None:
        keyframe["steps"] = options.steps
    keyframe["cnRotation"] = 0
    if options.guidance is not None:
        keyframe["guidanceScale"] = options.guidance
    keyframe.update(
        siZoomScale=1,
        modelID=options.model,
        cnRotationIsEnabled=True,
        negativePrompt="",
        startingImageZoomPanIsOn=False,
    )
    if seed is not None:
        keyframe["seed"] = seed
    keyframe.update(
        siRotationIsEnabled=True,
        cnImageBackgroundColor="clear",
        strengthIsEnabled=True,
        siDragOffset=[0, 0],
        useLastImageAsCNImageInAnimation=False,
        positivePrompt=options.prompt,
        controlNetZoomPanIsOn=False,
        cnZoomScaleIsEnabled=True,
        currentControlNets=None,
        stylePrompt="",
        cnDragOffsetIsEnabled=True,
        frameIndex=0,
        startingImage=None,
        cnZoomScale=1,
    )
    return keyframe


def _image_keyframe(options: ProjectOptions, keyframe: dict[str, Any]) -> None:
    for index in range(1, _CONTEXT_IMAGE_SLOTS + 1):
        keyframe[f"hasContextImage{index}"] = index <= len(options.context_images)
    if is_comfy_model(options.model):
        keyframe["comfySampler"] = options.sampler
        keyframe["comfyScheduler"] = options.scheduler
        keyframe["vae"] = None
    else:
        keyframe["scheduler"] = options.sampler
        keyframe["timeStepSpacing"] = options.scheduler
    if options.starting_image is not None:
        strength = options.starting_image_strength
        keyframe["hasStartingImage"] = True
        keyframe["strengthIsEnabled"] = True
        keyframe["strength"] = 1 - (0.5 if strength is None else strength)
    preset = options.size_preset
    if options.width is not None and options.height is not None and preset is None:
        preset = "custom"
    if preset is not None:
        keyframe["sizePreset"] = preset
    if preset == "custom" and options.width is not None and options.height is not None:
        keyframe["width"] = options.width
        keyframe["height"] = options.height


def _video_keyframe(options: ProjectOptions, keyframe: dict[str, Any]) -> None:
    for role, media in options.inputs():
        keyframe[f"has{role[0].upper()}{role[1:]}"] = True
        if not role.startswith("contextImage"):
            keyframe[f"{role}ContentType"] = media.content_type
    sent_fps, frame_fps = _video_fps(options)
    if options.frames is not None:
        keyframe["frames"] = options.frames
    if sent_fps is not None:
        keyframe["fps"] = sent_fps
    if options.duration is not None:
        keyframe["frames"] = calculate_video_frames(options.model, options.duration, frame_fps)
    if options.width is not None and options.height is not None:
        keyframe["width"] = options.width
        keyframe["height"] = options.height
    keyframe["comfySampler"] = options.sampler
    keyframe["comfyScheduler"] = options.scheduler


def _audio_keyframe(options: ProjectOptions, keyframe: dict[str, Any]) -> None:
    fields = {
        "duration": options.duration,
        "bpm": options.bpm,
        "timesignature": options.timesignature,
        "language": options.language,
        "lyrics": options.lyrics,
        "keyscale": options.keyscale,
        "composerMode": options.composer_mode,
        "promptStrength": options.prompt_strength,
        "creativity": options.creativity,
    }
    keyframe.update({field: value for field, value in fields.items() if value is not None})
    if options.reference_audio is not None:
        keyframe["hasReferenceAudio"] = True
        keyframe["referenceAudioContentType"] = options.reference_audio.content_type
    keyframe["comfySampler"] = options.sampler
    keyframe["comfyScheduler"] = options.scheduler


def _check_audio(options: ProjectOptions) -> None:
    if options.duration is not None:
        _real("duration", options.duration, 1, 600)
    if options.bpm is not None:
        _integer("bpm", options.bpm, 1, 400)
    for name in ("prompt_strength", "creativity"):
        value = getattr(options, name)
        if value is not None:
            _real(name, value, 0, 100)


def check_options(options: ProjectOptions) -> None:
    """Check ``options`` on their own (no catalog): types, NaN and infinity, lone surrogates,
    text lengths, counts, sizes, durations, and options or inputs the media type does not take.
    `build_job_request` runs it first; `MediaModelCatalog.prepare` too, before the tier checks.

    Raises:
        InvalidRequestError: naming the option, its value and what is allowed.
    """
    _check_common(options)
    _check_sizes(options)
    if options.type == "video":
        if options.negative_prompt and _family(options.model) == "h3":
            raise InvalidRequestError(
                "negative_prompt: MiniMax H3 models take no negative prompt; put the "
                "exclusions in the prompt"
            )
        _check_video_timing(options)
    elif options.type == "audio":
        _check_audio(options)


def build_job_request(options: ProjectOptions, *, project_id: str | None = None) -> dict[str, Any]:
    """The ``data`` of the ``jobRequest`` frame for ``options``: the SDKs' keyframe envelope
    (top-level constants, one keyframe, ``numberOfImages``, ``previews``, ``disableSafety``,
    ``tokenType``, ``outputFormat``...) with ``jobID`` = ``project_id`` (a fresh upper-case
    UUID4 when ``None``). Top-level keys whose value is ``None`` are left out, as the SDKs
    do; keyframe ``null`` constants are kept.

    Raises:
        InvalidRequestError: a bad option, named with its value and what is allowed (a wrong
            type, NaN or infinity, a lone surrogate, a prompt over `MAX_PROMPT_LENGTH`, a count
            or size out of range, an option or input the media type does not take).
    """
    check_options(options)
    if project_id is None:
        project_id = new_project_id()
    seed = options.seed
    if seed is None and options.random_seed:
        seed = secrets.randbits(32)
    keyframe = _template_keyframe(options, seed)
    family = _family(options.model)
    keeps_negative = options.type == "image" or (
        options.type == "video" and family not in _EXTERNAL_FAMILIES and family != "h3"
    )
    if options.negative_prompt and keeps_negative:
        keyframe["negativePrompt"] = options.negative_prompt
    elif options.type != "image":
        del keyframe["negativePrompt"]
    if options.style_prompt:
        keyframe["stylePrompt"] = options.style_prompt
    if options.type == "image":
        _image_keyframe(options, keyframe)
    elif options.type == "video":
        _video_keyframe(options, keyframe)
    else:
        _audio_keyframe(options, keyframe)
    request: dict[str, Any] = {
        "selectedUpscalingModel": "OFF",
        "cnVideoFramesSketch": [],
        "cnVideoFramesSegmentedSubject": [],
        "cnVideoFramesFace": [],
        "doCanvasBlending": False,
        "animationIsOn": False,
        "cnVideoFramesBoth": [],
        "cnVideoFramesDepth": [],
        "keyFrames": [keyframe],
        "previews": options.number_of_previews if options.type == "image" else 0,
        "frameRate": 24,
        "generatedVideoSeconds": 10,
        "canvasIsOn": False,
        "cnVideoFrames": [],
        "disableSafety": options.disable_safety,
        "cnVideoFramesSegmentedBackground": [],
        "cnVideoFramesSegmented": [],
        "numberOfImages": options.number_of_media,
        "cnVideoFramesPose": [],
        "jobID": project_id,
        "siVideoFrames": [],
        "tokenType": options.token_type,
        "outputFormat": options.output_format or OUTPUT_FORMATS[options.type][0],
        "network": options.network,
        "appSource": options.app_source,
    }
    return {key: value for key, value in request.items() if value is not None}
