"""Exception groups come out as what the caller raised, chains and tracebacks intact
(`trio_sogni._groups`, used by the client, the transport, the tool runner, the batch CLI and
localnet)."""

from __future__ import annotations

import traceback
from typing import Any

import httpx
import pytest
import trio
from helpers import MODEL, client_for, local_network

from trio_sogni import ChatJobError
from trio_sogni._groups import collapse, reraise, unwrap_group
from trio_sogni._rest_calls import typed_call
from trio_sogni._tools import ChatTools
from trio_sogni._transport import RestClient
from trio_sogni.protocol import FunctionCall, ToolCall


def _raise_chained() -> None:
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise ValueError("outer") from exc


def test_collapse_rules() -> None:
    value, key = ValueError("v"), KeyError("k")
    assert collapse(value) is value
    assert collapse(BaseExceptionGroup("g", [BaseExceptionGroup("h", [value])])) is value
    interrupt = KeyboardInterrupt()
    assert collapse(BaseExceptionGroup("g", [value, interrupt])) is interrupt
    cancelled: Any = None

    async def get_cancelled() -> None:
        nonlocal cancelled
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                cancelled = exc
                raise

    trio.run(get_cancelled)
    assert collapse(BaseExceptionGroup("g", [cancelled, value])) is value
    two = BaseExceptionGroup("g", [value, key])
    assert collapse(two) is two


def _reraise_from_a_group(exc: Exception) -> None:
    try:
        raise ExceptionGroup("wrapped", [exc])
    except ExceptionGroup as group:
        reraise(group.exceptions[0])


def test_reraise_keeps_cause_context_and_traceback() -> None:
    try:
        _raise_chained()
    except ValueError as exc:
        original = exc
    frames_before = len(traceback.extract_tb(original.__traceback__))
    with pytest.raises(ValueError) as info:
        _reraise_from_a_group(original)
    assert info.value is original
    assert isinstance(info.value.__cause__, KeyError)
    assert not isinstance(info.value.__context__, BaseExceptionGroup)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_chained" in names
    assert len(names) >= frames_before


def test_unwrap_group_passes_plain_exceptions_and_keeps_real_groups() -> None:
    with pytest.raises(ValueError) as info, unwrap_group():
        _raise_chained()
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ExceptionGroup), unwrap_group():
        raise ExceptionGroup("two", [ValueError(), KeyError()])


async def test_open_sogni_client_keeps_a_users_exception_chain() -> None:
    with trio.fail_after(30):
        async with local_network() as net:
            with pytest.raises(ValueError) as info:
                async with client_for(net):
                    _raise_chained()
    assert str(info.value) == "outer"
    assert isinstance(info.value.__cause__, KeyError)
    assert not isinstance(info.value.__context__, BaseExceptionGroup)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "_raise_chained" in names


async def test_keyboard_interrupt_in_the_receive_loop_leaves_the_client_as_itself() -> None:
    def interrupt(_event: object) -> None:
        raise KeyboardInterrupt

    with trio.fail_after(30):
        async with local_network() as net:
            with pytest.raises(KeyboardInterrupt):  # noqa: PT012 (raised inside the stream)
                async with client_for(net) as sogni:
                    sogni.chat.on("token", interrupt)
                    stream = await sogni.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
                    )
                    async with stream:
                        async for _ in stream:
                            pass
                    await trio.sleep_forever()


async def test_keyboard_interrupt_in_a_tool_handler_comes_out_alone() -> None:
    calls = [
        ToolCall(id=f"c{i}", function=FunctionCall(name="local", arguments="{}")) for i in range(3)
    ]

    async def handler(call: ToolCall) -> str:
        if call.id == "c1":
            raise KeyboardInterrupt
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(5), pytest.raises(KeyboardInterrupt):
        await ChatTools().execute_all(calls, on_tool_call=handler)


async def test_typed_call_keeps_the_http_error_as_the_cause() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            402, json={"error": {"message": "pay", "type": "insufficient_balance", "code": "4"}}
        )

    async def headers() -> dict[str, str]:
        return {"api-key": "k"}

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        rest = RestClient("http://rest.test", "http://socket.test", headers, http)
        with trio.fail_after(5), pytest.raises(ChatJobError) as info:
            await typed_call(rest, "GET", "/x", dict, what="x")
    assert info.value.error_type == "insufficient_balance"
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError) or (
        type(info.value.__cause__).__name__ == "APIStatusError"
    )
