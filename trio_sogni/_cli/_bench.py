"""``trio-sogni bench``: load generation against a Supernet, rate sweeps, and reports.

::

    trio-sogni bench run [--sweep | --rates R,R,... | --schedule KIND --rate R ...] [--out DIR]
    trio-sogni bench merge SHARD.json ... -o DIR
    trio-sogni bench compare A.json B.json [--fail-above PCT]

``run`` measures one or more *points* (`trio_sogni.bench.run_point`; a sweep with
`trio_sogni.bench.run_sweep`), prints the summary table on stdout and, with ``--out``, writes
``report.json``, ``report.csv``, ``report.html`` (when matplotlib is installed) and one
``results/<label>.jsonl`` per point. The target is an embedded local Supernet (loopback) with
simulated test-double workers and a configurable service-time model, the firehose load source,
or the real llama.cpp worker; or, with ``--endpoint`` and credentials, any Supernet.

With ``--processes N`` (default: one per core) each point runs as N shard processes
(``python -m trio_sogni bench run --shard k/N``) that start together and hit the same network
(an embedded one is served by this process); their shard reports are merged. ``--shard i/N`` runs
one share only, for spreading a run over machines; ``bench merge`` joins the shard reports.

Exit status: 0 done (``compare``: no regression), 1 a failure (``compare``: a regression above
``--fail-above``), 2 a usage error (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import math
import os
import sys
import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import trio

import trio_sogni
from trio_sogni import InvalidRequestError, SogniClient
from trio_sogni.bench import (
    READY_LINE,
    BenchPoint,
    BenchReportError,
    BenchRun,
    FileWorkload,
    LengthDistribution,
    PointPlan,
    PointSettings,
    SyntheticWorkload,
    Window,
    carried_rate,
    compare,
    compare_rows,
    dump_json,
    find_knee,
    load_json,
    merge_runs,
    rate_label,
    render_html,
    run_point,
    run_processes,
    run_sweep,
    summary_table,
    to_csv,
)
from trio_sogni.fanout import (
    ArrivalSchedule,
    ConstantRate,
    FanoutOptions,
    FanoutResult,
    Gamma,
    Poisson,
    Ramp,
    TraceReplay,
)
from trio_sogni.localnet import (
    DEFAULT_LLAMA_MODEL,
    LOCAL_EXTRA_HINT,
    FirehoseWorker,
    SimulatedWorker,
    open_local_network,
)
from trio_sogni.localnet._workers._llama import default_model_path

from ._connect import (
    DEFAULT_MODEL,
    UsageError,
    add_connection_arguments,
    client_on,
    local_worker,
    open_remote_client,
    remote_credentials,
)

__all__ = ["add_bench_arguments", "bench_compare", "bench_merge", "bench_run"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
OPEN_SCHEDULES: Final = ("constant", "poisson", "gamma", "ramp", "trace")
SWEEP_SCHEDULES: Final = ("constant", "poisson", "gamma")
MODELS_TIMEOUT: Final = 30.0
"""Seconds to wait for the network's model list before the first point."""


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` subcommands (``run``, ``merge``, ``compare``) to ``parser``."""
    commands = parser.add_subparsers(dest="bench_command", required=True)
    run = commands.add_parser(
        "run",
        help="measure one point, several rates, or a sweep",
        description=(
            "Send load to a Supernet and measure it: one point (a closed loop of --concurrency "
            "workers, or an open-loop arrival schedule at --rate), --rates R,R,... (several "
            "open-loop points), or --sweep (synchronous, max-throughput, then --sweep-points "
            "rates between; the knee is the highest rate still meeting the SLOs). Runs on an "
            "embedded local Supernet with SIMULATED TEST-DOUBLE workers unless --endpoint is "
            "given."
        ),
    )
    _add_run_arguments(run)
    merge = commands.add_parser(
        "merge",
        help="merge shard reports (--shard i/N runs) into one report",
        description="Merge the report.json files of the shards of one run into one report.",
    )
    merge.add_argument("reports", nargs="+", help="shard report.json files")
    merge.add_argument("-o", "--out", required=True, help="directory for the merged report")
    merge.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge even when some of the N shards are missing (the report then covers part "
        "of the load)",
    )
    comparison = commands.add_parser(
        "compare",
        help="compare two reports point by point",
        description=(
            "Compare two report.json files point by point. With --fail-above PCT the exit "
            "status is 1 when a metric got worse by more than PCT percent."
        ),
    )
    comparison.add_argument("a", help="the baseline report.json")
    comparison.add_argument("b", help="the new report.json")
    comparison.add_argument(
        "--fail-above",
        type=float,
        default=None,
        metavar="PCT",
        help="exit 1 when a metric regressed by more than PCT percent",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", default=None, help=f"model (default: {DEFAULT_MODEL}, or the llama model)")
    work = parser.add_argument_group("workload")
    work.add_argument("--input", metavar="FILE", help="JSON Lines requests (batch format)")
    work.add_argument(
        "--synthetic", action="store_true", help="synthetic prompts (the default without --input)"
    )
    work.add_argument(
        "--input-tokens",
        default="fixed:128",
        metavar="DIST",
        help="synthetic prompt length: fixed:N, uniform:A:B or normal:MEAN:SD (default fixed:128)",
    )
    work.add_argument(
        "--output-tokens",
        default="fixed:64",
        metavar="DIST",
        help="synthetic max_tokens: fixed:N, uniform:A:B or normal:MEAN:SD (default fixed:64)",
    )
    work.add_argument(
        "--lengths",
        choices=("estimate", "tokenizer"),
        default="estimate",
        help="synthetic lengths in tokens by the server's estimate (ceil(chars / 4)), or "
        "(with --llama) by the model's tokenizer, chat template included, as the llama.cpp "
        "worker counts prompt_tokens (default estimate)",
    )
    work.add_argument("--tokenizer-model", default=None, help=argparse.SUPPRESS)
    work.add_argument("--seed", type=int, default=0, help="schedules and prompts (default 0)")
    load = parser.add_argument_group("load")
    load.add_argument("--requests", type=int, default=None, help="measured requests per point")
    load.add_argument("--duration", type=float, default=None, metavar="S", help="or seconds")
    load.add_argument(
        "--schedule",
        choices=("closed", *OPEN_SCHEDULES),
        default=None,
        help="closed loop, or an open-loop arrival schedule (default: poisson with --rate or "
        "--rates, else closed)",
    )
    load.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    load.add_argument("--rates", default=None, metavar="R,R,...", help="several open-loop points")
    load.add_argument("--burstiness", type=float, default=None, help="gamma: shape (1 = Poisson)")
    load.add_argument("--ramp-from", type=float, default=None, metavar="R", help="ramp: start")
    load.add_argument("--ramp-to", type=float, default=None, metavar="R", help="ramp: end rate")
    load.add_argument("--ramp-duration", type=float, default=None, metavar="S", help="ramp: span")
    load.add_argument("--trace", default=None, metavar="FILE", help="trace: JSONL timestamps")
    load.add_argument(
        "--trace-field", default="timestamp", help="trace: the timestamp key (default timestamp)"
    )
    load.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="closed loop (and a sweep's throughput point): workers (default 32)",
    )
    load.add_argument(
        "--max-concurrency", type=int, default=None, help="open loop: cap on requests in process"
    )
    load.add_argument("--sweep", action="store_true", help="synchronous, throughput, then rates")
    load.add_argument("--sweep-points", type=int, default=8, help="rates in a sweep (default 8)")
    load.add_argument(
        "--warmup", default="0", metavar="N|Ss", help="per point, not recorded: N or S seconds"
    )
    load.add_argument(
        "--cooldown", default="0", metavar="N|Ss", help="open loop, not recorded: N or S seconds"
    )
    measure = parser.add_argument_group("measurement")
    for name in ("ttft", "tpot", "e2el"):
        measure.add_argument(
            f"--slo-{name}", type=float, default=None, metavar="S", help=f"SLO on {name.upper()}"
        )
    measure.add_argument(
        "--slo-attainment",
        type=float,
        default=0.95,
        metavar="F",
        help="knee: the fraction of requests meeting the SLOs (default 0.95)",
    )
    measure.add_argument("--max-attempts", type=int, default=1, help="per request (default 1)")
    measure.add_argument("--total-timeout", type=float, default=None, metavar="S", help="per try")
    measure.add_argument(
        "--lag-threshold",
        type=float,
        default=0.005,
        metavar="S",
        help="p99 scheduling lag above which a point is not valid (default 0.005)",
    )
    measure.add_argument("--chunk-times", action="store_true", help="chunk times in results")
    spread = parser.add_argument_group("processes and shards")
    spread.add_argument(
        "--processes",
        type=int,
        default=None,
        help="client processes sharing each point (default: one per core; 1 with --shard)",
    )
    spread.add_argument("--shard", default=None, metavar="i/N", help="run share i (0-based) of N")
    spread.add_argument(
        "--start-at", type=float, default=None, metavar="EPOCH", help="start at this Unix time"
    )
    spread.add_argument("--start-from-stdin", action="store_true", help=argparse.SUPPRESS)
    spread.add_argument("--label", default=None, help=argparse.SUPPRESS)
    spread.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, metavar="DIR", help="write the report files here")
    out.add_argument("--quiet", action="store_true", help="no table, no progress on stderr")
    out.add_argument("--no-html", action="store_true", help="do not write report.html")
    add_connection_arguments(parser, chat=False)
    target = parser.add_argument_group("embedded network (without --endpoint)")
    target.add_argument("--workers", type=int, default=4, help="embedded: workers (default 4)")
    target.add_argument(
        "--worker-capacity", type=int, default=4, help="embedded: jobs per worker (default 4)"
    )
    target.add_argument(
        "--ttft", type=float, default=0.1, metavar="S", help="embedded: time to first token"
    )
    target.add_argument(
        "--tokens-per-second", type=float, default=100.0, help="embedded: tokens/s per job"
    )
    target.add_argument("--firehose", action="store_true", help="embedded: firehose load source")
    target.add_argument("--llama", action="store_true", help="embedded: the llama.cpp worker")
    target.add_argument("--model-path", help="--llama: a GGUF model")


# -- validation ------------------------------------------------------------------------------


def _positive(name: str, value: float | None, *, zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise UsageError(f"{name} must be {'non-negative' if zero else 'positive'}, got {value:g}")


def _shard(text: str) -> tuple[int, int]:
    head, sep, tail = text.partition("/")
    try:
        k, n = int(head), int(tail)
    except ValueError:
        k = n = -1
    if not sep or n < 1 or not 0 <= k < n:
        raise UsageError(f"--shard {text!r}: expected i/N with 0 <= i < N")
    return k, n


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--rates {text!r}: expected numbers separated by commas") from None
    if not rates:
        raise UsageError("--rates needs at least one rate")
    for rate in rates:
        _positive("--rates", rate)
    if len({rate_label(r) for r in rates}) != len(rates):
        raise UsageError("--rates: the rates must differ")
    return rates


@dataclass(frozen=True)
class _Plan:
    """What ``bench run`` was asked to do, validated."""

    schedule_kind: str
    rates: list[float] | None
    shard: tuple[int, int] | None
    processes: int


def _validate(args: argparse.Namespace) -> _Plan:
    """Check the ``run`` arguments.

    Raises:
        UsageError: the first problem.
    """
    schedule = args.schedule or ("poisson" if args.rate is not None or args.rates else "closed")
    if args.requests is not None and args.duration is not None:
        raise UsageError("give --requests or --duration, not both")
    if args.requests is not None and args.requests < 1:
        raise UsageError("--requests must be at least 1")
    _positive("--duration", args.duration)
    for name in ("concurrency", "max_attempts", "workers", "worker_capacity"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UsageError("--max-concurrency must be at least 1")
    for name in ("slo_ttft", "slo_tpot", "slo_e2el", "total_timeout", "lag_threshold"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _positive("--ttft", args.ttft, zero=True)
    _positive("--tokens-per-second", args.tokens_per_second)
    if not 0 < args.slo_attainment <= 1:
        raise UsageError("--slo-attainment must be in (0, 1]")
    rates = _rates(args.rates) if args.rates else None
    if args.sweep:
        if rates is not None or args.rate is not None:
            raise UsageError("--sweep chooses its own rates: drop --rate / --rates")
        if args.schedule is not None and args.schedule not in SWEEP_SCHEDULES:
            raise UsageError(f"--sweep runs {'/'.join(SWEEP_SCHEDULES)} points, not {schedule}")
        if args.sweep_points < 1:
            raise UsageError("--sweep-points must be at least 1")
        schedule = args.schedule or "poisson"
    elif rates is not None:
        if args.rate is not None:
            raise UsageError("give --rate or --rates, not both")
        if schedule not in SWEEP_SCHEDULES:
            raise UsageError(f"--rates makes {'/'.join(SWEEP_SCHEDULES)} points, not {schedule}")
    elif schedule in ("constant", "poisson", "gamma"):
        if args.rate is None:
            raise UsageError(f"--schedule {schedule} needs --rate")
        _positive("--rate", args.rate)
    elif args.rate is not None:
        raise UsageError(f"--rate applies to constant, poisson and gamma, not {schedule}")
    if args.burstiness is not None:
        if schedule != "gamma":
            raise UsageError("--burstiness applies to --schedule gamma")
        _positive("--burstiness", args.burstiness)
    ramp = (args.ramp_from, args.ramp_to, args.ramp_duration)
    if schedule == "ramp":
        if None in ramp:
            raise UsageError("--schedule ramp needs --ramp-from, --ramp-to and --ramp-duration")
        _positive("--ramp-from", args.ramp_from, zero=True)
        _positive("--ramp-to", args.ramp_to)
        _positive("--ramp-duration", args.ramp_duration)
    elif any(v is not None for v in ramp):
        raise UsageError("--ramp-from/--ramp-to/--ramp-duration apply to --schedule ramp")
    if (schedule == "trace") != (args.trace is not None):
        raise UsageError("--schedule trace and --trace FILE go together")
    if schedule == "closed" and args.max_concurrency is not None:
        raise UsageError("--max-concurrency caps an open loop; a closed loop has --concurrency")
    if args.input is not None and args.synthetic:
        raise UsageError("--input and --synthetic exclude each other")
    if args.requests is None and args.duration is None and schedule != "trace":
        args.requests = 100
    shard = _shard(args.shard) if args.shard is not None else None
    if shard is not None and args.sweep:
        raise UsageError(
            "a sweep adapts its rates to what it measures, which needs one coordinator: use "
            "--processes on one machine, or --rates R,R,... with --shard"
        )
    processes = args.processes
    if processes is None:
        processes = 1 if shard is not None else (os.cpu_count() or 1)
    if processes < 1:
        raise UsageError("--processes must be at least 1")
    if shard is not None and processes > 1:
        raise UsageError("--shard runs one share in this process: drop --processes")
    if args.start_at is not None and processes > 1:
        raise UsageError("--start-at is for --shard runs; --processes starts its processes itself")
    embedded_only = [
        flag
        for flag, given in (
            ("--firehose", args.firehose),
            ("--llama", args.llama),
            ("--model-path", args.model_path is not None),
        )
        if given
    ]
    if args.endpoint and embedded_only:
        raise UsageError(f"{embedded_only[0]} is for the embedded network, not --endpoint")
    if args.firehose and args.llama:
        raise UsageError("--firehose and --llama exclude each other")
    if args.lengths == "tokenizer":
        if args.input is not None:
            raise UsageError("--lengths applies to synthetic prompts, not --input")
        if not args.llama and args.tokenizer_model is None:
            raise UsageError(
                "--lengths tokenizer counts with the llama.cpp worker's tokenizer: add --llama"
            )
    return _Plan(schedule, rates, shard, processes)


# -- building blocks -------------------------------------------------------------------------


def _schedule(args: argparse.Namespace, kind: str, rate: float | None) -> ArrivalSchedule:
    try:
        if kind == "constant":
            assert rate is not None
            return ConstantRate(rate)
        if kind == "poisson":
            assert rate is not None
            return Poisson(rate)
        if kind == "gamma":
            assert rate is not None
            return Gamma(rate, args.burstiness if args.burstiness is not None else 1.0)
        if kind == "ramp":
            return Ramp(args.ramp_from, args.ramp_to, args.ramp_duration)
        return TraceReplay.from_jsonl(args.trace, args.trace_field)
    except OSError as exc:
        raise UsageError(f"--trace {args.trace}: {exc.strerror or exc}") from None
    except InvalidRequestError as exc:
        raise UsageError(str(exc)) from None


def _single_plan(args: argparse.Namespace, plan: _Plan) -> PointPlan:
    if plan.schedule_kind == "closed":
        label, kind = f"closed-{args.concurrency}", "closed"
        point = PointPlan(label, kind, None, args.concurrency)
    else:
        schedule = _schedule(args, plan.schedule_kind, args.rate)
        label = rate_label(args.rate) if args.rate is not None else plan.schedule_kind
        point = PointPlan(label, "rate", schedule)
    if args.label is not None or args.kind is not None:
        point = PointPlan(args.label or point.label, args.kind or point.kind, point.schedule,
                          point.concurrency)  # fmt: skip
    return point


def _model(args: argparse.Namespace) -> str:
    """``--model``, else the llama.cpp worker's default model with ``--llama``, else
    `DEFAULT_MODEL`."""
    if args.model:
        return args.model
    return DEFAULT_LLAMA_MODEL if args.llama else DEFAULT_MODEL


def _workload(args: argparse.Namespace, model: str) -> FileWorkload | SyntheticWorkload:
    """The requests; with ``--lengths tokenizer`` it loads the tokenizer (and sets
    ``args.tokenizer_model`` to the GGUF file, for the shard processes).

    Raises:
        UsageError: a bad distribution or file, or a tokenizer that cannot be loaded.
    """
    try:
        if args.input is not None:
            return FileWorkload(args.input, default_model=model)
        inputs = LengthDistribution.parse(args.input_tokens)
        outputs = LengthDistribution.parse(args.output_tokens)
    except InvalidRequestError as exc:
        raise UsageError(f"--input-tokens/--output-tokens/--input: {exc}") from None
    counter: _LlamaTokenCounter | None = None
    if args.lengths == "tokenizer":
        counter = _LlamaTokenCounter(_tokenizer_path(args))
        args.tokenizer_model = str(counter.model_path)
    return SyntheticWorkload(
        model=model, input_tokens=inputs, output_tokens=outputs, seed=args.seed,
        count_tokens=counter,
    )  # fmt: skip


def _tokenizer_path(args: argparse.Namespace) -> Path:
    """The GGUF file whose tokenizer ``--lengths tokenizer`` uses: the shard processes' hidden
    ``--tokenizer-model``, else ``--model-path``, else the llama.cpp worker's default model."""
    if args.tokenizer_model is not None:
        return Path(args.tokenizer_model)
    if args.model_path is not None:
        return Path(args.model_path)
    try:
        return default_model_path()
    except FileNotFoundError as exc:
        raise UsageError(f"--lengths tokenizer: {exc}") from None


class _LlamaTokenCounter:
    """Counts a request's prompt tokens as `trio_sogni.localnet.LlamaCppWorker` reports them
    (``usage.prompt_tokens``): the messages rendered with the GGUF's chat template (with the
    generation prompt), then tokenized with the model's tokenizer (BOS as the model wants it,
    special tokens parsed). Only the vocabulary is loaded (``vocab_only``), once.

    It counts requests without tools or ``chat_template_kwargs`` (the synthetic ones): the
    worker adds tool instructions to the prompt, which this does not.

    Raises:
        UsageError: llama-cpp-python is not installed (with the install hint), or the file is
            not a model it can load.
    """

    def __init__(self, model_path: Path) -> None:
        try:
            llama_cpp: Any = importlib.import_module("llama_cpp")
        except ImportError:
            raise UsageError(
                f"--lengths tokenizer needs llama-cpp-python: {LOCAL_EXTRA_HINT}"
            ) from None
        self.model_path = model_path
        if not model_path.is_file():
            raise UsageError(f"--lengths tokenizer: {model_path} does not exist")
        try:
            # llama.cpp logs a context warning for a vocabulary-only model straight to stderr
            with contextlib.redirect_stderr(io.StringIO()):
                llama: Any = llama_cpp.Llama(
                    model_path=str(model_path), vocab_only=True, verbose=False
                )
        except (OSError, ValueError, RuntimeError) as exc:
            raise UsageError(f"--lengths tokenizer: cannot load {model_path}: {exc}") from None
        self._llama: Any = llama
        self._tokenize: Any = llama_cpp.llama_tokenize
        self._vocab: Any = llama._model.vocab
        metadata: Any = llama.metadata
        template = str(metadata.get("tokenizer.chat_template", ""))
        if not template:
            raise UsageError(f"--lengths tokenizer: {model_path} has no chat template")
        self._add_bos = bool(llama._model.add_bos_token())  # as LlamaCppWorker tokenizes
        self._format: Any = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._piece(int(llama.token_eos())),
            bos_token=self._piece(int(llama.token_bos())),
        )

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        data: bytes = self._llama.detokenize([token], special=True)
        return data.decode("utf-8", errors="ignore")

    def __call__(self, messages: Sequence[dict[str, str]]) -> int:
        """The prompt tokens of ``messages`` (plain ``role``/``content`` dicts)."""
        rendered: Any = self._format(messages=[dict(m) for m in messages], tools=None)
        data = str(rendered.prompt).encode()
        # No room for the tokens: llama.cpp then returns minus their count (half the time of
        # Llama.tokenize, which also builds the list).
        n = int(self._tokenize(self._vocab, data, len(data), None, 0, self._add_bos, True))
        return -n if n < 0 else n


def _settings(args: argparse.Namespace, shard: tuple[int, int] | None) -> PointSettings:
    try:
        warmup, cooldown = Window.parse(args.warmup), Window.parse(args.cooldown)
        options = FanoutOptions(
            max_attempts=args.max_attempts,
            total_timeout=args.total_timeout,
            slo_ttft=args.slo_ttft,
            slo_tpot=args.slo_tpot,
            slo_e2el=args.slo_e2el,
            lag_threshold=args.lag_threshold,
            chunk_times=args.chunk_times,
        )
        return PointSettings(
            requests=args.requests,
            duration=args.duration,
            warmup=warmup,
            cooldown=cooldown,
            seed=args.seed,
            max_concurrency=args.max_concurrency,
            options=options,
            shard=shard or (0, 1),
        )
    except InvalidRequestError as exc:
        raise UsageError(str(exc)) from None


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class _Target:
    """Where the points run: a description for the report, and how to reach it."""

    description: str
    client: SogniClient | None = None
    socket_url: str | None = None
    rest_url: str | None = None
    api_key: str | None = None


@asynccontextmanager
async def _open_target(
    args: argparse.Namespace, model: str, *, need_client: bool
) -> AsyncGenerator[_Target]:
    """The remote Supernet, or an embedded one on a loopback port; a client on it when this
    process runs points itself (``need_client``)."""
    if args.endpoint:
        credentials = remote_credentials(args)
        target = _Target(f"{args.endpoint} (network {args.network})")
        if need_client:
            async with open_remote_client(args, credentials) as client:
                target.client = client
                yield target
        else:
            yield target
        return
    if args.llama:
        worker = local_worker(args)
        workers: Any = [worker]
        models = [worker.model_name]
        description = f"embedded localnet: llama.cpp worker ({worker.model_name})"
    elif args.firehose:
        workers = [
            FirehoseWorker(f"firehose-{i + 1}", capacity=args.worker_capacity)
            for i in range(args.workers)
        ]
        models = [model]
        description = (
            f"embedded localnet: {args.workers} FirehoseWorker test doubles x capacity "
            f"{args.worker_capacity}"
        )
    else:
        workers = [
            SimulatedWorker(
                f"simulated-{i + 1}",
                capacity=args.worker_capacity,
                start_latency=args.ttft,
                tokens_per_second=args.tokens_per_second,
            )
            for i in range(args.workers)
        ]
        models = [model]
        description = (
            f"embedded localnet: {args.workers} SimulatedWorker test doubles x capacity "
            f"{args.worker_capacity}, ttft {args.ttft:g} s, {args.tokens_per_second:g} tokens/s"
        )
    async with open_local_network(models=models, workers=workers) as net:
        target = _Target(description, None, net.socket_url, net.rest_url, net.api_key)
        if need_client:
            async with client_on(net, args) as client:
                target.client = client
                yield target
        else:
            yield target


# -- running ---------------------------------------------------------------------------------


class _ResultFile:
    """A point's ``results/<label>.jsonl`` (buffered; closed at the end of the point)."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115

    async def write(self, result: FanoutResult) -> None:
        if self._file is not None:
            self._file.write(result.to_json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _results_path(out: Path | None, label: str) -> Path | None:
    return None if out is None else out / "results" / f"{label}.jsonl"


async def _run_here(
    args: argparse.Namespace,
    sogni: SogniClient,
    workload: FileWorkload | SyntheticWorkload,
    settings: PointSettings,
    point: PointPlan,
    out: Path | None,
) -> BenchPoint:
    start_at: float | None = args.start_at
    if args.start_from_stdin:
        sys.stdout.buffer.write(READY_LINE)
        sys.stdout.flush()
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        try:
            start_at = float(line)
        except ValueError:
            raise UsageError("--start-from-stdin: expected a start time on stdin") from None
    results = _ResultFile(_results_path(out, point.label))
    try:
        _say(args, f"point {point.label} ...")
        return await run_point(
            sogni, workload, point, settings, sink=results.write, start_at=start_at
        )
    finally:
        results.close()


def _child_argv(
    args: argparse.Namespace, point: PointPlan, shard: int, processes: int, out: Path
) -> list[str]:
    """The ``bench run`` arguments of shard process ``shard`` of a point."""
    argv = ["bench", "run", "--processes", "1", "--shard", f"{shard}/{processes}"]
    argv += ["--start-from-stdin", "--quiet", "--out", str(out)]
    argv += ["--label", point.label, "--kind", point.kind, "--seed", str(args.seed)]
    argv += ["--model", _model(args)]
    if args.input is not None:
        argv += ["--input", args.input]
    else:
        argv += ["--input-tokens", args.input_tokens, "--output-tokens", args.output_tokens]
        if args.lengths == "tokenizer":
            argv += ["--lengths", "tokenizer", "--tokenizer-model", args.tokenizer_model]
    if args.requests is not None:
        argv += ["--requests", str(args.requests)]
    if args.duration is not None:
        argv += ["--duration", repr(args.duration)]
    argv += ["--warmup", args.warmup, "--cooldown", args.cooldown]
    argv += ["--max-attempts", str(args.max_attempts), "--lag-threshold", repr(args.lag_threshold)]
    for name in ("slo_ttft", "slo_tpot", "slo_e2el", "total_timeout"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", repr(value)]
    if args.chunk_times:
        argv.append("--chunk-times")
    schedule = point.schedule
    if schedule is None:
        argv += ["--schedule", "closed", "--concurrency", str(point.concurrency)]
    else:
        described = schedule.describe()
        kind = str(described["kind"])
        argv += ["--schedule", kind]
        if kind in SWEEP_SCHEDULES:
            argv += ["--rate", repr(described["rate"])]
        if kind == "gamma":
            argv += ["--burstiness", repr(described["burstiness"])]
        elif kind == "ramp":
            argv += ["--ramp-from", repr(described["start_rate"])]
            argv += ["--ramp-to", repr(described["end_rate"])]
            argv += ["--ramp-duration", repr(described["duration"])]
        elif kind == "trace":
            argv += ["--trace", args.trace, "--trace-field", args.trace_field]
        if args.max_concurrency is not None:
            argv += ["--max-concurrency", str(args.max_concurrency)]
    return argv


async def _run_in_processes(
    args: argparse.Namespace, target: _Target, point: PointPlan, processes: int, out: Path
) -> BenchPoint:
    """Run ``point`` as ``processes`` shard processes against ``target`` and merge them."""
    base = out / "shards" / point.label
    argvs: list[list[str]] = []
    env: dict[str, str] = {}
    for k in range(processes):
        argv = _child_argv(args, point, k, processes, base / str(k))
        if target.socket_url is not None:
            argv += ["--endpoint", target.socket_url, "--rest-endpoint", str(target.rest_url)]
            env["SOGNI_API_KEY"] = str(target.api_key)
        else:
            argv += ["--endpoint", args.endpoint, "--network", args.network]
            if args.rest_endpoint:
                argv += ["--rest-endpoint", args.rest_endpoint]
            if args.testnet:
                argv.append("--testnet")
            for name, var in (
                ("api_key", "SOGNI_API_KEY"),
                ("username", "SOGNI_USERNAME"),
                ("password", "SOGNI_PASSWORD"),
            ):
                if getattr(args, name):
                    env[var] = getattr(args, name)
        argvs.append(argv)
    _say(args, f"point {point.label}: {processes} processes ...")
    await run_processes(argvs, env=env)
    shards = [load_json(base / str(k) / "report.json") for k in range(processes)]
    merged = merge_runs(shards)
    _concatenate(
        [base / str(k) / "results" / f"{point.label}.jsonl" for k in range(processes)],
        _results_path(out, point.label),
    )
    return merged.point(point.label)


def _concatenate(parts: Sequence[Path], into: Path | None) -> None:
    if into is None:
        return
    into.parent.mkdir(parents=True, exist_ok=True)
    with open(into, "wb") as sink:
        for part in parts:
            with contextlib.suppress(FileNotFoundError), open(part, "rb") as source:
                while block := source.read(1 << 16):
                    sink.write(block)


def _write_outputs(args: argparse.Namespace, run: BenchRun, out: Path | None) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(dump_json(run))
    (out / "report.csv").write_text(to_csv(run), encoding="utf-8", newline="")
    if args.start_from_stdin or args.no_html:
        return  # (a shard process of --processes: the parent writes the merged HTML)
    try:
        (out / "report.html").write_text(render_html(run), encoding="utf-8")
    except BenchReportError as exc:
        _say(args, f"no report.html: {exc}")


def _workload_fields(
    workload: FileWorkload | SyntheticWorkload, tokenizer: str | None
) -> dict[str, Any]:
    """The report's ``workload``: its description and its parameters (``tokenizer``: the GGUF
    file whose tokenizer measured the synthetic lengths, or ``None`` for the estimate)."""
    if isinstance(workload, FileWorkload):
        return {
            "description": workload.description,
            "kind": "file",
            "path": str(workload.path),
            "rows": len(workload.rows),
        }
    if tokenizer is None:
        description = workload.description
        token_count = "estimate: ceil(UTF-16 units of the messages' compact JSON / 4)"
    else:
        description = f"{workload.description} lengths=tokenizer"
        token_count = (
            f"tokenizer: {Path(tokenizer).name} (llama.cpp), chat template included: the "
            "llama.cpp worker's prompt_tokens"
        )
    return {
        "description": description,
        "kind": "synthetic",
        "input_tokens": str(workload.input_tokens),
        "output_tokens": str(workload.output_tokens),
        "seed": workload.seed,
        "token_count": token_count,
    }


def _bench_run_struct(
    args: argparse.Namespace,
    *,
    target: str,
    model: str,
    workload: dict[str, Any],
    points: list[BenchPoint],
    processes: int,
    shard: tuple[int, int] | None,
    schedule_kind: str,
) -> BenchRun:
    knee = find_knee(points, args.slo_attainment)
    settings: dict[str, Any] = {
        "schedule": schedule_kind,
        "sweep": args.sweep,
        "sweep_points": args.sweep_points if args.sweep else None,
        "requests": args.requests,
        "duration": args.duration,
        "warmup": args.warmup,
        "cooldown": args.cooldown,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "max_concurrency": args.max_concurrency,
        "max_attempts": args.max_attempts,
        "lag_threshold": args.lag_threshold,
        "slo_attainment": args.slo_attainment,
    }
    slo = {
        name: value
        for name, value in (
            ("ttft", args.slo_ttft),
            ("tpot", args.slo_tpot),
            ("e2el", args.slo_e2el),
        )
        if value is not None
    }
    return BenchRun(
        tool=f"trio-sogni {trio_sogni.__version__}",
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        target=target,
        model=model,
        workload=workload,
        settings=settings,
        slo=slo,
        points=points,
        knee_rps=None if knee is None else carried_rate(knee),
        knee_label=None if knee is None else knee.label,
        processes=processes,
        shard=None if shard is None else f"{shard[0]}/{shard[1]}",
    )


async def bench_run(args: argparse.Namespace) -> int:
    """``trio-sogni bench run``: validate, run the points, write and print the report."""
    try:
        plan = _validate(args)
        model = _model(args)
        workload = _workload(args, model)
        single = None if args.sweep or plan.rates else _single_plan(args, plan)
        trace = single.schedule if single is not None else None
        if isinstance(trace, TraceReplay) and args.requests is None and args.duration is None:
            args.requests = len(trace.offsets_s)  # the whole trace
        settings = _settings(args, plan.shard)
    except UsageError as exc:
        print(f"trio-sogni bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out is not None else None
    in_processes = plan.processes > 1
    with tempfile.TemporaryDirectory(prefix="trio-sogni-bench-") as scratch:
        work = out if out is not None else Path(scratch)
        try:
            async with _open_target(args, model, need_client=not in_processes) as target:
                description = target.description
                _say(args, f"target: {description}")
                if target.client is not None:
                    with trio.move_on_after(MODELS_TIMEOUT) as waiting:
                        await target.client.chat.wait_for_models()
                    if waiting.cancelled_caught:
                        print(f"trio-sogni bench: the network announced no models within "
                              f"{MODELS_TIMEOUT:g} s", file=sys.stderr)  # fmt: skip
                        return EXIT_FAILED

                async def measure(point: PointPlan) -> BenchPoint:
                    if in_processes:
                        return await _run_in_processes(args, target, point, plan.processes, work)
                    assert target.client is not None
                    return await _run_here(args, target.client, workload, settings, point, out)

                points = await _measure_all(args, plan, single, measure)
        except UsageError as exc:
            print(f"trio-sogni bench: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BenchReportError as exc:
            print(f"trio-sogni bench: {exc}", file=sys.stderr)
            return EXIT_FAILED
    run = _bench_run_struct(
        args,
        target=description,
        model=model,
        workload=_workload_fields(workload, args.tokenizer_model),
        points=points,
        processes=plan.processes,
        shard=plan.shard,
        schedule_kind=plan.schedule_kind,
    )
    _write_outputs(args, run, out)
    if not args.quiet:
        print(summary_table(run), end="")
    return EXIT_OK


async def _measure_all(
    args: argparse.Namespace,
    plan: _Plan,
    single: PointPlan | None,
    measure: Callable[[PointPlan], Any],
) -> list[BenchPoint]:
    if single is not None:
        return [await measure(single)]
    if plan.rates is not None:
        return [
            await measure(PointPlan(rate_label(r), "rate", _schedule(args, plan.schedule_kind, r)))
            for r in plan.rates
        ]
    return await run_sweep(
        measure,
        points=args.sweep_points,
        concurrency=args.concurrency,
        schedule=lambda rate: _schedule(args, plan.schedule_kind, rate),
    )


def bench_merge(args: argparse.Namespace) -> int:
    """``trio-sogni bench merge``: join shard reports into ``-o DIR/report.json`` (and CSV,
    HTML), recomputing the knee over the merged points."""
    try:
        runs = [load_json(Path(path)) for path in args.reports]
        merged = merge_runs(runs, allow_partial=args.allow_partial)
    except BenchReportError as exc:
        print(f"trio-sogni bench merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    attainment = merged.settings.get("slo_attainment", 0.95)
    knee = find_knee(merged.points, float(attainment))
    merged = _with_knee(merged, knee)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(dump_json(merged))
    (out / "report.csv").write_text(to_csv(merged), encoding="utf-8", newline="")
    try:
        (out / "report.html").write_text(render_html(merged), encoding="utf-8")
    except BenchReportError as exc:
        print(f"bench: no report.html: {exc}", file=sys.stderr)
    print(summary_table(merged), end="")
    return EXIT_OK


def _with_knee(run: BenchRun, knee: BenchPoint | None) -> BenchRun:
    return msgspec.structs.replace(
        run,
        knee_rps=None if knee is None else carried_rate(knee),
        knee_label=None if knee is None else knee.label,
    )


def bench_compare(args: argparse.Namespace) -> int:
    """``trio-sogni bench compare A B [--fail-above PCT]``: print the comparison; 1 when a
    metric regressed by more than PCT percent."""
    if args.fail_above is not None and not (
        math.isfinite(args.fail_above) and args.fail_above >= 0
    ):
        print("trio-sogni bench compare: --fail-above must be a non-negative percentage",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        a, b = load_json(Path(args.a)), load_json(Path(args.b))
        text = compare(
            a, b, threshold=args.fail_above, names=(Path(args.a).name, Path(args.b).name)
        )
        rows = compare_rows(a, b, threshold=args.fail_above)
    except BenchReportError as exc:
        print(f"trio-sogni bench compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(text, end="")
    if args.fail_above is not None and any(row.regression for row in rows):
        return EXIT_FAILED
    return EXIT_OK
