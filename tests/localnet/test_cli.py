"""``localnet serve`` from the command line: one JSON line on stdout, then it serves."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio
import trio_websocket
from helpers import start_localnet_cli
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from trio_sogni._cli import main
from trio_sogni._cli._localnet import LIMIT_OPTIONS, limits_from_args
from trio_sogni._cli._main import build_parser
from trio_sogni.localnet import DEFAULT_MODEL, LocalNetworkConfig, firehose_text
from trio_sogni.protocol import (
    Authenticated,
    ChatCompletionChunk,
    ChatMessage,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    SwarmLLMModels,
    decode_server_message,
    encode_client_message,
)


async def test_cli_prints_one_json_line_and_serves() -> None:
    options = ["--api-key", "cli-key", "--model", "m-a", "--model", "m-b"]
    options += ["--workers", "2", "--tokens-per-second", "100"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            assert set(info) == {"rest_url", "socket_url", "api_key"}
            assert info["api_key"] == "cli-key"
            assert info["rest_url"].startswith("http://127.0.0.1:")
            assert info["socket_url"] == info["rest_url"].replace("http://", "ws://") + "/"
            async with httpx.AsyncClient(base_url=info["rest_url"]) as http:
                me = await http.get("/v1/account/me", headers={"api-key": "cli-key"})
            assert me.status_code == 200
            url = info["socket_url"] + "?appId=cli"
            headers = [(b"api-key", b"cli-key")]
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                assert isinstance(decode_server_message(await ws.get_message()), Authenticated)
                models = decode_server_message(await ws.get_message())
                assert isinstance(models, SwarmLLMModels)
                assert {k: v.workers for k, v in models.models.items()} == {"m-a": 2, "m-b": 2}
            process.terminate()
    assert process.returncode != 0


async def test_cli_firehose_streams_unpaced_chunks_beyond_the_default_limit() -> None:
    options = ["--api-key", "k", "--firehose", "--capacity", "4", "--max-output-tokens", "100000"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            url = info["socket_url"] + "?appId=fh"
            async with trio_websocket.open_websocket_url(
                url, extra_headers=[(b"api-key", b"k")], message_queue_size=100_000
            ) as ws:
                models = None
                while not isinstance(models, SwarmLLMModels):
                    models = decode_server_message(await ws.get_message())
                assert models.models[DEFAULT_MODEL].workers == 1
                request = LLMJobRequest(
                    job_id="fh-1",
                    model=DEFAULT_MODEL,
                    messages=[ChatMessage(role="user", content="go")],
                    max_tokens=50_000,
                )
                await ws.send_message(encode_client_message(request))
                parts: list[str] = []
                while True:
                    message = decode_server_message(await ws.get_message())
                    if isinstance(message, ChatCompletionChunk):
                        parts.append(message.content or "")
                    elif isinstance(message, LLMJobResult):
                        break
            assert "".join(parts) == firehose_text(50_000)
            assert len(parts) == 50_001
            assert message.usage is not None
            assert message.usage.completion_tokens == 50_000
            process.terminate()


# -- limit options ----------------------------------------------------------------------------

LIMIT_FIELDS = {
    f.name
    for f in dataclasses.fields(LocalNetworkConfig)
    if f.name.startswith(("max_", "record_", "replay_")) or f.name.endswith(("_timeout", "_limit"))
} - {"max_output_tokens"}


def test_every_server_limit_has_an_option_shown_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert {o.name for o in LIMIT_OPTIONS} == LIMIT_FIELDS
    assert len(LIMIT_FIELDS) == 16
    with pytest.raises(SystemExit) as exit_info:
        main(["localnet", "serve", "--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in LIMIT_OPTIONS:
        assert option.flag in shown
        assert option.help in shown
    assert "--max-jobs-per-account N live socket jobs of one account" in shown
    assert "(default: 4,000)" in shown
    assert "--message-timeout S close a WebSocket (1008)" in shown


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--write-timeout", "0", "must be a positive, finite number of seconds, got '0'"),
        ("--idle-timeout", "-1", "must be a positive, finite number of seconds"),
        ("--header-timeout", "nan", "must be a positive, finite number of seconds"),
        ("--body-timeout", "inf", "must be a positive, finite number of seconds"),
        ("--message-timeout", "soon", "must be a positive, finite number of seconds"),
        ("--close-timeout", "", "must be a positive, finite number of seconds"),
        ("--shutdown-timeout", "1e400", "must be a positive, finite number of seconds"),
        ("--max-connections", "0", "must be a whole number of at least 1, got '0'"),
        ("--max-jobs-per-socket", "1.5", "must be a whole number of at least 1"),
        ("--max-jobs-per-account", "-3", "must be a whole number of at least 1"),
        ("--max-message-size", "0", "must be a whole number of at least 1"),
        ("--outbox-limit", "0", "must be a whole number of at least 1"),
        ("--max-body-size", "-1", "must be a whole number of at least 0"),
        ("--record-limit", "ten", "must be a whole number of at least 0"),
        ("--record-bytes", "1e6", "must be a whole number of at least 0"),
    ],
)
def test_a_bad_limit_exits_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, problem: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["localnet", "serve", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: {problem}" in err
    assert "Traceback" not in err


def test_limit_options_set_the_network_config() -> None:
    values = {
        "idle_timeout": 1.5,
        "header_timeout": 2.5,
        "body_timeout": 3.5,
        "write_timeout": 4.5,
        "message_timeout": 5.5,
        "close_timeout": 6.5,
        "shutdown_timeout": 7.5,
        "max_connections": 8,
        "max_message_size": 9,
        "max_body_size": 0,
        "outbox_limit": 11,
        "max_jobs_per_socket": 12,
        "max_jobs_per_account": 13,
        "record_limit": 0,
        "record_bytes": 15,
    }
    argv = ["localnet", "serve"]
    for name, value in values.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    config = limits_from_args(build_parser().parse_args(argv))
    assert {name: getattr(config, name) for name in values} == values
    # Options not given keep the defaults.
    default = limits_from_args(build_parser().parse_args(["localnet", "serve"]))
    assert default == LocalNetworkConfig()


MAIN = "import sys; from trio_sogni._cli import main; sys.exit(main(sys.argv[1:]))"


async def test_limits_given_to_main_bound_a_served_network() -> None:
    """``trio-sogni localnet serve`` (through ``main``, in a subprocess, loopback TCP, real
    time) with small limits: the per-account job cap refuses a job of a second appId, half a
    WebSocket message is closed with 1008 at ``--message-timeout``, the connection cap refuses
    one more connection with 503, and an idle connection is closed at ``--idle-timeout``."""
    options = ["localnet", "serve", "--api-key", "k", "--tokens-per-second", "0.01"]
    options += ["--max-jobs-per-socket", "2", "--max-jobs-per-account", "3"]
    options += ["--message-timeout", "0.5", "--close-timeout", "0.5"]
    options += ["--max-connections", "3", "--idle-timeout", "1"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-c", MAIN, *options],
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the CLI exited before printing its line"
                line += chunk
            info = json.loads(line)
            port = int(info["rest_url"].rsplit(":", 1)[1])
            headers = [(b"api-key", b"k")]
            answers: dict[str, str] = {}
            async with (
                trio_websocket.open_websocket_url(
                    info["socket_url"] + "?appId=a", extra_headers=headers
                ) as a,
                trio_websocket.open_websocket_url(
                    info["socket_url"] + "?appId=b", extra_headers=headers
                ) as b,
            ):
                for ws, ids in ((a, ["a1", "a2"]), (b, ["b1", "b2"])):
                    for job_id in ids:
                        request = LLMJobRequest(
                            job_id=job_id,
                            model=DEFAULT_MODEL,
                            messages=[ChatMessage(role="user", content="x")],
                        )
                        await ws.send_message(encode_client_message(request))
                    while not all(i in answers for i in ids):
                        message = decode_server_message(await ws.get_message())
                        if isinstance(message, JobState) and message.type == "pending":
                            answers[message.job_id] = "accepted"
                        elif isinstance(message, LLMJobError):
                            answers[message.job_id] = str(message.error)
                assert answers == {
                    "a1": "accepted",
                    "a2": "accepted",
                    "b1": "accepted",
                    "b2": "too_many_jobs",  # 2 per socket, 3 per account
                }
                # The third connection: a WebSocket that sends half a message.
                half = await trio.open_tcp_stream("127.0.0.1", port)
                ws_half = WSConnection(ConnectionType.CLIENT)
                upgrade = Request(host="localnet", target="/?appId=c", extra_headers=headers)
                await half.send_all(ws_half.send(upgrade))
                accepted = False
                while not accepted:
                    ws_half.receive_data(await half.receive_some())
                    accepted = any(isinstance(e, AcceptConnection) for e in ws_half.events())
                # A fourth connection is one too many while the three are open.
                extra = await trio.open_tcp_stream("127.0.0.1", port)
                refused = b""
                while chunk := await extra.receive_some():
                    refused += chunk
                assert refused.startswith(b"HTTP/1.1 503 ")
                await extra.aclose()
                await half.send_all(ws_half.send(BytesMessage(b"x" * 100))[:10])
                start = trio.current_time()
                codes: list[int] = []
                while chunk := await half.receive_some():
                    ws_half.receive_data(chunk)
                    codes += [e.code for e in ws_half.events() if isinstance(e, CloseConnection)]
                assert codes == [1008]
                assert 0.5 <= trio.current_time() - start < 5.0
                await half.aclose()
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            start = trio.current_time()
            assert await idle.receive_some() == b""
            assert 1.0 <= trio.current_time() - start < 5.0
            await idle.aclose()
            process.terminate()
