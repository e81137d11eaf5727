"""What a benchmark sends: a JSON Lines file of requests (the ``trio-sogni batch`` format), or
synthetic prompts whose input and output lengths follow a distribution.

Both are *indexable*: `Workload.item` gives request ``i`` for any ``i ≥ 0`` without producing the
ones before it, so a shard or a worker process builds exactly its own share of a run (request
``i`` is the same in every process) and nothing is held per request.

Synthetic prompts are deterministic in ``(seed, i)`` and distinct (each starts with a tag naming
its seed and index), so neither single-flight dedup nor a cache collapses them. Their input
length is measured as the server measures it (`trio_sogni.estimate_input_tokens`: the compact
JSON of the messages in UTF-16 code units, divided by 4, rounded up), or with a caller-supplied
tokenizer (``count_tokens``) for exact lengths on a real model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import msgspec
from typing_extensions import override

from .. import InvalidRequestError
from ..fanout import FanoutItem

__all__ = [
    "MAX_SYNTHETIC_TOKENS",
    "FileWorkload",
    "LengthDistribution",
    "SyntheticWorkload",
    "Workload",
]

MAX_SYNTHETIC_TOKENS: Final = 1_000_000
"""The largest length a distribution may ask for (a prompt of about 4 MB of text)."""

_VOCABULARY: Final = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "river",
    "stone",
    "cloud",
    "meadow",
    "lantern",
    "copper",
    "harbor",
    "violet",
    "ember",
    "glacier",
    "orchard",
    "canyon",
    "falcon",
    "willow",
    "thunder",
    "marble",
    "prairie",
    "saffron",
    "tundra",
    "velvet",
    "quartz",
    "summit",
)


@dataclass(frozen=True)
class LengthDistribution:
    """A distribution of token counts, parsed from ``fixed:N``, ``uniform:A:B`` (integers from A
    to B inclusive) or ``normal:MEAN:SD`` (rounded to the nearest integer). Every sample is at
    least 1 (a normal sample below 1 is clamped to 1) and at most `MAX_SYNTHETIC_TOKENS`.

    Attributes:
        kind: ``fixed``, ``uniform`` or ``normal``.
        a: N, A or MEAN.
        b: unused (``fixed``), B or SD.
    """

    kind: Literal["fixed", "uniform", "normal"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> LengthDistribution:
        """Parse ``fixed:N``, ``uniform:A:B`` or ``normal:MEAN:SD``.

        Raises:
            InvalidRequestError: an unknown kind, a wrong number of fields, a non-number, a
                length below 1 or above `MAX_SYNTHETIC_TOKENS`, ``A > B``, or a negative SD.
        """
        kind, _, rest = spec.strip().partition(":")
        fields = rest.split(":") if rest else []
        expected = {"fixed": 1, "uniform": 2, "normal": 2}.get(kind)
        if expected is None:
            raise InvalidRequestError(
                f"length distribution {spec!r}: expected fixed:N, uniform:A:B or normal:MEAN:SD"
            )
        if len(fields) != expected:
            shape = {"fixed": "fixed:N", "uniform": "uniform:A:B", "normal": "normal:MEAN:SD"}
            raise InvalidRequestError(f"length distribution {spec!r}: expected {shape[kind]}")
        try:
            numbers = [float(f) for f in fields]
        except ValueError:
            raise InvalidRequestError(f"length distribution {spec!r}: not a number") from None
        if not all(math.isfinite(n) for n in numbers):
            raise InvalidRequestError(f"length distribution {spec!r}: not a finite number")
        if kind == "normal":
            mean, sd = numbers
            if sd < 0:
                raise InvalidRequestError(f"length distribution {spec!r}: SD must not be negative")
            cls._check_length(spec, mean)
            return cls("normal", mean, sd)
        if any(n != int(n) for n in numbers):
            raise InvalidRequestError(f"length distribution {spec!r}: lengths are whole tokens")
        for n in numbers:
            cls._check_length(spec, n)
        if kind == "fixed":
            return cls("fixed", numbers[0])
        low, high = numbers
        if low > high:
            raise InvalidRequestError(f"length distribution {spec!r}: A must not exceed B")
        return cls("uniform", low, high)

    @staticmethod
    def _check_length(spec: str, n: float) -> None:
        if not 1 <= n <= MAX_SYNTHETIC_TOKENS:
            raise InvalidRequestError(
                f"length distribution {spec!r}: lengths must be from 1 to {MAX_SYNTHETIC_TOKENS}"
            )

    def sample(self, rng: random.Random) -> int:
        """One length drawn with ``rng`` (exactly one ``rng`` call for ``uniform`` and
        ``normal``, none for ``fixed``)."""
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        value = round(rng.gauss(self.a, self.b))
        return min(MAX_SYNTHETIC_TOKENS, max(1, value))

    @property
    def mean(self) -> float:
        """The distribution's mean before clamping."""
        return self.a if self.kind != "uniform" else (self.a + self.b) / 2

    @override
    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if x == int(x) else repr(x)

        if self.kind == "fixed":
            return f"fixed:{num(self.a)}"
        return f"{self.kind}:{num(self.a)}:{num(self.b)}"


class Workload(Protocol):
    """An indexable source of benchmark requests."""

    @property
    def description(self) -> str:
        """One line saying what the requests are (it goes into the report)."""
        ...

    def item(self, index: int) -> FanoutItem:
        """Request ``index`` (``index ≥ 0``), with ``FanoutItem.index == index``."""
        ...


class SyntheticWorkload:
    """Synthetic chat requests: one user message of ``input_tokens`` tokens (sampled) and
    ``max_tokens`` of ``output_tokens`` (sampled), for ``model``.

    Request ``i`` depends only on ``(seed, i)``: its lengths and words come from a
    ``random.Random`` seeded with ``f"{seed}:{i}"``. The text starts with ``"[bench S-I]"`` (seed
    and index) and continues with words of a fixed vocabulary, so requests are distinct. Its
    length is chosen so that the request's input tokens (``count_tokens`` of the messages, by
    default `trio_sogni.estimate_input_tokens`) equal the sampled length, or as near as the
    counter allows: a length below the tag's own size (about 12 tokens with the estimate) is
    raised to it.
    """

    def __init__(
        self,
        *,
        model: str,
        input_tokens: LengthDistribution,
        output_tokens: LengthDistribution,
        seed: int = 0,
        count_tokens: Callable[[Sequence[dict[str, str]]], int] | None = None,
    ) -> None:
        if not model.strip():
            raise InvalidRequestError("model must not be empty")
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seed = seed
        self._count = count_tokens

    @property
    def description(self) -> str:
        """``synthetic input=<dist> output=<dist> seed=<seed>``."""
        return f"synthetic input={self.input_tokens} output={self.output_tokens} seed={self.seed}"

    def item(self, index: int) -> FanoutItem:
        """Request ``index``: deterministic in ``(seed, index)``.

        Raises:
            ValueError: ``index`` is negative.
        """
        if index < 0:
            raise ValueError("index must not be negative")
        rng = random.Random(f"{self.seed}:{index}")
        want_in = self.input_tokens.sample(rng)
        want_out = self.output_tokens.sample(rng)
        text = self._text(rng, f"[bench {self.seed}-{index}]", want_in)
        return FanoutItem(
            index=index,
            id=str(index),
            model=self.model,
            messages=[{"role": "user", "content": text}],
            params={"max_tokens": want_out},
        )

    def _text(self, rng: random.Random, tag: str, tokens: int) -> str:
        if self._count is None:
            # The estimate is ceil(chars / 4) over the messages' compact JSON; the text is
            # ASCII without characters JSON escapes, so its length maps to tokens exactly.
            overhead = len('[{"role":"user","content":""}]')
            chars = max(len(tag), 4 * tokens - overhead)
            return self._words(rng, tag, chars)
        return self._fit(rng, tag, tokens, self._count)

    @staticmethod
    def _fit(
        rng: random.Random,
        tag: str,
        tokens: int,
        count: Callable[[Sequence[dict[str, str]]], int],
    ) -> str:
        """The longest prefix of a word sequence whose count does not exceed ``tokens`` (at least
        the tag), found by bisection over a text grown (doubling) until its count exceeds it."""
        words = [tag]
        chars = len(tag)
        goal = 4 * tokens + 16

        def counted(n: int) -> int:
            return count([{"role": "user", "content": " ".join(words[:n])}])

        while True:
            while chars < goal:
                word = rng.choice(_VOCABULARY)
                words.append(word)
                chars += len(word) + 1
            if counted(len(words)) > tokens or goal > 64 * (MAX_SYNTHETIC_TOKENS + 16):
                break
            goal *= 2
        low, high = 1, len(words)  # words[:low] fits, or is the tag alone
        while low < high:
            mid = (low + high + 1) // 2
            if counted(mid) <= tokens:
                low = mid
            else:
                high = mid - 1
        return " ".join(words[:low])

    @staticmethod
    def _words(rng: random.Random, tag: str, chars: int) -> str:
        parts = [tag]
        length = len(tag)
        while length < chars:
            word = rng.choice(_VOCABULARY)
            parts.append(word)
            length += len(word) + 1
        text = " ".join(parts)
        return text[:chars]


class FileWorkload:
    """Requests from a JSON Lines file in the ``trio-sogni batch`` format (`FanoutItem.from_row`;
    blank lines skipped). The rows are read and validated once, then kept in memory (the file's
    size, so a benchmark file should be a sample, not a corpus). Request ``i`` is row
    ``i mod rows``: a run longer than the file cycles through it, and the cycle number is
    appended to the id (``"<id>#<cycle>"``) from the second cycle on. Identical rows stay
    identical: the benchmark runner turns dedup and the cache off.

    Raises:
        InvalidRequestError: the file cannot be read, has no rows, or a row is invalid (the
            message names the line).
    """

    def __init__(self, path: str | Path, *, default_model: str | None = None) -> None:
        self.path = Path(path)
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError as exc:
            raise InvalidRequestError(f"{self.path}: {exc.strerror or exc}") from None
        rows: list[FanoutItem] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise InvalidRequestError(f"{self.path}:{number}: not JSON ({exc})") from None
            try:
                rows.append(FanoutItem.from_row(len(rows), row, default_model))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"{self.path}:{number}: {exc}") from None
        if not rows:
            raise InvalidRequestError(f"{self.path}: no requests")
        self.rows: Sequence[FanoutItem] = rows

    @property
    def description(self) -> str:
        """``file <path> (<n> rows)``."""
        return f"file {self.path} ({len(self.rows)} rows)"

    def item(self, index: int) -> FanoutItem:
        """Row ``index mod rows``, re-indexed as ``index``.

        Raises:
            ValueError: ``index`` is negative.
        """
        if index < 0:
            raise ValueError("index must not be negative")
        cycle, at = divmod(index, len(self.rows))
        row = self.rows[at]
        item_id = row.id if not cycle else f"{row.id}#{cycle}"
        return FanoutItem(
            index=index, id=item_id, model=row.model, messages=row.messages, params=row.params
        )
