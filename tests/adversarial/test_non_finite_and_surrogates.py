"""NaN / infinite numbers and lone surrogates: the client refuses them before sending anything
(`InvalidRequestError`, never a silent ``null`` or an untyped `UnicodeEncodeError`), and
localnet refuses them wherever a job request arrives (socket frames, hosted completions, durable
runs), never accepting one."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import MODEL, InMemoryHTTP, client_in_memory, local_network

from trio_sogni import InvalidRequestError
from trio_sogni.localnet._jobs._session import Rejected, Reply, Session, parse_handshake
from trio_sogni.protocol import LLMJobError

NAN = float("nan")
INF = float("inf")


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"messages": user("\ud800")}, "lone surrogate"),
        ({"messages": user("x"), "app_source": "a\udfff"}, "surrogate"),
        ({"messages": user("x"), "temperature": NAN}, "temperature"),
        ({"messages": user("x"), "top_p": INF}, "top_p"),
        ({"messages": user("x"), "chat_template_kwargs": {"k": NAN}}, "NaN or infinity"),
        (
            {
                "messages": user("x"),
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"maximum": INF}},
                    }
                ],
            },
            "NaN or infinity",
        ),
    ],
)
async def test_the_client_refuses_unsendable_values_before_sending(
    autojump_clock: trio.testing.MockClock, arguments: dict[str, Any], needle: str
) -> None:
    async with local_network(listen=False) as net, client_in_memory(net) as sogni:
        before = len(net.job_requests)
        for create in (sogni.chat.completions.create, sogni.chat.hosted.create):
            with pytest.raises(InvalidRequestError, match=needle):
                await create(model=MODEL, **arguments)
        assert len(net.job_requests) == before
        assert [r.path for r in net.http_requests if "chat" in r.path] == []


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({"messages": user("\ud800")}, r"body\['messages'\]\[0\]\['content'\]"),
        ({"messages": user("x"), "sampling": {"temperature": NAN}}, "sampling"),
        ({"messages": user("x"), "runtime_config": {"x": -INF}}, "runtime_config"),
    ],
)
async def test_runs_refuse_unsendable_values_before_sending(
    autojump_clock: trio.testing.MockClock, arguments: dict[str, Any], needle: str
) -> None:
    async with local_network(listen=False) as net, client_in_memory(net) as sogni:
        with pytest.raises(InvalidRequestError, match=needle):
            await sogni.chat.runs.create(model=MODEL, **arguments)
        assert [r.path for r in net.http_requests if "runs" in r.path] == []


def raw_frame(payload: bytes) -> bytes:
    data = base64.b64encode(payload).decode()
    return f'{{"type":"llmJobRequest","data":"{data}"}}'.encode()


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "presence_penalty"])
def test_localnet_refuses_an_infinite_sampling_value_in_a_socket_frame(field: str) -> None:
    payload = (
        f'{{"jobID":"J1","model":"m","messages":[{{"role":"user","content":"hi"}}],'
        f'"{field}":1e400}}'
    ).encode()
    effects = Session(parse_handshake("/?appId=a")).receive_frame(raw_frame(payload))
    assert [type(e) for e in effects] == [Rejected, Reply]
    reply = effects[1]
    assert isinstance(reply, Reply)
    assert isinstance(reply.message, LLMJobError)
    assert reply.message.job_id == "J1"
    assert field in str(reply.message.error_message)


def test_a_deep_subscriptions_parameter_is_a_handshake_problem() -> None:
    handshake = parse_handshake("/?appId=a&socketEventSubscriptions=" + "%5B" * 50_000)
    assert any("socketEventSubscriptions" in p for p in handshake.problems)


@pytest.mark.parametrize(
    "sampling", [b'"temperature": NaN', b'"temperature": 1e400', b'"top_p": -Infinity']
)
async def test_localnet_rest_refuses_non_finite_sampling(
    autojump_clock: trio.testing.MockClock, sampling: bytes
) -> None:
    async with (
        local_network(listen=False) as net,
        httpx.AsyncClient(transport=InMemoryHTTP(net), base_url="http://localnet") as http,
    ):
        headers = {"api-key": net.api_key, "content-type": "application/json"}
        messages = b'"messages": [{"role": "user", "content": "hi"}]'
        hosted = await http.post(
            "/v1/chat/completions",
            content=b'{"model": "' + MODEL.encode() + b'", ' + messages + b", " + sampling + b"}",
            headers=headers,
        )
        runs = await http.post(
            "/v1/chat/runs",
            content=b"{" + messages + b', "sampling": {' + sampling + b"}}",
            headers=headers,
        )
        assert hosted.status_code == 400, hosted.text
        assert runs.status_code == 400, runs.text
        assert list(net.job_requests) == []
