"""The envelope codec: ``{"type": <name>, "data": <base64 of UTF-8 JSON payload>}``.

Encoders and decoders are built once at import. The envelope's ``data`` is declared as ``bytes``,
so msgspec does the base64 step in C while decoding the envelope.

Two decoding policies:

* :func:`decode_server_message` (used by clients) is tolerant: unknown fields are ignored and an
  unknown ``type`` yields an :class:`UnknownMessage` rather than an error.
* :func:`decode_client_message` (used by localnet) is strict: unknown fields, unknown types and
  malformed base64 raise :class:`msgspec.ValidationError` / :class:`msgspec.DecodeError`. The one
  exception is a media ``jobRequest``, whose unknown fields are dropped (see
  :class:`MediaJobRequest`); its known fields are still type-checked.

This module raises only msgspec errors; callers translate them at their own boundary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, overload

import msgspec

from ._media import (
    ArtistCancelConfirmation,
    JobETA,
    JobProgress,
    JobResult,
    JobRetry,
    MediaJobRequest,
    ProjectQueue,
    SwarmModels,
)
from ._messages import (
    AbortJob,
    Authenticated,
    BalanceUpdate,
    ChangeNetwork,
    ChatCompletionChunk,
    JobError,
    JobsResumed,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    LLMModelInfo,
    ResumeJobs,
    SetSocketEventSubscriptions,
    SocketEventSubscriptionsUpdated,
    SwarmLLMModels,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "ClientMessage",
    "JSONDecoder",
    "ServerMessage",
    "UnknownMessage",
    "check_json_depth",
    "decode_client_message",
    "decode_envelope",
    "decode_json",
    "decode_server_message",
    "decode_server_payload",
    "encode_client_message",
    "encode_envelope",
    "encode_server_message",
]

ServerMessage: TypeAlias = (
    Authenticated
    | BalanceUpdate
    | SwarmLLMModels
    | SocketEventSubscriptionsUpdated
    | JobState
    | ChatCompletionChunk
    | LLMJobResult
    | LLMJobError
    | JobError
    | JobsResumed
    | ChangeNetwork
    | SwarmModels
    | JobProgress
    | JobETA
    | JobResult
    | JobRetry
    | ArtistCancelConfirmation
    | ProjectQueue
)
"""Every server-to-client message this package understands."""

ClientMessage: TypeAlias = (
    LLMJobRequest
    | MediaJobRequest
    | AbortJob
    | ChangeNetwork
    | SetSocketEventSubscriptions
    | ResumeJobs
)
"""Every client-to-server message this package understands."""


class UnknownMessage(msgspec.Struct, frozen=True):
    """A server message whose ``type`` this version does not know; its payload is kept raw."""

    type: str
    data: bytes


class _Envelope(msgspec.Struct, gc=False):
    type: str
    data: bytes


class _StrictEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    data: bytes


MAX_JSON_DEPTH: Final = 512
"""Deeper JSON is refused before msgspec sees it (see :func:`check_json_depth`)."""

_SHALLOW_LENGTH: Final = 2 * MAX_JSON_DEPTH
_JSON_TOKENS: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
"""A JSON string (an unterminated one runs to the end, so no input makes the scan quadratic)
or a bracket."""


def check_json_depth(data: bytes | str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` before it is decoded.

    msgspec recurses on nested values and relies on the interpreter's recursion limit to stop;
    some libraries (eth-account's dependencies among them) raise that limit to 100,000, which lets
    hostile input overflow the C stack. This check does not depend on the limit. It costs one
    length comparison for any document shorter than ``2 * MAX_JSON_DEPTH`` bytes (every token
    frame), and a bracket count (and, rarely, a scan) for longer ones.

    Raises:
        msgspec.DecodeError: the document nests deeper than the limit.
    """
    if len(data) <= _SHALLOW_LENGTH:
        return
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for match in _JSON_TOKENS.finditer(raw):
        token = match.group()
        if token == b"{" or token == b"[":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise msgspec.DecodeError("JSON is nested too deeply")
        elif token == b"}" or token == b"]":
            depth -= 1


_T = TypeVar("_T")


class JSONDecoder(Generic[_T]):
    """A :class:`msgspec.json.Decoder` (of ``target``, default any JSON) for untrusted bytes: every document is checked by
    :func:`check_json_depth` first, and a :class:`RecursionError` (possible only with a very low
    recursion limit) becomes :class:`msgspec.DecodeError`. Every JSON decode of data from the
    other side (the client's of server replies, localnet's of request bodies, tokens and frames)
    goes through one of these or :func:`decode_json`, so nested input can never overflow the C
    stack whatever the interpreter's recursion limit.

    Raises (from :meth:`decode`): :class:`msgspec.DecodeError` (invalid or too deeply nested
    JSON) and :class:`msgspec.ValidationError` (a value of the wrong type), nothing else.
    """

    __slots__ = ("_decoder",)

    @overload
    def __init__(
        self: JSONDecoder[Any],
        *,
        strict: bool = True,
        float_hook: Callable[[str], Any] | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self,
        target: type[_T],
        *,
        strict: bool = True,
        float_hook: Callable[[str], Any] | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: JSONDecoder[Any],
        target: Any,
        *,
        strict: bool = True,
        float_hook: Callable[[str], Any] | None = None,
    ) -> None: ...
    def __init__(
        self,
        target: Any = Any,
        *,
        strict: bool = True,
        float_hook: Callable[[str], Any] | None = None,
    ) -> None:
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
            target, strict=strict, float_hook=float_hook
        )

    def decode(self, data: bytes | str) -> _T:
        """Check the depth of ``data``, then decode it."""
        check_json_depth(data)
        try:
            value: _T = self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError("JSON is nested too deeply") from None
        except UnicodeEncodeError:  # a str holding a lone surrogate
            raise msgspec.DecodeError("JSON text holds a lone surrogate") from None
        return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise msgspec.DecodeError(f"JSON number out of range: {text[:40]}")
    return value


_any_decoder: Final = JSONDecoder(float_hook=_finite_float)


def decode_json(data: bytes | str) -> Any:
    """Decode untrusted JSON of any shape through :class:`JSONDecoder` (depth checked first).

    A number beyond the float range (``1e400``, which msgspec would make infinite) is refused:
    no value decoded here is NaN or infinite.

    Raises:
        msgspec.DecodeError: invalid JSON, a number out of range, or nesting deeper than
            :data:`MAX_JSON_DEPTH`.
    """
    return _any_decoder.decode(data)


_encoder: Final = msgspec.json.Encoder()
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_strict_envelope_decoder: Final = msgspec.json.Decoder(_StrictEnvelope)

_Decode: TypeAlias = Callable[[bytes], Any]


def _wrap_models(payload: bytes) -> SwarmLLMModels:
    raw = _models_decoder.decode(payload)
    return SwarmLLMModels(
        models={
            name: (LLMModelInfo(workers=info) if isinstance(info, int) else info)
            for name, info in raw.items()
        }
    )


def _wrap_media_models(payload: bytes) -> SwarmModels:
    return SwarmModels(models=_media_models_decoder.decode(payload))


def _server_network(payload: bytes) -> ChangeNetwork:
    return _server_network_decoder.decode(payload)


def _client_network(payload: bytes) -> ChangeNetwork:
    return ChangeNetwork(network=_client_network_decoder.decode(payload))


_models_decoder: Final = msgspec.json.Decoder(dict[str, int | LLMModelInfo])
_media_models_decoder: Final = msgspec.json.Decoder(dict[str, int])
_server_network_decoder: Final = msgspec.json.Decoder(ChangeNetwork)
_client_network_decoder: Final = msgspec.json.Decoder(Literal["fast", "relaxed"])

_SERVER_DECODERS: Final[dict[str, _Decode]] = {
    cls.message_type: msgspec.json.Decoder(cls).decode
    for cls in (
        Authenticated,
        BalanceUpdate,
        SocketEventSubscriptionsUpdated,
        JobState,
        ChatCompletionChunk,
        LLMJobResult,
        LLMJobError,
        JobError,
        JobProgress,
        JobETA,
        JobResult,
        JobRetry,
        ArtistCancelConfirmation,
        ProjectQueue,
        JobsResumed,
    )
}
_SERVER_DECODERS[SwarmLLMModels.message_type] = _wrap_models
_SERVER_DECODERS[SwarmModels.message_type] = _wrap_media_models
_SERVER_DECODERS[ChangeNetwork.message_type] = _server_network

_CLIENT_DECODERS: Final[dict[str, _Decode]] = {
    cls.message_type: msgspec.json.Decoder(cls).decode
    for cls in (
        LLMJobRequest,
        MediaJobRequest,
        AbortJob,
        SetSocketEventSubscriptions,
        ResumeJobs,
    )
}
_CLIENT_DECODERS[ChangeNetwork.message_type] = _client_network


def decode_envelope(frame: bytes | str) -> tuple[str, bytes]:
    """Split a frame into its message type and raw (base64-decoded) JSON payload."""
    check_json_depth(frame)
    env = _envelope_decoder.decode(frame)
    return env.type, env.data


def decode_server_message(frame: bytes | str) -> ServerMessage | UnknownMessage:
    """Decode one server frame tolerantly. Unknown message types come back as `UnknownMessage`.

    Raises:
        msgspec.DecodeError: the frame or its payload is not valid JSON / base64.
        msgspec.ValidationError: a known message has a field of the wrong type.
    """
    check_json_depth(frame)
    env = _envelope_decoder.decode(frame)
    return decode_server_payload(env.type, env.data)


def decode_server_payload(message_type: str, payload: bytes) -> ServerMessage | UnknownMessage:
    """Decode the payload of a server frame whose envelope is already split
    (:func:`decode_envelope`); the same rules as :func:`decode_server_message`."""
    decode = _SERVER_DECODERS.get(message_type)
    if decode is None:
        return UnknownMessage(message_type, payload)
    check_json_depth(payload)
    try:
        message: ServerMessage = decode(payload)
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None
    return message


def decode_client_message(frame: bytes | str) -> ClientMessage:
    """Decode one client frame strictly (localnet's side).

    Raises:
        msgspec.DecodeError: the frame or its payload is not valid JSON / base64.
        msgspec.ValidationError: unknown type, unknown field, or a field of the wrong type.
    """
    check_json_depth(frame)
    env = _strict_envelope_decoder.decode(frame)
    decode = _CLIENT_DECODERS.get(env.type)
    if decode is None:
        raise msgspec.ValidationError(f"unknown client message type {env.type!r}")
    check_json_depth(env.data)
    try:
        message: ClientMessage = decode(env.data)
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None
    return message


def encode_envelope(message_type: str, payload: object) -> bytes:
    """Encode ``payload`` (a Struct or JSON-able value) inside an envelope of ``message_type``."""
    return _encoder.encode(_Envelope(message_type, _encoder.encode(payload)))


def encode_client_message(message: ClientMessage) -> bytes:
    """Encode a client message as the official SDKs do (``changeNetwork`` as a bare string)."""
    if isinstance(message, ChangeNetwork):
        return encode_envelope(message.message_type, message.network)
    return encode_envelope(message.message_type, message)


def encode_server_message(message: ServerMessage) -> bytes:
    """Encode a server message (``swarmLLMModels`` and ``swarmModels`` as the bare model map)."""
    if isinstance(message, SwarmLLMModels | SwarmModels):
        return encode_envelope(message.message_type, message.models)
    return encode_envelope(message.message_type, message)
