"""A deadline for every Trio test: a hang fails fast, with the blocked tasks' tracebacks.

pytest-trio 0.8 has no timeout of its own, but it runs each Trio test with the function given
as ``run=`` in the test's ``trio`` marker (trio_mode adds that marker to every async test). This
plugin (loaded by tests/conftest.py) puts its own ``trio(run=...)`` marker in front, whose run
function wraps pytest-trio's whole run (async fixture setup, the test, async fixture teardown)
in one cancel scope with a deadline:

- the default is :data:`DEFAULT_SECONDS`; ``@pytest.mark.deadline(seconds)`` overrides it for
  one test (or a module, through ``pytestmark``);
- the deadline counts in the run's clock. Under ``trio.testing.MockClock`` (the
  ``autojump_clock``/``mock_clock`` fixtures) it is *virtual*: with autojump on, a test in which
  every task is blocked forever jumps straight to the deadline and fails at once, and a test
  that legitimately sleeps a long virtual time needs a larger ``deadline``. A MockClock that
  never advances by itself (``mock_clock``: rate 0, autojump off) would never reach a virtual
  deadline, so MockClock runs also get the same number of *wall-clock* seconds as a backstop;
- when the deadline passes, everything in the run is cancelled (fixtures tear down as usual)
  and the test fails with ``trio.TooSlowError`` chained ``from`` the ``Cancelled`` exceptions,
  whose tracebacks show where each task was blocked.

Only pytest-trio's own runs are covered: sync tests (and Hypothesis-driven async tests, which
pytest-trio runs with a plain ``trio.run``) are not. ``faulthandler_timeout`` still dumps every
thread's stack for anything stuck outside Trio.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

DEFAULT_SECONDS = 60.0
"""The deadline of a Trio test without a ``deadline`` marker (fixtures included)."""

Run = Callable[..., Any]


def deadline_seconds(item: pytest.Item) -> float:
    """The deadline for ``item``: its closest ``deadline`` marker, else the default."""
    marker = item.get_closest_marker("deadline")
    if marker is None:
        return DEFAULT_SECONDS
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.deadline(seconds)")
    seconds = float(marker.args[0])
    if not seconds > 0:
        raise pytest.UsageError(f"{item.nodeid}: a deadline must be positive, got {seconds}")
    return seconds


def with_deadline(run: Run, seconds: float) -> Run:
    """Wrap a ``trio.run``-like function so the whole run gets a deadline of ``seconds``."""

    def run_with_deadline(
        async_fn: Callable[..., Awaitable[object]], *args: object, **kwargs: Any
    ) -> object:
        __tracebackhide__ = True
        virtual = isinstance(kwargs.get("clock"), trio.testing.MockClock)
        return run(_guarded, async_fn, args, seconds, virtual, **kwargs)

    return run_with_deadline


async def _guarded(
    async_fn: Callable[..., Awaitable[object]],
    args: tuple[object, ...],
    seconds: float,
    virtual: bool,
) -> object:
    __tracebackhide__ = True
    blocked: BaseException | None = None
    backstop_fired = False
    with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:

        def backstop() -> None:
            nonlocal backstop_fired
            backstop_fired = True
            scope.cancel()

        timer: threading.Timer | None = None
        if virtual:
            token = trio.lowlevel.current_trio_token()

            def expire() -> None:
                try:
                    token.run_sync_soon(backstop)
                except trio.RunFinishedError:
                    pass

            timer = threading.Timer(seconds, expire)
            timer.daemon = True
            timer.start()
        try:
            return await async_fn(*args)
        except BaseException as exc:
            blocked = exc
            raise
        finally:
            if timer is not None:
                timer.cancel()
    # Only reached when the scope swallowed the cancellation: the deadline passed.
    if backstop_fired:
        what = f"{seconds:g} wall-clock seconds (the backstop of a MockClock run)"
    elif virtual:
        what = f"{seconds:g} virtual seconds (MockClock)"
    else:
        what = f"{seconds:g} seconds"
    raise trio.TooSlowError(
        f"the test did not finish within its deadline of {what}, fixtures included; "
        "the tracebacks above show where its tasks were blocked. "
        "A test that needs longer: @pytest.mark.deadline(seconds)."
    ) from blocked


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After pytest-trio's trio_mode has marked the async tests: give each a deadline."""
    for item in items:
        trio_marker = item.get_closest_marker("trio")
        if trio_marker is None:
            continue
        run: Run = trio_marker.kwargs.get("run") or trio.run
        item.add_marker(pytest.mark.trio(run=with_deadline(run, deadline_seconds(item))), False)
