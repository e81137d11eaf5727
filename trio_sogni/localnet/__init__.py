"""A local Sogni Supernet for tests, benchmarks and offline development.

One Trio server speaks the Supernet's REST API and its WebSocket protocol on a single port::

    async with trio_sogni.localnet.open_local_network() as net:
        ...  # point any Sogni client at net.rest_url / net.socket_url with net.api_key

Configure it with keyword arguments or one frozen :class:`LocalNetworkConfig`
(``open_local_network(LocalNetworkConfig(port=8080, workers=4))``).

Jobs are run by workers. The bundled :class:`SimulatedWorker` is a **test double**: it produces
scripted text (by default ``"Simulated reply to: <last user message>"``, one word per chunk), it
does not run a model. :class:`LlamaCppWorker` (llama.cpp on a GGUF file, with the ``local``
extra) and :class:`OpenAIBridgeWorker` (any OpenAI-compatible server) run REAL inference.
:class:`FirehoseWorker` is another test double, a load source for benchmarks:
it streams pre-encoded chunks as fast as the socket takes them. A *script* (``script=`` on the network or on a worker: a function from the
:class:`~trio_sogni.protocol.LLMJobRequest` to a list of steps, or ``None`` for the default reply)
chooses other output. Steps:

* :class:`Text` — text split into word-sized deltas; :class:`Delta` — exactly one chunk;
* :class:`ToolCall` — a complete tool call spread over several deltas (finish ``tool_calls``);
* :class:`Fail` — ``llmJobError`` at that point (any tag, message, code, subscription fields);
* :class:`Stall` — never finish until aborted; :class:`DropConnection` — cut the client's TCP
  connection without a close frame; :class:`Pause` — sleep; :class:`Finish` — set the finish
  reason.

:func:`expected_output` predicts exactly what a client receives for a request and a script.
Network-level faults: :meth:`LocalNetwork.send_raw_to_clients`,
:meth:`LocalNetwork.drop_all_connections`, :meth:`LocalNetwork.close_all_connections`.

Accounts (an SQLite store, ``database=``): API keys, wallet login and signup with EIP-712
signatures and nonces, JWT sessions with refresh rotation, balances, and billing of jobs
(``insufficient_balance``, ``balanceUpdate``); see :meth:`LocalNetwork.add_account`,
:meth:`LocalNetwork.fund`, :meth:`LocalNetwork.create_api_key`.

Media projects (image, video, audio; the ``jobRequest`` protocol of the official SDKs'
``projects.create``): a catalog of :class:`MediaModelSpec` (``media_models=``, default
:data:`DEFAULT_MEDIA_MODELS`, real Sogni model ids) with their :class:`MediaTier` option ranges,
priced per render by :class:`MediaPricing`; renders queue in the chat jobs' scheduler. Media
workers join with :meth:`LocalNetwork.add_media_worker`: the :class:`SimulatedMediaWorker` is a
**test double** (it draws real, decodable media with Pillow and PyAV, the ``media`` extra; it runs
no model), :class:`OpenAIImagesBridgeWorker` generates REAL images through any OpenAI-compatible
``/v1/images`` API.

Durable chat runs (``/v1/chat/runs``, :attr:`LocalNetwork.runs`, a :class:`RunManager`): stored
in the same database, executed server-side (LLM rounds as jobs, hosted tool TEST DOUBLES, cost
confirmation), streamed as SSE with ``Last-Event-ID`` replay, resumed after a restart.

This package depends only on trio, h11, wsproto, msgspec, the stdlib (sqlite3),
:mod:`trio_sogni.protocol` and ``trio_sogni._groups`` (an exception-group helper), plus
eth-account for wallet signatures (imported on first use), never on the client, so the two
implementations check each other. Its
private layer packages (``_server`` at the bottom, then ``_workers`` and ``_accounts``, ``_jobs``,
``_hosted`` and ``_runs``) are described in docs/localnet.md, "Layout".
"""

from typing import TYPE_CHECKING, Any

from ._accounts._accounts import TokenPair as TokenPair
from ._accounts._ledger import MAX_AMOUNT as MAX_AMOUNT
from ._accounts._store import (
    AccountRecord as AccountRecord,
    DuplicateAccount as DuplicateAccount,
    TokenType as TokenType,
)
from ._accounts._wallets import (
    PasswordWallet as PasswordWallet,
    wallet_from_password as wallet_from_password,
)
from ._config import (
    DEFAULT_MODEL as DEFAULT_MODEL,
    Account as Account,
    ModelPrice as ModelPrice,
    ModelSpec as ModelSpec,
    Pricing as Pricing,
    Quote as Quote,
)
from ._hosted._prices import load_prices as load_prices, parse_prices as parse_prices
from ._jobs._records import JobRecord as JobRecord
from ._jobs._scheduler import JobOutcome as JobOutcome
from ._media._bridge import OpenAIImagesBridgeWorker as OpenAIImagesBridgeWorker
from ._media._catalog import (
    DEFAULT_MEDIA_MODELS as DEFAULT_MEDIA_MODELS,
    MediaModelSpec as MediaModelSpec,
    MediaPricing as MediaPricing,
    MediaTier as MediaTier,
    ParamChoice as ParamChoice,
    ParamRange as ParamRange,
    RenderQuote as RenderQuote,
)
from ._media._render import (
    MediaWorker as MediaWorker,
    SimulatedMediaWorker as SimulatedMediaWorker,
)
from ._network import LocalNetwork as LocalNetwork
from ._open import (
    LocalNetworkConfig as LocalNetworkConfig,
    LocalNetworkOptions as LocalNetworkOptions,
    open_local_network as open_local_network,
    serve_local_network as serve_local_network,
)
from ._records import (
    HandshakeRecord as HandshakeRecord,
    HTTPRequestRecord as HTTPRequestRecord,
    NetworkStatistics as NetworkStatistics,
    RejectedFrame as RejectedFrame,
)
from ._runs._manager import RunManager as RunManager
from ._runs._state import RunError as RunError
from ._runs._tools import HostedToolDouble as HostedToolDouble, ToolFailure as ToolFailure
from ._server import (
    HTTPRequest as HTTPRequest,
    HTTPResponse as HTTPResponse,
    RecordLog as RecordLog,
    Router as Router,
)
from ._workers._base import (
    JobContext as JobContext,
    PreparedChunk as PreparedChunk,
    Worker as Worker,
)
from ._workers._doubles import (
    DEFAULT_FIREHOSE_WORDS as DEFAULT_FIREHOSE_WORDS,
    FirehoseWorker as FirehoseWorker,
    SimulatedWorker as SimulatedWorker,
    firehose_text as firehose_text,
)
from ._workers._llama import (
    DEFAULT_LLAMA_MODEL as DEFAULT_LLAMA_MODEL,
    LOCAL_EXTRA_HINT as LOCAL_EXTRA_HINT,
    LlamaCppWorker as LlamaCppWorker,
    LlamaWorkerStatistics as LlamaWorkerStatistics,
)
from ._workers._script import (
    Delta as Delta,
    DropConnection as DropConnection,
    ExpectedOutput as ExpectedOutput,
    Fail as Fail,
    Finish as Finish,
    Pause as Pause,
    Script as Script,
    ScriptFunction as ScriptFunction,
    Stall as Stall,
    Step as Step,
    Text as Text,
    ToolCall as ToolCall,
    count_prompt_tokens as count_prompt_tokens,
    default_reply_text as default_reply_text,
    default_script as default_script,
    expected_output as expected_output,
    split_deltas as split_deltas,
)
from ._workers._scriptfile import (
    MAX_SCRIPT_FILE_BYTES as MAX_SCRIPT_FILE_BYTES,
    ScriptFileError as ScriptFileError,
    load_script as load_script,
    parse_script as parse_script,
)

if TYPE_CHECKING:
    from ._workers._bridge import (
        OpenAIBridgeWorker as OpenAIBridgeWorker,
        UpstreamError as UpstreamError,
    )


def __getattr__(name: str) -> Any:
    # The bridge worker needs httpx; importing trio_sogni.localnet must not load it.
    if name in ("OpenAIBridgeWorker", "UpstreamError"):
        from ._workers import _bridge

        return getattr(_bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_FIREHOSE_WORDS",
    "DEFAULT_LLAMA_MODEL",
    "DEFAULT_MEDIA_MODELS",
    "DEFAULT_MODEL",
    "LOCAL_EXTRA_HINT",
    "MAX_AMOUNT",
    "MAX_SCRIPT_FILE_BYTES",
    "Account",
    "AccountRecord",
    "Delta",
    "DropConnection",
    "DuplicateAccount",
    "ExpectedOutput",
    "Fail",
    "Finish",
    "FirehoseWorker",
    "HTTPRequest",
    "HTTPRequestRecord",
    "HTTPResponse",
    "HandshakeRecord",
    "HostedToolDouble",
    "JobContext",
    "JobOutcome",
    "JobRecord",
    "LlamaCppWorker",
    "LlamaWorkerStatistics",
    "LocalNetwork",
    "LocalNetworkConfig",
    "LocalNetworkOptions",
    "MediaModelSpec",
    "MediaPricing",
    "MediaTier",
    "MediaWorker",
    "ModelPrice",
    "ModelSpec",
    "NetworkStatistics",
    "OpenAIBridgeWorker",
    "OpenAIImagesBridgeWorker",
    "ParamChoice",
    "ParamRange",
    "PasswordWallet",
    "Pause",
    "PreparedChunk",
    "Pricing",
    "Quote",
    "RecordLog",
    "RejectedFrame",
    "RenderQuote",
    "Router",
    "RunError",
    "RunManager",
    "Script",
    "ScriptFileError",
    "ScriptFunction",
    "SimulatedMediaWorker",
    "SimulatedWorker",
    "Stall",
    "Step",
    "Text",
    "TokenPair",
    "TokenType",
    "ToolCall",
    "ToolFailure",
    "UpstreamError",
    "Worker",
    "count_prompt_tokens",
    "default_reply_text",
    "default_script",
    "expected_output",
    "firehose_text",
    "load_prices",
    "load_script",
    "open_local_network",
    "parse_prices",
    "parse_script",
    "serve_local_network",
    "split_deltas",
    "wallet_from_password",
]
