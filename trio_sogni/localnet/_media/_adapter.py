"""Runs a renderer of :mod:`._render` (e.g. the :class:`SimulatedMediaWorker` TEST DOUBLE) as a
worker of the projects manager.

The manager hands its workers a :class:`._projects.RenderSpec` (settings resolved from the
request and the model's tier); renderers take a :class:`._render.RenderSpec`. The adapter maps
one to the other and returns the renderer's :class:`._render.RenderedMedia` (bytes, content type,
NSFW flag: what the manager stores and reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from typing_extensions import override

from . import _projects, _render

__all__ = ["RenderWorker", "RendererAdapter"]

_DEFAULT_SIZE = 512


class RenderWorker(Protocol):
    """What the adapter needs of a renderer (:class:`._render.SimulatedMediaWorker`)."""

    @property
    def name(self) -> str: ...

    @property
    def capacity(self) -> int: ...

    async def render(
        self, spec: _render.RenderSpec, on_step: _render.StepCallback
    ) -> _render.RenderedMedia: ...


class RendererAdapter:
    """A projects-manager worker (``name``, ``models``, ``capacity``, ``render``) that renders
    with ``renderer`` for ``models``. ``render`` is cancellable wherever the renderer is."""

    def __init__(self, renderer: RenderWorker, models: Sequence[str]) -> None:
        self.renderer = renderer
        self._models = tuple(models)

    @override
    def __repr__(self) -> str:
        return f"RendererAdapter({self.renderer!r}, models={list(self._models)})"

    @property
    def name(self) -> str:
        return self.renderer.name

    @property
    def models(self) -> Sequence[str]:
        return self._models

    @property
    def capacity(self) -> int:
        return self.renderer.capacity

    async def render(
        self, spec: _projects.RenderSpec, on_step: _projects.StepCallback
    ) -> _render.RenderedMedia:
        """Render ``spec`` (mapped to the renderer's spec; sizes the tier left open default to
        512 x 512)."""
        mapped = _render.RenderSpec(
            media_type=spec.media_type,
            model_id=spec.model,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            seed=spec.seed,
            steps=spec.steps,
            width=spec.width or _DEFAULT_SIZE,
            height=spec.height or _DEFAULT_SIZE,
            output_format=spec.output_format,
            guidance=spec.guidance,
            frames=spec.frames,
            fps=spec.fps,
            duration=spec.duration,
        )
        return await self.renderer.render(mapped, on_step)
