"""The media model catalog: fetching both lists, the 24 h cache in virtual time, single-flight
refreshes (shared results, shared errors, a cancelled fetcher), and every option check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from media.fakeapi import FakeSogniAPI, mock_http, rest_client

from trio_sogni import APIStatusError, InvalidRequestError, ProtocolError
from trio_sogni._media._models import CATALOG_TTL, MediaModelCatalog
from trio_sogni._media._request import ProjectOptions


@asynccontextmanager
async def catalog_for(api: FakeSogniAPI, **kwargs: object) -> AsyncIterator[MediaModelCatalog]:
    async with mock_http(api) as http:
        yield MediaModelCatalog(rest_client(api, http), **kwargs)  # type: ignore[arg-type]


def image(**kwargs: object) -> ProjectOptions:
    base: dict[str, object] = {"type": "image", "model": "flux1-schnell-fp8", "prompt": "a fox"}
    base.update(kwargs)
    return ProjectOptions(**base)  # type: ignore[arg-type]


async def test_both_lists_are_fetched_from_the_socket_host_and_parsed() -> None:
    api = FakeSogniAPI()
    async with catalog_for(api) as catalog:
        snapshot = await catalog.get()
    assert api.calls == [("GET", "/api/v1/models/list"), ("GET", "/api/v2/models/tiers")]
    flux = snapshot.models["flux1-schnell-fp8"]
    assert (flux.name, flux.sid, flux.tier, flux.media) == (
        "Flux.1 Schnell",
        101,
        "flux-schnell",
        "image",
    )
    tier = snapshot.tiers["flux-schnell"]
    assert tier.steps is not None
    assert (tier.steps.min, tier.steps.max, tier.steps.default) == (
        1,
        10,
        4,
    )
    assert snapshot.tiers["z-image"].comfy_sampler is not None
    # A tier that does not convert is skipped; the rest of the catalog stays usable.
    assert "broken-tier" not in snapshot.tiers
    assert [m.id for m in snapshot.of_type("audio")] == ["ace_step_1.5_turbo"]
    assert [m.id for m in snapshot.of_type("video")] == ["wan_v2.2-14b-fp8_t2v_lightx2v"]


async def test_malformed_model_entries_are_skipped() -> None:
    api = FakeSogniAPI(
        models=[
            {"name": "no id"},
            17,
            {"id": 5, "tier": "flux-schnell"},
            {"id": "flux1-schnell-fp8", "tier": "flux-schnell"},
            {"id": "z_image_turbo_bf16", "SID": "102", "tier": "z-image", "name": None},
        ]
    )
    async with catalog_for(api) as catalog:
        snapshot = await catalog.get()
    assert list(snapshot.models) == ["flux1-schnell-fp8", "z_image_turbo_bf16"]
    assert snapshot.models["flux1-schnell-fp8"].sid is None
    assert (
        snapshot.models["z_image_turbo_bf16"].sid,
        snapshot.models["z_image_turbo_bf16"].name,
    ) == ("102", None)
    assert snapshot.models["flux1-schnell-fp8"].media is None


@pytest.mark.parametrize(
    ("models", "tiers", "what"),
    [
        ({"not": "a list"}, {}, "/api/v1/models/list"),
        ([], ["not", "an object"], "/api/v2/models/tiers"),
    ],
)
async def test_a_list_of_the_wrong_shape_is_a_protocol_error(
    models: object, tiers: object, what: str
) -> None:
    api = FakeSogniAPI(models=models, tiers=tiers)
    async with catalog_for(api) as catalog:
        with pytest.raises(ProtocolError, match=what):
            await catalog.get()
        assert catalog.cached is None


@pytest.mark.deadline(3 * 86400)
async def test_the_cache_lasts_24_hours_of_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeSogniAPI()
    async with catalog_for(api) as catalog:
        first = await catalog.get()
        await trio.sleep(CATALOG_TTL - 1)
        assert await catalog.get() is first
        assert len(api.path_calls("/api/v1/models/list")) == 1
        await trio.sleep(1)
        second = await catalog.get()
        assert second is not first
        assert len(api.path_calls("/api/v1/models/list")) == 2
        assert await catalog.get(force_refresh=True) is not second
        assert len(api.path_calls("/api/v1/models/list")) == 3


async def test_the_clock_is_injectable() -> None:
    now = [1000.0]
    api = FakeSogniAPI()
    async with catalog_for(api, clock=lambda: now[0], ttl=60.0) as catalog:
        first = await catalog.get()
        now[0] += 59.9
        assert await catalog.get() is first
        now[0] += 0.1
        assert await catalog.get() is not first
    assert len(api.path_calls("/api/v2/models/tiers")) == 2


async def test_the_ttl_must_be_positive() -> None:
    api = FakeSogniAPI()
    async with mock_http(api) as http:
        with pytest.raises(ValueError, match="ttl"):
            MediaModelCatalog(rest_client(api, http), ttl=0)


async def test_concurrent_callers_share_one_fetch() -> None:
    api = FakeSogniAPI(catalog_gate=trio.Event())
    results: list[object] = []
    async with catalog_for(api) as catalog:

        async def caller() -> None:
            results.append(await catalog.get())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            assert api.catalog_waiting == 1
            assert api.catalog_gate is not None
            api.catalog_gate.set()
    assert len(results) == 10
    assert all(r is results[0] for r in results)
    assert len(api.path_calls("/api/v1/models/list")) == 1
    assert len(api.path_calls("/api/v2/models/tiers")) == 1


async def test_concurrent_callers_share_the_fetch_error_and_the_next_call_retries() -> None:
    api = FakeSogniAPI(catalog_gate=trio.Event(), catalog_status=503)
    errors: list[BaseException] = []
    async with catalog_for(api) as catalog:

        async def caller() -> None:
            try:
                await catalog.get()
            except APIStatusError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            assert api.catalog_gate is not None
            api.catalog_gate.set()
        assert len(errors) == 5
        assert all(isinstance(e, APIStatusError) and e.status_code == 503 for e in errors)
        assert len(api.path_calls("/api/v1/models/list")) == 1
        api.catalog_status = 200
        assert "flux1-schnell-fp8" in (await catalog.get()).models
        assert len(api.path_calls("/api/v1/models/list")) == 2


async def test_a_cancelled_fetcher_does_not_strand_the_waiters() -> None:
    api = FakeSogniAPI(catalog_gate=trio.Event())
    got: list[object] = []
    async with catalog_for(api) as catalog:

        async def waiter() -> None:
            got.append(await catalog.get())

        async with trio.open_nursery() as nursery:
            fetcher_scope = trio.CancelScope()

            async def fetcher() -> None:
                with fetcher_scope:
                    await catalog.get()

            nursery.start_soon(fetcher)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert api.catalog_waiting == 1
            fetcher_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            # One waiter took over the fetch; it waits at the gate too.
            assert api.catalog_waiting == 2
            assert api.catalog_gate is not None
            api.catalog_gate.set()
        assert fetcher_scope.cancelled_caught
        assert len(got) == 3
        assert all(g is got[0] for g in got)
        assert catalog.cached is got[0]
        assert len(api.path_calls("/api/v1/models/list")) == 2


# ---- option checks ---------------------------------------------------------------------------


async def prepare(options: ProjectOptions) -> ProjectOptions:
    async with catalog_for(FakeSogniAPI()) as catalog:
        return await catalog.prepare(options)


@pytest.mark.parametrize(
    ("options", "pieces"),
    [
        (
            image(model="no-such-model"),
            ["unknown media model", "'no-such-model'", "flux1-schnell-fp8"],
        ),
        (image(model="orphan-model"), ["tier 'missing-tier'"]),
        (image(model="wan_v2.2-14b-fp8_t2v_lightx2v"), ["makes video, not image"]),
        (
            ProjectOptions(type="video", model="flux1-schnell-fp8", prompt="x"),
            ["makes image, not video"],
        ),
        (image(steps=11), ["steps 11", "1 to 10"]),
        (image(steps=0), ["steps must be between 1 and 1000, got 0"]),
        (image(guidance=5.5), ["guidance 5.5", "0 to 5"]),
        (image(width=4096, height=1024), ["width 4096", "256 to 2048"]),
        (image(width=1024, height=2050), ["height 2050", "256 to 2048"]),
        (image(sampler="lcm"), ["sampler (sampler) 'lcm'", "euler, euler_a, dpmpp_2m"]),
        (image(scheduler="beta"), ["scheduler (scheduler) 'beta'", "simple, karras"]),
        (
            image(model="z_image_turbo_bf16", sampler="euler_a"),
            ["sampler (comfySampler) 'euler_a'", "euler, res_multistep"],
        ),
        (
            image(model="z_image_turbo_bf16", scheduler="karras"),
            ["scheduler (comfyScheduler) 'karras'", "simple, beta"],
        ),
        (
            ProjectOptions(type="video", model="wan_v2.2-14b-fp8_t2v_lightx2v", prompt="x", fps=60),
            ["fps 60", "16 to 32"],
        ),
        (
            ProjectOptions(
                type="video",
                model="wan_v2.2-14b-fp8_t2v_lightx2v",
                prompt="x",
                width=1920,
                height=1080,
            ),
            ["width 1920", "480 to 1280"],
        ),
        (
            ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x", duration=300),
            ["duration 300", "10 to 240"],
        ),
        (
            ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x", bpm=250),
            ["bpm 250", "60 to 200"],
        ),
        (
            ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x", timesignature="5"),
            ["timesignature '5'", "2, 3, 4, 6"],
        ),
        (
            ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x", language="xx"),
            ["language 'xx'", "en, ja"],
        ),
        (
            ProjectOptions(
                type="audio", model="ace_step_1.5_turbo", prompt="x", keyscale="H major"
            ),
            ["keyscale 'H major'", "C major, A minor"],
        ),
    ],
)
async def test_bad_options_name_the_option_the_value_and_what_is_allowed(
    options: ProjectOptions, pieces: list[str]
) -> None:
    api = FakeSogniAPI()
    async with catalog_for(api) as catalog:
        try:
            await catalog.prepare(options)
        except InvalidRequestError as exc:
            message = str(exc)
        else:
            pytest.fail("no InvalidRequestError")
    for piece in pieces:
        assert piece in message, (piece, message)


async def test_steps_range_check_through_the_catalog_itself() -> None:
    # steps=0 is refused by the builder's own sanity check above; the tier check catches a
    # value inside that sanity range but outside the tier's.
    async with catalog_for(FakeSogniAPI()) as catalog:
        options = await catalog.options_for("z_image_turbo_bf16")
        with pytest.raises(InvalidRequestError, match=r"steps 3 is out of range .* 4 to 12"):
            options.validate(image(model="z_image_turbo_bf16", steps=3))


async def test_sampler_names_in_a_tier_are_mapped_to_wire_ids() -> None:
    prepared = await prepare(image(sampler="euler_a", scheduler="karras"))
    assert (prepared.sampler, prepared.scheduler) == ("euler_a", "karras")


async def test_the_tier_defaults_fill_what_the_caller_left_out() -> None:
    prepared = await prepare(image())
    assert (prepared.steps, prepared.guidance, prepared.sampler, prepared.scheduler) == (
        4,
        1,
        "euler",
        "simple",
    )
    assert (prepared.width, prepared.height) == (None, None)
    given = await prepare(image(steps=2, guidance=0.5, sampler="dpmpp_2m"))
    assert (given.steps, given.guidance, given.sampler, given.scheduler) == (
        2,
        0.5,
        "dpmpp_2m",
        "simple",
    )
    comfy = await prepare(image(model="z_image_turbo_bf16"))
    assert (comfy.steps, comfy.guidance, comfy.sampler, comfy.scheduler) == (
        8,
        1.5,
        "res_multistep",
        "simple",
    )
    video = await prepare(
        ProjectOptions(type="video", model="wan_v2.2-14b-fp8_t2v_lightx2v", prompt="x")
    )
    assert (video.duration, video.fps, video.steps) == (5, 16, 4)
    framed = await prepare(
        ProjectOptions(type="video", model="wan_v2.2-14b-fp8_t2v_lightx2v", prompt="x", frames=33)
    )
    assert (framed.duration, framed.frames) == (None, 33)
    audio = await prepare(ProjectOptions(type="audio", model="ace_step_1.5_turbo", prompt="x"))
    assert (audio.duration, audio.bpm, audio.timesignature, audio.language, audio.keyscale) == (
        30,
        120,
        "4",
        "en",
        "C major",
    )


async def test_a_catalog_fetch_is_the_only_request_options_checks_make() -> None:
    api = FakeSogniAPI()
    async with catalog_for(api) as catalog:
        with pytest.raises(InvalidRequestError):
            await catalog.prepare(image(steps=99))
        await catalog.prepare(image())
    assert [path for _, path in api.calls] == ["/api/v1/models/list", "/api/v2/models/tiers"]


async def test_an_fps_list_in_a_tier_is_checked_as_a_list() -> None:
    api = FakeSogniAPI()
    api.tiers = dict(api.tiers)
    api.tiers["wan"] = {**api.tiers["wan"], "fps": {"allowed": [16, 24], "default": 16}}
    async with catalog_for(api) as catalog:
        wan = "wan_v2.2-14b-fp8_t2v_lightx2v"
        assert (
            await catalog.prepare(ProjectOptions(type="video", model=wan, prompt="x", fps=24))
        ).fps == 24
        with pytest.raises(
            InvalidRequestError, match=r"fps 20 is not allowed .* allowed are 16, 24"
        ):
            await catalog.prepare(ProjectOptions(type="video", model=wan, prompt="x", fps=20))
