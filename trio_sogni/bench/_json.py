"""The JSON report: `dump_json` and `load_json`."""

from __future__ import annotations

import os
from typing import Final

import msgspec

from ..protocol import JSONDecoder
from ._model import SCHEMA_VERSION, BenchReportError, BenchRun

__all__ = ["MAX_REPORT_BYTES", "dump_json", "load_json"]

MAX_REPORT_BYTES: Final = 256 * 1024 * 1024
"""`load_json` refuses files larger than this (256 MiB), so a wrong path cannot exhaust memory."""


class _Version(msgspec.Struct):
    """The one field read before the rest, so a newer file is refused by its version."""

    schema_version: int


_encoder: Final = msgspec.json.Encoder()
_version_decoder: Final = JSONDecoder(_Version)
_run_decoder: Final = JSONDecoder(BenchRun)


def dump_json(run: BenchRun) -> bytes:
    """``run`` as pretty-printed JSON (2-space indent, UTF-8, trailing newline).

    Struct fields keep their declared order and dictionary keys are sorted (numeric keys
    numerically), so the same run
    always gives the same bytes and two reports diff cleanly. Non-finite floats (NaN, ±inf) are
    written as ``null``.
    """
    # to_builtins sorts dictionaries of any key type (histogram buckets numerically), which the
    # JSON encoder's own ``order`` does not; the encoder keeps the order it is given.
    plain = msgspec.to_builtins(run, order="deterministic")
    return msgspec.json.format(_encoder.encode(plain), indent=2) + b"\n"


def load_json(data: bytes | str | os.PathLike[str]) -> BenchRun:
    """Read a report written by `dump_json`: ``bytes`` or ``str`` are the JSON document itself, an
    ``os.PathLike`` (``pathlib.Path``) names a file to read.

    Fields this version does not know (written by a newer version of the same schema) are
    ignored.

    Raises:
        BenchReportError: the file cannot be read or is larger than `MAX_REPORT_BYTES`, it is not
            JSON, it is not a benchmark report, or its ``schema_version`` is newer than
            `SCHEMA_VERSION`.
    """
    source = "report"
    if isinstance(data, os.PathLike):
        source = os.fspath(data)
        try:
            with open(source, "rb") as file:
                raw = file.read(MAX_REPORT_BYTES + 1)
        except OSError as exc:
            raise BenchReportError(f"cannot read {source}: {exc.strerror or exc}") from exc
    else:
        raw = data
    if len(raw) > MAX_REPORT_BYTES:
        raise BenchReportError(f"{source}: larger than {MAX_REPORT_BYTES} bytes")
    try:
        version = _version_decoder.decode(raw).schema_version
    except msgspec.ValidationError as exc:
        raise BenchReportError(f"{source}: not a benchmark report ({exc})") from exc
    except msgspec.DecodeError as exc:
        hint = " (to read a file, pass a pathlib.Path)" if isinstance(data, str) else ""
        raise BenchReportError(f"{source}: not JSON ({exc}){hint}") from exc
    if version > SCHEMA_VERSION:
        raise BenchReportError(
            f"{source}: schema_version {version} is newer than this version of trio-sogni reads"
            f" ({SCHEMA_VERSION}); upgrade trio-sogni to read it"
        )
    try:
        return _run_decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise BenchReportError(f"{source}: not a valid benchmark report ({exc})") from exc
