"""The media model catalog: models, their tiers (option ranges) and the price of a render.

Everything here is plain immutable data; nothing does I/O. The wire shapes are those the official
SDKs parse (media-protocol.md §1):

* ``GET /api/v1/models/list`` → ``[{id, name, SID, tier, media}]`` (:meth:`MediaCatalog.model_list`);
* ``GET /api/v2/models/tiers`` → ``{tierName: tier}`` (:meth:`MediaCatalog.tiers`), where a tier
  carries ``type`` (the media type), ``benchmark``, ``{min, max, default[, decimals]}`` ranges
  (``steps``, ``guidance``, ``width``, ``height``, ``duration``, ``bpm`` ...) and ``{allowed,
  default}`` choices (``sampler``/``scheduler``, or ``comfySampler``/``comfyScheduler`` for Comfy
  models; ``fps``, ``timesignature``, ``language`` ...).

The default catalog uses real Sogni model ids: two image models (``flux1-schnell-fp8``, legacy
sampler fields, and ``z_image_turbo_bf16``, a Comfy model), one video model
(``wan_v2.2-14b-fp8_t2v_lightx2v``, frames ``16·duration+1``) and one music model
(``ace_step_1.5_turbo``). The option ranges are localnet's own (the real network's change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from types import MappingProxyType
from typing import Final, Literal

from ...protocol import MediaType
from .._config import Pricing, format_decimal

__all__ = [
    "DEFAULT_MEDIA_MODELS",
    "MediaCatalog",
    "MediaModelSpec",
    "MediaPricing",
    "MediaTier",
    "ParamChoice",
    "ParamRange",
    "RenderQuote",
]

FramesRule = Literal["wan", "ltx", "fps"]
"""How a video model turns ``duration`` and ``fps`` into a frame count: ``wan`` ``16·d+1``,
``ltx`` ``fps·d+1`` snapped down to ``8n+1``, ``fps`` ``fps·d+1``."""


@dataclass(frozen=True, kw_only=True)
class ParamRange:
    """A numeric option: ``min <= value <= max``, ``default`` when absent. ``decimals`` (a
    tier's precision hint, e.g. 1 for guidance) is sent only when set."""

    min: float
    max: float
    default: float
    decimals: int | None = None

    def __post_init__(self) -> None:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"need min <= default <= max, got {self}")

    def wire(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "min": _num(self.min),
            "max": _num(self.max),
            "default": _num(self.default),
        }
        if self.decimals is not None:
            out["decimals"] = self.decimals
        return out

    def check(self, name: str, value: float) -> str | None:
        """What is wrong with ``value`` for the option ``name``, or ``None``."""
        if not self.min <= value <= self.max:
            return (
                f"{name} must be between {_num(self.min)} and {_num(self.max)}, got {_num(value)}"
            )
        return None


@dataclass(frozen=True, kw_only=True)
class ParamChoice:
    """An option from a list (``allowed``), ``default`` when absent."""

    allowed: tuple[str | int, ...]
    default: str | int

    def __post_init__(self) -> None:
        if self.default not in self.allowed:
            raise ValueError(f"the default {self.default!r} is not among {self.allowed!r}")

    def wire(self) -> dict[str, object]:
        return {"allowed": list(self.allowed), "default": self.default}


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True, kw_only=True)
class MediaTier:
    """One tier of ``/api/v2/models/tiers``: what a project of its models may ask for.

    ``comfy`` names the sampler options ``comfySampler`` / ``comfyScheduler`` (and makes the
    keyframe carry them under those names); otherwise ``sampler`` / ``scheduler`` (carried in the
    keyframe's legacy ``scheduler`` / ``timeStepSpacing``). ``extra`` holds further ``{allowed,
    default}`` choices by wire name (``timesignature``, ``language``, ``keyscale``).
    """

    name: str
    type: MediaType
    benchmark: int = 1
    steps: ParamRange
    guidance: ParamRange | None = None
    width: ParamRange | None = None
    height: ParamRange | None = None
    duration: ParamRange | None = None
    fps: ParamChoice | None = None
    bpm: ParamRange | None = None
    sampler: ParamChoice | None = None
    scheduler: ParamChoice | None = None
    comfy: bool = False
    extra: Mapping[str, ParamChoice] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def wire(self) -> dict[str, object]:
        """The tier as ``/api/v2/models/tiers`` sends it."""
        out: dict[str, object] = {"type": self.type, "benchmark": self.benchmark}
        for name in ("steps", "guidance", "width", "height", "duration", "bpm"):
            value: ParamRange | None = getattr(self, name)
            if value is not None:
                out[name] = value.wire()
        if self.fps is not None:
            out["fps"] = self.fps.wire()
        prefix = ("comfySampler", "comfyScheduler") if self.comfy else ("sampler", "scheduler")
        if self.sampler is not None:
            out[prefix[0]] = self.sampler.wire()
        if self.scheduler is not None:
            out[prefix[1]] = self.scheduler.wire()
        for name, choice in self.extra.items():
            out[name] = choice.wire()
        return out


@dataclass(frozen=True, kw_only=True)
class MediaModelSpec:
    """One media model: its id, display ``name``, numeric ``sid`` (``SID`` on the wire), media
    type, :class:`MediaTier`, and for video its frames rule (``wan``: ``16·d+1``; ``ltx``:
    ``fps·d+1`` snapped down to ``8n+1``; ``fps``: ``fps·d+1``) and frame limit."""

    id: str
    name: str
    sid: int
    tier: MediaTier
    frames_rule: Literal["wan", "ltx", "fps"] | None = None
    max_frames: int = 481

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a media model needs an id")
        tier = self.tier
        if tier.type == "video" and (
            self.frames_rule is None or tier.fps is None or tier.duration is None
        ):
            raise ValueError(f"video model {self.id!r} needs a frames_rule, fps and duration")
        if tier.type == "audio" and tier.duration is None:
            raise ValueError(f"audio model {self.id!r} needs a duration range")

    @property
    def media(self) -> MediaType:
        return self.tier.type

    def frames(self, duration: float, fps: float) -> int:
        """The frame count of ``duration`` seconds at ``fps`` (as the official SDKs compute it)."""
        if self.frames_rule == "wan":
            return _js_round(duration * 16) + 1
        count = _js_round(duration * fps) + 1
        if self.frames_rule == "ltx":
            count = ((count - 1) // 8) * 8 + 1
        return count


def _js_round(value: float) -> int:
    return int(Decimal(value).to_integral_value(rounding="ROUND_HALF_UP"))


_RANGE_STEPS_FAST = ParamRange(min=1, max=12, default=4)
_SIZE = ParamRange(min=256, max=2048, default=1024)

FLUX_SCHNELL_TIER: Final = MediaTier(
    name="flux-schnell",
    type="image",
    benchmark=4,
    steps=_RANGE_STEPS_FAST,
    guidance=ParamRange(min=0, max=10, default=1, decimals=1),
    width=_SIZE,
    height=_SIZE,
    sampler=ParamChoice(allowed=("euler", "euler_a", "dpmpp_2m", "lcm"), default="euler"),
    scheduler=ParamChoice(allowed=("simple", "normal", "karras", "sgm_uniform"), default="simple"),
)
Z_IMAGE_TURBO_TIER: Final = MediaTier(
    name="z-image-turbo",
    type="image",
    benchmark=6,
    steps=ParamRange(min=4, max=16, default=8),
    guidance=ParamRange(min=0.5, max=5, default=1, decimals=1),
    width=ParamRange(min=256, max=2560, default=1024),
    height=ParamRange(min=256, max=2560, default=1024),
    sampler=ParamChoice(allowed=("res_multistep", "euler", "dpmpp_2m"), default="res_multistep"),
    scheduler=ParamChoice(allowed=("simple", "beta", "sgm_uniform"), default="simple"),
    comfy=True,
)
WAN_T2V_TIER: Final = MediaTier(
    name="wan-v2.2-lightx2v",
    type="video",
    benchmark=120,
    steps=ParamRange(min=4, max=8, default=4),
    guidance=ParamRange(min=1, max=5, default=1, decimals=1),
    width=ParamRange(min=480, max=1280, default=640),
    height=ParamRange(min=480, max=1280, default=640),
    duration=ParamRange(min=1, max=10, default=5),
    fps=ParamChoice(allowed=(16, 32), default=16),
    sampler=ParamChoice(allowed=("euler", "uni_pc"), default="euler"),
    scheduler=ParamChoice(allowed=("simple", "beta"), default="simple"),
    comfy=True,
)
ACE_STEP_TIER: Final = MediaTier(
    name="ace-step-turbo",
    type="audio",
    benchmark=20,
    steps=ParamRange(min=4, max=16, default=8),
    guidance=ParamRange(min=1, max=10, default=1, decimals=1),
    duration=ParamRange(min=10, max=240, default=30),
    bpm=ParamRange(min=30, max=300, default=120),
    sampler=ParamChoice(allowed=("euler",), default="euler"),
    scheduler=ParamChoice(allowed=("simple",), default="simple"),
    comfy=True,
    extra=MappingProxyType(
        {
            "timesignature": ParamChoice(allowed=("2", "3", "4", "6"), default="4"),
            "language": ParamChoice(allowed=("en", "es", "fr", "de", "ja", "zh"), default="en"),
        }
    ),
)

DEFAULT_MEDIA_MODELS: Final[tuple[MediaModelSpec, ...]] = (
    MediaModelSpec(id="flux1-schnell-fp8", name="FLUX.1 [schnell]", sid=1, tier=FLUX_SCHNELL_TIER),
    MediaModelSpec(id="z_image_turbo_bf16", name="Z-Image Turbo", sid=2, tier=Z_IMAGE_TURBO_TIER),
    MediaModelSpec(
        id="wan_v2.2-14b-fp8_t2v_lightx2v",
        name="WAN 2.2 Text to Video (LightX2V)",
        sid=3,
        tier=WAN_T2V_TIER,
        frames_rule="wan",
    ),
    MediaModelSpec(id="ace_step_1.5_turbo", name="ACE-Step 1.5 Turbo", sid=4, tier=ACE_STEP_TIER),
)
"""localnet's default media models (one tier each)."""


_ROUND: Final = Decimal("1e-12")


@dataclass(frozen=True)
class RenderQuote:
    """The price of one render in USD and every token type (``token``: the asked-for one),
    each rounded once to 12 decimal places, so a quote and the amount settled agree exactly."""

    usd: Decimal
    sogni: Decimal
    spark: Decimal
    token: Decimal

    def wire(self) -> dict[str, str]:
        """``{costInUSD, costInToken, costInSogni, costInSpark}`` as decimal strings."""
        return {
            "costInUSD": format_decimal(self.usd),
            "costInToken": format_decimal(self.token),
            "costInSogni": format_decimal(self.sogni),
            "costInSpark": format_decimal(self.spark),
        }


def _usd(value: Decimal | int | str, where: str) -> Decimal:
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0 or amount > 10**6:
        raise ValueError(f"{where} must be between 0 and 1000000 USD, got {value}")
    return amount


@dataclass(frozen=True, kw_only=True)
class MediaPricing:
    """The price of one render, in USD: per model (``models``), else per media type
    (``per_type``; defaults: image 0.002, video 0.05, audio 0.01). Token amounts use the chat
    :class:`~trio_sogni.localnet.Pricing`'s exchange rates, so one table converts everything.
    A project of ``n`` renders holds ``n`` render prices and settles one per finished render."""

    per_type: Mapping[MediaType, Decimal] = field(
        default_factory=lambda: MappingProxyType(
            {"image": Decimal("0.002"), "video": Decimal("0.05"), "audio": Decimal("0.01")}
        ),
        hash=False,
    )
    models: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        per_type = {k: _usd(v, f"the {k} render price") for k, v in self.per_type.items()}
        for kind in ("image", "video", "audio"):
            per_type.setdefault(kind, Decimal(0))
        models = {k: _usd(v, f"the render price of {k!r}") for k, v in self.models.items()}
        object.__setattr__(self, "per_type", MappingProxyType(per_type))
        object.__setattr__(self, "models", MappingProxyType(models))

    def usd(self, model: MediaModelSpec) -> Decimal:
        """The USD price of one render of ``model``."""
        price = self.models.get(model.id)
        return price if price is not None else self.per_type[model.media]

    def quote(
        self, model: MediaModelSpec, token_type: Literal["sogni", "spark"], rates: Pricing
    ) -> RenderQuote:
        """The price of one render of ``model`` in ``token_type`` (rates from ``rates``)."""
        with localcontext(prec=60):
            usd = self.usd(model)
            sogni = rates.in_token(usd, "sogni").quantize(_ROUND)
            spark = rates.in_token(usd, "spark").quantize(_ROUND)
            usd = usd.quantize(_ROUND)
        return RenderQuote(
            usd=usd, sogni=sogni, spark=spark, token=sogni if token_type == "sogni" else spark
        )


class MediaCatalog:
    """The network's media models by id, with the REST views the SDKs read."""

    def __init__(self, models: Sequence[MediaModelSpec]) -> None:
        by_id: dict[str, MediaModelSpec] = {}
        tiers: dict[str, MediaTier] = {}
        sids: set[int] = set()
        for model in models:
            if model.id in by_id:
                raise ValueError(f"media model ids must be unique: {model.id!r}")
            if model.sid in sids:
                raise ValueError(f"media model SIDs must be unique: {model.sid}")
            known = tiers.get(model.tier.name)
            if known is not None and known != model.tier:
                raise ValueError(f"two different tiers are named {model.tier.name!r}")
            by_id[model.id] = model
            tiers[model.tier.name] = model.tier
            sids.add(model.sid)
        self.models: Mapping[str, MediaModelSpec] = MappingProxyType(by_id)
        self._tiers = tiers

    def get(self, model_id: str) -> MediaModelSpec | None:
        return self.models.get(model_id)

    def model_list(self) -> list[dict[str, object]]:
        """``GET /api/v1/models/list``: ``[{id, name, SID, tier, media}]``."""
        return [
            {"id": m.id, "name": m.name, "SID": m.sid, "tier": m.tier.name, "media": m.media}
            for m in self.models.values()
        ]

    def tiers(self) -> dict[str, dict[str, object]]:
        """``GET /api/v2/models/tiers``: ``{tierName: tier}``."""
        return {name: tier.wire() for name, tier in self._tiers.items()}
