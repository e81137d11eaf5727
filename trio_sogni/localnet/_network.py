"""`LocalNetwork`: connections, handshakes, client frames, introspection and fault helpers.

Ownership: every task (connection handlers, job tasks, rebind timers) runs in the one nursery
owned by :func:`open_local_network`. The job side (apps, jobs, scheduler) lives in
:class:`~trio_sogni.localnet._jobs._manager.JobManager`; this module connects it to sockets and HTTP.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from typing import Final

import trio
import trio.testing

from .._groups import unwrap_group
from ..protocol import (
    Authenticated,
    BalanceUpdate,
    LLMJobRequest,
    ServerMessage,
    SwarmLLMModels,
    encode_server_message,
)
from ._accounts._accounts import AccountRef, Accounts, TokenPair
from ._accounts._ledger import Amount, to_amount
from ._accounts._routes import account_routes, profile_routes
from ._accounts._store import AccountRecord, TokenType
from ._config import Account, ModelSpec, Pricing
from ._creative._execute import CreativeTools
from ._hosted._completions import hosted_routes
from ._hosted._estimates import estimate_routes
from ._jobs._manager import AppKey, Changes, JobManager, SocketBinding
from ._jobs._records import JobRecord
from ._jobs._session import (
    MAX_APP_ID_LENGTH,
    Abort,
    Handshake,
    Rejected,
    Reply,
    Resume,
    Session,
    Submit,
    SubmitProject,
    parse_handshake,
)
from ._media._catalog import DEFAULT_MEDIA_MODELS, MediaCatalog, MediaModelSpec, MediaPricing
from ._media._files import media_file_routes
from ._media._manager import ProjectsManager
from ._media._render import MediaWorker
from ._media._routes import media_routes
from ._media._storage import MediaStorage
from ._records import (
    PREVIEW_CHARS,
    HandshakeRecord,
    HTTPRequestRecord,
    NetworkStatistics,
    RejectedFrame,
    handshake_size,
    http_request_size,
    rejected_frame_size,
    summarize_fields,
)
from ._runs._manager import RunManager
from ._runs._routes import run_routes
from ._runs._store import RunStore
from ._server import (
    Connection,
    Connections,
    HTTPRequest,
    HTTPResponse,
    OutClose,
    OutDrop,
    OutFrame,
    RecordLog,
    RestAPI,
    ServerLimits,
    accept_websocket,
    preview,
    serve_listeners,
)
from ._workers._base import Worker
from ._workers._script import ScriptFunction

__all__ = ["LocalNetwork"]

logger = logging.getLogger("trio_sogni.localnet")

Authenticator = Callable[[Mapping[str, str]], Account | None]


class LocalNetwork:
    """A running local Supernet. Get one from :func:`open_local_network` or
    :func:`serve_local_network`; never construct it directly.

    Introspection collections are updated as things happen (each keeps the last
    ``record_limit`` entries; the logs of what clients sent are also bounded in bytes,
    ``record_bytes`` each, and hold summaries, see :class:`~trio_sogni.localnet.RecordLog`).
    :meth:`wait_until` blocks until a condition over them holds.
    """

    def __init__(
        self,
        *,
        api_key: str,
        models: Sequence[ModelSpec],
        account: Account,
        accounts: Accounts,
        pricing: Pricing,
        script: ScriptFunction | None,
        rebind_grace: float,
        authenticator: Authenticator | None,
        max_message_size: int,
        limits: ServerLimits,
        outbox_limit: int,
        close_timeout: float,
        record_limit: int,
        max_jobs_per_socket: int,
        record_bytes: int,
        max_jobs_per_account: int,
        replay_bytes: int,
        media_models: Sequence[MediaModelSpec] = DEFAULT_MEDIA_MODELS,
        media_pricing: MediaPricing | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.api_key: Final = api_key
        """An API key of the default :attr:`account` (``api-key`` header). Never logged."""
        self.account = account
        """The default account, which :attr:`api_key` belongs to (its balances as configured;
        the live ones are in the store, see :meth:`balance`)."""
        self._accounts = accounts
        self.rest = RestAPI()
        """The REST router; add routes with ``net.rest.router.add(method, pattern, handler)``."""
        self._authenticator = authenticator
        self._max_message_size = max_message_size
        self._outbox_limit = outbox_limit
        self._close_timeout = close_timeout
        self._limits = limits
        self._stalled_sockets = 0
        self._changes = Changes()
        self.errors: deque[str] = deque(maxlen=record_limit)
        """Internal failures (a script or worker raising, a connection handler crashing)."""
        self._jobs = JobManager(
            models={m.name: m for m in models},
            pricing=pricing,
            script=script,
            rebind_grace=rebind_grace,
            changes=self._changes,
            errors=self.errors,
            record_limit=record_limit,
            max_jobs_per_socket=max_jobs_per_socket,
            max_jobs_per_account=max_jobs_per_account,
            record_bytes=record_bytes,
            replay_bytes=replay_bytes,
            ledger=accounts.ledger,
            on_settled=self._push_balance,
        )
        self.runs = RunManager(
            store=RunStore(accounts.store.connection),
            jobs=self._jobs,
            ledger=accounts.ledger,
            clock=lambda: self._accounts.clock(),
            base_url=self._asset_base_url,
            errors=self.errors,
            on_settled=self._push_balance,
        )
        """Durable chat runs (``/v1/chat/runs``), persisted in the accounts database; see
        docs/localnet.md, "Durable runs"."""
        # -- media projects hook: the projects manager shares the jobs' scheduler, ledger, app
        # bindings and frame delivery (JobManager.deliver, add_owner/remove_owner). Results go to
        # the media storage (a temporary directory, removed at shutdown), served by the file
        # routes.
        self._media_storage = MediaStorage(data_dir=data_dir, clock=lambda: self._accounts.clock())
        self._projects = ProjectsManager(
            catalog=MediaCatalog(media_models),
            pricing=media_pricing if media_pricing is not None else MediaPricing(),
            rates=lambda: self._jobs.pricing,
            jobs=self._jobs,
            changes=self._changes,
            errors=self.errors,
            ledger=accounts.ledger,
            on_settled=self._push_balance,
            on_models_changed=self._broadcast_media_models,
            reserved_models=lambda: self._jobs.models,
            subscribed=self._app_subscribed,
            max_projects_per_app=max_jobs_per_socket,
            max_projects_per_account=max_jobs_per_account,
            storage=self._media_storage,
        )
        self._creative = CreativeTools(
            projects=self._projects,
            storage=self._media_storage,
            base_url=self._asset_base_url,
            extra_tools=lambda: self.runs.tools,
        )
        """Server-side execution of hosted creative tool calls (hosted completions and runs)."""
        self.runs.executor.creative = self._creative
        router = self.rest.router
        router.include(media_routes(self._projects, self.authenticate))
        router.include(
            media_file_routes(self._media_storage, self.authenticate, base_url=self._asset_base_url)
        )
        router.include(profile_routes(self.authenticate))
        router.include(account_routes(accounts, self.authenticate))
        router.include(
            estimate_routes(
                authenticate=self.authenticate,
                pricing=lambda: self._jobs.pricing,
                models=lambda: self._jobs.models,
                clock=lambda: self._accounts.clock(),
            )
        )
        router.include(
            hosted_routes(
                jobs=self._jobs,
                authenticate=self.authenticate,
                clock=lambda: self._accounts.clock(),
                creative=self._creative,
                nursery=lambda: self._nursery,
            )
        )
        router.include(run_routes(self.runs, self.authenticate))
        self._sockets: set[SocketBinding] = set()
        self._connections = Connections(
            on_change=self._changes.notify,
            on_error=self.errors.append,
            limits=limits,
        )
        self._closing = False
        self._nursery: trio.Nursery | None = None
        self._listen_scope = trio.CancelScope()
        self._address: tuple[str, int] | None = None
        self.rejected_frames = RecordLog[RejectedFrame](
            max_items=record_limit, max_bytes=record_bytes, size=rejected_frame_size
        )
        """Client frames refused by strict decoding or validation, none from a correct client;
        each keeps a preview of the frame and its size."""
        self.http_requests = RecordLog[HTTPRequestRecord](
            max_items=record_limit, max_bytes=record_bytes, size=http_request_size
        )
        """REST requests answered, summarized (credentials redacted, values cut)."""
        self.handshakes = RecordLog[HandshakeRecord](
            max_items=record_limit, max_bytes=record_bytes, size=handshake_size
        )
        """WebSocket upgrades, accepted or rejected, summarized like :attr:`http_requests`."""
        self.frames_received = 0
        """Complete WebSocket messages received from authenticated clients."""

    # -- configuration --------------------------------------------------------------------------

    @property
    def script(self) -> ScriptFunction | None:
        """The network-wide script function; assign to change it (jobs starting later use it)."""
        return self._jobs.script

    @script.setter
    def script(self, value: ScriptFunction | None) -> None:
        self._jobs.script = value

    @property
    def pricing(self) -> Pricing:
        return self._jobs.pricing

    @property
    def rebind_grace(self) -> float:
        """Seconds a disconnected app's jobs wait for a socket with the same ``appId``."""
        return self._jobs.rebind_grace

    # -- addresses ------------------------------------------------------------------------------

    def set_address(self, host: str, port: int) -> None:
        """Record where the network listens (used by :func:`open_local_network`)."""
        self._address = (host, port)

    def _url(self, scheme: str) -> str:
        if self._address is None:
            raise RuntimeError("this local network does not listen on TCP (listen=False)")
        host, port = self._address
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def _asset_base_url(self) -> str:
        return self.rest_url if self._address is not None else "http://localnet.invalid"

    @property
    def port(self) -> int:
        """The TCP port serving both REST and WebSocket."""
        if self._address is None:
            raise RuntimeError("this local network does not listen on TCP (listen=False)")
        return self._address[1]

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` — the REST base, which is also the socket host."""
        return self._url("http")

    @property
    def socket_url(self) -> str:
        """``ws://HOST:PORT/`` — any path is accepted."""
        return self._url("ws") + "/"

    # -- auth seam ------------------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> Account | None:
        """Map request headers (lower-case names) to an account, or ``None`` when they carry no
        valid credentials (REST: 401; WebSocket: close 4021).

        Default: an ``api-key`` header holding a key of a stored account (:attr:`api_key`, keys
        from :meth:`create_api_key`), or else an ``Authorization`` header holding a valid,
        unexpired access token this network issued (a raw JWT; a ``Bearer`` prefix is ignored),
        or ``Authorization: Bearer <api key>`` (as OpenAI-compatible clients send a key).
        An ``authenticator=`` given to :func:`open_local_network` replaces all of this.
        """
        if self._authenticator is not None:
            return self._authenticator(headers)
        record = self._accounts.authenticate(headers)
        return None if record is None else self._accounts.to_account(record)

    # -- accounts -------------------------------------------------------------------------------

    @property
    def testnet(self) -> bool:
        """Whether logins and signups must be signed on the testnet EIP-712 domain."""
        return self._accounts.testnet

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock (seconds since the epoch) for token and nonce times; assign a
        function to move time in tests. Job timing uses Trio's clock, not this."""
        return self._accounts.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self._accounts.clock = value

    def add_account(
        self,
        username: str,
        *,
        password: str | None = None,
        wallet_address: str | None = None,
        email: str | None = None,
        balance: Mapping[TokenType, Amount] | Amount | None = None,
    ) -> AccountRecord:
        """Create an account that can log in (synchronous).

        Give ``password`` to derive its wallet exactly as the official SDKs do for a
        username/password login, or the ``wallet_address`` whose key will sign. ``balance`` is a
        sogni amount or a ``{"sogni": ..., "spark": ...}`` map (default: the network's
        ``signup_balance``); ``email`` defaults to ``<username>@localnet.invalid``.

        Raises:
            ValueError: a bad username, email, wallet or amount, or not exactly one of
                ``password`` and ``wallet_address``; a
                :class:`~trio_sogni.localnet.DuplicateAccount` (a ``ValueError``) when the
                username (any case) or wallet is taken.
        """
        return self._accounts.add_account(
            username,
            password=password,
            wallet_address=wallet_address,
            email=email,
            balance=balance,
        )

    def get_account(self, ref: AccountRef) -> AccountRecord:
        """The stored account named by ``ref`` (a record, an id, a username in any case or a
        wallet address).

        Raises:
            KeyError: no such account.
        """
        return self._accounts.resolve(ref)

    def accounts(self) -> list[AccountRecord]:
        """Every stored account, oldest first."""
        return self._accounts.store.accounts()

    def balance(self, ref: AccountRef, token_type: TokenType = "sogni") -> Decimal:
        """The settled ``token_type`` balance of an account (live jobs' reservations are not
        subtracted).

        Raises:
            KeyError: no such account.
        """
        return self._accounts.ledger.settled(self._accounts.resolve(ref).id, token_type)

    def fund(self, ref: AccountRef, amount: Amount, token_type: TokenType = "sogni") -> Decimal:
        """Add ``amount`` (negative: take away) to an account's settled ``token_type`` balance
        and push ``balanceUpdate`` to its connected sockets. Returns the new balance.

        Raises:
            KeyError: no such account.
            ValueError: a bad amount or token type, or the balance would fall below zero.
        """
        if token_type not in ("sogni", "spark"):
            raise ValueError(f"unknown token type {token_type!r}")
        record = self._accounts.resolve(ref)
        new = self._accounts.ledger.adjust(record.id, token_type, to_amount(amount))
        self._push_balance(record.id)
        return new

    def create_api_key(self, ref: AccountRef) -> str:
        """A new random API key for an account (stored as its SHA-256 digest only).

        Raises:
            KeyError: no such account.
        """
        return self._accounts.create_api_key(ref)

    def issue_tokens(self, ref: AccountRef) -> TokenPair:
        """A new session for an account, as a login would return it (access and refresh
        token), without the signature dance.

        Raises:
            KeyError: no such account.
        """
        return self._accounts.issue_tokens(ref)

    def revoke_refresh_tokens(self, ref: AccountRef) -> int:
        """Revoke every live refresh token of an account (access tokens stay valid until they
        expire). Returns how many were revoked.

        Raises:
            KeyError: no such account.
        """
        return self._accounts.revoke_refresh_tokens(ref)

    def _push_balance(self, account_id: str) -> None:
        """Queue ``balanceUpdate`` (the account's balances now) to its connected sockets."""
        balances = self._accounts.ledger.balances(account_id)
        if balances is None:
            return
        targets = [s for s in self._sockets if s.account.id == account_id]
        if not targets:
            return
        frame = encode_server_message(
            BalanceUpdate(sogni=balances["sogni"], spark=balances["spark"])
        )
        for sock in targets:
            sock.driver.outbox.put_nowait(OutFrame(frame))

    # -- models and workers ---------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelSpec]:
        """Every model the network knows (served or not)."""
        return dict(self._jobs.models)

    @property
    def workers(self) -> list[Worker]:
        return [slot.chat_worker() for slot in self._jobs.scheduler.slots if slot.kind == "chat"]

    def model_map(self) -> SwarmLLMModels:
        """The current ``swarmLLMModels`` message: every model with at least one worker."""
        return self._jobs.model_map()

    def add_worker(self, worker: Worker) -> None:
        """Register ``worker`` (synchronous). Queued jobs it can serve start at once, and every
        socket that did not opt out of ``modelAvailability`` gets a new ``swarmLLMModels``.

        Raises:
            ValueError: a worker with that name exists, or its capacity is below 1.
        """
        self._jobs.add_worker(worker)
        self._broadcast_models()

    def remove_worker(self, name: str) -> None:
        """Unregister a worker (synchronous). Its running jobs fail with ``worker_disconnected``;
        queued jobs for a model left without workers fail with ``model_unavailable``. Sockets
        get a new ``swarmLLMModels``.

        Raises:
            KeyError: no worker has that name.
        """
        self._jobs.remove_worker(name)
        self._broadcast_models()

    def add_media_worker(self, worker: MediaWorker) -> None:
        """Register a media worker (synchronous): the :class:`SimulatedMediaWorker` TEST DOUBLE,
        an :class:`OpenAIImagesBridgeWorker`, or any :class:`MediaWorker`. It serves its own
        ``models`` (``None``: every catalog model of the media types it renders). Queued renders
        it can serve start at once, and sockets get a new ``swarmModels``.

        Raises:
            ValueError: a media worker with that name exists, no model to serve, or a model the
                media catalog does not know.
        """
        self._projects.add_worker(worker)

    def remove_media_worker(self, name: str) -> None:
        """Unregister a media worker (see :meth:`add_media_worker`): its running renders are
        retried on another worker (``jobRetry``). Synchronous.

        Raises:
            KeyError: no media worker has that name.
        """
        self._projects.remove_worker(name)

    # -- media projects hooks --------------------------------------------------------------------

    def _socket_of(self, app_key: AppKey) -> SocketBinding | None:
        app = self._jobs.apps.get(app_key)
        return app.socket if app is not None else None

    def _app_subscribed(self, app_key: AppKey, group: str) -> bool:
        """Whether the socket holding ``app_key`` opted in to the event group ``group``."""
        sock = self._socket_of(app_key)
        return sock is not None and sock.session.subscriptions.get(group, False)

    def _broadcast_media_models(self) -> None:
        frame = encode_server_message(self._projects.swarm_models())
        for sock in self._sockets:
            if sock.session.wants("modelAvailability"):
                sock.driver.outbox.put_nowait(OutFrame(frame))

    def _broadcast_models(self) -> None:
        frame = encode_server_message(self.model_map())
        for sock in self._sockets:
            if sock.session.wants("modelAvailability"):
                sock.driver.outbox.put_nowait(OutFrame(frame))
        self._changes.notify()

    # -- introspection --------------------------------------------------------------------------

    @property
    def job_requests(self) -> RecordLog[LLMJobRequest]:
        """The well-formed ``llmJobRequest`` frames received, accepted or not, whole: the newest
        ones within ``record_limit`` requests and ``record_bytes`` accounted bytes (a request
        larger than that is not kept)."""
        return self._jobs.job_requests

    @property
    def job_records(self) -> deque[JobRecord]:
        """Every job that has ended, with its outcome, in order of ending."""
        return self._jobs.job_records

    @property
    def aborted_job_ids(self) -> RecordLog[str]:
        """Every jobID named by a client abort (``jobError``) frame, live job or not (ids longer
        than 256 characters are cut)."""
        return self._jobs.aborted_job_ids

    @property
    def cancelled_job_ids(self) -> deque[str]:
        """JobIDs of live jobs that a client abort actually stopped."""
        return self._jobs.cancelled_job_ids

    @property
    def frames_dropped(self) -> int:
        """Job frames discarded because their app had no socket at the time."""
        return self._jobs.frames_dropped

    @property
    def connected_sockets(self) -> int:
        """Authenticated WebSocket connections currently holding an app."""
        return len(self._sockets)

    @property
    def live_jobs(self) -> int:
        """Jobs queued, running or detached (waiting for a rebind)."""
        return len(self._jobs.jobs)

    def job_ids(self, app_id: str | None = None) -> list[str]:
        """The live jobs' ids (of one app if given), in submission order."""
        jobs = sorted(self._jobs.jobs.values(), key=lambda j: j.seq)
        return [j.job_id for j in jobs if app_id is None or j.app_id == app_id]

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the live state (synchronous)."""
        queued, running, _queues = self._jobs.scheduler.statistics()
        return NetworkStatistics(
            live_jobs=len(self._jobs.jobs),
            queued_jobs=queued,
            running_jobs=running,
            detached_jobs=self._jobs.detached_jobs(),
            connected_sockets=len(self._sockets),
            open_connections=len(self._connections),
            job_state_entries=self._jobs.state_entries(),
            refused_connections=self._connections.refused,
            timed_out_connections=sum(self._connections.timeouts.values()),
            stalled_sockets=self._stalled_sockets,
            lingering_jobs=self._jobs.lingering_jobs(),
        )

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Block until ``predicate()`` is true. It is re-evaluated after every state change of
        the network (connections, frames received, job progress and endings, workers). Always a
        checkpoint; bound it with a cancel scope such as ``trio.fail_after``."""
        await self._changes.wait_until(predicate)

    # -- fault helpers --------------------------------------------------------------------------

    async def send_raw_to_clients(self, data: bytes | str) -> int:
        """Send ``data`` unchanged (``bytes``: a binary message, ``str``: a text message) to every
        authenticated socket, after whatever is already queued for it. For malformed JSON, bad
        base64, unknown types, oversized frames... Returns the number of sockets."""
        sockets = list(self._sockets)
        for sock in sockets:
            await sock.driver.outbox.put(OutFrame(data))
        return len(sockets)

    async def drop_all_connections(self, *, reset: bool = False) -> int:
        """Cut every authenticated socket's TCP connection without a close frame (RST when
        ``reset``), after what is already queued, and wait until they are gone. Their apps'
        jobs detach and the rebind grace starts. Returns the number of sockets dropped."""
        sockets = list(self._sockets)
        for sock in sockets:
            sock.driver.outbox.put_nowait(OutDrop(reset))
        await self.wait_until(lambda: not any(s in self._sockets for s in sockets))
        return len(sockets)

    async def drop_event_streams(self) -> int:
        """Cut every open chat-run event stream (SSE) mid-body, without finishing the chunked
        response, and wait until they are gone. The runs go on. Returns how many were cut."""
        return await self.runs.drop_streams()

    async def close_all_connections(self, code: int = 1001, reason: str = "") -> int:
        """Close every authenticated socket with ``code`` and wait until they are gone (each
        waits at most ``close_timeout`` for the client's reply). Returns the number closed."""
        sockets = list(self._sockets)
        for sock in sockets:
            sock.driver.outbox.put_nowait(OutClose(code, reason))
        await self.wait_until(lambda: not any(s in self._sockets for s in sockets))
        return len(sockets)

    # -- connections ----------------------------------------------------------------------------

    def connect_in_memory(self) -> trio.abc.Stream:
        """Serve a new connection over an in-memory stream pair and return the client's end.

        Speak HTTP or WebSocket over it as over TCP (e.g. with ``trio_websocket.
        wrap_client_stream``). Works with ``listen=False`` and under ``MockClock``.

        Raises:
            RuntimeError: the network is not running.
        """
        if self._nursery is None or self._closing:
            raise RuntimeError("the network is not running")
        client, server = trio.testing.memory_stream_pair()
        self.serve_connection(server)
        return client

    def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve ``stream`` (the server's end of an already connected stream) as a new
        connection, as if it had been accepted: e.g. one end of
        ``trio.testing.lockstep_stream_pair()``, whose writes block until the other end reads
        (a peer that stops reading), or any stream a test controls. Synchronous.

        Raises:
            RuntimeError: the network is not running.
        """
        if self._nursery is None or self._closing:
            raise RuntimeError("the network is not running")
        self._nursery.start_soon(self._handle_stream, stream)

    async def _handle_stream(self, stream: trio.abc.Stream) -> None:
        await self._connections.serve(
            stream,
            on_request=self.handle_rest,
            on_upgrade=self._on_upgrade,
            on_head=self.rest.admit,
        )

    async def handle_rest(self, request: HTTPRequest) -> HTTPResponse:
        """Answer one REST request as the TCP server does, and record it. Usable without a
        socket (e.g. behind an ``httpx.MockTransport`` adapter). Never raises for a bad request."""
        response = await self.rest.handle(request)
        self.http_requests.append(
            HTTPRequestRecord.summarize(
                request.method, request.path, request.query, request.headers, response.status
            )
        )
        self._changes.notify()
        return response

    async def _on_upgrade(
        self, stream: trio.abc.Stream, conn: Connection, request: HTTPRequest, trailing: bytes
    ) -> HTTPResponse | None:
        conn.websocket = True  # before the 101 goes out: shutdown must not cancel it mid-write
        driver = await accept_websocket(
            stream,
            request,
            trailing,
            max_message_size=self._max_message_size,
            outbox_limit=self._outbox_limit,
            close_timeout=self._close_timeout,
            write_timeout=self._limits.write_timeout,
            message_timeout=self._limits.message_timeout,
        )
        if isinstance(driver, HTTPResponse):  # a bad handshake: nothing was sent
            conn.websocket = False
            return driver
        handshake = parse_handshake(request.target)
        for problem in handshake.problems:
            logger.info("localnet: ignoring a handshake parameter (%s)", problem)
        account = self.authenticate(request.headers)
        rejection: tuple[int, str] | None = None
        if self._closing:
            rejection = (1001, "Server is restarting")
        elif account is None:
            rejection = (4021, "Authentication failed")
        elif handshake.app_id is None:
            rejection = (4010, "appId is required")
        elif len(handshake.app_id) > MAX_APP_ID_LENGTH:
            rejection = (4010, f"appId is longer than {MAX_APP_ID_LENGTH} characters")
        self._record_handshake(handshake, request, rejection)
        if rejection is not None or account is None:
            code, reason = rejection or (4021, "Authentication failed")
            driver.outbox.put_nowait(OutClose(code, reason))
            await driver.run(self._ignore)
            return None
        sock = SocketBinding(driver, Session(handshake), account)
        self._attach(sock)
        try:
            await driver.run(partial(self._on_message, sock))
        finally:
            self._sockets.discard(sock)
            if driver.stalled:
                self._stalled_sockets += 1
                if not sock.session.handshake.job_resume:
                    # A client that cannot resume would lose the frames anyway: free the
                    # workers now. A resuming client's jobs detach like any others (their
                    # held frames are bounded, and so is the grace).
                    self._abort_jobs_of(sock)
            self._jobs.unbind(sock)
            self._changes.notify()
        return None

    def _abort_jobs_of(self, sock: SocketBinding) -> None:
        """``sock`` stopped reading and was dropped: abort its app's jobs at once (freeing their
        worker slots and releasing their billing holds) instead of detaching them."""
        app = self._jobs.apps.get(sock.app_key)
        if app is None or app.socket is not sock:
            return
        for job in list(app.jobs.values()):
            self._jobs.end_job(job, "aborted", None)

    def _record_handshake(
        self, handshake: Handshake, request: HTTPRequest, rejection: tuple[int, str] | None
    ) -> None:
        self.handshakes.append(
            HandshakeRecord(
                path=preview(handshake.path, PREVIEW_CHARS),
                query=summarize_fields(handshake.query),
                app_id=None
                if handshake.app_id is None
                else preview(handshake.app_id, PREVIEW_CHARS),
                client_name=(
                    None
                    if handshake.client_name is None
                    else preview(handshake.client_name, PREVIEW_CHARS)
                ),
                headers=summarize_fields(request.headers, redacted=True),
                outcome="accepted" if rejection is None else "rejected",
                close_code=None if rejection is None else rejection[0],
            )
        )
        self._changes.notify()

    @staticmethod
    async def _ignore(message: bytes | str) -> None:
        await trio.lowlevel.checkpoint()

    def _attach(self, sock: SocketBinding) -> None:
        """Bind ``sock`` to its app (closing an older socket of that app with 4015) and queue
        ``authenticated`` and ``swarmLLMModels`` as its first frames, in one atomic step."""
        old, active = self._jobs.bind(sock)
        projects = self._projects.recovery(sock.account.id, sock.app_id, claim=True)
        if old is not None:
            self._sockets.discard(old)
            old.driver.outbox.put_nowait(OutClose(4015, "Another connection took over this appId"))
        authenticated = Authenticated(
            id=sock.account.id,
            client_type="artist",
            username=sock.account.username,
            address=sock.account.wallet_address,
            active_llm_job_ids=active,
            active_projects=projects[0],
            unclaimed_completed_projects=projects[1],
            subscription_entitlement={"active": False, "subscription": None},
            tokens=self._accounts.ledger.balances(sock.account.id) or sock.account.balances(),
            job_resume=True if sock.session.handshake.job_resume else None,
        )
        sock.driver.outbox.put_nowait(OutFrame(encode_server_message(authenticated)))
        if sock.session.wants("modelAvailability"):
            sock.driver.outbox.put_nowait(OutFrame(encode_server_message(self.model_map())))
            if self._projects.workers:
                media = encode_server_message(self._projects.swarm_models())
                sock.driver.outbox.put_nowait(OutFrame(media))
        self._jobs.attached(sock)
        self._sockets.add(sock)
        self._changes.notify()

    async def _on_message(self, sock: SocketBinding, frame: bytes | str) -> None:
        self.frames_received += 1
        for effect in sock.session.receive_frame(frame):
            match effect:
                case Reply(message=message):
                    await self._reply(sock, message)
                case Submit(request=request):
                    error = self._jobs.submit(sock, request)
                    if error is not None:
                        await self._reply(sock, error)
                case SubmitProject(request=project):
                    refusal = self._projects.submit(sock.app_key, project)
                    if refusal is not None:
                        await self._reply(sock, refusal)
                case Abort(job_id=job_id):
                    # A project of this app answers with artistCancelConfirmation; any other
                    # id is a chat job abort (unknown ids included, silently).
                    if not await self._projects.cancel(sock.app_key, job_id):
                        self._jobs.abort(sock.app_key, job_id)
                case Resume(jobs=entries):
                    problem = self._jobs.resume(sock, entries)
                    if problem is not None:
                        logger.warning("localnet: rejected a client frame: %s", problem)
                        self.rejected_frames.append(
                            RejectedFrame.summarize(problem, None, "resumeJobs", frame)
                        )
                case Rejected(reason=reason, job_id=job_id, message_type=kind, frame=raw):
                    logger.warning("localnet: rejected a client frame: %s", reason)
                    self.rejected_frames.append(RejectedFrame.summarize(reason, job_id, kind, raw))
        self._changes.notify()

    async def _reply(self, sock: SocketBinding, message: ServerMessage) -> None:
        await sock.driver.outbox.put(OutFrame(encode_server_message(message)))

    # -- lifecycle ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(
        self,
        listeners: list[trio.SocketListener],
        workers: Iterable[Worker],
        shutdown_timeout: float,
    ) -> AsyncGenerator[None]:
        """Own the network's nursery: register ``workers``, serve ``listeners``, and shut down
        (shielded, bounded by ``shutdown_timeout``) on exit. A lone exception (from the block,
        or a crash inside localnet) propagates unwrapped, not as an ``ExceptionGroup``."""
        try:
            with unwrap_group():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._jobs.start(nursery)
                    self._projects.start(nursery)
                    for worker in workers:
                        self.add_worker(worker)
                    self.runs.start(nursery)
                    if listeners:
                        nursery.start_soon(self._serve_listeners, list(listeners))
                        listeners.clear()
                    try:
                        yield
                    finally:
                        with trio.CancelScope(shield=True):
                            await self._shutdown(shutdown_timeout)
                        nursery.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _serve_listeners(self, listeners: list[trio.SocketListener]) -> None:
        assert self._nursery is not None
        with self._listen_scope:
            await serve_listeners(self._handle_stream, listeners, handler_nursery=self._nursery)

    async def _shutdown(self, grace: float) -> None:
        """Stop listening, fail every live job with ``server_restarting``, close every socket
        with 1001 and wait (at most ``grace`` seconds) for connections to end."""
        self._closing = True
        self._jobs.stop_accepting()
        self._projects.stop_accepting()
        self._listen_scope.cancel()
        await self.runs.aclose(grace)
        self._jobs.close()
        self._projects.close()
        self._media_storage.close()
        for sock in list(self._sockets):
            sock.driver.outbox.put_nowait(OutClose(1001, "Server is restarting"))
        self._connections.cancel_http()
        with trio.move_on_after(grace):
            await self.wait_until(lambda: not self._connections)
