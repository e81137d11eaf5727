"""One typed REST call for the Chat API's REST half: send, map the error body, decode the answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from ._errors import APIStatusError, ChatJobError, ProtocolError, as_chat_error
from ._groups import reraise
from ._transport import RestClient

__all__ = ["typed_call"]

T = TypeVar("T")


async def typed_call(
    rest: RestClient,
    method: str,
    path: str,
    result_type: type[T],
    *,
    what: str,
    base: str = "rest",
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    map_error: Callable[[APIStatusError], APIStatusError | ChatJobError] = as_chat_error,
) -> T:
    """Send one request and convert its JSON answer to ``result_type``.

    Raises:
        ChatJobError / APIStatusError: a non-2xx answer, mapped by ``map_error`` (by default a
            recognised chat-error body becomes `ChatJobError`).
        ProtocolError: a 2xx answer that is not a ``result_type`` (``what`` names it).
        ConnectError / TransportError: the request could not be completed.
    """
    try:
        body = await rest.request(method, path, base=base, json=json, headers=headers)
    except APIStatusError as exc:
        mapped = map_error(exc)
        if mapped is exc:
            raise
        # Keep the __cause__ the mapper set (the HTTP error behind a chat error).
        reraise(mapped)
    try:
        return msgspec.convert(body, result_type)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"unexpected {what} response: {exc}") from None
