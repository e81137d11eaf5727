"""The installed version of trio_sogni."""

__version__ = "0.1.0"
