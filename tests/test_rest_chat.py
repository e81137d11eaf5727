"""The REST half of the Chat API without a server: SSE framing, the estimate formula, chat-error
shapes, and the run event stream's reconnect/dedupe/ordering against scripted HTTP doubles."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trio_sogni import ChatJobError, InvalidRequestError
from trio_sogni._errors import (
    APIStatusError,
    ProtocolError,
    RunStateError,
    TransportError,
    chat_error_from_payload,
)
from trio_sogni._hosted import estimate_input_tokens, hosted_body, resolve_max_output_tokens
from trio_sogni._request import build_llm_request
from trio_sogni._runs import ChatRuns, check_external_media
from trio_sogni._transport import RestClient
from trio_sogni._transport._sse import SSEParser
from trio_sogni.protocol import LLMModelInfo, LLMParamConstraint

# --- SSE framing ----------------------------------------------------------------------------------


def test_sse_frames_comments_and_splits() -> None:
    parser = SSEParser()
    stream = (
        b": ping\n\n"
        b'id: 1\nevent: tool_started\ndata: {"a":\ndata: 1}\n\n'
        b"event: run_status\r\ndata: {}\r\n\r\n"
        b"event:x\ndata:\n\n"
        b"data: tail"
    )
    frames = []
    for i in range(len(stream)):  # one byte at a time: frames must not depend on chunking
        frames += parser.feed(stream[i : i + 1])
    frames += parser.finish()
    assert [(f.event, f.data, f.id) for f in frames] == [
        ("tool_started", '{"a":\n1}', "1"),
        ("run_status", "{}", None),
        ("message", "tail", None),
    ]


def test_sse_multibyte_text_across_chunks_and_oversize_frames() -> None:
    parser = SSEParser(max_frame=64)
    data = 'data: {"t":"héllo ✓"}\n\n'.encode()
    frames = parser.feed(data[:9]) + parser.feed(data[9:])
    assert frames[0].data == '{"t":"héllo ✓"}'
    with pytest.raises(ProtocolError, match="longer than 64 bytes"):
        parser.feed(b"data: " + b"x" * 100)
    # frames completed before the oversize one are returned first; the error comes next
    parser = SSEParser(max_frame=64)
    assert parser.feed(b"data: ok\n\ndata: " + b"x" * 100)[0].data == "ok"
    with pytest.raises(ProtocolError):
        parser.feed(b"\n\n")
    with pytest.raises(ProtocolError):
        parser.finish()
    # a complete frame over the limit is refused as well
    with pytest.raises(ProtocolError):
        SSEParser(max_frame=64).feed(b"data: " + b"x" * 100 + b"\n\n")


# --- the estimate formula -------------------------------------------------------------------------


def _formula(messages: list[dict[str, Any]]) -> int:
    """protocol.md §4.7, written out: JSON.stringify length in UTF-16 units, / 4, ceil."""
    text = json.dumps(messages, separators=(",", ":"), ensure_ascii=False)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    return math.ceil(units / 4)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hello"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße, 世界"}],
        [{"role": "user", "content": 'emoji 😀😀 and a quote " and a newline\n'}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    ],
)
def test_input_tokens_follow_the_official_formula(messages: list[dict[str, Any]]) -> None:
    blanked = json.loads(json.dumps(messages))
    for m in blanked:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if "image_url" in part:
                    part["image_url"]["url"] = "[image]"
    assert estimate_input_tokens(messages) == _formula(blanked)


def test_input_tokens_known_values() -> None:
    # '[{"role":"user","content":"😀"}]' is 30 code points, 31 UTF-16 units -> ceil(31/4) = 8.
    assert estimate_input_tokens([{"role": "user", "content": "😀"}]) == 8
    assert estimate_input_tokens([{"role": "user", "content": "a"}]) == 8  # 30 units


def test_max_output_tokens_resolution() -> None:
    info = LLMModelInfo(
        max_output_tokens=LLMParamConstraint(default=8192, thinking_complex_default=32768)
    )
    assert resolve_max_output_tokens(info, max_tokens=10, think=True, task_profile="coding") == 10
    assert (
        resolve_max_output_tokens(info, max_tokens=None, think=True, task_profile="coding") == 32768
    )
    assert (
        resolve_max_output_tokens(info, max_tokens=None, think=True, task_profile="general") == 8192
    )
    assert (
        resolve_max_output_tokens(info, max_tokens=None, think=False, task_profile="coding") == 8192
    )
    assert resolve_max_output_tokens(None, max_tokens=None, think=None, task_profile=None) == 4096


def test_hosted_body_uses_camel_case_billing_mode_only() -> None:
    request = build_llm_request(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=False,
        params={"max_tokens": 5, "billing_mode": "tokens", "token_type": "spark", "think": True},
        default_app_source="app",
    )
    body = hosted_body(request)
    assert body["billingMode"] == "tokens"
    assert "billing_mode" not in body
    assert body["token_type"] == "spark"
    assert body["app_source"] == "app"
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["messages"] == [{"role": "user", "content": "x"}]
    assert not {"jobID", "job_id", "type", "stream"} & body.keys()


# --- chat error shapes ----------------------------------------------------------------------------


def test_recognised_chat_error_shapes() -> None:
    nested = chat_error_from_payload(
        {
            "error": {
                "message": "upgrade",
                "type": "subscription_unavailable",
                "code": "4078",
                "subscription": {"subscriptionLimit": True, "requiredPlans": ["pro"]},
            }
        },
        status=402,
    )
    assert nested is not None
    assert (nested.code, nested.error_type, nested.status, str(nested)) == (
        "4078",
        "subscription_unavailable",
        402,
        "upgrade",
    )
    assert nested.required_plans == ["pro"]
    flat = chat_error_from_payload({"error": "insufficient_balance", "error_message": "no funds"})
    assert flat is not None
    assert (flat.error_type, str(flat)) == ("insufficient_balance", "no funds")
    assert chat_error_from_payload({"error": {"code": 4078}}) is None  # code must be a string
    assert chat_error_from_payload({"status": "error", "message": "x", "errorCode": 3}) is None
    assert chat_error_from_payload("text") is None


def test_run_requests_refuse_inline_media() -> None:
    ok = {"messages": [{"role": "user", "content": [{"image_url": {"url": "https://x/y.png"}}]}]}
    check_external_media(ok)
    for bad in (
        {"messages": [{"role": "user", "content": [{"image_url": {"url": "data:image/png;b"}}]}]},
        {"media_references": [{"dataUri": "data:x"}]},
        {"media_context": {"images": ["file:///etc/passwd"]}},
        {"media_context": {"uploadedAudio": [{"url": "data:audio/wav;base64,"}]}},
    ):
        with pytest.raises(InvalidRequestError, match="http"):
            check_external_media(bad)


# --- the run event stream against scripted HTTP doubles -------------------------------------------


def event(seq: int, kind: str = "assistant_message_delta") -> bytes:
    body = {"sequence": seq, "type": kind, "at": "2026-11-29T00:00:00Z", "payload": {"n": seq}}
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


Script = Callable[[httpx.Request, int], httpx.Response]


async def drain(stream: Any) -> None:
    async with stream as events:
        async for _ in events:
            pass


def runs_for(script: Script) -> tuple[ChatRuns, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return script(request, len(seen))

    async def headers() -> dict[str, str]:
        return {"api-key": "k"}

    rest = RestClient(
        "http://rest.test",
        "http://socket.test",
        headers,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return ChatRuns(rest, app_source=None), seen


class body_of:
    """A response body that yields ``parts``, then raises ``error`` if given. Not an async
    generator: httpx never closes a body it did not exhaust, and Trio warns when an unfinished
    async generator is garbage-collected during the run."""

    def __init__(self, *parts: bytes, error: Exception | None = None) -> None:
        self._parts = list(parts)
        self._error = error

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._parts:
            return self._parts.pop(0)
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration


async def test_stream_resumes_after_drops_and_yields_each_event_once_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: httpx.Request, n: int) -> httpx.Response:
        last = request.headers.get("last-event-id")
        if n == 1:
            assert last is None
            drop = httpx.ReadError("connection reset")
            return httpx.Response(
                200, content=body_of(event(0, "run_created"), event(1), error=drop)
            )
        if n == 2:
            assert last == "1"
            return httpx.Response(503, json={"status": "error", "message": "restarting"})
        if n == 3:
            assert last == "1"
            # a duplicate, garbage, a comment, then a gap (4 is missing): must reconnect
            return httpx.Response(
                200,
                content=body_of(
                    event(1), b"data: {not json\n\n", b": ping\n\n", event(2), event(3), event(5)
                ),
            )
        assert n == 4
        assert last == "3"
        return httpx.Response(
            200,
            content=body_of(event(4), event(5), event(6, "run_completed"), event(7)),
        )

    runs, seen = runs_for(script)
    async with runs.stream_events("run 1") as events:
        got = [(e.sequence, e.type) async for e in events]
    assert [s for s, _ in got] == [0, 1, 2, 3, 4, 5, 6]
    assert got[-1] == (6, "run_completed")
    assert events.skipped_frames == 1
    assert events.duplicates == 1
    assert events.reconnects >= 3
    assert seen[0].url.raw_path == b"/v1/chat/runs/run%201/events/stream"
    assert seen[0].headers["accept"] == "text/event-stream"


async def test_server_closing_early_reconnects_and_fatal_statuses_raise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(200, content=body_of(event(0, "run_created")))
        return httpx.Response(200, content=body_of(event(1, "run_cancelled")))

    runs, _ = runs_for(script)
    async with runs.stream_events("r", last_event_id=None) as events:
        assert [e.sequence async for e in events] == [0, 1]

    def missing(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(
            404, json={"status": "error", "message": "no such run", "errorCode": 404}
        )

    runs, seen = runs_for(missing)
    with pytest.raises(APIStatusError) as info:
        await drain(runs.stream_events("nope"))
    assert info.value.status_code == 404
    assert len(seen) == 1


async def test_a_server_that_keeps_skipping_is_a_protocol_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(200, content=body_of(event(0), event(2)))

    runs, seen = runs_for(script)
    with pytest.raises(ProtocolError, match="skipping"):
        await drain(runs.stream_events("r"))
    assert len(seen) == 4


@pytest.mark.deadline(120)  # virtual seconds (autojump): a 60 s reconnect timeout
async def test_an_unreachable_server_gives_up_after_the_reconnect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(request: httpx.Request, n: int) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    runs, seen = runs_for(script)
    start = trio.current_time()
    with pytest.raises(TransportError, match="could not be reopened"):
        await drain(runs.stream_events("r", reconnect_timeout=60))
    assert 59 <= trio.current_time() - start <= 61
    assert 5 < len(seen) < 40  # backed off, not a busy loop


async def test_run_calls_map_errors_and_send_idempotency_keys() -> None:
    def script(request: httpx.Request, n: int) -> httpx.Response:
        if request.url.path.endswith("/confirm-cost"):
            return httpx.Response(
                409, json={"status": "error", "message": "stale", "errorCode": 409}
            )
        if request.url.path.endswith("/cancel"):
            return httpx.Response(
                402, json={"error": {"message": "pay", "type": "insufficient_balance", "code": "4"}}
            )
        run = {
            "runId": "r1",
            "status": "queued",
            "events": [{"sequence": 0, "type": "run_created"}],
        }
        return httpx.Response(202, json={"status": "success", "data": {"run": run}})

    runs, seen = runs_for(script)
    record = await runs.create(
        messages=[{"role": "user", "content": "hi"}], model="m", idempotency_key="key-1"
    )
    assert (record.run_id, record.status, record.events[0].type) == ("r1", "queued", "run_created")
    assert seen[0].headers["idempotency-key"] == "key-1"
    assert "idempotency_key" not in json.loads(seen[0].content)
    with pytest.raises(RunStateError):
        await runs.confirm_cost(
            "r1", tool_call_id="t", decision="confirm", accepted_cost_preview={}
        )
    assert json.loads(seen[1].content)["acceptedCostPreview"] == {}
    with pytest.raises(ChatJobError) as info:
        await runs.cancel("r1", "enough")
    assert info.value.error_type == "insufficient_balance"
    with pytest.raises(InvalidRequestError):
        await runs.confirm_cost("r1", tool_call_id="t", decision="maybe")  # type: ignore[arg-type]
    assert len(seen) == 3
