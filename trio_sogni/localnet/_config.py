"""Static configuration of a local network: models, the account, pricing.

Everything here is plain immutable data; nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from functools import partial
from types import MappingProxyType
from typing import Final, Literal

from ..protocol import Balance, LLMJobCost, LLMModelInfo, LLMParamConstraint

__all__ = [
    "DEFAULT_MODEL",
    "Account",
    "ModelPrice",
    "ModelSpec",
    "Pricing",
    "Quote",
    "format_decimal",
]

DEFAULT_MODEL: Final = "qwen3.6-35b-a3b-gguf-iq4xs"
"""The official default chat model id; localnet serves it unless told otherwise."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One model the network knows, and the limits it advertises in ``swarmLLMModels``.

    ``max_output_tokens`` is the largest ``max_tokens`` a request may ask for (larger values are
    rejected with ``invalid_request``); ``default_output_tokens`` applies when a request sets none.
    """

    name: str
    max_context_length: int = 262_144
    max_output_tokens: int = 32_768
    default_output_tokens: int = 8_192

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model needs a name")
        if not 1 <= self.default_output_tokens <= self.max_output_tokens:
            raise ValueError("need 1 <= default_output_tokens <= max_output_tokens")

    def info(self, workers: int) -> LLMModelInfo:
        """The ``swarmLLMModels`` entry for this model when ``workers`` workers serve it."""
        return LLMModelInfo(
            workers=workers,
            max_context_length=self.max_context_length,
            max_output_tokens=LLMParamConstraint(
                min=1, max=self.max_output_tokens, default=self.default_output_tokens
            ),
        )


@dataclass(frozen=True, kw_only=True)
class Account:
    """An account's profile and balances (``/v1/account/me``, ``authenticated``).

    Given to :func:`~trio_sogni.localnet.open_local_network` it is the *default account*, the
    one ``net.api_key`` belongs to; its balances are then the initial ones (a billion of each by
    default, so tests and benchmarks never run out). :meth:`LocalNetwork.authenticate
    <trio_sogni.localnet.LocalNetwork.authenticate>` returns stored accounts in this form, with
    their settled balances at that moment.
    """

    id: str = "localnet-account"
    username: str = "localnet"
    email: str = "localnet@example.invalid"
    wallet_address: str = "0x000000000000000000000000000000000000dEaD"
    sogni_balance: str = "1000000000"
    spark_balance: str = "1000000000"

    def balances(self) -> dict[str, Balance]:
        """The ``tokens`` map of ``authenticated`` for these balances (decimal strings, as on
        the real network, nothing held)."""
        return {
            "sogni": Balance(
                settled=self.sogni_balance, credit="0", debit="0", net=self.sogni_balance
            ),
            "spark": Balance(
                settled=self.spark_balance, credit="0", debit="0", net=self.spark_balance
            ),
        }


_PRECISION: Final = 60
"""Significant digits of localnet's price arithmetic: with prices and rates bounded by
:data:`MAX_PRICE` a quote never overflows it (balances are bounded tighter, by the ledger)."""

MAX_PRICE: Final = Decimal(10**9)
"""The largest price (USD per million tokens) or exchange rate :class:`Pricing` accepts; a
positive rate must also be at least ``1 / MAX_PRICE``."""


def format_decimal(value: Decimal) -> str:
    """Render ``value`` as a plain decimal string (no exponent, no trailing zeros)."""
    with localcontext(prec=_PRECISION):
        quantized = value.quantize(Decimal("1e-12")).normalize()
    text = format(quantized, "f")
    return "0" if text in {"-0", ""} else text


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """The price of one model: USD per million input (prompt) and output (completion) tokens."""

    input_usd_per_million_tokens: Decimal
    output_usd_per_million_tokens: Decimal

    def __post_init__(self) -> None:
        for name in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
            object.__setattr__(self, name, _price(getattr(self, name), name))


@dataclass(frozen=True)
class Quote:
    """What ``input_tokens`` in and ``output_tokens`` out cost, in USD and in every token type
    (``token`` is the amount in the token type that was asked for). Each amount is rounded once,
    to 12 decimal places, so a quote, a job's ``cost`` and the amount debited agree exactly."""

    usd: Decimal
    sogni: Decimal
    spark: Decimal
    token: Decimal
    input_tokens: int
    output_tokens: int


def _price(value: object, name: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"{name} must be a decimal number")
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{name} must be a decimal number") from None
    if not amount.is_finite() or amount < 0 or (positive and amount == 0):
        raise ValueError(
            f"{name} must be a finite {'positive' if positive else 'non-negative'} number"
        )
    if amount > MAX_PRICE or (positive and amount < 1 / MAX_PRICE):
        low = "1e-9" if positive else "0"
        raise ValueError(f"{name} must be between {low} and {MAX_PRICE}, got {value}")
    return amount


_MILLION: Final = Decimal(1_000_000)
_ROUND: Final = Decimal("1e-12")


@dataclass(frozen=True, kw_only=True)
class Pricing:
    """localnet's price table (every amount a :class:`~decimal.Decimal`; no float anywhere).

    * ``models``: per-model :class:`ModelPrice` (USD per million input / output tokens);
    * a model not in ``models`` costs ``input_usd_per_million_tokens`` /
      ``output_usd_per_million_tokens``, which both default to ``usd_per_million_tokens`` (the
      older flat price, 1 USD);
    * exchange rates: ``usd_per_sogni`` / ``usd_per_spark`` (USD per token unit), or, when those
      are not given, ``sogni_per_usd`` / ``spark_per_usd`` (token units per USD, 100 each).

    :meth:`quote` is the one cost function: the estimate endpoint, a job's reservation
    (``estimatedCost``) and its settled ``llmJobResult.cost`` (and thus the amount debited) all
    come from it. Amounts are rounded to 12 decimal places (half-even) after each conversion.
    """

    usd_per_million_tokens: Decimal = field(default_factory=lambda: Decimal("1"))
    input_usd_per_million_tokens: Decimal | None = None
    output_usd_per_million_tokens: Decimal | None = None
    models: Mapping[str, ModelPrice] = field(default_factory=dict[str, ModelPrice], hash=False)
    sogni_per_usd: Decimal = field(default_factory=lambda: Decimal("100"))
    spark_per_usd: Decimal = field(default_factory=lambda: Decimal("100"))
    usd_per_sogni: Decimal | None = None
    usd_per_spark: Decimal | None = None

    def __post_init__(self) -> None:
        set_ = partial(object.__setattr__, self)
        set_(
            "usd_per_million_tokens", _price(self.usd_per_million_tokens, "usd_per_million_tokens")
        )
        for name in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
            value = getattr(self, name)
            set_(name, self.usd_per_million_tokens if value is None else _price(value, name))
        for name in ("sogni_per_usd", "spark_per_usd"):
            set_(name, _price(getattr(self, name), name, positive=True))
        for name in ("usd_per_sogni", "usd_per_spark"):
            value = getattr(self, name)
            if value is not None:
                set_(name, _price(value, name, positive=True))
        models = dict(self.models)
        for name, price in models.items():
            if not isinstance(price, ModelPrice):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ValueError(f"the price of model {name!r} must be a ModelPrice")
        set_("models", MappingProxyType(models))

    def model_price(self, model: str | None) -> ModelPrice:
        """The price of ``model`` (the default price for ``None`` or a model not in the table)."""
        price = self.models.get(model) if model is not None else None
        if price is not None:
            return price
        assert self.input_usd_per_million_tokens is not None
        assert self.output_usd_per_million_tokens is not None
        return ModelPrice(
            input_usd_per_million_tokens=self.input_usd_per_million_tokens,
            output_usd_per_million_tokens=self.output_usd_per_million_tokens,
        )

    def usd(self, tokens: int, *, model: str | None = None, output_tokens: int = 0) -> Decimal:
        """The unrounded USD price of ``tokens`` input tokens plus ``output_tokens`` output tokens
        of ``model`` (default price when ``None``)."""
        price = self.model_price(model)
        return (
            price.input_usd_per_million_tokens * tokens
            + price.output_usd_per_million_tokens * output_tokens
        ) / _MILLION

    def in_token(self, usd: Decimal, token_type: Literal["sogni", "spark"]) -> Decimal:
        """Convert a USD amount into ``token_type`` units (unrounded)."""
        if token_type == "sogni":
            per = self.usd_per_sogni
            return usd / per if per is not None else usd * self.sogni_per_usd
        per = self.usd_per_spark
        return usd / per if per is not None else usd * self.spark_per_usd

    def quote(
        self,
        input_tokens: int,
        output_tokens: int,
        token_type: Literal["sogni", "spark"],
        *,
        model: str | None = None,
    ) -> Quote:
        """The cost of ``input_tokens`` in and ``output_tokens`` out on ``model``."""
        with localcontext(prec=_PRECISION):
            usd = self.usd(input_tokens, model=model, output_tokens=output_tokens)
            sogni = self.in_token(usd, "sogni").quantize(_ROUND)
            spark = self.in_token(usd, "spark").quantize(_ROUND)
            usd = usd.quantize(_ROUND)
        return Quote(
            usd=usd,
            sogni=sogni,
            spark=spark,
            token=sogni if token_type == "sogni" else spark,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def estimate(
        self,
        input_tokens: int,
        max_output_tokens: int,
        token_type: Literal["sogni", "spark"],
        *,
        model: str | None = None,
    ) -> str:
        """The ``estimatedCost`` of ``jobState pending``: the worst case, in ``token_type``."""
        return format_decimal(
            self.quote(input_tokens, max_output_tokens, token_type, model=model).token
        )

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        token_type: Literal["sogni", "spark"],
        *,
        model: str | None = None,
    ) -> LLMJobCost:
        """The settled cost of a job, as sent in ``llmJobResult.cost`` (decimal strings)."""
        quote = self.quote(input_tokens, output_tokens, token_type, model=model)
        return LLMJobCost(
            cost_in_usd=format_decimal(quote.usd),
            cost_in_token=format_decimal(quote.token),
            cost_in_sogni=format_decimal(quote.sogni),
            cost_in_spark=format_decimal(quote.spark),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
