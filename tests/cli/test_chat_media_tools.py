"""``trio-sogni chat --media-tools``: the model's media tool calls run as projects (on the
embedded simulated test doubles here), their progress on stderr, their URLs on stdout, the files
saved with ``--save-media``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

MODEL = "test-model"
SCRIPT = {
    "rules": [
        {"match": {"last_role": "tool"}, "steps": [{"text": "Here is your fox."}]},
        {
            "match": {"tool": "generate_image"},
            "steps": [
                {
                    "tool_call": {
                        "name": "generate_image",
                        "arguments": {"prompt": "a red fox", "width": 320, "height": 256},
                    }
                }
            ],
        },
    ]
}


def test_chat_runs_a_media_tool_and_saves_its_result(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    out_dir = tmp_path / "media"
    command = [sys.executable, "-m", "trio_sogni", "chat", "draw me a fox", "--simulated"]
    command += ["--model", MODEL, "--script", str(script), "--media-tools"]
    command += ["--save-media", str(out_dir)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "Here is your fox."
    assert len(lines) == 2
    assert lines[1].startswith("http://127.0.0.1:")
    assert "[generate_image] completed" in out.stderr
    assert "test-double media worker" in out.stderr
    assert lines[1] not in out.stderr  # signed URLs only on stdout
    (saved,) = out_dir.iterdir()
    assert saved.name == "media-1.png"
    with Image.open(io.BytesIO(saved.read_bytes())) as image:
        assert image.size == (320, 256)


def test_save_media_and_script_need_their_partners() -> None:
    for extra, needs in (
        (["--simulated", "--save-media", "x"], "--media-tools"),
        (["--script", "x.json"], "--simulated"),
    ):
        command = [sys.executable, "-m", "trio_sogni", "chat", "hi", *extra]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode != 0
        assert needs in out.stderr
        assert "Traceback" not in out.stderr
