"""``sogni.projects``: media projects (image, video, audio), the public facade.

`ProjectsAPI` holds no project state of its own: each project's state is a sans-IO
`ProjectSlot` (`trio_sogni._projectstate`) kept and fed by the job router, sent and cancelled by
the Trio `JobDriver`. `Project` is the caller's side of one slot, as `ChatStream` is of a chat
job. Options are checked against the media model catalog (`trio_sogni._media._models`) and the
request is built by `trio_sogni._media._request` before anything is sent; inputs are uploaded
through `trio_sogni._media._inputs`; results download through `MediaResult`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeAlias, TypedDict, Unpack, final

import msgspec
import trio
from typing_extensions import override

from ._driver import JobDriver
from ._errors import InvalidRequestError, ProjectError
from ._event_types import PROJECT_EVENT_KINDS, ProjectEventKind
from ._events import Callback, EventHub, EventSubscription
from ._media._inputs import MediaInputSource, media_input, upload_input
from ._media._models import MediaCatalog, MediaModelCatalog
from ._media._request import ProjectOptions, build_job_request, new_project_id
from ._media._results import MediaResult
from ._projectstate import ProgressCell, ProjectSlot, ProjectStatus, RenderEnd, RenderState
from ._router import JobRouter
from ._transport import RestClient

__all__ = [
    "Completed",
    "Failed",
    "Processing",
    "Project",
    "ProjectParams",
    "ProjectProgress",
    "ProjectProgressStatistics",
    "ProjectUpdate",
    "ProjectsAPI",
    "ProjectsStatistics",
    "Queued",
    "RenderCompleted",
    "RenderFailed",
]

logger = logging.getLogger("trio_sogni.projects")

_INPUT_ROLES: Final = {
    "starting_image": "startingImage",
    "reference_image": "referenceImage",
    "reference_image_end": "referenceImageEnd",
    "reference_audio": "referenceAudio",
    "reference_video": "referenceVideo",
}
_OPTION_NAMES: Final = frozenset(f.name for f in fields(ProjectOptions))


class ProjectParams(TypedDict, total=False):
    """Optional keyword arguments of `ProjectsAPI.create`: the fields of `ProjectOptions`
    other than ``type``, ``model``, ``prompt`` and the media inputs (see `ProjectOptions` for
    what each means and allows)."""

    negative_prompt: str
    style_prompt: str
    number_of_media: int
    number_of_previews: int
    width: int
    height: int
    size_preset: str
    steps: int
    guidance: float
    seed: int
    random_seed: bool
    sampler: str
    scheduler: str
    output_format: str
    token_type: Literal["spark", "sogni"]
    disable_safety: bool
    network: Literal["fast", "relaxed"]
    app_source: str
    duration: float
    fps: float
    frames: int
    bpm: int
    timesignature: str
    language: str
    lyrics: str
    keyscale: str
    composer_mode: bool
    prompt_strength: float
    creativity: float
    starting_image_strength: float


# --- progress updates --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    """The project waits in the queue: ``position`` (1 is next) and ``eta``, the estimated
    seconds until it starts, when the server said."""

    project_id: str
    position: int | None
    eta: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Processing:
    """A render is running: the latest step the client knows of (a slow consumer gets the
    latest one, not every one). ``percent`` is 0 to 100; ``eta`` the seconds left, if known."""

    project_id: str
    render_id: str | None
    index: int
    step: int
    step_count: int | None
    percent: float
    eta: float | None
    worker_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderCompleted:
    """A render finished; ``result`` is its media (see `MediaResult`)."""

    project_id: str
    result: MediaResult


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderFailed:
    """A render failed (a ``jobError`` naming it) or was cancelled; the project goes on."""

    project_id: str
    render_id: str | None
    index: int
    error: ProjectError


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The project completed: ``results`` are its finished renders' media, by render index."""

    project_id: str
    results: list[MediaResult]


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The project failed or was cancelled (``canceled``); ``error`` says why (a
    `ProjectError`, or the client's error if it closed or lost its connection)."""

    project_id: str
    error: BaseException
    canceled: bool


ProjectUpdate: TypeAlias = Queued | Processing | RenderCompleted | RenderFailed | Completed | Failed
"""What `Project.progress` yields."""


class ProjectProgressStatistics(msgspec.Struct, kw_only=True, frozen=True):
    """A snapshot of one project's update queue (see `Project.statistics`): updates waiting,
    the most that ever waited, and how many reports were coalesced into waiting ones."""

    buffered: int
    buffer_peak: int
    coalesced: int


class ProjectsStatistics(msgspec.Struct, kw_only=True, frozen=True):
    """Counters of ``sogni.projects`` (see `ProjectsAPI.statistics`)."""

    live_projects: int
    """Projects in flight (not ended and not closed)."""
    detached: int
    """Jobs and projects waiting for a connection to resume them."""
    reconciled: int
    """Projects brought up to date from a server snapshot after a reconnect."""
    late_frames: int
    """Frames for jobs or projects this client no longer tracks (counted, not lost)."""
    malformed_frames: int


# --- one project -------------------------------------------------------------------------------


@final
class Project:
    """One media project in flight, and its results.

    Create it with `ProjectsAPI.create`; use it as an async context manager so leaving the
    block early cancels it on the server::

        async with await sogni.projects.create(type="image", model=m, prompt="a fox") as project:
            async for update in project.progress():
                print(update)
            results = await project.wait()

    * `wait` returns the results once the project completed (every render ended), or raises
      its error. It does not consume `progress`.
    * `progress` yields typed updates (`Queued`, `Processing`, `RenderCompleted`,
      `RenderFailed`, then `Completed` or `Failed`) from a bounded queue that coalesces step
      reports; a slow reader never holds up the socket and never misses a render's end.
    * **Leaving the ``async with`` block** before the project ended (an exception, a cancel
      scope, ``break``) cancels it on the server: ``jobError artistCanceled`` sent from a
      shielded scope bounded by the client's ``abort_grace``; local state is freed either way.
      `cancel` does the same explicitly. A project dropped without being closed is cancelled on
      a best-effort basis when it is garbage-collected.
    """

    def __init__(
        self, slot: ProjectSlot, driver: JobDriver, rest: RestClient, options: ProjectOptions
    ) -> None:
        self._slot = slot
        self._driver = driver
        self._rest = rest
        self.options = options
        """The options the project was sent with (the tier's defaults filled in)."""
        self._results: dict[int, MediaResult] = {}
        self._reading = False
        self._closed = False

    @override
    def __repr__(self) -> str:
        slot = self._slot
        return (
            f"<Project {slot.job_id} {slot.media_type} model={slot.model!r} {slot.status} "
            f"renders={slot.finished_renders()}/{slot.expected}>"
        )

    # --- state ------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The project id (``jobID``, an upper-case UUID4)."""
        return self._slot.job_id

    @property
    def media_type(self) -> str:
        """``image``, ``video`` or ``audio`` (the ``type`` it was created with)."""
        return self._slot.media_type

    @property
    def model(self) -> str:
        return self._slot.model

    @property
    def status(self) -> ProjectStatus:
        """``pending``, ``queued``, ``processing``, ``completed``, ``failed`` or ``canceled``."""
        return self._slot.status

    @property
    def queue_position(self) -> int | None:
        """The position in the queue while ``queued``."""
        return self._slot.queue_position

    @property
    def eta(self) -> float | None:
        """Seconds until the project starts (while queued) or the longest render's seconds
        left (while processing), when the server said."""
        slot = self._slot
        if slot.status == "processing":
            etas = [r.eta for r in slot.renders.values() if r.eta is not None and not r.finished]
            return max(etas) if etas else None
        return slot.eta

    @property
    def expected_renders(self) -> int:
        """How many renders the project makes (``number_of_media``)."""
        return self._slot.expected

    @property
    def done(self) -> bool:
        """True once the project completed, failed or was cancelled."""
        return self._slot.done

    @property
    def error(self) -> BaseException | None:
        """Why the project failed, if it did."""
        return self._slot.error

    @property
    def results(self) -> list[MediaResult]:
        """The media of every render finished so far (not cancelled or failed), by index."""
        return [
            self._result(render)
            for _, render in sorted(self._slot.renders.items())
            if render.status == "completed"
        ]

    @property
    def render_errors(self) -> list[ProjectError]:
        """The errors of the renders that failed (the project may still complete)."""
        return [r.error for _, r in sorted(self._slot.renders.items()) if r.error is not None]

    def statistics(self) -> ProjectProgressStatistics:
        """The update queue's size, peak and coalesced reports (bounded by ``2 * renders + 2``
        updates however slow the reader)."""
        slot = self._slot
        return ProjectProgressStatistics(
            buffered=len(slot.updates), buffer_peak=slot.updates_peak, coalesced=slot.coalesced
        )

    def _result(self, render: RenderState) -> MediaResult:
        cached = self._results.get(render.index)
        if cached is not None and cached.render_id == render.img_id:
            return cached
        slot = self._slot
        result = render.result
        seed: int | None = None
        if result is not None and result.last_seed is not None and result.last_seed.isdigit():
            seed = int(result.last_seed)
        media = MediaResult(
            self._rest,
            project_id=slot.job_id,
            render_id=render.img_id or "",
            media_type=slot.media_type,  # type: ignore[arg-type]
            output_format=(result.output_format if result else None) or slot.output_format,
            seed=seed,
            nsfw=bool(result and result.triggered_nsfw_filter),
            nsfw_detected=bool(result and result.nsfw_detected),
            performed_steps=result.performed_step_count if result else None,
            result_url=result.result_url if result else None,
            last_frame_url=result.last_frame_url if result else None,
        )
        self._results[render.index] = media
        return media

    # --- waiting ----------------------------------------------------------------------------------

    async def wait(self) -> list[MediaResult]:
        """Wait until the project ends; return its results (every completed render's media, by
        index). Always a checkpoint; cancel-safe (cancelling the wait does not cancel the
        project: leaving its ``async with`` does).

        Raises:
            ProjectError: the project failed or was cancelled (``code``; ``retryable`` when the
                connection was lost and the server could not give it back), or it completed
                with no render succeeding (the first render's error).
            ClientClosedError: the client closed while the project ran.
        """
        slot = self._slot
        if slot.done:
            await trio.lowlevel.checkpoint()
        else:
            if slot.done_lot is None:
                slot.done_lot = trio.lowlevel.ParkingLot()
            while not slot.done:
                await slot.done_lot.park()
        if slot.error is not None:
            raise slot.error
        results = self.results
        if not results and slot.expected:
            errors = self.render_errors
            if errors:
                raise errors[0]
            raise ProjectError(
                "the project completed without any finished render",
                project_id=slot.job_id,
                code="no_results",
            )
        return results

    def progress(self) -> ProjectProgress:
        """The project's updates as a `ProjectProgress` channel: one reader at a time (a reader
        that received the final update or was closed makes way for the next, which gets the
        final update again).

        Raises:
            trio.BusyResourceError: another `ProjectProgress` of this project is open.
        """
        if self._reading:
            raise trio.BusyResourceError("another task is reading this project's progress")
        self._reading = True
        return ProjectProgress(self)

    def _next_update(self) -> ProjectUpdate | None:
        slot = self._slot
        item = slot.take()
        if item is None:
            return None
        if isinstance(item, ProgressCell):
            render = item.render
            if render is None:
                position, eta = item.value or (None, None)
                return Queued(project_id=slot.job_id, position=position, eta=eta)
            return Processing(
                project_id=slot.job_id,
                render_id=render.img_id,
                index=render.index,
                step=render.step,
                step_count=render.step_count,
                percent=round(render.progress * 100, 3),
                eta=render.eta,
                worker_name=render.worker_name,
            )
        if isinstance(item, RenderEnd):
            render = item.render
            if render.status == "completed":
                return RenderCompleted(project_id=slot.job_id, result=self._result(render))
            error = render.error or ProjectError(
                "the render was cancelled",
                project_id=slot.job_id,
                img_id=render.img_id,
                code="userCanceled",
            )
            return RenderFailed(
                project_id=slot.job_id, render_id=render.img_id, index=render.index, error=error
            )
        return self._next_final()

    def _next_final(self) -> Completed | Failed:
        slot = self._slot
        if slot.error is not None:
            return Failed(
                project_id=slot.job_id, error=slot.error, canceled=slot.status == "canceled"
            )
        return Completed(project_id=slot.job_id, results=self.results)

    # --- cancelling -------------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Cancel the project on the server if it still runs (``jobError artistCanceled``, a
        shielded send bounded by ``abort_grace``) and end it here as ``canceled``: `wait` and
        `progress` then end with a `ProjectError` (code ``artistCanceled``). Always a
        checkpoint; a no-op once the project ended."""
        await self._driver.release(self._slot)

    async def aclose(self) -> None:
        """Cancel the project if it still runs (see `cancel`) and free its state. Idempotent;
        always a checkpoint."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self._driver.release(self._slot)
        finally:
            self._slot.close()

    async def __aenter__(self) -> Project:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        slot = self._slot
        if not self._closed and not slot.done:
            self._closed = True
            slot.close()
            self._driver.orphaned(slot)


@final
class ProjectProgress(trio.abc.ReceiveChannel[ProjectUpdate]):
    """The updates of one project (see `Project.progress`), ending after `Completed` or
    `Failed`.

    `receive` is a checkpoint and cancel-safe (no update is lost when it is cancelled). It
    never blocks the receive loop: the queue behind it coalesces (see `Project`). Closing the
    channel does not cancel the project.
    """

    def __init__(self, project: Project) -> None:
        self._project = project
        self._ended = False
        self._closed = False

    @override
    async def receive(self) -> ProjectUpdate:
        """The next update.

        Raises:
            trio.EndOfChannel: after the final update (`Completed` / `Failed`).
            trio.ClosedResourceError: this channel (or the project) was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        project = self._project
        slot = project._slot  # pyright: ignore[reportPrivateUsage]
        while True:
            if self._closed or (slot.closed and not slot.updates):
                if self._ended:
                    raise trio.EndOfChannel
                raise trio.ClosedResourceError("this project's progress was closed")
            if self._ended:
                raise trio.EndOfChannel
            update = project._next_update()  # pyright: ignore[reportPrivateUsage]
            if update is not None:
                if isinstance(update, Completed | Failed):
                    self._end()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return update
            if slot.done and not slot.updates:
                # An earlier reader took the final update: report the end again.
                self._end()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return project._next_final()  # pyright: ignore[reportPrivateUsage]
            if slot.lot is None:
                slot.lot = trio.lowlevel.ParkingLot()
            slot.parked = True
            await slot.lot.park()

    def _end(self) -> None:
        # The final update is out: another reader may start (it gets the final update again).
        self._ended = True
        self._project._reading = False  # pyright: ignore[reportPrivateUsage]

    @override
    async def aclose(self) -> None:
        """Stop reading (the project goes on). A checkpoint; idempotent."""
        if not self._closed:
            self._closed = True
            if not self._ended:  # else it made way already (and a new reader may be reading)
                self._project._reading = False  # pyright: ignore[reportPrivateUsage]
        await trio.lowlevel.checkpoint()


# --- the facade --------------------------------------------------------------------------------


class ProjectsAPI:
    """``sogni.projects``: media projects (the official SDKs' ``projects`` API), Trio-style.

    Attributes:
        catalog: the media model catalog (`MediaModelCatalog`: ``/api/v1/models/list`` and
            ``/api/v2/models/tiers``, cached 24 hours).
    """

    def __init__(
        self,
        *,
        router: JobRouter,
        driver: JobDriver,
        events: EventHub,
        rest: RestClient,
        catalog: MediaModelCatalog,
        models_lot: trio.lowlevel.ParkingLot,
        app_source: str | None,
    ) -> None:
        self._router = router
        self._driver = driver
        self._events = events
        self._rest = rest
        self.catalog = catalog
        self._models_lot = models_lot
        self._app_source = app_source

    @override
    def __repr__(self) -> str:
        return (
            f"<ProjectsAPI live_projects={self._router.statistics().live_projects} "
            f"media_models={len(self._router.media_models)}>"
        )

    # --- models -----------------------------------------------------------------------------------

    @property
    def media_models(self) -> dict[str, int]:
        """The latest media model map from ``swarmModels``: ``{model id: worker count}`` (a
        copy)."""
        return dict(self._router.media_models)

    async def wait_for_models(self) -> dict[str, int]:
        """Return `media_models` once it is non-empty, waiting for a ``swarmModels`` if needed.
        Always a checkpoint. Cancellable; bound it with ``trio.fail_after`` (the official SDKs
        wait 10 s)."""
        while not self._router.media_models:
            await self._models_lot.park()
        await trio.lowlevel.checkpoint()
        return dict(self._router.media_models)

    async def models(self, *, force_refresh: bool = False) -> MediaCatalog:
        """The media model catalog with the tiers (fetched on first use, cached 24 hours; see
        `MediaModelCatalog.get`)."""
        return await self.catalog.get(force_refresh=force_refresh)

    # --- creating ---------------------------------------------------------------------------------

    async def create(
        self,
        *,
        type: Literal["image", "video", "audio"],  # noqa: A002 - the official SDKs' name
        model: str,
        prompt: str,
        starting_image: MediaInputSource | None = None,
        context_images: Sequence[MediaInputSource] = (),
        reference_image: MediaInputSource | None = None,
        reference_image_end: MediaInputSource | None = None,
        reference_audio: MediaInputSource | None = None,
        reference_video: MediaInputSource | None = None,
        **params: Unpack[ProjectParams],
    ) -> Project:
        """Create a media project and return its `Project` at once (use it with ``async
        with``).

        ``params`` (`ProjectParams`) are the other fields of `ProjectOptions`: ``number_of_media`` (1 to 16),
        ``negative_prompt``, ``style_prompt``, ``width``/``height`` or ``size_preset``,
        ``steps``, ``guidance``, ``seed``, ``sampler``, ``scheduler``, ``output_format``,
        ``duration``/``fps``/``frames`` (video), ``bpm``, ``lyrics``, ``keyscale`` ... (audio),
        ``token_type``, ``network``, ``disable_safety``. Media inputs may be bytes, a path or a
        ``data:`` URI (or a `MediaInput`).

        Order: the inputs are read and sniffed, the options are checked on their own and
        against the model's tier (the catalog is fetched if needed) — any problem raises
        `InvalidRequestError` with **nothing sent**; then the inputs are uploaded (signed
        upload URLs), then the ``jobRequest`` is sent. Every step is cancellable; a
        cancellation before the request is sent leaves nothing running.

        Raises:
            InvalidRequestError: unknown option, unknown model, a tier of another media type,
                an option out of range or not allowed, an unreadable or unsupported input.
            APIStatusError, ProtocolError, TransportError: the catalog or an upload failed.
            ClientClosedError, ConnectionLost: the client is closed / the socket closed for good.
        """
        options: dict[str, Any] = dict(params)
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise InvalidRequestError(
                f"unknown project option(s): {', '.join(unknown)}; see ProjectOptions"
            )
        if "app_source" not in options and self._app_source is not None:
            options["app_source"] = self._app_source
        inputs: dict[str, Any] = {}
        for name, value in (
            ("starting_image", starting_image),
            ("reference_image", reference_image),
            ("reference_image_end", reference_image_end),
            ("reference_audio", reference_audio),
            ("reference_video", reference_video),
        ):
            if value is not None:
                inputs[name] = await media_input(value, _INPUT_ROLES[name])
        if isinstance(context_images, str | bytes):
            raise InvalidRequestError("context_images must be a sequence of media inputs")
        if context_images:
            inputs["context_images"] = tuple(
                [
                    await media_input(value, f"contextImage{index}")
                    for index, value in enumerate(context_images, 1)
                ]
            )
        try:
            requested = ProjectOptions(type=type, model=model, prompt=prompt, **inputs, **options)
        except TypeError as exc:
            raise InvalidRequestError(f"bad project options: {exc}") from None
        prepared = await self.catalog.prepare(requested)
        project_id = new_project_id()
        request = build_job_request(prepared, project_id=project_id)
        for role, media in prepared.inputs():
            await upload_input(self._rest, project_id, role, media)
        slot = await self._driver.start_project(
            request,
            model=prepared.model,
            media_type=prepared.type,
            output_format=str(request.get("outputFormat") or "") or None,
            expected=prepared.number_of_media,
        )
        return Project(slot, self._driver, self._rest, prepared)

    # --- events -----------------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, *kinds: ProjectEventKind, max_buffer: int = 1024
    ) -> AsyncGenerator[EventSubscription]:
        """Subscribe to project events (``project``: queued and ended; ``job``: each render
        started, progressed, completed, failed or was retried; both if none is named) for the
        duration of the block. Bounded at ``max_buffer`` events, the oldest dropped (counted in
        ``.dropped``) when a subscriber is behind; never slows the receive loop."""
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        chosen = self._events.check_kinds(kinds, PROJECT_EVENT_KINDS)
        subscription = self._events.subscribe(chosen, max_buffer)
        try:
            yield subscription
        finally:
            self._events.unsubscribe(subscription)

    def on(self, kind: ProjectEventKind, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously from the receive loop for every ``kind``
        event (`ProjectEvent` or `RenderEvent`); returns a function that removes it.
        Exceptions are logged and ignored. Prefer `subscribe`."""
        if kind not in PROJECT_EVENT_KINDS:
            raise ValueError(f"unknown project event kind {kind!r}; expected 'project' or 'job'")
        return self._events.on(kind, callback)

    def off(self, kind: ProjectEventKind, callback: Callback) -> None:
        """Remove a callback added with `on`."""
        self._events.off(kind, callback)

    def statistics(self) -> ProjectsStatistics:
        """Projects in flight, detached and reconciled, and the router's late and malformed
        frame counts."""
        stats = self._router.statistics()
        return ProjectsStatistics(
            live_projects=stats.live_projects,
            detached=stats.detached_jobs,
            reconciled=stats.projects_reconciled,
            late_frames=stats.late_frames,
            malformed_frames=stats.malformed_frames,
        )
