"""TEST DOUBLES of the hosted creative tools that a durable run executes server-side.

Nothing here generates media. :class:`SimulatedGenerateImage` answers ``generate_image`` with
fake asset URLs on the network's own base URL (``<base>/localnet/assets/<toolCallId>-<n>.png``,
which localnet does not serve) after charging a fixed price; :class:`SimulatedEnhancePrompt`
answers ``enhance_prompt`` for free with the prompt plus a fixed suffix. They exist so that a
run can exercise tool dispatch, cost confirmation and billing against localnet. Only
``SimulatedEnhancePrompt`` is registered by default: media tools such as ``generate_image`` run
as real media projects (``_creative``), and a test that wants the fake-URL double registers it
in ``net.runs.tools``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

import trio

__all__ = [
    "HostedToolDouble",
    "SimulatedEnhancePrompt",
    "SimulatedGenerateImage",
    "ToolFailure",
    "default_tool_doubles",
]


class ToolFailure(Exception):
    """A tool call failed; ``code`` is a short machine-readable tag (``invalid_arguments``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HostedToolDouble(Protocol):
    """A server-side tool of a durable run (test double).

    ``estimate_usd`` is the price of a call with these arguments (``0``: free, never needs cost
    confirmation); it raises :class:`ToolFailure` for arguments the tool refuses. ``run`` returns
    the result object given back to the model as the ``tool`` message (JSON).
    """

    @property
    def name(self) -> str: ...

    def estimate_usd(self, arguments: Mapping[str, Any]) -> Decimal: ...

    async def run(
        self, arguments: Mapping[str, Any], *, tool_call_id: str, base_url: str
    ) -> dict[str, Any]: ...


def _prompt(arguments: Mapping[str, Any]) -> str:
    prompt = arguments.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ToolFailure("invalid_arguments", "'prompt' must be a non-empty string")
    return prompt


@dataclass(frozen=True)
class SimulatedGenerateImage:
    """TEST DOUBLE of ``generate_image``: ``usd_per_image`` times ``numberOfVariations``
    (1 to 16, default 1); the result is ``{status: "completed", simulated: true, prompt,
    images: [{url, width, height}]}`` with fake URLs (see the module docstring)."""

    usd_per_image: Decimal = field(default_factory=lambda: Decimal("0.04"))
    name: str = "generate_image"

    def _count(self, arguments: Mapping[str, Any]) -> int:
        count = arguments.get("numberOfVariations", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 16:
            raise ToolFailure("invalid_arguments", "'numberOfVariations' must be 1 to 16")
        return count

    def estimate_usd(self, arguments: Mapping[str, Any]) -> Decimal:
        _prompt(arguments)
        return self.usd_per_image * self._count(arguments)

    async def run(
        self, arguments: Mapping[str, Any], *, tool_call_id: str, base_url: str
    ) -> dict[str, Any]:
        prompt = _prompt(arguments)
        await trio.lowlevel.checkpoint()
        images = [
            {
                "url": f"{base_url}/localnet/assets/{tool_call_id}-{n}.png",
                "width": 1024,
                "height": 1024,
            }
            for n in range(1, self._count(arguments) + 1)
        ]
        return {"status": "completed", "simulated": True, "prompt": prompt, "images": images}


ENHANCE_SUFFIX: Final = ", highly detailed, sharp focus, natural light"


@dataclass(frozen=True)
class SimulatedEnhancePrompt:
    """TEST DOUBLE of ``enhance_prompt`` (free): ``{prompt: <prompt> + ENHANCE_SUFFIX,
    simulated: true}``."""

    name: str = "enhance_prompt"

    def estimate_usd(self, arguments: Mapping[str, Any]) -> Decimal:
        _prompt(arguments)
        return Decimal(0)

    async def run(
        self, arguments: Mapping[str, Any], *, tool_call_id: str, base_url: str
    ) -> dict[str, Any]:
        prompt = _prompt(arguments)
        await trio.lowlevel.checkpoint()
        return {"prompt": prompt + ENHANCE_SUFFIX, "simulated": True}


def default_tool_doubles() -> dict[str, HostedToolDouble]:
    """The hosted tool doubles a network's runs use unless told otherwise, by name: only
    ``enhance_prompt``. The media tools run as real projects (``_creative``); a test that wants
    the fake-URL :class:`SimulatedGenerateImage` registers it explicitly."""
    tools: list[HostedToolDouble] = [SimulatedEnhancePrompt()]
    return {tool.name: tool for tool in tools}
