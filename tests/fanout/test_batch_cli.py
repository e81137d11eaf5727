"""``trio-sogni batch`` as a subprocess on its embedded simulated network: validation, a full
run with its report, SIGKILL then ``--resume``, and the staged Ctrl-C.

The subprocess prints a plain progress line every 0.1 s (stderr is a pipe, not a terminal);
the tests wait on those lines (events, not sleeps) before killing or interrupting it.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from helpers import start_localnet_cli

from trio_sogni._cli._batch import _State, _watch_interrupts, format_progress
from trio_sogni.fanout import RunReport, RunSnapshot
from trio_sogni.localnet import default_reply_text

MODEL = "test-model"
OK_COUNT = re.compile(r"\| ok (\d+) \|")


def write_requests(path: Path, count: int) -> list[str]:
    ids = [f"req-{i}" for i in range(count)]
    with path.open("w") as file:
        for i, ident in enumerate(ids):
            row = {"id": ident, "messages": [{"role": "user", "content": f"question {i}"}]}
            file.write(json.dumps(row) + "\n")
    return ids


def batch_command(requests: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trio_sogni",
        "batch",
        str(requests),
        "-o",
        str(output),
        "--simulated",
        "--model",
        MODEL,
        "--progress-interval",
        "0.1",
        *extra,
    ]


def run_batch(requests: Path, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batch_command(requests, output, *extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_journal(path: Path) -> list[dict[str, Any]]:
    """Every line is a complete record; every outcome follows an intent of its index."""
    records = read_jsonl(path)
    intents: set[int] = set()
    for record in records:
        assert record["kind"] in {"run", "intent", "outcome"}, record
        if record["kind"] == "intent":
            intents.add(record["index"])
        elif record["kind"] == "outcome":
            assert record["index"] in intents, record
    return records


class StderrLines:
    """Reads a subprocess's stderr line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.lines: list[str] = []

    async def until(self, predicate: Callable[[str], bool]) -> str:
        while True:
            while b"\n" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\n")
                line = raw.decode()
                self.lines.append(line)
                if predicate(line):
                    return line
            chunk = await self.stream.receive_some()
            if not chunk:
                raise AssertionError("stderr ended:\n" + "\n".join(self.lines))
            self.buffer += chunk

    async def rest(self) -> str:
        while chunk := await self.stream.receive_some():
            self.buffer += chunk
        return "\n".join(self.lines) + self.buffer.decode()


def ok_at_least(count: int) -> Callable[[str], bool]:
    def predicate(line: str) -> bool:
        match = OK_COUNT.search(line)
        return match is not None and int(match.group(1)) >= count

    return predicate


async def start(command: list[str]) -> tuple[trio.Process, StderrLines]:
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    return process, StderrLines(process.stderr)


def test_bad_row_exits_2_naming_the_line_before_sending(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 3)
    with requests.open("a") as file:
        file.write("\n")  # blank lines are skipped
        file.write(json.dumps({"messages": [{"role": "user", "content": "x"}], "tempo": 1}))
        file.write("\n")
    out = run_batch(requests, output)
    assert out.returncode == 2, out.stderr
    assert "line 5:" in out.stderr
    assert "tempo" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not output.exists()
    assert not (tmp_path / "results.jsonl.journal.jsonl").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"id": "req-0", "messages": [{"role": "user", "content": "x"}]}', "repeats line 1"),
        ('{"messages": []}', "line 2:"),
    ],
)
def test_other_bad_rows_exit_2(tmp_path: Path, line: str, message: str) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 1)
    with requests.open("a") as file:
        file.write(line + "\n")
    out = run_batch(requests, output)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 1)
    assert run_batch(requests, output, "--concurrency", "0").returncode == 2
    assert run_batch(requests, output, "--retry-failed").returncode == 2
    assert run_batch(tmp_path / "missing.jsonl", output).returncode == 2


def test_full_run_writes_results_journal_and_report(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    ids = write_requests(requests, 6)
    out = run_batch(requests, output, "--concurrency", "3", "--ordered")
    assert out.returncode == 0, out.stderr
    assert "simulated" in out.stderr
    results = read_jsonl(output)
    assert [r["id"] for r in results] == ids  # --ordered: input order
    for i, result in enumerate(results):
        assert result["status"] == "ok"
        metrics = result["metrics"]  # derived per-item values, no raw timestamps
        assert metrics["ttft"] >= 0
        assert metrics["e2el"] >= metrics["ttft"]
        assert metrics["sched"] >= 0
        assert metrics["chunk_times"] is None
        assert "t_send" not in metrics
        expected = default_reply_text([{"role": "user", "content": f"question {i}"}])
        assert result["content"] == expected
    report = msgspec.json.decode((tmp_path / "run_report.json").read_bytes(), type=RunReport)
    assert report.ok == 6
    assert report.items_total == 6
    records = check_journal(tmp_path / "results.jsonl.journal.jsonl")
    assert Counter(r["kind"] for r in records) == {"run": 1, "intent": 6, "outcome": 6}
    # a fresh run refuses to reuse the journal
    again = run_batch(requests, output)
    assert again.returncode == 2
    assert "--resume" in again.stderr or "resume" in again.stderr


async def test_sigkill_mid_run_then_resume_sends_nothing_twice(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    journal = tmp_path / "journal.jsonl"
    ids = write_requests(requests, 48)
    pace = ("--concurrency", "4", "--simulated-tokens-per-second", "10", "--journal", str(journal))
    process, stderr = await start(batch_command(requests, output, *pace))
    try:
        with trio.fail_after(60):
            await stderr.until(ok_at_least(4))
    finally:
        process.kill()
        await process.wait()
    before = check_journal(journal)
    finished = {r["index"] for r in before if r["kind"] == "outcome" and r["status"] == "ok"}
    assert 4 <= len(finished) < 48  # killed mid-run

    out = run_batch(requests, output, *pace, "--resume")
    assert out.returncode == 0, out.stderr
    assert f"({len(finished)} already done)" in out.stderr
    results = read_jsonl(output)
    assert sorted(r["id"] for r in results) == sorted(ids)  # every input id exactly once
    assert all(r["status"] == "ok" for r in results)
    after = check_journal(journal)
    intents = Counter(r["index"] for r in after if r["kind"] == "intent")
    assert all(intents[i] == 1 for i in finished)  # finished items were not sent again
    assert set(intents) == set(range(48))


async def test_first_ctrl_c_drains_and_exits_130(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal.jsonl"
    ids = write_requests(requests, 48)
    pace = ("--concurrency", "4", "--simulated-tokens-per-second", "10")
    process, stderr = await start(batch_command(requests, output, *pace))
    with trio.fail_after(60):
        try:
            await stderr.until(ok_at_least(2))
            process.send_signal(signal.SIGINT)
            text = await stderr.rest()
        finally:
            process.kill()  # no-op when it has exited
        assert await process.wait() == 130, text
    assert "waiting for those in flight" in text
    records = check_journal(journal)
    outcomes = [r for r in records if r["kind"] == "outcome"]
    intents = [r for r in records if r["kind"] == "intent"]
    assert len(outcomes) < 48
    assert len(outcomes) == len(intents)  # everything sent was drained, nothing left open
    assert all(r["status"] == "ok" for r in outcomes)
    assert len(read_jsonl(output)) == len(outcomes)
    msgspec.json.decode((tmp_path / "run_report.json").read_bytes(), type=RunReport)

    out = run_batch(requests, output, *pace, "--resume")
    assert out.returncode == 0, out.stderr
    assert sorted(r["id"] for r in read_jsonl(output)) == sorted(ids)


async def test_second_ctrl_c_cancels_in_flight(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal.jsonl"
    write_requests(requests, 12)
    pace = ("--concurrency", "4", "--simulated-tokens-per-second", "2")  # ~2 s per answer
    process, stderr = await start(batch_command(requests, output, *pace))
    with trio.fail_after(60):
        try:
            await stderr.until(lambda line: "in flight 4" in line)
            process.send_signal(signal.SIGINT)
            await stderr.until(lambda line: "waiting for those in flight" in line)
            process.send_signal(signal.SIGINT)
            text = await stderr.rest()
        finally:
            process.kill()
        assert await process.wait() == 130, text
    assert "cancelling the items in flight" in text
    records = check_journal(journal)
    outcomes = [r for r in records if r["kind"] == "outcome"]
    intents = [r for r in records if r["kind"] == "intent"]
    assert {r["index"] for r in outcomes} == {r["index"] for r in intents}
    cancelled = [r for r in outcomes if r["status"] == "cancelled"]
    assert cancelled
    assert len(read_jsonl(output)) == len(outcomes)


def test_chunk_times_flag_puts_chunk_times_in_the_rows(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 3)
    out = run_batch(requests, output, "--chunk-times", "--simulated-tokens-per-second", "100")
    assert out.returncode == 0, out.stderr
    for result in read_jsonl(output):
        metrics = result["metrics"]
        times = metrics["chunk_times"]
        assert len(times) == metrics["chunks"] > 1
        assert times == sorted(times)
        assert times[0] == metrics["ttft"]
        assert times[-1] == metrics["e2el"]


def test_format_progress_line() -> None:
    snapshot = RunSnapshot(
        elapsed=10.0,
        items_total=100,
        items_done=20,
        ok=18,
        failed=2,
        cancelled=0,
        budget_exhausted=0,
        skipped=0,
        cached=0,
        in_flight=4,
        queued=0,
        output_tokens=2000,
        output_tokens_per_s=200.0,
        requests_per_s=2.0,
        spend_usd=0.5,
        reserved_usd=0.0,
        projected_usd=None,
        errors_by_class={"model_unavailable": 2},
        retries=0,
        concurrency_limit=4,
        breaker_open=False,
        admitting=False,
        eta_seconds=None,
    )
    line = format_progress(snapshot, total=110, done_before=10)
    # 30 of 110 done; 80 left x 100 tokens each / 200 tok/s = 40 s
    assert line.startswith("30/110 (27.3%)")
    assert "| ok 18 |" in line
    assert "200.0 tok/s" in line
    assert "ETA 40s" in line
    assert "$0.5000" in line
    assert "errors: model_unavailable 2" in line
    assert line.endswith("draining")


def test_failed_items_exit_1_and_resume_reruns_them_only_when_asked(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.journal.jsonl"
    write_requests(requests, 3)
    with requests.open("a") as file:
        bad = {"id": "too-long", "messages": [{"role": "user", "content": "x"}]}
        file.write(json.dumps({**bad, "max_tokens": 10_000_000}) + "\n")
    out = run_batch(requests, output)
    assert out.returncode == 1, out.stderr
    statuses = {r["id"]: r["status"] for r in read_jsonl(output)}
    assert statuses == {"req-0": "ok", "req-1": "ok", "req-2": "ok", "too-long": "failed"}
    failed = next(r for r in read_jsonl(output) if r["id"] == "too-long")
    assert failed["error"]["type"]

    def intents() -> Counter[int]:
        return Counter(r["index"] for r in read_jsonl(journal) if r["kind"] == "intent")

    again = run_batch(requests, output, "--resume")  # a final failure is done: nothing re-sent
    assert again.returncode == 1, again.stderr
    assert "(4 already done)" in again.stderr
    assert intents() == {0: 1, 1: 1, 2: 1, 3: 1}
    retried = run_batch(requests, output, "--resume", "--retry-failed")
    assert retried.returncode == 1, retried.stderr
    assert intents() == {0: 1, 1: 1, 2: 1, 3: 2}  # only the failure was sent again
    assert sorted(r["id"] for r in read_jsonl(output)) == ["req-0", "req-1", "req-2", "too-long"]


def test_resume_refuses_changed_input(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 3)
    assert run_batch(requests, output).returncode == 0
    lines = requests.read_text().splitlines()
    lines[1] = json.dumps({"id": "req-1", "messages": [{"role": "user", "content": "edited"}]})
    requests.write_text("\n".join(lines) + "\n")
    out = run_batch(requests, output, "--resume")
    assert out.returncode == 2, out.stderr
    assert "line 2:" in out.stderr
    assert "input changed" in out.stderr


def test_cache_answers_a_second_run(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    cache = tmp_path / "cache.jsonl"
    write_requests(requests, 4)
    first = run_batch(requests, tmp_path / "a.jsonl", "--cache", str(cache), "--quiet")
    assert first.returncode == 0, first.stderr
    assert " | ok " not in first.stderr  # --quiet: no progress lines
    assert not any(r["cached"] for r in read_jsonl(tmp_path / "a.jsonl"))
    second = run_batch(requests, tmp_path / "b.jsonl", "--cache", str(cache))
    assert second.returncode == 0, second.stderr
    results = read_jsonl(tmp_path / "b.jsonl")
    assert all(r["cached"] and r["status"] == "ok" for r in results)
    assert {r["content"] for r in results} == {
        r["content"] for r in read_jsonl(tmp_path / "a.jsonl")
    }


def test_endpoint_needs_credentials(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 1)
    command = [a for a in batch_command(requests, output) if a != "--simulated"]
    out = subprocess.run(
        [*command, "--endpoint", "ws://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SOGNI_")},
    )
    assert out.returncode == 2, out.stderr
    assert "needs credentials" in out.stderr


def test_progress_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(requests, 8)
    master, slave = pty.openpty()
    command = batch_command(requests, output, "--concurrency", "2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    data = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
        process.kill()
    assert process.wait() == 0, data
    assert b"\r\x1b[K8/8 (100.0%)" in data


class FakeRun:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop_admitting(self) -> None:
        self.calls.append("stop_admitting")

    def cancel_in_flight(self) -> None:
        self.calls.append("cancel_in_flight")


async def test_interrupt_stages() -> None:
    """1st: stop admitting; 2nd: cancel in flight; 3rd: exit at once with status 130."""
    run = FakeRun()
    state = _State()
    exits: list[int] = []
    err = io.StringIO()
    send, receive = trio.open_memory_channel[int](3)
    for _ in range(3):
        send.send_nowait(signal.SIGINT)
    send.close()

    async def signals() -> AsyncIterator[int]:
        async with receive:
            async for signum in receive:
                yield signum

    await _watch_interrupts(signals(), run, state, err, exit_now=exits.append)
    assert run.calls == ["stop_admitting", "cancel_in_flight"]
    assert exits == [130]
    assert state.interrupts == 3
    assert "exiting now" in err.getvalue()


async def test_remote_supernet_with_an_api_key(tmp_path: Path) -> None:
    """--endpoint: the same command against a separate `localnet serve` process (loopback)."""
    requests, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    ids = write_requests(requests, 5)
    async with trio.open_nursery() as nursery:
        server, info = await start_localnet_cli(nursery, ["--model", MODEL, "--capacity", "4"])
        command = [a for a in batch_command(requests, output) if a != "--simulated"]
        command += ["--endpoint", info["socket_url"], "--rest-endpoint", info["rest_url"]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOGNI_")}
        env["SOGNI_API_KEY"] = info["api_key"]
        with trio.fail_after(60):
            out = await trio.run_process(command, capture_stderr=True, check=False, env=env)
        server.kill()
    stderr = out.stderr.decode()
    assert out.returncode == 0, stderr
    assert f"Supernet at {info['socket_url']}" in stderr
    assert info["api_key"] not in stderr
    assert sorted(r["id"] for r in read_jsonl(output)) == sorted(ids)
