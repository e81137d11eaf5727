"""The media catalog: frames rules, tier validation, prices, and the official Python SDK parsing
our models list and tiers into its model options."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from mediadoubles import rest
from sogni_client.projects import ProjectsApi, create_job_request_message

from trio_sogni.localnet import Pricing, open_local_network
from trio_sogni.localnet._media._catalog import (
    DEFAULT_MEDIA_MODELS,
    MediaCatalog,
    MediaModelSpec,
    MediaPricing,
    MediaTier,
    ParamChoice,
    ParamRange,
)
from trio_sogni.localnet._media._projects import plan_project
from trio_sogni.protocol import decode_client_message, encode_envelope

CATALOG = MediaCatalog(DEFAULT_MEDIA_MODELS)


def model(model_id: str) -> MediaModelSpec:
    spec = CATALOG.get(model_id)
    assert spec is not None
    return spec


@pytest.mark.parametrize(
    ("rule", "duration", "fps", "frames"),
    [("wan", 5, 16, 81), ("wan", 2.5, 32, 41), ("ltx", 5, 24, 121), ("ltx", 2, 25, 49)],
)
def test_frames_rules_match_the_sdks(rule: str, duration: float, fps: int, frames: int) -> None:
    tier = model("wan_v2.2-14b-fp8_t2v_lightx2v").tier
    spec = MediaModelSpec(id="v", name="v", sid=9, tier=tier, frames_rule=rule)  # type: ignore[arg-type]
    assert spec.frames(duration, fps) == frames


def test_catalog_refuses_inconsistent_definitions() -> None:
    tier = model("flux1-schnell-fp8").tier
    with pytest.raises(ValueError, match="unique"):
        MediaCatalog([model("flux1-schnell-fp8"), model("flux1-schnell-fp8")])
    with pytest.raises(ValueError, match="SIDs"):
        MediaCatalog(
            [model("flux1-schnell-fp8"), MediaModelSpec(id="x", name="x", sid=1, tier=tier)]
        )
    with pytest.raises(ValueError, match="needs a frames_rule"):
        MediaModelSpec(
            id="v", name="v", sid=5, tier=MediaTier(name="t", type="video", steps=tier.steps)
        )
    with pytest.raises(ValueError, match="default"):
        ParamRange(min=1, max=2, default=3)
    with pytest.raises(ValueError, match="default"):
        ParamChoice(allowed=("a",), default="b")


def test_render_prices_per_model_and_type_in_every_token() -> None:
    pricing = MediaPricing(models={"flux1-schnell-fp8": Decimal("0.001")})
    rates = Pricing(usd_per_sogni=Decimal("0.02"))
    flux = pricing.quote(model("flux1-schnell-fp8"), "sogni", rates)
    assert (flux.usd, flux.sogni, flux.spark, flux.token) == (
        Decimal("0.001"),
        Decimal("0.05"),
        Decimal("0.1"),
        Decimal("0.05"),
    )
    video = pricing.quote(model("wan_v2.2-14b-fp8_t2v_lightx2v"), "spark", rates)
    assert video.token == video.spark == Decimal("5")
    assert video.wire()["costInToken"] == "5"
    with pytest.raises(ValueError, match="between 0 and 1000000"):
        MediaPricing(models={"x": Decimal("-1")})


class _OfflineProjects(ProjectsApi):
    """The official SDK's ProjectsApi with its two REST reads answered from our catalog."""

    def __init__(self) -> None:  # no client: only the parsing is exercised
        pass

    async def get_supported_models(self, force_refresh: bool = False) -> list[dict[str, Any]]:
        return CATALOG.model_list()

    async def _get_model_tiers(self, force_refresh: bool = False) -> dict[str, Any]:
        return CATALOG.tiers()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"type": "image", "modelId": "flux1-schnell-fp8", "steps": 4, "sampler": "euler"},
            {"steps": 4, "sampler": "euler", "width": 1024},
        ),
        (
            {
                "type": "image",
                "modelId": "z_image_turbo_bf16",
                "sampler": "dpmpp_2m",
                "scheduler": "beta",
            },
            {"sampler": "dpmpp_2m", "scheduler": "beta"},
        ),
        (
            {"type": "video", "modelId": "wan_v2.2-14b-fp8_t2v_lightx2v", "duration": 3, "fps": 16},
            {"frames": 49, "fps": 16},
        ),
        (
            {"type": "audio", "modelId": "ace_step_1.5_turbo", "duration": 20, "bpm": 100},
            {"duration": 20.0, "output_format": "mp3"},
        ),
    ],
)
def test_the_official_sdk_builds_requests_our_server_accepts(
    params: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Our tiers parsed by the SDK, its jobRequest built from them, validated by localnet."""
    sdk = _OfflineProjects()
    options = asyncio.run(sdk.get_model_options(params["modelId"]))
    assert options["type"] == params["type"]
    request = create_job_request_message(
        "ABC", {"positivePrompt": "fox", "numberOfMedia": 2, **params}, options
    )
    message = decode_client_message(encode_envelope("jobRequest", request))
    plan = plan_project(message, CATALOG)  # type: ignore[arg-type]
    assert not isinstance(plan, str), plan
    assert plan.count == 2
    for name, value in expected.items():
        assert getattr(plan, name) == value


def test_the_official_sdk_refuses_a_sampler_our_tier_does_not_allow() -> None:
    sdk = _OfflineProjects()
    options = asyncio.run(sdk.get_model_options("flux1-schnell-fp8"))
    with pytest.raises(Exception, match="Invalid sampler"):
        create_job_request_message(
            "ABC",
            {
                "type": "image",
                "modelId": "flux1-schnell-fp8",
                "positivePrompt": "x",
                "numberOfMedia": 1,
                "sampler": "ddim",
            },
            options,
        )


async def test_the_catalog_and_prices_are_configurable() -> None:
    only = model("ace_step_1.5_turbo")
    pricing = MediaPricing(per_type={"audio": Decimal("0.5")})
    async with open_local_network(listen=False, media_models=[only], media_pricing=pricing) as net:
        status, models = await rest(net, "/api/v1/models/list")
        assert (status, [m["id"] for m in models]) == (200, ["ace_step_1.5_turbo"])
        status, tiers = await rest(net, "/api/v2/models/tiers")
        assert list(tiers) == [only.tier.name]
        target = "/api/v1/job-audio/estimate/spark/ace_step_1.5_turbo/30/8/2"
        status, quote = await rest(net, target, net.api_key)
        assert (status, quote["quote"]["project"]["costInToken"]) == (200, "100")
        status, _ = await rest(net, "/api/v1/job-audio/estimate/spark/nope/30/8/2", net.api_key)
        assert status == 404
        status, _ = await rest(net, "/api/v1/job-audio/estimate/spark/ace_step_1.5_turbo/30/8/99", net.api_key)  # fmt: skip
        assert status == 400
