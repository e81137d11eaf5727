"""The ``trio-sogni`` command (console script ``trio_sogni._cli:main``)."""

from ._main import main as main

__all__ = ["main"]
