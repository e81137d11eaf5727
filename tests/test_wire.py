"""The fast engine's frame parser, checked against wsproto as an oracle on random frame streams."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from trio_sogni._transport import _wire

OPS = {"text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10, "cont": 0}


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    width: int | None = None,
) -> bytes:
    """Serialise one frame independently of the code under test (``width`` forces a length form)."""
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    form = width if width is not None else (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        header = bytes((first, mask_bit | n))
    elif form == 16:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", n)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return header + mask + payload
    return header + payload


def ours(chunks: list[bytes]) -> list[tuple[str, Any]]:
    parser = _wire.FrameParser(max_message_size=1 << 30)
    out: list[tuple[str, Any]] = []
    try:
        for chunk in chunks:
            for opcode, payload in parser.feed(chunk):
                if opcode == _wire.OP_CLOSE:
                    assert isinstance(payload, bytes)
                    out.append(("close", _wire.parse_close_payload(payload)[0]))
                    return out
                name = {1: "text", 2: "binary", 9: "ping", 10: "pong"}[opcode]
                out.append((name, payload))
            if parser.error is not None:
                raise parser.error
    except _wire.WebSocketProtocolError as exc:
        out.append(("close", exc.close_code))
    return out


def oracle(chunks: list[bytes]) -> list[tuple[str, Any]]:
    conn = Connection(ConnectionType.CLIENT)
    out: list[tuple[str, Any]] = []
    text: list[str] = []
    data: list[bytes] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events():
            if isinstance(event, TextMessage):
                text.append(event.data)
                if event.message_finished:
                    out.append(("text", "".join(text)))
                    text = []
            elif isinstance(event, BytesMessage):
                data.append(bytes(event.data))
                if event.message_finished:
                    out.append(("binary", b"".join(data)))
                    data = []
            elif isinstance(event, Ping):
                out.append(("ping", bytes(event.payload)))
            elif isinstance(event, Pong):
                out.append(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                out.append(("close", event.code))
                return out
    return out


payloads = st.binary(max_size=300) | st.binary(min_size=65536, max_size=65600)
texts = st.text(max_size=200).map(str.encode)
close_codes = st.sampled_from(
    [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4021, 4999]
)


@st.composite
def message(draw: st.DrawFn) -> list[bytes]:
    """One valid message (maybe fragmented, with control frames between fragments) or control frame."""
    kind = draw(st.sampled_from(["text", "binary", "ping", "pong", "frag"]))
    if kind in ("ping", "pong"):
        return [raw_frame(OPS[kind], draw(st.binary(max_size=125)))]
    if kind in ("text", "binary"):
        body = draw(texts if kind == "text" else payloads)
        return [raw_frame(OPS[kind], body)]
    op = draw(st.sampled_from([1, 2]))
    body = draw(texts if op == 1 else st.binary(max_size=400))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(raw_frame(op if i == 0 else 0, piece, fin=i == len(pieces) - 1))
        if i < len(pieces) - 1 and draw(st.booleans()):
            frames.append(raw_frame(OPS["ping"], draw(st.binary(max_size=20))))
    return frames


@st.composite
def bad_frame(draw: st.DrawFn) -> bytes:
    """A frame a client must reject."""
    kind = draw(
        st.sampled_from(
            ["rsv", "masked", "long_control", "frag_control", "opcode", "cont", "nonminimal",
             "close1", "badcode", "badtext"]
        )
    )  # fmt: skip
    if kind == "rsv":
        return raw_frame(2, b"x", rsv=draw(st.integers(1, 7)))
    if kind == "masked":
        return raw_frame(2, b"abc", mask=b"\x01\x02\x03\x04")
    if kind == "long_control":
        return raw_frame(9, b"x" * draw(st.integers(126, 200)))
    if kind == "frag_control":
        return raw_frame(9, b"x", fin=False)
    if kind == "opcode":
        return raw_frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), b"")
    if kind == "cont":
        return raw_frame(0, b"x")
    if kind == "nonminimal":
        return raw_frame(2, b"x" * draw(st.integers(0, 125)), width=16)
    if kind == "close1":
        return raw_frame(8, b"\x03")
    if kind == "badcode":
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1006, 1016, 2999, 5000]))
        return raw_frame(8, struct.pack("!H", code))
    return raw_frame(1, b"\xff\xfe")


@st.composite
def stream(draw: st.DrawFn) -> list[bytes]:
    frames = [f for m in draw(st.lists(message(), max_size=8)) for f in m]
    ending = draw(st.sampled_from(["none", "close", "bad"]))
    if ending == "close":
        frames.append(raw_frame(8, struct.pack("!H", draw(close_codes)) + b"bye"))
    elif ending == "bad":
        frames.append(draw(bad_frame()))
    data = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_parser_agrees_with_wsproto(chunks: list[bytes]) -> None:
    expected = oracle(chunks)
    got = ours(chunks)
    # Text payloads: ours are str, wsproto's are str; binary: bytes both.
    assert got == expected


def test_text_is_validated_as_utf8_across_fragments() -> None:
    euro = "€".encode()
    frames = raw_frame(1, euro[:1], fin=False) + raw_frame(0, euro[1:])
    assert ours([frames]) == [("text", "€")]
    bad = raw_frame(1, b"\xe2\x82", fin=False) + raw_frame(0, b"A")
    assert ours([bad]) == [("close", 1007)]


def test_size_limit() -> None:
    parser = _wire.FrameParser(max_message_size=10)
    assert parser.feed(raw_frame(2, b"x" * 10)) == [(2, b"x" * 10)]
    with pytest.raises(_wire.WebSocketProtocolError) as info:
        parser.feed(raw_frame(2, b"x" * 6, fin=False) + raw_frame(0, b"y" * 6))
    assert info.value.close_code == 1009
    # The limit applies as soon as the header is read, before the payload arrives.
    with pytest.raises(_wire.WebSocketProtocolError):
        _wire.FrameParser(max_message_size=10).feed(raw_frame(2, b"x" * 100)[:4])


def test_encode_frame_masks_client_frames() -> None:
    frame = _wire.encode_frame(_wire.OP_TEXT, b"hello" * 30)
    server = Connection(ConnectionType.SERVER)
    server.receive_data(frame)
    events = list(server.events())
    assert isinstance(events[0], TextMessage)
    assert events[0].data == "hello" * 30
    for size in (0, 125, 126, 65535, 65536):
        server.receive_data(_wire.encode_frame(_wire.OP_BINARY, b"z" * size))
        (event,) = list(server.events())
        assert isinstance(event, BytesMessage)
        assert len(event.data) == size


def test_handshake_response_checks() -> None:
    request, key = _wire.build_handshake_request(
        "example.test", 80, "/?a=1", False, [(b"api-key", b"k")]
    )
    assert request.startswith(b"GET /?a=1 HTTP/1.1\r\nHost: example.test\r\n")
    assert b"api-key: k\r\n" in request
    good = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {_wire.accept_key(key)}\r\n\r\n"
    ).encode()
    assert _wire.parse_handshake_response(good[:20], key) is None
    parsed = _wire.parse_handshake_response(good + b"\x81\x00", key)
    assert parsed is not None
    assert parsed[2] == b"\x81\x00"
    with pytest.raises(_wire.HandshakeError, match="Accept"):
        _wire.parse_handshake_response(good.replace(_wire.accept_key(key).encode(), b"x"), key)
    with pytest.raises(_wire.HandshakeError) as info:
        _wire.parse_handshake_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", key)
    assert info.value.status == 403
    with pytest.raises(ValueError, match="line breaks"):
        _wire.build_handshake_request("h", 80, "/", False, [(b"x", b"a\r\nb")])
