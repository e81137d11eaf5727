"""What a benchmark sends: a JSON Lines file of requests (the ``trio-sogni batch`` format), or
synthetic prompts whose input and output lengths follow a distribution.

Both are *indexable*: `Workload.item` gives request ``i`` for any ``i ≥ 0`` without producing the
ones before it, so a shard or a worker process builds exactly its own share of a run (request
``i`` is the same in every process) and nothing is held per request.

Synthetic prompts are deterministic in ``(seed, i)`` and distinct (each starts with a tag naming
its seed and index), so neither single-flight dedup nor a cache collapses them. Their input
length is measured as the server estimates it (`trio_sogni.estimate_input_tokens`: the compact
JSON of the messages in UTF-16 code units, divided by 4, rounded up), or with a caller-supplied
counter (`TokenCounter`, e.g. the model's tokenizer) for exact lengths on a real model.
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
    "TokenCounter",
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


TokenCounter = Callable[[Sequence[dict[str, str]]], int]
"""Counts the input tokens of a request's messages (e.g. with the model's tokenizer, chat
template included); a synthetic prompt is fitted to it."""

_CALIBRATION_TAG: Final = "[bench 0-0]"
_PAD_LETTERS: Final = tuple("abcdefghijklmnopqrstuvwxyz")


class SyntheticWorkload:
    """Synthetic chat requests: one user message of ``input_tokens`` tokens (sampled) and
    ``max_tokens`` of ``output_tokens`` (sampled), for ``model``.

    Request ``i`` depends only on ``(seed, i)`` (and the counter): its lengths and words come
    from a ``random.Random`` seeded with ``f"{seed}:{i}"``. The text starts with
    ``"[bench S-I]"`` (seed and index) and continues with words of a fixed vocabulary, so
    requests are distinct.

    Its length is chosen so that the request's input tokens equal the sampled length:

    * by default, as `trio_sogni.estimate_input_tokens` counts them (exact by construction; a
      length below the tag's own size, about 12 tokens, is raised to it);
    * with ``count_tokens`` (a `TokenCounter`, e.g. the model's tokenizer applied to the
      chat-templated prompt), as that counter counts them. When the workload is made, the
      counter measures what each vocabulary word and each single letter adds after a tag (75
      calls). A request's text is then the tag, vocabulary words whose measured costs fit the
      length, and single letters for the rest: two calls (the tag, the whole), when the
      counter is additive over words, as a tokenizer that splits at spaces is. When the whole
      does not count the length, a search over prefixes of the word sequence (interpolation,
      then bisection) followed by single letters added while they keep the count at or below
      the length is used (a few more calls). The count equals the length when these words
      and letters can make it (with a tokenizer that splits at spaces, or a counter of
      characters, they can); otherwise it is the largest count below it that the search
      found. A length below the count of the tag alone (with a chat template: the template's
      own tokens too) is raised to it. Requests are made while the run is under way, so the
      counter should be fast.
    """

    def __init__(
        self,
        *,
        model: str,
        input_tokens: LengthDistribution,
        output_tokens: LengthDistribution,
        seed: int = 0,
        count_tokens: TokenCounter | None = None,
    ) -> None:
        if not model.strip():
            raise InvalidRequestError("model must not be empty")
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.seed = seed
        self._count = count_tokens
        self._per_word = 1.0
        self._bare = 0
        self._costs: dict[str, int] = {}
        if count_tokens is not None:
            # What each word adds after the tag (exact for a tokenizer that splits at spaces).
            bare = count_tokens(_messages(_CALIBRATION_TAG))
            for word in (*_VOCABULARY, *_PAD_LETTERS):
                added = count_tokens(_messages(f"{_CALIBRATION_TAG} {word}")) - bare
                self._costs[word] = added
            vocabulary = [self._costs[w] for w in _VOCABULARY]
            self._bare = bare
            self._per_word = max(0.05, sum(vocabulary) / len(vocabulary))

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
            messages=_messages(text),
            params={"max_tokens": want_out},
        )

    def _text(self, rng: random.Random, tag: str, tokens: int) -> str:
        if self._count is None:
            # The estimate is ceil(chars / 4) over the messages' compact JSON; the text is
            # ASCII without characters JSON escapes, so its length maps to tokens exactly.
            overhead = len('[{"role":"user","content":""}]')
            chars = max(len(tag), 4 * tokens - overhead)
            return self._words(rng, tag, chars)
        count = self._count
        base = count(_messages(tag))
        if base >= tokens:
            return tag
        text = self._additive(rng, tag, tokens - base)
        if count(_messages(text)) == tokens:
            return text
        text, counted = self._fit(_WordStream(rng, tag), tokens, count)
        return self._pad(text, counted, tokens, count)

    def _additive(self, rng: random.Random, tag: str, tokens: int) -> str:
        """The tag and words whose calibrated costs add up to ``tokens``: words drawn from the
        vocabulary while they fit, then single letters costing one token each (the caller
        checks the whole count; a counter that is not additive gets the search instead)."""
        parts = [tag]
        ones = [w for w in _PAD_LETTERS if self._costs[w] == 1]
        for _ in range(4 * tokens + 16):
            if tokens <= 0:
                break
            word = rng.choice(_VOCABULARY)
            cost = self._costs[word]
            if 0 < cost <= tokens:
                parts.append(word)
                tokens -= cost
            elif cost > tokens and ones:
                parts.append(ones[tokens % len(ones)])
                tokens -= 1
        return " ".join(parts)

    def _fit(self, words: _WordStream, tokens: int, count: TokenCounter) -> tuple[str, int]:
        """``(text, its count)``: a prefix of ``words`` (at least the tag) counting ``tokens``,
        else the longest one the search saw that counts fewer (or the tag alone when even that
        counts more). The search interpolates with the calibrated tokens per word, and bisects
        after a few steps; it stops growing at ``4 * tokens + 16`` words."""
        cap = 4 * tokens + 16

        def counted(n: int) -> int:
            return count(_messages(words.text(n)))

        low, low_count = 1, -1  # words[:low] counts low_count <= tokens (-1: not counted yet)
        high, high_count = 0, 0  # words[:high] counts more than tokens (0: none seen yet)
        n = min(cap, 1 + max(0, math.ceil((tokens - self._bare) / self._per_word)))
        for step in range(64):
            got = counted(n)
            if got == tokens:
                return words.text(n), got
            if got < tokens:
                low, low_count = n, got
            else:
                high, high_count = n, got
            if high and high - low <= 1:
                break
            if not high:
                if low >= cap:
                    break
                rate = self._per_word
                n = min(cap, low + max(1, math.ceil((tokens - low_count) / rate)))
            elif low_count >= 0 and step < 4 and high_count > low_count:
                share = (tokens - low_count) / (high_count - low_count)
                n = min(high - 1, max(low + 1, low + round(share * (high - low))))
            else:
                n = (low + high) // 2
        if low_count < 0:
            low_count = counted(low)
        return words.text(low), low_count

    @staticmethod
    def _pad(text: str, counted: int, tokens: int, count: TokenCounter) -> str:
        """``text`` with single-letter words appended while one keeps the count at or below
        ``tokens``, until it gets there (at most ``4 * (tokens - counted) + 8`` letters; a
        letter that adds nothing is kept, as a counter of characters needs several)."""
        for _ in range(4 * max(0, tokens - counted) + 8):
            if counted >= tokens:
                break
            for letter in _PAD_LETTERS:
                candidate = f"{text} {letter}"
                got = count(_messages(candidate))
                if counted <= got <= tokens:
                    text, counted = candidate, got
                    break
            else:
                break
        return text

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
    """Requests from a JSON Lines file in the ``trio-sogni batch`` format
    (`trio_sogni.fanout.FanoutItem.from_row`; blank lines skipped). The rows are read and
    validated once, then kept in memory (the file's size, so a benchmark file should be a
    sample, not a corpus). Request ``i`` is row
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


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class _WordStream:
    """The tag followed by words drawn from ``rng`` on demand (so a prefix never changes)."""

    def __init__(self, rng: random.Random, tag: str) -> None:
        self._rng = rng
        self._words = [tag]

    def text(self, n: int) -> str:
        """The first ``n`` words (``n >= 1``: the tag and ``n - 1`` words) joined by spaces."""
        while len(self._words) < n:
            self._words.append(self._rng.choice(_VOCABULARY))
        return " ".join(self._words[:n])
