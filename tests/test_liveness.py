"""A silent peer, Ctrl-C, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio
from helpers import MODEL, client_for, local_network

from trio_sogni.localnet import Stall, default_reply_text

# The silent peer (a missing pong) is tested in virtual time: tests/test_virtual_time.py.


async def test_keyboard_interrupt_propagates_and_aborts(engine: str) -> None:
    async with local_network(script=lambda r: [Stall()]) as net:
        stream: Any = None
        with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the body is the scenario
            async with client_for(net, engine) as sogni:
                stream = await sogni.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
                )
                await net.wait_until(lambda: net.statistics().running_jobs == 1)
                raise KeyboardInterrupt
        with trio.fail_after(10):
            await net.wait_until(lambda: stream.job_id in net.cancelled_job_ids)


def test_cli_chat_streams_from_an_embedded_network() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trio_sogni", "chat", "Hello CLI", "--simulated", "--model", MODEL],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = default_reply_text([{"role": "user", "content": "Hello CLI"}])
    assert out.stdout.strip() == expected
    assert "simulated" in out.stderr


def test_cli_chat_json_output() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_sogni",
            "chat",
            "Hi",
            "--simulated",
            "--json",
            "--max-tokens",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 2


def test_cli_interactive_keeps_history() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trio_sogni", "chat", "--simulated"],
        input="first question\nsecond question\n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line for line in out.stdout.replace("> ", "").splitlines() if line]
    assert lines == [
        default_reply_text([{"role": "user", "content": "first question"}]),
        default_reply_text([{"role": "user", "content": "second question"}]),
    ]


def test_cli_without_the_local_extra_says_how_to_get_it() -> None:
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"  # as if llama-cpp-python were missing
        "from trio_sogni._cli import main; sys.exit(main(['chat', 'hi']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0
    assert "pip install 'trio-sogni[local]'" in out.stderr
    assert "--simulated" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_cli_endpoint_needs_credentials() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trio_sogni", "chat", "hi", "--endpoint", "ws://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SOGNI_")},
    )
    assert out.returncode != 0
    assert "needs credentials" in out.stderr
