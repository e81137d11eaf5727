"""The fan-out journal (`Journal`) and the results file writer (`ResultsWriter`).

The journal is an append-only JSON Lines file. Each record is one line, written with a single
``write`` of the complete line (newline included) to a file opened with ``O_APPEND``, so a crash
can leave at most a *torn last line* (a line without its newline), never an interleaved or
half-written record in the middle. A record counts only once its newline is on disk: a torn last
line is ignored when the journal is reopened, and cut off before anything new is appended.

Records (``kind`` tells them apart; readers ignore kinds they do not know):

* ``{"kind": "run", "version": 1, "started_at": ..., "resume": ..., ...manifest}``: one per
  `Journal.open`, the settings of that invocation (a reproducibility manifest).
* ``{"kind": "intent", "index", "id", "key"}``: written *before* the item's first send;
  ``key`` is its `content_key`.
* ``{"kind": "outcome", ...}``: every field of the item's `FanoutResult` (``index``, ``id``,
  ``status``, ``content``, ``usage``, ``metrics``, ...), written after the outcome is settled and
  before the runner yields the result. With ``fsync_outcomes`` (the default) it is also fsynced.

An item is *done* when its latest outcome is final: ``ok``, or ``failed`` (a failure that
exhausted its retries or was not retryable). ``cancelled`` and ``budget_exhausted`` are not final:
those items were cut short or never sent, and a resumed run sends them. ``failed`` stops being
final with ``retry_failed=True``, so a resumed run re-runs the failures. Once an item is done,
later outcomes for it are not recorded (a finished item's outcome never changes), and
`done_indices` tells the runner to skip it: **a finished item is never sent again**. An item with
an intent and no outcome (in flight when the process died) is not done and is sent again on
resume: streaming chat jobs cannot be reattached, so such items are delivered at least once.

`ResultsWriter` writes the user's results file (one `FanoutResult.to_json` line per item). On
resume it keeps the lines of items that are done, drops the rest (torn lines, repeated indices,
non-final outcomes about to be re-run), fills in done items that the journal has but the results
file lacks (a crash between the two writes), and then appends only new outcomes, so after a
complete run every input item appears exactly once.
"""

from __future__ import annotations

import datetime
import os
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Set as AbstractSet
from itertools import chain
from typing import Annotated, Any, Final, Self

import msgspec
import trio

from .. import SogniError
from ..protocol import JSONDecoder
from ._indexset import IndexSet, KeyPrefixes
from ._types import FanoutItem, FanoutResult

__all__ = ["FINAL_STATUSES", "Journal", "JournalError", "ResultsWriter"]

FINAL_STATUSES: Final[frozenset[str]] = frozenset({"ok", "failed"})
"""Outcome statuses after which an item is done (``failed`` only without ``retry_failed``)."""

JOURNAL_VERSION: Final = 1

MAX_JOURNAL_INDEX: Final = 10**8 - 1
"""The largest item index a journal holds (a run has at most 100,000,000 items): a line naming a
negative or larger index is refused with :class:`JournalError` instead of allocating a bit set
sized by a hand-edited number."""


class JournalError(SogniError, ValueError):
    """A journal cannot be used: it is not one, a line before its last is corrupt, it exists
    already when starting afresh, or it is closed."""


class _Head(msgspec.Struct):
    """The fields of a journal or results line that the readers need (others are skipped)."""

    kind: str | None = None
    index: Annotated[int, msgspec.Meta(ge=0, le=MAX_JOURNAL_INDEX)] | None = None
    key: str | None = None
    status: str | None = None


_head_decoder: Final = JSONDecoder(_Head)
_encoder: Final = msgspec.json.Encoder()


def _decode_head(line: bytes) -> _Head:
    """The head of a line read tolerantly (an undecodable line, or one whose index is out of
    range, has an empty head)."""
    try:
        return _head_decoder.decode(line)
    except msgspec.MsgspecError:
        return _Head()


def complete_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(line_number, end_offset, line)`` for every newline-terminated line of ``path``
    (1-based numbers; ``end_offset`` is where the line ends, newline included). A last line
    without a newline (torn by a crash) is not yielded."""
    with open(path, "rb") as file:
        offset = 0
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            yield number, offset, line


def open_append(path: str | os.PathLike[str], *, keep_bytes: int | None) -> int:
    """Open ``path`` for appending and return the descriptor. ``keep_bytes=None`` truncates the
    file to empty; otherwise the file is cut to its first ``keep_bytes`` bytes (dropping a torn
    tail) when it is longer."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if keep_bytes is None:
        flags |= os.O_TRUNC
    fd = os.open(path, flags, 0o644)
    try:
        if keep_bytes is not None and os.fstat(fd).st_size > keep_bytes:
            os.ftruncate(fd, keep_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_line(fd: int, line: bytes) -> None:
    """Write ``line`` (which ends with a newline) to ``fd``: one ``write`` call unless the kernel
    accepts only part of it, which regular files do only on errors such as a full disk."""
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _close_synced(fd: int | None) -> None:
    if fd is not None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _key_prefix(key: str) -> int:
    try:
        return int(key[:16], 16)
    except ValueError:
        return hash(key)


class Journal:
    """An append-only JSON Lines journal of a fan-out run; implements `JournalProtocol`.

    Create it with `Journal.open`, pass it to ``open_fanout(..., journal=journal)``, and `close`
    it when the run is over (it is also a context manager). The module docstring describes the
    records, when an item counts as done, and the crash guarantees.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        *,
        retry_failed: bool,
        fsync_outcomes: bool,
        ok: IndexSet,
        failed: IndexSet,
        intents: KeyPrefixes,
    ) -> None:
        """Use `Journal.open`."""
        self.path = path
        self.retry_failed = retry_failed
        self.fsync_outcomes = fsync_outcomes
        self._fd: int | None = fd
        self._ok = ok
        self._failed = failed
        self._intents = intents
        self.intents_written = 0
        self.outcomes_written = 0
        self.fsyncs = 0
        self._synced = 0  # outcome records known to be on disk
        self._sync_round: trio.Event | None = None  # set when the running fsync ends

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        resume: bool = False,
        *,
        retry_failed: bool = False,
        fsync_outcomes: bool = True,
        manifest: Mapping[str, Any] | None = None,
    ) -> Journal:
        """Open the journal at ``path``.

        Without ``resume`` the file must not exist or be empty (a fresh run never silently
        mixes with an old one). With ``resume`` an existing journal is read first: a torn last
        line is dropped (and cut off the file), and the items with a final outcome become
        `done_indices`. Then a ``run`` record with ``manifest`` (JSON-serialisable settings of
        this invocation) is appended.

        Raises:
            JournalError: the file exists without ``resume``, or a line before the last is not
                a journal record.
            OSError: the file cannot be read or written.
        """
        name = os.fspath(path)
        ok = IndexSet()
        failed = IndexSet()
        intents = KeyPrefixes()
        keep = 0
        exists = os.path.exists(name) and os.path.getsize(name) > 0
        if exists and not resume:
            raise JournalError(
                f"journal {name} exists: resume the run, or remove the file to start afresh"
            )
        if exists:
            for number, end, line in complete_lines(name):
                try:
                    head = _head_decoder.decode(line)
                except msgspec.MsgspecError as exc:
                    raise JournalError(f"{name}:{number}: not a journal record ({exc})") from None
                if head.kind == "intent" and head.index is not None and head.key is not None:
                    intents.set(head.index, _key_prefix(head.key))
                elif head.kind == "outcome" and head.index is not None:
                    ok.discard(head.index)
                    failed.discard(head.index)
                    if head.status == "ok":
                        ok.add(head.index)
                    elif head.status == "failed":
                        failed.add(head.index)
                keep = end
        fd = open_append(name, keep_bytes=keep if exists else None)
        journal = cls(
            name,
            fd,
            retry_failed=retry_failed,
            fsync_outcomes=fsync_outcomes,
            ok=ok,
            failed=failed,
            intents=intents,
        )
        header: dict[str, Any] = {
            "kind": "run",
            "version": JOURNAL_VERSION,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "resume": resume,
            "retry_failed": retry_failed,
        }
        header.update(manifest or {})
        journal._write(_encoder.encode(header) + b"\n")
        return journal

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed")
        write_line(self._fd, line)

    def final_status(self, index: int) -> str | None:
        """``"ok"`` or ``"failed"`` when the item is done with that outcome, else ``None``."""
        if index in self._ok:
            return "ok"
        if index in self._failed and not self.retry_failed:
            return "failed"
        return None

    def done_indices(self) -> AbstractSet[int]:
        """The indices of done items (a new compact set): those whose latest outcome is ``ok``,
        or ``failed`` unless ``retry_failed``."""
        if self.retry_failed:
            return IndexSet(self._ok)
        return IndexSet(chain(self._ok, self._failed))

    def key_matches(self, index: int, key: str) -> bool | None:
        """Whether the journal's intent for ``index`` carries ``key`` (compared on its first 64
        bits); ``None`` when the journal has no intent for it. A resumed run uses this to refuse
        input that changed since the journal was written."""
        recorded = self._intents.get(index)
        if recorded is None:
            return None
        return recorded == _key_prefix(key)

    async def record_intent(self, item: FanoutItem, key: str) -> None:
        """Append ``{"kind": "intent", "index", "id", "key"}`` (flushed to the OS, not fsynced:
        a lost intent only means the item is sent again, which a missing outcome means anyway).
        The line is written before the first checkpoint, so a cancelled caller still records it.
        """
        record = {"kind": "intent", "index": item.index, "id": item.id, "key": key}
        self._write(_encoder.encode(record) + b"\n")
        self._intents.set(item.index, _key_prefix(key))
        self.intents_written += 1
        await trio.lowlevel.checkpoint()

    async def record_outcome(self, result: FanoutResult) -> None:
        """Append the outcome record of ``result``, unless its item is already done (then nothing
        is written: a finished item's outcome never changes). The line is written before the
        first checkpoint; with ``fsync_outcomes`` the call then returns once the line is fsynced
        (concurrent callers share fsyncs: one runs at a time, in a worker thread, and
        covers every line written before it started)."""
        if self.final_status(result.index) is not None:
            await trio.lowlevel.checkpoint()
            return
        self._write(b'{"kind":"outcome",' + _encoder.encode(result)[1:] + b"\n")
        self.outcomes_written += 1
        self._ok.discard(result.index)
        self._failed.discard(result.index)
        if result.status == "ok":
            self._ok.add(result.index)
        elif result.status == "failed":
            self._failed.add(result.index)
        if self.fsync_outcomes:
            await self._sync_through(self.outcomes_written)
        else:
            await trio.lowlevel.checkpoint()

    async def _sync_through(self, target: int) -> None:
        """Return once the first ``target`` outcome records are fsynced. Group commit: one
        fsync at a time, in a worker thread, covering every record written before it started;
        callers that arrive meanwhile wait for it, then start the next round if still needed."""
        while self._synced < target:
            running = self._sync_round
            if running is not None:
                await running.wait()
                continue
            fd = self._fd
            if fd is None:
                await trio.lowlevel.checkpoint()
                return
            done = self._sync_round = trio.Event()
            covered = self.outcomes_written
            try:
                await trio.to_thread.run_sync(os.fsync, fd)
                self.fsyncs += 1
                self._synced = max(self._synced, covered)
            finally:
                self._sync_round = None
                done.set()

    def final_outcomes(self, indices: Collection[int]) -> dict[int, FanoutResult]:
        """The final outcome recorded for each of ``indices`` that is done (re-read from the
        file; used to fill in a results file that missed them)."""
        wanted = {i for i in indices if self.final_status(i) is not None}
        found: dict[int, FanoutResult] = {}
        if not wanted:
            return found
        for _, _, line in complete_lines(self.path):
            head = _decode_head(line)
            if (
                head.kind == "outcome"
                and head.index is not None
                and head.index in wanted
                and head.status == self.final_status(head.index)
            ):
                found[head.index] = FanoutResult.from_json(line)
        return found

    def close(self) -> None:
        """Close the file (fsyncing it first). Idempotent."""
        fd, self._fd = self._fd, None
        _close_synced(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ResultsWriter:
    """Writes a results file: one `FanoutResult.to_json` line per input item.

    `write` ignores a result whose index is already in the file, so each index appears at most
    once. `status_counts` counts the statuses of every line in the file.
    """

    def __init__(self, path: str, fd: int, present: IndexSet, counts: Counter[str]) -> None:
        """Use `ResultsWriter.open`."""
        self.path = path
        self._fd: int | None = fd
        self._present = present
        self.status_counts = counts
        """How many lines of each status the file holds (kept, filled in and new)."""

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, resume: bool, journal: Journal | None = None
    ) -> ResultsWriter:
        """Open the results file at ``path``.

        Without ``resume`` the file is truncated. With ``resume`` an existing line is kept when
        it is the first line of its index and its status is the journal's final status for the
        item (without a journal: ``ok`` or ``failed``). Other lines (torn, unparsable, repeated,
        or of items the resumed run sends again) are dropped by rewriting the file atomically:
        a temporary file, fsynced, renamed over it. Then the journal's outcomes of done items
        missing from the file are appended, in index order.

        Raises:
            OSError: the file cannot be read or written.
        """
        name = os.fspath(path)
        present = IndexSet()
        counts: Counter[str] = Counter()
        if not resume:
            return cls(name, open_append(name, keep_bytes=None), present, counts)
        dirty = False
        keep = 0
        if os.path.exists(name):
            for _, end, line in complete_lines(name):
                head = _decode_head(line)
                if _keep_line(head, present, journal) and head.index is not None:
                    present.add(head.index)
                    counts[str(head.status)] += 1
                    if not dirty:
                        keep = end
                else:
                    dirty = True
        if dirty:
            _rewrite_keeping(name, journal)
            keep = os.path.getsize(name)
        writer = cls(name, open_append(name, keep_bytes=keep), present, counts)
        if journal is not None:
            backfill = journal.final_outcomes(journal.done_indices() - present)
            for index in sorted(backfill):
                writer.write(backfill[index])
        return writer

    def write(self, result: FanoutResult) -> bool:
        """Append ``result`` as one line (flushed to the OS); ``False`` (nothing written) when
        its index is already in the file.

        Raises:
            JournalError: the writer is closed.
        """
        if result.index in self._present:
            return False
        if self._fd is None:
            raise JournalError(f"results file {self.path} is closed")
        write_line(self._fd, result.to_json().encode() + b"\n")
        self._present.add(result.index)
        self.status_counts[result.status] += 1
        return True

    def __contains__(self, index: int) -> bool:
        return index in self._present

    def __len__(self) -> int:
        return len(self._present)

    def close(self) -> None:
        """Close the file (fsyncing it first). Idempotent."""
        fd, self._fd = self._fd, None
        _close_synced(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _keep_line(head: _Head, present: IndexSet, journal: Journal | None) -> bool:
    """Whether a results line (``head``) is kept on resume: the first line of its index, and
    its status is the journal's final status for the item (no journal: a final status)."""
    if head.index is None or head.index in present or head.status is None:
        return False
    if journal is None:
        return head.status in FINAL_STATUSES
    return journal.final_status(head.index) == head.status


def _rewrite_keeping(path: str, journal: Journal | None) -> None:
    """Rewrite ``path`` with only the lines `_keep_line` keeps, through a temporary file that is
    fsynced and renamed over it (a crash leaves either the old file or the new one)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    present = IndexSet()
    with open(temporary, "wb") as out:
        for _, _, line in complete_lines(path):
            head = _decode_head(line)
            if _keep_line(head, present, journal) and head.index is not None:
                present.add(head.index)
                out.write(line)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
