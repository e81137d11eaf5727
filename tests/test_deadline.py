"""The per-test deadline (tests/deadline.py), proved on a generated test module run by pytest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent

HANGING = """
import pytest
import trio


@pytest.mark.deadline(0.5)
async def test_body_hangs():
    await trio.sleep_forever()


@pytest.fixture
async def stuck_setup():
    await trio.sleep_forever()
    yield


@pytest.mark.deadline(0.5)
async def test_fixture_setup_hangs(stuck_setup):
    pass


@pytest.fixture
async def stuck_teardown():
    yield
    await trio.sleep_forever()


@pytest.mark.deadline(0.5)
async def test_fixture_teardown_hangs(stuck_teardown):
    pass


async def test_virtual_hang_fails_at_once(autojump_clock):
    await trio.sleep_forever()


async def test_virtual_sleep_within_default(autojump_clock):
    await trio.sleep(59)


@pytest.mark.deadline(3600)
async def test_virtual_long_sleep_with_marker(autojump_clock):
    await trio.sleep(3000)


@pytest.mark.deadline(1)
async def test_frozen_mock_clock_hits_the_backstop(mock_clock):
    await trio.sleep_forever()


async def test_quick_one_passes():
    await trio.sleep(0)


def test_sync_tests_are_untouched():
    pass
"""


def test_a_hanging_test_fails_by_its_deadline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # untruncated short summary lines
    pytester.makeini(
        "[pytest]\n"
        "trio_mode = true\n"
        f"pythonpath = {TESTS}\n"
        "addopts = --strict-markers\n"
        "markers =\n"
        "    deadline(seconds): per-test deadline\n"
    )
    pytester.makeconftest(
        "from deadline import pytest_collection_modifyitems as pytest_collection_modifyitems\n"
    )
    pytester.makepyfile(test_hanging=HANGING)
    started = time.monotonic()
    # Without a working deadline the generated tests hang; then this timeout fails this test.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rf", timeout=120)
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=4, failed=5)
    for name in (
        "test_body_hangs",
        "test_fixture_setup_hangs",
        "test_fixture_teardown_hangs",
        "test_virtual_hang_fails_at_once",
        "test_frozen_mock_clock_hits_the_backstop",
    ):
        result.stdout.fnmatch_lines([f"FAILED test_hanging.py::{name} - trio.TooSlowError: *"])
    result.stdout.fnmatch_lines(
        [
            "*deadline of 0.5 seconds, fixtures included*",
            "*deadline of 60 virtual seconds (MockClock)*",
            "*deadline of 1 wall-clock seconds (the backstop of a MockClock run)*",
        ]
    )
    # The traceback shows where the test was blocked.
    result.stdout.fnmatch_lines(["*await trio.sleep_forever()*", "*Cancelled*"])
    # The default deadline is virtual under autojump: 60 s of it cost no wall-clock time.
    assert elapsed < 45, elapsed
