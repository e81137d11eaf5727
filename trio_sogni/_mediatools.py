"""The six direct media tools of ``sogni.chat.tools`` (``generate_image``, ``edit_image``,
``generate_video``, ``sound_to_video``, ``video_to_video``, ``generate_music``), run as media
projects (`ProjectsAPI`), and the media context their index arguments resolve against.

The argument schemas are the hosted-tool JSON Schemas of ``manifests/openai-tools.json`` of the
npm package ``@sogni-ai/sogni-protocol`` (ISC licence, Copyright Sogni AI), shipped without
their descriptions in ``trio_sogni/_data/media-tools.json``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, cast

import trio
from typing_extensions import override

from ._errors import SogniError
from ._images import check_trusted_url
from ._jobstate import ToolResult
from ._media._inputs import sniff_content_type
from ._media._request import _max_context_images  # pyright: ignore[reportPrivateUsage]
from ._media._results import MediaResult
from ._projects import Processing, ProjectsAPI

if TYPE_CHECKING:
    from ._hosted import ChatHosted
from ._request import MessageInput, validate_messages
from ._toolschema import SchemaViolation, check_arguments
from .protocol import ChatMessage, ImageURLPart, ToolCall

__all__ = [
    "DIRECT_MEDIA_TOOLS",
    "HOSTED_MEDIA_KINDS",
    "MAX_MEDIA_CALLS_PER_ROUND",
    "MediaContext",
    "MediaItem",
    "MediaKind",
    "MediaRun",
    "OnToolProgress",
    "ProgressReporter",
    "ToolProgress",
    "hosted_tool_schemas",
    "media_tool_definitions",
    "run_hosted_tool",
    "run_media_tool",
]

MediaKind: TypeAlias = Literal["image", "video", "audio"]

DIRECT_MEDIA_TOOLS: Final[Mapping[str, MediaKind]] = {
    "generate_image": "image",
    "edit_image": "image",
    "generate_video": "video",
    "sound_to_video": "video",
    "video_to_video": "video",
    "generate_music": "audio",
}
"""The tools ``chat.tools`` runs as media projects, and the media type each makes."""

HOSTED_MEDIA_KINDS: Final[Mapping[str, MediaKind]] = {
    "apply_style": "image",
    "restore_photo": "image",
    "refine_result": "image",
    "change_angle": "image",
    "upscale_image": "image",
    "remove_background": "image",
    "animate_photo": "video",
    "stitch_video": "video",
    "orbit_video": "video",
    "dance_montage": "video",
    "extend_video": "video",
    "replace_video_segment": "video",
    "overlay_video": "video",
    "add_subtitles": "video",
    "upscale_video": "video",
    "generate_speech": "audio",
}
"""The media type a hosted tool run through ``chat.hosted.execute_tool`` makes, when the
server's ``result`` does not say (``media_type``)."""

SOURCE_IMAGE_TOOLS: Final = frozenset(
    {"apply_style", "refine_result", "change_angle", "animate_photo"}
)
"""Hosted tools that take a source image by ``sourceImageIndex`` (absent: the latest image);
``chat.tools`` sends it as ``source_image_url``. ``restore_photo`` always takes the original
upload."""

MAX_MEDIA_CALLS_PER_ROUND: Final = 8
"""At most this many media tool calls run per `ChatTools.execute_all` (the official limit);
later ones get an error result."""

MODELS_WAIT: Final = 10.0
"""Seconds a media tool waits for the network's media models (as the official SDKs)."""

# Model selectors the schemas' enums name (from the official SDKs' tables), by tool.
_IMAGE_SELECTORS: Final = {
    "z-turbo": "z_image_turbo_bf16",
    "z-image": "z_image_bf16",
    "krea-2-turbo": "krea2_turbo_fp8_scaled",
    "krea2-turbo": "krea2_turbo_fp8_scaled",
}
_EDIT_SELECTORS: Final = {
    "qwen-lightning": "qwen_image_edit_2511_fp8_lightning",
    "qwen": "qwen_image_edit_2511_fp8",
    "krea-identity-edit": "krea2_identity_edit_v1_2",
    "krea2-identity-edit": "krea2_identity_edit_v1_2",
}
_VIDEO_SELECTORS: Final = {
    "ltx25": "ltx25-22b-int8_t2v_distilled",
    "ltx23": "ltx23-22b-fp8_t2v_distilled",
    "wan22": "wan_v2.2-14b-fp8_t2v_lightx2v",
    "seedance2": "seedance-2-0",
    "seedance2-mini": "seedance-2-0-mini",
    "seedance2-5": "seedance-2-5",
}
_IMAGE_VIDEO_SELECTORS: Final = {
    "ltx25": "ltx25-22b-int8_i2v_distilled",
    "ltx23": "ltx23-22b-fp8_i2v_distilled",
    "wan22": "wan_v2.2-14b-fp8_i2v_lightx2v",
    "seedance2": "seedance-2-0",
    "seedance2-mini": "seedance-2-0-mini",
    "seedance2-5": "seedance-2-5",
}
_SOUND_VIDEO_SELECTORS: Final = {
    "wan-s2v": "wan_v2.2-14b-fp8_s2v_lightx2v",
    "ltx25-ia2v": "ltx25-22b-int8_ia2v_distilled",
    "ltx25-a2v": "ltx25-22b-int8_a2v_distilled",
    "ltx23-ia2v": "ltx23-22b-fp8_ia2v_distilled",
    "ltx23-a2v": "ltx23-22b-fp8_a2v_distilled",
    "seedance2": "seedance-2-0",
    "seedance2-5": "seedance-2-5",
}
_V2V_SELECTORS: Final = {
    "ltx25-v2v": "ltx25-22b-int8_v2v_distilled",
    "ltx23-v2v": "ltx23-22b-fp8_v2v_distilled",
    "seedance2": "seedance-2-0",
    "seedance2-5": "seedance-2-5",
}
_MUSIC_SELECTORS: Final = {
    "turbo": "ace_step_1.5_turbo",
    "sft": "ace_step_1.5_sft",
    "music3": "minimax_music3",
}
_MUSIC_ORDER: Final = (
    "minimax_music3",
    "ace_step_1.5_xl_turbo",
    "ace_step_1.5_xl_sft",
    "ace_step_1.5_turbo",
    "ace_step_1.5_sft",
)
_MUSIC3_MAX_DURATION: Final = 300


@cache
def media_tool_schemas() -> Mapping[str, Mapping[str, Any]]:
    """The argument schemas of the six direct media tools, by tool name."""
    text = resources.files("trio_sogni").joinpath("_data/media-tools.json").read_text("utf-8")
    return dict(json.loads(text)["tools"])


@cache
def hosted_tool_schemas() -> Mapping[str, Mapping[str, Any]]:
    """The argument schemas of the other hosted tools (every manifest tool but the six direct
    media tools), by tool name."""
    text = resources.files("trio_sogni").joinpath("_data/hosted-tools.json").read_text("utf-8")
    return dict(json.loads(text)["tools"])


_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "generate_image": "Generate images from a text prompt.",
    "edit_image": "Edit an image (from the conversation or an earlier result) as the prompt says.",
    "generate_video": "Generate a short video from a prompt, optionally from reference images.",
    "sound_to_video": "Make a video that follows an audio track.",
    "video_to_video": "Transform a video as the prompt says.",
    "generate_music": "Compose music (optionally with lyrics) from a prompt.",
}


def media_tool_definitions() -> list[dict[str, Any]]:
    """The six direct media tools as OpenAI-style tool definitions (``{"type": "function",
    "function": {name, description, parameters}}``), to offer a model in ``tools=``; ``chat.tools``
    executes their calls as media projects."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": _DESCRIPTIONS[name],
                "parameters": json.loads(json.dumps(schema)),
            },
        }
        for name, schema in media_tool_schemas().items()
    ]


# --- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolProgress:
    """Progress of one media tool call (`ChatTools.execute` / ``execute_all``).

    ``status`` goes ``creating`` (arguments checked, inputs being uploaded) → ``queued`` (the
    project was sent) → ``processing`` (``percent``: 0 to 100 over all renders; repeated) →
    ``completed`` (``urls``) or ``failed`` (``error``). A call refused before its project is
    created (a bad argument, no model) reports nothing; once ``creating`` was reported,
    ``completed`` or ``failed`` is always the last report, unless the call is cancelled.
    """

    tool_call_id: str
    tool_name: str
    status: Literal["creating", "queued", "processing", "completed", "failed"]
    percent: float = 0.0
    project_id: str | None = None
    urls: tuple[str, ...] = ()
    error: str | None = None


OnToolProgress: TypeAlias = Callable[[ToolCall, ToolProgress], None]
"""A synchronous callback for `ToolProgress` reports (the official ``on_tool_progress``); it
must not block. Exceptions it raises propagate and fail the tool call's caller."""


class ProgressReporter:
    """Sends one call's progress to the callback and the channel."""

    def __init__(
        self,
        call: ToolCall,
        callback: OnToolProgress | None,
        channel: trio.MemorySendChannel[ToolProgress] | None,
    ) -> None:
        self.call = call
        self.callback = callback
        self.channel = channel

    async def report(self, status: Any, **kwargs: Any) -> None:
        progress = ToolProgress(
            tool_call_id=self.call.id, tool_name=self.call.function.name, status=status, **kwargs
        )
        if self.callback is not None:
            self.callback(self.call, progress)
        if self.channel is None:
            return
        if status == "processing":
            # Never let a slow reader hold up a render's progress: a step report that does not
            # fit is dropped (a later one or the end will follow).
            try:
                self.channel.send_nowait(progress)
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.channel = None
            return
        try:
            await self.channel.send(progress)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.channel = None


# --- the media context ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One media of a `MediaContext`: an upload (``data``: bytes or a ``data:`` URI; or, for a
    conversation image given as a trusted https URL not fetched yet, ``data=None`` and that
    ``url``) or a tool call's result (``result``, a `MediaResult`, and its ``url``)."""

    data: bytes | str | None
    result: MediaResult | None = None
    url: str | None = None


class ToolCallError(Exception):
    """A media tool call cannot run (a bad argument, no model...): its message becomes the
    ``success: false`` result."""


class MediaContext:
    """The media a conversation's tool calls can refer to by index.

    Per media type (``image``, ``video``, ``audio``) it holds *uploads* (the conversation's
    ``image_url`` parts, and what you ``add``) and *results* (every media produced by earlier tool
    calls run with this context, in call order). An index argument (``sourceImageIndex``,
    ``referenceImageIndices``, ``audioSourceIndex``, ``videoSourceIndex``, ``endImageIndex``)
    resolves as the hosted tools document: a negative index ``-k`` is the k-th upload (``-1``
    the first); a non-negative index ``n`` is the n-th result (0-based) when there are results
    of that type, else the n-th upload. An omitted source the tool needs is the latest result,
    else the first upload. An index out of range is an error result naming the argument.

    ``source_image_url`` may be a ``data:`` URI or the URL of a result in the context; nothing
    else is fetched, and no string argument is ever read as a file path.

    A conversation image given as a trusted https URL (see `validate_messages`) is an upload
    fetched only when a tool call uses it (once; the bytes are kept), with ``fetch_image``:
    `ChatAPI.media_context` makes contexts that fetch with the client (no redirects, 10 MiB,
    the client's timeout). Without ``fetch_image``, a tool call using such an image gets an
    error result. The automatic tool loop hands the images it already fetched to its context.

    Attributes:
        uploads: ``{media type: [MediaItem, ...]}``, in the order added.
        results: ``{media type: [MediaItem, ...]}``, in call order, each call's renders in
            render order.
    """

    __slots__ = ("_fetch_image", "_fetched", "results", "uploads")

    def __init__(self, *, fetch_image: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        """``fetch_image``: an async function returning the bytes of a trusted https image URL
        (called at most once per URL, only when a tool call uses that image)."""
        self.uploads: dict[str, list[MediaItem]] = {"image": [], "video": [], "audio": []}
        self.results: dict[str, list[MediaItem]] = {"image": [], "video": [], "audio": []}
        self._fetch_image = fetch_image
        self._fetched: dict[str, bytes] = {}

    @override
    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={u}+{r}" for kind, (u, r) in self.counts().items())
        return f"<MediaContext uploads+results: {counts}>"

    @classmethod
    def from_messages(
        cls,
        messages: Sequence[MessageInput],
        *,
        fetch_image: Callable[[str], Awaitable[bytes]] | None = None,
    ) -> MediaContext:
        """A context whose image uploads are the ``image_url`` parts (data URIs and trusted
        https URLs) of ``messages``, in order.

        Raises:
            InvalidRequestError: the messages are not valid (see `validate_messages`; the
                1024 px limit of chat images does not apply to media inputs).
        """
        context = cls(fetch_image=fetch_image)
        context.add_messages(messages)
        return context

    def add_messages(self, messages: Sequence[MessageInput]) -> None:
        """Add the ``image_url`` parts of ``messages`` as image uploads (those already present
        are not added twice). Nothing is fetched here.

        Raises:
            InvalidRequestError: the messages are not valid (see `from_messages`).
        """
        self._add_conversation(validate_messages(messages, resize_images=True), {})

    def _add_conversation(
        self, messages: Sequence[ChatMessage], fetched: Mapping[str, str]
    ) -> None:
        """Add the image parts of validated ``messages``; ``fetched`` maps the https URLs already
        fetched to their data URIs (those are then not fetched again)."""
        uploads = self.uploads["image"]
        known = {
            item.url or item.data for item in uploads if isinstance(item.url or item.data, str)
        }
        for message in messages:
            if not isinstance(message.content, list):
                continue
            for part in message.content:
                if not isinstance(part, ImageURLPart) or part.image_url.url in known:
                    continue
                url = part.image_url.url
                known.add(url)
                if url.startswith("data:"):
                    uploads.append(MediaItem(url))
                else:
                    uploads.append(MediaItem(fetched.get(url), url=url))

    async def _fetch(self, url: str) -> bytes:
        data = self._fetched.get(url)
        if data is not None:
            await trio.lowlevel.checkpoint()
            return data
        if self._fetch_image is None:
            host = check_trusted_url(url, "image").host
            raise ToolCallError(
                f"the conversation's image on {host} was not fetched: make the media context "
                "with sogni.chat.media_context(...) so it can be"
            )
        data = await self._fetch_image(url)
        self._fetched[url] = data
        return data

    def add(self, kind: MediaKind, media: bytes | str) -> None:
        """Add an upload of ``kind``: bytes, a ``data:`` URI or (images only) a trusted https
        URL (``*.sogni.ai``, ``*.cloudfront.net``, Amazon S3; see `validate_messages`).

        A URL is checked here and fetched only when a tool call uses it, once, exactly as a
        conversation image's URL is (with the context's ``fetch_image``; without one, a tool
        call using it gets an error result).

        Raises:
            ValueError: an unknown kind, or a string that is neither a data URI nor an https
                URL; an URL for a video or audio upload.
            InvalidRequestError: (a ``ValueError``) an untrusted or malformed image URL; it
                names at most the host.
        """
        if kind not in self.uploads:
            raise ValueError(f"unknown media kind {kind!r}; expected image, video or audio")
        if isinstance(media, str) and not media.startswith("data:"):
            if not media[:8].lower().startswith("https://"):
                raise ValueError(
                    "a media upload must be bytes, a data: URI or (an image) a trusted https URL"
                )
            if kind != "image":
                raise ValueError(
                    f"a {kind} upload must be bytes or a data: URI; only images may be https URLs"
                )
            check_trusted_url(media, "MediaContext.add")
            self.uploads[kind].append(MediaItem(None, url=media))
            return
        self.uploads[kind].append(MediaItem(bytes(media) if not isinstance(media, str) else media))

    def add_results(self, kind: MediaKind, results: Iterable[tuple[MediaResult, str]]) -> None:
        """Add media produced by a tool call: ``(result, url)`` pairs, in render order."""
        self.results[kind].extend(MediaItem(None, result, url) for result, url in results)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{kind: (uploads, results)}``."""
        return {kind: (len(self.uploads[kind]), len(self.results[kind])) for kind in self.uploads}

    def _pick(self, kind: str, index: object, argument: str) -> MediaItem:
        uploads, results = self.uploads[kind], self.results[kind]
        if (
            isinstance(index, bool)
            or not isinstance(index, int | float)
            or not (math.isfinite(index) and float(index).is_integer())
        ):
            raise ToolCallError(f"{argument} must be a whole number, not {index!r}")
        n = int(index)
        if n < 0 and -n <= len(uploads):
            return uploads[-n - 1]
        pool = results if results else uploads
        if 0 <= n < len(pool):
            return pool[n]
        raise ToolCallError(
            f"{argument}={n} is out of range: this conversation has {len(results)} generated "
            f"{kind}(s) (indices 0..{len(results) - 1}) and {len(uploads)} uploaded {kind}(s) "
            f"(indices -1..-{len(uploads)})"
            if results or uploads
            else f"{argument}={n} is out of range: this conversation has no {kind}"
        )

    def _latest(self, kind: str) -> MediaItem | None:
        if self.results[kind]:
            return self.results[kind][-1]
        if self.uploads[kind]:
            return self.uploads[kind][0]
        return None

    def _by_url(self, url: str, argument: str) -> MediaItem:
        if url.startswith("data:"):
            return MediaItem(url)
        for item in self.uploads["image"]:
            if item.url == url:
                return item
        for items in self.results.values():
            for item in items:
                if item.url == url:
                    return item
        raise ToolCallError(
            f"{argument} must be a data: URI or the URL of media produced in this conversation"
        )


async def _load(item: MediaItem, context: MediaContext) -> bytes | str:
    if item.data is not None:
        return item.data
    if item.result is None:
        assert item.url is not None
        return await context._fetch(item.url)  # pyright: ignore[reportPrivateUsage]
    return await item.result.read()


# --- model choice --------------------------------------------------------------------------------


def _selectors(name: str, arguments: Mapping[str, Any]) -> Mapping[str, str]:
    if name == "generate_image":
        return _IMAGE_SELECTORS
    if name == "edit_image":
        return _EDIT_SELECTORS
    if name == "sound_to_video":
        return _SOUND_VIDEO_SELECTORS
    if name == "video_to_video":
        return _V2V_SELECTORS
    if name == "generate_video":
        return (
            _IMAGE_VIDEO_SELECTORS if arguments.get("referenceImageIndices") else _VIDEO_SELECTORS
        )
    return _MUSIC_SELECTORS


async def choose_model(projects: ProjectsAPI, name: str, arguments: Mapping[str, Any]) -> str:
    """The model a media tool call runs on, by the official rules: the named (or aliased)
    model when the network has it, else (music) the first available of the official music
    order, else the available model of the tool's media type with the most workers (ties: the
    first id in sorted order).

    Raises:
        ToolCallError: no model of the media type is available within ``MODELS_WAIT`` seconds.
    """
    kind = DIRECT_MEDIA_TOOLS[name]
    with trio.move_on_after(MODELS_WAIT):
        await projects.wait_for_models()
    catalog = await projects.models()
    workers = projects.media_models
    available = {
        model.id: workers.get(model.id, 0)
        for model in catalog.of_type(kind)
        if workers.get(model.id, 0) > 0
    }
    if not available:
        raise ToolCallError(f"no {kind} model is available on the network")
    requested = arguments.get("videoModel" if kind == "video" else "model")
    if isinstance(requested, str) and requested.strip():
        key = "-".join(requested.strip().lower().replace("_", "-").split())
        selectors = _selectors(name, arguments)
        resolved = selectors.get(requested, selectors.get(key, requested))
        if resolved in available:
            return resolved
    if name == "generate_music":
        duration = arguments.get("duration")
        long_track = isinstance(duration, int | float) and duration > _MUSIC3_MAX_DURATION
        for model in _MUSIC_ORDER:
            if model in available and not (long_track and model == "minimax_music3"):
                return model
    return min(available, key=lambda model: (-available[model], model))


# --- arguments -> project options ----------------------------------------------------------------


def _whole(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    if not float(value).is_integer():
        raise ToolCallError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def clamp_variations(arguments: dict[str, Any]) -> None:
    """Clamp a finite ``numberOfVariations`` to 1-16, rounded (as the official executors)."""
    value = arguments.get("numberOfVariations")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        arguments["numberOfVariations"] = max(1, min(16, round(value)))


def _options(name: str, kind: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"number_of_media": int(arguments.get("numberOfVariations", 1))}
    if isinstance(arguments.get("negativePrompt"), str) and arguments["negativePrompt"]:
        options["negative_prompt"] = arguments["negativePrompt"]
    for argument, option in (("width", "width"), ("height", "height"), ("seed", "seed")):
        value = _whole(arguments, argument)
        if value is not None:
            options[option] = value
    output = arguments.get("outputFormat")
    if isinstance(output, str):
        options["output_format"] = "jpg" if output == "jpeg" else output
    if kind == "image":
        for argument, option in (
            ("guidance", "guidance"),
            ("starting_image_strength", "starting_image_strength"),
        ):
            if arguments.get(argument) is not None:
                options[option] = float(arguments[argument])
    if kind in ("video", "audio") and arguments.get("duration") is not None:
        options["duration"] = float(arguments["duration"])
    if kind == "audio":
        bpm = _whole(arguments, "bpm")
        if bpm is not None:
            options["bpm"] = bpm
        for argument in ("keyscale", "lyrics"):
            if isinstance(arguments.get(argument), str):
                options[argument] = arguments[argument]
        timesig = _whole(arguments, "timesig")
        if timesig is not None:
            options["timesignature"] = str(timesig)
    return options


async def _inputs(
    name: str, arguments: Mapping[str, Any], context: MediaContext, model: str
) -> dict[str, Any]:
    inputs: dict[str, Any] = {}

    def image(argument: str, *, required: bool = False) -> MediaItem | None:
        if isinstance(arguments.get("source_image_url"), str) and argument == "sourceImageIndex":
            return context._by_url(arguments["source_image_url"], "source_image_url")  # pyright: ignore[reportPrivateUsage]
        if argument in arguments:
            return context._pick("image", arguments[argument], argument)  # pyright: ignore[reportPrivateUsage]
        if required:
            found = context._latest("image")  # pyright: ignore[reportPrivateUsage]
            if found is None:
                raise ToolCallError(f"{name} needs a source image; the conversation has none")
            return found
        return None

    def source(kind: str, argument: str) -> MediaItem:
        if argument in arguments:
            return context._pick(kind, arguments[argument], argument)  # pyright: ignore[reportPrivateUsage]
        found = context._latest(kind)  # pyright: ignore[reportPrivateUsage]
        if found is None:
            raise ToolCallError(f"{name} needs a source {kind}; the conversation has none")
        return found

    if name == "generate_image":
        wanted = (
            "sourceImageIndex" in arguments
            or "source_image_url" in arguments
            or "starting_image_strength" in arguments
        )
        item = image("sourceImageIndex", required=wanted)
        if item is not None:
            inputs["starting_image"] = await _load(item, context)
    elif name == "edit_image":
        primary = image("sourceImageIndex", required=True)
        assert primary is not None
        chosen = [primary] + [item for item in context.uploads["image"] if item is not primary]
        limit = _max_context_images(model)
        inputs["context_images"] = [await _load(item, context) for item in chosen[:limit]]
    elif name == "generate_video":
        references: list[Any] = arguments.get("referenceImageIndices") or []
        images = [
            context._pick("image", index, f"referenceImageIndices[{i}]")  # pyright: ignore[reportPrivateUsage]
            for i, index in enumerate(references)
        ]
        if isinstance(arguments.get("source_image_url"), str):
            images.insert(0, context._by_url(arguments["source_image_url"], "source_image_url"))  # pyright: ignore[reportPrivateUsage]
        if images:
            inputs["reference_image"] = await _load(images[0], context)
        if images[1:]:
            inputs["context_images"] = [await _load(item, context) for item in images[1:]]
        for argument, kind, option in (
            ("referenceVideoIndices", "video", "reference_video"),
            ("referenceAudioIndices", "audio", "reference_audio"),
        ):
            indices: list[Any] = arguments.get(argument) or []
            if len(indices) > 1:
                raise ToolCallError(f"{argument}: this client sends at most one {kind} reference")
            if indices:
                item = context._pick(kind, indices[0], f"{argument}[0]")  # pyright: ignore[reportPrivateUsage]
                inputs[option] = await _load(item, context)
    elif name == "sound_to_video":
        inputs["reference_audio"] = await _load(source("audio", "audioSourceIndex"), context)
        item = image("sourceImageIndex")
        if item is not None:
            inputs["reference_image"] = await _load(item, context)
        if "endImageIndex" in arguments:
            end = context._pick("image", arguments["endImageIndex"], "endImageIndex")  # pyright: ignore[reportPrivateUsage]
            inputs["reference_image_end"] = await _load(end, context)
    elif name == "video_to_video":
        inputs["reference_video"] = await _load(source("video", "videoSourceIndex"), context)
        item = image("sourceImageIndex")
        if item is not None:
            inputs["reference_image"] = await _load(item, context)
    return inputs


# --- running -------------------------------------------------------------------------------------


def error_result(tool_call: ToolCall, message: str) -> ToolResult:
    """A ``success: false`` result whose content is ``{"success": false, "error": message}``."""
    return ToolResult(
        tool_call_id=tool_call.id,
        tool_name=tool_call.function.name,
        success=False,
        content=json.dumps({"success": False, "error": message}),
        error=message,
    )


def success_result(tool_call: ToolCall, content: Mapping[str, Any], urls: list[str]) -> ToolResult:
    """A ``success: true`` result whose content is ``content`` as JSON, with ``urls`` as its
    ``result_urls``."""
    return ToolResult(
        tool_call_id=tool_call.id,
        tool_name=tool_call.function.name,
        success=True,
        content=json.dumps(content),
        result_urls=urls,
    )


MediaRun: TypeAlias = tuple[ToolResult, list[tuple[MediaResult, str]]]


async def run_media_tool(
    projects: ProjectsAPI,
    tool_call: ToolCall,
    arguments: dict[str, Any],
    context: MediaContext,
    reporter: ProgressReporter,
    *,
    token_type: Literal["spark", "sogni"] | None = None,
) -> MediaRun:
    """Run one direct media tool call as a project; return its result and the media it made.

    Errors (a schema violation, an index out of range, no model, a refused or failed project)
    are a ``success: false`` result, never an exception; cancellation propagates, and leaving
    cancels the project on the server (the `Project`'s scope)."""
    name = tool_call.function.name
    kind = DIRECT_MEDIA_TOOLS[name]
    clamp_variations(arguments)
    try:
        check_arguments(arguments, media_tool_schemas()[name])
    except SchemaViolation as exc:
        return error_result(
            tool_call, f"invalid argument {exc.argument or 'arguments'}: {exc.message}"
        ), []
    project_id: str | None = None
    creating = False
    try:
        model = await choose_model(projects, name, arguments)
        options = _options(name, kind, arguments)
        if token_type is not None:
            options["token_type"] = token_type
        inputs = await _inputs(name, arguments, context, model)
        creating = True
        await reporter.report("creating")
        async with await projects.create(
            type=kind, model=model, prompt=str(arguments["prompt"]), **inputs, **options
        ) as project:
            project_id = project.id
            await reporter.report("queued", project_id=project_id)
            expected = max(1, project.expected_renders)
            percents: dict[int, float] = {}
            reported = 0.0
            async with project.progress() as updates:
                async for update in updates:
                    if not isinstance(update, Processing):
                        continue
                    percents[update.index] = update.percent
                    percent = min(100.0, sum(percents.values()) / expected)
                    if percent > reported:
                        reported = percent
                        await reporter.report("processing", percent=percent, project_id=project_id)
            results = await project.wait()
        produced = [(result, await result.url()) for result in results if not result.nsfw]
        if not produced:
            raise ToolCallError("every render was withheld by the safety filter")
    except (ToolCallError, SogniError) as exc:
        message = str(exc)
        if creating:
            await reporter.report("failed", project_id=project_id, error=message)
        return error_result(tool_call, message), []
    urls = [url for _, url in produced]
    content: dict[str, Any] = {"success": True, "media_type": kind, "urls": urls}
    last_frames = [result.last_frame_url for result, _ in produced]
    if any(last_frames):
        content["lastFrameUrls"] = last_frames
    content.update(model=model, prompt=arguments["prompt"])
    await reporter.report("completed", percent=100.0, project_id=project_id, urls=tuple(urls))
    return success_result(tool_call, content, urls), produced


# --- the other hosted tools, through chat.hosted.execute_tool ------------------------------------


async def _as_url(item: MediaItem, context: MediaContext, argument: str) -> str:
    """What a hosted tool is sent for ``item``: a result's own URL, else the upload as a
    ``data:`` URI (PNG, JPEG or WebP)."""
    if item.url is not None and item.result is not None:
        return item.url
    data = await _load(item, context)
    if isinstance(data, str):
        return data
    content_type = sniff_content_type(data[:64])
    if content_type not in ("image/png", "image/jpeg", "image/webp"):
        raise ToolCallError(f"{argument}: the image is not PNG, JPEG or WebP")
    return f"data:{content_type};base64," + base64.b64encode(data).decode("ascii")


async def _hosted_inputs(
    name: str, arguments: Mapping[str, Any], context: MediaContext
) -> dict[str, str]:
    """The URL arguments a hosted tool call is sent with: ``source_image_url`` (and
    ``animate_photo``'s ``end_image_url``) for the image its index arguments name."""
    by_url = context._by_url  # pyright: ignore[reportPrivateUsage]
    pick = context._pick  # pyright: ignore[reportPrivateUsage]
    item: MediaItem | None
    if name == "restore_photo":
        uploads = context.uploads["image"]
        if isinstance(arguments.get("source_image_url"), str):
            item = by_url(arguments["source_image_url"], "source_image_url")
        elif uploads:
            item = uploads[0]
        else:
            raise ToolCallError(
                "restore_photo works on the original uploaded photo; this conversation has none"
            )
    elif name in SOURCE_IMAGE_TOOLS:
        indices: list[Any] = arguments.get("sourceImageIndices") or []
        if isinstance(arguments.get("source_image_url"), str):
            item = by_url(arguments["source_image_url"], "source_image_url")
        elif "sourceImageIndex" in arguments:
            item = pick("image", arguments["sourceImageIndex"], "sourceImageIndex")
        elif indices:
            item = pick("image", indices[0], "sourceImageIndices[0]")
        else:
            item = context._latest("image")  # pyright: ignore[reportPrivateUsage]
        if item is None:
            raise ToolCallError(f"{name} needs a source image; the conversation has none")
    else:
        return {}
    inputs = {"source_image_url": await _as_url(item, context, "source_image_url")}
    if name == "animate_photo":
        ends: list[Any] = arguments.get("endImageIndices") or []
        end: MediaItem | None = None
        if "endImageIndex" in arguments:
            end = pick("image", arguments["endImageIndex"], "endImageIndex")
        elif ends:
            end = pick("image", ends[0], "endImageIndices[0]")
        if end is not None:
            inputs["end_image_url"] = await _as_url(end, context, "end_image_url")
    return inputs


async def run_hosted_tool(
    hosted: ChatHosted,
    tool_call: ToolCall,
    arguments: dict[str, Any],
    context: MediaContext,
    *,
    token_type: Literal["spark", "sogni"] | None = None,
) -> MediaRun:
    """Run a hosted tool that is neither a direct media tool nor a synchronous one through
    `ChatHosted.execute_tool`; return its result and the media it made.

    The arguments are checked against the tool's manifest schema first (a violation is an
    error result; nothing is sent). A source image the tool takes by index
    (`SOURCE_IMAGE_TOOLS`; ``restore_photo``: the first uploaded image) is resolved against
    ``context`` and sent as ``source_image_url`` (``animate_photo``'s end image as
    ``end_image_url``): a result's own URL, or an upload as a ``data:`` URI. The URLs of the
    server's ``data.result.urls`` are the result's ``result_urls`` and the media it returns
    (for ``context``). A refusal (any HTTP error, e.g. an unsupported tool) or a
    ``result.success: false`` is an error result carrying the server's message. Cancellation
    propagates (closing the request, which cancels the tool's work on the server).
    """
    name = tool_call.function.name
    schema = hosted_tool_schemas().get(name)
    if schema is not None:
        try:
            check_arguments(arguments, schema)
        except SchemaViolation as exc:
            return error_result(
                tool_call, f"invalid argument {exc.argument or 'arguments'}: {exc.message}"
            ), []
    try:
        sent = {**arguments, **await _hosted_inputs(name, arguments, context)}
        answer = await hosted.execute_tool(name, sent, token_type=token_type)
    except (ToolCallError, SogniError) as exc:
        return error_result(tool_call, str(exc)), []
    result: Any = answer.result
    fields: dict[str, Any] = cast("dict[str, Any]", result) if isinstance(result, dict) else {}
    if fields.get("success") is False:
        message = fields.get("error") or answer.message or f"{name} failed"
        return error_result(tool_call, str(message)), []
    raw_urls: object = fields.get("urls")
    urls = (
        [url for url in cast("list[object]", raw_urls) if isinstance(url, str)]
        if isinstance(raw_urls, list)
        else []
    )
    declared = fields.get("media_type")
    kind: MediaKind | None = (
        declared if declared in ("image", "video", "audio") else HOSTED_MEDIA_KINDS.get(name)
    )
    project_id = str(fields.get("projectId") or answer.tool_call_id or tool_call.id)
    produced = (
        [
            (hosted.media_result(url, kind, project_id=project_id, render_id=str(i)), url)
            for i, url in enumerate(urls)
        ]
        if kind is not None
        else []
    )
    content: dict[str, Any] = {"success": True, "tool": answer.tool, "result": result}
    if urls:
        content.update(media_type=kind, urls=urls)
    if answer.message:
        content["message"] = answer.message
    return success_result(tool_call, content, urls), produced
