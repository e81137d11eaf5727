"""Hostile clients against localnet: one account flooding the job queue.

The scheduler serves queued jobs fairly between accounts, so another account's job starts
within a bound that does not depend on the flooder's backlog, and one socket's live jobs are
capped (``max_jobs_per_socket``): the excess is refused with ``llmJobError too_many_jobs``.
Raw WebSocket clients on in-memory connections, in virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trio_websocket
from rawsocket import connect, recv, send

from trio_sogni.localnet import DEFAULT_MODEL, SimulatedWorker, open_local_network
from trio_sogni.localnet._jobs._scheduler import POSITION_WINDOW, Job, Scheduler
from trio_sogni.protocol import (
    ChatMessage,
    JobState,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
)

FLOOD = 5_000
CAP = 1_000
WORKERS = 2
TOKENS_PER_SECOND = 100.0


def request(job_id: str, text: str = "x") -> LLMJobRequest:
    return LLMJobRequest(
        job_id=job_id, model=DEFAULT_MODEL, messages=[ChatMessage(role="user", content=text)]
    )


class Ledger:
    """What one client saw, per job: results, errors, ``jobStarted`` instants."""

    def __init__(self) -> None:
        self.results: dict[str, LLMJobResult] = {}
        self.errors: dict[str, LLMJobError] = {}
        self.started: dict[str, float] = {}
        self.positions: dict[str, list[int]] = {}
        self.changed = trio.Event()

    async def read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            message = await recv(ws)
            match message:
                case LLMJobResult():
                    self.results[message.job_id] = message
                case LLMJobError():
                    self.errors[message.job_id] = message
                case JobState(type="jobStarted"):
                    self.started[message.job_id] = trio.current_time()
                case JobState(type="queued", queue_position=int(position)):
                    self.positions.setdefault(message.job_id, []).append(position)
                case _:
                    continue
            self.changed.set()
            self.changed = trio.Event()

    async def wait(self, done: int) -> None:
        while len(self.results) + len(self.errors) < done:
            await self.changed.wait()


@pytest.mark.deadline(120)  # about 21 virtual seconds (1,000 jobs of 0.04 s on 2 workers)
async def test_a_flood_from_one_account_does_not_starve_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    workers = [
        SimulatedWorker(f"w{i}", tokens_per_second=TOKENS_PER_SECOND) for i in range(WORKERS)
    ]
    async with open_local_network(listen=False, workers=workers, max_jobs_per_socket=CAP) as net:
        net.add_account("bystander", password="bystander-password")
        b_key = net.create_api_key("bystander")
        flooder, bystander = Ledger(), Ledger()
        async with (
            trio.open_nursery() as nursery,
            connect(net, net.api_key, "flood", queue=64) as (a_ws, _),
            connect(net, b_key, "flood", queue=64) as (b_ws, _),  # the same appId, too
        ):
            nursery.start_soon(flooder.read, a_ws)
            nursery.start_soon(bystander.read, b_ws)
            for i in range(FLOOD):
                await send(a_ws, request(f"A{i}"))
            await net.wait_until(lambda: len(net.job_requests) == FLOOD)
            assert net.statistics().queued_jobs >= CAP - WORKERS
            submitted = trio.current_time()
            await send(b_ws, request("B"))
            await bystander.wait(1)
            wait = bystander.started["B"] - submitted
            # Behind at most one job per worker: the flooder's backlog does not count.
            one_job = min(r.time_taken for r in flooder.results.values() if r.time_taken)
            assert wait <= 2 * one_job, (wait, one_job)
            assert bystander.positions["B"][0] <= WORKERS
            assert isinstance(bystander.results["B"], LLMJobResult)
            # Jobs over the cap are refused clearly; every accepted one completes.
            await flooder.wait(FLOOD)
            refused = flooder.errors.values()
            assert len(flooder.errors) == FLOOD - CAP
            assert {(e.error, e.error_code) for e in refused} == {("too_many_jobs", "429")}
            assert len(flooder.results) == CAP
            assert set(flooder.results) == {f"A{i}" for i in range(CAP)}
            # Queue positions cost O(1) frames per job, not O(backlog): a job far back is
            # told its position when queued, then each change once among the first few.
            updates = sum(len(p) for p in flooder.positions.values())
            assert updates <= CAP * (POSITION_WINDOW + 2), updates
            # Once its jobs are done, the socket may submit again.
            await send(a_ws, request("AGAIN"))
            await flooder.wait(FLOOD + 1)
            assert "AGAIN" in flooder.results
            nursery.cancel_scope.cancel()
        assert net.statistics().job_state_entries == 0


async def test_round_robin_between_two_backlogged_accounts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two accounts, each with a backlog, one worker: they take turns."""
    worker = SimulatedWorker("solo", tokens_per_second=TOKENS_PER_SECOND)
    async with open_local_network(listen=False, workers=[worker]) as net:
        net.add_account("other", password="other-password", balance=1_000_000)
        key = net.create_api_key("other")
        first, second = Ledger(), Ledger()
        async with (
            trio.open_nursery() as nursery,
            connect(net, net.api_key, "one", queue=64) as (one, _),
            connect(net, key, "two", queue=64) as (two, _),
        ):
            nursery.start_soon(first.read, one)
            nursery.start_soon(second.read, two)
            for i in range(20):
                await send(one, request(f"P{i}"))
            await net.wait_until(lambda: len(net.job_requests) == 20)
            for i in range(5):
                await send(two, request(f"Q{i}"))
            await first.wait(20)
            await second.wait(5)
            nursery.cancel_scope.cancel()
        started = sorted(first.started.items() | second.started.items(), key=lambda kv: kv[1])
        order = [job_id[0] for job_id, _ in started]
        # The second account's five jobs interleave with the first's backlog, not after it.
        last_q = max(i for i, kind in enumerate(order) if kind == "Q")
        assert order[: last_q + 1].count("P") <= 7, order
        assert len(first.results) == 20
        assert len(second.results) == 5


def test_fairness_spans_the_models_a_worker_serves() -> None:
    """Sans-IO: one worker serving two models; account A's backlog on one model does not delay
    account B's job on the other, and A's own order stays FIFO."""
    scheduler = Scheduler()
    slot = scheduler.add_worker(SimulatedWorker("both", models=["x", "y"]), frozenset({"x", "y"}))
    seq = iter(range(1, 1_000))

    def job(job_id: str, account: str, model: str) -> Job:
        return Job(
            request=LLMJobRequest(
                job_id=job_id, model=model, messages=[ChatMessage(role="user", content="x")]
            ),
            app_id="app",
            account=account,
            seq=next(seq),
            prompt_tokens=1,
            max_tokens=1,
            estimated_cost="0",
        )

    backlog = [job(f"A{i}", "a", "x") for i in range(100)]
    for queued in backlog:
        scheduler.enqueue(queued)
    assert backlog[0].slot is slot
    b = job("B", "b", "y")
    assert scheduler.enqueue(b) == 1  # alone in model y's queue
    assert scheduler.position(backlog[1]) == 1
    scheduler.discard(backlog[0])  # A0 ends: A1 (queued first, the same tag) goes next
    assert backlog[1].slot is slot
    scheduler.discard(backlog[1])
    assert b.slot is slot
    scheduler.discard(b)
    started: list[str] = []
    while (running := next(iter(slot.active), None)) is not None:
        assert isinstance(running, Job)
        started.append(running.job_id)
        scheduler.discard(running)
    assert started == [f"A{i}" for i in range(2, 100)]
    assert scheduler.statistics() == (0, 0, 0)
