"""The projects manager: media projects admitted, billed, queued, rendered, cancelled, recovered.

A project belongs to an *app* ``(account, appId)`` like a chat job, and its frames go to
whichever socket holds that app at the time (dropped, and counted, while none does: a dropped
socket does not stop a project; the client reconciles from ``authenticated.activeProjects`` /
``unclaimedCompletedProjects`` or the projects sync route). Its renders queue in the chat jobs'
scheduler, so fairness between accounts covers both kinds of work.

Every method except the project and render tasks is synchronous (or, for :meth:`cancel`, does
all its state changes before its first checkpoint), so state changes are atomic with respect to
other tasks.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, cast

import msgspec
import trio

from ...protocol import (
    ArtistCancelConfirmation,
    JobError,
    JobETA,
    JobProgress,
    JobResult,
    JobRetry,
    JobState,
    MediaJobRequest,
    ProjectModel,
    ProjectQueue,
    ProjectSnapshot,
    ServerMessage,
    SwarmModels,
    WorkerJobSnapshot,
    WorkerRef,
    encode_server_message,
)
from .._accounts._ledger import InsufficientBalance, Ledger
from .._config import Pricing
from .._jobs._manager import Changes, JobManager, SocketBinding
from .._server import RECORD_OVERHEAD, OutFrame, RecordLog
from ._catalog import MediaCatalog, MediaPricing, RenderQuote
from ._projects import (
    MAX_SEED,
    AppKey,
    Project,
    ProjectStatus,
    Render,
    ResultStorage,
    new_render_id,
    plan_project,
)
from ._render import MediaInput, MediaRenderError, MediaWorker, RenderedMedia, RenderRejected

__all__ = [
    "DEFAULT_MAX_PROJECTS_PER_APP",
    "MAX_REQUEST_BYTES",
    "ProjectsManager",
    "ProjectsStatistics",
]

logger = logging.getLogger("trio_sogni.localnet")

DEFAULT_MAX_PROJECTS_PER_APP: Final = 1_000
DEFAULT_MAX_PROJECTS_PER_ACCOUNT: Final = 4_000
RESTART_MESSAGE: Final = "Server is restarting; this project was refunded."
TOO_MANY_PROJECTS: Final = "too_many_jobs"


@dataclass(frozen=True)
class ProjectsStatistics:
    """``live_projects`` (queued or rendering), ``queued_renders``, ``running_renders``,
    ``finished_records`` kept and their accounted ``finished_bytes``."""

    live_projects: int
    queued_renders: int
    running_renders: int
    finished_records: int
    finished_bytes: int


_json: Final = msgspec.json.Encoder()

MAX_REQUEST_BYTES: Final = 64 * 1024
"""The largest ``jobRequest`` payload (as JSON) a project may have: the official SDKs send a few
KiB, and each live or kept project holds its request."""


def _request_size(request: MediaJobRequest) -> int:
    return 2 * len(_json.encode(request)) + RECORD_OVERHEAD


class ProjectsManager:
    """Media projects of every app: admission, billing, scheduling, rendering and recovery.

    Billing (with a ``ledger``): a project holds ``numberOfImages`` render prices from its
    account on admission (refused with ``jobError insufficient_balance``, nothing queued, when
    the account cannot cover them); each completed render settles exactly one render price
    (``on_settled`` runs after, the network pushes ``balanceUpdate``); a render that fails or is
    cancelled releases its hold without charge.

    Failures: a worker whose ``render`` raises (or that is removed mid-render) has its render
    retried (``jobRetry``, a new ``imgID``, the same ``jobIndex``) up to ``retry_budget`` times,
    then the render fails with ``jobError`` carrying its ``imgID``. A project whose renders all
    failed ends with a ``jobError`` without ``imgID``.

    Memory: live projects per app are capped (``max_projects_per_app``), each at 16 renders;
    finished projects are kept for ``GET /v1/projects/{id}`` and recovery at most
    ``finished_limit`` records, ``finished_bytes`` accounted bytes and ``finished_ttl`` seconds.
    """

    def __init__(
        self,
        *,
        catalog: MediaCatalog,
        pricing: MediaPricing,
        rates: Callable[[], Pricing],
        jobs: JobManager,
        changes: Changes,
        errors: deque[str],
        storage: ResultStorage | None = None,
        ledger: Ledger | None = None,
        on_settled: Callable[[str], None] | None = None,
        on_models_changed: Callable[[], None] | None = None,
        reserved_models: Callable[[], Collection[str]] | None = None,
        subscribed: Callable[[AppKey, str], bool] | None = None,
        max_projects_per_app: int = DEFAULT_MAX_PROJECTS_PER_APP,
        max_projects_per_account: int = DEFAULT_MAX_PROJECTS_PER_ACCOUNT,
        retry_budget: int = 2,
        finished_limit: int = 1_000,
        finished_bytes: int = 4 * 1024 * 1024,
        finished_ttl: float = 3600.0,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if max_projects_per_app < 1 or max_projects_per_account < 1:
            raise ValueError("the live project caps must be at least 1")
        if retry_budget < 0:
            raise ValueError("retry_budget must not be negative")
        self.catalog = catalog
        self.pricing = pricing
        self._rates = rates
        self._jobs = jobs
        self.scheduler = jobs.scheduler
        self._changes = changes
        self._errors = errors
        self.storage = storage
        self.ledger = ledger
        self._on_settled = on_settled
        self._on_models_changed = on_models_changed
        self._reserved_models = reserved_models
        self._subscribed = subscribed
        self.max_projects_per_app = max_projects_per_app
        self.max_projects_per_account = max_projects_per_account
        """Live projects one account may have over all its apps; more are ``too_many_jobs``."""
        self._by_account: dict[str, int] = {}
        """Live projects per account (no entry at 0)."""
        self.retry_budget = retry_budget
        self.finished_limit = finished_limit
        self.finished_bytes_limit = finished_bytes
        self.finished_ttl = finished_ttl
        self._wall_ms = wall_clock_ms or (lambda: int(trio.current_time() * 1000))
        self.projects: dict[tuple[str, str], Project] = {}
        """Live projects by ``(account, upper-case id)``: ids are scoped to their account."""
        self._by_app: dict[AppKey, dict[str, Project]] = {}
        self.finished: OrderedDict[tuple[str, str], Project] = OrderedDict()
        self._finished_bytes = 0
        self.workers: dict[str, MediaWorker] = {}
        self._nursery: trio.Nursery | None = None
        self.closing = False
        self._seq = 0
        self.frames_dropped = 0
        self.requests = RecordLog[MediaJobRequest](
            max_items=256, max_bytes=4 * 1024 * 1024, size=_request_size
        )
        """The newest well-formed ``jobRequest``s received, accepted or not (bounded in count
        and accounted bytes)."""

    # -- workers and models ---------------------------------------------------------------------

    def add_worker(self, worker: MediaWorker) -> None:
        """Register a media worker for its ``models`` (each must be in the catalog, and no chat
        model). Queued renders it can serve start at once; ``on_models_changed`` runs.

        Raises:
            ValueError: a worker with that name exists, a capacity below 1, no models, or a
                model the catalog does not know or the chat side serves.
        """
        served = worker.models
        if served is None:  # every catalog model of the worker's media types
            served = [m.id for m in self.catalog.models.values() if m.media in worker.media_types]
        models = frozenset(served)
        if not models:
            raise ValueError("a media worker must serve at least one model")
        reserved = self._reserved_models() if self._reserved_models is not None else ()
        clash = sorted(m for m in models if m in reserved)
        if clash:
            raise ValueError(f"{clash[0]!r} is a chat model; media model ids must differ")
        unknown = sorted(m for m in models if self.catalog.get(m) is None)
        if unknown:
            raise ValueError(f"media model {unknown[0]!r} is not in the media catalog")
        foreign = sorted(
            m for m in models if self.catalog.models[m].media not in worker.media_types
        )
        if foreign:
            raise ValueError(f"worker {worker.name!r} does not render {foreign[0]!r}'s media type")
        self.scheduler.add_worker(worker, models, kind="media")
        self.workers[worker.name] = worker
        self._models_changed()

    def remove_worker(self, name: str) -> None:
        """Unregister a media worker: its running renders are retried on another worker
        (``jobRetry``). Live projects of a model no worker serves any more end at once with
        ``jobError model_unavailable`` (no ``imgID``; holds released), as queued chat jobs do.

        Raises:
            KeyError: no media worker has that name.
        """
        if name not in self.workers:
            raise KeyError(name)
        slot = self.scheduler.remove_worker(name)
        del self.workers[name]
        served = self.scheduler.worker_counts("media")
        for project in list(self.projects.values()):
            model = project.plan.model.id
            if model in served:
                continue
            error = JobError(
                job_id=project.job_id,
                error="model_unavailable",
                error_message=f"Model {model!r} has no worker on this network any more.",
                is_from_worker=False,
            )
            self._end(project, "errored", "model_unavailable")
            self._send_nowait(project.app_key, error)
        for unit in list(slot.active):
            if isinstance(unit, Render) and unit.attempt_scope is not None:
                unit.worker_lost = True
                unit.attempt_scope.cancel()
        self._models_changed()

    def _models_changed(self) -> None:
        if self._on_models_changed is not None:
            self._on_models_changed()
        self._changes.notify()

    def swarm_models(self) -> SwarmModels:
        """The ``swarmModels`` message: ``{modelId: workerCount}`` of served media models."""
        return SwarmModels(models=dict(sorted(self.scheduler.worker_counts("media").items())))

    def quote(self, model_id: str, token_type: str) -> RenderQuote | None:
        """The price of one render of ``model_id`` (``None`` for an unknown model)."""
        model = self.catalog.get(model_id)
        if model is None:
            return None
        kind = "spark" if token_type == "spark" else "sogni"
        return self.pricing.quote(model, kind, self._rates())

    # -- admission ------------------------------------------------------------------------------

    def submit(
        self,
        app_key: AppKey,
        request: MediaJobRequest,
        *,
        observer: Callable[[ServerMessage], None] | None = None,
    ) -> JobError | None:
        """Accept ``request`` for the app ``app_key`` (its task starts soon) or return the
        project-level ``jobError`` (no ``imgID``) that refuses it. Never raises. ``observer``
        (see :attr:`Project.observer`) sees every frame the project emits."""
        self.requests.append(request)
        job_id = request.job_id

        def refuse(error: str, message: str) -> JobError:
            return JobError(job_id=job_id, error=error, error_message=message, is_from_worker=False)

        if self.closing:
            return refuse("serverRestarting", RESTART_MESSAGE)
        plan = plan_project(request, self.catalog)
        if isinstance(plan, str):
            return refuse("invalid_request", plan)
        key = (app_key[0], job_id.upper())
        if key in self.projects:
            return refuse("invalid_request", f"jobID {job_id} is already in use by a live project")
        app_projects = self._by_app.get(app_key, {})
        if len(app_projects) >= self.max_projects_per_app:
            return refuse(
                TOO_MANY_PROJECTS,
                f"This connection already has {len(app_projects)} live projects (the limit is "
                f"{self.max_projects_per_app}); wait for some to finish.",
            )
        held = self._by_account.get(app_key[0], 0)
        if held >= self.max_projects_per_account:
            return refuse(
                TOO_MANY_PROJECTS,
                f"This account already has {held} live projects (the limit is "
                f"{self.max_projects_per_account}); wait for some to finish.",
            )
        if plan.model.id not in self.scheduler.worker_counts("media"):
            return refuse(
                "model_unavailable", f"Model {plan.model.id!r} has no worker on this network."
            )
        request_json = _json.encode(request)
        if len(request_json) > MAX_REQUEST_BYTES:
            return refuse(
                "invalid_request",
                f"The jobRequest is {len(request_json)} bytes; at most {MAX_REQUEST_BYTES} are "
                "accepted.",
            )
        account, app_id = app_key
        if plan.input_roles:
            uploaded: set[str] = set()
            if self.storage is not None:
                uploaded.update(self.storage.upload_roles(account, job_id))
            missing = [role for role in plan.input_roles if role not in uploaded]
            if missing:
                return refuse(
                    "invalid_request",
                    f"{missing[0]} is flagged in the keyframe but was not uploaded for this "
                    "project (ask /v1/image/uploadUrl or /v1/media/uploadUrl first).",
                )
        price = self.pricing.quote(plan.model, plan.token_type, self._rates())
        project = Project(
            request=request,
            plan=plan,
            account=account,
            app_id=app_id,
            created_ms=self._wall_ms(),
            request_json=request_json,
        )
        project.observer = observer
        base_seed = plan.seed if plan.seed is not None else secrets.randbelow(MAX_SEED + 1)
        for index in range(plan.count):
            self._seq += 1
            render = Render(project, index, self._seq)
            render.seed = (base_seed + index) % (MAX_SEED + 1)
            project.renders.append(render)
        if self.ledger is not None:
            try:
                for render in project.renders:
                    render.hold = self.ledger.reserve(account, plan.token_type, price.token)
            except InsufficientBalance as exc:
                for render in project.renders:
                    if render.hold is not None:
                        self.ledger.release(render.hold)
                        render.hold = None
                total = price.token * plan.count
                return refuse(
                    "insufficient_balance",
                    f"{exc} (this project of {plan.count} render(s) needs {total} {plan.token_type})",
                )
        self.projects[key] = project
        self._by_app.setdefault(app_key, {})[project.key] = project
        self._by_account[app_key[0]] = self._by_account.get(app_key[0], 0) + 1
        self._jobs.add_owner(project)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_project, project)
        self._changes.notify()
        return None

    # -- cancel ---------------------------------------------------------------------------------

    def owns(self, app_key: AppKey, project_id: str) -> bool:
        """Whether ``project_id`` is a live or kept project of the app ``app_key``."""
        key = (app_key[0], project_id.upper())
        project = self.projects.get(key) or self.finished.get(key)
        return project is not None and project.app_key == app_key

    async def cancel(self, app_key: AppKey, project_id: str) -> bool:
        """A socket of the app ``app_key`` cancelled ``project_id`` (``jobError artistCanceled``).

        A live project of that app stops at once (queue entries and worker capacity freed, every
        unfinished render's hold released); each render that had started gets ``jobResult
        userCanceled``, then ``artistCancelConfirmation didCancel``. A finished project of the
        app gets ``artistCancelConfirmation`` with ``didCancel`` false. Returns ``False`` (and
        sends nothing) for an id that is no project of this app — another account's included.
        All state changes happen before the first checkpoint.
        """
        key = (app_key[0], project_id.upper())
        project = self.projects.get(key)
        if project is None or project.app_key != app_key or project.finished:
            finished = project if project is not None and project.finished else None
            finished = finished or self.finished.get(key)
            if finished is None or finished.app_key != app_key:
                return False
            await self._send(
                app_key,
                ArtistCancelConfirmation(
                    job_id=project_id,
                    did_cancel=False,
                    error_message="The project has already finished.",
                ),
            )
            return True
        started = [r for r in project.renders if r.img_id is not None and not r.finished]
        self._end(project, "cancelled", "artistCanceled")
        frames = [
            JobResult(
                job_id=project.job_id,
                img_id=r.img_id,
                performed_step_count=r.step,
                last_seed=str(r.seed),
                user_canceled=True,
                job_index=r.index,
                worker_name=r.worker_name,
            )
            for r in started
        ]
        confirmed = False
        for message in (*frames, ArtistCancelConfirmation(job_id=project.job_id, did_cancel=True)):
            confirmed = await self._send(app_key, message)
        project.claimed = confirmed
        return True

    def _end(self, project: Project, status: ProjectStatus, reason: str | None) -> None:
        """End ``project`` from outside its task: silence it, cancel its task, free its renders'
        queue entries and slots, release their holds, and keep its record."""
        if project.finished:
            return
        for render in project.renders:
            if not render.finished:
                render.state = "canceled" if status == "cancelled" else "failed"
            self._free(render)
        project.status = status
        project.reason = reason
        project.silenced = True
        project.cancel_scope.cancel()
        self._finish(project)

    def _free(self, render: Render) -> None:
        self.scheduler.discard(render)
        if render.hold is not None and self.ledger is not None:
            self.ledger.release(render.hold)
        render.hold = None

    # -- recovery -------------------------------------------------------------------------------

    def _finish(self, project: Project) -> None:
        """Move a finished project from the live table to the bounded record store."""
        if self.projects.get(project.scope) is project:
            del self.projects[project.scope]
            left = self._by_account.pop(project.account, 1) - 1
            if left:
                self._by_account[project.account] = left
            self._jobs.remove_owner(project)
            if self.storage is not None:
                self.storage.discard_project(project.account, project.job_id)
            app = self._by_app.get(project.app_key)
            if app is not None:
                app.pop(project.key, None)
                if not app:
                    del self._by_app[project.app_key]
        if project.finished_at is None:
            project.finished_at = trio.current_time()
            old = self.finished.pop(project.scope, None)
            if old is not None:
                self._finished_bytes -= old.size
            self.finished[project.scope] = project
            self._finished_bytes += project.size
            self._trim()
        project.done.set()
        self._changes.notify()

    def _trim(self) -> None:
        now = trio.current_time()
        while self.finished:
            key, oldest = next(iter(self.finished.items()))
            expired = (
                oldest.finished_at is not None and now - oldest.finished_at > self.finished_ttl
            )
            if (
                not expired
                and len(self.finished) <= self.finished_limit
                and self._finished_bytes <= self.finished_bytes_limit
            ):
                return
            del self.finished[key]
            self._finished_bytes -= oldest.size

    def snapshot(self, project: Project) -> ProjectSnapshot:
        """``project`` as recovery payloads and ``GET /v1/projects/{id}`` describe it."""
        live: list[WorkerJobSnapshot] = []
        done: list[WorkerJobSnapshot] = []
        for r in project.renders:
            if r.img_id is None:
                continue
            worker = WorkerRef(name=r.worker_name) if r.worker_name else None
            if r.finished:
                done.append(
                    WorkerJobSnapshot(
                        id=r.img_id,
                        img_id=r.img_id,
                        job_index=r.index,
                        status="jobError" if r.state == "failed" else "jobCompleted",
                        reason=(
                            "artistCanceled"
                            if r.state == "canceled"
                            else "genfailure"
                            if r.state == "failed"
                            else None
                        ),
                        worker=worker,
                        performed_steps=r.step,
                        step_count=project.plan.steps,
                        seed_used=r.seed,
                        triggered_nsfw_filter=r.nsfw,
                        output_format=r.output_format,
                    )
                )
            else:
                live.append(
                    WorkerJobSnapshot(
                        id=r.img_id,
                        img_id=r.img_id,
                        job_index=r.index,
                        status="jobStarted" if r.state == "started" else "assigned",
                        worker=worker,
                        performed_steps=r.step,
                        step_count=project.plan.steps,
                    )
                )
        plan = project.plan
        return ProjectSnapshot(
            id=project.job_id,
            status=project.status,
            app_id=project.app_id,
            model=ProjectModel(id=plan.model.id, name=plan.model.name, type=plan.media),
            job_type=plan.media,
            image_count=plan.count,
            step_count=plan.steps,
            token_type=plan.token_type,
            network=project.request.network if isinstance(project.request.network, str) else None,
            create_time=project.created_ms,
            reason=project.reason,
            client_request_data=base64.b64encode(project.request_json).decode(),
            worker_jobs=live,
            completed_worker_jobs=done,
        )

    def recovery(
        self, account: str, app_id: str | None, *, claim: bool
    ) -> tuple[list[ProjectSnapshot], list[ProjectSnapshot]]:
        """``(activeProjects, unclaimedCompletedProjects)`` of the account's app ``app_id``
        (every app of the account when ``None``). With ``claim`` (an ``authenticated`` frame),
        the unclaimed projects returned count as claimed from now on."""
        self._trim()
        active = [
            self.snapshot(p)
            for p in self.projects.values()
            if p.account == account and (app_id is None or p.app_id == app_id)
        ]
        unclaimed: list[ProjectSnapshot] = []
        for p in self.finished.values():
            if p.account != account or p.claimed or (app_id is not None and p.app_id != app_id):
                continue
            unclaimed.append(self.snapshot(p))
            if claim:
                p.claimed = True
        return active, unclaimed

    def record(self, account: str, project_id: str) -> ProjectSnapshot | None:
        """A finished project of ``account`` (``GET /v1/projects/{id}``), else ``None``."""
        self._trim()
        project = self.finished.get((account, project_id.upper()))
        if project is None or project.account != account:
            return None
        return self.snapshot(project)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Project tasks go to ``nursery`` from now on."""
        self._nursery = nursery

    def stop_accepting(self) -> None:
        """Refuse new projects from now on (``jobError serverRestarting``)."""
        self.closing = True

    def close(self) -> None:
        """End every live project with ``jobError serverRestarting`` (no ``imgID``; holds
        released, i.e. refunded) and refuse new ones."""
        self.closing = True
        for project in list(self.projects.values()):
            error = JobError(
                job_id=project.job_id,
                error="serverRestarting",
                error_message=RESTART_MESSAGE,
                is_from_worker=False,
            )
            self._end(project, "errored", "serverRestarting")
            self._send_nowait(project.app_key, error)

    def statistics(self) -> ProjectsStatistics:
        queued = running = 0
        for project in self.projects.values():
            for r in project.renders:
                if r.queued:
                    queued += 1
                elif r.slot is not None:
                    running += 1
        return ProjectsStatistics(
            live_projects=len(self.projects),
            queued_renders=queued,
            running_renders=running,
            finished_records=len(self.finished),
            finished_bytes=self._finished_bytes,
        )

    # -- the project and render tasks -------------------------------------------------------------

    def _socket(self, app_key: AppKey) -> SocketBinding | None:
        """The socket holding ``app_key`` with frames flowing to it, if any."""
        app = self._jobs.apps.get(app_key)
        return app.socket if app is not None and app.flowing else None

    async def _send(self, app_key: AppKey, message: ServerMessage) -> bool:
        """Send a control answer (a cancel's frames) straight to the socket holding
        ``app_key``; ``False`` (dropped) when there is none. A checkpoint."""
        sock = self._socket(app_key)
        if sock is None:
            await trio.lowlevel.checkpoint()
            return False
        return await sock.driver.outbox.put(OutFrame(encode_server_message(message)))

    def _send_nowait(self, app_key: AppKey, message: ServerMessage) -> bool:
        sock = self._socket(app_key)
        return sock is not None and sock.driver.outbox.put_nowait(
            OutFrame(encode_server_message(message))
        )

    async def _emit(self, project: Project, message: ServerMessage, *, final: bool = False) -> None:
        """Send ``message`` for ``project`` through the jobs' delivery (numbered in the
        project's replay log: held while its app has no socket, resumable like a job's frames).
        A checkpoint; waits while the socket's outbox is full."""
        if project.silenced:
            await trio.lowlevel.checkpoint()
            return
        if project.observer is not None:
            project.observer(message)
        await self._jobs.deliver(project, encode_server_message(message))
        if final:
            project.claimed = self._socket(project.app_key) is not None

    async def _emit_queued(self, project: Project, position: int) -> None:
        """``jobState queued``, and ``projectQueue`` when the app's socket subscribed to it
        (``socketEventSubscriptions`` ``{"projectQueue": true}``; off by default)."""
        estimate = max(0, position - 1) * project.plan.model.tier.benchmark
        await self._emit(
            project,
            JobState(
                job_id=project.job_id,
                type="queued",
                queue_position=position,
                model_id=project.plan.model.id,
                estimated_start_seconds=estimate,
                queue_status="waiting",
            ),
        )
        if self._subscribed is not None and self._subscribed(project.app_key, "projectQueue"):
            await self._emit(
                project,
                ProjectQueue(
                    job_id=project.job_id,
                    queue_position=position,
                    estimated_start_seconds=estimate,
                    queue_status="waiting",
                ),
            )

    async def _run_project(self, project: Project) -> None:
        """The whole life of one project: ``queued``, its renders (concurrently), then
        ``jobCompleted`` (or a project ``jobError`` when every render failed)."""
        try:
            with project.cancel_scope:
                if project.plan.input_roles and self.storage is not None:
                    inputs: dict[str, MediaInput] = {}
                    for role in project.plan.input_roles:
                        media = await self.storage.read_upload(
                            project.account, project.job_id, role
                        )
                        if media is not None:
                            inputs[role] = media
                    project.inputs = inputs
                positions = [self.scheduler.enqueue(r) for r in project.renders]
                self._changes.notify()
                await self._emit_queued(project, min(positions))
                async with trio.open_nursery() as nursery:
                    for render in project.renders:
                        nursery.start_soon(self._run_render, project, render)
                if any(r.state == "completed" for r in project.renders):
                    project.status = "completed"
                    await self._emit(
                        project, JobState(job_id=project.job_id, type="jobCompleted"), final=True
                    )
                else:
                    project.status = "errored"
                    project.reason = "allJobsFailed"
                    error = JobError(
                        job_id=project.job_id,
                        error="genfailure",
                        error_message="Every render of this project failed.",
                        is_from_worker=True,
                    )
                    await self._emit(project, error, final=True)
        except Exception as exc:
            logger.exception("localnet: a media project failed inside localnet (worker bug?)")
            self._errors.append(f"project {project.job_id}: {exc!r}")
            error = JobError(
                job_id=project.job_id,
                error="internal_error",
                error_message=f"localnet internal error: {exc!r}",
                is_from_worker=False,
            )
            self._end(project, "errored", "internal_error")
            self._send_nowait(project.app_key, error)
        finally:
            for render in project.renders:
                self._free(render)
            if not project.finished:  # cancelled from outside the manager (shutdown)
                project.status = "errored"
                project.reason = project.reason or "serverRestarting"
            self._finish(project)

    async def _wait_for_slot(self, project: Project, render: Render) -> None:
        """Wait until the scheduler assigns ``render`` a worker. The first render reports the
        project's queue position while none of its renders has started."""
        reported: int | None = None
        while render.slot is None:
            if render.index == 0 and not any(r.img_id for r in project.renders):
                current = self.scheduler.position(render)
                if current is not None and current != reported:
                    if reported is not None:
                        await self._emit_queued(project, current)
                    reported = current
                    continue
            await render.wait_for_change()

    async def _run_render(self, project: Project, render: Render) -> None:
        while True:
            await self._wait_for_slot(project, render)
            slot = render.slot
            assert slot is not None
            worker = cast("MediaWorker", slot.worker)
            render.attempts += 1
            render.img_id = img_id = new_render_id()
            render.worker_name = slot.name
            render.step = 0
            render.state = "assigned"
            project.status = "active"
            self._changes.notify()
            plan = project.plan
            await self._emit(
                project,
                JobState(
                    job_id=project.job_id,
                    type="assigned",
                    worker_name=slot.name,
                    img_id=img_id,
                    job_index=render.index,
                ),
            )
            render.state = "started"
            await self._emit(
                project,
                JobState(
                    job_id=project.job_id,
                    type="jobStarted",
                    worker_name=slot.name,
                    img_id=img_id,
                    job_index=render.index,
                    positive_prompt=plan.prompt,
                    negative_prompt=plan.negative_prompt,
                ),
            )
            started = trio.current_time()

            async def on_step(
                step: int, step_count: int, *, _img: str = img_id, _started: float = started
            ) -> None:
                render.step = max(render.step, min(step, step_count))
                elapsed = trio.current_time() - _started
                eta = elapsed / step * max(0, step_count - step) if step > 0 else None
                await self._emit(
                    project,
                    JobProgress(
                        job_id=project.job_id,
                        img_id=_img,
                        step=step,
                        step_count=step_count,
                        progress=round(step / step_count, 6) if step_count > 0 else 0,
                        eta_seconds=None if eta is None else round(eta, 3),
                        job_index=render.index,
                    ),
                )
                if step == 1 and eta is not None:
                    await self._emit(
                        project,
                        JobETA(job_id=project.job_id, img_id=_img, eta_seconds=round(eta, 3)),
                    )

            failure: str | None = None
            code = "genfailure"
            vendor: str | None = None
            retry = True
            output: RenderedMedia | None = None
            render.worker_lost = False
            with trio.CancelScope() as scope:
                render.attempt_scope = scope
                try:
                    output = await worker.render(plan.spec(render.seed, project.inputs), on_step)
                except MediaRenderError as exc:
                    failure, code = exc.message[:500], exc.code
                    vendor = exc.vendor_failure_category
                    retry = not isinstance(exc, RenderRejected)  # the same spec fails again
                except Exception as exc:
                    failure = f"The worker failed this render: {exc!r}"[:500]
            render.attempt_scope = None
            if render.worker_lost:
                failure = "The worker running this render disconnected."
            self.scheduler.discard(render)  # the worker's capacity is free again
            if failure is not None or output is None:
                message = failure or "The worker returned no media."
                if retry and render.attempts <= self.retry_budget:
                    render.state = "queued"
                    await self._emit(
                        project,
                        JobRetry(
                            job_id=project.job_id,
                            img_id=img_id,
                            job_index=render.index,
                            worker_name=slot.name,
                            error_message=message,
                        ),
                    )
                    self.scheduler.enqueue(render)
                    continue
                render.state = "failed"
                self._free(render)
                await self._emit(
                    project,
                    JobError(
                        job_id=project.job_id,
                        img_id=img_id,
                        error=code,
                        error_message=message,
                        is_from_worker=retry,
                        job_index=render.index,
                        vendor_failure_category=vendor,
                        worker_name=slot.name,
                    ),
                )
                return
            if self.storage is not None:
                await self.storage.store_result(project.account, project.job_id, img_id, output)
            render.nsfw = bool(output.nsfw)
            render.output_format = plan.output_format
            render.state = "completed"
            hold = render.hold
            render.hold = None
            if hold is not None and self.ledger is not None:
                price = self.pricing.quote(plan.model, plan.token_type, self._rates())
                self.ledger.settle(hold, Decimal(price.token))
            try:
                await self._emit(
                    project,
                    JobResult(
                        job_id=project.job_id,
                        img_id=img_id,
                        performed_step_count=render.step,
                        last_seed=str(render.seed),
                        user_canceled=False,
                        triggered_nsfw_filter=render.nsfw,
                        output_format=plan.output_format,
                        job_index=render.index,
                        worker_name=slot.name,
                    ),
                )
            finally:
                if hold is not None and self._on_settled is not None:
                    self._on_settled(hold.account_id)
            return
