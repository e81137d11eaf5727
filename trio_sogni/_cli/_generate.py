"""``trio-sogni image | video | music``: make one media project, show its progress, save its files.

::

    trio-sogni image "a red fox in snow" -o fox.png [--model M] [--steps N] [--seed S]
        [--size 1024x1024] [-n 4] [--negative TEXT] [--guidance G] [--format png|jpg|webp]
    trio-sogni video "waves at dusk" -o clip.mp4 [--duration S] [--fps F] [--size WxH] ...
    trio-sogni music "calm piano" -o song.mp3 [--duration S] [--bpm N] [--lyrics TEXT] ...

Each command creates one project (``music`` makes an ``audio`` project) with `ProjectsAPI.create`,
shows its progress on stderr, saves every finished render and prints the saved paths on stdout,
one per line, as each is written.

Files: with ``-n 1`` the render is saved as ``-o`` exactly. With ``-n N`` (N > 1) the renders
are saved next to it as ``STEM-1.EXT`` ... ``STEM-K.EXT`` (``-o fox.png -n 4``: ``fox-1.png`` ...
``fox-4.png``), numbered in render order over the K renders saved. ``-o``'s extension
picks the output format (``.jpeg`` counts as ``jpg``); a name without one gets the ``--format``
(default: the type's first format) appended; an extension that is not a format of the media
type, or a ``--format`` that contradicts it, is a usage error. An existing directory as ``-o``
gets files named ``<project id>-<render id>.<ext>`` in it. Existing files are replaced; each is
written to a temporary file first, so a file is never left half-written.

Progress (stderr, ``--progress``): ``bars`` redraws one bar per render in place (queue position
and ETA while queued; step, percent and ETA while rendering); ``lines`` prints one plain line per
update; ``auto`` (the default) is ``bars`` when stderr is a terminal, else ``lines``; ``none``
prints nothing but the final lines.

Where it runs: the Supernet at ``--endpoint`` with the usual credentials (as ``trio-sogni
chat``), else an embedded local Supernet whose only worker is localnet's SimulatedMediaWorker, a
**simulated test double**: its output is a drawing (shapes and the prompt's text), a seeded tune
or a moving drawing, not generated media; stderr says so. The model, when ``--model`` is not
given, is the first model of the media type in the Supernet's catalog that has workers, after
waiting at most ``--models-timeout`` seconds for the model list.

Exit status: 0 when every render was saved; 1 when the project or a render failed, no model is
available, a typed client error happened (one line, no traceback) or ``--timeout`` expired; 2 for
bad arguments; 130 after Ctrl-C. Leaving early in any way (Ctrl-C, ``--timeout``, an error)
cancels the project on the server (`Project.aclose`, while the connection is still up) before
exiting. Creating the project is never interrupted halfway (see `_run`): Ctrl-C during it takes
effect as soon as the project exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import signal
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import trio

from trio_sogni import (
    Completed,
    Failed,
    MediaResult,
    Processing,
    Project,
    ProjectError,
    ProjectUpdate,
    Queued,
    RenderCompleted,
    RenderFailed,
    SogniClient,
    SogniError,
)
from trio_sogni._groups import unwrap_group
from trio_sogni.localnet import SimulatedMediaWorker

from ._connect import (
    UsageError,
    add_connection_arguments,
    open_embedded_media_client,
    open_remote_client,
    remote_credentials,
)

__all__ = [
    "COMMANDS",
    "OUTPUT_FORMATS",
    "CommandSpec",
    "ProgressDisplay",
    "add_media_arguments",
    "format_eta",
    "generate",
    "numbered_paths",
    "parse_size",
    "plan_output",
]

MediaType = Literal["image", "video", "audio"]

OUTPUT_FORMATS: Final[dict[MediaType, tuple[str, ...]]] = {
    "image": ("png", "jpg", "webp"),
    "video": ("mp4",),
    "audio": ("mp3", "wav", "flac"),
}
"""The output formats of each media type (the first is the default), as the client accepts them."""

_EXTENSION_ALIASES: Final = {"jpeg": "jpg"}
_A_FILE: Final[dict[MediaType, str]] = {
    "image": "an image file",
    "video": "a video file",
    "audio": "an audio file",
}

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

CREATE_GRACE: Final = 30.0
"""Seconds creating a project may take (Ctrl-C and ``--timeout`` wait for it: see `_run`)."""

_CLEANUP_GRACE: Final = CREATE_GRACE + 10.0
"""Seconds after ``--timeout`` for the project's cancellation and the client's close."""

DEFAULT_MODELS_TIMEOUT: Final = 10.0
"""Seconds to wait for the Supernet's media model list (the official SDKs wait 10 s)."""

DEFAULT_STEP_SECONDS: Final = 0.1
"""Seconds the embedded simulated test double spends on each step (so progress shows)."""

_BAR_WIDTH: Final = 24


@dataclass(frozen=True)
class CommandSpec:
    """One media command: its name, the project type it makes, and how stderr describes the
    simulated test double's output."""

    name: str
    media_type: MediaType
    noun: str
    """What the command makes, as in "make an image"."""
    simulated_output: str


COMMANDS: Final[dict[str, CommandSpec]] = {
    "image": CommandSpec(
        "image",
        "image",
        "an image",
        "a drawing (shapes and the prompt's text), not a generated picture",
    ),
    "video": CommandSpec(
        "video", "video", "a video", "moving shapes with the frame number, not a generated video"
    ),
    "music": CommandSpec("music", "audio", "music", "a seeded tune, not generated music"),
}
"""The media commands by name (``music`` makes ``audio`` projects)."""


# --- argument types ------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``1024x768``) as ``(width, height)``, each 1 to 16384.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    width, x, height = text.lower().partition("x")
    if x and width.isdigit() and height.isdigit():
        size = (int(width), int(height))
        if all(1 <= side <= 16384 for side in size):
            return size
    raise argparse.ArgumentTypeError(
        f"expected WIDTHxHEIGHT with sides of 1 to 16384 pixels, e.g. 1024x1024; got {text!r}"
    )


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, got {text!r}"
            )
        return value

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text!r}")
    return value


# --- the parser ----------------------------------------------------------------------------------


def add_media_arguments(parser: argparse.ArgumentParser, spec: CommandSpec) -> None:
    """Add the options of the media command ``spec`` (and the connection options) to
    ``parser``."""
    formats = OUTPUT_FORMATS[spec.media_type]
    parser.add_argument("prompt", help="what to make")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help=f"where to save it, e.g. out.{formats[0]}. With -n N > 1: STEM-1.EXT ... STEM-K.EXT "
        f"next to it (-o out.{formats[0]} -n 2: out-1.{formats[0]}, out-2.{formats[0]}), "
        "numbered in render order over the renders saved. The extension picks the "
        "format; a directory gets <project id>-<render id>.EXT files",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"model id (default: the first {spec.media_type} model with workers in the catalog)",
    )
    parser.add_argument(
        "-n",
        "--count",
        dest="count",
        type=_whole(1, 16),
        default=1,
        metavar="N",
        help="renders to make, 1 to 16 (default: 1)",
    )
    parser.add_argument("--seed", type=_whole(0, 2**32 - 1), default=None, help="0 to 2**32-1")
    parser.add_argument("--steps", type=_whole(1, 1000), default=None, help="sampling steps")
    parser.add_argument("--guidance", type=_non_negative, default=None, help="guidance scale")
    if spec.media_type != "audio":
        parser.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt")
        parser.add_argument(
            "--size", type=parse_size, default=None, metavar="WxH", help="e.g. 1024x1024"
        )
    if spec.media_type != "image":
        parser.add_argument("--duration", type=_positive, default=None, metavar="S", help="seconds")
    if spec.media_type == "video":
        parser.add_argument("--fps", type=_positive, default=None, help="frames per second")
    if spec.media_type == "audio":
        parser.add_argument("--bpm", type=_whole(1, 1000), default=None, help="beats per minute")
        parser.add_argument("--lyrics", default=None, metavar="TEXT", help="song lyrics")
    if len(formats) > 1:
        parser.add_argument(
            "--format",
            choices=formats,
            default=None,
            help=f"output format (default: -o's extension, else {formats[0]})",
        )
    parser.add_argument(
        "--progress",
        choices=("auto", "bars", "lines", "none"),
        default="auto",
        help="progress on stderr: bars redrawn in place, one line per update, or none "
        "(default auto: bars on a terminal, lines otherwise)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="give up after S seconds: the project is cancelled on the server, exit status 1",
    )
    parser.add_argument(
        "--models-timeout",
        type=_positive,
        default=DEFAULT_MODELS_TIMEOUT,
        metavar="S",
        help="seconds to wait for the model list when --model is not given (default: 10)",
    )
    add_connection_arguments(parser, chat=False)
    parser.add_argument(
        "--simulated-step-seconds",
        type=_non_negative,
        default=DEFAULT_STEP_SECONDS,
        metavar="S",
        help="embedded network only: seconds the simulated test double spends on each step "
        f"(default: {DEFAULT_STEP_SECONDS:g})",
    )


# --- output files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPlan:
    """Where results go: ``target`` (a file path, or an existing directory when ``directory``)
    and the output ``format``."""

    target: Path
    format: str
    directory: bool = False


def plan_output(media_type: MediaType, output: str, requested: str | None) -> OutputPlan:
    """The output format and target of ``-o output`` and ``--format requested`` (see the module
    docstring).

    Raises:
        UsageError: the directory of ``output`` does not exist, an extension that is not a
            format of ``media_type``, or a ``--format`` that contradicts ``-o``'s extension.
    """
    formats = OUTPUT_FORMATS[media_type]
    path = Path(output)
    if not path.parent.is_dir():
        raise UsageError(f"-o {output}: the directory {path.parent} does not exist")
    if path.is_dir():
        return OutputPlan(path, requested or formats[0], directory=True)
    extension = path.suffix.lower().removeprefix(".")
    extension = _EXTENSION_ALIASES.get(extension, extension)
    if not extension:
        chosen = requested or formats[0]
        return OutputPlan(path.with_name(f"{path.name}.{chosen}"), chosen)
    if extension not in formats:
        listed = ", ".join(f".{f}" for f in formats)
        raise UsageError(
            f"-o {output}: {_A_FILE[media_type]} ends in {listed} (the extension picks the format)"
        )
    if requested is not None and requested != extension:
        raise UsageError(f"--format {requested} contradicts -o {output}")
    return OutputPlan(path, extension)


def numbered_paths(path: Path, count: int) -> list[Path]:
    """``[path]`` for one file, else ``STEM-1.EXT`` ... ``STEM-count.EXT`` beside ``path``."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    spec: CommandSpec
    prompt: str
    output: OutputPlan
    count: int
    options: dict[str, Any] = field(default_factory=dict[str, Any])


def _plan(args: argparse.Namespace) -> _Plan:
    """Check the arguments (nothing runs yet).

    Raises:
        UsageError: the first problem.
    """
    spec = COMMANDS[args.command]
    if not args.prompt.strip():
        raise UsageError("the prompt is empty")
    if args.endpoint is not None:
        if not args.endpoint.startswith(("ws://", "wss://")):
            raise UsageError(f"--endpoint must be a ws:// or wss:// URL, got {args.endpoint!r}")
        remote_credentials(args)
    output = plan_output(spec.media_type, args.output, getattr(args, "format", None))
    options: dict[str, Any] = {"number_of_media": args.count, "output_format": output.format}
    for name, option in (
        ("seed", "seed"),
        ("steps", "steps"),
        ("guidance", "guidance"),
        ("negative", "negative_prompt"),
        ("duration", "duration"),
        ("fps", "fps"),
        ("bpm", "bpm"),
        ("lyrics", "lyrics"),
    ):
        value = getattr(args, name, None)
        if value is not None:
            options[option] = value
    size: tuple[int, int] | None = getattr(args, "size", None)
    if size is not None:
        options["width"], options["height"] = size
    return _Plan(spec, args.prompt, output, args.count, options)


# --- progress ------------------------------------------------------------------------------------


def format_eta(seconds: float | None) -> str:
    """``ETA 1m05s`` / ``ETA 7s``, or ``""`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    whole = max(0, math.ceil(seconds))
    minutes, secs = divmod(whole, 60)
    return f"ETA {minutes}m{secs:02d}s" if minutes else f"ETA {secs}s"


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


@dataclass
class _Row:
    state: str = "waiting"
    percent: float = 0.0
    detail: str = ""


class ProgressDisplay:
    """Shows a project's updates on ``stream``: one bar per render redrawn in place
    (``bars``: for a terminal), one plain line per update (``lines``), or nothing (``none``).

    `show` takes each `ProjectUpdate`; `close` ends the display (the bars stay on screen).
    ``columns`` bounds the bars' line length (a wrapped line would break the redraw).
    """

    def __init__(
        self,
        stream: TextIO,
        renders: int,
        mode: Literal["bars", "lines", "none"],
        *,
        columns: int = 80,
    ) -> None:
        self.stream = stream
        self.mode = mode
        self.columns = max(20, columns)
        self.rows = [_Row() for _ in range(renders)]
        self._indexes: dict[str, int] = {}
        self._drawn = 0
        self._last_line = ""

    def _index_of(self, render_id: str | None, index: int | None = None) -> int:
        if index is None:
            known = self._indexes.get(render_id or "")
            if known is not None:
                return known
            # A render that ended before any step was shown: the first row no render claimed.
            claimed = set(self._indexes.values())
            free = (
                i
                for i, row in enumerate(self.rows)
                if i not in claimed and row.state in {"waiting", "queued", "rendering"}
            )
            index = next(free, len(self.rows))
        while index >= len(self.rows):
            self.rows.append(_Row())
        if render_id:
            self._indexes[render_id] = index
        return index

    def label(self, index: int) -> str:
        return f"render {index + 1}/{len(self.rows)}"

    def show(self, update: ProjectUpdate) -> None:
        """Record ``update`` and show it."""
        line: str | None = None
        if isinstance(update, Queued):
            detail = _join(
                f"position {update.position}" if update.position is not None else "",
                format_eta(update.eta),
            )
            for row in self.rows:
                if row.state in {"waiting", "queued"}:
                    row.state, row.detail = "queued", detail
            line = _join("queued", detail)
        elif isinstance(update, Processing):
            index = self._index_of(update.render_id, update.index)
            row = self.rows[index]
            if update.step_count:
                steps = f"step {update.step}/{update.step_count}"
            else:
                steps = f"step {update.step}" if update.step else "started"
            row.state, row.percent = "rendering", update.percent
            row.detail = _join(steps, format_eta(update.eta))
            line = f"{self.label(index)}: {update.percent:.0f}% {row.detail}"
        elif isinstance(update, RenderCompleted):
            index = self._index_of(update.result.render_id)
            row = self.rows[index]
            row.state, row.percent, row.detail = "done", 100.0, "done"
            line = f"{self.label(index)}: done"
        elif isinstance(update, RenderFailed):
            index = self._index_of(update.render_id, update.index)
            row = self.rows[index]
            row.state, row.detail = "failed", f"failed: {update.error}"
            line = f"{self.label(index)}: failed: {update.error}"
        elif isinstance(update, Completed):
            line = f"completed: {len(update.results)} of {len(self.rows)} renders finished"
        else:
            assert isinstance(update, Failed)
            line = "cancelled" if update.canceled else f"failed: {update.error}"
        if self.mode == "lines" and line != self._last_line:
            self._last_line = line
            self._write(line + "\n")
        elif self.mode == "bars":
            self._redraw()

    def _bar(self, index: int, row: _Row) -> str:
        filled = round(_BAR_WIDTH * min(max(row.percent, 0.0), 100.0) / 100)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        if row.state in {"waiting", "queued"}:
            text = f"{self.label(index)} [{bar}] {_join(row.state, row.detail)}"
        else:
            text = f"{self.label(index)} [{bar}] {row.percent:3.0f}% {row.detail}"
        return text[: self.columns - 1]

    def _redraw(self) -> None:
        parts: list[str] = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # to the start of the first bar
        for index, row in enumerate(self.rows):
            parts.append("\x1b[2K" + self._bar(index, row) + "\n")
        self._drawn = len(self.rows)
        self._write("".join(parts))

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        """End the display (nothing more is drawn)."""
        self.mode = "none"


def _progress_mode(choice: str, stream: TextIO) -> Literal["bars", "lines", "none"]:
    if choice == "auto":
        return "bars" if stream.isatty() else "lines"
    assert choice in {"bars", "lines", "none"}
    return choice  # type: ignore[return-value]


# --- running -------------------------------------------------------------------------------------


class _CommandFailed(Exception):
    """A failure the command reports as one line with exit status 1."""


def _say(stream: TextIO, message: str) -> None:
    stream.write(message + "\n")
    stream.flush()


@asynccontextmanager
async def _open_client(
    args: argparse.Namespace, spec: CommandSpec, err: TextIO
) -> AsyncGenerator[SogniClient]:
    """The remote client with ``--endpoint``, else one on an embedded network whose only worker
    is a SimulatedMediaWorker test double (announced on stderr)."""
    if args.endpoint:
        _say(err, f"trio-sogni {spec.name}: Supernet at {args.endpoint}")
        async with open_remote_client(args, remote_credentials(args)) as client:
            yield client
        return
    missing = [m for m in ("PIL", "av") if importlib.util.find_spec(m) is None]
    if missing:
        raise _CommandFailed(
            "the embedded network's simulated media worker needs Pillow and PyAV, the 'media' "
            "extra: pip install 'trio-sogni[media]'; or pass --endpoint for a remote Supernet"
        )
    _say(
        err,
        f"trio-sogni {spec.name}: embedded local Supernet; its media worker is "
        "SimulatedMediaWorker, a SIMULATED TEST DOUBLE that runs no model: the output is "
        f"{spec.simulated_output}.",
    )
    worker = SimulatedMediaWorker(
        f"embedded-{spec.media_type}-1",
        media_types=frozenset({spec.media_type}),
        capacity=args.count,
        seconds_per_step=args.simulated_step_seconds,
    )
    async with open_embedded_media_client(args, worker) as client:
        yield client


async def choose_model(sogni: SogniClient, media_type: MediaType, wait_seconds: float) -> str:
    """The first model of ``media_type`` in the catalog that has workers, waiting at most
    ``wait_seconds`` for the model list.

    Raises:
        _CommandFailed: no model list in time, or no model of that type has workers.
    """
    available: dict[str, int] = {}
    with trio.move_on_after(wait_seconds):
        available = await sogni.projects.wait_for_models()
    if not available:
        raise _CommandFailed(f"the Supernet listed no media models within {wait_seconds:g} s")
    catalog = await sogni.projects.models()
    for model in catalog.of_type(media_type):
        if available.get(model.id, 0) > 0:
            return model.id
    served = ", ".join(sorted(m for m, n in available.items() if n > 0)) or "none"
    raise _CommandFailed(f"no {media_type} model has workers now (models with workers: {served})")


async def _save_all(
    results: Sequence[MediaResult], plan: _Plan, out: TextIO, err: TextIO
) -> tuple[list[Path], int]:
    """Save ``results`` in order (see the module docstring); print each path on ``out``.
    Returns the saved paths and how many results could not be saved (withheld by the safety
    filter)."""
    targets: Sequence[Path] = (
        [plan.output.target] * len(results)
        if plan.output.directory
        else numbered_paths(plan.output.target, plan.count)
    )
    saved: list[Path] = []
    withheld = 0
    for result in results:
        try:
            path = await result.save(targets[len(saved)])
        except ProjectError as exc:
            if not exc.nsfw:
                raise
            withheld += 1
            _say(err, f"trio-sogni {plan.spec.name}: {exc}")
            continue
        saved.append(path)
        _say(out, str(path))
    return saved, withheld


async def _run(
    sogni: SogniClient, args: argparse.Namespace, plan: _Plan, out: TextIO, err: TextIO
) -> int:
    spec = plan.spec
    model: str = args.model or await choose_model(sogni, spec.media_type, args.models_timeout)
    # Creating is shielded from Ctrl-C and --timeout (bounded by CREATE_GRACE): a cancellation
    # that lands while the request is being written could leave the project running on the
    # server unbeknown to the client. Once it exists, leaving early cancels it (aclose, below,
    # with no checkpoint in between).
    project: Project | None = None
    with trio.CancelScope(shield=True) as creating:
        creating.deadline = trio.current_time() + CREATE_GRACE
        project = await sogni.projects.create(
            type=spec.media_type, model=model, prompt=plan.prompt, **plan.options
        )
    if project is None:
        raise _CommandFailed(f"creating the project took over {CREATE_GRACE:g} s")
    try:
        _say(
            err,
            f"trio-sogni {spec.name}: project {project.id}: {plan.count} render"
            f"{'s' if plan.count > 1 else ''} with {model}",
        )
        mode = _progress_mode(args.progress, err)
        display = ProgressDisplay(err, plan.count, mode, columns=shutil.get_terminal_size().columns)
        try:
            async with project.progress() as updates:
                async for update in updates:
                    display.show(update)
        finally:
            display.close()
        failed = project.render_errors
        if mode != "lines":  # (lines mode showed them already)
            for error in failed:
                _say(err, f"trio-sogni {spec.name}: a render failed: {error}")
        results = await project.wait()
        saved, withheld = await _save_all(results, plan, out, err)
    finally:
        await project.aclose()  # cancels the project on the server if it still runs
    if withheld or failed or len(saved) < plan.count:
        _say(err, f"trio-sogni {spec.name}: saved {len(saved)} of {plan.count} renders")
        return EXIT_FAILED
    return EXIT_OK


async def generate(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    cancel_scope: trio.CancelScope | None = None,
) -> int:
    """Run the media command ``args.command`` (``image``, ``video`` or ``music``; see the
    module docstring); returns the exit status. Writes the saved paths to ``out`` and
    everything else to ``err`` (default: ``sys.stdout`` / ``sys.stderr``).

    The project runs inside ``cancel_scope`` (default: a fresh one), inside the client: Ctrl-C
    (SIGINT, watched while the project runs, in the main thread) cancels it, and so may the
    caller. Then the project is cancelled on the server while the connection is still up, and
    the status is 130. ``--timeout`` works the same way (status 1). A Ctrl-C before the
    project starts raises ``KeyboardInterrupt`` (status 130 in `main`).
    """
    return await _generate(
        args,
        out if out is not None else sys.stdout,
        err if err is not None else sys.stderr,
        cancel_scope if cancel_scope is not None else trio.CancelScope(),
    )


async def _watch_interrupts(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()


@asynccontextmanager
async def _cancel_on_interrupt(scope: trio.CancelScope) -> AsyncGenerator[None]:
    """Cancel ``scope`` on SIGINT during the block (only in the main thread, where signals can
    be received; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with trio.open_signal_receiver(signal.SIGINT) as signals, unwrap_group():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_interrupts, signals, scope)
            yield
            nursery.cancel_scope.cancel()


async def _generate(
    args: argparse.Namespace, out: TextIO, err: TextIO, interrupt: trio.CancelScope
) -> int:
    name = f"trio-sogni {args.command}"
    try:
        plan = _plan(args)
    except UsageError as exc:
        _say(err, f"{name}: {exc}")
        return EXIT_USAGE
    timeout: float | None = args.timeout
    timer = trio.CancelScope(
        deadline=trio.current_time() + timeout if timeout is not None else math.inf
    )
    try:
        # The backstop bounds what the timer cannot: connecting, and closing the client.
        with trio.move_on_at(timer.deadline + _CLEANUP_GRACE):
            async with _open_client(args, plan.spec, err) as sogni:
                with interrupt, timer:
                    async with _cancel_on_interrupt(interrupt):
                        return await _run(sogni, args, plan, out, err)
    except _CommandFailed as exc:
        _say(err, f"{name}: {exc}")
        return EXIT_FAILED
    except SogniError as exc:
        _say(err, f"{name}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        _say(err, f"{name}: cannot write the result: {exc}")
        return EXIT_FAILED
    if interrupt.cancelled_caught:
        _say(err, f"{name}: interrupted; the project was cancelled if it still ran")
        return EXIT_INTERRUPTED
    _say(err, f"{name}: timed out after {timeout:g} s; the project was cancelled if it still ran")
    return EXIT_FAILED
