"""Arrival schedules for open-loop fan-out runs (``FanoutOptions.schedule``).

A schedule yields the *intended* send time of each request, in seconds from the run's start. The
open-loop dispatcher sends request *i* at ``t_start + offset_i`` whatever the earlier requests
are doing, so queueing delay shows up in the measurements instead of slowing the arrivals down
(no coordinated omission).

Every schedule's first arrival is at offset 0; the offsets are non-decreasing. The random ones
draw from the ``random.Random`` the runner passes (``random.Random(FanoutOptions.seed)``), so a
seed reproduces the exact arrival times. Generation is a few arithmetic operations per arrival
(well over 100,000 offsets per second).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from .. import InvalidRequestError

__all__ = ["ArrivalSchedule", "ConstantRate", "Gamma", "Poisson", "Ramp", "TraceReplay"]


@runtime_checkable
class ArrivalSchedule(Protocol):
    """When an open-loop run sends each request."""

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """Intended send times in seconds from the run's start, non-decreasing. May be infinite
        (the input then bounds the run); a finite schedule ends the run when it is exhausted."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, e.g. ``{"kind": "poisson", "rate": 100.0}``."""
        ...

    @property
    def rate(self) -> float | None:
        """The nominal mean rate in requests per second (``None`` for a trace)."""
        ...


def _check_rate(name: str, value: float, *, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidRequestError(f"{name} must be a number")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InvalidRequestError(f"{name} must be positive and finite, got {value}")


@dataclass(frozen=True)
class ConstantRate:
    """Evenly spaced arrivals: request *k* at ``k / rate`` seconds."""

    rate: float

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """``0, 1/rate, 2/rate, ...`` (``rng`` is unused)."""
        step = 1.0 / self.rate
        return (k * step for k in count())

    def describe(self) -> dict[str, Any]:
        """``{"kind": "constant", "rate": rate}``."""
        return {"kind": "constant", "rate": float(self.rate)}


@dataclass(frozen=True)
class Poisson:
    """A Poisson process: exponential inter-arrival times of mean ``1 / rate``."""

    rate: float

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """``0`` then cumulative sums of ``rng.expovariate(rate)``."""
        rate = self.rate
        expovariate = rng.expovariate
        t = 0.0
        while True:
            yield t
            t += expovariate(rate)

    def describe(self) -> dict[str, Any]:
        """``{"kind": "poisson", "rate": rate}``."""
        return {"kind": "poisson", "rate": float(self.rate)}


@dataclass(frozen=True)
class Gamma:
    """Gamma-distributed inter-arrival times (vLLM's ``--burstiness``): shape ``burstiness``,
    scale ``1 / (rate * burstiness)``, so the mean rate is ``rate`` and the coefficient of
    variation of the gaps is ``1 / sqrt(burstiness)``. ``burstiness`` 1 is `Poisson`; below 1
    burstier, above 1 more regular."""

    rate: float
    burstiness: float = 1.0

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)
        _check_rate("burstiness", self.burstiness)

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """``0`` then cumulative sums of ``rng.gammavariate(burstiness, 1 / (rate * burstiness))``."""
        shape = self.burstiness
        scale = 1.0 / (self.rate * shape)
        gammavariate = rng.gammavariate
        t = 0.0
        while True:
            yield t
            t += gammavariate(shape, scale)

    def describe(self) -> dict[str, Any]:
        """``{"kind": "gamma", "rate": rate, "burstiness": burstiness}``."""
        return {"kind": "gamma", "rate": float(self.rate), "burstiness": float(self.burstiness)}


@dataclass(frozen=True)
class Ramp:
    """A rate that changes linearly from ``start_rate`` to ``end_rate`` over ``duration``
    seconds, then stays at ``end_rate``.

    Arrival *k* is at ``Λ⁻¹(u_k)``, the inverse of the cumulative rate
    ``Λ(t) = ∫₀ᵗ rate(s) ds``, with ``u_k = k`` (deterministic, the default) or, with
    ``poisson=True``, ``u_k`` the points of a unit-rate Poisson process (a non-homogeneous
    Poisson process with the ramp's rate). ``start_rate`` may be 0.
    """

    start_rate: float
    end_rate: float
    duration: float
    poisson: bool = False

    def __post_init__(self) -> None:
        _check_rate("start_rate", self.start_rate, zero_ok=True)
        _check_rate("end_rate", self.end_rate)
        _check_rate("duration", self.duration)
        if not isinstance(self.poisson, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidRequestError("poisson must be a bool")

    @property
    def rate(self) -> float:
        """The mean rate over the ramp, ``(start_rate + end_rate) / 2`` (``end_rate`` after it)."""
        return (self.start_rate + self.end_rate) / 2.0

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """``Λ⁻¹(u_k)`` for ``u_k = 0, 1, 2, ...`` (or unit-rate Poisson points)."""
        start, end, duration = float(self.start_rate), float(self.end_rate), float(self.duration)
        slope = (end - start) / duration  # rate(t) = start + slope * t on [0, duration]
        ramp_total = duration * (start + end) / 2.0  # Λ(duration)
        expovariate = rng.expovariate
        u = 0.0
        k = 0
        while True:
            if u <= 0.0:
                t = 0.0
            elif u <= ramp_total:
                # Solve start·t + slope·t²/2 = u in the cancellation-free form.
                root = math.sqrt(max(0.0, start * start + 2.0 * slope * u))
                t = 2.0 * u / (start + root)
            else:
                t = duration + (u - ramp_total) / end
            yield t
            if self.poisson:
                u += expovariate(1.0)
            else:
                k += 1
                u = float(k)

    def describe(self) -> dict[str, Any]:
        """``{"kind": "ramp", "start_rate", "end_rate", "duration", "poisson"}``."""
        return {
            "kind": "ramp",
            "start_rate": float(self.start_rate),
            "end_rate": float(self.end_rate),
            "duration": float(self.duration),
            "poisson": self.poisson,
        }


@dataclass(frozen=True)
class TraceReplay:
    """Replay recorded arrival times: ``offsets_s`` (seconds from the start, non-negative,
    non-decreasing, at least one). The run ends with the trace (or the input, if shorter)."""

    offsets_s: tuple[float, ...]

    def __post_init__(self) -> None:
        offsets = tuple(self.offsets_s)
        if not offsets:
            raise InvalidRequestError("a trace needs at least one arrival")
        previous = 0.0
        for i, value in enumerate(offsets):
            if isinstance(value, bool) or not isinstance(value, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise InvalidRequestError(f"trace offset {i} is not a number")
            if not math.isfinite(value) or value < 0:
                raise InvalidRequestError(f"trace offset {i} must be finite and >= 0, got {value}")
            if value < previous:
                raise InvalidRequestError(
                    f"trace offsets must be sorted: offset {i} ({value}) < {previous}"
                )
            previous = value
        object.__setattr__(self, "offsets_s", tuple(float(v) for v in offsets))

    @classmethod
    def from_jsonl(
        cls, path: str | Path, field: str = "timestamp", scale: float = 1.0
    ) -> TraceReplay:
        """Read one number per JSON Lines row (``row[field]``, blank lines skipped), multiply it
        by ``scale`` (e.g. 0.001 for milliseconds) and shift the trace so that it starts at 0
        (absolute timestamps are fine).

        Raises:
            InvalidRequestError: a row that is not an object with a numeric ``field``, unsorted
                timestamps, no rows, or a bad ``scale``.
            OSError: the file cannot be read.
        """
        _check_rate("scale", scale)
        values: list[float] = []
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row: Any = json.loads(line)
                except ValueError as exc:
                    raise InvalidRequestError(f"{path}:{number}: not JSON ({exc})") from None
                raw: object = (
                    cast("dict[str, Any]", row).get(field) if isinstance(row, dict) else None
                )
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    raise InvalidRequestError(f"{path}:{number}: no numeric {field!r}")
                value = float(raw) * scale
                if not math.isfinite(value):
                    raise InvalidRequestError(f"{path}:{number}: {field!r} is not finite")
                if values and value < values[-1]:
                    raise InvalidRequestError(
                        f"{path}:{number}: timestamps must be sorted ({value} < {values[-1]})"
                    )
                values.append(value)
        if not values:
            raise InvalidRequestError(f"{path}: no rows")
        first = values[0]
        return cls(tuple(v - first for v in values))

    @property
    def rate(self) -> None:
        """``None``: a trace has no nominal rate."""
        return None

    def offsets(self, rng: random.Random) -> Iterator[float]:
        """The recorded offsets (``rng`` is unused)."""
        return iter(self.offsets_s)

    def describe(self) -> dict[str, Any]:
        """``{"kind": "trace", "count": n, "span": last offset}`` (not the offsets themselves)."""
        return {"kind": "trace", "count": len(self.offsets_s), "span": self.offsets_s[-1]}
