"""Media projects: what the projects manager needs of result storage, request validation, and
the state of one project and its renders (workers are ``_render.MediaWorker``s).

A project (one ``jobRequest``) makes ``numberOfImages`` *renders*. Each render is a
:class:`~trio_sogni.localnet._jobs._scheduler.Schedulable`, so renders queue in the same
scheduler as LLM jobs, fairly between accounts. Nothing here does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

import trio
from msgspec import UnsetType

from ...protocol import MediaJobRequest, MediaKeyFrame, MediaType, ServerMessage
from .._jobs._replay import ReplayLog
from .._jobs._scheduler import Schedulable
from ._catalog import MediaCatalog, MediaModelSpec, MediaTier, ParamChoice
from ._render import MediaInput, RenderedMedia, RenderSpec

if TYPE_CHECKING:
    from .._accounts._ledger import Hold

__all__ = [
    "MAX_PROMPT_LENGTH",
    "MAX_RENDERS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "AppKey",
    "Project",
    "ProjectPlan",
    "ProjectStatus",
    "Render",
    "ResultStorage",
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


# --- what the manager needs of storage (workers: ``_render.MediaWorker``) -------------------------


class ResultStorage(Protocol):
    """What the projects manager needs of result storage (``_storage.MediaStorage`` is one):
    finished renders are stored under ``(account, project, render)``; uploaded inputs are read
    by role; a finished project's uploads are discarded."""

    async def store_result(
        self, account_id: str, project_id: str, render_id: str, media: RenderedMedia
    ) -> object: ...

    def upload_roles(self, account_id: str, project_id: str) -> list[str]: ...

    async def read_upload(
        self, account_id: str, project_id: str, role: str
    ) -> MediaInput | None: ...

    def discard_project(self, account_id: str, project_id: str) -> None: ...


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
    style_prompt: str = ""
    strength: float = 0.5
    bpm: float | None = None
    input_roles: tuple[str, ...] = ()
    """The keyframe's flagged media inputs (``startingImage``, ``contextImage1`` ...): each must
    have been uploaded for the project."""

    @property
    def media(self) -> MediaType:
        return self.model.media

    def spec(self, seed: int, inputs: Mapping[str, MediaInput]) -> RenderSpec:
        """The :class:`RenderSpec` of one render (``seed`` is the render's own)."""
        return RenderSpec(
            media_type=self.media,
            model_id=self.model.id,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            style_prompt=self.style_prompt,
            seed=seed,
            steps=self.steps,
            width=self.width or 512,
            height=self.height or 512,
            output_format=self.output_format,
            guidance=self.guidance,
            strength=self.strength,
            frames=self.frames,
            fps=self.fps,
            duration=self.duration,
            bpm=self.bpm,
            inputs=inputs,
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
    strength = _number("strength", kf.strength)
    if not 0 <= strength <= 1:
        raise _Invalid(f"strength must be between 0 and 1, got {strength}")
    bpm = None if isinstance(kf.bpm, UnsetType) else _number("bpm", kf.bpm)
    roles = [f"contextImage{n}" for n in kf.context_images()]
    for role, flag in (
        ("startingImage", kf.has_starting_image),
        ("referenceImage", kf.has_reference_image),
        ("referenceImageEnd", kf.has_reference_image_end),
        ("referenceAudio", kf.has_reference_audio),
        ("referenceVideo", kf.has_reference_video),
    ):
        if flag is True:
            roles.append(role)
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
        style_prompt=_text("stylePrompt", kf.style_prompt),
        strength=strength,
        bpm=bpm if model.media == "audio" else None,
        input_roles=tuple(sorted(roles)),
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
        self.replay = ReplayLog()
        self.inputs: Mapping[str, MediaInput] = {}
        """The uploaded inputs by role, read once when the project starts."""
        self.observer: Callable[[ServerMessage], None] | None = None
        """Called (synchronously, in the project's task) with every frame the project emits,
        before it is delivered; set by server-side callers such as the hosted creative tools."""
        """The project's frames, numbered (the jobs' delivery keeps them for resuming clients)."""

    @property
    def app_key(self) -> AppKey:
        return (self.account, self.app_id)

    @property
    def scope(self) -> tuple[str, str]:
        """``(account, upper-case id)``: project ids are scoped to their account."""
        return (self.account, self.key)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "errored", "cancelled")

    @property
    def size(self) -> int:
        """Accounted bytes of a finished project's record (for the bounded record store)."""
        return 2 * len(self.request_json) + 256 * (1 + len(self.renders))
