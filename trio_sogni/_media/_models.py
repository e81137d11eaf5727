"""The media model catalog on the client: ``GET /api/v1/models/list`` (the models: id, name,
SID, tier, media) and ``GET /api/v2/models/tiers`` (each tier's media type and option
constraints), fetched from the socket host, cached for 24 hours, and used to check a project's
options and fill in the tier's defaults before anything is sent.

Both answers are decoded by the guarded JSON decoder (`trio_sogni.protocol.decode_json`, in
`RestClient`), then converted to the Structs below, which ignore fields they do not know. A
model entry or a tier that does not convert is skipped (and logged), so one odd entry upstream
never hides the rest of the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, TypeAlias

import msgspec
import trio

from .._errors import InvalidRequestError, ProtocolError
from .._transport import RestClient
from ._request import MediaType, ProjectOptions, check_options

__all__ = [
    "CATALOG_TTL",
    "MediaCatalog",
    "MediaModel",
    "MediaModelCatalog",
    "ModelOptions",
    "ModelTier",
    "TierOption",
]

logger = logging.getLogger("trio_sogni.media")

CATALOG_TTL: Final = 24 * 60 * 60.0
"""Seconds a fetched catalog stays fresh (the official SDKs' 24 hours)."""

Scalar: TypeAlias = str | int | float | bool | None


class MediaModel(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``GET /api/v1/models/list``: ``{id, name, SID, tier, media}``."""

    id: str
    name: str | None = None
    sid: int | str | None = msgspec.field(name="SID", default=None)
    tier: str | None = None
    media: str | None = None


class TierOption(msgspec.Struct, frozen=True, kw_only=True):
    """One option constraint of a tier: a range ``{min, max, default, decimals?, step?}`` or a
    list ``{allowed, default}`` (a video tier's ``fps`` is a range, other tiers' a list)."""

    min: float | None = None
    max: float | None = None
    default: Scalar = None
    allowed: list[Scalar] | None = None
    decimals: int | None = None
    step: float | None = None


class ModelTier(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One value of ``GET /api/v2/models/tiers`` (``{tierName: tier}``): the media ``type``
    and the constraints the SDKs read (``comfySampler``/``comfyScheduler`` replace
    ``sampler``/``scheduler`` on Comfy models)."""

    type: str = "image"
    steps: TierOption | None = None
    guidance: TierOption | None = None
    width: TierOption | None = None
    height: TierOption | None = None
    duration: TierOption | None = None
    fps: TierOption | None = None
    bpm: TierOption | None = None
    prompt_strength: TierOption | None = None
    creativity: TierOption | None = None
    sampler: TierOption | None = None
    scheduler: TierOption | None = None
    comfy_sampler: TierOption | None = None
    comfy_scheduler: TierOption | None = None
    timesignature: TierOption | None = None
    language: TierOption | None = None
    keyscale: TierOption | None = None


# Tiers name some samplers and schedulers for people; the wire takes the ids (the SDKs map
# these before validating).
_SAMPLER_IDS: Final = {
    "Euler": "euler",
    "Euler a": "euler_a",
    "Euler Ancestral": "euler_ancestral",
    "Heun": "heun",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ SDE": "dpmpp_sde",
    "DPM++ 3M SDE": "dpmpp_3m_sde",
    "UniPC": "uni_pc",
    "LCM (Latent Consistency Model)": "lcm",
}
_SCHEDULER_IDS: Final = {
    "Simple": "simple",
    "Normal": "normal",
    "Karras": "karras",
    "Exponential": "exponential",
    "SGM Uniform": "sgm_uniform",
    "DDIM Uniform": "ddim_uniform",
    "Beta": "beta",
    "Linear Quadratic": "linear_quadratic",
    "KL Optimal": "kl_optimal",
    "DDIM": "ddim",
    "Leading": "leading",
    "Linear": "linear",
}

# (option attribute, tier field, wire name used in messages, media types it applies to)
_RANGES: Final = (
    ("steps", "steps", ("image", "video", "audio")),
    ("guidance", "guidance", ("image", "video", "audio")),
    ("width", "width", ("image", "video")),
    ("height", "height", ("image", "video")),
    ("duration", "duration", ("video", "audio")),
    ("bpm", "bpm", ("audio",)),
    ("prompt_strength", "prompt_strength", ("audio",)),
    ("creativity", "creativity", ("audio",)),
)
_CHOICES: Final = (
    ("timesignature", "timesignature"),
    ("language", "language"),
    ("keyscale", "keyscale"),
)


def _number(value: Scalar) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """A model with its tier: what its projects may ask for. `validate` checks options
    against it and `apply_defaults` fills what the caller left out."""

    model: MediaModel
    tier_name: str
    tier: ModelTier

    @property
    def media_type(self) -> str:
        """The tier's ``type``: ``image``, ``video`` or ``audio``."""
        return self.tier.type

    @property
    def comfy(self) -> bool:
        """Whether the tier states ``comfySampler``/``comfyScheduler``."""
        return self.tier.comfy_sampler is not None or self.tier.comfy_scheduler is not None

    def samplers(self) -> TierOption | None:
        """The sampler list (``comfySampler`` or ``sampler``), names mapped to wire ids."""
        return _mapped(self.tier.comfy_sampler or self.tier.sampler, _SAMPLER_IDS)

    def schedulers(self) -> TierOption | None:
        """The scheduler list (``comfyScheduler`` or ``scheduler``), names mapped to ids."""
        return _mapped(self.tier.comfy_scheduler or self.tier.scheduler, _SCHEDULER_IDS)

    def validate(self, options: ProjectOptions) -> None:
        """Check ``options`` on their own (``check_options``), then against this model's tier.
        Synchronous; sends nothing.

        Raises:
            InvalidRequestError: the tier makes another media type; steps, guidance, width,
                height, duration, fps, bpm, prompt strength or creativity outside the tier's
                range; a sampler, scheduler (``comfySampler``/``comfyScheduler`` on Comfy
                models), fps, time signature, language or key not in its ``allowed`` list. The
                message names the option, the value and the allowed range or list.
        """
        check_options(options)
        model = self.model.id
        if options.type != self.media_type:
            raise InvalidRequestError(
                f"model {model!r} makes {self.media_type}, not {options.type} "
                f"(its tier {self.tier_name!r}); use a {options.type} model"
            )
        for attribute, field, types in _RANGES:
            if options.type not in types:
                continue
            value = getattr(options, attribute)
            constraint: TierOption | None = getattr(self.tier, field)
            if value is not None and constraint is not None:
                self._check_range(attribute, value, constraint)
        if options.fps is not None and self.tier.fps is not None:
            if self.tier.fps.allowed:
                self._check_choice("fps", options.fps, self.tier.fps)
            else:
                self._check_range("fps", options.fps, self.tier.fps)
        sampler_name = "comfySampler" if self.comfy else "sampler"
        scheduler_name = "comfyScheduler" if self.comfy else "scheduler"
        samplers, schedulers = self.samplers(), self.schedulers()
        if options.sampler is not None and samplers is not None:
            self._check_choice(f"sampler ({sampler_name})", options.sampler, samplers)
        if options.scheduler is not None and schedulers is not None:
            self._check_choice(f"scheduler ({scheduler_name})", options.scheduler, schedulers)
        for attribute, field in _CHOICES:
            value = getattr(options, attribute)
            constraint = getattr(self.tier, field)
            if value is not None and constraint is not None:
                self._check_choice(attribute, value, constraint)

    def apply_defaults(self, options: ProjectOptions) -> ProjectOptions:
        """``options`` with the tier's defaults where the caller gave ``None``: steps,
        guidance, sampler, scheduler; video fps and duration (when no frame count is given);
        audio duration, bpm, time signature, language and key. Sizes are left to the model's
        own default. Pure; call `validate` too (this does not check)."""
        changes: dict[str, Any] = {}

        def default(attribute: str, constraint: TierOption | None, *, integer: bool) -> None:
            if getattr(options, attribute) is not None or constraint is None:
                return
            value = constraint.default
            number = _number(value)
            if number is None:
                return
            changes[attribute] = round(number) if integer else number

        default("steps", self.tier.steps, integer=True)
        default("guidance", self.tier.guidance, integer=False)
        for attribute, constraint in (
            ("sampler", self.samplers()),
            ("scheduler", self.schedulers()),
        ):
            if (
                getattr(options, attribute) is None
                and constraint is not None
                and isinstance(constraint.default, str)
                and constraint.default
            ):
                changes[attribute] = constraint.default
        if options.type == "video":
            default("fps", self.tier.fps, integer=False)
            if options.frames is None:
                default("duration", self.tier.duration, integer=False)
        elif options.type == "audio":
            default("duration", self.tier.duration, integer=False)
            default("bpm", self.tier.bpm, integer=True)
            for attribute, field in _CHOICES:
                constraint = getattr(self.tier, field)
                if (
                    getattr(options, attribute) is None
                    and constraint is not None
                    and constraint.default is not None
                    and not isinstance(constraint.default, bool)
                ):
                    changes[attribute] = str(constraint.default)
        return replace(options, **changes) if changes else options

    def _check_range(self, name: str, value: float, constraint: TierOption) -> None:
        low, high = constraint.min, constraint.max
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f"{_fmt(low)} to {_fmt(high)}"
                if low is not None and high is not None
                else f"at least {_fmt(low)}"
                if low is not None
                else f"at most {_fmt(high)}"  # pyright: ignore[reportArgumentType]
            )
            raise InvalidRequestError(
                f"{name} {_fmt(value)} is out of range for model {self.model.id!r}: "
                f"the allowed range is {bounds}"
            )

    def _check_choice(self, name: str, value: object, constraint: TierOption) -> None:
        allowed = [item for item in constraint.allowed or () if item is not None]
        if not allowed:
            return
        if isinstance(value, int | float) and not isinstance(value, bool):
            found = any(_number(item) == value for item in allowed)
        else:
            found = any(str(item) == value for item in allowed)
        if not found:
            shown = value if isinstance(value, int | float) else repr(str(value)[:64])
            raise InvalidRequestError(
                f"{name} {shown} is not allowed for model {self.model.id!r}: "
                f"allowed are {', '.join(str(item) for item in allowed)}"
            )


def _mapped(option: TierOption | None, ids: Mapping[str, str]) -> TierOption | None:
    if option is None:
        return None

    def wire(item: Scalar) -> Scalar:
        return ids.get(item, item) if isinstance(item, str) else item

    return msgspec.structs.replace(
        option,
        allowed=None if option.allowed is None else [wire(item) for item in option.allowed],
        default=wire(option.default),
    )


@dataclass(frozen=True, slots=True)
class MediaCatalog:
    """One fetch of both lists: ``models`` by id, ``tiers`` by name, and when it was fetched
    (in the catalog's clock)."""

    models: Mapping[str, MediaModel]
    tiers: Mapping[str, ModelTier]
    fetched_at: float

    def options_for(self, model: str) -> ModelOptions:
        """The `ModelOptions` of ``model``.

        Raises:
            InvalidRequestError: the catalog does not list ``model``, or lists it with a tier
                the tiers list does not have.
        """
        entry = self.models.get(model)
        if entry is None:
            known = sorted(self.models)
            shown = ", ".join(known[:20]) + (
                f" and {len(known) - 20} more" if len(known) > 20 else ""
            )
            raise InvalidRequestError(
                f"unknown media model {model[:128]!r}; the Supernet lists: {shown or 'none'}"
            )
        tier = self.tiers.get(entry.tier or "")
        if tier is None:
            raise InvalidRequestError(
                f"media model {model!r} has tier {entry.tier!r}, which the tiers list lacks"
            )
        return ModelOptions(model=entry, tier_name=entry.tier or "", tier=tier)

    def of_type(self, media_type: MediaType) -> list[MediaModel]:
        """The models whose tier makes ``media_type``, in catalog order."""
        return [
            model
            for model in self.models.values()
            if (tier := self.tiers.get(model.tier or "")) is not None and tier.type == media_type
        ]


def _convert_models(body: object) -> dict[str, MediaModel]:
    if not isinstance(body, list):
        raise ProtocolError(
            f"unexpected /api/v1/models/list answer: a {type(body).__name__}, not a list"
        )
    items: list[object] = body  # pyright: ignore[reportUnknownVariableType]
    models: dict[str, MediaModel] = {}
    skipped = 0
    for item in items:
        try:
            model = msgspec.convert(item, MediaModel)
        except msgspec.ValidationError:
            skipped += 1
            continue
        models[model.id] = model
    if skipped:
        logger.warning("skipped %d malformed entries of /api/v1/models/list", skipped)
    return models


def _convert_tiers(body: object) -> dict[str, ModelTier]:
    if not isinstance(body, dict):
        raise ProtocolError(
            f"unexpected /api/v2/models/tiers answer: a {type(body).__name__}, not an object"
        )
    entries: dict[str, object] = body  # pyright: ignore[reportUnknownVariableType]
    tiers: dict[str, ModelTier] = {}
    for name, value in entries.items():
        try:
            tiers[name] = msgspec.convert(value, ModelTier)
        except msgspec.ValidationError as exc:
            logger.warning("skipped the malformed media tier %r: %s", name[:64], exc)
    return tiers


class _Flight:
    """One fetch in progress, shared by every caller that arrives while it runs."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None


class MediaModelCatalog:
    """The media models and tiers, fetched on first use and cached for ``ttl`` seconds.

    ``clock`` gives the time the cache ages by (``trio.current_time`` by default, so a
    `trio.testing.MockClock` drives it). Refreshes are single-flight: callers that arrive while
    a fetch runs wait for it and share its result or its error; if the caller running the
    fetch is cancelled, the fetch stops and the next waiter starts a new one, so no waiter
    hangs. Cancellable at every step.
    """

    def __init__(
        self,
        rest: RestClient,
        *,
        ttl: float = CATALOG_TTL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive")
        self._rest = rest
        self._ttl = ttl
        self._clock = clock
        self._cached: MediaCatalog | None = None
        self._flight: _Flight | None = None

    @property
    def cached(self) -> MediaCatalog | None:
        """The last catalog fetched (fresh or not), or ``None``."""
        return self._cached

    async def get(self, *, force_refresh: bool = False) -> MediaCatalog:
        """The catalog: the cached one while it is fresh (a checkpoint all the same), else a
        fetch of both lists (shared with concurrent callers; ``force_refresh`` fetches even
        when the cache is fresh, joining a fetch already running).

        Raises:
            APIStatusError: a list could not be fetched (the same error for every caller
                sharing the fetch).
            ProtocolError: a list is not of the shape the SDKs parse.
            ConnectError, TransportError: the requests could not be completed.
        """
        while True:
            cached = self._cached
            if (
                not force_refresh
                and cached is not None
                and self._clock() - cached.fetched_at < self._ttl
            ):
                await trio.lowlevel.checkpoint()
                return cached
            flight = self._flight
            if flight is None:
                return await self._fetch()
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if self._cached is not None and self._cached is not cached:
                return self._cached
            # The fetch was cancelled (or never stored a result): try again.

    async def _fetch(self) -> MediaCatalog:
        flight = self._flight = _Flight()
        try:
            models = _convert_models(
                await self._rest.request("GET", "/api/v1/models/list", base="socket")
            )
            tiers = _convert_tiers(
                await self._rest.request("GET", "/api/v2/models/tiers", base="socket")
            )
            catalog = MediaCatalog(models=models, tiers=tiers, fetched_at=self._clock())
            self._cached = catalog
            return catalog
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            self._flight = None
            flight.done.set()

    async def options_for(self, model: str) -> ModelOptions:
        """`MediaCatalog.options_for` on the current catalog (fetching it if needed)."""
        return (await self.get()).options_for(model)

    async def prepare(self, options: ProjectOptions) -> ProjectOptions:
        """``options`` checked on their own (``check_options``) and against the model's tier,
        with the tier's defaults filled in (`ModelOptions.apply_defaults`, then
        `ModelOptions.validate`). Nothing is sent but the
        catalog fetch, if the cache is stale.

        Raises:
            InvalidRequestError: unknown model, a tier of another media type, an option out of
                range or not allowed (named, with the value and the allowed range or list).
            APIStatusError, ProtocolError, TransportError: as `get`.
        """
        check_options(options)
        model_options = await self.options_for(options.model)
        # The type check first: a video tier's defaults make no sense on an image project.
        if options.type != model_options.media_type:
            model_options.validate(options)
        prepared = model_options.apply_defaults(options)
        model_options.validate(prepared)
        return prepared
