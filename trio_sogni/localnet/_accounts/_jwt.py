"""A minimal HS256 JSON Web Token (RFC 7519) encoder and verifier, stdlib only.

localnet signs its own access and refresh tokens with a per-network secret; nothing else ever
needs to verify them, so only the one algorithm exists. :func:`decode_jwt` checks the structure,
the header (``alg`` must be ``HS256``) and the signature; the *claims* (expiry, type, ...) are the
caller's business. Error messages never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Final, cast

import msgspec

from ...protocol import decode_json

__all__ = ["InvalidToken", "decode_jwt", "encode_jwt"]

_HEADER: Final = {"alg": "HS256", "typ": "JWT"}


class InvalidToken(Exception):
    """A token is malformed or its signature does not verify."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or len(text) % 4 == 1:
        raise InvalidToken("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _sign(signing_input: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def encode_jwt(claims: Mapping[str, Any], secret: bytes) -> str:
    """``header.payload.signature`` for ``claims`` (JSON-serialisable), signed with ``secret``."""
    signing_input = f"{_b64encode(_json(_HEADER))}.{_b64encode(_json(claims))}"
    return f"{signing_input}.{_b64encode(_sign(signing_input.encode('ascii'), secret))}"


def decode_jwt(token: str, secret: bytes) -> dict[str, Any]:
    """The claims of ``token`` once its header and HS256 signature check out.

    Raises:
        InvalidToken: not three base64url parts, a header other than HS256, a bad signature, or
            a payload that is not a JSON object.
    """
    if not token.isascii():
        raise InvalidToken("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    header_b64, payload_b64, signature_b64 = parts
    expected = _sign(f"{header_b64}.{payload_b64}".encode("ascii"), secret)
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise InvalidToken("bad token signature")
    try:
        header = decode_json(_b64decode(header_b64))
        payload = decode_json(_b64decode(payload_b64))
    except (ValueError, msgspec.DecodeError):
        raise InvalidToken("malformed token") from None
    if not isinstance(header, dict) or cast("dict[str, Any]", header).get("alg") != "HS256":
        raise InvalidToken("unsupported token algorithm")
    if not isinstance(payload, dict):
        raise InvalidToken("token payload is not an object")
    return cast("dict[str, Any]", payload)
