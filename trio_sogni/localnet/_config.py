"""Static configuration of a local network: models, the account, pricing.

Everything here is plain immutable data; nothing does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

from ..protocol import Balance, LLMJobCost, LLMModelInfo, LLMParamConstraint

__all__ = [
    "DEFAULT_MODEL",
    "Account",
    "ModelSpec",
    "Pricing",
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


def format_decimal(value: Decimal) -> str:
    """Render ``value`` as a plain decimal string (no exponent, no trailing zeros)."""
    quantized = value.quantize(Decimal("1e-12")).normalize()
    text = format(quantized, "f")
    return "0" if text in {"-0", ""} else text


@dataclass(frozen=True, kw_only=True)
class Pricing:
    """A flat price: ``usd_per_million_tokens`` for input and output tokens alike.

    Token-denominated costs use fixed exchange rates (``sogni_per_usd``, ``spark_per_usd``).
    Currency values go on the wire as decimal strings.
    """

    usd_per_million_tokens: Decimal = field(default_factory=lambda: Decimal("1"))
    sogni_per_usd: Decimal = field(default_factory=lambda: Decimal("100"))
    spark_per_usd: Decimal = field(default_factory=lambda: Decimal("100"))

    def usd(self, tokens: int) -> Decimal:
        """The price of ``tokens`` tokens in USD."""
        return self.usd_per_million_tokens * tokens / Decimal(1_000_000)

    def in_token(self, usd: Decimal, token_type: Literal["sogni", "spark"]) -> Decimal:
        """Convert a USD amount into ``token_type`` units."""
        rate = self.sogni_per_usd if token_type == "sogni" else self.spark_per_usd
        return usd * rate

    def estimate(
        self, input_tokens: int, max_output_tokens: int, token_type: Literal["sogni", "spark"]
    ) -> str:
        """The ``estimatedCost`` of ``jobState pending``: the worst case, in ``token_type``."""
        return format_decimal(self.in_token(self.usd(input_tokens + max_output_tokens), token_type))

    def cost(
        self, input_tokens: int, output_tokens: int, token_type: Literal["sogni", "spark"]
    ) -> LLMJobCost:
        """The settled cost of a job, as sent in ``llmJobResult.cost``."""
        usd = self.usd(input_tokens + output_tokens)
        return LLMJobCost(
            cost_in_usd=format_decimal(usd),
            cost_in_token=format_decimal(self.in_token(usd, token_type)),
            cost_in_sogni=format_decimal(self.in_token(usd, "sogni")),
            cost_in_spark=format_decimal(self.in_token(usd, "spark")),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
