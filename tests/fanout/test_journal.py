"""The fan-out journal, the results writer and the result cache (files only, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_sogni.fanout import ErrorInfo, FanoutItem, FanoutResult, content_key
from trio_sogni.fanout._cache import ResultCache
from trio_sogni.fanout._journal import Journal, JournalError, ResultsWriter


def item(index: int, text: str | None = None) -> FanoutItem:
    return FanoutItem(
        index=index,
        id=f"row-{index}",
        model="m",
        messages=[{"role": "user", "content": text if text is not None else f"q{index}"}],
    )


def result(index: int, status: Any = "ok") -> FanoutResult:
    error = None if status == "ok" else ErrorInfo(type="model_unavailable", message="no")
    return FanoutResult(
        index=index,
        id=f"row-{index}",
        status=status,
        content=f"answer {index}" if status == "ok" else None,
        error=error,
        attempts=1,
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def run_items(journal: Journal, outcomes: dict[int, str]) -> None:
    for index, status in outcomes.items():
        await journal.record_intent(item(index), content_key(item(index)))
        await journal.record_outcome(result(index, status))


async def test_records_are_complete_lines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path, manifest={"note": "x"}) as journal:
        await run_items(journal, {0: "ok", 1: "failed"})
    kinds = [(r["kind"], r.get("index")) for r in records(path)]
    assert kinds == [
        ("run", None),
        ("intent", 0),
        ("outcome", 0),
        ("intent", 1),
        ("outcome", 1),
    ]
    run, intent, outcome = records(path)[:3]
    assert run["version"] == 1
    assert run["note"] == "x"
    assert intent == {"kind": "intent", "index": 0, "id": "row-0", "key": content_key(item(0))}
    assert outcome["status"] == "ok"
    assert outcome["content"] == "answer 0"
    assert FanoutResult.from_json(path.read_text().splitlines()[2]) == result(0)


async def test_done_indices_counts_final_outcomes_only(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        await run_items(journal, {0: "ok", 1: "failed", 2: "cancelled", 3: "budget_exhausted"})
        await journal.record_intent(item(4), content_key(item(4)))  # in flight at the "crash"
        assert journal.done_indices() == {0, 1}
    with Journal.open(path, resume=True) as journal:
        assert journal.done_indices() == {0, 1}
        assert journal.final_status(0) == "ok"
        assert journal.final_status(1) == "failed"
        assert journal.final_status(2) is None
    with Journal.open(path, resume=True, retry_failed=True) as journal:
        assert journal.done_indices() == {0}
        await journal.record_outcome(result(1, "ok"))  # the re-run failure now succeeds
        assert journal.done_indices() == {0, 1}
    with Journal.open(path, resume=True) as journal:
        assert journal.final_status(1) == "ok"


async def test_a_done_items_outcome_is_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        await run_items(journal, {0: "ok"})
        await journal.record_outcome(result(0, "cancelled"))
        assert journal.outcomes_written == 1
    assert [r["status"] for r in records(path) if r["kind"] == "outcome"] == ["ok"]


async def test_torn_last_line_is_ignored_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        await run_items(journal, {0: "ok", 1: "ok"})
    whole = path.read_bytes()
    torn = b'{"kind":"outcome","index":2,"id":"TORN","stat'
    path.write_bytes(whole + torn)
    with Journal.open(path, resume=True) as journal:
        assert journal.done_indices() == {0, 1}
        await run_items(journal, {2: "ok"})
    data = path.read_bytes()
    assert b"TORN" not in data
    assert data.startswith(whole)
    assert all(isinstance(json.loads(line), dict) for line in data.splitlines())
    with Journal.open(path, resume=True) as journal:
        assert journal.done_indices() == {0, 1, 2}


async def test_corruption_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        await run_items(journal, {0: "ok"})
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(JournalError, match=":2: not a journal record"):
        Journal.open(path, resume=True)


def test_a_fresh_run_refuses_an_existing_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal.open(path).close()
    with pytest.raises(JournalError, match="exists"):
        Journal.open(path)
    Journal.open(path, resume=True).close()  # resuming it is fine


async def test_key_matches_detects_changed_input(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        await run_items(journal, {0: "ok"})
    with Journal.open(path, resume=True) as journal:
        assert journal.key_matches(0, content_key(item(0))) is True
        assert journal.key_matches(0, content_key(item(0, "edited"))) is False
        assert journal.key_matches(1, content_key(item(1))) is None


async def test_outcome_is_written_even_when_the_caller_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        with trio.CancelScope() as scope:
            scope.cancel()
            await journal.record_outcome(result(0))
        assert scope.cancelled_caught
    assert [r["index"] for r in records(path) if r["kind"] == "outcome"] == [0]


async def test_results_writer_resume_keeps_done_drops_rerun_and_backfills(tmp_path: Path) -> None:
    journal_path, results_path = tmp_path / "j.jsonl", tmp_path / "r.jsonl"
    with (
        Journal.open(journal_path) as journal,
        ResultsWriter.open(results_path, resume=False) as writer,
    ):
        await run_items(journal, {0: "ok", 1: "cancelled", 2: "failed", 3: "ok"})
        for index, status in {0: "ok", 1: "cancelled", 2: "failed"}.items():
            writer.write(result(index, status))
        # "crash" before item 3's results line; plus a torn line at the end
    with results_path.open("ab") as file:
        file.write(b'{"index":4,"id":"row-4","stat')
    with (
        Journal.open(journal_path, resume=True) as journal,
        ResultsWriter.open(results_path, resume=True, journal=journal) as writer,
    ):
        assert sorted(r["index"] for r in records(results_path)) == [0, 2, 3]
        assert writer.write(result(1)) is True
        assert writer.write(result(0)) is False  # already there: never twice
        assert writer.status_counts == {"ok": 3, "failed": 1}
    lines = records(results_path)
    assert sorted(r["index"] for r in lines) == [0, 1, 2, 3]
    assert {r["index"]: r["status"] for r in lines} == {0: "ok", 1: "ok", 2: "failed", 3: "ok"}


async def test_results_writer_retry_failed_replaces_the_failed_line(tmp_path: Path) -> None:
    journal_path, results_path = tmp_path / "j.jsonl", tmp_path / "r.jsonl"
    with (
        Journal.open(journal_path) as journal,
        ResultsWriter.open(results_path, resume=False) as writer,
    ):
        await run_items(journal, {0: "ok", 1: "failed"})
        writer.write(result(0))
        writer.write(result(1, "failed"))
    with (
        Journal.open(journal_path, resume=True, retry_failed=True) as journal,
        ResultsWriter.open(results_path, resume=True, journal=journal) as writer,
    ):
        assert [r["index"] for r in records(results_path)] == [0]
        await journal.record_outcome(result(1))
        writer.write(result(1))
    assert [(r["index"], r["status"]) for r in records(results_path)] == [(0, "ok"), (1, "ok")]


def test_results_writer_fresh_run_truncates(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"index":0,"id":"x","status":"ok"}\n')
    with ResultsWriter.open(path, resume=False) as writer:
        assert len(writer) == 0
        writer.write(result(5))
    assert [r["index"] for r in records(path)] == [5]


async def test_cache_stores_ok_results_only_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    key, other = content_key(item(0)), content_key(item(1))
    with ResultCache(path) as cache:
        assert await cache.get(key) is None
        await cache.put(key, result(0))
        await cache.put(other, result(1, "failed"))
        await cache.put(key, result(7))  # the first entry of a key wins
        assert await cache.get(key) == result(0)
        assert await cache.get(other) is None
        assert (cache.hits, cache.misses, cache.stored) == (1, 2, 1)
    with path.open("ab") as file:
        file.write(b'{"key":"abc","result":{"ind')  # torn
    with ResultCache(path) as cache:
        assert len(cache) == 1
        assert await cache.get(key) == result(0)
        await cache.put(other, result(1))
    with ResultCache(path) as cache:
        assert await cache.get(other) == result(1)
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_content_key_ignores_id_and_index_but_not_params() -> None:
    a = item(0, "same")
    b = FanoutItem(index=9, id="other", model="m", messages=[{"role": "user", "content": "same"}])
    c = FanoutItem(
        index=0,
        id="row-0",
        model="m",
        messages=[{"role": "user", "content": "same"}],
        params={"seed": 1},
    )
    assert content_key(a) == content_key(b)
    assert content_key(a) != content_key(c)


async def test_concurrent_outcomes_share_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path) as journal:
        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(journal.record_outcome, result(index))
        assert journal.outcomes_written == 50
        assert 1 <= journal.fsyncs < 50  # group commit
    with Journal.open(path, resume=True) as journal:
        assert journal.done_indices() == set(range(50))
    with Journal.open(path, resume=True, fsync_outcomes=False) as journal:
        await journal.record_outcome(result(50))
        assert journal.fsyncs == 0
