"""Pure tests of scripts: default reply, delta splitting, compilation rules, predictions."""

from __future__ import annotations

import pytest

from trio_sogni.localnet import (
    Delta,
    DropConnection,
    Fail,
    Finish,
    Pause,
    Stall,
    Text,
    ToolCall,
    count_prompt_tokens,
    default_reply_text,
    expected_output,
    split_deltas,
)
from trio_sogni.localnet._workers._script import Emit, compile_script
from trio_sogni.protocol import (
    ChatMessage,
    FunctionCallDelta,
    ImageURL,
    ImageURLPart,
    LLMJobRequest,
    TextPart,
    ToolCallDelta,
)


def request(*messages: ChatMessage, **fields: object) -> LLMJobRequest:
    return LLMJobRequest(job_id="J", model="m", messages=list(messages), **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["", "one", "Simulated reply to: Hello world", "  lead and trail  ", "a\n\nb\tc"]
)
def test_split_deltas_round_trips(text: str) -> None:
    assert "".join(split_deltas(text)) == text


def test_split_deltas_is_one_word_per_delta() -> None:
    assert split_deltas("Simulated reply to: Hi") == ["Simulated", " reply", " to:", " Hi"]


def test_default_reply_uses_the_last_user_message() -> None:
    req = request(
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="first"),
        ChatMessage(role="assistant", content="ok"),
        ChatMessage(
            role="user",
            content=[
                TextPart(text="look"),
                ImageURLPart(image_url=ImageURL(url="data:image/png;base64,AAAA")),
                TextPart(text="here"),
            ],
        ),
    )
    assert default_reply_text(req) == "Simulated reply to: look here"
    assert default_reply_text([{"role": "user", "content": "dicts work"}]) == (
        "Simulated reply to: dicts work"
    )
    assert default_reply_text([ChatMessage(role="system", content="x")]) == "Simulated reply to: "


def test_prompt_tokens_follow_the_sdk_formula() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    # '[{"role":"user","content":"Hi"}]' is 32 characters -> 8 tokens.
    assert count_prompt_tokens(messages) == 8
    image = [
        ChatMessage(
            role="user",
            content=[ImageURLPart(image_url=ImageURL(url="data:image/png;base64," + "A" * 4000))],
        )
    ]
    assert count_prompt_tokens(image) < 30  # the image is counted as "[image]"


def test_default_output_prediction() -> None:
    out = expected_output(request(ChatMessage(role="user", content="Hello world")))
    assert out.content == "Simulated reply to: Hello world"
    assert out.deltas == ("Simulated", " reply", " to:", " Hello", " world")
    assert out.finish_reason == "stop"
    assert out.completion_tokens == 5
    assert out.error is None
    assert not out.stalls


def test_max_tokens_cuts_with_length() -> None:
    out = expected_output(request(ChatMessage(role="user", content="a b c"), max_tokens=2))
    assert out.content == "Simulated reply"
    assert out.finish_reason == "length"
    assert out.completion_tokens == 2


def test_stop_sequence_cuts_exactly_even_across_deltas() -> None:
    req = request(ChatMessage(role="user", content="alpha beta gamma"), stop=["a be"])
    out = expected_output(req)
    assert out.content == "Simulated reply to: alph"
    assert out.finish_reason == "stop"
    single = expected_output(request(ChatMessage(role="user", content="x"), stop="reply"))
    assert single.content == "Simulated "


def test_stop_wins_over_later_failure() -> None:
    out = expected_output(
        request(ChatMessage(role="user", content="x"), stop="STOP"),
        [Text("before STOP after"), Fail(error="late")],
    )
    assert out.content == "before "
    assert out.error is None
    assert out.finish_reason == "stop"


def test_tool_call_is_split_into_deltas() -> None:
    actions = compile_script(
        [Text("Let me check."), ToolCall("get_weather", {"city": "Paris"}, pieces=3)],
        max_tokens=None,
    )
    emits = [a for a in actions if isinstance(a, Emit)]
    deltas = [d for e in emits for d in e.tool_calls]
    assert len(deltas) == 3
    first, *rest = deltas
    assert first == ToolCallDelta(
        index=0,
        id="call_0",
        type="function",
        function=FunctionCallDelta(name="get_weather", arguments=first.function.arguments),  # type: ignore[union-attr]
    )
    assert all(d.id is None and d.function is not None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert arguments == '{"city":"Paris"}'
    assert emits[-1].finish_reason == "tool_calls"
    assert emits[0].role == "assistant"


def test_tool_call_prediction_and_parallel_calls() -> None:
    out = expected_output(
        request(ChatMessage(role="user", content="x")),
        [ToolCall("a", "{}", pieces=1), ToolCall("b", '{"k":1}', id="custom", pieces=2)],
    )
    assert [(c.id, c.function.name, c.function.arguments) for c in out.tool_calls] == [
        ("call_0", "a", "{}"),
        ("custom", "b", '{"k":1}'),
    ]
    assert out.finish_reason == "tool_calls"
    assert out.completion_tokens == 3


def test_fail_after_n_chunks() -> None:
    fail = Fail(error="insufficient_balance", message="no funds", error_code="4079")
    out = expected_output(
        request(ChatMessage(role="user", content="x")), [Delta("a"), Delta("b"), fail]
    )
    assert out.deltas == ("a", "b")
    assert out.error == fail
    assert out.finish_reason is None


def test_stall_and_other_steps() -> None:
    actions = compile_script(
        [Delta("a"), Pause(1.0), DropConnection(), Delta("b"), Stall(), Delta("never")],
        max_tokens=None,
    )
    assert actions == [
        Emit(content="a", role="assistant"),
        Pause(1.0),
        DropConnection(),
        Emit(content="b"),
        Stall(),
    ]


def test_empty_script_sends_one_final_chunk() -> None:
    assert compile_script([], max_tokens=10) == [
        Emit(content="", role="assistant", finish_reason="stop")
    ]


def test_explicit_finish() -> None:
    actions = compile_script([Text("hi"), Finish("length")], max_tokens=None)
    assert actions == [Emit(content="hi", role="assistant", finish_reason="length")]
