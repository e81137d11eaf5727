"""The EIP-712 typed data Sogni signs for login and signup (protocol.md §5), as plain data.

Signing and signature recovery need eth-account and live in the client
(:mod:`trio_sogni._eip712`) and in localnet; this module holds only what both must agree on: the
domain and the types, in the form ``eth_account.messages.encode_typed_data(full_message=...)``
(and ethers v6 ``signTypedData``) take.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "EIP712_TYPES",
    "MAINNET_CHAIN_ID",
    "TESTNET_CHAIN_ID",
    "VERIFYING_CONTRACT",
    "TypedDataKind",
    "eip712_domain",
    "eip712_message",
]

TypedDataKind: TypeAlias = Literal["authentication", "signup"]

VERIFYING_CONTRACT: Final = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
MAINNET_CHAIN_ID: Final = 8453
"""Base mainnet."""
TESTNET_CHAIN_ID: Final = 84532
"""Base Sepolia."""

EIP712_TYPES: Final[dict[TypedDataKind, tuple[str, list[dict[str, str]]]]] = {
    "authentication": (
        "Authentication",
        [
            {"name": "walletAddress", "type": "address"},
            {"name": "nonce", "type": "string"},
        ],
    ),
    "signup": (
        "Signup",
        [
            {"name": "appid", "type": "string"},
            {"name": "username", "type": "string"},
            {"name": "email", "type": "string"},
            {"name": "subscribe", "type": "uint256"},
            {"name": "walletAddress", "type": "address"},
            {"name": "nonce", "type": "string"},
        ],
    ),
}
"""Per kind: the primary type's name and its fields, in signing order."""


def eip712_domain(*, testnet: bool = False) -> dict[str, Any]:
    """The Sogni EIP-712 domain: ``Sogni AI`` on Base mainnet, ``Sogni-testnet`` on Base Sepolia."""
    return {
        "name": "Sogni-testnet" if testnet else "Sogni AI",
        "version": "1",
        "chainId": TESTNET_CHAIN_ID if testnet else MAINNET_CHAIN_ID,
        "verifyingContract": VERIFYING_CONTRACT,
    }


def eip712_message(
    kind: TypedDataKind, data: dict[str, Any], *, testnet: bool = False
) -> dict[str, Any]:
    """The full typed-data message for ``kind`` over ``data``.

    Only the typed fields are kept (the official SDK passes extra keys such as ``turnstileToken``,
    which ethers ignores for the hash).

    Raises:
        ValueError: unknown ``kind``, or a typed field missing from ``data``.
    """
    if kind not in EIP712_TYPES:
        raise ValueError(f"unknown EIP-712 message kind {kind!r}")
    primary, fields = EIP712_TYPES[kind]
    missing = [f["name"] for f in fields if f["name"] not in data]
    if missing:
        raise ValueError(f"{kind} data lacks {', '.join(missing)}")
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: [dict(f) for f in fields],
        },
        "primaryType": primary,
        "domain": eip712_domain(testnet=testnet),
        "message": {f["name"]: data[f["name"]] for f in fields},
    }
