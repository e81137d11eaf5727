"""Media rendering: the :class:`MediaWorker` protocol, its value types, and the TEST DOUBLE
:class:`SimulatedMediaWorker`.

The projects manager turns each render of a ``jobRequest`` into one :class:`RenderSpec` and
awaits ``worker.render(spec, on_step)``: the worker calls ``on_step(step, step_count)`` after
each step (the manager sends ``jobProgress``) and returns a :class:`RenderedMedia` (the manager
stores it and sends ``jobResult``), or raises :class:`MediaRenderError` (the manager sends
``jobError`` with its ``code``). Cancellation (a cancelled project, shutdown) arrives as
``trio.Cancelled`` at any checkpoint of ``render``.

:class:`SimulatedMediaWorker` runs no model. It draws real, decodable media with Pillow (PNG,
JPEG, WebP) and PyAV (MP4 H.264, MP3, WAV), deterministic in the spec, and labels every file it
writes as made by a simulated test double. Pillow and PyAV come with the ``media`` extra
(``pip install 'trio-sogni[media]'``) and are imported on first use only, so localnet runs
without them (chat only); :class:`MediaDependencyError` names the extra when they are missing.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import textwrap
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

import trio
from typing_extensions import override

from .._workers._base import WorkerIdentity

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "AUDIO_FORMATS",
    "CONTENT_TYPES",
    "IMAGE_FORMATS",
    "SIMULATED_LABEL",
    "VIDEO_FORMATS",
    "FailRender",
    "FlagNSFW",
    "HangRender",
    "MediaDependencyError",
    "MediaFault",
    "MediaFaultFunction",
    "MediaInput",
    "MediaLimits",
    "MediaRenderError",
    "MediaType",
    "MediaWorker",
    "RenderRejected",
    "RenderSpec",
    "RenderedMedia",
    "SimulatedMediaWorker",
    "StepCallback",
    "require_pillow",
    "require_pyav",
]

MediaType: TypeAlias = Literal["image", "video", "audio"]
"""The kind of media a render produces (a tier's / model's ``media`` in the catalog)."""

IMAGE_FORMATS: Final = frozenset({"png", "jpg", "jpeg", "webp"})
VIDEO_FORMATS: Final = frozenset({"mp4"})
AUDIO_FORMATS: Final = frozenset({"mp3", "wav"})
_FORMATS: Final[Mapping[str, frozenset[str]]] = {
    "image": IMAGE_FORMATS,
    "video": VIDEO_FORMATS,
    "audio": AUDIO_FORMATS,
}
CONTENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "png": "image/png",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "webp": "image/webp",
        "mp4": "video/mp4",
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
    }
)
"""The content type of each output format."""

SIMULATED_LABEL: Final = "trio_sogni localnet SimulatedMediaWorker: simulated test double, no model"
"""The text every file the simulated worker writes carries (PNG ``tEXt``, JPEG comment, WebP
EXIF ``ImageDescription``, MP4 / MP3 / WAV ``comment`` metadata)."""


class MediaDependencyError(ImportError):
    """Pillow or PyAV is not installed: install the ``media`` extra."""


def require_pillow() -> None:
    """Import Pillow, or raise :class:`MediaDependencyError` naming the ``media`` extra."""
    try:
        import PIL  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise MediaDependencyError(
            "media rendering needs Pillow: pip install 'trio-sogni[media]'"
        ) from exc


def require_pyav() -> None:
    """Import PyAV, or raise :class:`MediaDependencyError` naming the ``media`` extra."""
    try:
        import av  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise MediaDependencyError(
            "video and audio rendering need PyAV: pip install 'trio-sogni[media]'"
        ) from exc


class MediaRenderError(Exception):
    """A render failed. The projects manager answers it with a ``jobError`` for the render:
    ``error`` is :attr:`code`, ``error_message`` is :attr:`message`, ``isFromWorker`` is
    :attr:`is_from_worker`, ``vendorFailureCategory`` is :attr:`vendor_failure_category`.
    Messages never contain credentials."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        is_from_worker: bool = True,
        vendor_failure_category: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.is_from_worker = is_from_worker
        self.vendor_failure_category = vendor_failure_category


class RenderRejected(MediaRenderError):
    """The spec asks for something this worker cannot render (a size, frame count or duration
    over its :class:`MediaLimits`, an unsupported format or media type, an undecodable input).
    Raised before any step is taken; retrying the same spec fails the same way."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_render", message, is_from_worker=False)


@dataclass(frozen=True, kw_only=True)
class MediaInput:
    """One media input of a render (an uploaded file): its bytes and content type."""

    data: bytes = field(repr=False)
    content_type: str

    @cached_property
    def digest(self) -> str:
        """SHA-256 of :attr:`data` (hex; computed once)."""
        return hashlib.sha256(self.data).hexdigest()


_IMAGE_ROLES: Final = ("startingImage", "contextImage1", "referenceImage")


@dataclass(frozen=True, kw_only=True)
class RenderSpec:
    """What one render must produce: one media file of one project.

    Attributes:
        media_type: ``"image"``, ``"video"`` or ``"audio"``.
        model_id: the catalog model (``keyFrames[0].modelID``).
        prompt: ``positivePrompt``; negative_prompt: ``negativePrompt``; style_prompt:
            ``stylePrompt``.
        seed: the render's seed (a 32-bit unsigned integer; the manager derives one per render).
        steps: the number of steps, each reported through ``on_step`` (at least 1).
        width, height: pixels (images and video; ignored for audio).
        output_format: ``png``, ``jpg``/``jpeg``, ``webp`` (image); ``mp4`` (video); ``mp3``,
            ``wav`` (audio).
        guidance: ``guidanceScale`` (informative).
        strength: how far the render departs from its starting image, 0..1 (image-to-image,
            image-to-video; ``keyFrames[0].strength``).
        frames, fps: video frame count and rate; with ``frames`` unset, ``duration * fps``.
        duration: seconds (audio; video when ``frames`` is unset).
        bpm: audio tempo (default 120).
        inputs: media inputs by keyframe role (``"startingImage"``, ``"contextImage1"`` ..
            ``"contextImage16"``, ``"referenceImage"``, ``"referenceAudio"``,
            ``"referenceVideo"``, ...): read-only after construction.

    Raises:
        ValueError: a field is out of its domain (unknown media type, a format of another
            media type, a non-positive size or step count, a seed outside 32 bits).
    """

    media_type: MediaType
    model_id: str
    prompt: str
    negative_prompt: str = ""
    style_prompt: str = ""
    seed: int = 0
    steps: int = 4
    width: int = 512
    height: int = 512
    output_format: str = "png"
    guidance: float | None = None
    strength: float = 0.5
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    bpm: float | None = None
    inputs: Mapping[str, MediaInput] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        if self.media_type not in _FORMATS:
            raise ValueError(f"unknown media type {self.media_type!r}")
        if self.output_format not in _FORMATS[self.media_type]:
            allowed = ", ".join(sorted(_FORMATS[self.media_type]))
            raise ValueError(
                f"output format {self.output_format!r} is not a {self.media_type} format"
                f" ({allowed})"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError("seed must be a 32-bit unsigned integer")
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.width < 1 or self.height < 1:
            raise ValueError("width and height must be positive")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError("strength must be in [0, 1]")
        for name in ("fps", "duration", "bpm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")
        if self.frames is not None and self.frames < 1:
            raise ValueError("frames must be at least 1")
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))

    @property
    def content_type(self) -> str:
        """The content type of :attr:`output_format`."""
        return CONTENT_TYPES[self.output_format]

    @property
    def input_image(self) -> MediaInput | None:
        """The image an edit / image-to-image / image-to-video render starts from: the first of
        ``startingImage``, ``contextImage1``, ``referenceImage`` that is given."""
        for role in _IMAGE_ROLES:
            if role in self.inputs:
                return self.inputs[role]
        return None

    def video_frames(self, default_fps: float = 16.0) -> tuple[int, float]:
        """``(frames, fps)`` of a video render: :attr:`frames` or ``round(duration * fps)``
        (at least 1), and :attr:`fps` or ``default_fps``."""
        fps = self.fps or default_fps
        if self.frames is not None:
            return self.frames, fps
        return max(1, round((self.duration or 1.0) * fps)), fps

    @cached_property
    def fingerprint(self) -> bytes:
        """SHA-256 over everything that shapes the output (prompts, seed, model, size, format,
        timing, the inputs' digests): the simulated worker's source of randomness (computed
        once)."""
        parts: list[str] = [
            self.media_type,
            self.model_id,
            self.prompt,
            self.negative_prompt,
            self.style_prompt,
            str(self.seed),
            str(self.steps),
            f"{self.width}x{self.height}",
            self.output_format,
            repr(self.strength),
            repr(self.frames),
            repr(self.fps),
            repr(self.duration),
            repr(self.bpm),
        ]
        parts += [f"{role}={m.content_type}:{m.digest}" for role, m in sorted(self.inputs.items())]
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, kw_only=True)
class RenderedMedia:
    """One finished render: the file and what it is.

    ``data`` is the whole file (bounded by the worker's :class:`MediaLimits`); ``steps`` is the
    number of steps performed (``jobResult.performedStepCount``); ``seed`` the seed used
    (``lastSeed``); ``nsfw`` whether the safety filter flagged it (``triggeredNSFWFilter``: the
    media is still returned, the manager decides whether to withhold it). ``width`` /
    ``height`` are 0 for audio, ``frames`` / ``fps`` are set for video and ``duration``
    (seconds) for video and audio.
    """

    media_type: MediaType
    data: bytes = field(repr=False)
    content_type: str
    output_format: str
    width: int = 0
    height: int = 0
    seed: int = 0
    steps: int = 0
    nsfw: bool = False
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    worker_name: str = ""

    @property
    def size(self) -> int:
        """Bytes in :attr:`data`."""
        return len(self.data)


StepCallback: TypeAlias = Callable[[int, int], Awaitable[None]]
"""``await on_step(step, step_count)`` after each step (``step`` counts from 1)."""


class MediaWorker(Protocol):
    """What the projects manager needs of a media worker (the media sibling of the chat
    ``Worker``: same ``name`` / ``models`` / ``capacity`` meaning).

    * ``name``: unique in the network (``jobState assigned.workerName``);
    * ``models``: the media model ids it serves, or ``None`` for every catalog model whose
      media type is in ``media_types``;
    * ``media_types``: the kinds of media it can render;
    * ``capacity``: renders it runs at once (the scheduler never gives it more);
    * ``render(spec, on_step)``: produce one render (see the module docstring). It must let
      ``trio.Cancelled`` through, raise ``MediaRenderError`` (or a subclass) for a failed
      render and nothing else on purpose.
    """

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Sequence[str] | None: ...

    @property
    def media_types(self) -> frozenset[MediaType]: ...

    @property
    def capacity(self) -> int: ...

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderedMedia:
        """Render ``spec``, reporting each step (see :class:`MediaWorker`)."""
        ...


# -- fault injection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailRender:
    """Fault: the render fails with :class:`MediaRenderError` ``(code, message)`` after
    ``at_step`` steps were reported (0: before the first)."""

    code: str = "workerError"
    message: str = "Simulated render failure (test double fault injection)"
    at_step: int = 0
    vendor_failure_category: str | None = None


@dataclass(frozen=True)
class HangRender:
    """Fault: the render stops after ``at_step`` steps and never finishes (only cancellation
    ends it)."""

    at_step: int = 0


@dataclass(frozen=True)
class FlagNSFW:
    """Fault: the render completes but is flagged by the (simulated) safety filter
    (:attr:`RenderedMedia.nsfw`)."""


MediaFault: TypeAlias = FailRender | HangRender | FlagNSFW
MediaFaultFunction: TypeAlias = Callable[[RenderSpec], MediaFault | None]
"""Chooses a fault for a render (``None``: render normally). Called once per render."""


@dataclass(frozen=True, kw_only=True)
class MediaLimits:
    """The largest render a :class:`SimulatedMediaWorker` accepts (each over-cap spec is a
    :class:`RenderRejected`, before any step): memory and CPU per render stay bounded.

    ``max_image_pixels``: width x height of an image; ``max_video_pixels``: of one video frame;
    ``max_video_frames``; ``max_fps``; ``max_audio_seconds``; ``max_steps``; ``max_input_bytes`` and
    ``max_input_pixels``: an input image (checked before it is decoded).
    """

    max_image_pixels: int = 4096 * 4096
    max_video_pixels: int = 1920 * 1088
    max_video_frames: int = 721
    max_fps: float = 120.0
    max_audio_seconds: float = 600.0
    max_steps: int = 200
    max_input_bytes: int = 64 * 1024 * 1024
    max_input_pixels: int = 8192 * 8192


# -- the simulated worker -------------------------------------------------------------------------


class SimulatedMediaWorker(WorkerIdentity):
    """A TEST DOUBLE media worker: it runs no model, it draws.

    Every render is real, decodable media, deterministic in the ``RenderSpec`` (the same
    spec gives the same bytes; another seed, prompt or input gives another file):

    * images (PNG, JPEG, WebP) at ``width x height``: a gradient and shapes from a RNG seeded by
      the spec, the prompt written on it, and "SIMULATED TEST DOUBLE" in a corner. With an
      input image (``startingImage``, ``contextImage1`` or ``referenceImage``) the drawing is
      blended over the input, weighted by ``strength`` (0: the input, 1: the drawing);
    * video: MP4, H.264 (libx264 of PyAV's bundled FFmpeg, ``yuv420p``; width and height must be
      even), ``frames`` frames at ``fps``: the shapes move, each frame shows its number; the
      first frame starts from the input image when there is one;
    * audio: MP3 (libmp3lame) or WAV (16-bit PCM), mono, 44.1 kHz, ``duration`` seconds of a
      seeded tune (``bpm``, default 120); a ``referenceAudio`` input changes the tune.

    Every file says it comes from a simulated test double (``SIMULATED_LABEL`` in its
    metadata).

    Pacing: ``seconds_per_step`` of ``trio.sleep`` before each ``on_step`` (``0``: a checkpoint
    only), so ``MockClock`` skips it. Then the file is encoded in a thread
    (``trio.to_thread.run_sync`` on a limiter of ``capacity`` threads; cancelling abandons the
    pure encode, whose result is dropped). Under ``MockClock(autojump_threshold=0)`` a running
    thread counts as all tasks blocked, so the clock jumps while it runs: pass
    ``encode_in_thread=False`` in virtual-time tests (the encode then runs in the Trio thread,
    blocking it; fine for small sizes).

    Faults (``faults``, called once per render) fail a render (at a step), hang it, or flag it
    NSFW (``FailRender``, ``HangRender``, ``FlagNSFW``).

    ``render`` raises ``RenderRejected`` (over ``MediaLimits``, odd video dimensions, a media
    type this worker does not render, an undecodable input image), ``MediaRenderError`` (an
    injected failure) or ``MediaDependencyError`` (Pillow or PyAV is missing).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        models: Sequence[str] | None = None,
        media_types: frozenset[MediaType] = frozenset({"image", "video", "audio"}),
        capacity: int = 1,
        seconds_per_step: float = 0.0,
        faults: MediaFaultFunction | None = None,
        limits: MediaLimits | None = None,
        encode_in_thread: bool = True,
    ) -> None:
        super().__init__(name, "simulated-media-worker", models, capacity)
        if not (math.isfinite(seconds_per_step) and seconds_per_step >= 0):
            raise ValueError("seconds_per_step must be a non-negative number")
        if not media_types or not media_types <= {"image", "video", "audio"}:
            raise ValueError("media_types must be a non-empty subset of image, video, audio")
        self._media_types = frozenset(media_types)
        self.seconds_per_step = seconds_per_step
        self.faults = faults
        self.limits = limits if limits is not None else MediaLimits()
        self.encode_in_thread = encode_in_thread
        self._threads = trio.CapacityLimiter(capacity)

    @override
    def __repr__(self) -> str:
        return f"SimulatedMediaWorker({self._name!r}, test double)"

    @property
    def media_types(self) -> frozenset[MediaType]:
        return self._media_types

    def check(self, spec: RenderSpec) -> None:
        """Raise :class:`RenderRejected` if ``spec`` is outside what this worker renders (see
        :class:`MediaLimits`); synchronous, no checkpoint."""
        limits = self.limits
        if spec.media_type not in self._media_types:
            raise RenderRejected(f"{self._name} does not render {spec.media_type}")
        if spec.steps > limits.max_steps:
            raise RenderRejected(f"steps {spec.steps} is over the limit of {limits.max_steps}")
        pixels = spec.width * spec.height
        if spec.media_type == "image" and pixels > limits.max_image_pixels:
            raise RenderRejected(
                f"an image of {spec.width}x{spec.height} is over the limit of"
                f" {limits.max_image_pixels} pixels"
            )
        if spec.media_type == "video":
            frames, fps = spec.video_frames()
            if pixels > limits.max_video_pixels:
                raise RenderRejected(
                    f"a video frame of {spec.width}x{spec.height} is over the limit of"
                    f" {limits.max_video_pixels} pixels"
                )
            if frames > limits.max_video_frames:
                raise RenderRejected(
                    f"{frames} video frames is over the limit of {limits.max_video_frames}"
                )
            if spec.width % 2 or spec.height % 2:
                raise RenderRejected("H.264 video needs an even width and height")
            if fps > limits.max_fps:
                raise RenderRejected(f"{fps} fps is over the limit of {limits.max_fps}")
        if spec.media_type == "audio":
            seconds = spec.duration or 10.0
            if seconds > limits.max_audio_seconds:
                raise RenderRejected(
                    f"{seconds} s of audio is over the limit of {limits.max_audio_seconds} s"
                )
        for role, media in spec.inputs.items():
            if len(media.data) > limits.max_input_bytes:
                raise RenderRejected(f"the {role} input is over {limits.max_input_bytes} bytes")

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderedMedia:
        """Render ``spec`` (see the class docstring): ``spec.steps`` paced steps, each
        reported through ``on_step``, then the encode. Cancellable at every step and during
        the encode."""
        self.check(spec)
        if spec.media_type != "audio":
            require_pillow()  # images and video frames are drawn with Pillow
        if spec.media_type != "image":
            require_pyav()
        fault = self.faults(spec) if self.faults is not None else None
        for step in range(1, spec.steps + 1):
            await self._at_step(fault, step - 1)
            if self.seconds_per_step:
                await trio.sleep(self.seconds_per_step)
            else:
                await trio.lowlevel.checkpoint()
            await on_step(step, spec.steps)
        await self._at_step(fault, spec.steps)
        encode = _ENCODERS[spec.media_type]
        if self.encode_in_thread:
            media = await trio.to_thread.run_sync(
                encode, spec, self.limits, limiter=self._threads, abandon_on_cancel=True
            )
        else:
            media = encode(spec, self.limits)
        if isinstance(fault, FlagNSFW):
            media = replace(media, nsfw=True)
        return replace(media, worker_name=self._name)

    async def _at_step(self, fault: MediaFault | None, done: int) -> None:
        if isinstance(fault, FailRender) and fault.at_step == done:
            raise MediaRenderError(
                fault.code, fault.message, vendor_failure_category=fault.vendor_failure_category
            )
        if isinstance(fault, HangRender) and fault.at_step == done:
            await trio.sleep_forever()


# -- drawing --------------------------------------------------------------------------------------


def _rng(spec: RenderSpec, salt: bytes = b"") -> random.Random:
    return random.Random(hashlib.sha256(spec.fingerprint + salt).digest())


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


@dataclass(frozen=True)
class _Shape:
    kind: str
    color: tuple[int, int, int]
    x: float
    y: float
    radius: float
    dx: float
    dy: float


def _shapes(rng: random.Random, count: int) -> list[_Shape]:
    return [
        _Shape(
            rng.choice(("ellipse", "rectangle", "triangle")),
            _color(rng),
            rng.random(),
            rng.random(),
            0.05 + rng.random() * 0.2,
            rng.uniform(-0.5, 0.5),
            rng.uniform(-0.5, 0.5),
        )
        for _ in range(count)
    ]


def _load_input_image(media: MediaInput, spec: RenderSpec, limits: MediaLimits) -> PILImage.Image:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(media.data)) as opened:
            width, height = opened.size
            if width * height > limits.max_input_pixels:
                raise RenderRejected(
                    f"the input image ({width}x{height}) is over {limits.max_input_pixels} pixels"
                )
            image = opened.convert("RGB")
    except RenderRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise RenderRejected(f"the input image cannot be decoded: {exc}") from None
    return ImageOps.fit(image, (spec.width, spec.height))


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=max(8, size))


def _background(spec: RenderSpec, width: int, height: int) -> PILImage.Image:
    """A two-colour gradient at a seeded angle."""
    from PIL import Image, ImageOps

    rng = _rng(spec, b"background")
    # Rotate a larger square and keep its middle: no empty corners.
    # Through Any: Pillow's hints for these methods are complete only where numpy is installed.
    square: Any = Image.linear_gradient("L")
    gradient: Image.Image = (
        square.resize((363, 363))
        .rotate(rng.uniform(0, 360))
        .crop((53, 53, 309, 309))
        .resize((width, height))
    )
    return ImageOps.colorize(gradient, _color(rng), _color(rng)).convert("RGB")


def _draw_shapes(picture: PILImage.Image, shapes: Sequence[_Shape], t: float) -> PILImage.Image:
    """``picture`` (modified) with the shapes at time ``t`` (seconds; 0 for images)."""
    from PIL import ImageDraw

    width, height = picture.size
    draw = ImageDraw.Draw(picture)
    scale = min(width, height)
    for shape in shapes:
        cx = (shape.x + shape.dx * t) % 1.0 * width
        cy = (shape.y + shape.dy * t) % 1.0 * height
        r = shape.radius * scale
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape.kind == "ellipse":
            draw.ellipse(box, fill=shape.color)
        elif shape.kind == "rectangle":
            draw.rectangle(box, fill=shape.color)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=shape.color)
    return picture


def _caption(picture: PILImage.Image, lines: Sequence[str]) -> None:
    from PIL import ImageDraw

    width, height = picture.size
    draw = ImageDraw.Draw(picture)
    size = max(8, min(width, height) // 20)
    font = _font(size)
    y = size // 2
    for line in lines:
        if y + size > height:
            break
        draw.text((size // 2 + 1, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((size // 2, y), line, fill=(255, 255, 255), font=font)
        y += size + size // 4
    small = _font(max(8, size * 2 // 3))
    label = "SIMULATED TEST DOUBLE"
    draw.text((size // 2, height - size - size // 2), label, fill=(255, 255, 0), font=small)


def _clean(text: str, limit: int) -> str:
    """``text[:limit]`` safe for fonts and metadata: lone surrogates become ``?``, other
    unprintable characters spaces."""
    text = text[:limit].encode("utf-8", "replace").decode("utf-8")
    return "".join(c if c.isprintable() else " " for c in text)


def _prompt_lines(spec: RenderSpec, width: int, size_hint: int) -> list[str]:
    chars = max(8, width // max(6, size_hint // 2))
    text = _clean(spec.prompt, 2000).strip() or "(empty prompt)"
    return [*textwrap.wrap(text, chars)[:6], f"seed {spec.seed}"]


def _draw_image(spec: RenderSpec, limits: MediaLimits) -> PILImage.Image:
    from PIL import Image

    shapes = _shapes(_rng(spec, b"shapes"), 6 + spec.seed % 5)
    picture = _draw_shapes(_background(spec, spec.width, spec.height), shapes, 0.0)
    source = spec.input_image
    if source is not None:
        picture = Image.blend(_load_input_image(source, spec, limits), picture, spec.strength)
    size = max(8, min(spec.width, spec.height) // 20)
    _caption(picture, _prompt_lines(spec, spec.width, size))
    return picture


def _encode_image(spec: RenderSpec, limits: MediaLimits) -> RenderedMedia:
    from PIL import Image, PngImagePlugin

    picture = _draw_image(spec, limits)
    out = io.BytesIO()
    fmt = spec.output_format
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", SIMULATED_LABEL)
        info.add_text("Description", _clean(spec.prompt, 1000))
        picture.save(out, "PNG", pnginfo=info)
    elif fmt in {"jpg", "jpeg"}:
        picture.save(out, "JPEG", quality=90, comment=SIMULATED_LABEL.encode())
    else:
        exif = Image.Exif()
        exif[0x010E] = SIMULATED_LABEL  # ImageDescription
        picture.save(out, "WEBP", quality=90, method=4, exif=exif.tobytes())
    return RenderedMedia(
        media_type="image",
        data=out.getvalue(),
        content_type=spec.content_type,
        output_format=fmt,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        steps=spec.steps,
    )


def _pyav() -> Any:
    """PyAV, typed ``Any``: its stubs leave packet types unknown, which strict pyright
    refuses."""
    import av

    return av


def _encode_video(spec: RenderSpec, limits: MediaLimits) -> RenderedMedia:
    from PIL import Image

    av = _pyav()
    frames, fps = spec.video_frames()
    rate = Fraction(fps).limit_denominator(1001)
    shapes = _shapes(_rng(spec, b"shapes"), 5 + spec.seed % 4)
    start = spec.input_image
    first = _load_input_image(start, spec, limits) if start is not None else None
    size = max(8, min(spec.width, spec.height) // 20)
    lines = _prompt_lines(spec, spec.width, size)
    background = _background(spec, spec.width, spec.height)
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        container.metadata["comment"] = SIMULATED_LABEL
        container.metadata["title"] = _clean(spec.prompt, 200)
        stream = container.add_stream("libx264", rate=rate)
        stream.width = spec.width
        stream.height = spec.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "30", "threads": "1"}
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for index in range(frames):
            t = index / float(fps)
            picture = _draw_shapes(background.copy(), shapes, t)
            if first is not None:
                weight = spec.strength + (1.0 - spec.strength) * index / max(1, frames - 1)
                picture = Image.blend(first, picture, weight)
            _caption(picture, [*lines, f"frame {index + 1}/{frames}"])
            frame = av.VideoFrame.from_image(picture)
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return RenderedMedia(
        media_type="video",
        data=out.getvalue(),
        content_type=spec.content_type,
        output_format=spec.output_format,
        width=spec.width,
        height=spec.height,
        seed=spec.seed,
        steps=spec.steps,
        frames=frames,
        fps=fps,
        duration=frames / fps,
    )


SAMPLE_RATE: Final = 44_100
_SCALE: Final = (0, 2, 4, 7, 9, 12, 14, 16)  # a major pentatonic over two octaves
_TABLE_SIZE: Final = 4096
_SINE: Final = array("f", (math.sin(2 * math.pi * i / _TABLE_SIZE) for i in range(_TABLE_SIZE)))


def _tune(spec: RenderSpec, seconds: float) -> bytes:
    """``seconds`` of 16-bit little-endian mono PCM: seeded notes on a pentatonic scale."""
    salt = b""
    reference = spec.inputs.get("referenceAudio")
    if reference is not None:
        salt = bytes.fromhex(reference.digest)
    rng = _rng(spec, b"tune" + salt)
    total = max(1, round(seconds * SAMPLE_RATE))
    beat = 60.0 / (spec.bpm or 120.0)
    root = 220.0 * 2 ** (rng.randrange(12) / 12)
    samples = array("h", bytes(2 * total))
    position = 0
    while position < total:
        length = min(
            total - position, max(1, round(beat * rng.choice((0.5, 1, 1, 2)) * SAMPLE_RATE))
        )
        step = _TABLE_SIZE * root * 2 ** (rng.choice(_SCALE) / 12) / SAMPLE_RATE
        attack = max(1, min(length // 10, 441))
        phase = 0.0
        for i in range(length):
            envelope = min(1.0, i / attack) * (1.0 - i / length)
            samples[position + i] = int(12000 * envelope * _SINE[int(phase) % _TABLE_SIZE])
            phase += step
        position += length
    if struct.pack("=h", 1) != struct.pack("<h", 1):  # pragma: no cover - big-endian hosts
        samples.byteswap()
    return samples.tobytes()


def _encode_audio(spec: RenderSpec, limits: MediaLimits) -> RenderedMedia:
    av = _pyav()
    seconds = spec.duration or 10.0
    pcm = _tune(spec, seconds)
    out = io.BytesIO()
    fmt = spec.output_format
    codec = "libmp3lame" if fmt == "mp3" else "pcm_s16le"
    with av.open(out, mode="w", format=fmt) as container:
        container.metadata["comment"] = SIMULATED_LABEL
        container.metadata["title"] = _clean(spec.prompt, 200)
        stream = container.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        if fmt == "mp3":
            stream.bit_rate = 128_000
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        per_frame = 1152 * 8
        for start in range(0, len(pcm) // 2, per_frame):
            chunk = pcm[2 * start : 2 * (start + per_frame)]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
            frame.planes[0].update(chunk)
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return RenderedMedia(
        media_type="audio",
        data=out.getvalue(),
        content_type=spec.content_type,
        output_format=fmt,
        seed=spec.seed,
        steps=spec.steps,
        duration=len(pcm) / 2 / SAMPLE_RATE,
    )


_ENCODERS: Final[Mapping[str, Callable[[RenderSpec, MediaLimits], RenderedMedia]]] = {
    "image": _encode_image,
    "video": _encode_video,
    "audio": _encode_audio,
}
