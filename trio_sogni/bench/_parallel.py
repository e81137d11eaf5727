"""Run one point across several client processes on this machine.

Each process is ``python -m trio_sogni bench run ... --shard k/N --start-from-stdin``, the same
code path as a shard run on another machine: it connects, prints ``ready`` on its standard
output, reads one line with the common start time (a ``time.time()`` value) from its standard
input, runs its share of the point from that instant and writes its shard report. The parent
(`run_processes`) starts them, waits until every one is ready, sends them all the same start
time, and waits for them to exit; merging their reports is the caller's (`merge_runs`).

Secrets travel in the environment (``SOGNI_API_KEY``), never on a command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Final

import trio

from .. import SogniError

__all__ = ["READY_LINE", "BenchProcessError", "run_processes"]

READY_LINE: Final = b"ready\n"
"""What a child prints on its standard output once it is connected and waiting to start."""
_MAX_LINE: Final = 4096


class BenchProcessError(SogniError):
    """A benchmark process did not get ready in time, or exited with an error."""


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line (at most `_MAX_LINE` bytes) from ``stream``; what arrived so far at its end."""
    data = b""
    while not data.endswith(b"\n") and len(data) < _MAX_LINE:
        chunk = await stream.receive_some(_MAX_LINE - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def run_processes(
    argvs: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 120.0,
    start_margin: float = 0.05,
) -> None:
    """Run ``python -m trio_sogni <argv>`` for each of ``argvs`` (each must include
    ``--start-from-stdin``), start them together, and wait for all of them.

    ``env`` is added to this process's environment for the children. Every child must print
    `READY_LINE` within ``ready_timeout`` seconds; then each is sent the start time ``now +
    start_margin``. Their standard error is this process's. If this call is cancelled or a child
    fails, the other children are killed.

    Raises:
        BenchProcessError: a child exited before it was ready, was not ready in time, or exited
            with a non-zero status (the message gives its status).
    """
    child_env = {**os.environ, **(env or {})}
    processes: list[trio.Process] = []
    try:
        for argv in argvs:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_sogni", *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=child_env,
            )
            processes.append(process)
        with trio.move_on_after(ready_timeout) as waiting:
            for number, process in enumerate(processes):
                assert process.stdout is not None
                line = await _read_line(process.stdout)
                if line != READY_LINE:
                    status = await process.wait()
                    raise BenchProcessError(
                        f"benchmark process {number} exited (status {status}) before it was ready"
                    )
        if waiting.cancelled_caught:
            raise BenchProcessError(f"benchmark processes not ready within {ready_timeout:g} s")
        start = f"{time.time() + start_margin!r}\n".encode()
        for process in processes:
            assert process.stdin is not None
            await process.stdin.send_all(start)
            await process.stdin.aclose()
        for number, process in enumerate(processes):
            status = await process.wait()
            if status:
                raise BenchProcessError(f"benchmark process {number} failed (status {status})")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await pipe.aclose()
