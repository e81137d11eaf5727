"""The server layer: HTTP/1.1 and WebSocket I/O, frame encoding and the REST router.

Bottom of localnet's layers. It imports the stdlib, trio, h11, wsproto, msgspec and
:mod:`trio_sogni._groups` only, never a domain package (``_workers``, ``_jobs``, ``_accounts``,
``_hosted``, ``_runs``, ``_media``) nor :mod:`trio_sogni.protocol` (tests/localnet/test_localnet_imports.py).
What it needs of a job (whether its output is still wanted) it reads through
:class:`Silenceable`.

* ``_http``: the h11 connection loop (:func:`serve_http`), :class:`HTTPRequest`,
  :class:`HTTPResponse` and the error envelope;
* ``_frames``: :func:`encode_frame` and the per-socket :class:`Outbox` with its items;
* ``_ws``: :func:`accept_websocket` and the :class:`WebSocketDriver` (reader and writer loops);
* ``_connections``: :class:`Connections`, the served connections (one HTTP loop per stream,
  TCP_NODELAY, cancel plain HTTP ones on shutdown);
* ``_rest``: :class:`Router` (features contribute routers, combined with
  :meth:`Router.include`; a route may check a request's head before its body is read, see
  :data:`Admission`) and :class:`RestAPI`;
* ``_accept``: the accept loop (:func:`serve_listeners`), which backs off on ``EMFILE`` and
  logs at most once per period (:class:`LogThrottle`);
* ``_recordlog``: :class:`RecordLog`, introspection records bounded in count and in bytes.

Every read and write is bounded by :class:`ServerLimits` (idle, header, body, write and
WebSocket message timeouts; ``max_connections``).
"""

from ._accept import LogThrottle as LogThrottle, serve_listeners as serve_listeners
from ._connections import (
    Connection as Connection,
    Connections as Connections,
    UpgradeHandler as UpgradeHandler,
)
from ._frames import (
    Outbox as Outbox,
    OutClose as OutClose,
    OutDrop as OutDrop,
    OutEncoded as OutEncoded,
    OutFrame as OutFrame,
    OutItem as OutItem,
    Silenceable as Silenceable,
    encode_frame as encode_frame,
    skip_frames as skip_frames,
)
from ._http import (
    AbortConnection as AbortConnection,
    HeadVerdict as HeadVerdict,
    HTTPRequest as HTTPRequest,
    HTTPResponse as HTTPResponse,
    ServerLimits as ServerLimits,
    WriteTimeout as WriteTimeout,
    error_response as error_response,
    json_response as json_response,
    serve_http as serve_http,
)
from ._recordlog import (
    RECORD_OVERHEAD as RECORD_OVERHEAD,
    RecordLog as RecordLog,
    preview as preview,
)
from ._rest import Admission as Admission, Handler as Handler, RestAPI as RestAPI, Router as Router
from ._ws import WebSocketDriver as WebSocketDriver, accept_websocket as accept_websocket

__all__ = [
    "RECORD_OVERHEAD",
    "AbortConnection",
    "Admission",
    "Connection",
    "Connections",
    "HTTPRequest",
    "HTTPResponse",
    "Handler",
    "HeadVerdict",
    "LogThrottle",
    "OutClose",
    "OutDrop",
    "OutEncoded",
    "OutFrame",
    "OutItem",
    "Outbox",
    "RecordLog",
    "RestAPI",
    "Router",
    "ServerLimits",
    "Silenceable",
    "UpgradeHandler",
    "WebSocketDriver",
    "WriteTimeout",
    "accept_websocket",
    "encode_frame",
    "error_response",
    "json_response",
    "preview",
    "serve_http",
    "serve_listeners",
    "skip_frames",
]
