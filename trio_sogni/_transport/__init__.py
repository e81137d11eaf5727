"""I/O only: the WebSocket connection and the REST client. No chat semantics live here."""

from ._engines import StreamOpener as StreamOpener, open_tcp as open_tcp
from ._rest import BodyStream as BodyStream, RestClient as RestClient, redact_url as redact_url
from ._socket import (
    FrameSink as FrameSink,
    SocketOptions as SocketOptions,
    SocketTransport as SocketTransport,
    build_socket_url as build_socket_url,
)

__all__ = [
    "BodyStream",
    "FrameSink",
    "RestClient",
    "SocketOptions",
    "SocketTransport",
    "StreamOpener",
    "build_socket_url",
    "open_tcp",
    "redact_url",
]
