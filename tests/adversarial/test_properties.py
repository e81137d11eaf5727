"""Properties of the shared defences, over generated hostile input (hypothesis): the guarded
decoder round-trips every shallow document and refuses every deep one, whatever its strings
hold; the validators every REST body and job request passes through either accept or refuse
with their typed error, never anything else."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from trio_sogni.localnet._hosted._completions import completion_request
from trio_sogni.localnet._jobs._session import validate_request
from trio_sogni.localnet._jsonschema import (  # pyright: ignore[reportPrivateUsage]
    _KEYWORDS,
    SchemaError,
    check_schema,
    example,
    validate,
)
from trio_sogni.localnet._runs._state import RunError
from trio_sogni.localnet._runs._validation import validate_create
from trio_sogni.protocol import MAX_JSON_DEPTH, check_json_depth, decode_json

TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\u00e9', max_size=12)
"""Strings full of brackets, quotes and backslashes: the depth check must skip them."""

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON)
def test_the_guarded_decoder_round_trips_shallow_documents(value: Any) -> None:
    assert decode_json(msgspec.json.encode(value)) == value


@given(st.integers(min_value=MAX_JSON_DEPTH - 3, max_value=MAX_JSON_DEPTH + 3), TRICKY_TEXT)
def test_the_depth_check_counts_only_real_brackets(depth: int, text: str) -> None:
    value: Any = text
    for level in range(depth):
        value = [value, text] if level % 2 else {text: value}
    document = msgspec.json.encode(value)
    if depth > MAX_JSON_DEPTH:
        with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
            check_json_depth(document)
    else:
        check_json_depth(document)
        assert decode_json(document) == value


MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", 1]), "content": JSON}
)
RUN_FIELDS = st.sampled_from(
    [
        "model",
        "messages",
        "sampling",
        "tools",
        "tool_choice",
        "media_references",
        "media_context",
        "max_estimated_capacity_units",
        "confirm_cost",
        "token_type",
        "billing_mode",
        "app_source",
        "runtime_config",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(RUN_FIELDS, JSON, max_size=6),
    st.lists(MESSAGE, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["temperature", "top_p", "max_tokens", "stop"]), JSON),
)
def test_a_run_body_is_accepted_or_refused_with_run_error(
    body: dict[str, Any], messages: list[Any], sampling: dict[str, Any]
) -> None:
    body = {"messages": messages, "sampling": sampling, **body}
    status = 0
    try:
        validate_create(body, "m")
    except RunError as exc:
        status = exc.status
    assert status in (0, 400)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["model", "messages", "max_tokens", "temperature", "tools", "response_format", "stop"]
        ),
        JSON,
        max_size=5,
    ),
    st.lists(MESSAGE, min_size=1, max_size=3),
)
def test_a_completion_body_is_a_request_or_a_reason(
    body: dict[str, Any], messages: list[Any]
) -> None:
    answer = completion_request({"model": "m", "messages": messages, **body}, {}, "J1")
    if not isinstance(answer, str):
        problem = validate_request(answer)
        assert problem is None or isinstance(problem, str)


# Every keyword the checker knows, plus one it must ignore.
SCHEMA_KEYS = st.sampled_from([*sorted(_KEYWORDS), "default"])
SCHEMA_VALUES = (
    JSON
    | st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"])
    | st.integers(min_value=0, max_value=5)
)
SCHEMAS = st.recursive(
    st.dictionaries(SCHEMA_KEYS, SCHEMA_VALUES, max_size=4),
    lambda children: st.dictionaries(
        SCHEMA_KEYS, children | st.dictionaries(TRICKY_TEXT, children, max_size=3), max_size=4
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(SCHEMAS, JSON)
def test_a_checked_schema_never_breaks_validate_or_example(
    schema: dict[str, Any], instance: Any
) -> None:
    try:
        check_schema(schema)
    except SchemaError:
        return
    assert isinstance(validate(instance, schema), list)
    example(schema)
