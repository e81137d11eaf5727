"""The chat-related Sogni socket messages, in both directions (protocol.md §1.7, §2).

Each struct is one message *payload*; its wire name is the class variable ``message_type`` and the
envelope (``{"type": ..., "data": base64(JSON)}``) is added by :mod:`trio_sogni.protocol._codec`.
Attributes are snake_case; wire names are kept with ``msgspec.field(name=...)``.

Server-to-client payloads ignore unknown fields and give every field a default, so servers can add
fields freely. Client-to-server payloads forbid unknown fields: localnet decodes them strictly to
catch client bugs.

The frozen payloads a client receives by the thousand (``jobTokens``, ``jobState``,
``llmJobResult`` and their parts) are declared ``gc=False``: decoded JSON cannot form reference
cycles and frozen structs cannot be made to, so the cyclic garbage collector need not track them
(fewer collections on the token path).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType, field

from ._media import ProjectSnapshot
from ._openai import (
    ChatMessage,
    JSONObject,
    ResponseFormat,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
)

__all__ = [
    "MAX_RESUME_ENTRIES",
    "SAMPLING_FIELDS",
    "AbortJob",
    "Authenticated",
    "Balance",
    "BalanceUpdate",
    "ChangeNetwork",
    "ChatCompletionChunk",
    "JobError",
    "JobState",
    "JobsResumed",
    "LLMJobCost",
    "LLMJobError",
    "LLMJobRequest",
    "LLMJobResult",
    "LLMModelInfo",
    "LLMParamConstraint",
    "LLMSamplingDefaults",
    "ResumeEntry",
    "ResumeJobs",
    "ResumeStatus",
    "ResumedJob",
    "SetSocketEventSubscriptions",
    "SocketEventSubscriptionsUpdated",
    "SwarmLLMModels",
]

Number = int | float
"""JSON numbers: msgspec decodes an integer literal as ``int`` and anything else as ``float``."""

FiniteNumber = int | Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""A JSON number that is not NaN or infinite (msgspec decodes ``1e400`` as ``inf``): the sampling
fields of :class:`LLMJobRequest` are decoded and converted as this, so a server refuses them
(the constraint is checked on decode and :func:`msgspec.convert`, not on construction)."""


# --- client -> server -----------------------------------------------------------------------------


SAMPLING_FIELDS: Final = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop",
)
"""The sampling fields of ``llmJobRequest`` (attribute and wire names are the same)."""


class LLMJobRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``llmJobRequest``: start one LLM job (protocol.md §2.3). Unset fields are not sent."""

    message_type: ClassVar[str] = "llmJobRequest"

    job_id: str = field(name="jobID")
    model: str
    messages: list[ChatMessage]
    type: Literal["llm"] = "llm"
    stream: bool | UnsetType = UNSET
    app_source: str | UnsetType = field(default=UNSET, name="appSource")
    max_tokens: int | UnsetType = UNSET
    temperature: FiniteNumber | UnsetType = UNSET
    top_p: FiniteNumber | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    min_p: FiniteNumber | UnsetType = UNSET
    repetition_penalty: FiniteNumber | UnsetType = UNSET
    frequency_penalty: FiniteNumber | UnsetType = UNSET
    presence_penalty: FiniteNumber | UnsetType = UNSET
    stop: str | list[str] | UnsetType = UNSET
    token_type: Literal["sogni", "spark"] | UnsetType = field(default=UNSET, name="tokenType")
    safe_content_filter: bool | UnsetType = field(default=UNSET, name="safeContentFilter")
    billing_mode: Literal["auto", "subscription", "tokens"] | UnsetType = field(
        default=UNSET, name="billingMode"
    )
    tools: list[ToolDefinition] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    sogni_tools: bool | str | UnsetType = UNSET
    sogni_tool_execution: bool | UnsetType = UNSET
    task_profile: Literal["general", "coding", "reasoning"] | UnsetType = field(
        default=UNSET, name="taskProfile"
    )
    chat_template_kwargs: JSONObject | UnsetType = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    # Workload attribution (protocol.md §2.3, §3.9).
    workload_kind: str | UnsetType = field(default=UNSET, name="workloadKind")
    agent_framework: str | UnsetType = field(default=UNSET, name="agentFramework")
    agent_framework_version: str | UnsetType = field(default=UNSET, name="agentFrameworkVersion")
    agent_surface: str | UnsetType = field(default=UNSET, name="agentSurface")
    agent_surface_version: str | UnsetType = field(default=UNSET, name="agentSurfaceVersion")
    execution_mode: str | UnsetType = field(default=UNSET, name="executionMode")
    operation_scope: str | UnsetType = field(default=UNSET, name="operationScope")
    operation_id: str | UnsetType = field(default=UNSET, name="operationId")
    root_operation_id: str | UnsetType = field(default=UNSET, name="rootOperationId")
    parent_operation_id: str | UnsetType = field(default=UNSET, name="parentOperationId")


class AbortJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``jobError`` sent by a client: cancel a job (the official SDKs' ``artistCanceled`` frame).

    localnet honours it for LLM jobs: the worker stops and the job's slot is freed.
    """

    message_type: ClassVar[str] = "jobError"

    job_id: str = field(name="jobID")
    error: str = "artistCanceled"
    error_message: str = "artistCanceled"
    is_from_worker: bool = field(default=False, name="isFromWorker")


class ChangeNetwork(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``changeNetwork`` in either direction. On the wire the client sends a bare JSON string and
    the server answers ``{"network": ...}``; the codec handles both forms."""

    message_type: ClassVar[str] = "changeNetwork"

    network: Literal["fast", "relaxed"]


class SetSocketEventSubscriptions(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """``setSocketEventSubscriptions``: change which optional server events this socket receives."""

    message_type: ClassVar[str] = "setSocketEventSubscriptions"

    subscriptions: dict[str, bool] | None = None
    subscribe: str | list[str] | None = None
    unsubscribe: str | list[str] | None = None
    reset: bool | None = None
    event: str | None = None
    enabled: bool | None = None


MAX_RESUME_ENTRIES: Final = 10_000
"""A `ResumeJobs` frame lists at most this many jobs (more is a malformed frame)."""


class ResumeEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One job in `ResumeJobs`: its id and how many of its frames the client already has."""

    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = field(name="jobID")
    received: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    """The number of this job's server frames (``jobState``, ``jobTokens``, the final message...)
    the client received before its connection dropped; the server resumes after them."""


class ResumeJobs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``resumeJobs`` — **a localnet extension**, not part of the Sogni protocol: sent by a client
    right after ``authenticated`` (when that frame says ``jobResume: true``) to take back the jobs
    its previous connection was running, each from the first frame it did not receive. Jobs of the
    app that are not listed are ended by the server (refunded). See ``docs/connections.md``."""

    message_type: ClassVar[str] = "resumeJobs"

    jobs: Annotated[list[ResumeEntry], msgspec.Meta(max_length=MAX_RESUME_ENTRIES)] = field(
        default_factory=list[ResumeEntry]
    )


# --- server -> client -----------------------------------------------------------------------------


class Balance(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One token balance. Values are decimal strings on the real network (numbers are accepted)."""

    settled: str | Number = "0"
    credit: str | Number = "0"
    debit: str | Number = "0"
    net: str | Number = "0"
    relaxed_unclaimed: str | Number | None = field(default=None, name="relaxedUnclaimed")
    fast_unclaimed: str | Number | None = field(default=None, name="fastUnclaimed")
    premium_credit: str | Number | None = field(default=None, name="premiumCredit")


class Authenticated(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``authenticated``: the server accepted this socket. No work may be sent before it arrives."""

    message_type: ClassVar[str] = "authenticated"

    id: str | None = None
    client_type: str | None = field(default=None, name="clientType")
    username: str | None = None
    address: str | None = None
    active_llm_job_ids: list[str] = field(default_factory=list[str], name="activeLLMJobIDs")
    active_projects: list[ProjectSnapshot] | None = field(default=None, name="activeProjects")
    """The app's media projects still queued or rendering (media-protocol.md §4)."""
    unclaimed_completed_projects: list[ProjectSnapshot] | None = field(
        default=None, name="unclaimedCompletedProjects"
    )
    """The app's media projects that ended while it had no socket and were not claimed since."""
    subscription_entitlement: JSONObject | None = field(
        default=None, name="subscriptionEntitlement"
    )
    tokens: dict[str, Balance] | None = None
    free_spark_locked: bool | None = field(default=None, name="freeSparkLocked")
    free_spark_unlock_path: str | None = field(default=None, name="freeSparkUnlockPath")
    job_resume: bool | None = field(default=None, name="jobResume")
    """A localnet extension: ``True`` when the server holds this app's jobs for a `ResumeJobs`
    frame (the client asked with the ``jobResume=1`` handshake parameter)."""


class BalanceUpdate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``balanceUpdate``: the account's current balances after a settlement."""

    message_type: ClassVar[str] = "balanceUpdate"

    sogni: Balance | None = None
    spark: Balance | None = None


class LLMParamConstraint(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The allowed range and default of one sampling parameter of a model."""

    min: Number | None = None
    max: Number | None = None
    default: Number | None = None
    decimals: int | None = None
    thinking_complex_default: Number | None = field(default=None, name="thinkingComplexDefault")


class LLMSamplingDefaults(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A model's recommended sampling preset."""

    temperature: Number | None = None
    top_p: Number | None = None
    top_k: Number | None = None
    min_p: Number | None = None
    repetition_penalty: Number | None = None
    presence_penalty: Number | None = None


class LLMModelInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What the network knows about one LLM model (protocol.md §4.8)."""

    workers: int = 0
    max_context_length: int | None = field(default=None, name="maxContextLength")
    max_output_tokens: LLMParamConstraint | None = field(default=None, name="maxOutputTokens")
    temperature: LLMParamConstraint | None = None
    top_p: LLMParamConstraint | None = None
    top_k: LLMParamConstraint | None = None
    min_p: LLMParamConstraint | None = None
    repetition_penalty: LLMParamConstraint | None = None
    frequency_penalty: LLMParamConstraint | None = None
    presence_penalty: LLMParamConstraint | None = None
    defaults_thinking: LLMSamplingDefaults | None = field(default=None, name="defaultsThinking")
    defaults_thinking_coding: LLMSamplingDefaults | None = field(
        default=None, name="defaultsThinkingCoding"
    )
    defaults_non_thinking: LLMSamplingDefaults | None = field(
        default=None, name="defaultsNonThinking"
    )
    defaults_non_thinking_reasoning: LLMSamplingDefaults | None = field(
        default=None, name="defaultsNonThinkingReasoning"
    )


class SwarmLLMModels(msgspec.Struct, kw_only=True, frozen=True):
    """``swarmLLMModels``: the whole LLM model map, replacing any earlier one.

    On the wire the payload *is* the map (``{modelId: workerCount | LLMModelInfo}``); a bare worker
    count (the legacy form) decodes to ``LLMModelInfo(workers=n)``.
    """

    message_type: ClassVar[str] = "swarmLLMModels"

    models: dict[str, LLMModelInfo]


class SocketEventSubscriptionsUpdated(msgspec.Struct, kw_only=True, frozen=True):
    """``socketEventSubscriptionsUpdated``: the subscriptions now in force on this socket."""

    message_type: ClassVar[str] = "socketEventSubscriptionsUpdated"

    socket_event_subscriptions: dict[str, bool] = field(
        default_factory=dict[str, bool], name="socketEventSubscriptions"
    )


class JobState(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """``jobState``: a job moved through its lifecycle (``pending``, ``queued``, ``assigned``,
    ``initiatingModel``, ``jobStarted``, ``jobCompleted``).

    Shared by chat jobs and media projects. A media project's ``initiatingModel`` /
    ``jobStarted`` each start one render and carry its ``img_id`` and ``job_index`` (and the
    prompts); its ``queued`` may carry ``estimated_start_seconds`` and ``queue_status``.
    """

    message_type: ClassVar[str] = "jobState"

    job_id: str = field(name="jobID")
    type: str
    worker_name: str | None = field(default=None, name="workerName")
    queue_position: int | None = field(default=None, name="queuePosition")
    model_id: str | None = field(default=None, name="modelId")
    estimated_cost: str | Number | None = field(default=None, name="estimatedCost")
    img_id: str | None = field(default=None, name="imgID")
    job_index: int | None = field(default=None, name="jobIndex")
    positive_prompt: str | None = field(default=None, name="positivePrompt")
    negative_prompt: str | None = field(default=None, name="negativePrompt")
    estimated_start_seconds: Number | None = field(default=None, name="estimatedStartSeconds")
    queue_status: str | None = field(default=None, name="queueStatus")


class ChatCompletionChunk(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """``jobTokens``: one streamed piece of a job's output, delivered as-is to ``ChatStream`` users.

    ``content`` is a delta (``None`` when the frame carried no text); ``tool_calls`` are deltas
    merged by ``index``; ``finish_reason`` and ``usage`` usually arrive on the last chunk.
    """

    message_type: ClassVar[str] = "jobTokens"

    job_id: str = field(name="jobID")
    content: str | None = None
    role: str | None = None
    finish_reason: str | None = field(default=None, name="finishReason")
    usage: Usage | None = None
    tool_calls: list[ToolCallDelta] | None = None


class LLMJobCost(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """The settled cost of a job. Currency values are decimal strings on the real network."""

    cost_in_usd: str | Number | None = field(default=None, name="costInUSD")
    cost_in_token: str | Number | None = field(default=None, name="costInToken")
    cost_in_sogni: str | Number | None = field(default=None, name="costInSogni")
    cost_in_spark: str | Number | None = field(default=None, name="costInSpark")
    input_tokens: int | None = field(default=None, name="inputTokens")
    output_tokens: int | None = field(default=None, name="outputTokens")


class LLMJobResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """``llmJobResult``: the job finished. ``time_taken`` is in seconds."""

    message_type: ClassVar[str] = "llmJobResult"

    job_id: str = field(name="jobID")
    usage: Usage | None = None
    time_taken: Number | None = field(default=None, name="timeTaken")
    cost: LLMJobCost | None = None
    worker_name: str | None = field(default=None, name="workerName")


class LLMJobError(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``llmJobError``: the job failed. ``error`` is a machine tag such as ``insufficient_balance``,
    ``model_unavailable``, ``invalid_request`` or ``server_restarting``."""

    message_type: ClassVar[str] = "llmJobError"

    job_id: str = field(name="jobID")
    error: str | int = "unknown_error"
    error_message: str | None = None
    error_code: str | int | None = None
    worker_name: str | None = field(default=None, name="workerName")
    subscription_limit: bool | None = field(default=None, name="subscriptionLimit")
    required_plans: list[str] | None = field(default=None, name="requiredPlans")
    feature: str | None = None
    limitation: Any = None


ResumeStatus = Literal["resumed", "unknown", "gap"]
"""How the server answered one job of `ResumeJobs`: ``resumed`` (its missing frames follow),
``unknown`` (this server never received the job's request, as far as it remembers: the client
may send the request again) or ``gap`` (the job is known but frames the client lacks are no
longer held, or it ended without them; a live job answered so is ended and its charge
released)."""


class ResumedJob(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One job's answer in `JobsResumed`."""

    job_id: str = field(name="jobID")
    status: ResumeStatus
    replayed: int = 0
    """How many frames the server sends again (those after the client's ``received``)."""


class JobsResumed(msgspec.Struct, kw_only=True, frozen=True):
    """``jobsResumed`` — **a localnet extension**: the answer to `ResumeJobs`, one entry per job
    the client listed, sent before any replayed frame."""

    message_type: ClassVar[str] = "jobsResumed"

    jobs: list[ResumedJob] = field(default_factory=list[ResumedJob])


class JobError(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``jobError`` sent by a server: a *media* project or one of its renders failed. Chat jobs
    fail with ``llmJobError``.

    Without ``img_id`` the whole project failed (e.g. a refused ``jobRequest``); with it, one
    render did. ``error`` is a number or a symbol (``artistCanceled``, ``insufficient_balance``,
    ``invalid_request`` ...).
    """

    message_type: ClassVar[str] = "jobError"

    job_id: str = field(name="jobID")
    img_id: str | None = field(default=None, name="imgID")
    error: str | int | None = None
    error_message: str | None = None
    is_from_worker: bool | None = field(default=None, name="isFromWorker")
    job_index: int | None = field(default=None, name="jobIndex")
    vendor_failure_category: str | None = field(default=None, name="vendorFailureCategory")
    worker_name: str | None = field(default=None, name="workerName")
