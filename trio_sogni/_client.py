"""`open_sogni_client` and `SogniClient`: the composition root. Owns one nursery."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal, cast, final
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import trio
from typing_extensions import override

from ._auth import Session, SessionTokens, derive_wallet
from ._chat import ChatAPI
from ._driver import JobDriver
from ._eip712 import EIP712Helper, Signer, as_local_account
from ._errors import ClientClosedError, InvalidRequestError
from ._events import EventHub
from ._groups import unwrap_group
from ._jobstate import check_buffer_size
from ._media._models import MediaModelCatalog
from ._media._sync import fetch_project
from ._projects import ProjectsAPI
from ._router import JobRouter
from ._transport import (
    RestClient,
    SocketOptions,
    SocketTransport,
    StreamOpener,
    build_socket_url,
    open_tcp,
)
from ._transport._rest import MAX_RESPONSE_SIZE
from ._vision import DEFAULT_FETCH_TIMEOUT, ImageFetcher
from .protocol import Authenticated, Balance, BalanceUpdate

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


class AccountBalance(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /v4/account/balance``: the account's balance per token."""

    sogni: Balance | None = None
    spark: Balance | None = None


class _BalanceResponse(msgspec.Struct):
    data: AccountBalance


class AccountAPI:
    """``sogni.account``: the signed-in account."""

    def __init__(
        self,
        *,
        rest: RestClient,
        session: Session,
        router: JobRouter,
        app_id: str,
        app_source: str | None,
    ) -> None:
        self._rest = rest
        self._session = session
        self._router = router
        self._app_id = app_id
        self._app_source = app_source

    async def me(self) -> AccountInfo:
        """Fetch the account (``GET /v1/account/me``).

        Raises:
            APIStatusError: e.g. 401 when the credentials are not accepted.
            AuthenticationError: the session could not be refreshed.
        """
        body = await self._rest.request("GET", "/v1/account/me")
        return msgspec.convert(body, _MeResponse).data

    async def balance(self) -> AccountBalance:
        """Fetch the balances (``GET /v4/account/balance``). `latest_balance` is kept current by
        the server's ``balanceUpdate`` frames without a request.

        Raises:
            APIStatusError, AuthenticationError: as for `me`.
        """
        body = await self._rest.request("GET", "/v4/account/balance")
        return msgspec.convert(body, _BalanceResponse).data

    @property
    def latest_balance(self) -> BalanceUpdate | None:
        """The latest ``balanceUpdate`` the server pushed (after each settled job), if any."""
        return self._router.balance

    @property
    def tokens(self) -> SessionTokens | None:
        """The session's current tokens (``None`` for API-key clients). Save them to resume the
        session later with ``open_sogni_client(tokens=...)``; they change at every refresh."""
        return self._session.tokens

    @property
    def auth_mode(self) -> str:
        """``"api_key"`` or ``"session"`` (username/password, wallet or tokens)."""
        return self._session.mode

    async def refresh(self) -> None:
        """Refresh the session now (it is also refreshed automatically before it expires).

        Raises:
            AuthenticationError: the refresh was refused; the session has ended.
            InvalidRequestError: this client uses an API key.
        """
        if self._session.mode == "api_key":
            raise InvalidRequestError("an API-key client has no session to refresh")
        await self._session.refresh()

    async def logout(self) -> None:
        """End the session (``POST /v1/account/logout``) and forget its tokens. Later calls that
        need authentication raise `AuthenticationError`; close the client afterwards. A no-op
        for API-key clients."""
        await self._session.logout()

    async def create_account(
        self,
        *,
        username: str,
        email: str,
        password: str | None = None,
        wallet_private_key: Signer | None = None,
        subscribe: bool = False,
        turnstile_token: str = "",
        referral_code: str | None = None,
        remember_me: bool = True,
    ) -> SessionTokens:
        """Create a new account (``POST /v1/account/create``, signed with the EIP-712 ``Signup``
        type) and return its session tokens. The wallet is derived from ``username`` and
        ``password`` as the official SDKs do, or given as ``wallet_private_key``.

        This client stays signed in as before; open another client with ``tokens=`` (or the new
        username and password) to act as the new account.

        Raises:
            InvalidRequestError: bad arguments (nothing was sent).
            AuthenticationError: the server refused (e.g. the name or wallet is taken).
        """
        if not username or not isinstance(username, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("username must be a non-empty string")
        if not isinstance(email, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("email must be a string")
        if (password is None) == (wallet_private_key is None):
            raise InvalidRequestError("give exactly one of password and wallet_private_key")
        wallet = (
            derive_wallet(username, password)
            if password is not None
            else as_local_account(cast("Signer", wallet_private_key))
        )
        return await self._session.signup(
            wallet,
            app_id=self._app_id,
            username=username,
            email=email,
            subscribe=subscribe,
            turnstile_token=turnstile_token,
            referral_code=referral_code,
            app_source=self._app_source,
            remember_me=remember_me,
        )


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
        projects: media projects: image, video and audio (`ProjectsAPI`).
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
        projects: ProjectsAPI,
        account: AccountAPI,
        transport: SocketTransport,
        rest: RestClient,
        eip712: EIP712Helper,
    ) -> None:
        self.app_id = app_id
        self.network = network
        self.rest_endpoint = rest_endpoint
        self.socket_endpoint = socket_endpoint
        self.chat = chat
        self.projects = projects
        self.rest = rest
        self.account = account
        self.eip712 = eip712
        """EIP-712 signing in this client's domain (with its wallet, if it signed in with one)."""
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


@asynccontextmanager
async def open_sogni_client(
    *,
    app_id: str | None = None,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    wallet_private_key: Signer | None = None,
    tokens: SessionTokens | dict[str, str] | None = None,
    testnet: bool = False,
    wall_clock: Callable[[], float] = time.time,
    rest_endpoint: str = DEFAULT_REST_ENDPOINT,
    socket_endpoint: str = DEFAULT_SOCKET_ENDPOINT,
    network: Literal["fast", "relaxed"] = "fast",
    app_source: str | None = None,
    socket_event_subscriptions: dict[str, bool] | None = None,
    max_buffered_chunks: int = 256,
    abort_grace: float = 5.0,
    socket_options: SocketOptions | None = None,
    http_client: httpx.AsyncClient | None = None,
    open_stream: StreamOpener | None = None,
    max_response_size: int = MAX_RESPONSE_SIZE,
    resume_window: float = 30.0,
    resize_images: bool = False,
    image_fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
) -> AsyncGenerator[SogniClient]:
    """Connect to a Sogni Supernet and yield a `SogniClient`; disconnect on exit.

    Sign in with exactly one of: ``api_key``; ``username`` + ``password``; ``wallet_private_key``;
    ``tokens`` (resume a session). A username/password or wallet login runs first over REST (nonce,
    EIP-712 ``authentication`` signature, login) and yields JWTs that are refreshed before they
    expire; the password never leaves this process. Entering then connects the socket with the
    official handshake (query parameters, and the ``api-key`` or ``Authorization`` header) and
    waits, bounded by ``socket_options.authenticated_timeout``, for the server's
    ``authenticated`` frame: no work is ever sent before it. The client owns one nursery,
    which runs the receive loop, the keep-alive ping, the abort sender, the resume watchdog
    (it fails jobs not resumed within ``resume_window``) and the project look-ups (media
    projects a reconnect did not give back are asked for over REST), and nothing else.

    Exiting (a checkpoint) aborts every job still running on the server, fails their streams with
    `ClientClosedError`, closes the socket with code 1000 — all shielded and bounded — and cancels
    the nursery. A single exception from inside the block or from the client's tasks is raised
    as itself, not wrapped in an exception group; a ``KeyboardInterrupt`` stays one.

    Args:
        app_id: identifies this app to the server; keep it stable across restarts (the server
            rebinds live jobs to a reconnecting socket of the same app id). Default: a random id.
        api_key: the API key (sent as the ``api-key`` header; never logged or shown in reprs).
        username, password: sign in with the wallet the official SDKs derive from them.
        wallet_private_key: sign in with this wallet (hex key, 32 bytes or an eth-account
            ``LocalAccount``).
        tokens: resume a session: `SessionTokens` or ``{"token", "refresh_token"}``.
        testnet: use the testnet EIP-712 domain (``Sogni-testnet``, chain 84532).
        wall_clock: the clock token expiry is judged by (seconds since the epoch; corrected by
            the skew each freshly issued token reveals). Replace it only to simulate time.
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
        open_stream: opens the byte stream the WebSocket runs over, ``(host, port, ssl_context)
            -> trio.abc.Stream``; by default TCP, with TLS for ``wss://``. Tests pass one that
            returns an in-memory connection to localnet (``net.connect_in_memory()``).
        max_response_size: the largest REST response body read, in bytes (default 64 MiB); a
            larger one fails its call with `TransportError` after at most that many bytes.
        resume_window: how many seconds a job whose connection dropped waits for the next
            connection to resume it, exactly where it stopped (a localnet extension the client
            asks for with ``jobResume=1``; see ``docs/connections.md``). A job that is not
            resumed in time, or whose server does not resume jobs, fails with a retryable
            ``transport_lost`` `ChatJobError`. ``0`` fails jobs as soon as their connection
            drops (and does not ask the server to hold them).
        resize_images: the default of the per-call ``resize_images`` of chat completions:
            resize images whose longest side is over 1024 px (with Pillow, the ``media`` extra)
            instead of refusing them.
        image_fetch_timeout: seconds a trusted https image URL of a chat request may take to
            fetch, as a whole (default 20). Image fetches go to ``http_client``'s transport (or
            the client's own), without its cookies, default headers, auth or event hooks; an
            image host's ``Set-Cookie`` never reaches its cookie jar.

    Raises:
        InvalidRequestError: bad arguments.
        AuthenticationError: the credentials were rejected (login refused, or close code 4021).
        ConnectError: the server could not be reached or did not authenticate the socket in time.
    """
    if network not in ("fast", "relaxed"):
        raise InvalidRequestError("network must be 'fast' or 'relaxed'")
    if (
        isinstance(max_response_size, bool)
        or not isinstance(max_response_size, int)  # pyright: ignore[reportUnnecessaryIsInstance]
        or max_response_size < 1
    ):
        raise InvalidRequestError("max_response_size must be a positive integer")
    modes = [
        name
        for name, given in (
            ("api_key", api_key is not None),
            ("username/password", username is not None or password is not None),
            ("wallet_private_key", wallet_private_key is not None),
            ("tokens", tokens is not None),
        )
        if given
    ]
    if len(modes) != 1:
        raise InvalidRequestError(
            "give exactly one way to sign in: api_key, username + password, wallet_private_key "
            f"or tokens (got {', '.join(modes) or 'none'})"
        )
    if api_key is not None and (not isinstance(api_key, str) or not api_key):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError("api_key must be a non-empty string")
    wallet = None
    if username is not None or password is not None:
        if not username or not password:
            raise InvalidRequestError("username and password go together")
        wallet = derive_wallet(username, password)
    elif wallet_private_key is not None:
        wallet = as_local_account(wallet_private_key)
    try:
        max_buffered_chunks = check_buffer_size(max_buffered_chunks)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    if (
        isinstance(resume_window, bool)
        or not isinstance(resume_window, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
        or not 0 <= resume_window < float("inf")
    ):
        raise InvalidRequestError("resume_window must be a finite number of seconds, 0 or more")
    if not isinstance(resize_images, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError("resize_images must be True or False")
    app_id = (app_id or f"trio-sogni-{uuid.uuid4()}").strip()
    options = socket_options or SocketOptions()
    url = build_socket_url(
        socket_endpoint,
        app_id=app_id,
        network=network,
        app_source=app_source,
        socket_event_subscriptions=socket_event_subscriptions,
        job_resume=resume_window > 0,
    )
    socket_host = _socket_host(socket_endpoint)
    owns_http = http_client is None
    http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0))
    try:
        # Built bottom-up, each part from the parts it needs: nothing is attached afterwards.
        eip712 = EIP712Helper(testnet=testnet, signer=wallet)
        session = Session(
            api_key=api_key,
            tokens=SessionTokens.coerce(tokens) if tokens is not None else None,
            eip712=eip712,
            rest=RestClient(
                rest_endpoint,
                socket_host,
                _no_headers,
                http,
                max_response_size=max_response_size,
            ),
            clock=wall_clock,
        )
        rest = RestClient(
            rest_endpoint,
            socket_host,
            partial(_rest_headers, session, app_source),
            http,
            session.reauthenticate,
            max_response_size=max_response_size,
        )
        events = EventHub()
        abort_lot = trio.lowlevel.ParkingLot()
        models_lot = trio.lowlevel.ParkingLot()
        detached_lot = trio.lowlevel.ParkingLot()
        media_models_lot = trio.lowlevel.ParkingLot()
        lookup_lot = trio.lowlevel.ParkingLot()
        router = JobRouter(
            max_buffered_chunks=max_buffered_chunks,
            events=events,
            wake_aborts=abort_lot.unpark_all,
            wake_models=models_lot.unpark_all,
            wake_detached=detached_lot.unpark_all,
            wake_media_models=media_models_lot.unpark_all,
            wake_lookups=lookup_lot.unpark_all,
            clock=trio.current_time,
            resume_window=float(resume_window),
        )
        transport = SocketTransport(
            url, session.socket_headers, router, options, open_stream or open_tcp
        )
        driver = JobDriver(
            router,
            transport,
            abort_lot,
            abort_grace=abort_grace,
            detached_lot=detached_lot,
            lookup=partial(fetch_project, rest),
            lookup_lot=lookup_lot,
        )
        projects = ProjectsAPI(
            router=router,
            driver=driver,
            events=events,
            rest=rest,
            catalog=MediaModelCatalog(rest),
            models_lot=media_models_lot,
            app_source=app_source,
        )
        chat = ChatAPI(
            router=router,
            driver=driver,
            events=events,
            models_lot=models_lot,
            rest=rest,
            eip712=eip712,
            app_source=app_source,
            projects=projects,
            images=ImageFetcher(http, timeout=image_fetch_timeout),
            resize_images=resize_images,
        )
        account = AccountAPI(
            rest=rest, session=session, router=router, app_id=app_id, app_source=app_source
        )
        client = SogniClient(
            app_id=app_id,
            network=network,
            rest_endpoint=rest_endpoint,
            socket_endpoint=socket_endpoint,
            chat=chat,
            projects=projects,
            account=account,
            transport=transport,
            rest=rest,
            eip712=eip712,
        )
        if wallet is not None:
            await session.login(wallet, app_source=app_source)
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(transport.run)
                    nursery.start_soon(transport.keepalive)
                    nursery.start_soon(driver.abort_sender)
                    nursery.start_soon(driver.resume_watchdog)
                    nursery.start_soon(driver.project_lookups)
                    yield client
                finally:
                    await _shutdown(driver, events, transport)
                    nursery.cancel_scope.cancel(reason="the client is closing")
    finally:
        if owns_http:
            with trio.CancelScope(shield=True):
                await http.aclose()


async def _no_headers() -> dict[str, str]:
    await trio.lowlevel.checkpoint()
    return {}


async def _rest_headers(session: Session, app_source: str | None) -> dict[str, str]:
    headers = await session.rest_headers()
    if app_source:
        headers["X-App-Source"] = app_source
    return headers


async def _shutdown(driver: JobDriver, events: EventHub, transport: SocketTransport) -> None:
    """Fail and abort every live job (shielded, bounded), end event subscriptions, close the
    socket (shielded, bounded by ``close_timeout``)."""
    await driver.shutdown(ClientClosedError("the client was closed while the job was running"))
    events.close()
    await transport.close()
