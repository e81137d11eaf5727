"""A scripted OpenAI-compatible images upstream on loopback, a TEST DOUBLE (no model): an
in-test h11 server that records each request and answers from a script. Used by the images
bridge's tests (tests/localnet/media/test_bridge.py) and the CLI's (tests/cli)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import trio
from PIL import Image


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stall: bool = False
    close_early: bool = False


Script = Callable[[Seen], Reply]


@dataclass
class ScriptedUpstream:
    """A TEST DOUBLE of an OpenAI-compatible images API (no model): records each request and
    answers with ``script(request)``. A stalled answer waits until the client hangs up, which
    sets ``hung_up``."""

    script: Script
    port: int = 0
    seen: list[Seen] = field(default_factory=list[Seen])
    hung_up: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            seen = Seen(
                request.method.decode(),
                request.target.decode(),
                {k.decode().lower(): v.decode() for k, v in request.headers},
                body,
            )
            self.seen.append(seen)
            reply = self.script(seen)
            if reply.stall:
                while await stream.receive_some(65536):
                    pass
                self.hung_up.set()
                return
            headers = [
                ("content-type", reply.content_type),
                ("content-length", str(len(reply.body))),
            ]
            out = conn.send(h11.Response(status_code=reply.status, headers=headers))
            if reply.close_early:
                await stream.send_all(out + reply.body[: len(reply.body) // 2])
                return
            out += conn.send(h11.Data(data=reply.body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(out)


@asynccontextmanager
async def upstream(script: Script) -> AsyncIterator[ScriptedUpstream]:
    server = ScriptedUpstream(script)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def picture(
    size: tuple[int, int], fmt: str = "PNG", color: tuple[int, int, int] = (10, 200, 30)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def b64_answer(data: bytes) -> Reply:
    return Reply(
        body=json.dumps(
            {"created": 1, "data": [{"b64_json": base64.b64encode(data).decode()}]}
        ).encode()
    )
