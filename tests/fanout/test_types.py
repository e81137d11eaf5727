"""FanoutItem.from_row, the content_key recipe, and FanoutOptions validation."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from trio_sogni import InvalidRequestError
from trio_sogni.fanout import FanoutItem, FanoutOptions, content_key

MESSAGES = [{"role": "user", "content": "hi"}]


def test_from_row_parses_the_chat_shape() -> None:
    row = {"id": 7, "model": "m", "messages": MESSAGES, "max_tokens": 5, "temperature": 0.2}
    item = FanoutItem.from_row(3, row, default_model="other")
    assert (item.index, item.id, item.model) == (3, "7", "m")
    assert item.messages == MESSAGES
    assert item.params == {"max_tokens": 5, "temperature": 0.2}
    fallback = FanoutItem.from_row(4, {"messages": MESSAGES}, default_model="d")
    assert (fallback.id, fallback.model, fallback.params) == ("4", "d", {})


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"messages": MESSAGES, "model": "m", "colour": "red"}, "unknown keys"),
        ({"messages": MESSAGES}, "no model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "object"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "row 0"),
        ({"model": "m", "messages": MESSAGES, "id": 1.5}, "id"),
        ([1, 2], "JSON object"),
    ],
)
def test_from_row_rejects_bad_rows(row: Any, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        FanoutItem.from_row(0, row)


def test_content_key_is_the_documented_recipe() -> None:
    item = FanoutItem(index=1, id="a", model="m", messages=MESSAGES, params={"top_p": 1, "n": 2})
    canonical = json.dumps(
        {"messages": MESSAGES, "model": "m", "params": {"n": 2, "top_p": 1}},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert content_key(item) == hashlib.sha256(canonical.encode()).hexdigest()
    other_row = FanoutItem(
        index=9, id="b", model="m", messages=MESSAGES, params={"n": 2, "top_p": 1}
    )
    assert content_key(other_row) == content_key(item)  # index and id are not part of it
    seeded = FanoutItem(index=1, id="a", model="m", messages=MESSAGES, params={"seed": 1})
    assert content_key(seeded) != content_key(item)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"rpm": -1},
        {"tpm": float("inf")},
        {"budget_usd": 0},
        {"budget_tokens": 2.5},
        {"retry_budget": -1},
        {"first_token_timeout": 0},
        {"min_concurrency": 8, "concurrency": 4},
        {"ordered": 1},
        {"max_attempts": True},
    ],
)
def test_options_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        FanoutOptions(**kwargs)


def test_options_slo_map() -> None:
    assert FanoutOptions(slo_ttft=1.0, slo_e2el=5.0).slo == {"ttft": 1.0, "e2el": 5.0}
    assert FanoutOptions().slo == {}
