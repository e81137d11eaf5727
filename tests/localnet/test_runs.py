"""Durable chat runs over loopback TCP: REST, the executor, SSE, cost confirmation, restart.

httpx (streaming) is the client, never trio_sogni's own client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
from helpers import tool_then_text

from trio_sogni.localnet import (
    LocalNetwork,
    SimulatedWorker,
    Stall,
    Text,
    ToolCall,
    default_reply_text,
    open_local_network,
)
from trio_sogni.localnet._runs import _executor as run_executor
from trio_sogni.localnet._runs._tools import (
    HostedToolDouble,
    SimulatedGenerateImage,
    default_tool_doubles,
)
from trio_sogni.protocol import LLMJobRequest

TIMEOUT = 10
SCHEMA_DIR = Path(__file__).parents[2] / "trio_sogni" / "localnet" / "_data" / "sogni-protocol"
TERMINAL = {"run_completed", "run_failed", "run_partial_failure", "run_cancelled"}


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fake_url_generate_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise the run machinery (dispatch, cost confirmation, billing, replay)
    with the fake-URL ``generate_image`` TEST DOUBLE registered, as it was by default before
    media tools ran as real projects (tests/localnet/test_runs_creative_tools.py covers those)."""

    def doubles() -> dict[str, HostedToolDouble]:
        return {**default_tool_doubles(), "generate_image": SimulatedGenerateImage()}

    monkeypatch.setattr(run_executor, "default_tool_doubles", doubles)


def _event_schema() -> dict[str, Any]:
    """run-event.schema.json, plus ``at``: the SDK's ``ChatRunEvent`` field (protocol.md §3.6)
    that localnet sends beside the schema's ``createdAt`` (the one documented addition)."""
    schema = json.loads((SCHEMA_DIR / "schemas" / "run-event.schema.json").read_text())
    schema["properties"]["at"] = {"type": "string", "format": "date-time"}
    return schema


def _check(
    instance: object, schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> list[str]:
    """The JSON Schema keywords run-event.schema.json uses: $ref, type, enum, properties,
    required, additionalProperties, minimum, format date-time."""
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix("#/$defs/")
        return _check(instance, root["$defs"][name], root, path)
    problems: list[str] = []
    kinds = {
        "object": lambda v: isinstance(v, dict),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    kind = schema.get("type")
    if kind is not None and not kinds[kind](instance):
        return [f"{path}: not {kind}"]
    if "enum" in schema and instance not in schema["enum"]:
        problems.append(f"{path}: {instance!r} not in enum")
    if "minimum" in schema and cast(int, instance) < schema["minimum"]:
        problems.append(f"{path}: below minimum")
    if schema.get("format") == "date-time":
        datetime.fromisoformat(cast(str, instance))
    if isinstance(instance, dict):
        obj = cast("dict[str, Any]", instance)
        properties = cast("dict[str, Any]", schema.get("properties", {}))
        problems += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in obj]
        for key, value in obj.items():
            if key in properties:
                problems += _check(value, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}: unexpected {key}")
    return problems


def assert_valid_event(event: Mapping[str, Any]) -> None:
    schema = _event_schema()
    assert _check(event, schema, schema, "$") == []


def test_the_validator_can_fail() -> None:
    schema = _event_schema()
    good = {
        "runId": "r",
        "runKind": "chat",
        "sequence": 0,
        "type": "run_created",
        "payload": {},
        "createdAt": "2026-01-01T00:00:00.000Z",
    }
    assert _check(good, schema, schema, "$") == []
    assert _check({**good, "type": "tool_started"}, schema, schema, "$")
    assert _check({**good, "sequence": -1}, schema, schema, "$")
    assert _check({**good, "extra": 1}, schema, schema, "$")
    assert _check({k: v for k, v in good.items() if k != "runKind"}, schema, schema, "$")


class SSEReader:
    """Splits a ``text/event-stream`` body into frames (``None`` once the server ended it)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = cast("AsyncGenerator[str]", response.aiter_text())
        self._buffer = ""

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def raw_chunk(self) -> str:
        """The next piece of body text as it arrived (nothing buffered must be pending)."""
        assert self._buffer == ""
        return await anext(self._chunks)

    async def frame(self) -> str | None:
        while "\n\n" not in self._buffer:
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                assert self._buffer == "", self._buffer
                return None
        frame, self._buffer = self._buffer.split("\n\n", 1)
        return frame

    async def event(self) -> dict[str, Any] | None:
        """The next event frame (comment frames skipped), checked for id/event/data agreement."""
        while True:
            frame = await self.frame()
            if frame is None:
                return None
            if frame.startswith(":"):
                continue
            lines = dict(line.split(": ", 1) for line in frame.split("\n"))
            event = json.loads(lines["data"])
            assert lines["id"] == str(event["sequence"])
            assert lines["event"] == event["type"]
            assert_valid_event(event)
            return event


class Client:
    """An httpx client for one account of ``net``."""

    def __init__(self, http: httpx.AsyncClient, api_key: str) -> None:
        self.http = http
        self.headers = {"api-key": api_key}

    async def create(self, body: Mapping[str, Any], key: str | None = None) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.http.post("/v1/chat/runs", json=body, headers=headers)

    async def run_id(self, body: Mapping[str, Any]) -> str:
        response = await self.create(body)
        assert response.status_code == 202, response.text
        return str(response.json()["data"]["run"]["runId"])

    async def get(self, run_id: str) -> httpx.Response:
        return await self.http.get(f"/v1/chat/runs/{run_id}", headers=self.headers)

    async def run(self, run_id: str) -> dict[str, Any]:
        response = await self.get(run_id)
        assert response.status_code == 200, response.text
        return cast("dict[str, Any]", response.json()["data"]["run"])

    async def post(self, run_id: str, action: str, body: Mapping[str, Any]) -> httpx.Response:
        return await self.http.post(
            f"/v1/chat/runs/{run_id}/{action}", json=body, headers=self.headers
        )

    @asynccontextmanager
    async def stream(self, run_id: str, last: int | None = None) -> AsyncIterator[SSEReader]:
        headers = {**self.headers, "Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        async with self.http.stream(
            "GET", f"/v1/chat/runs/{run_id}/events/stream", headers=headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SSEReader(response)
            try:
                yield reader
            finally:
                await reader.aclose()

    async def until(
        self, run_id: str, types: set[str], last: int | None = None
    ) -> list[dict[str, Any]]:
        """Stream events until one of ``types`` (inclusive)."""
        events: list[dict[str, Any]] = []
        async with self.stream(run_id, last) as sse:
            while True:
                event = await sse.event()
                assert event is not None, [e["type"] for e in events]
                events.append(event)
                if event["type"] in types:
                    return events

    async def all_events(self, run_id: str, last: int | None = None) -> list[dict[str, Any]]:
        """Stream to the end of the body; it must end right after a terminal event."""
        events: list[dict[str, Any]] = []
        async with self.stream(run_id, last) as sse:
            while (event := await sse.event()) is not None:
                events.append(event)
        assert events
        assert events[-1]["type"] in TERMINAL
        return events


@asynccontextmanager
async def client_for(net: LocalNetwork, api_key: str | None = None) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(base_url=net.rest_url, timeout=TIMEOUT) as http:
        yield Client(http, api_key or net.api_key)


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


CONFIRM = {"runtime_config": {"requireJobConfirmation": True, "jobConfirmationThresholdUsd": 0.01}}


def sequences(events: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(e["sequence"]) for e in events]


# -- tests -----------------------------------------------------------------------------------------


async def test_create_then_stream_to_completion(net: LocalNetwork) -> None:
    net.runs.chunks_per_delta = 2
    with trio.fail_after(TIMEOUT):
        async with client_for(net) as c:
            created = await c.create({**user("Hello there"), "session_id": "s1"})
            assert created.status_code == 202
            body = created.json()
            assert body["status"] == "success"
            assert body["data"]["idempotent"] is False
            run = body["data"]["run"]
            assert run["status"] in {"queued", "running"}
            assert run["runId"] == run["id"]
            assert run["scope"]["ownerWalletAddress"] == net.account.wallet_address
            assert run["request"]["sessionId"] == "s1"
            assert run["events"][0]["type"] == "run_created"
            assert run["events"][0]["sequence"] == 0
            events = await c.all_events(run["runId"])
            record = await c.run(run["runId"])
    expected = default_reply_text([{"role": "user", "content": "Hello there"}])
    types = [e["type"] for e in events]
    assert types[:3] == ["run_created", "run_started", "llm_round_started"]
    assert types[-2:] == ["assistant_message_completed", "run_completed"]
    deltas = [e["payload"]["delta"] for e in events if e["type"] == "assistant_message_delta"]
    assert "".join(deltas) == expected
    assert len(deltas) == 3  # 5 word chunks, 2 per delta
    assert sequences(events) == list(range(len(events)))
    assert events[-1]["terminal"] is True
    assert events[-1]["payload"]["finalResponse"] == {"content": expected, "finishReason": "stop"}
    assert record["status"] == "completed"
    assert record["finalResponse"] == {"content": expected, "finishReason": "stop"}
    assert record["events"] == events
    assert record["messages"][-1] == {"role": "assistant", "content": expected}
    assert "completedAt" in record["timestamps"]
    assert net.job_records[-1].outcome == "completed"


async def test_tool_call_round_trip_runs_the_hosted_tool_double() -> None:
    script = tool_then_text("generate_image", {"prompt": "a red fox"}, "Here it is.")
    async with open_local_network(script=script) as net, client_for(net) as c:
        with trio.fail_after(TIMEOUT):
            run_id = await c.run_id(user("draw a fox"))
            events = await c.all_events(run_id)
            record = await c.run(run_id)
    types = [e["type"] for e in events]
    assert types.count("llm_round_started") == 2
    dispatched = next(e for e in events if e["type"] == "tool_call_dispatched")
    assert dispatched["payload"] == {
        "toolCallId": "call_img",
        "toolName": "generate_image",
        "arguments": {"prompt": "a red fox"},
    }
    resolved = next(e for e in events if e["type"] == "tool_call_resolved")["payload"]
    assert resolved["status"] == "succeeded"
    assert resolved["result"]["simulated"] is True
    assert resolved["result"]["images"][0]["url"].startswith(net.rest_url + "/localnet/assets/")
    assert types[-1] == "run_completed"
    assert record["finalResponse"]["content"] == "Here it is."
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert record["toolCalls"][0]["function"]["name"] == "generate_image"
    assert record["artifacts"][0]["toolCallId"] == "call_img"


async def test_unknown_tool_ends_in_partial_failure() -> None:
    script = tool_then_text("no_such_tool", {}, "Sorry.")
    async with open_local_network(script=script) as net, client_for(net) as c:
        with trio.fail_after(TIMEOUT):
            events = await c.all_events(await c.run_id(user("go")))
    resolved = next(e for e in events if e["type"] == "tool_call_resolved")["payload"]
    assert resolved["status"] == "failed"
    assert resolved["error"]["code"] == "unknown_tool"
    assert events[-1]["type"] == "run_partial_failure"
    assert events[-1]["status"] == "partial_failure"


async def test_a_failing_round_fails_the_run_with_a_chat_error() -> None:
    from trio_sogni.localnet import Fail

    def script(request: LLMJobRequest) -> list[Any]:
        return [Text("partial"), Fail(error="worker_error", message="boom", error_code="E42")]

    async with open_local_network(script=script) as net, client_for(net) as c:
        with trio.fail_after(TIMEOUT):
            run_id = await c.run_id(user("go"))
            events = await c.all_events(run_id)
            record = await c.run(run_id)
    assert events[-1]["type"] == "run_failed"
    assert events[-1]["payload"]["error"] == {
        "message": "boom",
        "type": "worker_error",
        "code": "E42",
    }
    assert record["status"] == "failed"
    assert record["failureReason"] == "boom"


async def test_cost_confirmation_pauses_then_confirm_resumes() -> None:
    script = tool_then_text("generate_image", {"prompt": "a cat", "numberOfVariations": 2}, "Ok.")
    now = [1_800_000_000.0]
    async with (
        open_local_network(script=script, clock=lambda: now[0]) as net,
        client_for(net) as c,
    ):
        with trio.fail_after(TIMEOUT):
            run_id = await c.run_id({**user("cats"), **CONFIRM})
            events = await c.until(run_id, {"run_awaiting_cost_confirmation"})
            record = await c.run(run_id)
            assert record["status"] == "waiting_for_user"
            waiting = events[-2]
            assert waiting["type"] == "run_waiting_for_user"
            assert waiting["payload"]["reason"] == "cost_approval_required"
            assert waiting["resumable"] is True
            awaiting = events[-1]["payload"]
            assert awaiting == {
                "toolCallId": "call_img",
                "toolName": "generate_image",
                "estimatedCost": 8.0,
                "tokenType": "sogni",
                "estimatedUsdCost": 0.08,
                "summary": awaiting["summary"],
                "toolArgs": {"prompt": "a cat", "numberOfVariations": 2},
            }
            preview = record["billingPreview"]
            assert preview["version"] == 1
            assert preview["id"]
            assert record["waiting"]["details"]["costApprovalPreview"] == preview
            assert not any(e["type"] == "tool_call_dispatched" for e in record["events"])

            ask = {"tool_call_id": "call_img", "decision": "confirm"}
            no_preview = await c.post(run_id, "confirm-cost", ask)
            assert no_preview.status_code == 400
            assert no_preview.json()["error_code"] == "cost_preview_required"
            stale = await c.post(
                run_id,
                "confirm-cost",
                {**ask, "acceptedCostPreview": {**preview, "version": 0}},
            )
            assert stale.status_code == 409
            assert stale.json()["error_code"] == "cost_preview_stale"
            assert stale.json()["status"] == "error"
            other_id = await c.post(
                run_id,
                "confirm-cost",
                {**ask, "tool_call_id": "call_x", "acceptedCostPreview": preview},
            )
            assert other_id.status_code == 409
            now[0] += net.runs.preview_ttl + 1
            expired = await c.post(run_id, "confirm-cost", {**ask, "acceptedCostPreview": preview})
            assert expired.status_code == 409
            now[0] -= net.runs.preview_ttl + 1
            ok = await c.post(run_id, "confirm-cost", {**ask, "acceptedCostPreview": preview})
            assert ok.status_code == 200, ok.text
            assert ok.json()["data"]["run"]["status"] == "running"
            again = await c.post(run_id, "confirm-cost", {**ask, "acceptedCostPreview": preview})
            assert again.status_code == 409
            rest = await c.all_events(run_id, last=events[-1]["sequence"])
    types = [e["type"] for e in rest]
    assert types[0] == "run_cost_confirmation_resolved"
    assert rest[0]["payload"]["decision"] == "confirm"
    assert "tool_call_dispatched" in types
    assert types[-1] == "run_completed"
    assert sequences(rest) == list(range(events[-1]["sequence"] + 1, rest[-1]["sequence"] + 1))


async def test_confirm_cost_idempotency_key_and_free_tools_never_pause() -> None:
    def script(request: LLMJobRequest) -> list[Any]:
        tools = [m for m in request.messages if m.role == "tool"]
        if not tools:
            return [ToolCall("enhance_prompt", {"prompt": "a cat"}, id="call_free")]
        if len(tools) == 1:
            return [ToolCall("generate_image", {"prompt": "a cat"}, id="call_img")]
        return [Text("Ok.")]

    async with open_local_network(script=script) as net, client_for(net) as c:
        with trio.fail_after(TIMEOUT):
            run_id = await c.run_id({**user("cat"), "confirm_cost": True})
            events = await c.until(run_id, {"run_awaiting_cost_confirmation"})
            free = [e for e in events if e["type"] == "tool_call_resolved"]
            assert [e["payload"]["toolCallId"] for e in free] == ["call_free"]
            assert free[0]["payload"]["result"]["prompt"].startswith("a cat, ")
            preview = (await c.run(run_id))["billingPreview"]
            body = {
                "tool_call_id": "call_img",
                "decision": "confirm",
                "acceptedCostPreview": preview,
            }
            headers = {**c.headers, "Idempotency-Key": "confirm-1"}
            url = f"/v1/chat/runs/{run_id}/confirm-cost"
            first = await c.http.post(url, json=body, headers=headers)
            repeat = await c.http.post(url, json=body, headers=headers)
            done = await c.all_events(run_id)
    assert first.status_code == 200
    assert "idempotent" not in first.json()["data"]
    assert repeat.status_code == 200
    assert repeat.json()["data"]["idempotent"] is True
    types = [e["type"] for e in done]
    assert types.count("run_cost_confirmation_resolved") == 1
    assert types[-1] == "run_completed"


async def test_a_run_that_never_stops_calling_tools_fails_at_max_rounds() -> None:
    script = lambda request: [ToolCall("enhance_prompt", {"prompt": "again"})]  # noqa: E731
    async with open_local_network(script=script) as net, client_for(net) as c:
        net.runs.max_rounds = 3
        with trio.fail_after(TIMEOUT):
            events = await c.all_events(await c.run_id(user("loop")))
    assert [e["type"] for e in events].count("llm_round_started") == 3
    assert events[-1]["type"] == "run_failed"
    assert events[-1]["payload"]["error"]["code"] == "max_rounds_exceeded"


async def test_paid_tool_is_billed_to_the_owner() -> None:
    script = tool_then_text("generate_image", {"prompt": "a cat"}, "Ok.")
    async with open_local_network(script=script, meter_default_account=True) as net:
        before = net.balance(net.account.id)
        async with client_for(net) as c:
            with trio.fail_after(TIMEOUT):
                await c.all_events(await c.run_id(user("cat")))
        spent = before - net.balance(net.account.id)
    # 0.04 USD for the image (4 sogni) plus the two LLM rounds' tokens.
    assert spent > 4


async def test_cancel_decision_and_cancel_while_waiting() -> None:
    script = tool_then_text("generate_image", {"prompt": "a cat"}, "Ok.")
    async with open_local_network(script=script) as net, client_for(net) as c:
        with trio.fail_after(TIMEOUT):
            first = await c.run_id({**user("a"), "confirm_cost": True})
            await c.until(first, {"run_awaiting_cost_confirmation"})
            declined = await c.post(
                first,
                "confirm-cost",
                {"tool_call_id": "call_img", "decision": "cancel", "reason": "too dear"},
            )
            assert declined.status_code == 200
            run = declined.json()["data"]["run"]
            assert run["status"] == "cancelled"
            assert run["cancellationReason"] == "too dear"
            assert [e["type"] for e in run["events"][-2:]] == [
                "run_cost_confirmation_resolved",
                "run_cancelled",
            ]

            second = await c.run_id({**user("b"), "confirm_cost": True})
            await c.until(second, {"run_awaiting_cost_confirmation"})
            cancelled = await c.post(second, "cancel", {"reason": "changed my mind"})
            assert cancelled.status_code == 200
            assert cancelled.json()["data"]["run"]["status"] == "cancelled"
            events = await c.all_events(second)
            assert events[-1]["type"] == "run_cancelled"
            assert events[-1]["payload"] == {"reason": "changed my mind"}
            again = await c.post(second, "cancel", {})
            assert again.status_code == 409
            late = await c.post(
                second, "confirm-cost", {"tool_call_id": "call_img", "decision": "cancel"}
            )
            assert late.status_code == 409
            assert late.json()["error_code"] == "run_not_awaiting_confirmation"


async def test_cancel_while_running_aborts_the_llm_job() -> None:
    async with (
        open_local_network(script=lambda request: [Text("thinking about it now"), Stall()]) as net,
        client_for(net) as c,
    ):
        with trio.fail_after(TIMEOUT):
            run_id = await c.run_id(user("go"))
            await c.until(run_id, {"assistant_message_delta"})
            assert net.live_jobs == 1
            response = await c.post(run_id, "cancel", {})
            assert response.status_code == 200
            assert response.json()["data"]["run"]["status"] == "cancelled"
            await net.wait_until(lambda: net.live_jobs == 0)
            events = await c.all_events(run_id)
    assert events[-1]["type"] == "run_cancelled"
    assert net.job_records[-1].outcome == "aborted"
    assert net.runs.active_runs == 0
    assert not net.errors


async def test_idempotent_create(net: LocalNetwork) -> None:
    other = net.add_account("idem-other", password="a password")
    other_key = net.create_api_key(other)
    with trio.fail_after(TIMEOUT):
        async with client_for(net) as c, client_for(net, other_key) as c2:
            first = await c.create(user("hi"), key="k-1")
            second = await c.create(user("something else"), key="k-1")
            third = await c.create(user("hi"), key="k-2")
            theirs = await c2.create(user("hi"), key="k-1")
            await c.all_events(first.json()["data"]["run"]["runId"])
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["data"]["idempotent"] is True
    run_id = first.json()["data"]["run"]["runId"]
    assert second.json()["data"]["run"]["runId"] == run_id
    assert third.json()["data"]["run"]["runId"] != run_id
    assert theirs.status_code == 202
    assert theirs.json()["data"]["run"]["runId"] != run_id


async def test_create_refuses_inline_media_and_bad_bodies(net: LocalNetwork) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with trio.fail_after(TIMEOUT):
        async with client_for(net) as c:
            inline = await c.create({"messages": [{"role": "user", "content": [image]}]})
            reference = await c.create(
                {**user("x"), "media_references": [{"url": "file:///a.png"}]}
            )
            context = await c.create({**user("x"), "media_context": {"images": ["ftp://x/a.png"]}})
            empty = await c.create({"messages": []})
            not_json = await c.http.post(
                "/v1/chat/runs",
                content=b"{",
                headers={**c.headers, "content-type": "application/json"},
            )
            anonymous = await c.http.post("/v1/chat/runs", json=user("x"))
    for response in (inline, reference, context):
        assert response.status_code == 400
        assert response.json()["error_code"] == "external_media_required"
    assert empty.status_code == 400
    assert not_json.status_code == 400
    assert anonymous.status_code == 401
    assert anonymous.json()["status"] == "error"


async def test_another_owner_cannot_see_a_run(net: LocalNetwork) -> None:
    other = net.add_account("eve", password="another password")
    other_key = net.create_api_key(other)
    with trio.fail_after(TIMEOUT):
        async with client_for(net) as c, client_for(net, other_key) as eve:
            run_id = await c.run_id(user("secret"))
            read = await eve.get(run_id)
            cancel = await eve.post(run_id, "cancel", {})
            stream = await eve.http.get(
                f"/v1/chat/runs/{run_id}/events/stream", headers=eve.headers
            )
            unknown = await c.get("no-such-run")
            await c.all_events(run_id)
    for response in (read, cancel, stream, unknown):
        assert response.status_code == 404
        assert response.json()["errorCode"] == 404


async def test_dropped_stream_resumes_with_last_event_id() -> None:
    worker = SimulatedWorker("slow", tokens_per_second=50)
    script = lambda request: [Text(" ".join(f"w{i}" for i in range(30)))]  # noqa: E731
    async with open_local_network(workers=[worker], script=script) as net:
        net.runs.chunks_per_delta = 1
        async with client_for(net) as c:
            with trio.fail_after(TIMEOUT):
                run_id = await c.run_id(user("go"))
                seen: list[dict[str, Any]] = []

                async def read_until_cut() -> None:
                    async with c.stream(run_id) as sse:
                        while True:
                            event = await sse.event()
                            assert event is not None
                            seen.append(event)
                            if len(seen) == 6:
                                assert await net.drop_event_streams() == 1

                with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                    await read_until_cut()
                assert seen[-1]["type"] != "run_completed"
                rest = await c.all_events(run_id, last=seen[-1]["sequence"])
                record = await c.run(run_id)
    combined = seen + rest
    assert sequences(combined) == list(range(len(combined)))
    assert combined == record["events"]
    assert net.runs.open_streams == 0


async def test_heartbeats_are_separate_comment_frames(
    mock_clock: trio.testing.MockClock,
) -> None:
    script = tool_then_text("generate_image", {"prompt": "a cat"}, "Ok.")
    async with open_local_network(script=script) as net:
        net.runs.heartbeat_interval = 5
        async with httpx.AsyncClient(base_url=net.rest_url, timeout=None) as http:
            c = Client(http, net.api_key)
            run_id = await c.run_id({**user("cat"), "confirm_cost": True})
            events = await c.until(run_id, {"run_awaiting_cost_confirmation"})
            async with c.stream(run_id, last=events[-1]["sequence"]) as sse:
                await trio.testing.wait_all_tasks_blocked()
                mock_clock.jump(5)
                assert await sse.raw_chunk() == ": ping\n\n"  # a frame of its own
                await trio.testing.wait_all_tasks_blocked()
                mock_clock.jump(5)
                assert await sse.raw_chunk() == ": ping\n\n"  # a frame of its own
                await c.post(run_id, "cancel", {})
                frame = await sse.frame()
                assert frame is not None
                assert frame.startswith("id: ")
                assert "\nevent: run_cancelled\n" in frame
                assert ": ping" not in frame
                assert await sse.frame() is None


async def test_stream_ends_cleanly_on_shutdown_and_restart_resumes(tmp_path: Path) -> None:
    database = tmp_path / "runs.sqlite"
    options: dict[str, Any] = {"database": database, "api_key": "runs-test-key"}
    script = tool_then_text("generate_image", {"prompt": "a cat"}, "Ok.")
    frames: list[dict[str, Any]] = []
    ended_cleanly = trio.Event()

    async def reader(c: Client, run_id: str, task_status: trio.TaskStatus[None]) -> None:
        async with c.stream(run_id) as sse:
            while (event := await sse.event()) is not None:
                frames.append(event)
                if event["type"] == "assistant_message_delta":
                    task_status.started()
        ended_cleanly.set()

    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http, trio.open_nursery() as nursery:

            def first_script(request: LLMJobRequest) -> list[Any]:
                if request.messages[0].content == "think":
                    return [Text("hmm let me see"), Stall()]
                return list(script(request) or [])

            async with open_local_network(script=first_script, workers=2, **options) as net:
                http.base_url = httpx.URL(net.rest_url)
                c = Client(http, net.api_key)
                stalled = await c.run_id(user("think"))
                await nursery.start(reader, c, stalled)
                waiting = await c.run_id({**user("cat"), "confirm_cost": True})
                before = await c.until(waiting, {"run_awaiting_cost_confirmation"})
            # The network is gone: the open stream ended with a complete body.
            await ended_cleanly.wait()
        assert frames[-1]["type"] == "assistant_message_delta"

        async with open_local_network(script=script, **options) as net, client_for(net) as c:
            rest = await c.all_events(stalled, last=frames[-1]["sequence"])
            types = [e["type"] for e in rest]
            assert types[0] == "run_resumed"
            assert types[1] == "llm_round_started"
            assert rest[1]["payload"]["round"] == 2
            assert types[-1] == "run_completed"
            assert sequences(rest) == list(
                range(frames[-1]["sequence"] + 1, rest[-1]["sequence"] + 1)
            )
            # The run waiting for cost confirmation stayed waiting and can be confirmed now.
            record = await c.run(waiting)
            assert record["status"] == "waiting_for_user"
            assert record["events"] == before
            preview = record["billingPreview"]
            ok = await c.post(
                waiting,
                "confirm-cost",
                {"tool_call_id": "call_img", "decision": "confirm", "acceptedCostPreview": preview},
            )
            assert ok.status_code == 200
            done = await c.all_events(waiting, last=before[-1]["sequence"])
            assert done[-1]["type"] == "run_completed"
            assert not net.errors
