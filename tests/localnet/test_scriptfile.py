"""Scripted replies from a JSON file: rules matched on the request, steps validated at load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers import MODEL, client_in_memory, local_network

from trio_sogni import ChatJobError
from trio_sogni.localnet import ScriptFileError, default_reply_text, load_script, parse_script

SCRIPT: dict[str, Any] = {
    "rules": [
        # First: after the tool's result (the last user message still asks about weather).
        {"match": {"last_role": "tool"}, "steps": [{"text": "It is sunny in Paris."}]},
        {
            "match": {"last_user": {"contains": "weather"}, "tool": "get_weather"},
            "steps": [
                {"text": "Let me check."},
                {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            ],
        },
        {"match": {"last_user": {"regex": "^fail"}}, "steps": [{"fail": {"error": "boom"}}]},
        {"match": {"last_user": {"equals": "slow"}}, "steps": [{"pause": 5}, {"text": "done"}]},
    ]
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_a_script_file_drives_a_tool_using_conversation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(SCRIPT))
    async with (
        local_network(listen=False, script=load_script(path)) as net,
        client_in_memory(net) as sogni,
    ):
        calls: list[dict[str, Any]] = []

        async def get_weather(city: str) -> str:
            await trio.lowlevel.checkpoint()
            calls.append({"city": city})
            return "sunny"

        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=user("what's the weather?"),
            tools=[WEATHER_TOOL],
            auto_execute_tools=True,
            on_tool_call=lambda call: get_weather(**json.loads(call.function.arguments)),
        )
        assert calls == [{"city": "Paris"}]
        assert result.content == "It is sunny in Paris."
        # No rule matches: the default reply.
        plain = await sogni.chat.completions.create(model=MODEL, messages=user("hello"))
        assert plain.content == default_reply_text(user("hello"))
        start = trio.current_time()
        slow = await sogni.chat.completions.create(model=MODEL, messages=user("slow"))
        assert slow.content == "done"
        assert trio.current_time() - start >= 5
        with pytest.raises(ChatJobError) as info:
            await sogni.chat.completions.create(model=MODEL, messages=user("fail now"))
        assert info.value.error_type == "boom"


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("{", "truncated"),
        ({"rules": [{"steps": [{"text": "a", "pause": 1}]}]}, "rules[0].steps[0]: a step has"),
        ({"rules": [{"steps": [{"shout": "a"}]}]}, "shout"),
        ({"rules": [{"match": {"last_user": {"regex": "("}}, "steps": []}]}, "bad regex"),
        ({"rules": [{"match": {"last_user": {}}, "steps": []}]}, "exactly one of"),
        ({"rules": [{"steps": [{"pause": -1}]}]}, "pause must be"),
        ({"rules": [{"steps": [{"stall": False}]}]}, "stall must be true"),
        ({"rules": [{"steps": [{"tool_call": {"name": "", "pieces": 1}}]}]}, "needs a name"),
        ({"rules": {}}, "Expected `array`"),
    ],
)
def test_bad_scripts_are_refused_naming_the_place(script: Any, problem: str) -> None:
    data = script if isinstance(script, str) else json.dumps(script)
    with pytest.raises(ScriptFileError, match=r"x\.json") as info:
        parse_script(data, source="x.json")
    assert problem in str(info.value)


def test_an_unreadable_or_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScriptFileError, match="cannot read"):
        load_script(tmp_path / "missing.json")
    deep = "[" * 100_000
    with pytest.raises(ScriptFileError):
        parse_script(deep)


@pytest.mark.deadline(60)
async def test_localnet_serve_takes_a_script_file(tmp_path: Path) -> None:
    import sys

    import httpx
    from helpers import LOCALNET_CLI, start_localnet_cli

    path = tmp_path / "script.json"
    path.write_text(json.dumps(SCRIPT))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            options = ["--script", str(path), "--model", "test-model"]
            process, info = await start_localnet_cli(nursery, options)
            body = {"model": "test-model", "messages": user("slow")}
            async with httpx.AsyncClient(
                base_url=info["rest_url"], headers={"api-key": info["api_key"]}, timeout=20
            ) as http:
                answer = await http.post("/v1/chat/completions", json=body)
            assert answer.json()["choices"][0]["message"]["content"] == "done"
            process.terminate()
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"steps": [{"shout": 1}]}]}')
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-c", LOCALNET_CLI, "--script", str(bad)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert b"--script:" in result.stderr
    assert b"rules[0].steps[0]" in result.stderr
    assert b"Traceback" not in result.stderr
