"""Render the picture shown in docs/media.md with localnet's SimulatedMediaWorker TEST DOUBLE.

    python docs/examples/media_picture.py docs/_static/simulated-fox.png

The test double draws (it runs no model): the picture depends only on the prompt and the seed,
and says on itself that it is a simulated test double.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from trio_sogni.localnet._media._render import RenderSpec, SimulatedMediaWorker

SPEC = RenderSpec(
    media_type="image",
    model_id="flux1-schnell-fp8",
    prompt="a red fox in snow",
    seed=42,
    steps=4,
    width=512,
    height=320,
    output_format="png",
)


async def render() -> bytes:
    """The picture's PNG bytes."""
    worker = SimulatedMediaWorker("docs")

    async def on_step(step: int, total: int) -> None:
        await trio.lowlevel.checkpoint()

    media = await worker.render(SPEC, on_step)
    return media.data


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_static/simulated-fox.png")
    target.write_bytes(trio.run(render))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
