"""`EIP712Helper`: Sogni's EIP-712 typed-data signing (protocol.md §5), with eth-account.

Signatures are 65 bytes ``r || s || v`` (``v`` 27 or 28, low ``s``) as ``0x``-prefixed lower-case
hex: the same string ethers v6 ``Wallet.signTypedData`` returns for the same key and data (both
use deterministic RFC 6979 nonces).

eth-account is imported on first use only: it takes ~0.4 s to import, and it raises the
interpreter's recursion limit to 100,000 as a side effect, which API-key clients need not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, final

from typing_extensions import override

from ._errors import AuthenticationError, InvalidRequestError
from .protocol._eip712 import EIP712_TYPES, TypedDataKind, eip712_domain, eip712_message

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["EIP712Helper", "Signer", "TypedDataKind", "as_local_account"]

Signer: TypeAlias = "LocalAccount | str | bytes"
"""A wallet: an eth-account ``LocalAccount``, or a private key (hex string or 32 bytes)."""


def as_local_account(signer: Signer) -> LocalAccount:
    """The ``LocalAccount`` for ``signer``.

    Raises:
        InvalidRequestError: not a valid private key (the key itself is never shown).
    """
    from eth_account import Account
    from eth_account.signers.local import LocalAccount

    if isinstance(signer, LocalAccount):
        return signer
    try:
        return Account.from_key(signer)
    except Exception:
        raise InvalidRequestError(
            "wallet_private_key is not a valid secp256k1 private key"
        ) from None


@final
class EIP712Helper:
    """Signs and verifies Sogni's ``authentication`` and ``signup`` typed data.

    ``testnet=True`` switches the domain to ``Sogni-testnet`` on Base Sepolia (chain 84532);
    otherwise ``Sogni AI`` on Base (8453). ``signer`` is the default wallet for
    :meth:`sign_typed_data` (a client signed in with a wallet or a password has one). Everything
    here is synchronous and CPU-only.
    """

    def __init__(self, *, testnet: bool = False, signer: Signer | None = None) -> None:
        self.testnet = testnet
        self._signer = as_local_account(signer) if signer is not None else None

    @override
    def __repr__(self) -> str:
        wallet = self._signer.address if self._signer is not None else None
        return f"<EIP712Helper testnet={self.testnet} wallet={wallet!r}>"

    @property
    def domain(self) -> dict[str, Any]:
        """The EIP-712 domain in use."""
        return eip712_domain(testnet=self.testnet)

    @property
    def wallet_address(self) -> str | None:
        """The default signer's checksummed address, if there is one."""
        return self._signer.address if self._signer is not None else None

    def typed_data(self, kind: TypedDataKind, data: dict[str, Any]) -> dict[str, Any]:
        """The full typed-data message (``types``, ``primaryType``, ``domain``, ``message``).

        Raises:
            InvalidRequestError: unknown ``kind`` or a missing field.
        """
        try:
            return eip712_message(kind, data, testnet=self.testnet)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None

    def sign_typed_data(
        self, kind: TypedDataKind, data: dict[str, Any], *, signer: Signer | None = None
    ) -> str:
        """Sign ``data`` as the ``kind`` message; returns the ``0x`` hex signature.

        Fields of ``data`` outside the type (e.g. ``turnstileToken``) are ignored, as ethers does.

        Raises:
            InvalidRequestError: unknown ``kind``, a missing or ill-typed field, a bad key.
            AuthenticationError: no ``signer`` given and the helper has none.
        """
        account = as_local_account(signer) if signer is not None else self._signer
        if account is None:
            raise AuthenticationError(
                "signing needs a wallet: this client signed in with an API key"
            )
        message = self.typed_data(kind, data)
        from eth_account.messages import encode_typed_data

        try:
            signed = account.sign_message(encode_typed_data(full_message=message))
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"cannot encode the {kind} message: {exc}") from None
        return "0x" + bytes(signed.signature).hex()

    def recover_signer(self, kind: TypedDataKind, data: dict[str, Any], signature: str) -> str:
        """The checksummed address that produced ``signature`` over ``data`` in this domain.

        Raises:
            InvalidRequestError: a malformed message or signature.
        """
        message = self.typed_data(kind, data)
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        try:
            return Account.recover_message(
                encode_typed_data(full_message=message), signature=signature
            )
        except Exception as exc:
            raise InvalidRequestError(f"cannot recover the signer: {type(exc).__name__}") from None

    @staticmethod
    def kinds() -> tuple[TypedDataKind, ...]:
        """The message kinds this helper signs."""
        return tuple(EIP712_TYPES)
