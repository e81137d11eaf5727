"""Deeply nested JSON from a hostile peer never overflows the C stack, even after eth-account
(imported by any login or ``--user``) has raised the recursion limit to 100,000.

The dangerous cases run in a subprocess: a segfault there is a failed assertion on its exit
status, not a crash of pytest. Every JSON decode of untrusted bytes goes through
``trio_sogni.protocol.JSONDecoder`` / ``decode_json``, which checks the depth first.
"""

from __future__ import annotations

import subprocess
import sys
import time

import msgspec
import pytest

from trio_sogni.protocol import MAX_JSON_DEPTH, JSONDecoder, check_json_depth, decode_json

DEEP = 100_000

LOCALNET_ROUTES = r"""
import json, sys, time
import eth_account  # raises the recursion limit, as any login or --user does
import h11, trio, trio.testing
from trio_sogni.localnet import open_local_network

assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
DEEP = int(sys.argv[1])
BODIES = {"array": b"[" * DEEP, "object": b'{"a":' * DEEP}

async def http(net, method, target, headers, body):
    stream = net.connect_in_memory()
    conn = h11.Connection(h11.CLIENT)
    headers = [*headers, ("host", "x"), ("connection", "close"), ("content-length", str(len(body)))]
    data = conn.send(h11.Request(method=method, target=target, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    status = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(65536)
            conn.receive_data(bytes(chunk))
            if not chunk:
                break
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    await stream.aclose()
    return status

async def main():
    answers = []
    async with open_local_network(models=["test-model"], listen=False) as net:
        routes = net.rest.router.routes()
        assert len(routes) >= 17, routes
        for method, pattern in routes:
            target = pattern.replace("{runId}", "run-1").replace("{tokenType}", "sogni")
            target = target.replace("{model}", "test-model").replace("{inputTokens}", "1")
            target = target.replace("{maxOutputTokens}", "1")
            for name, body in BODIES.items():
                started = time.perf_counter()
                status = await http(
                    net, method, target,
                    [("api-key", net.api_key), ("content-type", "application/json")], body,
                )
                answers.append([method, pattern, name, status, time.perf_counter() - started])
        alive = await http(net, "GET", "/v1/account/me", [("api-key", net.api_key)], b"")
    print(json.dumps({"answers": answers, "alive": alive}))

trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_localnet_route_refuses_a_100k_deep_body_after_eth_account() -> None:
    out = run_python(LOCALNET_ROUTES, str(DEEP))
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # -11: SIGSEGV
    result = msgspec.json.decode(out.stdout)
    assert result["alive"] == 200
    for method, pattern, name, status, seconds in result["answers"]:
        assert status is not None, (method, pattern, name)
        assert status < 500, (method, pattern, name, status)
        # Routes that read a body refuse it; the others ignore it (GETs, logout).
        reads_body = method == "POST" and pattern != "/v1/account/logout"
        if reads_body:
            assert status == 400, (method, pattern, name, status)
        assert seconds < 5, (method, pattern, name, seconds)


CLIENT_DECODERS = r"""
import base64, sys
import eth_account  # the wallet-login client imports it: recursion limit 100,000
assert sys.getrecursionlimit() >= 100_000
from trio_sogni import AuthenticationError, InvalidRequestError, parse_tool_call_arguments
from trio_sogni._auth import jwt_claims
from trio_sogni.protocol import FunctionCall, ToolCall

DEEP = int(sys.argv[1])
payload = base64.urlsafe_b64encode(b"[" * DEEP).rstrip(b"=").decode()
try:
    jwt_claims("eyJhbGciOiJIUzI1NiJ9." + payload + ".c2ln")
except AuthenticationError as exc:
    print("jwt:", type(exc).__name__)
call = ToolCall(id="c1", function=FunctionCall(name="f", arguments='{"a":' * DEEP))
try:
    parse_tool_call_arguments(call)
except InvalidRequestError as exc:
    print("tool:", type(exc).__name__)

# A socket frame whose payload nests too deeply: the router skips it and, to fail the job it
# names, decodes the payload once more (guarded too).
from trio_sogni._router import JobRouter

class Events:
    listening: set[str] = set()
    def emit(self, event: object) -> None: ...

router = JobRouter(max_buffered_chunks=4, events=Events())
for kind in ("jobTokens", "jobState"):
    data = base64.b64encode(b'{"jobID":' + b"[" * DEEP).decode()
    router.feed_batch(['{"type":"%s","data":"%s"}' % (kind, data)])
print("frames:", router.statistics().malformed_frames)

# A real model's output is untrusted too: tool calls parsed from its text.
from trio_sogni.localnet._workers._llama import parse_tool_calls
print("model:", parse_tool_calls('{"name": "f", "arguments": ' + "[" * DEEP, ["f"]))
"""


def test_the_client_refuses_deep_jwt_claims_tool_arguments_and_frames_after_eth_account() -> None:
    out = run_python(CLIENT_DECODERS, str(DEEP))
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.splitlines() == [
        "jwt: AuthenticationError",
        "tool: InvalidRequestError",
        "frames: 2",
        "model: []",
    ]


def test_the_guarded_decoder_refuses_deep_json_with_a_decode_error() -> None:
    for data in (b"[" * DEEP, b'{"a":' * DEEP, "[" * DEEP):
        with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
            decode_json(data)
        with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
            JSONDecoder(list[int]).decode(data)
    shallow = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_json(shallow) is not None


def test_the_guarded_decoder_refuses_out_of_range_numbers_and_lone_surrogates() -> None:
    with pytest.raises(msgspec.DecodeError, match="out of range"):
        decode_json(b'{"temperature": 1e400}')
    with pytest.raises(msgspec.DecodeError):
        decode_json('"\ud800"')
    check_json_depth("[" * 600 + '"\ud800"')  # a str with a lone surrogate: no UnicodeEncodeError


def test_the_depth_check_is_linear_on_unterminated_escaped_strings() -> None:
    # 513 bracket pairs force the scan; then an unterminated string of escaped quotes. The old
    # pattern retried from every quote: quadratic (20,000 escapes took 6 s, 50,000 about 40 s).
    data = b"[]" * (MAX_JSON_DEPTH + 1) + b'"' + b'\\"' * 50_000
    started = time.perf_counter()
    check_json_depth(data)
    assert time.perf_counter() - started < 2
