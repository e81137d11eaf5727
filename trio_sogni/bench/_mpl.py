"""The one boundary with matplotlib (the ``bench`` extra), imported only by `render_html`.

matplotlib's own annotations are partial (``**kwargs`` untyped), which pyright's strict mode
rejects at every call. So this module hands out `PlotAxes`, a Protocol naming exactly the
``matplotlib.axes.Axes`` methods and keywords the report uses, fully typed, and casts each
``Axes`` to it once; the few other matplotlib calls carry a targeted ``pyright: ignore``.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never through pyplot, so
no figure is registered in pyplot's global state and nothing is shown or kept between calls.
The rcParams the output depends on are set for the duration of `render_svg` only
(``matplotlib.rc_context``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from typing import Final, Protocol, cast

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["PlotAxes", "plain", "render_svg"]

_RC: Final[dict[str, object]] = {
    "svg.fonttype": "path",  # glyphs as paths: the SVG needs no font on the reader's machine
    "svg.hashsalt": "trio-sogni",  # deterministic element ids: the same run gives the same HTML
    "text.usetex": False,  # never call out to LaTeX, whatever the user's matplotlibrc says
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 9.0,
}

_PROLOGUE: Final = re.compile(r"\A.*?(?=<svg)", re.DOTALL)
_METADATA: Final = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def plain(text: str) -> str:
    """``text`` escaped for matplotlib, which would read ``$...$`` as mathtext (axis tick labels
    need mathtext, so it stays on)."""
    return text.replace("$", r"\$")


class PlotAxes(Protocol):
    """The subset of ``matplotlib.axes.Axes`` the report draws with (same names, same
    meaning; keywords limited to those used)."""

    def plot(
        self,
        x: Sequence[float],
        y: Sequence[float],
        *,
        label: str | None = ...,
        color: str | None = ...,
        linestyle: str = ...,
        marker: str = ...,
        markersize: float = ...,
        markerfacecolor: str = ...,
        drawstyle: str = ...,
        linewidth: float = ...,
    ) -> object:
        """Draw a line (and markers) through the points."""
        ...

    def axvline(
        self, x: float, *, color: str = ..., linestyle: str = ..., label: str | None = ...
    ) -> object:
        """Draw a vertical line across the axes at ``x``."""
        ...

    def set_xscale(self, value: str) -> None:
        """``"linear"`` or ``"log"``."""
        ...

    def set_yscale(self, value: str) -> None:
        """``"linear"`` or ``"log"``."""
        ...

    def set_xlabel(self, xlabel: str) -> object:
        """Label the x axis."""
        ...

    def set_ylabel(self, ylabel: str) -> object:
        """Label the y axis."""
        ...

    def set_title(self, label: str) -> object:
        """Title the axes."""
        ...

    def set_ylim(self, bottom: float | None = ..., top: float | None = ...) -> object:
        """Limit the y axis."""
        ...

    def set_xlim(self, left: float | None = ..., right: float | None = ...) -> object:
        """Limit the x axis."""
        ...

    def legend(self, *, fontsize: str = ..., loc: str = ..., ncols: int = ...) -> object:
        """Show the legend of the labelled lines."""
        ...

    def text(self, x: float, y: float, s: str, *, transform: object, ha: str, va: str) -> object:
        """Write ``s`` at ``(x, y)`` in the ``transform`` 's coordinates."""
        ...

    @property
    def transAxes(self) -> object:
        """The axes' own 0..1 coordinates."""
        ...


def render_svg(
    draw: Callable[[list[PlotAxes]], None],
    *,
    rows: int,
    cols: int,
    width: float,
    height: float,
) -> str:
    """Build a ``width`` x ``height`` inch figure of ``rows`` x ``cols`` axes, let ``draw`` fill
    them (row by row), and return the figure as an ``<svg>`` element for inlining in HTML: no
    XML prologue or DOCTYPE, no metadata block, text drawn as paths (no font needed), element
    ids deterministic."""
    with matplotlib.rc_context(_RC):  # pyright: ignore[reportUnknownMemberType, reportArgumentType]
        figure = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(figure)
        grid = figure.subplots(rows, cols, squeeze=False)
        axes = [cast(PlotAxes, ax) for row in grid for ax in row]
        draw(axes)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})  # pyright: ignore[reportUnknownMemberType]
    svg = _METADATA.sub("", _PROLOGUE.sub("", out.getvalue(), count=1), count=1)
    return svg.strip()
