"""The sans-IO session: handshake parsing, strict decoding, effects — no sockets involved."""

from __future__ import annotations

import base64
import json

import pytest

from trio_sogni.localnet._jobs._session import (
    Abort,
    Rejected,
    Reply,
    Session,
    Submit,
    parse_handshake,
    validate_request,
)
from trio_sogni.protocol import (
    AbortJob,
    ChangeNetwork,
    ChatMessage,
    LLMJobError,
    LLMJobRequest,
    SetSocketEventSubscriptions,
    SocketEventSubscriptionsUpdated,
    encode_client_message,
    encode_envelope,
)

SDK_TARGET = (
    "/?appId=my-app&clientName=Sogni%2F3.0.0+%28sogni-client%29+5.70.0&clientType=artist"
    "&forceWorkerId=fast&appSource=demo&socketEventSubscriptions=%7B%22modelAvailability%22%3Afalse%7D"
)


def session(target: str = SDK_TARGET) -> Session:
    return Session(parse_handshake(target))


def request(**fields: object) -> LLMJobRequest:
    return LLMJobRequest(
        job_id="JOB-1",
        model="m",
        messages=[ChatMessage(role="user", content="hi")],
        **fields,  # type: ignore[arg-type]
    )


def test_handshake_reads_the_sdk_query() -> None:
    hs = parse_handshake(SDK_TARGET)
    assert hs.app_id == "my-app"
    assert hs.client_name == "Sogni/3.0.0 (sogni-client) 5.70.0"
    assert hs.client_type == "artist"
    assert hs.app_source == "demo"
    assert hs.network == "fast"
    assert hs.socket_event_subscriptions == {"modelAvailability": False}
    assert hs.problems == ()


def test_handshake_relaxed_missing_app_id_and_bad_subscriptions() -> None:
    hs = parse_handshake("/any/path?forceWorkerId=&socketEventSubscriptions=nope")
    assert hs.path == "/any/path"
    assert hs.app_id is None
    assert hs.network == "relaxed"
    assert hs.socket_event_subscriptions == {}
    assert len(hs.problems) == 1
    assert parse_handshake("/").network == "fast"


def test_subscription_opt_out() -> None:
    s = session()
    assert not s.wants("modelAvailability")
    assert s.wants("somethingElse")


def test_job_request_is_submitted() -> None:
    req = request(stream=True, max_tokens=5)
    assert session().receive_frame(encode_client_message(req)) == [Submit(req)]


def test_text_frames_are_accepted_too() -> None:
    req = request()
    assert session().receive_frame(encode_client_message(req).decode()) == [Submit(req)]


def test_abort() -> None:
    frame = encode_client_message(AbortJob(job_id="JOB-1"))
    assert session().receive_frame(frame) == [Abort("JOB-1", "artistCanceled")]


def test_change_network() -> None:
    s = session()
    effects = s.receive_frame(encode_client_message(ChangeNetwork(network="relaxed")))
    assert effects == [Reply(ChangeNetwork(network="relaxed"))]
    assert s.network == "relaxed"


def test_set_socket_event_subscriptions() -> None:
    s = session("/?appId=a")
    frame = encode_client_message(
        SetSocketEventSubscriptions(subscriptions={"modelAvailability": False}, subscribe=["x"])
    )
    assert s.receive_frame(frame) == [
        Reply(
            SocketEventSubscriptionsUpdated(
                socket_event_subscriptions={"modelAvailability": False, "x": True}
            )
        )
    ]
    assert not s.wants("modelAvailability")
    s.receive_frame(encode_client_message(SetSocketEventSubscriptions(reset=True)))
    assert s.wants("modelAvailability")
    s.receive_frame(
        encode_client_message(SetSocketEventSubscriptions(event="modelAvailability", enabled=False))
    )
    assert not s.wants("modelAvailability")


def test_unknown_field_with_job_id_is_answered() -> None:
    frame = encode_envelope(
        "llmJobRequest",
        {"jobID": "J9", "model": "m", "messages": [{"role": "user", "content": "x"}], "bogus": 1},
    )
    effects = session().receive_frame(frame)
    assert isinstance(effects[0], Rejected)
    assert effects[0].job_id == "J9"
    reply = effects[1]
    assert isinstance(reply, Reply)
    assert isinstance(reply.message, LLMJobError)
    assert reply.message.job_id == "J9"
    assert reply.message.error == "invalid_request"
    assert "bogus" in (reply.message.error_message or "")


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b'{"type":"llmJobRequest","data":"%%%not base64"}',
        b'{"type":"llmJobRequest"}',
        encode_envelope("llmJobRequest", ["a", "list"]),
        encode_envelope("noSuchType", {"x": 1}),
        b'{"type":"llmJobRequest","data":"' + base64.b64encode(b"not json") + b'"}',
    ],
)
def test_undecodable_frames_without_job_id_are_only_recorded(frame: bytes) -> None:
    effects = session().receive_frame(frame)
    assert len(effects) == 1
    assert isinstance(effects[0], Rejected)
    assert effects[0].job_id is None


def test_unknown_type_with_job_id_is_answered() -> None:
    effects = session().receive_frame(encode_envelope("jobRequest", {"jobID": "MEDIA"}))
    assert [type(e) for e in effects] == [Rejected, Reply]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop": [""]}, "stop"),
        ({"stop": ["s"] * 17}, "stop"),
    ],
)
def test_sampling_validation(fields: dict[str, object], needle: str) -> None:
    req = request(**fields)
    problem = validate_request(req)
    assert problem is not None
    assert needle in problem
    effects = session().receive_frame(encode_client_message(req))
    assert isinstance(effects[-1], Reply)
    assert isinstance(effects[-1].message, LLMJobError)
    assert effects[-1].message.error == "invalid_request"


def test_empty_messages_and_wrong_types_are_invalid() -> None:
    assert validate_request(LLMJobRequest(job_id="J", model="m", messages=[])) is not None
    frame = encode_envelope(
        "llmJobRequest", {"jobID": "J", "model": "m", "messages": [{"role": "user", "content": 5}]}
    )
    assert isinstance(session().receive_frame(frame)[0], Rejected)
    tool_without_id = json.loads(
        json.dumps({"jobID": "J", "model": "m", "messages": [{"role": "tool", "content": "r"}]})
    )
    effects = session().receive_frame(encode_envelope("llmJobRequest", tool_without_id))
    assert isinstance(effects[0], Rejected)
    assert "tool_call_id" in effects[0].reason


def test_absurdly_deep_json_is_rejected_not_raised() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    payload = (
        '{"jobID":"DEEP","model":"m","messages":[{"role":"user","content":"x"}],'
        '"chat_template_kwargs":{"a":' + deep + "}}"
    )
    frame = b'{"type":"llmJobRequest","data":"' + base64.b64encode(payload.encode()) + b'"}'
    effects = session().receive_frame(frame)
    assert isinstance(effects[0], Rejected)
