"""trio_sogni: a Trio-native, structured-concurrency client for the Sogni Supernet chat API.

Start with `open_sogni_client`::

    async with trio_sogni.open_sogni_client(api_key=..., socket_endpoint=..., rest_endpoint=...) as sogni:
        async with await sogni.chat.completions.create(model=m, messages=msgs, stream=True) as s:
            async for chunk in s:
                print(chunk.content or "", end="")

`trio_sogni.localnet` runs a local Supernet (simulated test-double workers) to develop and test
against; `trio_sogni.protocol` holds the wire structs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._auth import SessionTokens as SessionTokens, derive_wallet as derive_wallet
    from ._chat import (
        ChatAPI as ChatAPI,
        ChatCompletions as ChatCompletions,
        ChatStatistics as ChatStatistics,
        StreamScope as StreamScope,
    )
    from ._client import (
        AccountAPI as AccountAPI,
        AccountBalance as AccountBalance,
        AccountInfo as AccountInfo,
        SogniClient as SogniClient,
        open_sogni_client as open_sogni_client,
    )
    from ._eip712 import EIP712Helper as EIP712Helper
    from ._errors import (
        RETRYABLE_CHAT_ERROR_TYPES as RETRYABLE_CHAT_ERROR_TYPES,
        SUBSCRIPTION_ERROR_CODES as SUBSCRIPTION_ERROR_CODES,
        APIError as APIError,
        APIStatusError as APIStatusError,
        AuthenticationError as AuthenticationError,
        ChatJobError as ChatJobError,
        ClientClosedError as ClientClosedError,
        ConnectError as ConnectError,
        ConnectionLost as ConnectionLost,
        InvalidRequestError as InvalidRequestError,
        ProjectError as ProjectError,
        ProtocolError as ProtocolError,
        RunStateError as RunStateError,
        SogniError as SogniError,
        ToolLoopError as ToolLoopError,
        TransportError as TransportError,
    )
    from ._events import (
        ChatEvent as ChatEvent,
        CompletedEvent as CompletedEvent,
        ErrorEvent as ErrorEvent,
        EventKind as EventKind,
        EventSubscription as EventSubscription,
        JobStateEvent as JobStateEvent,
        ModelsUpdatedEvent as ModelsUpdatedEvent,
        ProjectEvent as ProjectEvent,
        ProjectEventKind as ProjectEventKind,
        RenderEvent as RenderEvent,
        TokenEvent as TokenEvent,
    )
    from ._hosted import (
        ChatHosted as ChatHosted,
        HostedChatCompletion as HostedChatCompletion,
        HostedChoice as HostedChoice,
        HostedMessage as HostedMessage,
        HostedToolResult as HostedToolResult,
        LLMCostEstimate as LLMCostEstimate,
        estimate_input_tokens as estimate_input_tokens,
    )
    from ._media._inputs import (
        MediaInput as MediaInput,
    )
    from ._media._models import (
        MediaCatalog as MediaCatalog,
        MediaModel as MediaModel,
        MediaModelCatalog as MediaModelCatalog,
        ModelOptions as ModelOptions,
        ModelTier as ModelTier,
        TierOption as TierOption,
    )
    from ._media._request import (
        ProjectOptions as ProjectOptions,
    )
    from ._media._results import (
        MediaResult as MediaResult,
    )
    from ._projects import (
        Completed as Completed,
        Failed as Failed,
        Processing as Processing,
        Project as Project,
        ProjectParams as ProjectParams,
        ProjectProgress as ProjectProgress,
        ProjectProgressStatistics as ProjectProgressStatistics,
        ProjectsAPI as ProjectsAPI,
        ProjectsStatistics as ProjectsStatistics,
        ProjectUpdate as ProjectUpdate,
        Queued as Queued,
        RenderCompleted as RenderCompleted,
        RenderFailed as RenderFailed,
    )
    from ._request import (
        CompletionParams as CompletionParams,
        MessageInput as MessageInput,
        validate_messages as validate_messages,
    )
    from ._runs import (
        ChatRunEvent as ChatRunEvent,
        ChatRunRecord as ChatRunRecord,
        ChatRuns as ChatRuns,
        RunEventStream as RunEventStream,
    )
    from ._stream import (
        ChatCompletionResult as ChatCompletionResult,
        ChatStream as ChatStream,
        ChatStreamStatistics as ChatStreamStatistics,
    )
    from ._tools import (
        ChatTools as ChatTools,
        MediaContext as MediaContext,
        MediaItem as MediaItem,
        OnToolCall as OnToolCall,
        OnToolProgress as OnToolProgress,
        ToolProgress as ToolProgress,
        ToolResult as ToolResult,
        ToolRound as ToolRound,
        hosted_tool_names as hosted_tool_names,
        is_sogni_tool_call as is_sogni_tool_call,
        media_tool_definitions as media_tool_definitions,
        parse_tool_call_arguments as parse_tool_call_arguments,
    )
    from ._transport import SocketOptions as SocketOptions
    from ._version import __version__ as __version__
    from ._vision import image_part as image_part
    from .protocol import ChatCompletionChunk as ChatCompletionChunk, ChatMessage as ChatMessage

# Public names are imported lazily, so that importing a layer (``trio_sogni.protocol``,
# ``trio_sogni.localnet``) loads that layer and nothing else. Type checkers see the imports above.
_LAZY: dict[str, str] = {
    "ChatAPI": "._chat",
    "ChatCompletions": "._chat",
    "SessionTokens": "._auth",
    "derive_wallet": "._auth",
    "AccountBalance": "._client",
    "EIP712Helper": "._eip712",
    "ChatHosted": "._hosted",
    "HostedChatCompletion": "._hosted",
    "HostedChoice": "._hosted",
    "HostedMessage": "._hosted",
    "HostedToolResult": "._hosted",
    "LLMCostEstimate": "._hosted",
    "estimate_input_tokens": "._hosted",
    "ChatRunEvent": "._runs",
    "ChatRunRecord": "._runs",
    "ChatRuns": "._runs",
    "RunEventStream": "._runs",
    "RunStateError": "._errors",
    "StreamScope": "._chat",
    "ChatStatistics": "._chat",
    "AccountAPI": "._client",
    "AccountInfo": "._client",
    "SogniClient": "._client",
    "open_sogni_client": "._client",
    "RETRYABLE_CHAT_ERROR_TYPES": "._errors",
    "SUBSCRIPTION_ERROR_CODES": "._errors",
    "APIError": "._errors",
    "APIStatusError": "._errors",
    "AuthenticationError": "._errors",
    "ChatJobError": "._errors",
    "ClientClosedError": "._errors",
    "ConnectError": "._errors",
    "ConnectionLost": "._errors",
    "InvalidRequestError": "._errors",
    "ProjectError": "._errors",
    "ProtocolError": "._errors",
    "SogniError": "._errors",
    "ToolLoopError": "._errors",
    "TransportError": "._errors",
    "ChatEvent": "._events",
    "CompletedEvent": "._events",
    "ErrorEvent": "._events",
    "EventKind": "._events",
    "EventSubscription": "._events",
    "JobStateEvent": "._events",
    "ModelsUpdatedEvent": "._events",
    "TokenEvent": "._events",
    "CompletionParams": "._request",
    "MessageInput": "._request",
    "validate_messages": "._request",
    "ChatCompletionResult": "._stream",
    "ChatStream": "._stream",
    "ChatStreamStatistics": "._stream",
    "ChatTools": "._tools",
    "MediaContext": "._tools",
    "MediaItem": "._tools",
    "OnToolCall": "._tools",
    "OnToolProgress": "._tools",
    "ToolProgress": "._tools",
    "ToolResult": "._tools",
    "ToolRound": "._tools",
    "hosted_tool_names": "._tools",
    "is_sogni_tool_call": "._tools",
    "parse_tool_call_arguments": "._tools",
    "media_tool_definitions": "._tools",
    "SocketOptions": "._transport",
    "Completed": "._projects",
    "Failed": "._projects",
    "Processing": "._projects",
    "Project": "._projects",
    "ProjectParams": "._projects",
    "ProjectProgress": "._projects",
    "ProjectProgressStatistics": "._projects",
    "ProjectUpdate": "._projects",
    "ProjectsAPI": "._projects",
    "ProjectsStatistics": "._projects",
    "Queued": "._projects",
    "RenderCompleted": "._projects",
    "RenderFailed": "._projects",
    "ProjectEvent": "._events",
    "ProjectEventKind": "._events",
    "RenderEvent": "._events",
    "MediaResult": "._media._results",
    "ProjectOptions": "._media._request",
    "MediaInput": "._media._inputs",
    "MediaCatalog": "._media._models",
    "MediaModel": "._media._models",
    "MediaModelCatalog": "._media._models",
    "ModelOptions": "._media._models",
    "ModelTier": "._media._models",
    "TierOption": "._media._models",
    "__version__": "._version",
    "image_part": "._vision",
    "ChatCompletionChunk": ".protocol",
    "ChatMessage": ".protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_sogni' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "RETRYABLE_CHAT_ERROR_TYPES",
    "SUBSCRIPTION_ERROR_CODES",
    "APIError",
    "APIStatusError",
    "AccountAPI",
    "AccountBalance",
    "AccountInfo",
    "AuthenticationError",
    "ChatAPI",
    "ChatCompletionChunk",
    "ChatCompletionResult",
    "ChatCompletions",
    "ChatEvent",
    "ChatHosted",
    "ChatJobError",
    "ChatMessage",
    "ChatRunEvent",
    "ChatRunRecord",
    "ChatRuns",
    "ChatStatistics",
    "ChatStream",
    "ChatStreamStatistics",
    "ChatTools",
    "ClientClosedError",
    "Completed",
    "CompletedEvent",
    "CompletionParams",
    "ConnectError",
    "ConnectionLost",
    "EIP712Helper",
    "ErrorEvent",
    "EventKind",
    "EventSubscription",
    "Failed",
    "HostedChatCompletion",
    "HostedChoice",
    "HostedMessage",
    "HostedToolResult",
    "InvalidRequestError",
    "JobStateEvent",
    "LLMCostEstimate",
    "MediaCatalog",
    "MediaContext",
    "MediaInput",
    "MediaItem",
    "MediaModel",
    "MediaModelCatalog",
    "MediaResult",
    "MessageInput",
    "ModelOptions",
    "ModelTier",
    "ModelsUpdatedEvent",
    "OnToolCall",
    "OnToolProgress",
    "Processing",
    "Project",
    "ProjectError",
    "ProjectEvent",
    "ProjectEventKind",
    "ProjectOptions",
    "ProjectParams",
    "ProjectProgress",
    "ProjectProgressStatistics",
    "ProjectUpdate",
    "ProjectsAPI",
    "ProjectsStatistics",
    "ProtocolError",
    "Queued",
    "RenderCompleted",
    "RenderEvent",
    "RenderFailed",
    "RunEventStream",
    "RunStateError",
    "SessionTokens",
    "SocketOptions",
    "SogniClient",
    "SogniError",
    "StreamScope",
    "TierOption",
    "TokenEvent",
    "ToolLoopError",
    "ToolProgress",
    "ToolResult",
    "ToolRound",
    "TransportError",
    "__version__",
    "derive_wallet",
    "estimate_input_tokens",
    "hosted_tool_names",
    "image_part",
    "is_sogni_tool_call",
    "media_tool_definitions",
    "open_sogni_client",
    "parse_tool_call_arguments",
    "validate_messages",
]
