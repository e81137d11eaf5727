"""The cost estimate endpoint of the socket host (protocol.md §3.1, §4.7).

``GET /api/v1/job-llm/estimate/{tokenType}/{model}/{inputTokens}/{maxOutputTokens}``: each
segment is percent-decoded (a model id containing ``/`` arrives as ``%2F`` and stays one
segment). The answer is *not* enveloped::

    {"request": {"model", "inputTokens", "maxOutputTokens", "tokenType", "time"},
     "quote": {"costInUSD", "costInSogni", "costInSpark", "costInToken", "inputTokens",
               "outputTokens"}}

The quote is :meth:`Pricing.quote <trio_sogni.localnet.Pricing.quote>` of ``inputTokens`` in and
``maxOutputTokens`` out (the worst case; the same function settles jobs), its amounts JSON
numbers written exactly from the decimals. ``time`` is the request time in milliseconds since
the epoch (the network's wall clock). Errors use the Sogni envelope: 401 bad credentials, 400 an
unknown token type or a count that is not a non-negative integer (or ``maxOutputTokens`` above
the model's limit), 404 a model the network does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final

import msgspec

from .._config import Account, ModelSpec, Pricing, format_decimal
from .._server import HTTPRequest, HTTPResponse, Router, error_response

__all__ = ["ESTIMATE_PATH", "estimate_routes"]

ESTIMATE_PATH: Final = (
    "/api/v1/job-llm/estimate/{tokenType}/{model}/{inputTokens}/{maxOutputTokens}"
)

_numbers: Final = msgspec.json.Encoder(decimal_format="number")


def _number(value: Decimal) -> Decimal:
    """``value`` written without exponent or trailing zeros (``100``, not ``1E+2``)."""
    return Decimal(format_decimal(value))


def _count(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    return int(text)


def estimate_routes(
    *,
    authenticate: Callable[[Mapping[str, str]], Account | None],
    pricing: Callable[[], Pricing],
    models: Callable[[], Mapping[str, ModelSpec]],
    clock: Callable[[], float],
) -> Router:
    """A router with the cost-estimate route; prices and models are read live from the callables
    (so a network's later changes apply)."""
    return _EstimateEndpoints(
        authenticate=authenticate, pricing=pricing, models=models, clock=clock
    ).routes()


class _EstimateEndpoints:
    """The estimate endpoint; reads prices and models live from the
    callables (so a network's later changes apply)."""

    def __init__(
        self,
        *,
        authenticate: Callable[[Mapping[str, str]], Account | None],
        pricing: Callable[[], Pricing],
        models: Callable[[], Mapping[str, ModelSpec]],
        clock: Callable[[], float],
    ) -> None:
        self._authenticate = authenticate
        self._pricing = pricing
        self._models = models
        self._clock = clock

    def routes(self) -> Router:
        """A new router with these endpoints."""
        router = Router()
        router.add("GET", ESTIMATE_PATH, self._estimate)
        return router

    async def _estimate(self, request: HTTPRequest, params: Mapping[str, str]) -> HTTPResponse:
        if self._authenticate(request.headers) is None:
            return error_response(401, "Invalid or missing credentials")
        token_type = params["tokenType"]
        if token_type not in ("sogni", "spark"):
            return error_response(400, f"Unknown token type {token_type!r} (sogni or spark)")
        input_tokens = _count(params["inputTokens"])
        max_output = _count(params["maxOutputTokens"])
        if input_tokens is None or max_output is None:
            return error_response(
                400, "inputTokens and maxOutputTokens must be non-negative integers"
            )
        model = params["model"]
        spec = self._models().get(model)
        if spec is None:
            return error_response(404, f"Unknown model {model!r}")
        if max_output > spec.max_output_tokens:
            return error_response(
                400, f"maxOutputTokens must be at most {spec.max_output_tokens} for this model"
            )
        quote = self._pricing().quote(input_tokens, max_output, token_type, model=model)
        body = {
            "request": {
                "model": model,
                "inputTokens": input_tokens,
                "maxOutputTokens": max_output,
                "tokenType": token_type,
                "time": int(self._clock() * 1000),
            },
            "quote": {
                "costInUSD": _number(quote.usd),
                "costInSogni": _number(quote.sogni),
                "costInSpark": _number(quote.spark),
                "costInToken": _number(quote.token),
                "inputTokens": quote.input_tokens,
                "outputTokens": quote.output_tokens,
            },
        }
        return HTTPResponse(200, _numbers.encode(body))
