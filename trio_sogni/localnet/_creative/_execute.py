"""Server-side execution of hosted creative tool calls (``sogni_tool_execution``).

:class:`CreativeTools` runs one tool call the model made and returns a :class:`ToolOutcome`;
it never raises for a bad call (invalid JSON or arguments, no worker, a refused, failed or
filtered project): those are failed outcomes the caller feeds back to the model. Cancellation
propagates, and cancels the call's media project on the way out (shielded, bounded).

**Media tools** (:data:`~.._jobs._hostedtools.MEDIA_TOOLS`) run as real media projects of the
projects manager, exactly like a socket's ``jobRequest``: admitted, billed to the caller's
account (each render's price held, settled when it completes), queued fairly with every other
job, rendered by the network's media workers, stored, and answered with signed result URLs
that localnet serves (``GET /v1/files/...``). The project belongs to the app
``(account, "localnet-hosted-tools")`` (:data:`HOSTED_TOOLS_APP_ID`), so
``GET /v1/projects/{id}`` and the projects sync route of that account show it.

The arguments are validated against the tool's JSON Schema (the sogni-protocol manifest's).
Used: ``prompt``, ``numberOfVariations`` (renders, 1-16), ``negativePrompt``, ``width`` /
``height`` (models with sizes), ``seed`` (``-1``: random), ``guidance`` (image models with a
guidance range), ``outputFormat`` (``jpeg`` means ``jpg``), ``duration`` (video, audio),
``bpm``, ``keyscale``, ``lyrics``, ``timesig`` (music), and ``model`` / ``videoModel`` to pick
the model (the official aliases, or a catalog id; else the available model of the tool's media
type with the most workers). Everything else (``aspectRatio``, ``loras``, ``gptImage*``,
``starting_image_strength``, ``ratio``, ``watermark``, ``generateAudio``...) is checked by the
schema, then ignored: the projects API has no such parameter. Input media (``edit_image``'s
source image, ``sound_to_video``'s audio, ``video_to_video``'s video, ``generate_video``'s first
reference image, ``generate_image``'s starting image) are earlier results of the same
conversation, picked by the index arguments and uploaded to the new project from localnet's own
storage (see :mod:`._inputs`); with none, the call fails with ``media_input_required``.

**Image adapters** (:data:`ADAPTER_TOOLS`: ``apply_style``, ``restore_photo``,
``refine_result``, ``change_angle``, ``animate_photo``) are run for
``POST /v1/creative-agent/tools/execute`` as the same kind of project (image-to-image or
image-to-video from ``source_image_url``; see :meth:`CreativeTools.adapter_request`), in two
steps so that the HTTP view can refuse before its answer starts: :meth:`CreativeTools.start_adapter`,
then :meth:`CreativeTools.adapter_outcome` or :meth:`CreativeTools.cancel_adapter`.

**Other hosted tools** (``enhance_prompt``) run the TEST DOUBLE registered under their name
(``extra_tools``, the durable runs' doubles), after the same schema check.

The outcome's ``content`` (what the model reads in the ``tool`` message) is the official media
executors' JSON: ``{success: true, media_type, urls, model, prompt}`` (``projectId`` added) or
``{success: false, error, code}``.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, Final, Literal, Protocol, cast

import msgspec
import trio

from ...protocol import (
    JobError,
    JobProgress,
    JobState,
    MediaJobRequest,
    ServerMessage,
    decode_json,
)
from .._jobs._hostedtools import MEDIA_TOOLS, MediaKind, creative_tool_schema
from .._jsonschema import check_schema, validate
from .._media._manager import ProjectsManager
from .._media._projects import Project, plan_project
from .._media._storage import MediaStorage
from ._inputs import InputError, InputMedia, MediaContext, load_input

__all__ = [
    "ADAPTER_TOOLS",
    "HOSTED_TOOLS_APP_ID",
    "CreativeToolError",
    "CreativeTools",
    "OnToolProgress",
    "StartedAdapter",
    "SyncHostedTool",
    "ToolOutcome",
    "ToolProgress",
    "adapter_tool_schema",
]

logger = logging.getLogger("trio_sogni.localnet")

HOSTED_TOOLS_APP_ID: Final = "localnet-hosted-tools"
"""The ``appId`` of the media projects hosted tool calls create (one app per account)."""

CANCEL_TIMEOUT: Final = 5.0
"""Seconds the shielded cancel of an abandoned tool call's project may take at most."""

# Official model selectors (the SDKs' tables) that localnet's catalog can serve, by tool.
_SELECTORS: Final[Mapping[str, Mapping[str, str]]] = {
    "generate_image": {
        "z-turbo": "z_image_turbo_bf16",
        "z-image": "z_image_bf16",
        "krea-2-turbo": "krea2_turbo_fp8_scaled",
    },
    "generate_video": {
        "ltx25": "ltx25-22b-int8_t2v_distilled",
        "ltx23": "ltx23-22b-fp8_t2v_distilled",
        "wan22": "wan_v2.2-14b-fp8_t2v_lightx2v",
        "seedance2": "seedance-2-0",
        "seedance2-mini": "seedance-2-0-mini",
        "seedance2-5": "seedance-2-5",
    },
    "generate_music": {
        "turbo": "ace_step_1.5_turbo",
        "sft": "ace_step_1.5_sft",
        "music3": "minimax_music3",
    },
}


ADAPTER_TOOLS: Final[Mapping[str, MediaKind]] = {
    "apply_style": "image",
    "restore_photo": "image",
    "refine_result": "image",
    "change_angle": "image",
    "animate_photo": "video",
}
"""The image adapters ``POST /v1/creative-agent/tools/execute`` runs as media projects (see
:meth:`CreativeTools.start_adapter`), and the media type each makes."""

ADAPTER_STRENGTH: Final[Mapping[str, float]] = {
    "apply_style": 0.6,
    "restore_photo": 0.25,
    "refine_result": 0.4,
    "change_angle": 0.5,
    "animate_photo": 0.5,
}
"""The keyframe ``strength`` (how far the render departs from its source image, 0..1) of each
adapter's project."""

_ANIMATE_SELECTORS: Final[Mapping[str, str]] = {
    "ltx25": "ltx25-22b-int8_i2v_distilled",
    "ltx23": "ltx23-22b-fp8_i2v_distilled",
    "wan22": "wan_v2.2-14b-fp8_i2v_lightx2v",
}


@cache
def adapter_tool_schema(name: str) -> Mapping[str, Any] | None:
    """The argument JSON Schema (sogni-protocol's manifest) of the adapter ``name``, or
    ``None`` when localnet does not run it."""
    if name not in ADAPTER_TOOLS:
        return None
    text = (
        resources.files("trio_sogni.localnet")
        .joinpath("_data/sogni-protocol/schemas/adapter-tools.json")
        .read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)["tools"][name]
    check_schema(schema)
    return schema


@dataclass(frozen=True)
class StartedAdapter:
    """An adapter call whose project was admitted: wait for ``project.done``, then
    :meth:`CreativeTools.adapter_outcome`; or :meth:`CreativeTools.cancel_adapter`."""

    call_id: str
    name: str
    kind: MediaKind
    prompt: str
    account_id: str
    project: Project
    failure: list[str]


class CreativeToolError(Exception):
    """A tool call that cannot run: ``code`` is a short machine tag (``invalid_arguments``,
    ``no_worker``, ``unknown_tool``...), ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SyncHostedTool(Protocol):
    """A non-media hosted tool (a TEST DOUBLE such as the runs' ``SimulatedEnhancePrompt``)."""

    async def run(
        self, arguments: Mapping[str, Any], *, tool_call_id: str, base_url: str
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ToolProgress:
    """Where a media tool call is: ``queued`` (the project was admitted) or ``processing``
    with ``percent`` (0-100, over all its renders)."""

    tool_call_id: str
    tool_name: str
    status: Literal["queued", "processing"]
    percent: float
    project_id: str


OnToolProgress = Callable[[ToolProgress], Awaitable[None]]

PROGRESS_STEP: Final = 10.0
"""A media call reports ``processing`` only when its percent moved by at least this much (and
at 100), so one call makes at most about a dozen progress reports."""


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one tool call: ``content`` is the JSON object the model reads."""

    tool_call_id: str
    tool_name: str
    success: bool
    content: dict[str, Any]
    result_urls: tuple[str, ...] = ()
    media_type: MediaKind | None = None
    project_id: str | None = None
    error: str | None = None
    code: str | None = None

    def tool_message(self) -> dict[str, Any]:
        """The ``tool`` message fed back to the model."""
        return {
            "role": "tool",
            "tool_call_id": self.tool_call_id,
            "name": self.tool_name,
            "content": json.dumps(self.content, ensure_ascii=False),
        }

    def wire(self) -> dict[str, Any]:
        """One entry of a completion's ``sogni_tool_results``: ``{toolCallId, toolName,
        success, resultUrls, content (the tool message's JSON text), mediaType?, projectId?,
        error?, code?}``."""
        wire: dict[str, Any] = {
            "toolCallId": self.tool_call_id,
            "toolName": self.tool_name,
            "success": self.success,
            "resultUrls": list(self.result_urls),
            "content": json.dumps(self.content, ensure_ascii=False),
        }
        optional = {
            "mediaType": self.media_type,
            "projectId": self.project_id,
            "error": self.error,
            "code": self.code,
        }
        wire.update({key: value for key, value in optional.items() if value is not None})
        return wire


def _failed(call_id: str, name: str, error: CreativeToolError, **extra: Any) -> ToolOutcome:
    return ToolOutcome(
        tool_call_id=call_id,
        tool_name=name,
        success=False,
        content={"success": False, "error": error.message, "code": error.code},
        error=error.message,
        code=error.code,
        **extra,
    )


def parse_arguments(raw: object) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON object text, or an object) as a dict.

    Raises:
        CreativeToolError: ``invalid_arguments``: not JSON, or not an object.
    """
    value: object = raw
    if isinstance(raw, str):
        try:
            value = decode_json(raw or "{}")
        except (msgspec.DecodeError, RecursionError):
            raise CreativeToolError(
                "invalid_arguments", "the tool arguments are not valid JSON"
            ) from None
    if not isinstance(value, dict):
        raise CreativeToolError("invalid_arguments", "the tool arguments must be a JSON object")
    return cast("dict[str, Any]", value)


def _whole(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or not number.is_integer():
        raise CreativeToolError("invalid_arguments", f"{name} must be a whole number")
    return int(number)


class CreativeTools:
    """Executes hosted creative tool calls for hosted completions and durable runs (see the
    module docstring). ``extra_tools()`` gives the non-media hosted tool doubles by name."""

    def __init__(
        self,
        *,
        projects: ProjectsManager,
        storage: MediaStorage,
        base_url: Callable[[], str],
        extra_tools: Callable[[], Mapping[str, SyncHostedTool]],
    ) -> None:
        self._projects = projects
        self._storage = storage
        self._base_url = base_url
        self._extra = extra_tools

    def executes(self, name: str) -> bool:
        """Whether localnet executes calls to ``name`` server-side (a hosted creative tool)."""
        if creative_tool_schema(name) is None:
            return False
        return name in MEDIA_TOOLS or name in self._extra()

    def check(self, name: str, raw_arguments: object) -> dict[str, Any]:
        """The call's arguments, parsed and valid against the tool's schema.

        Raises:
            CreativeToolError: ``unknown_tool`` or ``invalid_arguments`` (the first problems
                the schema check found, named by JSON path).
        """
        schema = creative_tool_schema(name)
        if schema is None or not self.executes(name):
            raise CreativeToolError("unknown_tool", f"{name!r} is not a hosted tool of localnet")
        arguments = parse_arguments(raw_arguments)
        problems = validate(arguments, schema)
        if problems:
            raise CreativeToolError(
                "invalid_arguments", f"invalid arguments for {name}: " + "; ".join(problems[:5])
            )
        return arguments

    def refused(self, call_id: str, name: str, code: str, message: str) -> ToolOutcome:
        """A failed outcome for a call the caller refuses to run (``code``, ``message``)."""
        return _failed(call_id, name, CreativeToolError(code, message))

    # -- media: model, request, price --------------------------------------------------------

    def _model(self, name: str, arguments: Mapping[str, Any], kind: MediaKind | None = None) -> str:
        kind = kind or MEDIA_TOOLS[name]
        served = self._projects.scheduler.worker_counts("media")
        catalog = self._projects.catalog
        available = {
            model_id: count
            for model_id, count in served.items()
            if count > 0 and (spec := catalog.get(model_id)) is not None and spec.media == kind
        }
        if not available:
            raise CreativeToolError(
                "no_worker", f"no media worker on this network renders {kind} ({name})"
            )
        requested = arguments.get("videoModel" if kind == "video" else "model")
        if isinstance(requested, str) and requested:
            resolved = _SELECTORS.get(name, {}).get(requested, requested)
            if resolved in available:
                return resolved
        return min(available, key=lambda model_id: (-available[model_id], model_id))

    def _inputs(
        self, name: str, arguments: Mapping[str, Any], context: MediaContext
    ) -> list[InputMedia]:
        """The inputs a call takes from earlier results (see :mod:`._inputs`)."""

        def pick(kind: MediaKind, argument: str, role: str, index: object = None) -> InputMedia:
            if index is None:
                index = arguments.get(argument)
            return InputMedia(role, context.pick(kind, index, argument, tool=name))

        inputs: list[InputMedia] = []
        if name == "generate_image":
            if "sourceImageIndex" in arguments or "starting_image_strength" in arguments:
                inputs.append(pick("image", "sourceImageIndex", "startingImage"))
        elif name == "edit_image":
            inputs.append(pick("image", "sourceImageIndex", "contextImage1"))
        elif name == "generate_video":
            references = cast("list[Any]", arguments.get("referenceImageIndices") or [])
            if references:
                first = references[0]
                inputs.append(pick("image", "referenceImageIndices[0]", "referenceImage", first))
        elif name == "sound_to_video":
            inputs.append(pick("audio", "audioSourceIndex", "referenceAudio"))
            if "sourceImageIndex" in arguments:
                inputs.append(pick("image", "sourceImageIndex", "referenceImage"))
            if "endImageIndex" in arguments:
                inputs.append(pick("image", "endImageIndex", "referenceImageEnd"))
        elif name == "video_to_video":
            inputs.append(pick("video", "videoSourceIndex", "referenceVideo"))
            if "sourceImageIndex" in arguments:
                inputs.append(pick("image", "sourceImageIndex", "referenceImage"))
        return inputs

    def media_request(
        self,
        name: str,
        arguments: Mapping[str, Any],
        token_type: Literal["sogni", "spark"],
        context: MediaContext | None = None,
    ) -> tuple[MediaJobRequest, list[InputMedia]]:
        """The ``jobRequest`` a media tool call makes and the earlier results it takes as
        inputs (see the module docstring for which arguments count). Raises
        :class:`CreativeToolError`."""
        try:
            inputs = self._inputs(name, arguments, context or MediaContext(()))
        except InputError as exc:
            raise CreativeToolError(exc.code, exc.message) from None
        kind = MEDIA_TOOLS[name]
        model_id = self._model(name, arguments)
        model = self._projects.catalog.get(model_id)
        assert model is not None
        tier = model.tier
        frame: dict[str, Any] = {"modelID": model_id, "positivePrompt": str(arguments["prompt"])}
        negative = arguments.get("negativePrompt")
        if isinstance(negative, str) and negative:
            frame["negativePrompt"] = negative
        seed = _whole(arguments, "seed")
        if seed is not None and seed >= 0:
            frame["seed"] = seed
        if tier.width is not None and tier.height is not None:
            for key in ("width", "height"):
                size = _whole(arguments, key)
                if size is not None:
                    frame[key] = size
        if kind == "image" and tier.guidance is not None and arguments.get("guidance") is not None:
            frame["guidanceScale"] = float(arguments["guidance"])
        if kind in ("video", "audio") and arguments.get("duration") is not None:
            frame["duration"] = float(arguments["duration"])
        if kind == "audio":
            bpm = _whole(arguments, "bpm")
            if bpm is not None:
                frame["bpm"] = bpm
            for key in ("keyscale", "lyrics"):
                if isinstance(arguments.get(key), str):
                    frame[key] = arguments[key]
            timesig = _whole(arguments, "timesig")
            if timesig is not None:
                frame["timesignature"] = str(timesig)
        flags = {
            "contextImage1": "hasContextImage1",
            "startingImage": "hasStartingImage",
            "referenceImage": "hasReferenceImage",
            "referenceImageEnd": "hasReferenceImageEnd",
            "referenceAudio": "hasReferenceAudio",
            "referenceVideo": "hasReferenceVideo",
        }
        for item in inputs:
            frame[flags[item.role]] = True
        strength = arguments.get("starting_image_strength")
        if inputs and name == "generate_image" and isinstance(strength, int | float):
            frame["strength"] = float(strength)
        count = _whole(arguments, "numberOfVariations") or 1
        request: dict[str, Any] = {
            "jobID": str(uuid.uuid4()).upper(),
            "keyFrames": [frame],
            "numberOfImages": max(1, min(16, count)),
            "tokenType": token_type,
        }
        output = arguments.get("outputFormat")
        if isinstance(output, str) and kind == "image":
            request["outputFormat"] = "jpg" if output == "jpeg" else output
        try:
            return msgspec.convert(request, MediaJobRequest), inputs
        except msgspec.ValidationError as exc:
            raise CreativeToolError(
                "invalid_arguments", f"invalid arguments for {name}: {exc}"
            ) from None

    def estimate_usd(
        self,
        name: str,
        arguments: Mapping[str, Any],
        token_type: Literal["sogni", "spark"],
        context: MediaContext | None = None,
    ) -> Decimal:
        """What a call is expected to cost in USD (media: the render price times the count;
        other hosted tools: free). Raises :class:`CreativeToolError` (no worker...)."""
        if name not in MEDIA_TOOLS:
            return Decimal(0)
        request, _ = self.media_request(name, arguments, token_type, context)
        plan = plan_project(request, self._projects.catalog)
        if isinstance(plan, str):  # the project would be refused: so is the call
            raise CreativeToolError("invalid_request", plan)
        quote = self._projects.quote(request.key_frames[0].model_id, token_type)
        assert quote is not None
        return quote.usd * request.number_of_images

    # -- execution ----------------------------------------------------------------------------

    async def execute(
        self,
        call_id: str,
        name: str,
        raw_arguments: object,
        *,
        account_id: str,
        token_type: Literal["sogni", "spark"],
        on_progress: OnToolProgress | None = None,
        context: Iterable[Mapping[str, Any]] = (),
    ) -> ToolOutcome:
        """Run one call (see the module docstring); every failure is a failed outcome.
        ``context`` is the conversation so far (its earlier tool results are the media an
        input argument may name)."""
        try:
            arguments = self.check(name, raw_arguments)
            if name in MEDIA_TOOLS:
                return await self._media(
                    call_id,
                    name,
                    arguments,
                    account_id,
                    token_type,
                    on_progress,
                    MediaContext(context),
                )
        except CreativeToolError as exc:
            return _failed(call_id, name, exc)
        tool = self._extra()[name]
        try:
            result = await tool.run(arguments, tool_call_id=call_id, base_url=self._base_url())
        except Exception as exc:  # the double's own refusal (a ToolFailure), or its bug
            code = getattr(exc, "code", "tool_failed")
            message = getattr(exc, "message", None) or f"{name} failed: {exc!r}"
            return _failed(call_id, name, CreativeToolError(str(code), str(message)))
        return ToolOutcome(tool_call_id=call_id, tool_name=name, success=True, content=result)

    async def _submit(
        self,
        account_id: str,
        request: MediaJobRequest,
        inputs: list[InputMedia],
        observe: Callable[[ServerMessage], None],
    ) -> Project:
        """Upload ``inputs`` for ``request`` and submit it as a project of the account's
        hosted-tools app. Raises :class:`CreativeToolError` (an input refused, the project
        refused); nothing is left behind then."""
        project_id = request.job_id
        refused = None
        submitted = False
        try:
            for item in inputs:
                await load_input(self._storage, account_id, item, project_id)
            refused = self._projects.submit(
                (account_id, HOSTED_TOOLS_APP_ID), request, observer=observe
            )
            submitted = refused is None
        except InputError as exc:
            raise CreativeToolError(exc.code, exc.message) from None
        finally:
            if not submitted:  # the uploads made for it are of no use
                self._storage.discard_project(account_id, project_id)
        if refused is not None:
            code = str(refused.error)
            raise CreativeToolError(code, refused.error_message or code)
        return self._projects.projects[(account_id, project_id.upper())]

    async def _media(
        self,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any],
        account_id: str,
        token_type: Literal["sogni", "spark"],
        on_progress: OnToolProgress | None,
        context: MediaContext,
    ) -> ToolOutcome:
        request, inputs = self.media_request(name, arguments, token_type, context)
        kind = MEDIA_TOOLS[name]
        project_id = request.job_id
        app_key = (account_id, HOSTED_TOOLS_APP_ID)
        percents: dict[int, float] = {}
        failure: list[str] = []
        changed = trio.Event()

        def observe(message: ServerMessage) -> None:
            nonlocal changed
            if isinstance(message, JobProgress):
                index = message.job_index if isinstance(message.job_index, int) else 0
                percents[index] = float(message.progress or 0) * 100
            elif isinstance(message, JobError) and not message.img_id:
                failure[:] = [message.error_message or str(message.error)]
            elif not isinstance(message, JobState):
                return
            changed.set()
            changed = trio.Event()

        project = await self._submit(account_id, request, inputs, observe)
        try:
            if on_progress is not None:
                await on_progress(ToolProgress(call_id, name, "queued", 0.0, project_id))
            reported = 0.0
            count = request.number_of_images
            while not project.done.is_set():
                wait = changed
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:

                        async def finished(scope: trio.CancelScope = scope) -> None:
                            await project.done.wait()
                            scope.cancel()

                        nursery.start_soon(finished)
                        await wait.wait()
                        scope.cancel()
                percent = min(100.0, sum(percents.values()) / count)
                if on_progress is not None and percent - reported >= PROGRESS_STEP:
                    reported = percent
                    await on_progress(
                        ToolProgress(call_id, name, "processing", round(percent, 3), project_id)
                    )
        finally:
            if not project.done.is_set():
                with trio.CancelScope(shield=True) as shield:
                    shield.deadline = trio.current_time() + CANCEL_TIMEOUT
                    await self._projects.cancel(app_key, project_id)
            project.observer = None  # its record is kept; the watch is over
        return self._result(call_id, name, kind, str(arguments["prompt"]), project, failure)

    def _result(
        self,
        call_id: str,
        name: str,
        kind: MediaKind,
        prompt: str,
        project: Project,
        failure: list[str],
    ) -> ToolOutcome:
        project_id = project.job_id
        urls: list[str] = []
        filtered = 0
        for render in project.renders:
            if render.state != "completed" or render.img_id is None:
                continue
            if render.nsfw:
                filtered += 1
                continue
            stored = self._storage.result(project.account, project_id, render.img_id)
            if stored is not None:
                urls.append(self._storage.download_url(stored, self._base_url()))
        if not urls:
            if project.status == "completed" and filtered:
                message = "every render was withheld by the safety filter"
                code = "nsfw_filtered"
            else:
                message = (failure[0] if failure else None) or (
                    f"the {kind} project ended {project.status}"
                    + (f" ({project.reason})" if project.reason else "")
                )
                code = project.reason or "project_failed"
            return _failed(
                call_id,
                name,
                CreativeToolError(code, message),
                media_type=kind,
                project_id=project_id,
            )
        model = project.plan.model.id
        content: dict[str, Any] = {
            "success": True,
            "media_type": kind,
            "urls": urls,
            "model": model,
            "prompt": prompt,
            "projectId": project_id,
        }
        return ToolOutcome(
            tool_call_id=call_id,
            tool_name=name,
            success=True,
            content=content,
            result_urls=tuple(urls),
            media_type=kind,
            project_id=project_id,
        )

    # -- image adapters (POST /v1/creative-agent/tools/execute) ------------------------------

    def adapter_request(
        self, name: str, arguments: Mapping[str, Any], token_type: Literal["sogni", "spark"]
    ) -> tuple[MediaJobRequest, list[InputMedia], str]:
        """The ``jobRequest`` of an adapter call, its inputs and the prompt it renders.

        The source image is ``source_image_url`` (required; ``end_image_url`` is
        ``animate_photo``'s optional last frame): a signed localnet result URL of the caller's
        own media, or a ``data:`` URI. The index arguments (``sourceImageIndex``...) name media
        of the *client's* conversation, which this endpoint cannot see: the client resolves
        them to these URLs. The mapping (docs/localnet.md, "Image adapters"):

        * ``apply_style``: image-to-image, ``strength`` 0.6, the style prompt as the prompt and
          as ``stylePrompt``;
        * ``restore_photo``: image-to-image, ``strength`` 0.25 (stays close to the photo);
        * ``refine_result``: image-to-image, ``strength`` 0.4;
        * ``change_angle``: image-to-image, ``strength`` 0.5, prompt
          ``"the same subject, <description>"``;
        * ``animate_photo``: image-to-video (``referenceImage``, ``referenceImageEnd``),
          ``strength`` 0.5, ``duration``, ``negativePrompt``, ``videoModel`` (the official i2v
          selectors, or a catalog id).

        ``numberOfVariations`` (1-16) is the render count; every other argument is checked by
        the schema, then ignored. Raises :class:`CreativeToolError`
        (``media_input_required``, ``no_worker``...).
        """
        kind = ADAPTER_TOOLS[name]
        source = arguments.get("source_image_url")
        if not isinstance(source, str) or not source:
            raise CreativeToolError(
                "media_input_required",
                f"{name} needs its source image as source_image_url (a localnet result URL of "
                "yours or a data: URI)",
            )
        if name == "change_angle":
            prompt = f"the same subject, {arguments['description']}"
        else:
            prompt = str(arguments["prompt"])
        selectors = {"videoModel": _ANIMATE_SELECTORS} if kind == "video" else {}
        requested = arguments.get("videoModel")
        model_arguments: dict[str, Any] = {}
        if isinstance(requested, str):
            model_arguments["videoModel"] = selectors["videoModel"].get(requested, requested)
        model_id = self._model(name, model_arguments, kind)
        role = "referenceImage" if kind == "video" else "startingImage"
        inputs = [InputMedia(role, source)]
        frame: dict[str, Any] = {
            "modelID": model_id,
            "positivePrompt": prompt,
            "strength": ADAPTER_STRENGTH[name],
            "hasReferenceImage" if kind == "video" else "hasStartingImage": True,
        }
        if name == "apply_style":
            frame["stylePrompt"] = prompt
        if kind == "video":
            end = arguments.get("end_image_url")
            if isinstance(end, str) and end:
                inputs.append(InputMedia("referenceImageEnd", end))
                frame["hasReferenceImageEnd"] = True
            negative = arguments.get("negativePrompt")
            if isinstance(negative, str) and negative:
                frame["negativePrompt"] = negative
            if arguments.get("duration") is not None:
                frame["duration"] = float(arguments["duration"])
        count = _whole(arguments, "numberOfVariations") or 1
        request: dict[str, Any] = {
            "jobID": str(uuid.uuid4()).upper(),
            "keyFrames": [frame],
            "numberOfImages": max(1, min(16, count)),
            "tokenType": token_type,
        }
        try:
            return msgspec.convert(request, MediaJobRequest), inputs, prompt
        except msgspec.ValidationError as exc:
            raise CreativeToolError(
                "invalid_arguments", f"invalid arguments for {name}: {exc}"
            ) from None

    async def start_adapter(
        self,
        call_id: str,
        name: str,
        raw_arguments: object,
        *,
        account_id: str,
        token_type: Literal["sogni", "spark"],
    ) -> StartedAdapter:
        """Check an adapter call's arguments against its schema, upload its source image(s)
        and submit its project (admitted, billed and rendered like any project of the
        account's hosted-tools app). Wait for ``project.done``, then call
        :meth:`adapter_outcome`; a caller that stops waiting must call
        :meth:`cancel_adapter`.

        Raises:
            CreativeToolError: ``unknown_tool``, ``invalid_arguments``, an input refused
                (``media_input_*``), ``no_worker``, or the project's refusal code.
        """
        schema = adapter_tool_schema(name)
        if schema is None:
            raise CreativeToolError("unknown_tool", f"{name!r} is not an adapter of localnet")
        arguments = parse_arguments(raw_arguments)
        problems = validate(arguments, schema)
        if problems:
            raise CreativeToolError(
                "invalid_arguments", f"invalid arguments for {name}: " + "; ".join(problems[:5])
            )
        request, inputs, prompt = self.adapter_request(name, arguments, token_type)
        failure: list[str] = []
        render_errors: list[str] = []

        def observe(message: ServerMessage) -> None:
            if not isinstance(message, JobError):
                return
            text = message.error_message or str(message.error)
            if message.img_id:
                render_errors.append(text)
            else:  # the project's failure, with its first render's reason
                failure[:] = [text + (f" ({render_errors[0]})" if render_errors else "")]

        project = await self._submit(account_id, request, inputs, observe)
        return StartedAdapter(
            call_id, name, ADAPTER_TOOLS[name], prompt, account_id, project, failure
        )

    async def cancel_adapter(self, started: StartedAdapter) -> None:
        """Cancel an adapter call's project unless it is done (shielded, at most
        ``CANCEL_TIMEOUT`` seconds), and stop watching it."""
        try:
            if not started.project.done.is_set():
                with trio.CancelScope(shield=True) as shield:
                    shield.deadline = trio.current_time() + CANCEL_TIMEOUT
                    await self._projects.cancel(
                        (started.account_id, HOSTED_TOOLS_APP_ID), started.project.job_id
                    )
        finally:
            started.project.observer = None

    def adapter_outcome(self, started: StartedAdapter) -> ToolOutcome:
        """The outcome of an adapter call whose project is done (as a media tool's: the
        result URLs, or a failed outcome saying why)."""
        started.project.observer = None
        return self._result(
            started.call_id,
            started.name,
            started.kind,
            started.prompt,
            started.project,
            started.failure,
        )
