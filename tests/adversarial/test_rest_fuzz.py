"""Hostile REST bodies and headers never get a 5xx from localnet: every route, through the real
HTTP server (in-memory connections, virtual time), with a table of hostile bodies, and each field
of a valid body replaced by hostile values. Malformed input is a 4xx, found at the shared layer
where possible (the Router maps msgspec decode/validation errors to 400; every job passes
``validate_request`` at admission)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import MODEL, InMemoryHTTP, local_network

from trio_sogni.localnet import LocalNetwork

HOSTILE_BODIES: list[bytes] = [
    b"",
    b"[]",
    b'"x"',
    b"1",
    b"null",
    b"hello",
    b"\xff\xfe{",
    b'{"a":"\xff"}',
    b"{",
    b'{"a":1}x',
    b"\xef\xbb\xbf{}",
    b'{"a":NaN}',
    b'{"a":1e400}',
    b'{"a":"\\ud800"}',
    b"[" * 2000,
]
"""Whole bodies: empty, wrong JSON types, not JSON, not UTF-8, truncated, trailing data, a BOM,
NaN, an out-of-range number, a lone surrogate escape, nesting past the depth limit."""

HOSTILE_VALUES: list[Any] = [
    None,
    1,
    -1,
    10**30,
    -(10**30),
    2**64,
    1e308,
    float("nan"),
    float("inf"),
    "x",
    "",
    "\ud800",
    "x" * 1000,
    True,
    [],
    [1],
    ["x"],
    [None],
    [[]],
    [{}],
    {},
    {"a": 1},
]
"""Values put in place of each field (and each nested field) of a valid body."""

MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "x",
        "schema": {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "array", "minItems": 1}},
            "required": ["a"],
        },
    },
}
VALID_BODIES: dict[str, list[dict[str, Any]]] = {
    "/v1/account/nonce": [{"walletAddress": "0x" + "ab" * 20}],
    "/v1/account/login": [{"walletAddress": "0x" + "ab" * 20, "signature": "0x" + "00" * 65}],
    "/v1/account/create": [
        {
            "appid": "a",
            "username": "bob",
            "email": "b@example.com",
            "subscribe": False,
            "walletAddress": "0x" + "ab" * 20,
            "signature": "0x" + "00" * 65,
            "rememberMe": True,
        }
    ],
    "/v1/account/refresh-token": [{"refreshToken": "x.y.z"}],
    "/v1/chat/completions": [
        {
            "model": MODEL,
            "messages": MESSAGES,
            "max_tokens": 5,
            "temperature": 0.5,
            "tools": TOOLS,
            "tool_choice": "auto",
            "stop": ["x"],
        },
        {"model": MODEL, "messages": MESSAGES, "response_format": SCHEMA},
    ],
    "/v1/creative-agent/tools/execute": [
        {
            "tool": "enhance_prompt",
            "arguments": {
                "prompt": "cat",
                "target_output": "image_prompt",
                "destination_model": "flux",
            },
            "token_type": "sogni",
        }
    ],
    "/v1/chat/runs": [
        {
            "model": MODEL,
            "messages": MESSAGES,
            "sampling": {"temperature": 0.5, "max_tokens": 5},
            "tools": TOOLS,
            "media_references": [{"url": "http://example.com/a.png"}],
            "media_context": {"images": ["http://example.com/a.png"], "videos": []},
            "max_estimated_capacity_units": 5,
            "confirm_cost": True,
            "token_type": "sogni",
            "runtime_config": {"jobConfirmationThresholdUsd": 1},
        }
    ],
    "/v1/chat/runs/{runId}/cancel": [{"reason": "r"}],
    "/v1/chat/runs/{runId}/confirm-cost": [
        {"tool_call_id": "t", "decision": "confirm", "overrides": {"a": 1}, "reason": "r"}
    ],
}


def field_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every field and list item of ``value`` (and ``()``, the whole body)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():  # pyright: ignore[reportUnknownVariableType]
            yield from field_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):  # pyright: ignore[reportUnknownArgumentType]
            yield from field_paths(child, (*prefix, index))


def replaced(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(body)
    target: Any = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copied


def encode(value: Any) -> bytes:
    """JSON as a hostile client writes it: NaN/Infinity literals, lone surrogates escaped."""
    return json.dumps(value).encode()


class Fuzzer:
    def __init__(self, net: LocalNetwork, http: httpx.AsyncClient) -> None:
        self.net = net
        self.http = http
        self.sent = 0
        self.failures: list[str] = []

    async def send(
        self, method: str, target: str, body: bytes, label: str, **headers: str
    ) -> httpx.Response:
        self.sent += 1
        response = await self.http.request(
            method,
            target,
            content=body,
            headers={"api-key": self.net.api_key, "content-type": "application/json", **headers},
        )
        if response.status_code >= 500:
            self.failures.append(
                f"{method} {target} [{label}] -> {response.status_code} {response.text[:120]}"
            )
        return response


@pytest.mark.deadline(600)
async def test_no_hostile_body_gets_a_5xx_on_any_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        local_network(listen=False, workers=2) as net,
        httpx.AsyncClient(transport=InMemoryHTTP(net), base_url="http://localnet") as http,
    ):
        fuzz = Fuzzer(net, http)
        created = await fuzz.send("POST", "/v1/chat/runs", encode({"messages": MESSAGES}), "run")
        run_id = created.json()["data"]["run"]["id"]
        routes = net.rest.router.routes()
        assert {p for _, p in routes} >= set(VALID_BODIES)
        for method, pattern in routes:
            target = pattern.replace("{runId}", run_id).replace("{tokenType}", "sogni")
            target = target.replace("{model}", MODEL).replace("{inputTokens}", "1")
            target = target.replace("{maxOutputTokens}", "1")
            for body in HOSTILE_BODIES:
                await fuzz.send(method, target, body, f"body {body[:16]!r}")
            for valid in VALID_BODIES.get(pattern, []):
                for path in list(field_paths(valid)):
                    for value in HOSTILE_VALUES:
                        label = f"{'.'.join(map(str, path))}={value!r:.24}"
                        await fuzz.send(method, target, encode(replaced(valid, path, value)), label)
        for segments in ("sogni/x/99999999999999/1", "sogni/%ff/1/1", "spark/x/1/1e400"):
            await fuzz.send("GET", f"/api/v1/job-llm/estimate/{segments}", b"", "estimate")
        assert fuzz.failures == []
        assert fuzz.sent > 2000
        me = await http.get("/v1/account/me", headers={"api-key": net.api_key})
        assert me.status_code == 200


@pytest.mark.parametrize(
    "value", [str(10**30), str(2**63), "-5", "+5", "1e3", "0x10", "5 5", "9" * 1000]
)
async def test_a_bad_last_event_id_is_a_400_before_the_stream_starts(
    autojump_clock: trio.testing.MockClock, value: str
) -> None:
    async with (
        local_network(listen=False) as net,
        httpx.AsyncClient(transport=InMemoryHTTP(net), base_url="http://localnet") as http,
    ):
        headers = {"api-key": net.api_key}
        created = await http.post("/v1/chat/runs", json={"messages": MESSAGES}, headers=headers)
        run_id = created.json()["data"]["run"]["id"]
        response = await http.get(
            f"/v1/chat/runs/{run_id}/events/stream",
            headers={**headers, "last-event-id": value},
        )
        assert response.status_code == 400
        assert "Last-Event-ID" in response.json()["message"]
        ok = await http.get(
            f"/v1/chat/runs/{run_id}/events/stream",
            headers={**headers, "last-event-id": str(2**63 - 1)},
        )
        assert ok.status_code == 200
