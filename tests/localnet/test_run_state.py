"""Run state as msgspec Structs keeps the stored and wire shapes of the dicts it replaced."""

from __future__ import annotations

import msgspec
import pytest

from trio_sogni.localnet._runs._state import RunError, RunRequest
from trio_sogni.localnet._runs._store import RunCheckpoint
from trio_sogni.localnet._runs._validation import job_fields, validate_create

MESSAGES = [{"role": "user", "content": "hi"}]


def test_request_keeps_the_order_and_presence_of_the_body_fields() -> None:
    body = {
        "runtime_config": {"requireJobConfirmation": False},
        "token_type": "spark",
        "confirm_cost": False,
        "tool_choice": None,
        "sampling": {"temperature": 0.5},
        "messages": MESSAGES,
        "app_source": "tests",
    }
    request = validate_create(body, "default-model")
    wire = request.to_wire()
    assert list(wire) == [
        "model",
        "messages",
        "sampling",
        "confirmCost",
        "tokenType",
        "appSource",
        "runtimeConfig",
    ]
    assert wire["model"] == "default-model"
    assert wire["confirmCost"] is False
    assert RunRequest.from_wire(wire) == request
    assert job_fields(request) == {"tokenType": "spark", "appSource": "tests"}


def test_empty_sampling_is_left_out() -> None:
    wire = validate_create({"messages": MESSAGES, "model": "m", "sampling": {}}, "d").to_wire()
    assert wire == {"model": "m", "messages": MESSAGES}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": MESSAGES, "token_type": "x"}, "'token_type' must be 'sogni' or 'spark'"),
        ({"messages": MESSAGES, "confirm_cost": 1}, "'confirm_cost' must be a boolean"),
    ],
)
def test_invalid_bodies_are_refused_as_before(body: dict[str, object], message: str) -> None:
    with pytest.raises(RunError) as info:
        validate_create(body, "d")
    assert (info.value.status, info.value.code, info.value.message) == (
        400,
        "invalid_request",
        message,
    )


def test_checkpoint_json_has_the_keys_of_the_old_dict_in_order() -> None:
    checkpoint = RunCheckpoint(conversation=list(MESSAGES))
    assert msgspec.json.encode(checkpoint) == (
        b'{"round":0,"conversation":[{"role":"user","content":"hi"}],"pending":[],'
        b'"confirmed":[],"failedTools":0,"previewVersion":0,"confirmKeys":[]}'
    )
    old = b'{"round":2,"conversation":[],"pending":[],"confirmed":["c"],"failedTools":1,"previewVersion":3}'
    loaded = msgspec.json.decode(old, type=RunCheckpoint)
    assert (loaded.round, loaded.confirmed, loaded.confirm_keys) == (2, ["c"], [])
