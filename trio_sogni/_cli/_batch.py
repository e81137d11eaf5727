"""``trio-sogni batch``: run a JSON Lines file of chat requests through `trio_sogni.fanout`.

::

    trio-sogni batch requests.jsonl -o results.jsonl [--model M] [--concurrency N] [--rpm R]
        [--tpm T] [--budget-usd X] [--budget-tokens N] [--resume] [--ordered] ...

Each input line is one request in the OpenAI / Sogni chat shape (`FanoutItem.from_row`); blank
lines are skipped and do not count as rows. Before anything is sent the whole file is read once,
row by row, and validated (a bad row: exit status 2 and one line naming the line number). The
run then reads the file again lazily, so memory does not grow with the input.

Outputs: ``-o`` gets one `FanoutResult` JSON line per item; the journal (default
``<output>.journal.jsonl``) records an intent before each send and each outcome; the report
(default ``run_report.json`` next to the output) is `FanoutRun.report` at the end. ``--resume``
continues from the journal: finished items are never sent again, and the results file ends up
with every input item exactly once.

Where it runs: an embedded local Supernet by default, with the real llama.cpp worker (the
``local`` extra) or, with ``--simulated``, SimulatedWorker test doubles (scripted text, no
inference; ``--simulated-tokens-per-second`` paces them, for tests and demos); with
``--endpoint`` and credentials, any Supernet. The choice is printed to stderr.

Progress goes to stderr: a line redrawn in place at most four times a second when stderr is a
terminal, a plain line every ``--progress-interval`` seconds otherwise, nothing with ``--quiet``.

Ctrl-C is staged: the first stops admitting new items and lets those in flight finish, the
second cancels the ones in flight (the server is told to abort them), the third exits at once.
The journal stays consistent in every case, because each record is one complete line written
with a single system call. Exit status: 0 when every item is ``ok``, 1 when some are not (or a
systemic error stopped the run), 2 for usage errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import signal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TextIO

import msgspec
import trio

import trio_sogni
from trio_sogni import InvalidRequestError, SogniClient
from trio_sogni._groups import unwrap_group
from trio_sogni.fanout import (
    FanoutItem,
    FanoutOptions,
    FanoutRun,
    Journal,
    JournalError,
    ResultCache,
    ResultsWriter,
    RunReport,
    RunSnapshot,
    content_key,
    open_fanout,
)
from trio_sogni.localnet import DEFAULT_LLAMA_MODEL, LlamaCppWorker
from trio_sogni.protocol import decode_json

from ._connect import (
    DEFAULT_MODEL,
    UsageError,
    add_connection_arguments,
    local_worker,
    open_embedded_client,
    open_remote_client,
    remote_credentials,
)

__all__ = [
    "JsonlItems",
    "UsageError",
    "add_batch_arguments",
    "batch",
    "format_progress",
    "scan_requests",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
TTY_REDRAW_INTERVAL: Final = 0.25


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``batch`` options (and the connection options) to ``parser``."""
    parser.add_argument("requests", help="JSON Lines file of chat requests, one per line")
    parser.add_argument("-o", "--output", required=True, help="results file (JSON Lines)")
    parser.add_argument(
        "--model",
        default=None,
        help="model of rows without one (default: the local model, or "
        f"{DEFAULT_MODEL} with --endpoint or --simulated)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="max requests in flight")
    parser.add_argument("--adaptive", action="store_true", help="AIMD concurrency")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute")
    parser.add_argument("--budget-usd", type=float, default=None, help="hard spending cap (USD)")
    parser.add_argument("--budget-tokens", type=int, default=None, help="hard token cap")
    parser.add_argument("--max-attempts", type=int, default=4, help="attempts per item")
    parser.add_argument("--retry-budget", type=int, default=None, help="extra attempts per run")
    parser.add_argument("--ordered", action="store_true", help="write results in input order")
    parser.add_argument("--reorder-window", type=int, default=1024, help="with --ordered")
    for name in ("ttft", "tpot", "e2el"):
        parser.add_argument(
            f"--slo-{name}",
            type=float,
            default=None,
            metavar="S",
            help=f"goodput threshold for {name.upper()} (seconds)",
        )
    for name in ("first-token", "stall", "total"):
        parser.add_argument(
            f"--{name}-timeout", type=float, default=None, metavar="S", help="per attempt"
        )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the journal: skip finished items"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="with --resume: also re-run failed items"
    )
    parser.add_argument("--journal", default=None, help="default: <output>.journal.jsonl")
    parser.add_argument("--report", default=None, help="default: run_report.json by the output")
    parser.add_argument(
        "--cache", default=None, metavar="PATH", help="on-disk cache of identical requests"
    )
    parser.add_argument(
        "--no-dedup", action="store_true", help="send identical in-flight requests separately"
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="do not fsync the journal after each outcome"
    )
    parser.add_argument(
        "--chunk-times",
        action="store_true",
        help="put each item's chunk arrival times (seconds after its send) in its result row",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a terminal (default: 5)",
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--simulated-tokens-per-second",
        type=float,
        default=None,
        metavar="R",
        help="with --simulated: pace each simulated answer at R chunks per second (for tests "
        "and demos; default: as fast as possible)",
    )


@dataclass
class RequestScan:
    """What validating an input file found: the number of rows and the models they name."""

    total: int = 0
    models: set[str] = field(default_factory=set[str])


def _rows(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line_number, line)`` of every non-blank line of ``path``."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                yield number, line


def _parse(number: int, index: int, line: bytes, default_model: str | None) -> FanoutItem:
    try:
        row: Any = decode_json(line)
    except msgspec.DecodeError as exc:
        raise UsageError(f"line {number}: not valid JSON ({exc})") from None
    try:
        return FanoutItem.from_row(index, row, default_model)
    except InvalidRequestError as exc:
        raise UsageError(f"line {number}: {exc}") from None


def scan_requests(
    path: str, default_model: str | None, journal: Journal | None = None
) -> RequestScan:
    """Validate every row of ``path`` (streaming: one row in memory at a time).

    Checks that each row parses (`FanoutItem.from_row`), that explicit ids are unique, and, with
    a ``journal`` being resumed, that each row's `content_key` matches the intent the journal
    recorded for its index and that the journal knows no index beyond the input.

    Raises:
        UsageError: the first problem, naming its line number.
        OSError: the file cannot be read.
    """
    scan = RequestScan()
    # Ids are checked for repeats through 64-bit digests (about 60 bytes per row instead of the
    # id strings and their line numbers); a repeat is confirmed, and its first line found, by a
    # second pass, so a digest collision can never reject a valid file.
    seen: set[int] = set()
    for number, line in _rows(path):
        item = _parse(number, scan.total, line, default_model)
        digest = _id_digest(item.id)
        if digest in seen:
            first = _first_line_with_id(path, item.id, default_model, before=number)
            if first is not None:
                raise UsageError(f"line {number}: id {item.id!r} repeats line {first}")
        seen.add(digest)
        if journal is not None and journal.key_matches(item.index, content_key(item)) is False:
            raise UsageError(
                f"line {number}: this request differs from the one the journal recorded for row "
                f"{item.index}: the input changed since the interrupted run (start afresh with "
                "another journal)"
            )
        scan.models.add(item.model)
        scan.total += 1
    if journal is not None:
        beyond = [i for i in journal.done_indices() if i >= scan.total]
        if beyond:
            raise UsageError(
                f"the journal has finished rows up to index {max(beyond)} but the input has only "
                f"{scan.total} rows: the input changed since the interrupted run"
            )
    return scan


def _id_digest(item_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big")


def _first_line_with_id(
    path: str, item_id: str, default_model: str | None, *, before: int
) -> int | None:
    """The first line before line ``before`` whose row has ``item_id``, or ``None``."""
    for index, (number, line) in enumerate(_rows(path)):
        if number >= before:
            return None
        if _parse(number, index, line, default_model).id == item_id:
            return number
    return None


class JsonlItems:
    """The rows of a validated JSON Lines file as `FanoutItem` s, read lazily: iterating reads
    the file again, one row at a time. ``len()`` is the row count found by `scan_requests`."""

    def __init__(self, path: str, default_model: str | None, total: int) -> None:
        self.path = path
        self.default_model = default_model
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[FanoutItem]:
        for index, (number, line) in enumerate(_rows(self.path)):
            yield _parse(number, index, line, self.default_model)


def _say(err: TextIO, message: str) -> None:
    """Write one line to ``err`` and flush it."""
    err.write(message + "\n")
    err.flush()


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def eta_by_tokens(snapshot: RunSnapshot, remaining_items: int) -> float | None:
    """Seconds to finish: the remaining items times the mean output tokens of the items finished
    in this run, over the current output tokens/s. ``None`` until something finished."""
    finished = snapshot.ok + snapshot.failed
    if remaining_items <= 0:
        return 0.0
    if finished <= 0 or snapshot.output_tokens <= 0 or snapshot.output_tokens_per_s <= 0:
        return None
    remaining_tokens = remaining_items * snapshot.output_tokens / finished
    return remaining_tokens / snapshot.output_tokens_per_s


def format_progress(snapshot: RunSnapshot, total: int, done_before: int) -> str:
    """One progress line: items done/total (``done_before``: finished by earlier runs), output
    tokens/s, ETA by tokens, spend, errors, and whether the run is draining."""
    this_run = snapshot.ok + snapshot.failed + snapshot.cancelled + snapshot.budget_exhausted
    done = done_before + this_run
    percent = 100.0 * done / total if total else 100.0
    eta = eta_by_tokens(snapshot, total - done)
    parts = [
        f"{done}/{total} ({percent:.1f}%)",
        f"ok {snapshot.ok}",
        f"failed {snapshot.failed}",
        f"in flight {snapshot.in_flight}",
        f"{snapshot.output_tokens_per_s:.1f} tok/s",
        f"ETA {_format_duration(eta) if eta is not None else '?'}",
        f"${snapshot.spend_usd:.4f}",
    ]
    if snapshot.errors_by_class:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(snapshot.errors_by_class.items()))
        parts.append(f"errors: {errors}")
    if not snapshot.admitting:
        parts.append("draining")
    return " | ".join(parts)


@dataclass
class _State:
    interrupts: int = 0


class _Interruptible(Protocol):
    def stop_admitting(self) -> None: ...

    def cancel_in_flight(self) -> None: ...


async def _watch_interrupts(
    signals: AsyncIterator[int],
    run: _Interruptible,
    state: _State,
    err: TextIO,
    *,
    exit_now: Callable[[int], object] = os._exit,
) -> None:
    """The staged Ctrl-C: the 1st drains (`FanoutRun.stop_admitting`), the 2nd cancels in
    flight (`FanoutRun.cancel_in_flight`), the 3rd calls ``exit_now(130)`` (``os._exit``: no
    cleanup; the journal's records are complete lines already on their way to disk)."""
    async for _ in signals:
        state.interrupts += 1
        if state.interrupts == 1:
            _say(
                err,
                "\ntrio-sogni batch: interrupted: no new items; waiting for those in flight "
                "(Ctrl-C again cancels them)",
            )
            run.stop_admitting()
        elif state.interrupts == 2:
            _say(
                err,
                "\ntrio-sogni batch: cancelling the items in flight (Ctrl-C again exits at once)",
            )
            run.cancel_in_flight()
        else:
            _say(err, "\ntrio-sogni batch: exiting now")
            exit_now(EXIT_INTERRUPTED)


async def _show_progress(
    run: FanoutRun, total: int, done_before: int, err: TextIO, tty: bool, interval: float
) -> None:
    """Redraw the progress line (terminal) or print one line per ``interval`` (otherwise)."""
    try:
        async for snapshot in run.progress(TTY_REDRAW_INTERVAL if tty else interval):
            line = format_progress(snapshot, total, done_before)
            if tty:
                err.write("\r\x1b[K" + line)
            else:
                err.write(line + "\n")
            err.flush()
    finally:
        if tty:
            err.write("\n")
            err.flush()


def _options(args: argparse.Namespace) -> FanoutOptions:
    return FanoutOptions(
        concurrency=args.concurrency,
        adaptive=args.adaptive,
        rpm=args.rpm,
        tpm=args.tpm,
        max_attempts=args.max_attempts,
        retry_budget=args.retry_budget,
        ordered=args.ordered,
        reorder_window=args.reorder_window,
        first_token_timeout=args.first_token_timeout,
        stall_timeout=args.stall_timeout,
        total_timeout=args.total_timeout,
        budget_usd=args.budget_usd,
        budget_tokens=args.budget_tokens,
        slo_ttft=args.slo_ttft,
        slo_tpot=args.slo_tpot,
        slo_e2el=args.slo_e2el,
        dedup=not args.no_dedup,
        cache=args.cache is not None,
        chunk_times=args.chunk_times,
    )


def _check_credentials(args: argparse.Namespace) -> None:
    """With ``--endpoint``: no ``--simulated``, and usable credentials (`remote_credentials`).
    Without it the credentials are ignored, as in ``trio-sogni chat``.

    Raises:
        UsageError: the first problem.
    """
    if args.endpoint is None:
        return
    if args.simulated:
        raise UsageError("--simulated runs an embedded network; it cannot go with --endpoint")
    remote_credentials(args)


@asynccontextmanager
async def _open_client(
    args: argparse.Namespace, worker: LlamaCppWorker | None, models: set[str]
) -> AsyncGenerator[SogniClient]:
    """The client: remote with ``--endpoint``, else on an embedded local network running
    ``worker``, or (``None``) one simulated worker serving ``models`` with ``--concurrency``
    slots at ``--simulated-tokens-per-second``."""
    if args.endpoint:
        async with open_remote_client(args, remote_credentials(args)) as client:
            yield client
        return
    async with open_embedded_client(
        args,
        worker,
        models,
        capacity=args.concurrency,
        tokens_per_second=args.simulated_tokens_per_second,
    ) as client:
        yield client


def _default_model(args: argparse.Namespace) -> str:
    """``--model``; else the remote / simulated default, or the llama.cpp worker's model."""
    if args.model:
        return str(args.model)
    if args.endpoint or args.simulated:
        return DEFAULT_MODEL
    return DEFAULT_LLAMA_MODEL


def _write_report(path: str, report: RunReport) -> None:
    """Write the report as indented JSON through a temporary file renamed over ``path``."""
    data = msgspec.json.format(report.to_json(), indent=2) + b"\n"
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


async def batch(args: argparse.Namespace) -> int:
    """Run ``trio-sogni batch`` (see the module docstring); returns the exit status."""
    err = sys.stderr
    try:
        return await _batch(args, err)
    except UsageError as exc:
        _say(err, f"trio-sogni batch: {exc}")
        return EXIT_USAGE


async def _batch(args: argparse.Namespace, err: TextIO) -> int:
    plan = _prepare(args)
    try:
        return await _run(args, err, plan)
    finally:
        plan.journal.close()


@dataclass
class _Plan:
    """What `_prepare` settled before anything runs."""

    options: FanoutOptions
    scan: RequestScan
    journal: Journal
    worker: LlamaCppWorker | None
    default_model: str
    report_path: str


def _prepare(args: argparse.Namespace) -> _Plan:
    """Check the options, validate the input and open the journal (synchronously: nothing else
    runs yet). A fresh run validates before creating its journal, so a bad input leaves no file
    behind; a resumed run reads the journal first to check the input against it."""
    _check_credentials(args)
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed goes with --resume")
    if args.simulated_tokens_per_second is not None and not args.simulated:
        raise UsageError("--simulated-tokens-per-second goes with --simulated")
    if args.simulated_tokens_per_second is not None and not (
        math.isfinite(args.simulated_tokens_per_second) and args.simulated_tokens_per_second > 0
    ):
        raise UsageError("--simulated-tokens-per-second must be positive")
    if not (math.isfinite(args.progress_interval) and args.progress_interval > 0):
        raise UsageError("--progress-interval must be positive")
    try:
        options = _options(args)
    except InvalidRequestError as exc:
        raise UsageError(str(exc)) from None
    output: str = args.output
    journal_path: str = args.journal or f"{output}.journal.jsonl"
    report_path: str = args.report or os.path.join(
        os.path.dirname(os.path.abspath(output)), "run_report.json"
    )
    if not os.path.isfile(args.requests):
        raise UsageError(f"{args.requests}: no such file")
    default_model = _default_model(args)
    journal: Journal | None = None
    try:
        if args.resume:
            journal = _open_journal(args, journal_path, options)
            scan = scan_requests(args.requests, default_model, journal)
            worker = _worker(args)
        else:
            scan = scan_requests(args.requests, default_model)
            worker = _worker(args)
            journal = _open_journal(args, journal_path, options)
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    return _Plan(options, scan, journal, worker, default_model, report_path)


def _worker(args: argparse.Namespace) -> LlamaCppWorker | None:
    """The llama.cpp worker of an embedded real-model network (`local_worker`), else ``None``."""
    if args.endpoint or args.simulated:
        return None
    return local_worker(args)


def _open_journal(args: argparse.Namespace, path: str, options: FanoutOptions) -> Journal:
    manifest = {
        "requests": os.path.abspath(args.requests),
        "output": os.path.abspath(args.output),
        "trio_sogni": trio_sogni.__version__,
        "endpoint": args.endpoint or ("embedded-simulated" if args.simulated else "embedded"),
        "options": msgspec.to_builtins(options),
    }
    try:
        return Journal.open(
            path,
            args.resume,
            retry_failed=args.retry_failed,
            fsync_outcomes=not args.no_fsync,
            manifest=manifest,
        )
    except (JournalError, OSError) as exc:
        raise UsageError(str(exc)) from None


async def _run(args: argparse.Namespace, err: TextIO, plan: _Plan) -> int:
    """Run the prepared batch; returns the exit status."""
    scan, journal, worker = plan.scan, plan.journal, plan.worker
    done_before = len(journal.done_indices())
    if args.endpoint:
        where = f"Supernet at {args.endpoint}"
    elif worker is None:
        where = (
            "embedded local Supernet with simulated (test-double) workers: the answers are "
            "scripted text, not model inference"
        )
    else:
        where = f"embedded local Supernet, llama.cpp running {worker.model_name}"
    _say(err, f"trio-sogni batch: {scan.total} items ({done_before} already done) on {where}")
    items = JsonlItems(args.requests, plan.default_model, scan.total)
    state = _State()
    cache = ResultCache(args.cache) if args.cache is not None else None
    try:
        with ResultsWriter.open(args.output, resume=args.resume, journal=journal) as writer:
            async with _open_client(args, worker, scan.models) as client:
                with trio.open_signal_receiver(signal.SIGINT) as signals, unwrap_group():
                    async with (
                        open_fanout(
                            client, items, plan.options, journal=journal, cache=cache
                        ) as run,
                        trio.open_nursery() as nursery,
                    ):
                        nursery.start_soon(_watch_interrupts, signals, run, state, err)
                        if not args.quiet:
                            nursery.start_soon(
                                _show_progress,
                                run,
                                scan.total,
                                done_before,
                                err,
                                err.isatty(),
                                args.progress_interval,
                            )
                        async for result in run:
                            writer.write(result)
                        report = run.report()
                        nursery.cancel_scope.cancel()
            counts = dict(writer.status_counts)
            written = len(writer)
    finally:
        if cache is not None:
            cache.close()
    _write_report(plan.report_path, report)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing"
    _say(
        err,
        f"trio-sogni batch: {written}/{scan.total} items in {args.output}: {summary}; "
        f"report: {plan.report_path}",
    )
    if state.interrupts:
        return EXIT_INTERRUPTED
    if written == scan.total and counts.get("ok", 0) == scan.total:
        return EXIT_OK
    return EXIT_FAILED
