"""localnet ``POST /v1/creative-agent/tools/execute``: the image adapters (``apply_style``,
``restore_photo``, ``refine_result``, ``change_angle``, ``animate_photo``) run as billed media
projects on a SimulatedMediaWorker TEST DOUBLE, in virtual time, over raw HTTP (httpx on the
in-memory connections); the other hosted tools are a 404 naming what localnet runs."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import av
import httpx
import pytest
import trio
import trio.testing
from helpers import InMemoryHTTP
from PIL import Image
from sogni_client import SogniClient

from trio_sogni.localnet import LocalNetwork, Pricing, open_local_network
from trio_sogni.localnet._creative._execute import ADAPTER_STRENGTH, HOSTED_TOOLS_APP_ID
from trio_sogni.localnet._media._render import RenderSpec, SimulatedMediaWorker

PATH = "/v1/creative-agent/tools/execute"


class RecordingWorker(SimulatedMediaWorker):
    """The SimulatedMediaWorker TEST DOUBLE, recording every spec it renders."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("encode_in_thread", False)
        super().__init__("recorder", **kwargs)
        self.specs: list[RenderSpec] = []

    async def render(self, spec: RenderSpec, on_step: Any) -> Any:  # type: ignore[override]
        self.specs.append(spec)
        return await super().render(spec, on_step)


@asynccontextmanager
async def adapter_net(
    *, media_worker: bool = True, seconds_per_step: float = 0.1
) -> AsyncIterator[tuple[LocalNetwork, httpx.AsyncClient, RecordingWorker]]:
    worker = RecordingWorker(seconds_per_step=seconds_per_step)
    async with open_local_network(
        listen=False, pricing=Pricing(usd_per_million_tokens=Decimal(0))
    ) as net:
        net._media_storage.offload_io = False
        if media_worker:
            net._projects.add_worker(worker)
        async with httpx.AsyncClient(
            transport=InMemoryHTTP(net),
            base_url="http://localnet.in-memory",
            headers={"api-key": net.api_key},
        ) as http:
            yield net, http, worker


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64," + base64.b64encode(data).decode()


async def download(http: httpx.AsyncClient, url: str) -> bytes:
    response = await http.get(httpx.URL(url).raw_path.decode(), headers={"api-key": ""})
    assert response.status_code == 200, response.text
    return response.content


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


async def test_apply_style_renders_the_source_as_a_billed_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with adapter_net() as (net, http, worker):
        net.add_account("payer", password="pw", balance=Decimal("10"))
        key = net.create_api_key("payer")
        source = png((250, 0, 0))
        response = await http.post(
            PATH,
            json={
                "tool": "apply_style",
                "arguments": {"prompt": "ukiyo-e woodblock", "source_image_url": data_uri(source)},
            },
            headers={"api-key": key},
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["tool"] == "apply_style"
        assert data["toolCallId"].startswith("call_")
        assert data["message"] == "apply_style made 1 image(s)"
        result = data["result"]
        assert result["success"] is True
        assert result["media_type"] == "image"
        assert result["prompt"] == "ukiyo-e woodblock"
        (url,) = result["urls"]
        (spec,) = worker.specs
        assert spec.inputs["startingImage"].data == source
        assert spec.strength == ADAPTER_STRENGTH["apply_style"]
        assert spec.style_prompt == "ukiyo-e woodblock"
        image = Image.open(io.BytesIO(await download(http, url))).convert("RGB")
        red, green, blue = image.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
        assert red > green  # blended over the red source
        assert red > blue
        payer = net.get_account("payer").id
        project = net._projects.finished[(payer, result["projectId"].upper())]
        assert (project.status, project.app_id) == ("completed", HOSTED_TOOLS_APP_ID)
        quote = net._projects.quote(project.plan.model.id, "sogni")
        assert quote is not None
        assert net.balance("payer") == Decimal("10") - quote.token


async def test_a_result_url_feeds_the_next_adapter_and_animate_makes_a_video(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with adapter_net() as (_net, http, worker):
        restored = await http.post(
            PATH,
            json={
                "tool": "restore_photo",
                "arguments": {"prompt": "fix it", "source_image_url": data_uri(png((0, 0, 200)))},
            },
        )
        (url,) = restored.json()["data"]["result"]["urls"]
        angled = await http.post(
            PATH,
            json={
                "tool": "change_angle",
                "arguments": {"description": "back view eye-level shot wide shot", "source_image_url": url},
            },
        )  # fmt: skip
        assert angled.status_code == 200, angled.text
        animated = await http.post(
            PATH,
            json={
                "tool": "animate_photo",
                "arguments": {
                    "prompt": "slow zoom",
                    "duration": 2,
                    "numberOfVariations": 2,
                    "source_image_url": url,
                    "end_image_url": angled.json()["data"]["result"]["urls"][0],
                },
            },
        )
        assert animated.status_code == 200, animated.text
        result = animated.json()["data"]["result"]
        assert result["media_type"] == "video"
        assert len(result["urls"]) == 2
        restore, angle, *videos = worker.specs
        restored_bytes = await download(http, url)
        assert angle.inputs["startingImage"].data == restored_bytes
        assert angle.prompt == "the same subject, back view eye-level shot wide shot"
        assert restore.strength == ADAPTER_STRENGTH["restore_photo"]
        assert [v.media_type for v in videos] == ["video", "video"]
        assert videos[0].inputs["referenceImage"].data == restored_bytes
        assert "referenceImageEnd" in videos[0].inputs
        with av.open(io.BytesIO(await download(http, result["urls"][0])), mode="r") as container:
            assert sum(1 for _ in container.decode(container.streams.video[0])) > 0


@pytest.mark.parametrize(
    ("arguments", "status", "code", "words"),
    [
        ({"prompt": "x"}, 400, "media_input_required", "source_image_url"),
        ({"source_image_url": "data:image/png;base64,AAAA"}, 400, "invalid_arguments", "prompt"),
        ({"prompt": "x", "scale": 7}, 400, "invalid_arguments", "scale"),
        (
            {"prompt": "x", "source_image_url": "data:text/plain;base64,aGk="},
            400,
            "media_input_invalid",
            "image/png",
        ),
        (
            {"prompt": "x", "source_image_url": "https://example.com/cat.png"},
            400,
            "media_input_invalid",
            "not a valid localnet result URL",
        ),
    ],
)
async def test_bad_calls_are_refused_before_any_project(
    autojump_clock: trio.testing.MockClock,
    arguments: dict[str, Any],
    status: int,
    code: str,
    words: str,
) -> None:
    async with adapter_net() as (net, http, worker):
        response = await http.post(PATH, json={"tool": "refine_result", "arguments": arguments})
        assert words in assert_error(response, status, code)
        assert worker.specs == []
        assert not net._projects.finished


async def test_another_accounts_result_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with adapter_net() as (net, http, worker):
        made = await http.post(
            PATH,
            json={
                "tool": "refine_result",
                "arguments": {"prompt": "x", "source_image_url": data_uri(png((1, 1, 1)))},
            },
        )
        (url,) = made.json()["data"]["result"]["urls"]
        net.add_account("mallory", password="pw", balance=Decimal("10"))
        response = await http.post(
            PATH,
            json={"tool": "refine_result", "arguments": {"prompt": "x", "source_image_url": url}},
            headers={"api-key": net.create_api_key("mallory")},
        )
        assert_error(response, 400, "media_input_invalid")
        assert len(worker.specs) == 1


async def test_no_media_worker_is_a_503(autojump_clock: trio.testing.MockClock) -> None:
    async with adapter_net(media_worker=False) as (_net, http, _worker):
        response = await http.post(
            PATH,
            json={
                "tool": "apply_style",
                "arguments": {"prompt": "x", "source_image_url": data_uri(png((1, 1, 1)))},
            },
        )
        assert "renders image" in assert_error(response, 503, "no_worker")


@pytest.mark.parametrize("tool", ["stitch_video", "dance_montage", "generate_image", "bogus"])
async def test_other_tools_are_not_supported(
    autojump_clock: trio.testing.MockClock, tool: str
) -> None:
    async with adapter_net() as (_net, http, _worker):
        response = await http.post(PATH, json={"tool": tool, "arguments": {}})
        message = assert_error(response, 404, "tool_not_found")
        assert f"Tool {tool!r} is not supported by localnet" in message
        assert "apply_style" in message


async def test_a_client_gone_mid_render_cancels_the_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with adapter_net(seconds_per_step=5.0) as (net, http, worker):
        with trio.move_on_after(3):  # renders take 20 s; the heartbeat comes every 2 s
            await http.post(
                PATH,
                json={
                    "tool": "animate_photo",
                    "arguments": {"prompt": "x", "source_image_url": data_uri(png((1, 1, 1)))},
                },
            )
            pytest.fail("the call should not have finished")
        assert len(worker.specs) == 1
        with trio.fail_after(5):
            await net.wait_until(
                lambda: [p.status for p in net._projects.finished.values()] == ["cancelled"]
            )


async def _official_sdk_apply_style(rest_url: str, socket_url: str, api_key: str) -> Any:
    """The official Python SDK (asyncio, unmodified) runs apply_style through its
    ``chat.hosted.execute_tool``."""
    client = await SogniClient.create(
        app_id="official-sdk-adapters",
        api_key=api_key,
        rest_endpoint=rest_url,
        socket_endpoint=socket_url,
    )
    try:
        return await client.chat.hosted.execute_tool(
            tool="apply_style",
            arguments={"prompt": "pop art", "source_image_url": data_uri(png((0, 200, 0)))},
        )
    finally:
        await client.aclose()


async def test_the_official_sdk_gets_the_answer_of_a_render_long_enough_for_heartbeats() -> None:
    worker = RecordingWorker(seconds_per_step=1.0)  # real time: about 4 s, two heartbeats
    with trio.fail_after(60):
        async with open_local_network(rebind_grace=0) as net:
            net._projects.add_worker(worker)
            answer = await trio.to_thread.run_sync(
                asyncio.run, _official_sdk_apply_style(net.rest_url, net.socket_url, net.api_key)
            )
            await net.wait_until(lambda: net.connected_sockets == 0)
    assert answer["status"] == "success"  # the SDK returns the envelope unchanged
    data = answer["data"]
    assert data["tool"] == "apply_style"
    assert data["result"]["success"] is True
    assert len(data["result"]["urls"]) == 1
    assert worker.specs[0].inputs["startingImage"].data == png((0, 200, 0))
