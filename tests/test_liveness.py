"""A silent peer, Ctrl-C, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import wsproto
from helpers import MODEL, client_for, local_network
from wsproto.events import AcceptConnection, Request

import trio_sogni
from trio_sogni.localnet import Stall, default_reply_text
from trio_sogni.protocol import Authenticated, encode_server_message


async def serve_silent_peer(
    nursery: trio.Nursery, on_connection: Callable[[], Awaitable[None]] | None = None
) -> int:
    """A WebSocket server that authenticates the socket, then never reads or answers again."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            conn.receive_data(await stream.receive_some(65536))
            if any(isinstance(e, Request) for e in conn.events()):
                break
        await stream.send_all(conn.send(AcceptConnection()))
        await stream.send_all(
            conn.send(wsproto.events.BytesMessage(data=encode_server_message(Authenticated())))
        )
        if on_connection is not None:
            await on_connection()
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_missing_pong_fails_jobs_within_the_ping_timeout(engine: str) -> None:
    reconnected = trio.Event()
    connections = 0

    async def counted() -> None:
        nonlocal connections
        connections += 1
        if connections == 2:
            reconnected.set()
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        port = await serve_silent_peer(nursery, counted)
        options = trio_sogni.SocketOptions(
            engine=engine,  # type: ignore[arg-type]
            ping_interval=0.2,
            ping_timeout=0.3,
            reconnect_initial_delay=0.05,
            close_timeout=0.2,
        )
        async with trio_sogni.open_sogni_client(
            api_key="k",
            socket_endpoint=f"ws://127.0.0.1:{port}",
            rest_endpoint=f"http://127.0.0.1:{port}",
            socket_options=options,
        ) as sogni:
            stream = await sogni.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
            with trio.fail_after(5):  # ping 0.2 s + pong timeout 0.3 s, with room for a slow CI
                with pytest.raises(trio_sogni.ChatJobError) as info:
                    await stream.wait()
            assert info.value.error_type == "transport_lost"
            await stream.aclose()
            with trio.fail_after(5):
                await reconnected.wait()  # and it reconnected by itself
        nursery.cancel_scope.cancel()


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
