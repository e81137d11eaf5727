"""The floor: the least work any Trio client must do per token frame.

A minimal receive-side RFC 6455 parser over a Trio stream plus the msgspec envelope / base64 /
payload decode, and nothing else: no routing objects, no buffers, no accumulation. Benchmarks report
every client's CPU per chunk as a ratio to this.

It speaks just enough of the protocol to run the benchmark jobs: the upgrade with the ``api-key``
header, ``llmJobRequest`` frames out, ``jobTokens`` / ``llmJobResult`` in.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Sequence

import msgspec
import trio


class _Envelope(msgspec.Struct):
    type: str
    data: bytes


class _Tokens(msgspec.Struct):
    jobID: str
    content: str | None = None


class _Result(msgspec.Struct):
    jobID: str


_envelope = msgspec.json.Decoder(_Envelope)
_tokens = msgspec.json.Decoder(_Tokens)
_result = msgspec.json.Decoder(_Result)
_encoder = msgspec.json.Encoder()


def _client_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return header + mask + (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


async def run_floor(
    host: str,
    port: int,
    api_key: str,
    model: str,
    prompts: Sequence[str],
    *,
    chunks: int,
    stream: bool = True,
) -> dict[str, int]:
    """Send one job per prompt at once and read until every job has its result.

    Returns counts: ``chunks``, ``chars``, ``results``.
    """
    sock = await trio.open_tcp_stream(host, port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    await sock.send_all(
        (
            f"GET /?appId=floor-{uuid.uuid4()}&clientType=artist&forceWorkerId=fast HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\napi-key: {api_key}\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await sock.receive_some(65536)
    buf = buf[buf.index(b"\r\n\r\n") + 4 :]

    pending = len(prompts)
    received = chars = 0
    authenticated = False
    while True:
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            header = 2
            if b1 == 126:
                if size - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif b1 == 127:
                if size - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            end = pos + header + b1
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            payload = buf[pos + header : end]
            pos = end
            if opcode not in (1, 2):
                continue
            env = _envelope.decode(payload)
            kind = env.type
            if kind == "jobTokens":
                received += 1
                content = _tokens.decode(env.data).content
                if content:
                    chars += len(content)
            elif kind == "llmJobResult":
                _result.decode(env.data)
                pending -= 1
            elif kind == "authenticated" and not authenticated:
                authenticated = True
                for prompt in prompts:
                    request = {
                        "jobID": str(uuid.uuid4()).upper(),
                        "type": "llm",
                        "model": model,
                        "messages": [{"role": "user", "content": prompt}],
                        "stream": stream,
                        "max_tokens": chunks,
                    }
                    frame = _encoder.encode(
                        {
                            "type": "llmJobRequest",
                            "data": base64.b64encode(_encoder.encode(request)).decode(),
                        }
                    )
                    await sock.send_all(_client_frame(frame))
        if authenticated and pending == 0:
            break
        buf = buf[pos:]
        data = await sock.receive_some(262144)
        if not data:
            raise ConnectionError("the server closed the connection")
        buf += data
    await sock.aclose()
    return {"chunks": received, "chars": chars, "results": len(prompts)}
