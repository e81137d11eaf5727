"""The compact per-row bookkeeping behind resumable runs of millions of rows."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, strategies as st

from trio_sogni.fanout._indexset import IndexSet, KeyPrefixes


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5000)), max_size=300))
def test_index_set_behaves_like_a_set(operations: list[tuple[bool, int]]) -> None:
    compact, model = IndexSet(), set[int]()
    for add, value in operations:
        if add:
            compact.add(value)
            model.add(value)
        else:
            compact.discard(value)
            model.discard(value)
        assert len(compact) == len(model)
    assert list(compact) == sorted(model)
    assert all(v in compact for v in model)
    assert -1 not in compact
    assert "3" not in compact
    other = IndexSet([1, 2, 3])
    assert set(compact | other) == model | {1, 2, 3}
    assert set(compact - other) == model - {1, 2, 3}
    assert isinstance(compact - other, IndexSet)


def test_index_set_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        IndexSet().add(-1)


def test_a_million_rows_take_kilobytes_not_megabytes() -> None:
    tracemalloc.start()
    try:
        done = IndexSet(range(0, 1_000_000, 2))
        prefixes = KeyPrefixes()
        for index in range(0, 1_000_000, 1000):
            prefixes.set(index, index * 7919)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(done) == 500_000
    assert used < 9 * 1_000_000  # 1 bit + 8 bytes per row, far from a set's ~60 bytes
    assert prefixes.get(999_000) == 999_000 * 7919
    assert prefixes.get(1) is None
    prefixes.set(5, 0)
    assert prefixes.get(5) == 1  # 0 means "none": stored as 1, documented
