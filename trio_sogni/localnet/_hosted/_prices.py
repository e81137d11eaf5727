"""Price tables from JSON (``localnet serve --prices FILE.json``).

The format (every price in USD; numbers or decimal strings, read exactly as decimals)::

    {
      "default": {"input": "1", "output": "2"},
      "models": {"org/model-a": {"input": "0.2", "output": "0.6"}},
      "usdPerSogni": "0.01",
      "usdPerSpark": "0.01"
    }

``input`` / ``output`` are USD per million input (prompt) / output (completion) tokens;
``default`` prices every model not in ``models``; ``usdPerSogni`` / ``usdPerSpark`` are the
exchange rates (USD per token unit). Every key is optional (defaults: those of
:class:`~trio_sogni.localnet.Pricing`, 1 USD per million tokens and 0.01 USD per token unit);
unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import msgspec

from ...protocol import JSONDecoder
from .._config import ModelPrice, Pricing

__all__ = ["load_prices", "parse_prices"]

_TOP: frozenset[str] = frozenset({"default", "models", "usdPerSogni", "usdPerSpark"})
_PRICE: frozenset[str] = frozenset({"input", "output"})


_prices_decoder: Final = JSONDecoder(float_hook=Decimal)


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"{where}: expected a number or a decimal string")
    try:
        return Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{where}: not a decimal number") from None


def _object(value: object, where: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    data: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    return data


def _model_price(value: object, where: str) -> ModelPrice:
    data = _object(value, where, _PRICE)
    missing = sorted(_PRICE - set(data))
    if missing:
        raise ValueError(f"{where}: missing {missing[0]!r}")
    try:
        return ModelPrice(
            input_usd_per_million_tokens=_decimal(data["input"], f"{where}.input"),
            output_usd_per_million_tokens=_decimal(data["output"], f"{where}.output"),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_prices(text: str | bytes) -> Pricing:
    """The :class:`Pricing` described by a price-table JSON document (module docstring).

    Raises:
        ValueError: invalid JSON, a wrong shape, or a negative or non-finite amount (the message
            names where).
    """
    try:
        data = _prices_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    top = _object(data, "prices", _TOP)
    options: dict[str, Any] = {}
    if "default" in top:
        default = _model_price(top["default"], "prices.default")
        options["input_usd_per_million_tokens"] = default.input_usd_per_million_tokens
        options["output_usd_per_million_tokens"] = default.output_usd_per_million_tokens
    if "models" in top:
        models = top["models"]
        if not isinstance(models, dict):
            raise ValueError("prices.models: expected an object")
        entries: dict[str, Any] = models  # pyright: ignore[reportUnknownVariableType]
        options["models"] = {
            name: _model_price(price, f"prices.models[{name!r}]") for name, price in entries.items()
        }
    options["usd_per_sogni"] = _decimal(top.get("usdPerSogni", "0.01"), "prices.usdPerSogni")
    options["usd_per_spark"] = _decimal(top.get("usdPerSpark", "0.01"), "prices.usdPerSpark")
    try:
        return Pricing(**options)
    except ValueError as exc:
        raise ValueError(f"prices: {exc}") from None


def load_prices(path: str | os.PathLike[str]) -> Pricing:
    """:func:`parse_prices` of the file at ``path`` (UTF-8).

    Raises:
        OSError: the file cannot be read.
        ValueError: see :func:`parse_prices`.
    """
    with open(path, "rb") as file:
        return parse_prices(file.read())
