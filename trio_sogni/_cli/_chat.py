"""``trio-sogni chat``: stream one answer, or hold an interactive multi-turn session.

Where it runs: the Supernet at ``--endpoint`` (with credentials), else an embedded local one with
the llama.cpp worker (the ``local`` extra) or, with ``--simulated``, a simulated test-double
worker; the embedded choice is printed to stderr. The answer streams to stdout as it arrives
(``--json``: only the final result, as one JSON line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import msgspec
import trio

from trio_sogni import (
    InvalidRequestError,
    SogniClient,
    ToolProgress,
    image_part,
    media_tool_definitions,
)
from trio_sogni.localnet import ScriptFileError, SimulatedMediaWorker, load_script

from ._connect import (
    DEFAULT_MODEL,
    UsageError,
    add_connection_arguments,
    local_worker,
    open_embedded_client,
    open_remote_client,
    remote_credentials,
)

__all__ = ["add_chat_arguments", "chat"]


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` options (and the connection options) to ``parser``."""
    parser.add_argument("prompt", nargs="?", help="the user message (omit for interactive mode)")
    add_connection_arguments(parser)
    parser.add_argument(
        "--model",
        default=None,
        help=f"model id (default: the local model, or {DEFAULT_MODEL} with --endpoint)",
    )
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the final result as JSON")
    parser.add_argument(
        "--media-tools",
        action="store_true",
        help="offer the model the six media tools (generate_image, edit_image, generate_video, "
        "sound_to_video, video_to_video, generate_music) and run its calls as media projects; "
        "their progress goes to stderr and their result URLs are printed",
    )
    parser.add_argument(
        "--save-media",
        metavar="DIR",
        default=None,
        help="with --media-tools: download every media result into DIR",
    )
    parser.add_argument(
        "--script",
        metavar="FILE",
        default=None,
        help="with --simulated: a JSON script for the simulated test-double worker "
        "(docs/localnet.md, 'Scripted replies from a file'), e.g. to make it call a tool",
    )
    parser.add_argument(
        "--image",
        metavar="PATH",
        action="append",
        default=[],
        help="attach a PNG or JPEG file to the prompt (to the first message in interactive "
        "mode); repeat for more images. Its longest side must be at most 1024 px, unless "
        "--resize-images",
    )
    parser.add_argument(
        "--resize-images",
        action="store_true",
        help="resize --image files whose longest side is over 1024 px to 1024 px (aspect ratio "
        "kept) instead of refusing them; needs Pillow (the media extra)",
    )
    think = parser.add_mutually_exclusive_group()
    think.add_argument("--think", dest="think", action="store_true", default=None)
    think.add_argument("--no-think", dest="think", action="store_false")


@asynccontextmanager
async def _client_for(args: argparse.Namespace) -> AsyncGenerator[tuple[SogniClient, str]]:
    """Yield ``(client, model)``: on the remote Supernet with ``--endpoint``, else on an embedded
    one (announced on stderr).

    Raises:
        SystemExit: bad credentials, or the llama.cpp worker cannot run.
    """
    if args.endpoint:
        try:
            credentials = remote_credentials(args)
        except UsageError as exc:
            raise SystemExit(f"trio-sogni: {exc}") from None
        async with open_remote_client(args, credentials) as client:
            yield client, args.model or DEFAULT_MODEL
        return
    script = None
    if args.script is not None:
        if not args.simulated:
            raise SystemExit("trio-sogni: --script needs --simulated")
        try:
            script = load_script(args.script)
        except ScriptFileError as exc:
            raise SystemExit(f"trio-sogni: --script: {exc}") from None
    if args.simulated:
        worker = None
        model: str = args.model or DEFAULT_MODEL
        print(
            "trio-sogni: embedded local Supernet with simulated (test-double) workers: the "
            "answer is scripted text, not model inference.",
            file=sys.stderr,
        )
    else:
        worker = local_worker(args)
        model = worker.model_name
        print(f"trio-sogni: embedded local Supernet, llama.cpp running {model}", file=sys.stderr)
    media = None
    if args.media_tools:
        media = SimulatedMediaWorker("embedded-media")
        print(
            "trio-sogni: media tools run on a simulated test-double media worker: its images, "
            "videos and music are drawings, not generated media.",
            file=sys.stderr,
        )
    async with open_embedded_client(
        args, worker, [model], script=script, media_worker=media
    ) as client:
        yield client, model


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling keyword arguments the command line set."""
    params: dict[str, Any] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.think is not None:
        params["think"] = args.think
    if args.resize_images:
        params["resize_images"] = True
    return params


async def _image_parts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``image_url`` parts of the ``--image`` files, read (and with ``--resize-images``
    resized) in a worker thread, before anything connects.

    Raises:
        SystemExit: a file that cannot be read, is not a PNG or JPEG, is over 10 MiB, or is
            over 1024 px without ``--resize-images`` (the message says which file and why).
    """
    parts: list[dict[str, Any]] = []
    for path in args.image:
        try:
            part = await trio.to_thread.run_sync(
                partial(image_part, path, resize=args.resize_images)
            )
        except InvalidRequestError as exc:
            reason = str(exc).removeprefix("image_part: ")
            reason = reason.replace("pass resize=True", "pass --resize-images")
            raise SystemExit(f"trio-sogni: --image {path}: {reason}") from None
        parts.append(part)
    return parts


def _user_message(text: str, images: list[dict[str, Any]]) -> dict[str, Any]:
    """A user message: plain text, or the text then the images as content parts."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *images]}


async def _one_turn(
    client: SogniClient, model: str, messages: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    """Stream one answer to stdout (or print its final result as JSON); return its content."""
    async with client.chat.completions.stream(
        model=model, messages=messages, **_params(args)
    ) as stream:
        async for chunk in stream:
            if not args.json and chunk.content:
                sys.stdout.write(chunk.content)
                sys.stdout.flush()
        result = await stream.wait()
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        sys.stdout.write("\n")
    return result.content


def _progress(call: object, progress: ToolProgress) -> None:
    """One stderr line per media tool update (URLs are signed: they go to stdout only)."""
    percent = f" {progress.percent:.0f}%" if progress.status == "processing" else ""
    print(f"[{progress.tool_name}] {progress.status}{percent}", file=sys.stderr, flush=True)


async def _tools_turn(
    client: SogniClient, model: str, messages: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    """One answer with the media tools offered (the tool loop runs them; not streamed): print
    the answer and each result URL, save the media with ``--save-media``; return the content."""
    result = await client.chat.completions.create(
        model=model,
        messages=messages,
        tools=media_tool_definitions(),
        auto_execute_tools=True,
        on_tool_progress=_progress,
        **_params(args),
    )
    urls = [
        url
        for round_ in result.tool_history or ()
        for tool in round_.tool_results
        for url in tool.result_urls or ()
    ]
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(result.content)
        for url in urls:
            print(url)
    if args.save_media is not None and urls:
        await _save_all(urls, trio.Path(args.save_media))
    return result.content


async def _save_all(urls: list[str], directory: trio.Path) -> None:
    """Download each URL into ``directory`` as ``media-<n>.<extension>`` (streamed to disk);
    print each path to stderr."""
    await directory.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0)) as http:
        for n, url in enumerate(urls, start=1):
            async with http.stream("GET", url) as response:
                response.raise_for_status()
                kind = response.headers.get("content-type", "").split(";")[0].strip()
                path = directory / f"media-{n}.{_EXTENSIONS.get(kind, 'bin')}"
                async with await path.open("wb") as file:
                    async for chunk in response.aiter_bytes():
                        await file.write(chunk)
            print(f"trio-sogni: saved {path}", file=sys.stderr)


_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
}


async def chat(args: argparse.Namespace) -> int:
    """Run ``trio-sogni chat``: one turn with a prompt, else an interactive session (prompts
    read from stdin in a thread; an empty line or end of input ends it) that keeps the history.
    ``--image`` files are attached to the prompt (interactive: to the first message); they are
    read and checked before anything connects. Returns the exit status (0)."""
    base: list[dict[str, Any]] = []
    if args.system:
        base.append({"role": "system", "content": args.system})
    if args.save_media is not None and not args.media_tools:
        raise SystemExit("trio-sogni: --save-media needs --media-tools")
    images = await _image_parts(args)
    async with _client_for(args) as (client, model):
        turn = _tools_turn if args.media_tools else _one_turn
        if args.prompt is not None:
            await turn(client, model, [*base, _user_message(args.prompt, images)], args)
            return 0
        history = list(base)
        print("interactive chat; an empty line or Ctrl-D ends it", file=sys.stderr)
        while True:
            try:
                line = await trio.to_thread.run_sync(input, "> ", abandon_on_cancel=True)
            except EOFError:
                return 0
            if not line.strip():
                return 0
            history.append(_user_message(line, images))
            images = []
            answer = await turn(client, model, history, args)
            history.append({"role": "assistant", "content": answer})
