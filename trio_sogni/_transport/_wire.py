"""A sans-IO WebSocket (RFC 6455) client codec: the opening handshake, masked outgoing frames, and a
receive-side frame parser built for throughput.

The parser consumes whatever bytes one socket read returned and yields every complete message and
control frame in them, without copying the buffer per frame. It enforces what a client must:
server frames are unmasked, RSV bits are zero (no extension is negotiated), control frames are final
and at most 125 bytes, continuation frames only continue a fragmented message, text is valid UTF-8,
close payloads are well-formed, and no message exceeds ``max_message_size``. A violation raises
`WebSocketProtocolError` carrying the close code to send (1002, 1007 or 1009).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Final

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameParser",
    "HandshakeError",
    "WebSocketProtocolError",
    "accept_key",
    "build_handshake_request",
    "encode_frame",
    "parse_handshake_response",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_DATA_OPCODES: Final = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPCODES: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HANDSHAKE: Final = 64 * 1024
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")

# Close codes a peer may legitimately send (RFC 6455 §7.4).
_VALID_CLOSE: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


class WebSocketProtocolError(Exception):
    """The peer broke the protocol; ``close_code`` is what to close the connection with."""

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class HandshakeError(Exception):
    """The server did not accept the WebSocket upgrade."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def build_handshake_request(
    host: str, port: int, resource: str, secure: bool, extra_headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, str]:
    """The upgrade request bytes and the key it carries."""
    key = base64.b64encode(os.urandom(16)).decode()
    default_port = 443 if secure else 80
    host_header = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    lines = [
        f"GET {resource} HTTP/1.1".encode(),
        f"Host: {host_header}".encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}".encode(),
        b"Sec-WebSocket-Version: 13",
    ]
    for name, value in extra_headers:
        if b"\r" in name + value or b"\n" in name + value:
            raise ValueError("header names and values must not contain line breaks")
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n", key


def parse_handshake_response(data: bytes, key: str) -> tuple[int, dict[str, str], bytes] | None:
    """Parse the server's answer. Returns None until the header block is complete, then
    ``(status, headers, leftover)`` where ``leftover`` is the start of the frame stream.

    Raises:
        HandshakeError: a malformed, oversized or non-101 response, or a wrong accept key.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > _MAX_HANDSHAKE:
            raise HandshakeError("handshake response headers are too large")
        return None
    head = data[:end].decode("latin-1")
    leftover = data[end + 4 :]
    status_line, *header_lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HandshakeError(f"malformed handshake status line {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(f"malformed handshake header {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if status != 101:
        raise HandshakeError(f"the server answered the upgrade with HTTP {status}", status)
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("the upgrade response lacks 'Upgrade: websocket'", status)
    if "upgrade" not in headers.get("connection", "").lower():
        raise HandshakeError("the upgrade response lacks 'Connection: Upgrade'", status)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("the server's Sec-WebSocket-Accept does not match the key", status)
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server negotiated an extension that was not offered", status)
    return status, headers, leftover


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One frame. Client frames must be masked (RFC 6455 §5.3); ``mask=False`` is for servers."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = bytes((first, mask_bit | 126)) + _U16.pack(n)
    else:
        header = bytes((first, mask_bit | 127)) + _U64.pack(n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _mask(payload, key)


def encode_close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame (code, then UTF-8 reason, at most 125 bytes in total)."""
    return _U16.pack(code) + reason.encode()[:123]


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Decode a close frame's payload; an empty payload means 1005 (no status received).

    Raises:
        WebSocketProtocolError: a one-byte payload, an invalid code, or a reason that is not UTF-8.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise WebSocketProtocolError("a close frame payload of one byte")
    (code,) = _U16.unpack_from(payload)
    if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
        raise WebSocketProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError("close reason is not valid UTF-8", 1007) from None
    return code, reason


class FrameParser:
    """Incremental receive-side parser for server frames.

    `feed` returns a list of ``(opcode, payload)`` events: complete data messages (``OP_TEXT``
    payloads are returned as `str`, ``OP_BINARY`` as `bytes`) and control frames (``OP_PING``,
    ``OP_PONG``, ``OP_CLOSE`` with raw `bytes` payloads), in wire order. A control frame that arrives
    between the fragments of a message is returned in its place in the sequence.
    """

    __slots__ = (
        "_buf",
        "_frag_op",
        "_frag_parts",
        "_frag_size",
        "_have",
        "_max",
        "_need",
        "_parts",
        "error",
    )

    def __init__(self, max_message_size: int) -> None:
        self._buf = b""
        # A frame whose header has arrived but not all its payload: its bytes so far are kept
        # as a list of reads (_parts, _have bytes) and joined once when _need bytes are in, so
        # a large frame split over many reads costs time in proportion to its size.
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._max = max_message_size
        self._frag_op: int | None = None
        self._frag_parts: list[bytes] = []
        self._frag_size = 0
        self.error: WebSocketProtocolError | None = None
        """Set once the stream is invalid; events parsed before the bad frame were returned."""

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes | str]]:
        """Consume bytes; return every event they complete.

        When a bad frame follows good ones in the same bytes, the good events are returned and
        `error` is set; the next call raises it.

        Raises:
            WebSocketProtocolError: the stream is invalid (and nothing valid preceded the error).
        """
        if self.error is not None:
            raise self.error
        events: list[tuple[int, bytes | str]] = []
        if self._need:
            parts = self._parts
            parts.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                return events
            buf = b"".join(parts)
            self._parts = []
            self._have = self._need = 0
        else:
            buf = self._buf + data if self._buf else bytes(data)
        try:
            self._parse(buf, events)
        except WebSocketProtocolError as exc:
            self.error = exc
            self._buf = b""
            if not events:
                raise
        return events

    def _parse(self, buf: bytes, events: list[tuple[int, bytes | str]]) -> None:
        append = events.append
        size = len(buf)
        pos = 0
        max_size = self._max
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise WebSocketProtocolError("reserved bits set without a negotiated extension")
            if b1 & 0x80:
                raise WebSocketProtocolError("the server sent a masked frame")
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                header = 4
                if length < 126:
                    raise WebSocketProtocolError("non-minimal frame length encoding")
            elif length == 127:
                if size - pos < 10:
                    break
                (length,) = _U64.unpack_from(buf, pos + 2)
                header = 10
                if length < 65536 or length >> 63:
                    raise WebSocketProtocolError("invalid 64-bit frame length")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= 0x8:
                if not fin:
                    raise WebSocketProtocolError("a fragmented control frame")
                if length > 125:
                    raise WebSocketProtocolError("a control frame longer than 125 bytes")
                if opcode not in _CONTROL_OPCODES:
                    raise WebSocketProtocolError(f"reserved opcode {opcode:#x}")
            elif length > max_size or self._frag_size + length > max_size:
                raise WebSocketProtocolError(
                    f"a message larger than {max_size} bytes", close_code=1009
                )
            end = pos + header + length
            if end > size:
                break
            payload = buf[pos + header : end]
            pos = end
            if opcode >= 0x8:
                append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._frag_op is None:
                    raise WebSocketProtocolError("a continuation frame with nothing to continue")
                self._frag_parts.append(payload)
                self._frag_size += length
                if fin:
                    whole = b"".join(self._frag_parts)
                    op = self._frag_op
                    self._frag_op = None
                    self._frag_parts = []
                    self._frag_size = 0
                    append((op, _text(whole) if op == OP_TEXT else whole))
            elif opcode in _DATA_OPCODES:
                if self._frag_op is not None:
                    raise WebSocketProtocolError("a new message inside a fragmented one")
                if fin:
                    append((opcode, _text(payload) if opcode == OP_TEXT else payload))
                else:
                    self._frag_op = opcode
                    self._frag_parts = [payload]
                    self._frag_size = length
            else:
                raise WebSocketProtocolError(f"reserved opcode {opcode:#x}")
        if pos < size:
            need = _frame_size(buf, pos, size)
            if need:  # the header is in, not all the payload: collect reads until it is
                self._parts = [buf[pos:]]
                self._have = size - pos
                self._need = need
                self._buf = b""
                return
        self._buf = buf[pos:] if pos < size else b""


def _frame_size(buf: bytes, pos: int, size: int) -> int:
    """The whole size of the (already validated) frame at ``pos``; 0 if its header is partial."""
    if size - pos < 2:
        return 0
    length = buf[pos + 1] & 0x7F
    if length == 126:
        return 4 + ((buf[pos + 2] << 8) | buf[pos + 3]) if size - pos >= 4 else 0
    if length == 127:
        return 10 + _U64.unpack_from(buf, pos + 2)[0] if size - pos >= 10 else 0
    return 2 + length


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError("a text message that is not valid UTF-8", 1007) from None
