"""Starting and stopping a local network: :func:`open_local_network`, :func:`serve_local_network`."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypedDict, Unpack

import trio

from ._accounts._accounts import Accounts, new_api_key
from ._accounts._ledger import Amount
from ._accounts._store import Store, TokenType
from ._config import DEFAULT_MODEL, Account, ModelSpec, Pricing
from ._jobs._manager import (
    DEFAULT_MAX_JOBS_PER_ACCOUNT,
    DEFAULT_MAX_JOBS_PER_SOCKET,
    DEFAULT_REPLAY_BYTES,
)
from ._media._catalog import DEFAULT_MEDIA_MODELS, MediaModelSpec, MediaPricing
from ._network import LocalNetwork
from ._server import ServerLimits
from ._workers._base import Worker
from ._workers._doubles import SimulatedWorker
from ._workers._script import ScriptFunction

__all__ = [
    "LocalNetworkConfig",
    "LocalNetworkOptions",
    "open_local_network",
    "serve_local_network",
]

logger = logging.getLogger("trio_sogni.localnet")

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


class LocalNetworkOptions(TypedDict, total=False):
    """The keyword form of :class:`LocalNetworkConfig` (same names, all optional), as
    :func:`open_local_network` and :func:`serve_local_network` accept it."""

    host: str
    port: int
    listen: bool
    api_key: str | None
    models: Sequence[str | ModelSpec]
    workers: int | Sequence[Worker]
    tokens_per_second: float | None
    capacity: int
    start_latency: float
    script: ScriptFunction | None
    rebind_grace: float
    account: Account | None
    price_per_million_tokens: Decimal | str | int | None
    pricing: Pricing | None
    authenticator: Callable[[Mapping[str, str]], Account | None] | None
    database: str | os.PathLike[str]
    testnet: bool
    clock: Callable[[], float]
    access_token_ttl: float
    refresh_token_ttl: float
    nonce_ttl: float
    signup_balance: Mapping[TokenType, Amount] | None
    meter_default_account: bool
    max_message_size: int
    max_body_size: int
    outbox_limit: int
    close_timeout: float
    shutdown_timeout: float
    record_limit: int
    max_jobs_per_socket: int
    record_bytes: int
    write_timeout: float
    idle_timeout: float
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_jobs_per_account: int
    message_timeout: float
    replay_bytes: int
    media_models: Sequence[MediaModelSpec] | None
    media_pricing: MediaPricing | None
    data_dir: str | os.PathLike[str] | None


@dataclass(frozen=True, kw_only=True)
class LocalNetworkConfig:
    """Everything :func:`open_local_network` needs to start a network, in one immutable value.

    Build one and reuse or vary it (``dataclasses.replace(config, port=8081)``); every field
    has a default, so ``LocalNetworkConfig()`` is the default network. The keyword arguments
    of :func:`open_local_network` are the same fields (:class:`LocalNetworkOptions`).

    Listening: ``host``, ``port`` (0: a free port), ``listen`` (``False``: in-memory
    connections only). Models and workers: ``models`` (names or :class:`ModelSpec`),
    ``workers`` (a count of :class:`SimulatedWorker` test doubles, each with ``capacity``,
    ``tokens_per_second`` and ``start_latency``, or a list of workers), ``script``,
    ``rebind_grace``. Accounts and billing: ``api_key``, ``account``, ``pricing`` or the flat
    ``price_per_million_tokens``, ``authenticator``, ``database``, ``testnet``, ``clock``,
    ``access_token_ttl``, ``refresh_token_ttl``, ``nonce_ttl``, ``signup_balance``,
    ``meter_default_account``. Limits: ``max_message_size``, ``max_body_size``,
    ``outbox_limit``, ``close_timeout``, ``shutdown_timeout``, ``record_limit``,
    ``max_jobs_per_socket``, ``record_bytes``, ``write_timeout``, ``idle_timeout``,
    ``header_timeout``, ``body_timeout``, ``max_connections``, ``max_jobs_per_account``,
    ``message_timeout``, ``replay_bytes``. Media projects: ``media_models``, ``media_pricing``.
    Their meaning is documented on :func:`open_local_network`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    listen: bool = True
    api_key: str | None = None
    models: Sequence[str | ModelSpec] = (DEFAULT_MODEL,)
    workers: int | Sequence[Worker] = 1
    tokens_per_second: float | None = None
    capacity: int = 1
    start_latency: float = 0.0
    script: ScriptFunction | None = None
    rebind_grace: float = 30.0
    account: Account | None = None
    price_per_million_tokens: Decimal | str | int | None = None
    pricing: Pricing | None = None
    authenticator: Callable[[Mapping[str, str]], Account | None] | None = None
    database: str | os.PathLike[str] = ":memory:"
    testnet: bool = False
    clock: Callable[[], float] = time.time
    access_token_ttl: float = 3600.0
    refresh_token_ttl: float = 30 * 24 * 3600.0
    nonce_ttl: float = 300.0
    signup_balance: Mapping[TokenType, Amount] | None = None
    meter_default_account: bool = False
    max_message_size: int = 16 * 1024 * 1024
    max_body_size: int = 16 * 1024 * 1024
    outbox_limit: int = 256
    close_timeout: float = 2.0
    shutdown_timeout: float = 5.0
    record_limit: int = 10_000
    max_jobs_per_socket: int = DEFAULT_MAX_JOBS_PER_SOCKET
    record_bytes: int = 4 * 1024 * 1024
    write_timeout: float = 30.0
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 512
    max_jobs_per_account: int = DEFAULT_MAX_JOBS_PER_ACCOUNT
    message_timeout: float = 30.0
    replay_bytes: int = DEFAULT_REPLAY_BYTES
    media_models: Sequence[MediaModelSpec] | None = None
    media_pricing: MediaPricing | None = None
    data_dir: str | os.PathLike[str] | None = None


def _merged_config(
    config: LocalNetworkConfig | None, options: LocalNetworkOptions
) -> LocalNetworkConfig:
    """``config`` (default: the default config) with ``options`` replacing its fields."""
    base = config if config is not None else LocalNetworkConfig()
    return dataclasses.replace(base, **options) if options else base


def _model_specs(models: Sequence[str | ModelSpec]) -> list[ModelSpec]:
    specs = [m if isinstance(m, ModelSpec) else ModelSpec(name=m) for m in models]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("model names must be unique")
    return specs


@asynccontextmanager
async def open_local_network(
    config: LocalNetworkConfig | None = None,
    /,
    **options: Unpack[LocalNetworkOptions],
) -> AsyncGenerator[LocalNetwork]:
    """Run a local Supernet (REST + WebSocket on one port) for the duration of the block.

    Configure it with one :class:`LocalNetworkConfig`, with keyword arguments (its fields), or
    both (the keywords replace the config's fields): ``open_local_network(config)``,
    ``open_local_network(port=8080, workers=4)``.

    Entering binds ``host:port`` (loopback by default; ``port=0`` picks a free port) and starts
    serving before the block runs, so ``net.rest_url`` / ``net.socket_url`` work at once. With
    ``listen=False`` nothing is bound and clients connect through
    :meth:`LocalNetwork.connect_in_memory` (handy under ``MockClock``).

    ``workers`` is a list of workers, or a count of :class:`SimulatedWorker` test doubles named
    ``localnet-worker-1``, ... that serve every model, each with ``capacity``,
    ``tokens_per_second`` and ``start_latency``. ``script`` chooses simulated output per request.
    ``api_key`` defaults to a fresh random key (``net.api_key``). ``rebind_grace`` is how many
    seconds a disconnected app's jobs keep running, waiting for a socket with the same ``appId``;
    their frames are held meanwhile, at most ``replay_bytes`` per job (then the job waits), and a
    client that resumes jobs (``jobResume=1``, docs/connections.md) gets exactly the frames it
    lacks.
    ``pricing`` is the price table (:class:`Pricing`: per-model USD per million input and output
    tokens, a default for other models, the exchange rates); it prices the cost estimate
    endpoint, each job's reservation and its settled cost. ``price_per_million_tokens`` (USD)
    is a shortcut for ``pricing=Pricing(usd_per_million_tokens=...)``, a flat price.
    ``authenticator`` replaces the credential checks (see :meth:`LocalNetwork.authenticate`).

    Accounts live in an SQLite ``database`` (``":memory:"``, the default, or a file that keeps
    accounts, API keys, balances and sessions across runs). ``account`` (default
    :class:`Account`) is stored as the default account and ``api_key`` (default: a fresh random
    key, ``net.api_key``) is added to its keys; an existing default account keeps its stored
    balances. Wallet login and signup (``/v1/account/nonce``, ``/login``, ``/create``) check
    EIP-712 signatures on the mainnet domain, or the testnet one with ``testnet=True``. Tokens:
    access tokens live ``access_token_ttl`` seconds, refresh tokens ``refresh_token_ttl``,
    nonces ``nonce_ttl``, all measured with ``clock`` (wall-clock seconds; inject one to move
    time in tests). ``signup_balance`` (``{token type: amount}``, default 100 sogni and 0 spark)
    funds accounts created by signup or :meth:`LocalNetwork.add_account`. Jobs are billed to
    their socket's account: refused with ``insufficient_balance`` when it cannot cover the
    estimate, charged on completion, then ``balanceUpdate`` (see :meth:`LocalNetwork.fund`). The
    default account is not metered (as before accounts existed: never refused, charged or sent
    ``balanceUpdate``) unless ``meter_default_account``.

    Hostile clients: one socket (one ``appId`` of one account) may have at most
    ``max_jobs_per_socket`` live jobs (queued, running or detached; default 1,000), and one
    account at most ``max_jobs_per_account`` over all its sockets and ``appId`` values (default
    4,000); more are refused with ``llmJobError`` ``too_many_jobs`` (``error_code`` ``"429"``).
    Queued jobs are served fairly between accounts (see docs/localnet.md, "Scheduling").

    Hostile peers are bounded (docs/localnet.md, "Limits"): a connection waits at most
    ``idle_timeout`` seconds for the first byte of a request (new or kept-alive),
    ``header_timeout`` from there to the end of the request head and ``body_timeout`` for the
    whole body (then ``408`` and close); every write (a response, a WebSocket frame batch) must
    progress by 64 KiB every ``write_timeout`` seconds, else the connection is aborted (a
    WebSocket that stopped reading has its jobs aborted and their billing holds released); at
    most ``max_connections`` connections are served at once (the next ones get ``503`` with
    ``Retry-After: 1`` and are closed). A WebSocket message (all its fragments) must arrive
    within ``message_timeout`` seconds of its first byte, else the socket is closed with 1008
    and treated as any dropped socket (its jobs detach for ``rebind_grace``). The introspection logs keep at most ``record_limit``
    entries and ``record_bytes`` accounted bytes each, as summaries.

    Media projects (``jobRequest``): ``media_models`` is the media catalog (``None``:
    :data:`DEFAULT_MEDIA_MODELS`; served at ``/api/v1/models/list`` and ``/api/v2/models/tiers``,
    announced to sockets in ``swarmModels`` once media workers serve them); ``media_pricing``
    (default :class:`MediaPricing`) prices each render, converted with ``pricing``'s rates. A
    project holds all its renders' prices on admission and settles one per finished render.
    Live projects per app are capped at ``max_jobs_per_socket`` too. Their results (and
    uploads) are files under ``<data_dir>/media``, served through signed, expiring URLs; with no
    ``data_dir`` a temporary directory, removed when the network stops (a given ``data_dir`` is
    kept).

    Leaving the block (a checkpoint; shielded, and bounded by ``shutdown_timeout`` seconds):
    every live job gets ``llmJobError server_restarting``, every socket is closed with 1001,
    then all of the network's tasks are cancelled. Exceptions from the block propagate.
    """
    c = _merged_config(config, options)
    if c.listen and c.host not in LOOPBACK_HOSTS:
        logger.warning("localnet: listening on non-loopback host %s", c.host)
    pricing = c.pricing
    if pricing is None:
        pricing = (
            Pricing(usd_per_million_tokens=Decimal(c.price_per_million_tokens))
            if c.price_per_million_tokens is not None
            else Pricing()
        )
    account = c.account if c.account is not None else Account()
    api_key = c.api_key if c.api_key is not None else new_api_key()
    specs = _model_specs(c.models)
    store = Store(c.database)
    try:
        accounts = Accounts(
            store,
            testnet=c.testnet,
            clock=c.clock,
            access_token_ttl=c.access_token_ttl,
            refresh_token_ttl=c.refresh_token_ttl,
            nonce_ttl=c.nonce_ttl,
            signup_balance=c.signup_balance,
        )
        accounts.ensure_account(account)
        accounts.create_api_key(account.id, api_key)
        if not c.meter_default_account:
            accounts.ledger.unmetered.add(account.id)
    except BaseException:
        store.close()
        raise
    try:
        async with _serve_network(
            LocalNetwork(
                api_key=api_key,
                models=specs,
                account=account,
                accounts=accounts,
                pricing=pricing,
                script=c.script,
                rebind_grace=c.rebind_grace,
                authenticator=c.authenticator,
                max_message_size=c.max_message_size,
                limits=ServerLimits(
                    max_body_size=c.max_body_size,
                    idle_timeout=c.idle_timeout,
                    header_timeout=c.header_timeout,
                    body_timeout=c.body_timeout,
                    write_timeout=c.write_timeout,
                    max_connections=c.max_connections,
                    message_timeout=c.message_timeout,
                ),
                outbox_limit=c.outbox_limit,
                close_timeout=c.close_timeout,
                record_limit=c.record_limit,
                max_jobs_per_socket=c.max_jobs_per_socket,
                record_bytes=c.record_bytes,
                max_jobs_per_account=c.max_jobs_per_account,
                replay_bytes=c.replay_bytes,
                media_models=(
                    c.media_models if c.media_models is not None else DEFAULT_MEDIA_MODELS
                ),
                media_pricing=c.media_pricing,
                data_dir=c.data_dir,
            ),
            host=c.host,
            port=c.port,
            listen=c.listen,
            workers=c.workers,
            capacity=c.capacity,
            tokens_per_second=c.tokens_per_second,
            start_latency=c.start_latency,
            shutdown_timeout=c.shutdown_timeout,
        ) as net:
            yield net
    finally:
        store.close()


@asynccontextmanager
async def _serve_network(
    net: LocalNetwork,
    *,
    host: str,
    port: int,
    listen: bool,
    workers: int | Sequence[Worker],
    capacity: int,
    tokens_per_second: float | None,
    start_latency: float,
    shutdown_timeout: float,
) -> AsyncGenerator[LocalNetwork]:
    """Bind (when ``listen``), register the workers and run ``net`` for the block."""
    worker_list: list[Worker] = (
        [
            SimulatedWorker(
                f"localnet-worker-{i + 1}",
                capacity=capacity,
                tokens_per_second=tokens_per_second,
                start_latency=start_latency,
            )
            for i in range(workers)
        ]
        if isinstance(workers, int)
        else list(workers)
    )
    listeners: list[trio.SocketListener] = []
    if listen:
        opened = await trio.open_tcp_listeners(port, host=host)
        first_port: int = opened[0].socket.getsockname()[1]
        for listener in opened:
            if listener.socket.getsockname()[1] == first_port:
                listeners.append(listener)
            else:  # e.g. "localhost" with port 0: keep one port only
                await trio.aclose_forcefully(listener)
        net.set_address(host, first_port)
    async with net._lifetime(listeners, worker_list, shutdown_timeout):  # pyright: ignore[reportPrivateUsage]
        yield net


async def serve_local_network(
    config: LocalNetworkConfig | None = None,
    /,
    *,
    task_status: trio.TaskStatus[LocalNetwork] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[LocalNetworkOptions],
) -> None:
    """Run a local network until cancelled: ``net = await nursery.start(serve_local_network)``.

    Takes the config and keyword arguments of :func:`open_local_network` (use
    ``functools.partial`` with ``nursery.start``) and reports the running :class:`LocalNetwork` through ``task_status`` once
    it accepts connections. Cancelling it shuts the network down as leaving
    :func:`open_local_network` does.
    """
    async with open_local_network(config, **options) as net:
        task_status.started(net)
        await trio.sleep_forever()
