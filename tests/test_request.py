"""Request validation: every bad input is refused with a typed error before anything is sent."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, strategies as st

from trio_sogni import InvalidRequestError
from trio_sogni._request import (  # pyright: ignore[reportPrivateUsage]
    _has_unsendable,
    build_llm_request,
    check_sendable,
    new_job_id,
)
from trio_sogni.protocol import ResponseFormatJSONSchema, ToolChoiceFunction

USER = [{"role": "user", "content": "hi"}]
# A real 1x1 PNG: the image checks read the pixel size from its IHDR header.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def build(messages: Any = USER, **params: Any) -> Any:
    return build_llm_request(
        model="m", messages=messages, stream=True, params=params, default_app_source=None
    )


def test_job_ids_are_upper_case_uuids() -> None:
    job_id = new_job_id()
    assert job_id == job_id.upper()
    assert len(job_id) == 36


def test_think_and_template_kwargs_merge() -> None:
    request = build(think=True, chat_template_kwargs={"other": 1})
    assert request.chat_template_kwargs == {"enable_thinking": True, "other": 1}
    assert build(think=False).chat_template_kwargs == {"enable_thinking": False}


def test_typed_fields_are_converted() -> None:
    request = build(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        sogni_tools="rich",
        stop="END",
        attribution={"workloadKind": "direct"},
    )
    assert isinstance(request.tool_choice, ToolChoiceFunction)
    assert isinstance(request.response_format, ResponseFormatJSONSchema)
    assert request.sogni_tools == "creative-tools"
    assert request.stop == "END"
    assert request.workload_kind == "direct"
    assert request.operation_id == request.job_id  # defaults to the job id, as upstream


def test_default_app_source_is_used() -> None:
    request = build_llm_request(
        model="m", messages=USER, stream=False, params={}, default_app_source="my-app"
    )
    assert request.app_source == "my-app"
    assert request.stream is False


def test_images_must_be_inline_png_or_jpeg() -> None:
    ok = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    build([{"role": "user", "content": ok}])
    bad_magic = base64.b64encode(b"GIF89a....").decode()
    with pytest.raises(InvalidRequestError, match="not a PNG"):
        build(
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{bad_magic}"},
                        }
                    ],
                }
            ]
        )
    with pytest.raises(InvalidRequestError, match="at most 20 images"):
        build([{"role": "user", "content": ok * 21}])


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "must not be empty"),
        ("hello", "must be a list"),
        ([{"role": "robot", "content": "x"}], "role"),
        ([{"role": "user", "content": object()}], "content"),
        ([{"role": "user", "content": {"a": 1}}], "content"),
        ([{"role": "user"}], "needs content"),
        ([{"role": "tool", "content": "x"}], "tool_call_id"),
        ([{"role": "user", "content": "x", "extra": 1}], "extra"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x"}}],
                }
            ],
            "data URIs",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
                    ],
                }
            ],
            "base64",
        ),
    ],
)
def test_bad_messages(messages: Any, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        build(messages)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "integer"),
        ({"max_tokens": True}, "number"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "finite"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": ""}, "stop"),
        ({"stop": ["a", ""]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"token_type": "gold"}, "token_type"),
        ({"task_profile": "poetry"}, "task_profile"),
        ({"billing_mode": "free"}, "billing_mode"),
        ({"think": "yes"}, "think"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tool name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}] * 2},
            "defined twice",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "g"}}}, "not in tools"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"app_source": "x" * 129}, "app_source"),
        ({"app_source": "a\nb"}, "control"),
        ({"safe_content_filter": "on"}, "safe_content_filter"),
        ({"attribution": {"nope": "x"}}, "attribution"),
        ({"temprature": 1}, "unknown parameter"),
    ],
)
def test_bad_params(params: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        build(**params)


def test_model_is_required() -> None:
    with pytest.raises(InvalidRequestError, match="model"):
        build_llm_request(model=" ", messages=USER, stream=True, params={}, default_app_source=None)


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=4),
)
_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


@given(_values)
def test_the_fast_sendability_check_agrees_with_the_careful_walk(value: object) -> None:
    """Every request takes the fast walk; the careful one only runs to name what is wrong."""
    fast = _has_unsendable(value)
    try:
        check_sendable(value, "value")
    except InvalidRequestError:
        careful = True
    else:
        careful = False
    assert fast == careful
