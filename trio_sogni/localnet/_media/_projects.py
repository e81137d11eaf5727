"""Media projects: what the projects manager needs of workers and storage, request validation,
and the state of one project and its renders.

A project (one ``jobRequest``) makes ``numberOfImages`` *renders*. Each render is a
:class:`~trio_sogni.localnet._jobs._scheduler.Schedulable`, so renders queue in the same
scheduler as LLM jobs, fairly between accounts. Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

import trio
from msgspec import UnsetType

from ...protocol import MediaJobRequest, MediaKeyFrame, MediaType
from .._jobs._scheduler import Schedulable
from ._catalog import MediaCatalog, MediaModelSpec, MediaTier, ParamChoice

if TYPE_CHECKING:
    from .._accounts._ledger import Hold

__all__ = [
    "MAX_PROMPT_LENGTH",
    "MAX_RENDERS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "AppKey",
    "MediaStorage",
    "MediaWorker",
    "Project",
    "ProjectPlan",
    "ProjectStatus",
    "Render",
    "RenderOutput",
    "RenderSpec",
    "StepCallback",
    "plan_project",
]

MAX_RENDERS: Final = 16
"""The most renders (``numberOfImages``) one project may ask for (the official tool limit)."""

MAX_PROMPT_LENGTH: Final = 10_000
"""The longest positive, negative or style prompt (and lyrics) accepted, in characters."""

MAX_PROJECT_ID_LENGTH: Final = 128

OUTPUT_FORMATS: Final[Mapping[MediaType, tuple[str, ...]]] = {
    "image": ("png", "jpg", "jpeg", "webp"),
    "video": ("mp4",),
    "audio": ("mp3", "wav"),
}
"""The ``outputFormat`` values each media type accepts; the first is the default."""

MAX_SEED: Final = 2**32 - 1


# --- what the manager needs of workers and storage -------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RenderSpec:
    """Everything a media worker needs to produce one render.

    ``frames``/``fps`` are set for video, ``duration`` (seconds) for video and audio; ``inputs``
    maps an input role (``startingImage``, ``contextImage1``, ``referenceAudio`` ...) to its
    bytes (empty until uploaded inputs are wired to the projects manager: the keyframe's
    ``has...`` flags are accepted, their uploads not yet looked up). ``seed`` is this render's
    own seed (the project's seed plus the render's index).
    """

    media_type: MediaType
    model: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    width: int | None
    height: int | None
    output_format: str
    guidance: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    frames: int | None = None
    fps: int | None = None
    duration: float | None = None
    inputs: Mapping[str, bytes] = field(default_factory=dict[str, bytes])


StepCallback = Callable[[int, int], Awaitable[None]]
"""``await on_step(step, step_count)``: a worker reports a finished step. It is the render's
backpressure (it waits while the client's socket is behind) and a checkpoint."""


class RenderOutput(Protocol):
    """A finished render: its bytes, their content type, and whether the safety filter fired."""

    @property
    def data(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...

    @property
    def nsfw(self) -> bool: ...


class MediaWorker(Protocol):
    """What the projects manager needs of a media worker.

    ``render`` produces one render, calling ``on_step`` after each step; any exception it raises
    is a worker failure (the render is retried on another attempt, within the retry budget).
    Cancelling it (a project cancel, a removed worker) must stop it promptly.
    """

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> Sequence[str]: ...

    @property
    def capacity(self) -> int: ...

    async def render(self, spec: RenderSpec, on_step: StepCallback) -> RenderOutput: ...


class MediaStorage(Protocol):
    """Where finished renders are kept (served later through signed download URLs)."""

    async def store(
        self, account: str, project: str, render_id: str, data: bytes, content_type: str
    ) -> None: ...


# --- validation ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProjectPlan:
    """A validated ``jobRequest``: the model and every setting resolved (tier defaults applied)."""

    model: MediaModelSpec
    count: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float | None
    width: int | None
    height: int | None
    frames: int | None
    fps: int | None
    duration: float | None
    sampler: str | None
    scheduler: str | None
    seed: int | None
    output_format: str
    token_type: Literal["sogni", "spark"]

    @property
    def media(self) -> MediaType:
        return self.model.media

    def spec(self, seed: int) -> RenderSpec:
        return RenderSpec(
            media_type=self.media,
            model=self.model.id,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=seed,
            steps=self.steps,
            width=self.width,
            height=self.height,
            output_format=self.output_format,
            guidance=self.guidance,
            sampler=self.sampler,
            scheduler=self.scheduler,
            frames=self.frames,
            fps=self.fps,
            duration=self.duration,
        )


class _Invalid(Exception):
    pass


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"{name} must be a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise _Invalid(f"{name} must be a finite number")
    return number


def _integer(name: str, value: object) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise _Invalid(f"{name} must be a whole number, got {value}")
    return int(number)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        return ""
    if len(value) > MAX_PROMPT_LENGTH:
        raise _Invalid(f"{name} is longer than {MAX_PROMPT_LENGTH} characters")
    return value


def _choice(name: str, value: object, tier_choice: ParamChoice | None) -> str | None:
    """A sampler/scheduler: ``None``/unset takes the tier default; else it must be allowed."""
    if tier_choice is None:
        return None
    if value is None or not isinstance(value, str) or value == "":
        return str(tier_choice.default)
    if value not in tier_choice.allowed:
        allowed = ", ".join(str(a) for a in tier_choice.allowed)
        raise _Invalid(f"{name} {value!r} is not allowed for this model (allowed: {allowed})")
    return value


def _sampling(kf: MediaKeyFrame, tier: MediaTier) -> tuple[str | None, str | None]:
    if tier.comfy:
        sampler = kf.comfy_sampler if isinstance(kf.comfy_sampler, str) else None
        scheduler = kf.comfy_scheduler if isinstance(kf.comfy_scheduler, str) else None
        return (
            _choice("comfySampler", sampler, tier.sampler),
            _choice("comfyScheduler", scheduler, tier.scheduler),
        )
    # Legacy image models: the keyframe's "scheduler" is the sampler, "timeStepSpacing" the
    # scheduler (the official SDKs' mapping).
    return (
        _choice("sampler", kf.scheduler, tier.sampler),
        _choice("scheduler", kf.time_step_spacing, tier.scheduler),
    )


def _plan(request: MediaJobRequest, catalog: MediaCatalog) -> ProjectPlan:
    if not request.job_id or len(request.job_id) > MAX_PROJECT_ID_LENGTH:
        raise _Invalid(f"jobID must be 1 to {MAX_PROJECT_ID_LENGTH} characters")
    if len(request.key_frames) != 1:
        raise _Invalid(f"keyFrames must hold exactly one keyframe, got {len(request.key_frames)}")
    kf = request.key_frames[0]
    model = catalog.get(kf.model_id)
    if model is None:
        raise _Invalid(f"Unknown model {kf.model_id[:200]!r}")
    tier = model.tier
    if not 1 <= request.number_of_images <= MAX_RENDERS:
        raise _Invalid(
            f"numberOfImages must be between 1 and {MAX_RENDERS}, got {request.number_of_images}"
        )
    prompt = _text("positivePrompt", kf.positive_prompt)
    negative = _text("negativePrompt", kf.negative_prompt)
    _text("stylePrompt", kf.style_prompt)
    _text("lyrics", kf.lyrics)
    steps = int(tier.steps.default)
    if not isinstance(kf.steps, UnsetType):
        steps = _integer("steps", kf.steps)
        problem = tier.steps.check("steps", steps)
        if problem:
            raise _Invalid(problem)
    guidance: float | None = tier.guidance.default if tier.guidance is not None else None
    if not isinstance(kf.guidance_scale, UnsetType) and tier.guidance is not None:
        guidance = _number("guidanceScale", kf.guidance_scale)
        problem = tier.guidance.check("guidanceScale", guidance)
        if problem:
            raise _Invalid(problem)
    sampler, scheduler = _sampling(kf, tier)
    width = height = None
    if tier.width is not None and tier.height is not None:
        width, height = int(tier.width.default), int(tier.height.default)
        for name, value, limits in (
            ("width", kf.width, tier.width),
            ("height", kf.height, tier.height),
        ):
            if isinstance(value, UnsetType):
                continue
            size = _integer(name, value)
            problem = limits.check(name, size)
            if problem:
                raise _Invalid(problem)
            if name == "width":
                width = size
            else:
                height = size
    elif not isinstance(kf.width, UnsetType) or not isinstance(kf.height, UnsetType):
        raise _Invalid(f"a {model.media} model takes no width or height")
    frames = fps = None
    duration: float | None = None
    if model.media == "video":
        assert tier.fps is not None  # MediaModelSpec checks a video tier has both
        assert tier.duration is not None
        fps = int(tier.fps.default)
        if not isinstance(kf.fps, UnsetType):
            fps = _integer("fps", kf.fps)
            if fps not in tier.fps.allowed:
                allowed = ", ".join(str(a) for a in tier.fps.allowed)
                raise _Invalid(f"fps {fps} is not allowed for this model (allowed: {allowed})")
        if not isinstance(kf.frames, UnsetType):
            frames = _integer("frames", kf.frames)
            if not 1 <= frames <= model.max_frames:
                raise _Invalid(f"frames must be between 1 and {model.max_frames}, got {frames}")
            duration = (frames - 1) / (16 if model.frames_rule == "wan" else fps)
        else:
            duration = float(tier.duration.default)
            if not isinstance(kf.duration, UnsetType):
                duration = _number("duration", kf.duration)
            frames = model.frames(duration, fps)
        problem = tier.duration.check("duration", duration)
        if problem:
            raise _Invalid(problem)
    elif model.media == "audio":
        assert tier.duration is not None
        duration = float(tier.duration.default)
        if not isinstance(kf.duration, UnsetType):
            duration = _number("duration", kf.duration)
        problem = tier.duration.check("duration", duration)
        if problem:
            raise _Invalid(problem)
        if tier.bpm is not None and not isinstance(kf.bpm, UnsetType):
            problem = tier.bpm.check("bpm", _number("bpm", kf.bpm))
            if problem:
                raise _Invalid(problem)
        for name in ("timesignature", "language"):
            choice = tier.extra.get(name)
            value: object = getattr(kf, name)
            if choice is None or isinstance(value, UnsetType):
                continue
            if str(value) not in {str(a) for a in choice.allowed}:
                allowed = ", ".join(str(a) for a in choice.allowed)
                raise _Invalid(f"{name} {value!r} is not allowed (allowed: {allowed})")
    elif not isinstance(kf.frames, UnsetType) or not isinstance(kf.duration, UnsetType):
        raise _Invalid("an image model takes no frames or duration")
    formats = OUTPUT_FORMATS[model.media]
    output_format = formats[0]
    if isinstance(request.output_format, str):
        output_format = request.output_format.lower()
        if output_format not in formats:
            raise _Invalid(
                f"outputFormat {request.output_format[:40]!r} is not available for {model.media} "
                f"(allowed: {', '.join(formats)})"
            )
    seed: int | None = None
    if not isinstance(kf.seed, UnsetType):
        seed = kf.seed
        if not 0 <= seed <= MAX_SEED:
            raise _Invalid(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    token_type: Literal["sogni", "spark"] = (
        request.token_type if isinstance(request.token_type, str) else "sogni"
    )
    return ProjectPlan(
        model=model,
        count=request.number_of_images,
        prompt=prompt,
        negative_prompt=negative,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        duration=duration,
        sampler=sampler,
        scheduler=scheduler,
        seed=seed,
        output_format=output_format,
        token_type=token_type,
    )


def plan_project(request: MediaJobRequest, catalog: MediaCatalog) -> ProjectPlan | str:
    """Validate ``request`` against ``catalog``: the resolved :class:`ProjectPlan`, or a clear
    message saying what is wrong (unknown model, a value out of its tier's range, a sampler not
    allowed, too many renders, an oversized prompt ...). Never raises."""
    try:
        return _plan(request, catalog)
    except _Invalid as exc:
        return str(exc)


# --- state -----------------------------------------------------------------------------------------

RenderState = Literal["queued", "assigned", "started", "completed", "failed", "canceled"]
ProjectStatus = Literal["queued", "active", "completed", "errored", "cancelled"]
AppKey = tuple[str, str]


def new_render_id() -> str:
    """A fresh render id (``imgID``): an upper-case UUID, as the real network mints them."""
    return str(uuid.uuid4()).upper()


class Render(Schedulable):
    """One render of a project: a schedulable unit of work with its own ``img_id`` per attempt.

    ``index`` is its ``jobIndex`` (stable across retries); ``hold`` is the balance reserved for
    it (``None``: not billed, or already settled or released).
    """

    def __init__(self, project: Project, index: int, seq: int) -> None:
        super().__init__(model=project.plan.model.id, account=project.account, seq=seq)
        self.project = project
        self.index = index
        self.img_id: str | None = None
        self.attempts = 0
        self.state: RenderState = "queued"
        self.step = 0
        self.seed = 0
        self.worker_name: str | None = None
        self.hold: Hold | None = None
        self.nsfw = False
        self.output_format: str | None = None
        self.attempt_scope: trio.CancelScope | None = None
        self.worker_lost = False
        """Set when the render's worker was removed mid-render (the attempt is retried)."""

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "canceled")


class Project:
    """The server-side state of one media project, owned by an app ``(account, appId)``."""

    def __init__(
        self,
        *,
        request: MediaJobRequest,
        plan: ProjectPlan,
        account: str,
        app_id: str,
        created_ms: int,
        request_json: bytes,
    ) -> None:
        self.request = request
        self.plan = plan
        self.job_id = request.job_id
        self.key = request.job_id.upper()
        self.account = account
        self.app_id = app_id
        self.created_ms = created_ms
        self.request_json = request_json
        self.renders: list[Render] = []
        self.status: ProjectStatus = "queued"
        self.reason: str | None = None
        self.cancel_scope = trio.CancelScope()
        self.silenced = False
        """Set once the project ended from outside its task: it sends nothing more."""
        self.claimed = False
        """Whether a socket of its app received its final frame (else it is *unclaimed*)."""
        self.finished_at: float | None = None
        self.done = trio.Event()

    @property
    def app_key(self) -> AppKey:
        return (self.account, self.app_id)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "errored", "cancelled")

    @property
    def size(self) -> int:
        """Accounted bytes of a finished project's record (for the bounded record store)."""
        return 2 * len(self.request_json) + 256 * (1 + len(self.renders))
