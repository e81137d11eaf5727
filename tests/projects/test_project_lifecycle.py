"""Projects cancelled at every phase (the server sees it, nothing is left on either side),
reconnects mid-project (reconciled: the results still arrive), a project the server no longer
knows (a typed, retryable error), a slow progress reader (bounded), and 1,000 concurrent image
projects on one connection. Virtual time, in-memory connections.

The media workers are TEST DOUBLES (tests/mediadoubles.py's ScriptedMediaWorker, localnet's
SimulatedMediaWorker; see projectnet.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import IN_MEMORY_REST, IN_MEMORY_SOCKET, InMemoryHTTP
from mediadoubles import ScriptedMediaWorker
from PIL import Image
from projectnet import (
    IMAGE_MODEL,
    assert_no_client_state,
    assert_no_live_project,
    media_client,
    media_net,
    simulated,
)

import trio_sogni
from trio_sogni import (
    Completed,
    Failed,
    Processing,
    Project,
    ProjectError,
    Queued,
    RenderCompleted,
)
from trio_sogni.localnet import LocalNetwork


async def create(sogni: trio_sogni.SogniClient, prompt: str = "fox", **options: Any) -> Project:
    options.setdefault("steps", 3)
    return await sogni.projects.create(type="image", model=IMAGE_MODEL, prompt=prompt, **options)


async def until(project: Project, match: Callable[[object], bool]) -> None:
    """Read ``project``'s progress until an update matches."""
    progress = project.progress()
    try:
        async for update in progress:
            if match(update):
                return
        raise AssertionError("the project ended before the expected update")
    finally:
        await progress.aclose()


async def server_has_no_project(net: LocalNetwork) -> None:
    await net.wait_until(lambda: net._projects.statistics().live_projects == 0)
    assert_no_live_project(net)


def cancels(net: LocalNetwork) -> int:
    """Projects localnet ended as cancelled."""
    return sum(1 for p in net._projects.finished.values() if p.status == "cancelled")


def step_at_least(step: int) -> Callable[[object], bool]:
    return lambda u: isinstance(u, Processing) and u.step >= step


# --- cancel at every phase ---------------------------------------------------------------------


async def test_cancel_while_queued(autojump_clock: trio.testing.MockClock) -> None:
    worker = ScriptedMediaWorker("w", capacity=1)
    worker.hold = trio.Event()
    worker.hold_prompt = "blocker"
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni, "blocker") as blocker:
            await until(blocker, step_at_least(1))
            async with await create(sogni, "waiting") as waiting:
                await until(waiting, lambda u: isinstance(u, Queued))
                assert waiting.status == "queued"
            assert waiting.status == "canceled"
            with pytest.raises(ProjectError) as caught:
                await waiting.wait()
            assert caught.value.code == "artistCanceled"
            await net.wait_until(lambda: cancels(net) == 1)
            worker.hold.set()
            await blocker.wait()
        await server_has_no_project(net)
        assert_no_client_state(sogni)
        assert [s.prompt for s in worker.specs] == ["blocker"]  # the cancelled one never ran


async def test_cancel_while_processing_by_an_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        seen: list[Project] = []

        async def leave_with_an_exception() -> None:
            async with await create(sogni, number_of_media=2) as project:
                seen.append(project)
                await until(project, step_at_least(1))
                raise KeyError("leave")

        with pytest.raises(KeyError):
            await leave_with_an_exception()
        assert seen[0].status == "canceled"
        await server_has_no_project(net)
        assert cancels(net) == 1
        assert_no_client_state(sogni)


async def test_cancel_by_a_cancel_scope_around_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        with trio.move_on_after(30) as scope:
            async with await create(sogni) as project:
                await project.wait()
        assert scope.cancelled_caught
        assert project.status == "canceled"
        await server_has_no_project(net)
        assert cancels(net) == 1
        assert_no_client_state(sogni)


async def test_cancel_explicitly_then_wait_and_progress_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        project = await create(sogni)
        await until(project, step_at_least(1))
        await project.cancel()
        await project.cancel()  # idempotent
        updates = [u async for u in project.progress()]
        assert isinstance(updates[-1], Failed)
        assert updates[-1].canceled
        with pytest.raises(ProjectError, match="cancelled"):
            await project.wait()
        await project.aclose()
        await server_has_no_project(net)
        assert cancels(net) == 1
        assert_no_client_state(sogni)


async def test_cancel_before_anything_is_sent(autojump_clock: trio.testing.MockClock) -> None:
    async with media_net(ScriptedMediaWorker("w")) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        before = net.frames_received
        with trio.CancelScope() as scope:
            scope.cancel()
            await create(sogni)
        assert net.frames_received == before
        assert_no_client_state(sogni)
        assert_no_live_project(net)


async def test_leaving_after_completion_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with media_net(ScriptedMediaWorker("w")) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni) as project:
            await project.wait()
        received = net.frames_received
        await project.cancel()
        assert net.frames_received == received
        assert project.status == "completed"
        assert cancels(net) == 0
        assert_no_client_state(sogni)


async def test_closing_the_client_cancels_its_projects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net:
        async with media_client(net) as sogni:
            await sogni.projects.wait_for_models()
            project = await create(sogni)
            await until(project, step_at_least(1))
        with pytest.raises(trio_sogni.ClientClosedError):
            await project.wait()
        await server_has_no_project(net)
        assert cancels(net) == 1


# --- reconnects -------------------------------------------------------------------------------


async def test_a_reconnect_mid_project_is_reconciled_and_the_results_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w", capacity=2)
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni, number_of_media=2) as project:
            await until(project, step_at_least(1))
            await net.drop_all_connections()
            worker.hold.set()  # the renders finish while the client has no socket
            results = await project.wait()
        assert len(results) == 2
        assert project.status == "completed"
        assert sogni.projects.statistics().reconciled == 1
        for result in results:
            assert await result.read()  # the stored media, by the reconciled render ids
        assert_no_client_state(sogni)
        await server_has_no_project(net)


async def test_a_reconnect_while_rendering_keeps_the_live_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w", step_seconds=5.0)
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni, steps=6) as project:
            await until(project, step_at_least(1))
            await net.drop_all_connections()
            updates = [u async for u in project.progress()]
        assert isinstance(updates[-1], Completed)
        assert any(isinstance(u, RenderCompleted) for u in updates)
        assert len(project.results) == 1


@asynccontextmanager
async def two_networks() -> AsyncIterator[tuple[LocalNetwork, LocalNetwork, list[LocalNetwork]]]:
    """Two networks with the same API key; the client's socket goes to ``target[0]``."""
    async with (
        media_net(ScriptedMediaWorker("a"), api_key="same-key") as first,
        media_net(ScriptedMediaWorker("b"), api_key="same-key") as second,
    ):
        yield first, second, [first]


async def test_a_project_the_server_no_longer_knows_fails_retryably(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with two_networks() as (first, second, target):
        first._projects.workers["a"].hold = trio.Event()  # type: ignore[attr-defined]

        async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            return target[0].connect_in_memory()

        async with (
            httpx.AsyncClient(transport=InMemoryHTTP(first)) as http,
            trio_sogni.open_sogni_client(
                api_key="same-key",
                socket_endpoint=IN_MEMORY_SOCKET,
                rest_endpoint=IN_MEMORY_REST,
                open_stream=open_stream,
                http_client=http,
            ) as sogni,
        ):
            await sogni.projects.wait_for_models()
            async with await create(sogni) as project:
                await until(project, step_at_least(1))
                target[0] = second  # "the server restarted and lost its state"
                await first.drop_all_connections()
                with pytest.raises(ProjectError) as caught:
                    await project.wait()
            error = caught.value
            assert error.retryable
            assert error.code == "transport_lost"
            assert error.project_id == project.id
            assert_no_client_state(sogni)


async def test_without_resume_window_a_lost_connection_fails_projects_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net, resume_window=0) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni) as project:
            await until(project, step_at_least(1))
            await net.drop_all_connections()
            with pytest.raises(ProjectError) as caught:
                await project.wait()
        assert caught.value.retryable
        assert_no_client_state(sogni)


# --- bounded progress ---------------------------------------------------------------------------


async def test_a_slow_progress_reader_stays_bounded_and_misses_no_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = ScriptedMediaWorker("w", capacity=4, step_seconds=0.01)
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        async with await create(sogni, number_of_media=4, steps=12) as project:
            await project.wait()  # nobody reads progress while 48 steps arrive
            stats = project.statistics()
            assert stats.buffered <= 2 * 4 + 2
            assert stats.coalesced > 30
            updates = [u async for u in project.progress()]
        ends = [u for u in updates if isinstance(u, RenderCompleted)]
        assert len(ends) == 4
        assert isinstance(updates[-1], Completed)
        latest = {u.index: u.step for u in updates if isinstance(u, Processing)}
        assert latest == {0: 12, 1: 12, 2: 12, 3: 12}  # the latest step of each render
        assert len(updates) <= 2 * 4 + 2


# --- scale ---------------------------------------------------------------------------------------


@pytest.mark.deadline(600)
async def test_a_thousand_concurrent_image_projects_on_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = simulated("sim", capacity=50, seconds_per_step=0.5)
    async with (
        media_net(worker, max_jobs_per_socket=2000, max_jobs_per_account=2000) as net,
        media_client(net) as sogni,
    ):
        await sogni.projects.wait_for_models()
        projects = [
            await create(sogni, f"fox {n}", steps=2, width=256, height=256, seed=n)
            for n in range(1000)
        ]
        assert sogni.projects.statistics().live_projects == 1000
        done: list[int] = []

        async def wait(project: Project) -> None:
            async with project:
                (result,) = await project.wait()
                assert result.seed is not None
                done.append(result.seed)

        async with trio.open_nursery() as nursery:
            for project in projects:
                nursery.start_soon(wait, project)
        assert sorted(done) == list(range(1000))
        data = await projects[-1].results[0].read()
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (256, 256)
        assert_no_client_state(sogni)
        await server_has_no_project(net)
        assert not net.errors


# --- memory --------------------------------------------------------------------------------------


async def test_client_memory_per_queued_project_is_small(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the client holds per in-flight project (its Project, slot, options, the frames
    routed so far), measured with tracemalloc over the client's own frames only (localnet runs
    in the same process; its allocations are not counted)."""
    import tracemalloc

    worker = ScriptedMediaWorker("w", capacity=1)
    worker.hold = trio.Event()
    count = 50
    async with (
        media_net(worker, max_jobs_per_socket=2000, max_jobs_per_account=2000) as net,
        media_client(net) as sogni,
    ):
        await sogni.projects.wait_for_models()
        blocker = await create(sogni, "blocker")
        await until(blocker, step_at_least(1))
        await sogni.projects.models()  # the catalog is cached before measuring
        client_only = [
            tracemalloc.Filter(True, "*/trio_sogni/[!l]*", all_frames=True),
            tracemalloc.Filter(False, "*/trio_sogni/localnet/*", all_frames=True),
            tracemalloc.Filter(False, tracemalloc.__file__),
        ]
        tracemalloc.start(16)
        try:
            before = tracemalloc.take_snapshot().filter_traces(client_only)
            projects = [await create(sogni, f"queued {n}") for n in range(count)]
            await net.wait_until(lambda: net._projects.statistics().queued_renders == count)
            for project in projects:
                await until(project, lambda u: isinstance(u, Queued))
            after = tracemalloc.take_snapshot().filter_traces(client_only)
        finally:
            tracemalloc.stop()
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        per_project = grown / count
        print(f"client memory per queued project: {per_project:.0f} bytes")
        assert per_project <= 8 * 1024, f"{per_project:.0f} bytes per queued project"
        for project in projects:
            await project.aclose()
        worker.hold.set()
        await blocker.wait()
        await blocker.aclose()
        await server_has_no_project(net)
        assert_no_client_state(sogni)


async def test_a_project_whose_end_died_in_flight_is_found_over_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The project ended while the client had no socket, and localnet counts its last frame as
    delivered (to the connection that died), so the new ``authenticated`` lists it nowhere:
    ``GET /v1/projects/{id}`` finds it, and its results arrive."""
    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net:
        gate = [trio.Event()]
        gate[0].set()

        async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
            await gate[0].wait()
            return net.connect_in_memory()

        async with (
            httpx.AsyncClient(transport=InMemoryHTTP(net)) as http,
            trio_sogni.open_sogni_client(
                api_key=net.api_key,
                socket_endpoint=IN_MEMORY_SOCKET,
                rest_endpoint=IN_MEMORY_REST,
                open_stream=open_stream,
                http_client=http,
            ) as sogni,
        ):
            await sogni.projects.wait_for_models()
            async with await create(sogni) as project:
                await until(project, step_at_least(1))
                gate[0] = trio.Event()  # the next connection waits
                await net.drop_all_connections()
                worker.hold.set()
                await server_has_no_project(net)
                net._projects.finished[project.id].claimed = True  # "delivered" to the dead socket
                gate[0].set()
                (result,) = await project.wait()
            assert project.status == "completed"
            assert await result.read()
            assert sogni.projects.statistics().reconciled == 1
            assert "/v1/projects/" + project.id in [r.path for r in net.http_requests]
            assert_no_client_state(sogni)


async def test_a_project_dropped_unclosed_is_cancelled_on_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import gc

    worker = ScriptedMediaWorker("w")
    worker.hold = trio.Event()
    async with media_net(worker) as net, media_client(net) as sogni:
        await sogni.projects.wait_for_models()
        project = await create(sogni)
        await until(project, step_at_least(1))
        del project
        gc.collect()
        await server_has_no_project(net)
        assert cancels(net) == 1
        assert_no_client_state(sogni)
