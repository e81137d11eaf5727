"""Per-project state of a media project, with no I/O and no Trio: the second kind of job the
router keeps (`trio_sogni._router`), beside chat jobs (`trio_sogni._jobstate.JobSlot`).

A project (one ``jobRequest``, id = ``jobID``) makes ``expected`` *renders*; each has an
``imgID`` and a ``jobIndex`` (a render retried after a worker failure, ``jobRetry``, comes back
with a new ``imgID`` and the same index, so renders are keyed by index). The router feeds a
`ProjectSlot` synchronously; it never blocks and never schedules anything. Waiting consumers
are woken through the `Waiter` s they left in ``lot`` / ``done_lot`` (Trio parking lots in
practice), exactly as for `JobSlot`.

**Progress buffering.** Every change a consumer may want is queued as an *update item*:

* a queue report (position, estimate) and each render's step progress are **coalescing
  cells**: while a cell is still waiting in the queue, a newer report of the same kind (the same
  render, for steps) replaces its value in place instead of adding an item;
* a render that ended (result or failure) and the project's end are **terminal items**, never
  replaced and never dropped.

So the queue never holds more than one queue cell, one progress cell per render and one terminal
item per render plus the project's own: at most ``2 * expected + 2`` items (34 for the largest
project), however slow the consumer. A slow consumer sees the latest step of each render, every
render's end, and the project's end.

**Completion** (media-protocol.md §3): the project is complete when the server said
``jobCompleted`` *and* every expected render has ended. A ``jobError`` without ``imgID`` fails
the project; with one, it fails that render only.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal, TypeAlias

from ._errors import ProjectError
from ._jobstate import Waiter
from .protocol import JobError, JobProgress, JobResult, JobState, ProjectSnapshot

__all__ = [
    "FINISHED_RENDER_STATES",
    "ProgressCell",
    "ProjectEnd",
    "ProjectSlot",
    "ProjectStatus",
    "RenderEnd",
    "RenderState",
    "RenderStatus",
    "UpdateItem",
    "project_error",
]

ProjectStatus: TypeAlias = Literal[
    "pending", "queued", "processing", "completed", "failed", "canceled"
]
"""Where a project is: ``pending`` (sent, nothing heard yet), ``queued``, ``processing`` (a
render started), then one of ``completed``, ``failed``, ``canceled``."""

RenderStatus: TypeAlias = Literal["assigned", "processing", "completed", "failed", "canceled"]
"""Where one render is."""

FINISHED_RENDER_STATES: Final[frozenset[str]] = frozenset({"completed", "failed", "canceled"})

MAX_RENDERS_TRACKED: Final = 64
"""A project tracks at most this many renders (a request asks for at most 16)."""


def project_error(message: JobError, project_id: str) -> ProjectError:
    """The `ProjectError` of a server ``jobError`` (the project's, or one render's)."""
    code = None if message.error is None else str(message.error)
    text = message.error_message or code or "the project failed"
    return ProjectError(
        text,
        project_id=project_id,
        code=code,
        img_id=message.img_id,
        vendor_failure_category=message.vendor_failure_category,
        is_from_worker=bool(message.is_from_worker),
        payload=message,
    )


class RenderState:
    """One render of a project: its latest progress and, once it ended, its result or error."""

    __slots__ = (
        "error",
        "eta",
        "img_id",
        "index",
        "progress",
        "result",
        "status",
        "step",
        "step_count",
        "worker_name",
    )

    def __init__(self, index: int, img_id: str | None) -> None:
        self.index = index
        self.img_id = img_id
        self.status: RenderStatus = "assigned"
        self.step = 0
        self.step_count: int | None = None
        self.progress = 0.0
        """``0..1``: the latest ``jobProgress.progress`` (``1`` once completed)."""
        self.eta: float | None = None
        """Seconds left, from the latest ``jobProgress`` / ``jobETA``."""
        self.worker_name: str | None = None
        self.result: JobResult | None = None
        """The ``jobResult`` of a completed (or cancelled) render."""
        self.error: ProjectError | None = None
        """Why the render failed (a ``jobError`` with its ``imgID``)."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_RENDER_STATES


class ProgressCell:
    """A coalescing update item: a queue report (``render is None``) or one render's progress.
    ``value`` is replaced while the cell waits in the queue."""

    __slots__ = ("queued", "render", "value")

    def __init__(
        self, render: RenderState | None, value: tuple[int | None, float | None] | None = None
    ) -> None:
        self.render = render
        self.value = value
        """For a queue report: ``(position, estimated start seconds)``."""
        self.queued = True
        """The cell is in the queue (a new report replaces its value) — cleared when taken."""


class RenderEnd:
    """A terminal update item: ``render`` ended (completed, cancelled or failed)."""

    __slots__ = ("render",)

    def __init__(self, render: RenderState) -> None:
        self.render = render


class ProjectEnd:
    """The terminal update item of the project itself (its status says how it ended)."""

    __slots__ = ()


_PROJECT_END: Final = ProjectEnd()

UpdateItem: TypeAlias = ProgressCell | RenderEnd | ProjectEnd


class ProjectSlot:
    """Everything the client holds for one media project. Fed synchronously by the router.

    ``media_type`` and ``output_format`` are what the request asked for (the results' content
    type); ``expected`` is ``numberOfImages``.
    """

    __slots__ = (
        "by_img",
        "cells",
        "closed",
        "coalesced",
        "detached",
        "done",
        "done_lot",
        "error",
        "eta",
        "expected",
        "frames",
        "job_id",
        "lot",
        "media_type",
        "model",
        "output_format",
        "parked",
        "queue_position",
        "reconciled",
        "renders",
        "request",
        "sent",
        "server_completed",
        "status",
        "updates",
        "updates_peak",
    )

    def __init__(
        self, job_id: str, model: str, media_type: str, output_format: str | None, expected: int
    ) -> None:
        self.job_id = job_id
        self.model = model
        self.media_type = media_type
        self.output_format = output_format
        self.expected = expected
        self.status: ProjectStatus = "pending"
        self.queue_position: int | None = None
        self.eta: float | None = None
        """Seconds until the project starts (``estimatedStartSeconds`` while queued)."""
        self.renders: dict[int, RenderState] = {}
        """Renders by ``jobIndex``."""
        self.by_img: dict[str, int] = {}
        """``imgID`` -> ``jobIndex`` (every attempt's)."""
        self.server_completed = False
        """The server sent ``jobCompleted`` (renders may still be finishing)."""
        self.error: BaseException | None = None
        self.done = False
        self.closed = False
        """The consumer closed the project (no more updates are queued)."""
        self.sent = False
        self.detached = False
        """The project's connection died and it waits to be resumed or reconciled."""
        self.reconciled = False
        """The project was recovered from a server snapshot after a reconnect."""
        self.frames = 0
        """Server frames routed to this project (every kind): what a resuming client says it
        has."""
        self.request: bytes | None = None
        """The ``jobRequest`` frame, kept until the server answers it (see `JobSlot.request`)."""
        self.updates: deque[UpdateItem] = deque()
        self.cells: dict[int, ProgressCell] = {}
        """Progress cells still in ``updates``, by render index (``-1``: the queue report)."""
        self.updates_peak = 0
        self.coalesced = 0
        self.lot: Waiter | None = None
        """The consumer of `updates` (``Project.progress``)."""
        self.done_lot: Waiter | None = None
        """Tasks in ``Project.wait``."""
        self.parked = False

    # --- the update queue -------------------------------------------------------------------------

    def _push(self, item: UpdateItem) -> None:
        if self.closed:
            return
        self.updates.append(item)
        if len(self.updates) > self.updates_peak:
            self.updates_peak = len(self.updates)
        self._wake()

    def _report(
        self, key: int, render: RenderState | None, value: tuple[int | None, float | None] | None
    ) -> None:
        cell = self.cells.get(key)
        if cell is not None and cell.queued:
            cell.value = value
            self.coalesced += 1
            self._wake()
            return
        cell = ProgressCell(render, value)
        self.cells[key] = cell
        self._push(cell)

    def _wake(self) -> None:
        if self.parked:
            self.parked = False
            assert self.lot is not None
            self.lot.unpark_all()

    def take(self) -> UpdateItem | None:
        """The next update item for the consumer, or ``None`` when none is queued."""
        if not self.updates:
            return None
        item = self.updates.popleft()
        if isinstance(item, ProgressCell):
            item.queued = False
            key = -1 if item.render is None else item.render.index
            if self.cells.get(key) is item:
                del self.cells[key]
        return item

    # --- renders ----------------------------------------------------------------------------------

    def render(self, img_id: str | None, index: int | None) -> RenderState | None:
        """The render a frame names (by ``jobIndex``, else by ``imgID``), made on first sight
        (a frame naming neither is the project's: ``None``)."""
        if index is None:
            if img_id is None:
                return None
            known = self.by_img.get(img_id)
            index = known if known is not None else len(self.renders)
        state = self.renders.get(index)
        if state is None:
            if len(self.renders) >= MAX_RENDERS_TRACKED:
                return None  # a server naming far more renders than asked for: ignored
            state = self.renders[index] = RenderState(index, img_id)
        if img_id is not None and state.img_id != img_id:
            if state.img_id is not None and state.finished:
                return state  # a stale attempt's late frame; the render already ended
            state.img_id = img_id
        if (
            img_id is not None
            and img_id not in self.by_img
            and len(self.by_img) < 4 * MAX_RENDERS_TRACKED
        ):
            self.by_img[img_id] = index
        return state

    def finished_renders(self) -> int:
        return sum(1 for r in self.renders.values() if r.finished)

    # --- fed by the router (synchronous, never blocks) --------------------------------------------

    def on_state(self, state: JobState) -> None:
        if self.done:
            return
        kind = state.type
        if kind in ("queued", "pending"):
            if self.status in ("pending", "queued"):
                self.status = "queued"
                self.queue_position = state.queue_position
                eta = state.estimated_start_seconds
                self.eta = None if eta is None else float(eta)
                self._report(-1, None, (self.queue_position, self.eta))
            return
        if kind == "jobCompleted":
            self.server_completed = True
            self._check_complete()
            return
        render = self.render(state.img_id, state.job_index)
        if render is None:
            return
        if state.worker_name:
            render.worker_name = state.worker_name
        if kind in ("initiatingModel", "jobStarted") and not render.finished:
            render.status = "processing"
            self.status = "processing"
            self.queue_position = None
            self._report(render.index, render, None)
        elif kind == "assigned" and self.status in ("pending", "queued"):
            self.status = "processing"

    def on_progress(self, message: JobProgress) -> None:
        if self.done:
            return
        render = self.render(message.img_id, message.job_index)
        if render is None or render.finished:
            return
        render.status = "processing"
        self.status = "processing"
        if message.step is not None:
            render.step = message.step
        if message.step_count is not None:
            render.step_count = message.step_count
        if message.progress is not None:
            render.progress = float(message.progress)
        elif render.step_count:
            render.progress = render.step / render.step_count
        if message.eta_seconds is not None:
            render.eta = float(message.eta_seconds)
        self._report(render.index, render, None)

    def on_eta(self, img_id: str | None, eta: float | None) -> None:
        if self.done or eta is None or img_id is None:
            return
        index = self.by_img.get(img_id)
        render = None if index is None else self.renders.get(index)
        if render is not None and not render.finished:
            render.eta = float(eta)

    def on_result(self, result: JobResult) -> None:
        if self.done:
            return
        render = self.render(result.img_id, result.job_index)
        if render is None or render.finished:
            return
        render.result = result
        render.status = "canceled" if result.user_canceled else "completed"
        if not result.user_canceled:
            render.progress = 1.0
            if result.performed_step_count is not None:
                render.step = result.performed_step_count
        render.eta = 0.0
        if result.worker_name:
            render.worker_name = result.worker_name
        self._push(RenderEnd(render))
        self._check_complete()

    def on_retry(self, img_id: str | None, index: int | None) -> None:
        """A render went back to the queue: it starts over (its next attempt brings a new
        ``imgID`` with the same ``jobIndex``)."""
        if self.done:
            return
        render = self.render(img_id, index)
        if render is None or render.finished:
            return
        render.status = "assigned"
        render.step = 0
        render.progress = 0.0
        render.eta = None

    def on_render_error(self, message: JobError) -> None:
        if self.done:
            return
        render = self.render(message.img_id, message.job_index)
        if render is None or render.finished:
            return
        render.status = "failed"
        render.error = project_error(message, self.job_id)
        self._push(RenderEnd(render))
        self._check_complete()

    def apply_snapshot(self, snapshot: ProjectSnapshot) -> None:
        """Bring the project up to date from the server's ``ProjectSnapshot`` (after a
        reconnect that did not resume its frames): renders that finished meanwhile end with
        what the snapshot says of them, and the project ends if the snapshot says it ended."""
        self.reconciled = True
        for job in (*(snapshot.completed_worker_jobs or ()), *(snapshot.worker_jobs or ())):
            render = self.render(job.img_id, job.job_index)
            if render is None or render.finished:
                continue
            if job.worker is not None and job.worker.name:
                render.worker_name = job.worker.name
            if job.status == "jobCompleted":
                self.on_result(
                    JobResult(
                        job_id=self.job_id,
                        img_id=job.img_id,
                        performed_step_count=job.performed_steps,
                        last_seed=None if job.seed_used is None else str(job.seed_used),
                        user_canceled=job.reason == "artistCanceled",
                        triggered_nsfw_filter=bool(job.triggered_nsfw_filter),
                        output_format=job.output_format,
                        result_url=job.result_url,
                        job_index=job.job_index,
                    )
                )
            elif job.status == "jobError":
                self.on_render_error(
                    JobError(
                        job_id=self.job_id,
                        img_id=job.img_id,
                        error=job.reason or "genfailure",
                        error_message=f"render failed ({job.reason or 'no reason given'})",
                        job_index=job.job_index,
                    )
                )
            elif job.status in ("jobStarted", "jobProgress", "assigned"):
                render.status = "processing"
                self.status = "processing"
                if job.performed_steps is not None:
                    render.step = job.performed_steps
                if job.step_count:
                    render.step_count = job.step_count
                    render.progress = render.step / job.step_count
        status = snapshot.status
        if status == "completed":
            self.server_completed = True
            self._check_complete()
        elif status in ("errored", "cancelled"):
            code = "artistCanceled" if status == "cancelled" else snapshot.reason or "errored"
            self.fail(
                ProjectError(
                    f"the project {'was cancelled' if status == 'cancelled' else 'failed'} "
                    f"while the connection was down ({snapshot.reason or status})",
                    project_id=self.job_id,
                    code=code,
                    payload=snapshot,
                ),
                "canceled" if status == "cancelled" else "failed",
            )

    def _check_complete(self) -> None:
        if self.done or not self.server_completed:
            return
        if self.finished_renders() < self.expected:
            return
        self.status = "completed"
        self._finish()

    def fail(self, error: BaseException, status: ProjectStatus = "failed") -> None:
        """End the project with ``error`` (no-op once it ended)."""
        if self.done:
            return
        self.error = error
        self.status = status
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self.cells.clear()
        self._push(_PROJECT_END)
        if self.done_lot is not None:
            self.done_lot.unpark_all()
        self._wake()

    def close(self) -> None:
        """The consumer is gone: drop queued updates, queue no more."""
        self.closed = True
        self.updates.clear()
        self.cells.clear()
        self._wake()
