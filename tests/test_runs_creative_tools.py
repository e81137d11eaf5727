"""Durable runs with hosted creative tools: media tool calls run as real projects on a
SimulatedMediaWorker TEST DOUBLE, their execution shows as run events, and an event stream
dropped mid-tool replays exactly from ``Last-Event-ID`` (virtual time, in-memory HTTP)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import h11
import httpx
import trio
import trio.testing
from helpers import InMemoryHTTP
from PIL import Image
from projectnet import IMAGE_MODEL, simulated

from trio_sogni.localnet import (
    DEFAULT_MODEL,
    LocalNetwork,
    Pricing,
    Text,
    ToolCall,
    open_local_network,
)
from trio_sogni.protocol import LLMJobRequest

TERMINAL = {"run_completed", "run_failed", "run_partial_failure", "run_cancelled"}


def draw_then_answer(request: LLMJobRequest) -> list[Any]:
    """The chat worker's script: generate_image first, then an answer quoting the tool result."""
    tools = [m for m in request.messages if m.role == "tool"]
    if tools:
        return [Text(f"Done: {tools[-1].content}")]
    return [ToolCall("generate_image", {"prompt": "a lighthouse", "loras": ["x"]}, id="img")]


@asynccontextmanager
async def runs_net(
    *, media_worker: bool = True
) -> AsyncIterator[tuple[LocalNetwork, httpx.AsyncClient, str]]:
    """A localnet in virtual time with free LLM jobs, a SimulatedMediaWorker TEST DOUBLE (slow:
    2 s per step), an account ``payer`` with 10 sogni, and an httpx client with its key."""
    async with open_local_network(
        listen=False,
        script=draw_then_answer,
        pricing=Pricing(usd_per_million_tokens=Decimal(0)),
    ) as net:
        net._media_storage.offload_io = False
        if media_worker:
            net._projects.add_worker(simulated("painter", seconds_per_step=2.0))
        net.add_account("payer", password="pw", balance=Decimal("10"))
        key = net.create_api_key("payer")
        async with httpx.AsyncClient(
            transport=InMemoryHTTP(net),
            base_url="http://localnet.in-memory",
            headers={"api-key": key},
        ) as http:
            yield net, http, key


async def create_run(http: httpx.AsyncClient, **fields: Any) -> str:
    response = await http.post(
        "/v1/chat/runs",
        json={
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "Draw a lighthouse"}],
            "sogni_tools": "creative-tools",
            **fields,
        },
    )
    assert response.status_code in (200, 201, 202), response.text
    run_id: str = response.json()["data"]["run"]["runId"]
    return run_id


def parse_frames(text: str) -> list[tuple[int, dict[str, Any]]]:
    """``(id, event)`` of each complete SSE frame with an id (comments and partial frames
    left out)."""
    frames: list[tuple[int, dict[str, Any]]] = []
    for frame in text.split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in frame.split("\n") if ": " in line)
        if "id" in fields and "data" in fields:
            frames.append((int(fields["id"]), json.loads(fields["data"])))
    return frames


async def read_stream(
    http: httpx.AsyncClient,
    run_id: str,
    *,
    last_event_id: int | None = None,
    until: str | None = None,
    net: LocalNetwork | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """Read the run's event stream to its end; with ``until``, drop every stream (``net``) once
    an event of that type arrived and return what was read."""
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    text = ""
    request = http.build_request("GET", f"/v1/chat/runs/{run_id}/events/stream", headers=headers)
    response = await http.send(request, stream=True)
    try:
        assert response.status_code == 200
        body = response.aiter_raw()
        try:
            async for chunk in body:
                text += chunk.decode()
                if until is not None and any(e["type"] == until for _, e in parse_frames(text)):
                    assert net is not None
                    assert await net.drop_event_streams() == 1
                    until = None
        except (h11.RemoteProtocolError, httpx.HTTPError):
            pass  # the connection was cut mid-body
    finally:
        await response.aclose()
    return parse_frames(text)


async def test_tool_events_replay_exactly_after_a_dropped_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with runs_net() as (net, http, _):
        run_id = await create_run(http)
        first = await read_stream(http, run_id, until="tool_call_progress", net=net)
        assert first[-1][1]["type"] != "run_completed"
        rest = await read_stream(http, run_id, last_event_id=first[-1][0])
        whole = await read_stream(http, run_id)
        record = (await http.get(f"/v1/chat/runs/{run_id}")).json()["data"]["run"]
        payer = net.get_account("payer").id
        (project,) = [p for (owner, _), p in net._projects.finished.items() if owner == payer]
        quote = net._projects.quote(project.plan.model.id, "sogni")
        assert quote is not None
        assert net.balance("payer") == Decimal("10") - quote.token
        url = record["artifacts"][0]["url"]
        image = await http.get(httpx.URL(url).raw_path.decode())
    # exact replay: the two halves are the whole log, no gap, no duplicate
    assert [s for s, _ in first] + [s for s, _ in rest] == [s for s, _ in whole]
    assert [s for s, _ in whole] == list(range(len(whole)))
    assert [e for _, e in first] + [e for _, e in rest] == [e for _, e in whole]
    types = [e["type"] for _, e in whole]
    dispatched = types.index("tool_call_dispatched")
    progress = [i for i, t in enumerate(types) if t == "tool_call_progress"]
    created = types.index("artifact_created")
    resolved = types.index("tool_call_resolved")
    assert dispatched < progress[0] < created < resolved < types.index("run_completed")
    assert types[-1] == "run_completed"
    events = [e for _, e in whole]
    assert events[progress[0]]["payload"]["status"] == "queued"
    assert events[progress[-1]]["payload"]["percent"] == 100.0
    result = events[resolved]["payload"]
    assert result["status"] == "succeeded"
    assert result["projectId"] == project.job_id
    assert result["result"]["urls"] == [url]
    assert events[created]["payload"]["url"] == url
    assert events[created]["payload"]["kind"] == "image"
    assert record["status"] == "completed"
    assert url in record["finalResponse"]["content"]
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).format == "PNG"


async def test_without_a_media_worker_the_tool_fails_with_no_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with runs_net(media_worker=False) as (net, http, _):
        run_id = await create_run(http)
        events = [e for _, e in await read_stream(http, run_id)]
        assert not net._projects.finished
    (resolved,) = [e["payload"] for e in events if e["type"] == "tool_call_resolved"]
    assert resolved["status"] == "failed"
    assert resolved["error"]["code"] == "no_worker"
    assert "no media worker" in resolved["error"]["message"]
    assert events[-1]["type"] == "run_partial_failure"
    assert not [e for e in events if e["type"] == "artifact_created"]


async def test_cancelling_a_run_mid_tool_cancels_its_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with runs_net() as (net, http, _):
        run_id = await create_run(http)
        await net.wait_until(lambda: bool(net._projects.projects))
        response = await http.post(f"/v1/chat/runs/{run_id}/cancel", json={})
        assert response.status_code == 200, response.text
        await net.wait_until(lambda: bool(net._projects.finished))
        (project,) = net._projects.finished.values()
        assert project.status == "cancelled"
        assert net.balance("payer") == Decimal("10")


async def test_cost_confirmation_quotes_the_project_then_runs_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with runs_net() as (net, http, _):
        run_id = await create_run(http, confirm_cost=True)
        before = await read_stream(http, run_id, until="run_awaiting_cost_confirmation", net=net)
        assert not net._projects.projects  # nothing renders before the confirmation
        record = (await http.get(f"/v1/chat/runs/{run_id}")).json()["data"]["run"]
        # the image model with the most workers, ties broken by id: flux1-schnell-fp8
        quote = net._projects.quote(IMAGE_MODEL, "sogni")
        assert quote is not None
        assert record["waiting"]["reason"] == "cost_approval_required"
        assert Decimal(record["billingPreview"]["totalEstimatedCost"]) == quote.token
        response = await http.post(
            f"/v1/chat/runs/{run_id}/confirm-cost",
            json={
                "tool_call_id": "img",
                "decision": "confirm",
                "acceptedCostPreview": record["billingPreview"],
            },
        )
        assert response.status_code == 200, response.text
        after = await read_stream(http, run_id, last_event_id=before[-1][0])
        assert after[-1][1]["type"] == "run_completed"
        assert net.balance("payer") == Decimal("10") - quote.token
