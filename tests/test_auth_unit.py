"""Sign-in building blocks without a server: wallet derivation, EIP-712 signatures, JWT claims,
secret hiding, and the session's single-flight refresh (against a scripted REST double)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import trio
import trio.testing

# The documented import paths; the packages re-export these names without marking them public.
from eth_keys import keys  # pyright: ignore[reportPrivateImportUsage]
from eth_utils import keccak, to_canonical_address  # pyright: ignore[reportPrivateImportUsage]

from trio_sogni import APIStatusError, AuthenticationError, InvalidRequestError
from trio_sogni._auth import Session, SessionTokens, derive_wallet, jwt_claims
from trio_sogni._eip712 import EIP712Helper

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
CONTRACT = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"


# --- an independent EIP-712 implementation (keccak + ABI encoding by hand) -----------------------


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return b"\x00" * 12 + to_canonical_address(address)


def _domain_separator(testnet: bool) -> bytes:
    type_hash = keccak(
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    name = b"Sogni-testnet" if testnet else b"Sogni AI"
    chain = 84532 if testnet else 8453
    return keccak(type_hash + keccak(name) + keccak(b"1") + _word(chain) + _address_word(CONTRACT))


def _authentication_hash(address: str, nonce: str) -> bytes:
    type_hash = keccak(b"Authentication(address walletAddress,string nonce)")
    return keccak(type_hash + _address_word(address) + keccak(nonce.encode()))


def _signup_hash(data: dict[str, Any]) -> bytes:
    type_hash = keccak(
        b"Signup(string appid,string username,string email,uint256 subscribe,"
        b"address walletAddress,string nonce)"
    )
    return keccak(
        type_hash
        + keccak(data["appid"].encode())
        + keccak(data["username"].encode())
        + keccak(data["email"].encode())
        + _word(data["subscribe"])
        + _address_word(data["walletAddress"])
        + keccak(data["nonce"].encode())
    )


def _sign(digest_parts: tuple[bytes, bytes]) -> str:
    domain, struct = digest_parts
    digest = keccak(b"\x19\x01" + domain + struct)
    signature = keys.PrivateKey(KEY).sign_msg_hash(digest)
    return "0x" + (_word(signature.r) + _word(signature.s) + bytes([signature.v + 27])).hex()


# --- wallet derivation ----------------------------------------------------------------------------


def test_wallet_derivation_matches_the_official_recipe() -> None:
    expected_key = hashlib.pbkdf2_hmac("sha256", b"alicehunter2", b"sogni-salt-value", 10_000, 32)
    wallet = derive_wallet("Alice", "hunter2")  # the username is lower-cased, the password not
    assert bytes(wallet.key) == expected_key
    assert derive_wallet("ALICE", "hunter2").address == wallet.address
    assert derive_wallet("alice", "Hunter2").address != wallet.address
    with pytest.raises(InvalidRequestError):
        derive_wallet("", "x")


# --- EIP-712 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("testnet", [False, True])
def test_authentication_signature_matches_an_independent_implementation(testnet: bool) -> None:
    helper = EIP712Helper(testnet=testnet, signer=KEY)
    address = helper.wallet_address
    assert address == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    data = {"walletAddress": address, "nonce": "n-123"}
    signature = helper.sign_typed_data("authentication", data)
    assert signature == _sign((_domain_separator(testnet), _authentication_hash(address, "n-123")))
    assert helper.recover_signer("authentication", data, signature) == address
    # The other domain recovers someone else: a mainnet signature is useless on testnet.
    other = EIP712Helper(testnet=not testnet)
    assert other.recover_signer("authentication", data, signature) != address


REGRESSION_SIGNATURE = (
    "0x28e4d1a3b343ca528ef11a705e00c947a7517011a512e7989832b4bd5c55d90e"
    "5e94e3e02e3da85b17a13a919bc1e9e4f665c81a315180ac016146b87df951cc1c"
)


def test_authentication_signature_regression_vector() -> None:
    # Pinned once (mainnet domain, nonce "n-123"); equal to the independent implementation's.
    helper = EIP712Helper(signer=KEY)
    data = {"walletAddress": helper.wallet_address, "nonce": "n-123"}
    assert helper.sign_typed_data("authentication", data) == REGRESSION_SIGNATURE
    assert (
        _sign((_domain_separator(False), _authentication_hash(str(helper.wallet_address), "n-123")))
        == REGRESSION_SIGNATURE
    )


def test_signup_signature_ignores_untyped_fields() -> None:
    helper = EIP712Helper(signer=KEY)
    data: dict[str, Any] = {
        "appid": "app-1",
        "username": "alice",
        "email": "a@example.com",
        "subscribe": 1,
        "walletAddress": helper.wallet_address,
        "nonce": "n-9",
    }
    signature = helper.sign_typed_data("signup", {**data, "turnstileToken": "ignored"})
    assert signature == _sign((_domain_separator(False), _signup_hash(data)))


def test_eip712_errors_are_typed() -> None:
    with pytest.raises(AuthenticationError, match="needs a wallet"):
        EIP712Helper().sign_typed_data("authentication", {"walletAddress": "0x0", "nonce": "x"})
    helper = EIP712Helper(signer=KEY)
    with pytest.raises(InvalidRequestError, match="lacks nonce"):
        helper.sign_typed_data("authentication", {"walletAddress": helper.wallet_address})
    with pytest.raises(InvalidRequestError, match="unknown"):
        helper.sign_typed_data("transfer", {})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="not a valid") as info:
        EIP712Helper(signer="0x1234")
    assert "1234" not in str(info.value)


# --- JWTs and tokens ------------------------------------------------------------------------------


def make_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_jwt_claims_and_errors() -> None:
    token = make_jwt({"addr": "0xabc", "exp": 1700, "iat": 1000})
    assert jwt_claims(token)["addr"] == "0xabc"
    for bad in ("not-a-jwt", "a.%%%.c", "a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c"):
        with pytest.raises(AuthenticationError) as info:
            jwt_claims(bad)
        assert bad not in str(info.value)


def test_session_tokens_hide_their_secrets() -> None:
    access = make_jwt({"exp": 2000, "iat": 1000, "secret": "s3cr3t"})
    refresh = make_jwt({"exp": 9000, "type": "refresh"})
    tokens = SessionTokens(access, refresh)
    for text in (repr(tokens), str(tokens), repr([tokens])):
        assert access not in text
        assert refresh not in text
    assert tokens.expires_at == 2000
    assert SessionTokens.coerce({"token": access, "refreshToken": refresh}) == tokens
    with pytest.raises(InvalidRequestError):
        SessionTokens.coerce({"token": access})


# --- single-flight refresh ------------------------------------------------------------------------


class FakeRest:
    """A REST double for the session: counts refreshes, answers with new tokens or an error."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.refresh_calls: list[str] = []
        self.fail_with: int | None = None
        self.generation = 0

    def pair(self) -> dict[str, str]:
        self.generation += 1
        now = self.clock[0]
        return {
            "token": make_jwt({"exp": now + 600, "iat": now, "g": self.generation}),
            "refreshToken": make_jwt({"exp": now + 86_400, "type": "refresh"}),
        }

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert path == "/v1/account/refresh-token"
        assert kwargs["auth"] is False
        self.refresh_calls.append(kwargs["json"]["refreshToken"])
        await trio.sleep(1)  # the request takes a while: others pile up behind it
        if self.fail_with is not None:
            raise APIStatusError("refresh token revoked", status_code=self.fail_with)
        return {"status": "success", "data": self.pair()}


def session_with(rest: FakeRest, clock: list[float]) -> Session:
    first = rest.pair()
    session = Session(
        tokens=SessionTokens(first["token"], first["refreshToken"]),
        eip712=EIP712Helper(),
        rest=rest,  # type: ignore[arg-type]
        clock=lambda: clock[0],
    )
    return session


async def test_concurrent_callers_share_one_refresh(autojump_clock: trio.testing.MockClock) -> None:
    clock = [1_000_000.0]
    rest = FakeRest(clock)
    session = session_with(rest, clock)
    token = await session.access_token()
    assert rest.refresh_calls == []  # fresh: no refresh
    clock[0] += 590  # inside the 60 s margin of the 600 s token
    results: list[str] = []

    async def caller() -> None:
        results.append(await session.access_token())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(caller)
    assert len(rest.refresh_calls) == 1
    assert len(set(results)) == 1
    assert results[0] != token
    assert session.refreshes == 1


async def test_a_failed_refresh_ends_the_session_without_looping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = [1_000_000.0]
    rest = FakeRest(clock)
    session = session_with(rest, clock)
    rest.fail_with = 401
    clock[0] += 10_000
    errors: list[AuthenticationError] = []

    async def caller() -> None:
        try:
            await session.rest_headers()
        except AuthenticationError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller)
    assert len(errors) == 5
    assert len(rest.refresh_calls) == 1
    assert "HTTP 401" in str(errors[0])
    assert "session has ended" in str(errors[0])
    with pytest.raises(AuthenticationError):
        await session.access_token()
    assert len(rest.refresh_calls) == 1  # never retried on its own
    assert session.tokens is None
    assert not session.signed_in


async def test_a_cancelled_refresher_does_not_strand_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = [1_000_000.0]
    rest = FakeRest(clock)
    session = session_with(rest, clock)
    clock[0] += 595
    got: list[str] = []

    async def waiter() -> None:
        got.append(await session.access_token())

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.5):
            await session.access_token()  # starts the refresh, then is cancelled mid-request
        nursery.start_soon(waiter)
    assert len(got) == 1
    assert len(rest.refresh_calls) == 2  # the waiter ran its own refresh; nothing hung
