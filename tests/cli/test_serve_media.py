"""``trio-sogni localnet serve`` with media workers: the simulated test doubles by default, none
with ``--no-media``, and ``--images-upstream`` bridging image projects to a scripted
OpenAI-compatible images upstream (tests/imagesupstream.py, a TEST DOUBLE on loopback) whose
picture comes back through a real project, made by ``trio-sogni image``."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from imagesupstream import b64_answer, picture, upstream
from PIL import Image

from trio_sogni._cli import main
from trio_sogni._cli._generate import generate
from trio_sogni._cli._localnet import media_workers_from_args
from trio_sogni._cli._main import build_parser
from trio_sogni.localnet import OpenAIImagesBridgeWorker, SimulatedMediaWorker

KEY = "sk-cli-upstream-secret-42"
KEY_VAR = "TRIO_SOGNI_TEST_IMAGES_KEY"


def serve_args(*options: str) -> argparse.Namespace:
    return build_parser().parse_args(["localnet", "serve", *options])


def test_by_default_one_simulated_worker_serves_every_media_type() -> None:
    workers, banner = media_workers_from_args(serve_args())
    [worker] = workers
    assert isinstance(worker, SimulatedMediaWorker)
    assert worker.media_types == frozenset({"image", "video", "audio"})
    [line] = banner
    assert "image, video, audio projects: SimulatedMediaWorker x1" in line
    assert "SIMULATED TEST DOUBLE" in line


def test_media_workers_n_and_no_media() -> None:
    workers, _ = media_workers_from_args(
        serve_args("--media-workers", "3", "--capacity", "2", "--media-seconds-per-step", "0.5")
    )
    assert [w.name for w in workers] == [f"localnet-media-{i}" for i in (1, 2, 3)]
    assert all(w.capacity == 2 for w in workers)
    assert all(isinstance(w, SimulatedMediaWorker) and w.seconds_per_step == 0.5 for w in workers)
    assert media_workers_from_args(serve_args("--no-media")) == ([], [])


def test_images_upstream_takes_the_image_projects_and_the_key_from_the_environment() -> None:
    args = serve_args(
        "--images-upstream",
        "http://127.0.0.1:9/v1?x=1",
        "--images-upstream-model",
        "sd-turbo",
        "--images-upstream-key-env",
        KEY_VAR,
    )
    workers, banner = media_workers_from_args(args, {KEY_VAR: KEY})
    bridge, simulated = workers
    assert isinstance(bridge, OpenAIImagesBridgeWorker)
    assert bridge.upstream_model == "sd-turbo"
    assert bridge._api_key == KEY
    assert isinstance(simulated, SimulatedMediaWorker)
    assert simulated.media_types == frozenset({"video", "audio"})
    assert banner[0] == (
        "trio-sogni localnet serve: image projects: OpenAIImagesBridgeWorker, REAL generation "
        "through http://127.0.0.1:9/v1 (with an API key)"
    )
    assert "video, audio projects: SimulatedMediaWorker x1" in banner[1]
    assert KEY not in "".join(banner) + repr(workers)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--images-upstream", "ftp://x/v1"], "expected an http:// or https:// URL"),
        (["--images-upstream", "http:///v1"], "expected an http:// or https:// URL"),
        (["--images-upstream", "https://x:0/v1"], "expected an http:// or https:// URL"),
        (["--images-upstream", "http://u:p@x/v1"], "must not hold credentials"),
        (["--no-media", "--media-workers", "2"], "not allowed with argument --no-media"),
        (["--media-workers", "0"], "argument --media-workers"),
        (["--media-seconds-per-step", "-1"], "argument --media-seconds-per-step"),
    ],
)
def test_bad_media_options_exit_2(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["localnet", "serve", *options])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--images-upstream", "http://x/v1", "--images-upstream-key-env", KEY_VAR],
            f"the environment variable {KEY_VAR} is not set",
        ),
        (["--images-upstream-model", "m"], "go with --images-upstream"),
        (["--images-upstream-key-env", KEY_VAR], "go with --images-upstream"),
    ],
)
def test_upstream_option_problems_exit_2_with_one_line(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        media_workers_from_args(serve_args(*options), {})
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert message in line


@pytest.mark.deadline(90)
async def test_serve_with_images_upstream_makes_a_real_image_through_a_project(
    tmp_path: Path,
) -> None:
    color = (10, 200, 30)
    async with upstream(lambda seen: b64_answer(picture((320, 256), "PNG", color))) as api:
        command = [sys.executable, "-m", "trio_sogni", "localnet", "serve"]
        command += ["--images-upstream", api.url, "--images-upstream-key-env", KEY_VAR]
        env = {**os.environ, KEY_VAR: KEY}
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            with trio.fail_after(60):
                buffer = b""
                while b"\n" not in buffer:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "localnet serve exited before printing its line"
                    buffer += chunk
                info = json.loads(buffer.partition(b"\n")[0])
                args = build_parser().parse_args(
                    [
                        *("image", "a lighthouse", "-o", str(tmp_path / "lighthouse.png")),
                        *("--size", "320x256", "--endpoint", info["socket_url"]),
                        *("--rest-endpoint", info["rest_url"], f"--api-key={info['api_key']}"),
                        *("--progress", "none"),
                    ]
                )
                status = await generate(
                    args, out=(out := io.StringIO()), err=(err := io.StringIO())
                )
        finally:
            process.terminate()
            await process.wait()
        stdout = buffer + await _read_all(process.stdout)
        stderr = await _read_all(process.stderr)
    assert status == 0, err.getvalue()
    assert out.getvalue().splitlines() == [str(tmp_path / "lighthouse.png")]
    with Image.open(tmp_path / "lighthouse.png") as image:
        assert (image.format, image.size) == ("PNG", (320, 256))
        assert image.convert("RGB").getpixel((5, 5)) == color  # the upstream's picture
    [seen] = api.seen
    assert (seen.method, seen.target) == ("POST", "/v1/images/generations")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(seen.body)["size"] == "320x256"
    banner = stderr.decode()
    assert "image projects: OpenAIImagesBridgeWorker, REAL generation through" in banner
    assert "video, audio projects: SimulatedMediaWorker x1, a SIMULATED TEST DOUBLE" in banner
    assert KEY.encode() not in stdout + stderr
    assert KEY not in err.getvalue() + out.getvalue()


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def test_without_the_media_extra_serve_says_so_and_runs_chat_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    workers, banner = media_workers_from_args(serve_args())
    assert workers == []
    assert banner == [
        "trio-sogni localnet serve: no simulated media workers: they need Pillow and PyAV, "
        "pip install 'trio-sogni[media]'"
    ]
    with pytest.raises(SystemExit) as exited:
        media_workers_from_args(serve_args("--images-upstream", "http://x/v1"))
    assert exited.value.code == 2
    assert "--images-upstream needs Pillow" in capsys.readouterr().err
