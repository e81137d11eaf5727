"""Benchmark workloads: synthetic length distributions follow their spec (with a seed), prompts
are distinct and exactly as long as asked under the estimate formula, files cycle."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import pytest

from trio_sogni import InvalidRequestError, estimate_input_tokens
from trio_sogni.bench._workload import (
    MAX_SYNTHETIC_TOKENS,
    FileWorkload,
    LengthDistribution,
    SyntheticWorkload,
    TokenCounter,
)
from trio_sogni.fanout import content_key


def synthetic(inputs: str, outputs: str, seed: int = 7) -> SyntheticWorkload:
    return SyntheticWorkload(
        model="m",
        input_tokens=LengthDistribution.parse(inputs),
        output_tokens=LengthDistribution.parse(outputs),
        seed=seed,
    )


def lengths(workload: SyntheticWorkload, n: int) -> tuple[list[int], list[int]]:
    items = [workload.item(i) for i in range(n)]
    return (
        [estimate_input_tokens(item.messages) for item in items],
        [item.params["max_tokens"] for item in items],
    )


def test_fixed_lengths_are_exact() -> None:
    inputs, outputs = lengths(synthetic("fixed:300", "fixed:17"), 50)
    assert set(inputs) == {300}
    assert set(outputs) == {17}


def test_uniform_lengths_cover_the_range_and_stay_inside_it() -> None:
    inputs, outputs = lengths(synthetic("uniform:50:150", "uniform:1:4"), 2000)
    assert min(inputs) >= 50
    assert max(inputs) <= 150
    assert abs(statistics.fmean(inputs) - 100) < 3  # sd of the mean ≈ 0.65
    assert set(outputs) == {1, 2, 3, 4}


def test_normal_lengths_have_the_mean_and_sd_and_are_clamped_to_one() -> None:
    _, outputs = lengths(synthetic("fixed:20", "normal:200:30"), 3000)
    assert abs(statistics.fmean(outputs) - 200) < 3
    assert abs(statistics.stdev(outputs) - 30) < 3
    _, clamped = lengths(synthetic("fixed:20", "normal:2:5"), 500)
    assert min(clamped) == 1
    assert clamped.count(1) > 100  # P(N(2, 5) < 1.5) ≈ 0.46


def test_short_inputs_are_raised_to_the_unique_tag() -> None:
    inputs, _ = lengths(synthetic("fixed:1", "fixed:1"), 20)
    assert all(9 <= n <= 14 for n in inputs), inputs


def test_the_same_seed_gives_the_same_requests_and_another_seed_others() -> None:
    a = [synthetic("uniform:10:500", "normal:50:10", seed=3).item(i) for i in range(30)]
    b = [synthetic("uniform:10:500", "normal:50:10", seed=3).item(i) for i in range(30)]
    c = [synthetic("uniform:10:500", "normal:50:10", seed=4).item(i) for i in range(30)]
    assert a == b
    assert [x.messages for x in a] != [x.messages for x in c]


def test_requests_are_distinct_and_independent_of_order() -> None:
    workload = synthetic("fixed:40", "fixed:8")
    keys = {content_key(workload.item(i)) for i in range(1000)}
    assert len(keys) == 1000
    assert workload.item(731) == synthetic("fixed:40", "fixed:8").item(731)
    assert workload.item(5).index == 5
    with pytest.raises(ValueError, match="negative"):
        workload.item(-1)


def test_a_tokenizer_fits_the_length_exactly() -> None:
    def words(messages: object) -> int:
        assert isinstance(messages, list)
        return sum(len(m["content"].split()) for m in messages)

    workload = SyntheticWorkload(
        model="m",
        input_tokens=LengthDistribution.parse("uniform:5:400"),
        output_tokens=LengthDistribution.parse("fixed:3"),
        count_tokens=words,
    )
    for i in range(40):
        item = workload.item(i)
        want = LengthDistribution.parse("uniform:5:400").sample(random.Random(f"0:{i}"))
        assert words(item.messages) == want, i


def template_tokenizer(messages: Sequence[dict[str, str]]) -> int:
    """A fake tokenizer shaped like a real one behind a chat template: 23 tokens of template
    around each message, the tag's pieces, and one token per 4 letters of each word."""
    return sum(23 + sum(math.ceil(len(w) / 4) for w in m["content"].split()) for m in messages)


class Counting:
    """Wraps a counter and counts its calls."""

    def __init__(self, count: TokenCounter) -> None:
        self.count = count
        self.calls = 0

    def __call__(self, messages: Sequence[dict[str, str]]) -> int:
        self.calls += 1
        return self.count(messages)


def fitted(spec: str, counter: TokenCounter, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``(counted, asked)`` for the first ``n`` requests of a workload fitted to ``counter``."""
    workload = SyntheticWorkload(
        model="m",
        input_tokens=LengthDistribution.parse(spec),
        output_tokens=LengthDistribution.parse("fixed:3"),
        seed=seed,
        count_tokens=counter,
    )
    dist = LengthDistribution.parse(spec)
    return [
        (counter(workload.item(i).messages), dist.sample(random.Random(f"{seed}:{i}")))
        for i in range(n)
    ]


def test_an_additive_tokenizer_gets_exact_lengths_with_two_calls_per_request() -> None:
    counter = Counting(template_tokenizer)
    workload = SyntheticWorkload(
        model="m",
        input_tokens=LengthDistribution.parse("uniform:30:900"),
        output_tokens=LengthDistribution.parse("fixed:3"),
        count_tokens=counter,
    )
    calibration = counter.calls
    items = [workload.item(i) for i in range(100)]
    assert counter.calls - calibration == 2 * 100
    dist = LengthDistribution.parse("uniform:30:900")
    for i, item in enumerate(items):
        assert template_tokenizer(item.messages) == dist.sample(random.Random(f"0:{i}")), i


def test_a_counter_that_is_not_additive_still_gets_exact_lengths() -> None:
    # ceil(characters / 3) of the whole text: a word's cost depends on where it falls
    def by_characters(messages: Sequence[dict[str, str]]) -> int:
        return 11 + math.ceil(sum(len(m["content"]) for m in messages) / 3)

    pairs = fitted("uniform:20:700", by_characters, 80, seed=2)
    assert all(counted == asked for counted, asked in pairs), pairs


def test_an_unreachable_length_gets_the_nearest_count_below() -> None:
    # every word costs 2 tokens and the template 5 plus the tag's 2: only odd counts exist
    def two_per_word(messages: Sequence[dict[str, str]]) -> int:
        return sum(5 + 2 * len(m["content"].split()) for m in messages)

    pairs = fitted("uniform:8:300", two_per_word, 60)
    assert all(counted == asked - (asked % 2 == 0) for counted, asked in pairs), pairs


def test_a_length_below_the_template_and_tag_is_raised_to_them() -> None:
    pairs = fitted("uniform:1:20", template_tokenizer, 10)
    # the template's 23 tokens and the tag's pieces ("[bench": 2, "0-i]": 1)
    assert all(counted == 26 for counted, _ in pairs), pairs


def test_fitted_requests_depend_only_on_seed_and_index() -> None:
    def make() -> SyntheticWorkload:
        return SyntheticWorkload(
            model="m",
            input_tokens=LengthDistribution.parse("normal:200:80"),
            output_tokens=LengthDistribution.parse("fixed:3"),
            seed=9,
            count_tokens=template_tokenizer,
        )

    forward = [make().item(i) for i in range(20)]
    backward = make()
    assert [backward.item(i) for i in reversed(range(20))] == forward[::-1]
    assert len({content_key(item) for item in forward}) == 20


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("poisson:3", "expected fixed:N, uniform:A:B or normal:MEAN:SD"),
        ("fixed", "expected fixed:N"),
        ("uniform:1", "expected uniform:A:B"),
        ("normal:1:2:3", "expected normal:MEAN:SD"),
        ("fixed:zero", "not a number"),
        ("fixed:inf", "not a finite number"),
        ("fixed:0", "from 1 to"),
        (f"fixed:{MAX_SYNTHETIC_TOKENS + 1}", "from 1 to"),
        ("uniform:9:3", "A must not exceed B"),
        ("normal:100:-1", "SD must not be negative"),
        ("fixed:2.5", "whole tokens"),
    ],
)
def test_bad_distributions_are_refused_with_a_message(spec: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        LengthDistribution.parse(spec)


def test_distributions_print_as_their_spec() -> None:
    for spec in ("fixed:8", "uniform:1:9", "normal:100:12.5"):
        assert str(LengthDistribution.parse(spec)) == spec
    assert LengthDistribution.parse("uniform:2:4").mean == 3
    assert "seed=7" in synthetic("fixed:8", "fixed:8").description


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))


def test_a_file_workload_cycles_with_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write_rows(
        path,
        [
            {"id": "a", "messages": [{"role": "user", "content": "one"}], "max_tokens": 5},
            {"messages": [{"role": "user", "content": "two"}], "model": "other"},
        ],
    )
    workload = FileWorkload(path, default_model="m")
    assert [workload.item(i).id for i in range(5)] == ["a", "1", "a#1", "1#1", "a#2"]
    assert workload.item(3).index == 3
    assert workload.item(3).model == "other"
    assert workload.item(2).params == {"max_tokens": 5}
    assert "2 rows" in workload.description


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no requests"),
        ("{not json\n", r"in.jsonl:1: not JSON"),
        ('\n{"messages": []}\n', r"in.jsonl:2: .*messages must be a non-empty list"),
        ('{"messages": [{"role": "user", "content": "x"}], "bogus": 1}\n', "unknown keys"),
    ],
)
def test_a_bad_file_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    with pytest.raises(InvalidRequestError, match=message):
        FileWorkload(path, default_model="m")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="No such file"):
        FileWorkload(tmp_path / "absent.jsonl")
