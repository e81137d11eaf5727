"""Codec round trips, tolerance of server frames and strictness on client frames."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from trio_sogni import protocol as p


def envelope(kind: str, payload: object) -> bytes:
    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps({"type": kind, "data": data}).encode()


def test_envelope_is_base64_json_as_the_official_sdks_send_it() -> None:
    frame = p.encode_client_message(
        p.LLMJobRequest(job_id="J1", model="m", messages=[p.ChatMessage(role="user", content="é")])
    )
    outer = json.loads(frame)
    assert outer["type"] == "llmJobRequest"
    inner = json.loads(base64.b64decode(outer["data"]))
    # Unset optional fields are omitted; `type` is always "llm".
    assert inner == {
        "jobID": "J1",
        "model": "m",
        "messages": [{"role": "user", "content": "é"}],
        "type": "llm",
    }


def test_every_llm_job_request_field_uses_its_wire_name() -> None:
    request = p.LLMJobRequest(
        job_id="J",
        model="m",
        messages=[p.ChatMessage(role="user", content="x")],
        stream=True,
        app_source="a",
        max_tokens=5,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.1,
        repetition_penalty=1.1,
        frequency_penalty=0.2,
        presence_penalty=0.3,
        stop=["x"],
        token_type="spark",
        safe_content_filter=True,
        billing_mode="tokens",
        tool_choice="auto",
        sogni_tools="creative-tools",
        sogni_tool_execution=False,
        task_profile="coding",
        chat_template_kwargs={"enable_thinking": True},
        response_format=p.ResponseFormatJSONObject(),
        workload_kind="direct",
        operation_id="op",
    )
    wire = json.loads(base64.b64decode(json.loads(p.encode_client_message(request))["data"]))
    assert set(wire) == {
        "jobID", "model", "messages", "type", "stream", "appSource", "max_tokens", "temperature",
        "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
        "stop", "tokenType", "safeContentFilter", "billingMode", "tool_choice", "sogni_tools",
        "sogni_tool_execution", "taskProfile", "chat_template_kwargs", "response_format",
        "workloadKind", "operationId",
    }  # fmt: skip
    assert wire["response_format"] == {"type": "json_object"}
    assert p.decode_client_message(p.encode_client_message(request)) == request


def test_server_frames_ignore_unknown_fields_and_types() -> None:
    chunk = p.decode_server_message(
        envelope("jobTokens", {"jobID": "J", "content": "hi", "brandNew": {"x": 1}})
    )
    assert chunk == p.ChatCompletionChunk(job_id="J", content="hi")
    unknown = p.decode_server_message(envelope("somethingNew", {"a": 1}))
    assert isinstance(unknown, p.UnknownMessage)
    assert unknown.type == "somethingNew"


def test_null_content_and_tool_call_deltas_decode() -> None:
    chunk = p.decode_server_message(
        envelope(
            "jobTokens",
            {
                "jobID": "J",
                "content": None,
                "tool_calls": [
                    {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
                ],
                "finishReason": "tool_calls",
            },
        )
    )
    assert isinstance(chunk, p.ChatCompletionChunk)
    assert chunk.content is None
    assert chunk.tool_calls is not None
    assert chunk.tool_calls[0].function == p.FunctionCallDelta(name="f")


def test_swarm_models_accepts_legacy_counts() -> None:
    message = p.decode_server_message(
        envelope(
            "swarmLLMModels",
            {"legacy": 3, "model/\u03b1": {"workers": 2, "maxOutputTokens": {"default": 4096}}},
        )
    )
    assert isinstance(message, p.SwarmLLMModels)
    assert message.models["legacy"].workers == 3
    assert message.models["model/\u03b1"].max_output_tokens == p.LLMParamConstraint(default=4096)
    again = p.decode_server_message(p.encode_server_message(message))
    assert again == message


def test_usage_total_is_derived_when_missing() -> None:
    result = p.decode_server_message(
        envelope(
            "llmJobResult", {"jobID": "J", "usage": {"prompt_tokens": 2, "completion_tokens": 3}}
        )
    )
    assert isinstance(result, p.LLMJobResult)
    assert result.usage == p.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)


def test_llm_job_error_keeps_subscription_fields() -> None:
    error = p.decode_server_message(
        envelope(
            "llmJobError",
            {
                "jobID": "J",
                "error": "subscription",
                "error_code": "4081",
                "error_message": "upgrade",
                "subscriptionLimit": True,
                "requiredPlans": ["pro"],
                "feature": "llm",
            },
        )
    )
    assert isinstance(error, p.LLMJobError)
    assert (error.error_code, error.subscription_limit, error.required_plans) == (
        "4081",
        True,
        ["pro"],
    )


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b'{"type": "jobTokens"}',
        b'{"type": "jobTokens", "data": "%%%"}',
        envelope("jobTokens", {"jobID": 5}),
    ],
)
def test_malformed_server_frames_raise_msgspec_errors(frame: bytes) -> None:
    with pytest.raises(msgspec.MsgspecError):
        p.decode_server_message(frame)


def test_client_frames_are_decoded_strictly() -> None:
    with pytest.raises(msgspec.ValidationError):
        p.decode_client_message(envelope("llmJobRequest", {"jobID": "J", "model": "m",
                                                           "messages": [], "bogus": 1}))  # fmt: skip
    with pytest.raises(msgspec.ValidationError):
        p.decode_client_message(envelope("noSuchMessage", {}))
    with pytest.raises(msgspec.ValidationError):
        p.decode_client_message(
            envelope(
                "llmJobRequest",
                {
                    "jobID": "J",
                    "model": "m",
                    "messages": [{"role": "user", "content": "x", "z": 1}],
                },
            )
        )


def test_change_network_is_a_bare_string_from_clients() -> None:
    frame = p.encode_client_message(p.ChangeNetwork(network="relaxed"))
    assert json.loads(base64.b64decode(json.loads(frame)["data"])) == "relaxed"
    assert p.decode_client_message(frame) == p.ChangeNetwork(network="relaxed")


def test_abort_frame_matches_the_official_cancel_message() -> None:
    frame = p.encode_client_message(p.AbortJob(job_id="J"))
    outer = json.loads(frame)
    assert outer["type"] == "jobError"
    assert json.loads(base64.b64decode(outer["data"])) == {
        "jobID": "J",
        "error": "artistCanceled",
        "error_message": "artistCanceled",
        "isFromWorker": False,
    }


def test_message_rules() -> None:
    with pytest.raises(msgspec.ValidationError, match="tool_call_id"):
        msgspec.convert({"role": "tool", "content": "x"}, p.ChatMessage)
    with pytest.raises(msgspec.ValidationError, match="tool_calls"):
        msgspec.convert(
            {
                "role": "user",
                "content": "x",
                "tool_calls": [{"id": "1", "function": {"name": "f"}}],
            },
            p.ChatMessage,
        )


def test_absurd_nesting_is_a_decode_error_not_a_crash() -> None:
    nested = b'{"a":' * 20_000 + b"0" + b"}" * 20_000
    payload = b'{"jobID":"J","model":"m","messages":[],"chat_template_kwargs":' + nested + b"}"
    frame = json.dumps({"type": "llmJobRequest", "data": base64.b64encode(payload).decode()})
    with pytest.raises(msgspec.DecodeError):
        p.decode_client_message(frame)
