"""The media-project messages (image, video, audio), in both directions (media-protocol.md §2-4).

A media *project* is one ``jobRequest`` (``jobID`` is the project id) that produces
``numberOfImages`` *renders*; each render has its own ``imgID`` and ``jobIndex`` and travels as
``jobState jobStarted`` → ``jobProgress`` → ``jobResult``. The project ends with
``jobState jobCompleted`` or a ``jobError`` without ``imgID``.

``jobRequest`` keeps the official SDKs' legacy keyframe envelope. Its top-level constants and the
keyframe's fields all have the defaults the SDKs send, so a decoded request re-encodes to the same
JSON. Unlike the chat messages, a ``jobRequest`` is decoded *tolerantly* on the server side too:
the SDKs add fields release by release (attribution, LoRAs, per-model options), and a server must
not refuse a project over a field it does not use. Unknown fields are dropped.

Server-to-client payloads ignore unknown fields and give every field a default, like the chat
ones. The ``jobState`` and ``jobError`` payloads are shared with chat jobs and live in
:mod:`trio_sogni.protocol._messages`; their media fields (``imgID``, ``jobIndex`` ...) are optional
there.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType, field

__all__ = [
    "MEDIA_TYPES",
    "ArtistCancelConfirmation",
    "JobETA",
    "JobProgress",
    "JobResult",
    "JobRetry",
    "MediaJobRequest",
    "MediaKeyFrame",
    "MediaType",
    "ProjectModel",
    "ProjectQueue",
    "ProjectSnapshot",
    "SwarmModels",
    "WorkerJobSnapshot",
    "WorkerRef",
]

MediaType = Literal["image", "video", "audio"]
"""What a media model produces (the ``media`` of ``/api/v1/models/list``, a tier's ``type``)."""

MEDIA_TYPES: tuple[MediaType, ...] = ("image", "video", "audio")
"""Every :data:`MediaType`."""

Number = int | float


# --- client -> server -----------------------------------------------------------------------------


def _no_frames() -> list[Any]:
    return []


def _origin() -> list[Number]:
    return [0, 0]


class MediaKeyFrame(msgspec.Struct, kw_only=True, omit_defaults=False):
    """The one keyframe of a ``jobRequest``: model, prompts and render settings.

    Fields the official SDKs always send have their default here (a ``None`` one is sent as
    ``null``); fields they send only when set are ``UNSET`` and left out. The sampler fields are
    legacy-named for non-Comfy image models: ``scheduler`` holds the *sampler* and
    ``time_step_spacing`` the *scheduler*; Comfy models (and every video and audio model) use
    ``comfy_sampler`` / ``comfy_scheduler``.
    """

    model_id: str = field(name="modelID")
    positive_prompt: str = field(default="", name="positivePrompt")
    negative_prompt: str | UnsetType = field(default=UNSET, name="negativePrompt")
    style_prompt: str = field(default="", name="stylePrompt")
    steps: Number | UnsetType = UNSET
    guidance_scale: Number | UnsetType = field(default=UNSET, name="guidanceScale")
    seed: int | UnsetType = UNSET
    scheduler: str | None = None
    time_step_spacing: str | None = field(default=None, name="timeStepSpacing")
    comfy_sampler: str | UnsetType | None = field(default=UNSET, name="comfySampler")
    comfy_scheduler: str | UnsetType | None = field(default=UNSET, name="comfyScheduler")
    vae: str | UnsetType | None = UNSET
    size_preset: str | UnsetType | None = field(default=UNSET, name="sizePreset")
    width: Number | UnsetType = UNSET
    height: Number | UnsetType = UNSET
    # video
    frames: int | UnsetType = UNSET
    fps: Number | UnsetType = UNSET
    # audio (``duration`` is seconds)
    duration: Number | UnsetType = UNSET
    bpm: Number | UnsetType = UNSET
    timesignature: str | Number | UnsetType = UNSET
    language: str | UnsetType = UNSET
    lyrics: str | UnsetType = UNSET
    keyscale: str | UnsetType = UNSET
    composer_mode: bool | str | UnsetType = field(default=UNSET, name="composerMode")
    prompt_strength: Number | UnsetType = field(default=UNSET, name="promptStrength")
    creativity: Number | UnsetType = UNSET
    shift: Number | UnsetType = UNSET
    # media inputs (set when the input was uploaded for this project)
    has_starting_image: bool | UnsetType = field(default=UNSET, name="hasStartingImage")
    has_reference_image: bool | UnsetType = field(default=UNSET, name="hasReferenceImage")
    has_reference_image_end: bool | UnsetType = field(default=UNSET, name="hasReferenceImageEnd")
    has_reference_audio: bool | UnsetType = field(default=UNSET, name="hasReferenceAudio")
    has_reference_video: bool | UnsetType = field(default=UNSET, name="hasReferenceVideo")
    loras: list[str] | UnsetType = UNSET
    lora_strengths: list[Number] | UnsetType = field(default=UNSET, name="loraStrengths")
    # The legacy constants the SDKs send with every keyframe.
    steps_is_enabled: bool = field(default=True, name="stepsIsEnabled")
    si_rotation: Number = field(default=0, name="siRotation")
    si_drag_offset_is_enabled: bool = field(default=True, name="siDragOffsetIsEnabled")
    strength: Number = 0.5
    si_zoom_scale_is_enabled: bool = field(default=True, name="siZoomScaleIsEnabled")
    is_enabled: bool = field(default=True, name="isEnabled")
    processing: str = "CPU, GPU"
    use_last_image_as_guide_image_in_animation: bool = field(
        default=True, name="useLastImageAsGuideImageInAnimation"
    )
    guidance_scale_is_enabled: bool = field(default=True, name="guidanceScaleIsEnabled")
    si_image_background_color: str = field(default="black", name="siImageBackgroundColor")
    cn_drag_offset: list[Number] = field(default_factory=_origin, name="cnDragOffset")
    cn_rotation: Number = field(default=0, name="cnRotation")
    si_zoom_scale: Number = field(default=1, name="siZoomScale")
    cn_rotation_is_enabled: bool = field(default=True, name="cnRotationIsEnabled")
    starting_image_zoom_pan_is_on: bool = field(default=False, name="startingImageZoomPanIsOn")
    si_rotation_is_enabled: bool = field(default=True, name="siRotationIsEnabled")
    cn_image_background_color: str = field(default="clear", name="cnImageBackgroundColor")
    strength_is_enabled: bool = field(default=True, name="strengthIsEnabled")
    si_drag_offset: list[Number] = field(default_factory=_origin, name="siDragOffset")
    use_last_image_as_cn_image_in_animation: bool = field(
        default=False, name="useLastImageAsCNImageInAnimation"
    )
    control_net_zoom_pan_is_on: bool = field(default=False, name="controlNetZoomPanIsOn")
    cn_zoom_scale_is_enabled: bool = field(default=True, name="cnZoomScaleIsEnabled")
    current_control_nets: Any = field(default=None, name="currentControlNets")
    cn_drag_offset_is_enabled: bool = field(default=True, name="cnDragOffsetIsEnabled")
    frame_index: int = field(default=0, name="frameIndex")
    starting_image: Any = field(default=None, name="startingImage")
    cn_zoom_scale: Number = field(default=1, name="cnZoomScale")
    has_context_image1: bool = field(default=False, name="hasContextImage1")
    has_context_image2: bool = field(default=False, name="hasContextImage2")
    has_context_image3: bool = field(default=False, name="hasContextImage3")
    has_context_image4: bool = field(default=False, name="hasContextImage4")
    has_context_image5: bool = field(default=False, name="hasContextImage5")
    has_context_image6: bool = field(default=False, name="hasContextImage6")
    has_context_image7: bool = field(default=False, name="hasContextImage7")
    has_context_image8: bool = field(default=False, name="hasContextImage8")
    has_context_image9: bool = field(default=False, name="hasContextImage9")
    has_context_image10: bool = field(default=False, name="hasContextImage10")
    has_context_image11: bool = field(default=False, name="hasContextImage11")
    has_context_image12: bool = field(default=False, name="hasContextImage12")
    has_context_image13: bool = field(default=False, name="hasContextImage13")
    has_context_image14: bool = field(default=False, name="hasContextImage14")
    has_context_image15: bool = field(default=False, name="hasContextImage15")
    has_context_image16: bool = field(default=False, name="hasContextImage16")

    def context_images(self) -> tuple[int, ...]:
        """The 1-based slots whose ``hasContextImageN`` is set."""
        return tuple(n for n in range(1, 17) if getattr(self, f"has_context_image{n}"))


class MediaJobRequest(msgspec.Struct, kw_only=True, omit_defaults=False):
    """``jobRequest``: start one media project (media-protocol.md §2).

    ``job_id`` is the project id (an upper-case UUID minted by the client); ``key_frames`` holds
    exactly one :class:`MediaKeyFrame`; ``number_of_images`` is how many renders the project
    makes (for every media type). Decoded tolerantly on both sides (unknown fields dropped).
    """

    message_type: ClassVar[str] = "jobRequest"

    job_id: str = field(name="jobID")
    key_frames: list[MediaKeyFrame] = field(name="keyFrames")
    number_of_images: int = field(default=1, name="numberOfImages")
    previews: int = 0
    disable_safety: bool = field(default=False, name="disableSafety")
    token_type: Literal["sogni", "spark"] | UnsetType = field(default=UNSET, name="tokenType")
    output_format: str | UnsetType = field(default=UNSET, name="outputFormat")
    billing_mode: str | UnsetType = field(default=UNSET, name="billingMode")
    network: Literal["fast", "relaxed"] | UnsetType = UNSET
    app_source: str | UnsetType = field(default=UNSET, name="appSource")
    prompt_expanded: bool | UnsetType = field(default=UNSET, name="promptExpanded")
    embed_prompt_metadata: bool | UnsetType = field(default=UNSET, name="embedPromptMetadata")
    # The legacy constants of the envelope.
    selected_upscaling_model: str = field(default="OFF", name="selectedUpscalingModel")
    do_canvas_blending: bool = field(default=False, name="doCanvasBlending")
    animation_is_on: bool = field(default=False, name="animationIsOn")
    frame_rate: Number = field(default=24, name="frameRate")
    generated_video_seconds: Number = field(default=10, name="generatedVideoSeconds")
    canvas_is_on: bool = field(default=False, name="canvasIsOn")
    cn_video_frames: list[Any] = field(default_factory=_no_frames, name="cnVideoFrames")
    cn_video_frames_sketch: list[Any] = field(
        default_factory=_no_frames, name="cnVideoFramesSketch"
    )
    cn_video_frames_segmented_subject: list[Any] = field(
        default_factory=_no_frames, name="cnVideoFramesSegmentedSubject"
    )
    cn_video_frames_face: list[Any] = field(default_factory=_no_frames, name="cnVideoFramesFace")
    cn_video_frames_both: list[Any] = field(default_factory=_no_frames, name="cnVideoFramesBoth")
    cn_video_frames_depth: list[Any] = field(default_factory=_no_frames, name="cnVideoFramesDepth")
    cn_video_frames_segmented_background: list[Any] = field(
        default_factory=_no_frames, name="cnVideoFramesSegmentedBackground"
    )
    cn_video_frames_segmented: list[Any] = field(
        default_factory=_no_frames, name="cnVideoFramesSegmented"
    )
    cn_video_frames_pose: list[Any] = field(default_factory=_no_frames, name="cnVideoFramesPose")
    si_video_frames: list[Any] = field(default_factory=_no_frames, name="siVideoFrames")
    # Workload attribution (the same wire fields as ``llmJobRequest``'s).
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

    @property
    def key_frame(self) -> MediaKeyFrame | None:
        """The keyframe (``None`` when the list is empty, which a server refuses)."""
        return self.key_frames[0] if self.key_frames else None


# --- server -> client -----------------------------------------------------------------------------


class JobProgress(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """``jobProgress``: a render finished step ``step`` of ``step_count``; ``progress`` is
    ``0..1``. ``has_image`` tells the client a preview can be fetched."""

    message_type: ClassVar[str] = "jobProgress"

    job_id: str = field(name="jobID")
    img_id: str | None = field(default=None, name="imgID")
    step: int | None = None
    step_count: int | None = field(default=None, name="stepCount")
    progress: Number | None = None
    eta_seconds: Number | None = field(default=None, name="etaSeconds")
    has_image: bool | None = field(default=None, name="hasImage")
    job_index: int | None = field(default=None, name="jobIndex")


class JobETA(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """``jobETA``: a render's estimated seconds to completion."""

    message_type: ClassVar[str] = "jobETA"

    job_id: str = field(name="jobID")
    img_id: str | None = field(default=None, name="imgID")
    eta_seconds: Number | None = field(default=None, name="etaSeconds")


class JobResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``jobResult``: one render ended, with its media (``user_canceled`` false) or cancelled.

    ``last_seed`` is a decimal string on the wire. Without ``result_url`` the client mints a
    download URL (``/v1/image/downloadUrl`` or ``/v1/media/downloadUrl``). Media withheld by the
    safety filter has ``triggered_nsfw_filter`` set (and no ``nsfw_detected``).
    """

    message_type: ClassVar[str] = "jobResult"

    job_id: str = field(name="jobID")
    img_id: str | None = field(default=None, name="imgID")
    performed_step_count: int | None = field(default=None, name="performedStepCount")
    last_seed: str | None = field(default=None, name="lastSeed")
    user_canceled: bool = field(default=False, name="userCanceled")
    triggered_nsfw_filter: bool = field(default=False, name="triggeredNSFWFilter")
    nsfw_detected: bool | None = field(default=None, name="nsfwDetected")
    output_format: str | None = field(default=None, name="outputFormat")
    result_url: str | None = field(default=None, name="resultUrl")
    last_frame_url: str | None = field(default=None, name="lastFrameUrl")
    job_index: int | None = field(default=None, name="jobIndex")
    worker_name: str | None = field(default=None, name="workerName")


class JobRetry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``jobRetry``: a render's worker failed and the render went back to the queue; its next
    attempt has a new ``imgID`` and the same ``job_index``."""

    message_type: ClassVar[str] = "jobRetry"

    job_id: str = field(name="jobID")
    img_id: str | None = field(default=None, name="imgID")
    job_index: int | None = field(default=None, name="jobIndex")
    worker_name: str | None = field(default=None, name="workerName")
    error_message: str | None = None


class ArtistCancelConfirmation(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``artistCancelConfirmation``: the answer to a project cancel (``jobError
    artistCanceled``). ``did_cancel`` is false for a project the server does not hold."""

    message_type: ClassVar[str] = "artistCancelConfirmation"

    job_id: str = field(name="jobID")
    did_cancel: bool = field(default=False, name="didCancel")
    error_message: str | None = None


class SwarmModels(msgspec.Struct, kw_only=True, frozen=True):
    """``swarmModels``: the media models with workers, ``{modelId: workerCount}``, replacing any
    earlier map. On the wire the payload *is* the map."""

    message_type: ClassVar[str] = "swarmModels"

    models: dict[str, int]


class ProjectQueue(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``projectQueue``: why a queued project waits (an opt-in event group, ``projectQueue``)."""

    message_type: ClassVar[str] = "projectQueue"

    job_id: str = field(name="jobID")
    queue_position: int | None = field(default=None, name="queuePosition")
    estimated_start_seconds: Number | None = field(default=None, name="estimatedStartSeconds")
    queue_status: str | None = field(default=None, name="queueStatus")
    waiting_reason: dict[str, Any] | None = field(default=None, name="waitingReason")


class WorkerRef(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The worker of a render in a :class:`ProjectSnapshot`."""

    name: str | None = None
    username: str | None = None


class WorkerJobSnapshot(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One render of a :class:`ProjectSnapshot`. ``status`` is the render's last state
    (``queued``, ``assigned``, ``jobStarted``, ``jobProgress``, ``jobCompleted``, ``jobError``);
    ``reason`` says why a finished render did not complete (``artistCanceled``, ...)."""

    id: str
    img_id: str | None = field(default=None, name="imgID")
    job_index: int | None = field(default=None, name="jobIndex")
    status: str = "queued"
    reason: str | None = None
    worker: WorkerRef | None = None
    performed_steps: int | None = field(default=None, name="performedSteps")
    step_count: int | None = field(default=None, name="stepCount")
    seed_used: int | None = field(default=None, name="seedUsed")
    result_url: str | None = field(default=None, name="resultUrl")
    triggered_nsfw_filter: bool | None = field(default=None, name="triggeredNSFWFilter")
    output_format: str | None = field(default=None, name="outputFormat")


class ProjectModel(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The model of a :class:`ProjectSnapshot` (``type`` is its media type)."""

    id: str
    name: str | None = None
    type: str | None = None


class ProjectSnapshot(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A project as a reconnecting client recovers it (``authenticated.activeProjects`` /
    ``unclaimedCompletedProjects``, ``GET /api/v1/artist/projects/sync``).

    ``status`` is ``queued``, ``active``, ``completed``, ``errored`` or ``cancelled``;
    ``client_request_data`` is the original ``jobRequest`` payload, base64 JSON, from which the
    official SDKs rebuild a project they do not track.
    """

    id: str
    status: str
    app_id: str | None = field(default=None, name="appId")
    model: ProjectModel | None = None
    job_type: str | None = field(default=None, name="jobType")
    image_count: int | None = field(default=None, name="imageCount")
    step_count: int | None = field(default=None, name="stepCount")
    token_type: str | None = field(default=None, name="tokenType")
    network: str | None = None
    create_time: int | None = field(default=None, name="createTime")
    reason: str | None = None
    client_request_data: str | None = field(default=None, name="clientRequestData")
    worker_jobs: list[WorkerJobSnapshot] | None = field(default=None, name="workerJobs")
    completed_worker_jobs: list[WorkerJobSnapshot] | None = field(
        default=None, name="completedWorkerJobs"
    )
