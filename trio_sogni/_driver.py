"""The Trio driver of the job router: sends jobs, closes streams, pumps aborts.

`JobDriver` is the only place where the router's decisions meet the socket. It holds no job state
of its own: the `JobRouter` keeps every slot, the driver only moves frames and waits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import trio
from typing_extensions import override

from ._errors import SogniError
from ._projectstate import ProjectSlot
from ._router import JobRouter, Slot
from ._stream import ChatStream
from .protocol import (
    AbortJob,
    LLMJobRequest,
    ProjectSnapshot,
    encode_client_message,
    encode_envelope,
)

__all__ = ["LOOKUP_TIMEOUT", "FrameSender", "JobDriver", "ProjectLookup"]

logger = logging.getLogger("trio_sogni.projects")

LOOKUP_TIMEOUT: Final = 30.0
"""Seconds one project look-up (`JobDriver.project_lookups`) may take before it counts as
failed."""

ProjectLookup = Callable[[str], Awaitable[ProjectSnapshot | None]]
"""Fetch the server's snapshot of a project by id (``None``: unknown)."""


class FrameSender(Protocol):
    """What the driver needs from the socket (`trio_sogni._transport.SocketTransport`)."""

    async def send(self, frame: bytes) -> None:
        """Send one frame once connected (waiting for a connection is cancellable)."""
        ...

    async def send_if_connected(self, frame: bytes) -> bool:
        """Send one frame only if a connection is up now; return whether it was sent."""
        ...


class JobDriver:
    """Runs the router's jobs over a socket.

    * `start_job` registers a job with the router, sends its request and returns its stream;
      `start_project` does the same for a media project and returns its `ProjectSlot`.
    * `release` (called when a stream closes, or a project is cancelled or its scope left) sends
      the job's abort from a shielded scope bounded by ``abort_grace`` if the router says the
      job still runs.
    * `abort_sender` (a task in the client's nursery) sends the aborts the router queued from
      synchronous code: dropped streams, undecodable frames, jobs abandoned across a reconnect.
    * `resume_watchdog` (a task in the client's nursery) fails detached jobs that no connection
      resumed within the router's ``resume_window``.
    * `project_lookups` (a task in the client's nursery) looks up, with ``lookup``, the projects
      a new connection neither resumed nor listed, and reports the answers to the router.
    * `shutdown` closes the router and aborts every job that was still running.

    ``abort_lot`` is the parking lot the router wakes (through its ``wake_aborts`` hook) when the
    abort queue stops being empty; ``detached_lot`` the one it wakes (``wake_detached``) when
    jobs detach.
    """

    def __init__(
        self,
        router: JobRouter,
        sender: FrameSender,
        abort_lot: trio.lowlevel.ParkingLot,
        *,
        abort_grace: float,
        detached_lot: trio.lowlevel.ParkingLot | None = None,
        lookup: ProjectLookup | None = None,
        lookup_lot: trio.lowlevel.ParkingLot | None = None,
    ) -> None:
        self._router = router
        self._sender = sender
        self._abort_lot = abort_lot
        self._abort_grace = abort_grace
        self._detached_lot = (
            detached_lot if detached_lot is not None else trio.lowlevel.ParkingLot()
        )
        self._lookup = lookup
        self._lookup_lot = lookup_lot if lookup_lot is not None else trio.lowlevel.ParkingLot()

    @override
    def __repr__(self) -> str:
        return f"<JobDriver {self._router!r}>"

    async def start_job(self, request: LLMJobRequest) -> ChatStream:
        """Register a job, send its request, and return its stream.

        The job is registered before the frame is sent, so no reply can race it. If sending fails
        or is cancelled, the job is deregistered and the error propagates.

        Raises:
            ClientClosedError: the client is closed (nothing was sent).
            InvalidRequestError: the job id is already in use (nothing was sent).
            ConnectionLost: the socket closed for good before the request was sent.
        """
        slot = self._router.register(request.job_id, request.model)
        stream = ChatStream(slot, self)
        frame = encode_client_message(request)
        try:
            await self._sender.send(frame)
        except BaseException:
            self._router.unsent(slot)
            raise
        self._router.sent(slot, frame)
        return stream

    async def start_project(
        self,
        request: Mapping[str, Any],
        *,
        model: str,
        media_type: str,
        output_format: str | None,
        expected: int,
    ) -> ProjectSlot:
        """Register a media project (``request["jobID"]``), send its ``jobRequest`` and return
        its slot. As `start_job`: registered before the frame is sent; if sending fails or is
        cancelled, the project is deregistered and the error propagates.

        Raises:
            ClientClosedError, InvalidRequestError, ConnectionLost: as `start_job`.
        """
        slot = self._router.register_project(
            str(request["jobID"]),
            model,
            media_type=media_type,
            output_format=output_format,
            expected=expected,
        )
        frame = encode_envelope("jobRequest", request)
        try:
            await self._sender.send(frame)
        except BaseException:
            self._router.unsent(slot)
            raise
        self._router.sent(slot, frame)
        return slot

    async def release(self, slot: Slot, error: BaseException | None = None) -> None:
        """Deregister a closed stream's job (or a cancelled project); abort it on the server if
        it is still running (a project is cancelled: ``jobError artistCanceled``), failing it
        locally with ``error`` (see `JobRouter.release`).

        Always a checkpoint. The abort is sent shielded, bounded by ``abort_grace``; if it cannot
        be sent the job is remembered and aborted after the next reconnect.
        """
        if not self._router.release(slot, error):
            await trio.lowlevel.checkpoint()
            return
        frame = encode_client_message(AbortJob(job_id=slot.job_id))
        sent = False
        with trio.move_on_after(self._abort_grace, shield=True):
            sent = await self._sender.send_if_connected(frame)
        self._router.abort_done(slot.job_id, sent)

    def release_finished(self, slot: Slot) -> None:
        """Deregister a finished job's closed stream (synchronous: the job has ended, so there
        is nothing to abort)."""
        aborted = self._router.release(slot)
        assert not aborted, "release_finished is for jobs that have ended"

    def orphaned(self, slot: Slot) -> None:
        """A stream was dropped unclosed: the router deregisters it and queues its abort."""
        self._router.orphaned(slot)

    async def abort_sender(self) -> None:
        """Send the aborts the router queued, and the job requests it wants sent again (the
        server never received them), each bounded by ``abort_grace``. Runs in the client's
        nursery until cancelled; an abort that cannot be sent is dropped (the server fails the
        job itself when its socket goes); a request that cannot be sent is the next
        connection's business (its job detaches again and is offered for resuming)."""
        router = self._router
        while True:
            job_id = router.pop_abort()
            if job_id is None:
                request = router.pop_resend()
                if request is not None:
                    with trio.move_on_after(self._abort_grace):
                        await self._sender.send_if_connected(request)
                    continue
                await self._abort_lot.park()
                continue
            frame = encode_client_message(AbortJob(job_id=job_id))
            with trio.move_on_after(self._abort_grace):
                if await self._sender.send_if_connected(frame):
                    router.abort_done(job_id, True)

    async def resume_watchdog(self) -> None:
        """Fail the detached jobs nobody resumed in time. Runs in the client's nursery until
        cancelled: parked while no job is detached, else asleep until the router's
        ``detach_deadline``."""
        router = self._router
        while True:
            deadline = router.detach_deadline
            if deadline is None:
                await self._detached_lot.park()
                continue
            await trio.sleep_until(deadline)
            router.expire_detached()

    async def project_lookups(self) -> None:
        """Answer the router's project look-ups one at a time, each bounded by
        `LOOKUP_TIMEOUT`; a look-up that fails or times out counts as "unknown" (the project
        then fails with a retryable error). Runs in the client's nursery until cancelled,
        parked while there is nothing to look up."""
        router = self._router
        while True:
            slot = router.pop_lookup()
            if slot is None or self._lookup is None:
                await self._lookup_lot.park()
                continue
            snapshot: ProjectSnapshot | None = None
            with trio.move_on_after(LOOKUP_TIMEOUT):
                try:
                    snapshot = await self._lookup(slot.job_id)
                except SogniError as exc:
                    logger.warning("could not look project %s up: %s", slot.job_id, exc)
            router.looked_up(slot, snapshot)

    async def shutdown(self, error: BaseException) -> None:
        """Close the router (every live job fails with ``error``) and abort on the server every
        job that had been sent: shielded, all of them within one ``abort_grace``."""
        live = self._router.close(error)
        with trio.move_on_after(self._abort_grace, shield=True):
            for slot in live:
                if slot.sent:
                    sent = await self._sender.send_if_connected(
                        encode_client_message(AbortJob(job_id=slot.job_id))
                    )
                    if sent:
                        self._router.abort_done(slot.job_id, True)
