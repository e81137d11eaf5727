"""Wallet arithmetic for localnet: address checksums, password-derived wallets, EIP-712 recovery.

eth-account (and eth-utils under it) take about half a second to import, so they are imported on
first use: a network that only ever sees API keys never pays for them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

from ...protocol._eip712 import TypedDataKind, eip712_message

__all__ = [
    "PBKDF2_ITERATIONS",
    "PBKDF2_SALT",
    "PasswordWallet",
    "checksum_address",
    "recover_typed_data_signer",
    "wallet_from_password",
]

PBKDF2_SALT: Final = b"sogni-salt-value"
PBKDF2_ITERATIONS: Final = 10_000

_ADDRESS: Final = re.compile(r"0[xX][0-9a-fA-F]{40}")
_SIGNATURE: Final = re.compile(r"(0[xX])?[0-9a-fA-F]{130}")


def checksum_address(address: str) -> str:
    """``address`` in its EIP-55 mixed-case form.

    Raises:
        ValueError: not ``0x`` followed by 40 hex digits, or mixed case with a wrong checksum.
    """
    if not _ADDRESS.fullmatch(address):
        raise ValueError("a wallet address is 0x followed by 40 hex digits")
    from eth_utils.address import to_checksum_address

    checksummed = to_checksum_address(address)
    body = address[2:]
    if body != body.lower() and body != body.upper() and checksummed != address:
        raise ValueError("the wallet address has an invalid EIP-55 checksum")
    return checksummed


@dataclass(frozen=True)
class PasswordWallet:
    """A wallet derived from a username and password the way the official SDKs derive it."""

    address: str
    private_key: bytes = field(repr=False)


def wallet_from_password(username: str, password: str) -> PasswordWallet:
    """The official SDKs' login wallet (protocol.md §1.4): private key =
    PBKDF2-HMAC-SHA256(``username.lower() + password``, salt ``sogni-salt-value``, 10 000
    iterations, 32 bytes); the address is that key's Ethereum address."""
    from eth_account import Account

    key = hashlib.pbkdf2_hmac(
        "sha256",
        (username.lower() + password).encode("utf-8"),
        PBKDF2_SALT,
        PBKDF2_ITERATIONS,
        dklen=32,
    )
    return PasswordWallet(address=Account.from_key(key).address, private_key=key)


def recover_typed_data_signer(
    kind: TypedDataKind, data: dict[str, Any], signature: str, *, testnet: bool
) -> str | None:
    """The checksummed address that signed the Sogni EIP-712 ``kind`` message over ``data`` (on
    the testnet or mainnet domain), or ``None`` when ``signature`` is not a valid recoverable
    secp256k1 signature (65 bytes, hex, optional ``0x``)."""
    if not _SIGNATURE.fullmatch(signature):
        return None
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    message = encode_typed_data(full_message=eip712_message(kind, data, testnet=testnet))
    try:
        return Account.recover_message(message, signature=bytes.fromhex(signature[-130:]))
    except Exception:
        # eth-keys / eth-utils raise assorted types (BadSignature, ValidationError, ValueError)
        # for out-of-range r, s or v; every one of them means "not a valid signature".
        return None
