"""`open_sogni_client` and `SogniClient`: the composition root. Owns one nursery."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Literal, cast, final
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import trio
from typing_extensions import override

from ._chat import ChatAPI
from ._errors import ClientClosedError, InvalidRequestError
from ._stream import check_buffer_size
from ._transport import RestClient, SocketOptions, SocketTransport, build_socket_url
from .protocol import AbortJob, Authenticated, BalanceUpdate, encode_client_message

__all__ = ["AccountAPI", "AccountInfo", "SogniClient", "open_sogni_client"]

logger = logging.getLogger("trio_sogni")

DEFAULT_REST_ENDPOINT = "https://api.sogni.ai"
DEFAULT_SOCKET_ENDPOINT = "wss://socket.sogni.ai"


class AccountInfo(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /v1/account/me``: who this client is signed in as."""

    username: str | None = None
    current_email: str | None = msgspec.field(default=None, name="currentEmail")
    wallet_address: str | None = msgspec.field(default=None, name="walletAddress")


class _MeResponse(msgspec.Struct):
    data: AccountInfo


class AccountAPI:
    """``sogni.account``: the signed-in account."""

    def __init__(self, client: SogniClient) -> None:
        self._client = client

    async def me(self) -> AccountInfo:
        """Fetch the account (``GET /v1/account/me``).

        Raises:
            APIStatusError: e.g. 401 when the credentials are not accepted.
        """
        body = await self._client.rest.request("GET", "/v1/account/me")
        return msgspec.convert(body, _MeResponse).data

    @property
    def balance(self) -> BalanceUpdate | None:
        """The latest ``balanceUpdate`` the server pushed, if any."""
        return self._client.chat.balance


def _socket_host(socket_endpoint: str) -> str:
    """The REST base derived from the socket endpoint (protocol.md §1.2)."""
    parts = urlsplit(socket_endpoint)
    scheme = "http" if parts.scheme in ("ws", "http") else "https"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


@final
class SogniClient:
    """A connected Supernet client. Create it with `open_sogni_client`; never directly.

    Attributes:
        chat: the Chat API (`ChatAPI`).
        account: the account API (`AccountAPI`).
        rest: the REST client (for endpoints without a wrapper yet).
    """

    def __init__(
        self,
        *,
        app_id: str,
        network: str,
        rest_endpoint: str,
        socket_endpoint: str,
        chat: ChatAPI,
        transport: SocketTransport,
        rest: RestClient,
    ) -> None:
        self.app_id = app_id
        self.network = network
        self.rest_endpoint = rest_endpoint
        self.socket_endpoint = socket_endpoint
        self.chat = chat
        self.rest = rest
        self.account = AccountAPI(self)
        self._transport = transport

    @override
    def __repr__(self) -> str:
        # Never includes credentials.
        return (
            f"<SogniClient app_id={self.app_id!r} network={self.network!r} "
            f"socket={self.socket_endpoint!r} connected={self._transport.is_connected}>"
        )

    @property
    def is_connected(self) -> bool:
        """True while the socket is up and authenticated."""
        return self._transport.is_connected

    @property
    def authenticated(self) -> Authenticated | None:
        """The latest ``authenticated`` frame (username, address, ``activeLLMJobIDs``, ...)."""
        return self._transport.authenticated


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Reduce a nursery's group to what a user should see (house style §8.6)."""
    leaves = _leaves(group)
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
    if len(leaves) == 1:
        return leaves[0]
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    return group


@asynccontextmanager
async def open_sogni_client(
    *,
    app_id: str | None = None,
    api_key: str | None = None,
    rest_endpoint: str = DEFAULT_REST_ENDPOINT,
    socket_endpoint: str = DEFAULT_SOCKET_ENDPOINT,
    network: Literal["fast", "relaxed"] = "fast",
    app_source: str | None = None,
    socket_event_subscriptions: dict[str, bool] | None = None,
    max_buffered_chunks: int = 256,
    abort_grace: float = 5.0,
    socket_options: SocketOptions | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[SogniClient]:
    """Connect to a Sogni Supernet and yield a `SogniClient`; disconnect on exit.

    Entering connects the socket with the official handshake (query parameters and the
    ``api-key`` header) and waits, bounded by ``socket_options.authenticated_timeout``, for the
    server's ``authenticated`` frame: no work is ever sent before it. The client owns one nursery,
    which runs the receive loop, the keep-alive ping and the abort sender, and nothing else.

    Exiting (a checkpoint) aborts every job still running on the server, fails their streams with
    `ClientClosedError`, closes the socket with code 1000 — all shielded and bounded — and cancels
    the nursery. A single exception from inside the block or from the client's tasks is raised
    as itself, not wrapped in an exception group; a ``KeyboardInterrupt`` stays one.

    Args:
        app_id: identifies this app to the server; keep it stable across restarts (the server
            rebinds live jobs to a reconnecting socket of the same app id). Default: a random id.
        api_key: the API key (sent as the ``api-key`` header; never logged or shown in reprs).
        rest_endpoint, socket_endpoint: the Supernet to talk to (localnet's ``net.rest_url`` and
            ``net.socket_url`` for a local one).
        network: ``"fast"`` or ``"relaxed"`` worker pool.
        app_source: default ``appSource`` for requests.
        socket_event_subscriptions: optional server event opt-ins/outs, e.g.
            ``{"modelAvailability": False}``.
        max_buffered_chunks: per-job buffer before chunks are coalesced (see `ChatStream`).
        abort_grace: the bound on sending an abort when a job is abandoned.
        socket_options: connection limits (timeouts, ping interval, max message size).
        http_client: an ``httpx.AsyncClient`` to use for REST (you keep ownership of it).

    Raises:
        InvalidRequestError: bad arguments.
        AuthenticationError: the credentials were rejected (close code 4021).
        ConnectError: the server could not be reached or did not authenticate the socket in time.
    """
    if network not in ("fast", "relaxed"):
        raise InvalidRequestError("network must be 'fast' or 'relaxed'")
    if not api_key:
        raise InvalidRequestError("api_key is required (other sign-in modes come later)")
    try:
        max_buffered_chunks = check_buffer_size(max_buffered_chunks)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    app_id = (app_id or f"trio-sogni-{uuid.uuid4()}").strip()
    options = socket_options or SocketOptions()
    secret = api_key

    async def socket_headers() -> list[tuple[bytes, bytes]]:
        return [(b"api-key", secret.encode())]

    async def rest_headers() -> dict[str, str]:
        headers = {"api-key": secret}
        if app_source:
            headers["X-App-Source"] = app_source
        return headers

    url = build_socket_url(
        socket_endpoint,
        app_id=app_id,
        network=network,
        app_source=app_source,
        socket_event_subscriptions=socket_event_subscriptions,
    )
    chat = ChatAPI(
        max_buffered_chunks=max_buffered_chunks, abort_grace=abort_grace, app_source=app_source
    )
    transport = SocketTransport(url, socket_headers, chat, options)
    chat.bind(transport)
    owns_http = http_client is None
    http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0))
    rest = RestClient(rest_endpoint, _socket_host(socket_endpoint), rest_headers, http)
    client = SogniClient(
        app_id=app_id,
        network=network,
        rest_endpoint=rest_endpoint,
        socket_endpoint=socket_endpoint,
        chat=chat,
        transport=transport,
        rest=rest,
    )
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(transport.run)
                nursery.start_soon(transport.keepalive)
                nursery.start_soon(chat.abort_sender)
                yield client
            finally:
                await _shutdown(chat, transport, abort_grace)
                nursery.cancel_scope.cancel(reason="the client is closing")
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    finally:
        if owns_http:
            with trio.CancelScope(shield=True):
                await http.aclose()


async def _shutdown(chat: ChatAPI, transport: SocketTransport, abort_grace: float) -> None:
    live = chat.close(ClientClosedError("the client was closed while the job was running"))
    with trio.move_on_after(abort_grace, shield=True):
        for slot in live:
            if slot.sent:
                await _abort(transport, slot.job_id)
    await transport.close()


async def _abort(transport: SocketTransport, job_id: str) -> None:
    await transport.send_if_connected(encode_client_message(AbortJob(job_id=job_id)))
