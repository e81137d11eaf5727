"""The pieces the chaos runs share: random faults on a proxy, a streamed job that records how it
ended, and the invariant every job's ending must meet (full text, or a typed error)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio
from faultproxy import FaultProxy, Faults

import trio_sogni
from trio_sogni import ChatJobError, SogniError

Outcome = tuple[str, Any]
"""``("ok", the ChatStream)`` or ``("error", the SogniError)``."""


@dataclass(frozen=True)
class FaultMix:
    """How `random_faults` draws: a pause between faults, then one of reset, latency (with
    jitter), a bandwidth cap, a blackhole (then a reset) or calm, chosen uniformly."""

    pause: tuple[float, float]
    latency: tuple[float, float]
    jitter: float
    bandwidth: tuple[float, float]
    blackhole: tuple[float, float]


async def random_faults(
    proxy: FaultProxy,
    rng: random.Random,
    seconds: float,
    mix: FaultMix,
    seen: Counter[str] | None = None,
) -> None:
    """Inflict random faults on ``proxy`` for ``seconds``, then calm it."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await trio.sleep(rng.uniform(*mix.pause))
        kind = rng.choice(["reset", "latency", "blackhole", "bandwidth", "calm"])
        if seen is not None:
            seen[kind] += 1
        if kind == "reset":
            proxy.reset_all()
        elif kind == "latency":
            proxy.faults = Faults(latency=rng.uniform(*mix.latency), jitter=mix.jitter)
        elif kind == "bandwidth":
            proxy.faults = Faults(bandwidth=rng.uniform(*mix.bandwidth))
        elif kind == "blackhole":
            proxy.faults = Faults(blackhole=True)
            await trio.sleep(rng.uniform(*mix.blackhole))
            proxy.faults = Faults()
            proxy.reset_all()
        else:
            proxy.faults = Faults()
    proxy.faults = Faults()


async def stream_job(
    sogni: trio_sogni.SogniClient,
    model: str,
    messages: list[dict[str, str]],
    *,
    bound: float,
) -> Outcome:
    """Stream one job to its end within ``bound`` seconds (or the test fails): ``("ok", stream)``
    or ``("error", the SogniError it raised)``."""
    with trio.fail_after(bound):
        try:
            async with sogni.chat.completions.stream(model=model, messages=messages) as stream:
                async for _ in stream:
                    pass
        except SogniError as exc:
            return ("error", exc)
    return ("ok", stream)


def check_outcomes(outcomes: list[Outcome], expected: str) -> tuple[Counter[str], Counter[str]]:
    """Every job ended with its full text or a typed error. Returns the count of each kind
    (``ok`` / ``error``) and of each error type."""
    kinds: Counter[str] = Counter()
    error_types: Counter[str] = Counter()
    for kind, value in outcomes:
        kinds[kind] += 1
        if kind == "ok":
            assert value.content == expected
            continue
        assert isinstance(value, SogniError)
        if isinstance(value, ChatJobError):
            assert value.error_type  # typed, never a bare failure
            error_types[value.error_type] += 1
        else:
            error_types[type(value).__name__] += 1
    return kinds, error_types
