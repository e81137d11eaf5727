"""One way to turn a nursery's exception group into what a caller should see.

Every place in the package that opens a nursery on behalf of a caller (the client, the socket
transport, the tool runner, the batch command, localnet) re-raises through `unwrap_group`, so
they all agree: a group with a single real exception in it comes out as that exception, with its
own traceback, ``__cause__`` and ``__context__`` untouched (after trio-websocket's ``_raise``); a
``KeyboardInterrupt`` anywhere inside comes out as itself; anything else stays a group.

Standard library only: the I/O layers of localnet import it too.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import NoReturn, cast

__all__ = ["collapse", "reraise", "unwrap_group"]


def _leaves(exc: BaseException) -> list[BaseException]:
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            inner = cast("BaseExceptionGroup[BaseException]", item).exceptions
            pending.extend(reversed(inner))
        else:
            leaves.append(item)
    return leaves


def _is_cancelled(exc: BaseException) -> bool:
    # trio.Cancelled, recognised by name so this module needs no Trio import.
    kind = type(exc)
    return kind.__name__ == "Cancelled" and kind.__module__.startswith("trio")


def collapse(exc: BaseException) -> BaseException:
    """What ``exc`` should be raised as.

    A non-group is itself. For a group (however nested): the first ``KeyboardInterrupt`` in it;
    else its only leaf; else its only leaf that is not a ``trio.Cancelled``; else the group.
    """
    leaves = _leaves(exc)  # a non-group is its own only leaf
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt):
            return leaf
    if len(leaves) == 1:
        return leaves[0]
    real = [leaf for leaf in leaves if not _is_cancelled(leaf)]
    if len(real) == 1:
        return real[0]
    return exc


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` from inside an ``except`` block without chaining the handled exception to it.

    ``raise exc`` there would set ``exc.__context__`` to the exception being handled (the group),
    and ``raise exc from None`` would erase the ``__cause__`` that ``exc`` already carries. This
    restores ``__context__`` to what ``exc`` had, so the traceback reads as if ``exc`` had never
    been wrapped.
    """
    __tracebackhide__ = True
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@contextmanager
def unwrap_group() -> Generator[None]:
    """Re-raise a ``BaseExceptionGroup`` escaping the block as `collapse` says (see the module
    docstring). Exceptions that are not groups pass through untouched."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = collapse(group)
        if leaf is group:
            raise
        reraise(leaf)
