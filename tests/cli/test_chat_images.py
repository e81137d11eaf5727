"""``trio-sogni chat --image PATH [--resize-images]``: the files are attached to the prompt as
``image_url`` parts, checked (and resized only when asked) before anything connects.

The command runs in-process against a localnet on loopback (port 0) with its simulated
test-double chat worker; what the worker was asked is read from ``net.job_requests``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import trio
from PIL import Image

from trio_sogni._cli._chat import chat
from trio_sogni._cli._main import build_parser
from trio_sogni.localnet import open_local_network
from trio_sogni.protocol import ImageURLPart, TextPart

MODEL = "test-model"


def png_file(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path, "PNG")
    return path


def size_of(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return image.size


async def run_chat(*argv: str) -> None:
    args = build_parser().parse_args(["chat", *argv])
    await chat(args)


async def test_images_reach_the_worker_after_the_prompt_resized_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = png_file(tmp_path / "small.png", (40, 30))
    large = png_file(tmp_path / "large.png", (2048, 1024))
    async with open_local_network(models=[MODEL]) as net:
        await run_chat(
            "what are these?",
            "--endpoint",
            net.socket_url,
            "--rest-endpoint",
            net.rest_url,
            "--api-key",
            net.api_key,
            "--model",
            MODEL,
            "--image",
            str(small),
            "--image",
            str(large),
            "--resize-images",
        )
        (request,) = net.job_requests
    assert capsys.readouterr().out == "Simulated reply to: what are these?\n"
    user = request.messages[-1]
    assert isinstance(user.content, list)
    text, first, second = user.content
    assert isinstance(text, TextPart)
    assert text.text == "what are these?"
    assert isinstance(first, ImageURLPart)
    assert isinstance(second, ImageURLPart)
    assert size_of(first.image_url.url) == (40, 30)
    assert size_of(second.image_url.url) == (1024, 512)


async def test_an_oversized_image_without_resize_images_is_refused_before_connecting(
    tmp_path: Path,
) -> None:
    large = png_file(tmp_path / "large.png", (1500, 900))
    async with open_local_network(models=[MODEL]) as net:
        with pytest.raises(SystemExit) as exc_info:
            await run_chat(
                "hi",
                "--endpoint",
                net.socket_url,
                "--rest-endpoint",
                net.rest_url,
                "--api-key",
                net.api_key,
                "--model",
                MODEL,
                "--image",
                str(large),
            )
        message = str(exc_info.value)
        assert message.startswith(f"trio-sogni: --image {large}: the image is 1500x900 pixels")
        assert "--resize-images" in message
        assert "resize=True" not in message
        assert len(net.job_requests) == 0


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "cannot read"), (b"not an image", "not a PNG or JPEG")],
)
async def test_unreadable_or_non_image_files_are_usage_errors(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=match):
        # no network at all: the files are checked before anything connects
        await run_chat(
            "hi", "--endpoint", "ws://127.0.0.1:9", "--api-key", "k", "--image", str(path)
        )
    await trio.lowlevel.checkpoint()
