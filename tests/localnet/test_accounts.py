"""Accounts on localnet: wallet login and signup, JWT sessions, balances and billing.

Everything is driven over loopback TCP with httpx and trio-websocket, never with the trio_sogni
client. Signatures are made here with eth-account from typed data written out in full in this
file, so a mistake in the shared EIP-712 module or in localnet's recovery shows up as a failure.
Token time is moved with an injected clock, never by sleeping.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data
from helpers import LOCALNET_CLI, start_localnet_cli
from typing_extensions import override

from trio_sogni.localnet import (
    DEFAULT_MODEL,
    AccountRecord,
    DuplicateAccount,
    JobContext,
    LocalNetwork,
    SimulatedWorker,
    Stall,
    Step,
    TokenPair,
    open_local_network,
    wallet_from_password,
)
from trio_sogni.localnet._accounts._jwt import InvalidToken, decode_jwt, encode_jwt
from trio_sogni.localnet._accounts._wallets import recover_typed_data_signer
from trio_sogni.protocol import (
    AbortJob,
    Authenticated,
    BalanceUpdate,
    ChatMessage,
    ClientMessage,
    LLMJobError,
    LLMJobRequest,
    LLMJobResult,
    ServerMessage,
    SwarmLLMModels,
    UnknownMessage,
    decode_server_message,
    encode_client_message,
)

TIMEOUT = 20
KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = EthAccount.from_key(KEY).address
OTHER_KEY = "0x" + "11" * 32
START = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def typed_data(kind: str, message: dict[str, Any], *, testnet: bool = False) -> dict[str, Any]:
    """The Sogni EIP-712 message, written out independently of trio_sogni (protocol.md §5)."""
    fields = {
        "Authentication": [
            {"name": "walletAddress", "type": "address"},
            {"name": "nonce", "type": "string"},
        ],
        "Signup": [
            {"name": "appid", "type": "string"},
            {"name": "username", "type": "string"},
            {"name": "email", "type": "string"},
            {"name": "subscribe", "type": "uint256"},
            {"name": "walletAddress", "type": "address"},
            {"name": "nonce", "type": "string"},
        ],
    }
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            kind: fields[kind],
        },
        "primaryType": kind,
        "domain": {
            "name": "Sogni-testnet" if testnet else "Sogni AI",
            "version": "1",
            "chainId": 84532 if testnet else 8453,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
        },
        "message": message,
    }


def sign(key: str, kind: str, message: dict[str, Any], *, testnet: bool = False) -> str:
    signed = EthAccount.sign_message(
        encode_typed_data(full_message=typed_data(kind, message, testnet=testnet)), key
    )
    return "0x" + bytes(signed.signature).hex()


def sign_login(key: str, nonce: str, *, testnet: bool = False) -> str:
    address = EthAccount.from_key(key).address
    return sign(key, "Authentication", {"walletAddress": address, "nonce": nonce}, testnet=testnet)


@asynccontextmanager
async def network(**options: Any) -> AsyncGenerator[tuple[LocalNetwork, httpx.AsyncClient]]:
    async with (
        open_local_network(close_timeout=1.0, **options) as net,
        httpx.AsyncClient(base_url=net.rest_url) as http,
    ):
        yield net, http


async def nonce_for(http: httpx.AsyncClient, address: str) -> str:
    response = await http.post("/v1/account/nonce", json={"walletAddress": address})
    assert response.status_code == 200, response.text
    nonce = response.json()["data"]["nonce"]
    assert isinstance(nonce, str)
    assert nonce
    return nonce


async def login(http: httpx.AsyncClient, key: str, *, testnet: bool = False) -> httpx.Response:
    address = EthAccount.from_key(key).address
    nonce = await nonce_for(http, address)
    signature = sign_login(key, nonce, testnet=testnet)
    return await http.post(
        "/v1/account/login",
        json={"walletAddress": address, "signature": signature, "rememberMe": True},
    )


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str)
    assert body["errorCode"] == status


# -- pure functions ---------------------------------------------------------------------------


def test_recovery_accepts_exactly_what_eth_account_signs() -> None:
    message = {"walletAddress": ADDRESS, "nonce": "n-1"}
    signature = sign(KEY, "Authentication", message)
    assert recover_typed_data_signer("authentication", message, signature, testnet=False) == (
        ADDRESS
    )
    assert (
        recover_typed_data_signer("authentication", message, signature[2:], testnet=False)
        == ADDRESS
    )
    # Another nonce, the other domain, or a flipped bit: some other signer (or none).
    other = {"walletAddress": ADDRESS, "nonce": "n-2"}
    assert recover_typed_data_signer("authentication", other, signature, testnet=False) != ADDRESS
    assert recover_typed_data_signer("authentication", message, signature, testnet=True) != ADDRESS
    flipped = signature[:10] + ("0" if signature[10] != "0" else "1") + signature[11:]
    assert recover_typed_data_signer("authentication", message, flipped, testnet=False) != ADDRESS
    for bad in ("", "0x", "0x1234", "0x" + "zz" * 65, "0x" + "ff" * 65):
        assert recover_typed_data_signer("authentication", message, bad, testnet=False) is None
    signup = {
        "appid": "app",
        "username": "alice",
        "email": "a@example.com",
        "subscribe": 1,
        "walletAddress": ADDRESS,
        "nonce": "n-3",
    }
    signup_signature = sign(KEY, "Signup", signup, testnet=True)
    assert recover_typed_data_signer("signup", signup, signup_signature, testnet=True) == ADDRESS


def test_wallet_from_password_matches_the_sdk_derivation() -> None:
    key = hashlib.pbkdf2_hmac("sha256", b"alice" + b"s3cret", b"sogni-salt-value", 10_000, 32)
    wallet = wallet_from_password("Alice", "s3cret")
    assert wallet.address == EthAccount.from_key(key).address
    assert wallet.private_key == key
    assert "s3cret" not in repr(wallet)
    assert key.hex() not in repr(wallet)
    assert wallet_from_password("alice", "other").address != wallet.address


def test_jwt_round_trip_and_tampering() -> None:
    secret = b"k" * 32
    token = encode_jwt({"sub": "a", "exp": 5}, secret)
    assert decode_jwt(token, secret) == {"sub": "a", "exp": 5}
    header, payload, signature = token.split(".")
    forged = encode_jwt({"sub": "b", "exp": 5}, secret).split(".")[1]
    for bad in (
        f"{header}.{forged}.{signature}",
        f"{header}.{payload}.{signature[:-2]}AA",
        f"{header}.{payload}",
        "not a token",
        "é.é.é",
    ):
        with pytest.raises(InvalidToken):
            decode_jwt(bad, secret)
    with pytest.raises(InvalidToken):
        decode_jwt(token, b"another secret")


def test_token_pair_repr_hides_tokens() -> None:
    pair = TokenPair("access-secret", "refresh-secret")
    assert "secret" not in repr(pair)


# -- login ------------------------------------------------------------------------------------


async def test_login_with_a_correct_signature_and_the_token_claims() -> None:
    clock = FakeClock()
    with trio.fail_after(TIMEOUT):
        async with network(clock=clock) as (net, http):
            record = net.add_account("alice", wallet_address=ADDRESS.lower())
            assert record.wallet_address == ADDRESS
            response = await login(http, KEY)
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            assert data["username"] == "alice"
            me = await http.get("/v1/account/me", headers={"authorization": data["token"]})
            bearer = await http.get(
                "/v1/account/me", headers={"authorization": f"Bearer {data['token']}"}
            )
    secret: bytes = net._accounts._secret  # pyright: ignore[reportPrivateUsage]
    access = decode_jwt(data["token"], secret)
    refresh = decode_jwt(data["refreshToken"], secret)
    assert access["addr"] == ADDRESS
    assert access["env"] == "localnet"
    assert access["sub"] == record.id
    assert access["iat"] == int(START)
    assert access["exp"] == int(START) + 3600
    assert isinstance(access["jti"], str)
    assert "type" not in access
    assert refresh["type"] == "refresh"
    assert refresh["env"] == "localnet"
    assert refresh["sub"] == record.id
    assert refresh["exp"] == int(START) + 30 * 24 * 3600
    assert me.status_code == 200
    assert me.json()["data"]["username"] == "alice"
    assert me.json()["data"]["walletAddress"] == ADDRESS
    assert bearer.status_code == 200
    assert all(r.headers["authorization"] == "<redacted>" for r in list(net.http_requests)[-2:])


async def test_nonce_is_single_use_even_when_the_login_fails() -> None:
    with trio.fail_after(TIMEOUT):
        async with network() as (net, http):
            net.add_account("alice", wallet_address=ADDRESS)
            nonce = await nonce_for(http, ADDRESS)
            good = sign_login(KEY, nonce)
            body = {"walletAddress": ADDRESS, "signature": good}
            first = await http.post("/v1/account/login", json=body)
            replayed = await http.post("/v1/account/login", json=body)
            # A tampered signature consumes the nonce too: the right one fails afterwards.
            nonce = await nonce_for(http, ADDRESS)
            good = sign_login(KEY, nonce)
            tampered = good[:-4] + ("00" if good[-4:-2] != "00" else "11") + good[-2:]
            bad = await http.post(
                "/v1/account/login", json={"walletAddress": ADDRESS, "signature": tampered}
            )
            after_bad = await http.post(
                "/v1/account/login", json={"walletAddress": ADDRESS, "signature": good}
            )
            # A newer nonce replaces an older one.
            old = await nonce_for(http, ADDRESS)
            await nonce_for(http, ADDRESS)
            stale = await http.post(
                "/v1/account/login",
                json={"walletAddress": ADDRESS, "signature": sign_login(KEY, old)},
            )
    assert first.status_code == 200
    assert_error(replayed, 401)
    assert_error(bad, 401)
    assert_error(after_bad, 401)
    assert_error(stale, 401)


async def test_nonce_expires() -> None:
    clock = FakeClock()
    with trio.fail_after(TIMEOUT):
        async with network(clock=clock, nonce_ttl=60) as (net, http):
            net.add_account("alice", wallet_address=ADDRESS)
            nonce = await nonce_for(http, ADDRESS)
            clock.advance(60)
            expired = await http.post(
                "/v1/account/login",
                json={"walletAddress": ADDRESS, "signature": sign_login(KEY, nonce)},
            )
            nonce = await nonce_for(http, ADDRESS)
            clock.advance(59)
            in_time = await http.post(
                "/v1/account/login",
                json={"walletAddress": ADDRESS, "signature": sign_login(KEY, nonce)},
            )
    assert_error(expired, 401)
    assert in_time.status_code == 200


async def test_signature_by_another_key_or_for_another_domain_is_rejected() -> None:
    with trio.fail_after(TIMEOUT):
        async with network(testnet=True) as (net, http):
            assert net.testnet
            net.add_account("alice", wallet_address=ADDRESS)
            mainnet = await login(http, KEY, testnet=False)
            nonce = await nonce_for(http, ADDRESS)
            impostor = sign(
                OTHER_KEY,
                "Authentication",
                {"walletAddress": ADDRESS, "nonce": nonce},
                testnet=True,
            )
            other_key = await http.post(
                "/v1/account/login", json={"walletAddress": ADDRESS, "signature": impostor}
            )
            testnet = await login(http, KEY, testnet=True)
    assert_error(mainnet, 401)
    assert_error(other_key, 401)
    assert testnet.status_code == 200


async def test_unknown_wallet_and_malformed_bodies() -> None:
    with trio.fail_after(TIMEOUT):
        async with network() as (_net, http):
            unknown = await login(http, KEY)
            bad_address = await http.post("/v1/account/nonce", json={"walletAddress": "0x12"})
            bad_checksum = await http.post(
                "/v1/account/nonce", json={"walletAddress": ADDRESS[:-1] + ADDRESS[-1].swapcase()}
            )
            not_json = await http.post("/v1/account/login", content=b"{nope")
            not_object = await http.post("/v1/account/login", json=[1, 2])
            no_signature = await http.post("/v1/account/login", json={"walletAddress": ADDRESS})
            bad_remember = await http.post(
                "/v1/account/login",
                json={"walletAddress": ADDRESS, "signature": "0x00", "rememberMe": "yes"},
            )
            no_refresh = await http.post("/v1/account/refresh-token", json={})
            wrong_method = await http.get("/v1/account/login")
    assert_error(unknown, 404)
    for response in (bad_address, not_json, not_object, no_signature, bad_remember, no_refresh):
        assert_error(response, 400)
    if ADDRESS[-1].isalpha():
        assert_error(bad_checksum, 400)
    assert wrong_method.status_code == 405


# -- signup -----------------------------------------------------------------------------------


def signup_body(key: str, nonce: str, **overrides: Any) -> dict[str, Any]:
    address = EthAccount.from_key(key).address
    fields = {
        "appid": "my-app",
        "username": "bob",
        "email": "bob@example.com",
        "subscribe": 0,
        "walletAddress": address,
        "nonce": nonce,
    }
    fields.update(overrides)
    signed = dict(fields)
    return {
        **{k: v for k, v in fields.items() if k != "nonce"},
        "turnstileToken": "anything",
        "referralCode": "",
        "appSource": "tests",
        "rememberMe": False,
        "signature": sign(key, "Signup", signed),
    }


async def test_signup_then_login_and_duplicates() -> None:
    with trio.fail_after(TIMEOUT):
        async with network(signup_balance={"sogni": 7, "spark": "1.5"}) as (net, http):
            created = await http.post(
                "/v1/account/create", json=signup_body(KEY, await nonce_for(http, ADDRESS))
            )
            logged_in = await login(http, KEY)
            other_address = EthAccount.from_key(OTHER_KEY).address
            same_name = await http.post(
                "/v1/account/create",
                json=signup_body(OTHER_KEY, await nonce_for(http, other_address), username="BOB"),
            )
            same_wallet = await http.post(
                "/v1/account/create",
                json=signup_body(KEY, await nonce_for(http, ADDRESS), username="carol"),
            )
            # A body that does not match what was signed.
            body = signup_body(OTHER_KEY, await nonce_for(http, other_address), username="dave")
            body["email"] = "changed@example.com"
            mismatch = await http.post("/v1/account/create", json=body)
            bad_subscribe = await http.post(
                "/v1/account/create",
                json=signup_body(OTHER_KEY, "x", username="erin", subscribe=2),
            )
            bad_name = await http.post(
                "/v1/account/create", json=signup_body(OTHER_KEY, "x", username="has space")
            )
            token = created.json()["data"]["token"]
            balance = await http.get("/v4/account/balance", headers={"authorization": token})
            record = net.get_account("BOB")
            assert net.get_account(ADDRESS) == record
            assert [a.username for a in net.accounts()] == ["localnet", "bob"]
    assert created.status_code == 200, created.text
    assert set(created.json()["data"]) == {"token", "refreshToken"}
    assert logged_in.status_code == 200
    assert logged_in.json()["data"]["username"] == "bob"
    assert_error(same_name, 409)
    assert_error(same_wallet, 409)
    assert_error(mismatch, 401)
    assert_error(bad_subscribe, 400)
    assert_error(bad_name, 400)
    assert record.email == "bob@example.com"
    assert record.wallet_address == ADDRESS
    assert balance.json() == {
        "status": "success",
        "data": {
            "sogni": {"settled": "7", "credit": "0", "debit": "0", "net": "7"},
            "spark": {"settled": "1.5", "credit": "0", "debit": "0", "net": "1.5"},
        },
    }


# -- sessions ---------------------------------------------------------------------------------


async def test_refresh_rotation_expiry_and_logout() -> None:
    clock = FakeClock()
    with trio.fail_after(TIMEOUT):
        async with network(clock=clock, access_token_ttl=600, refresh_token_ttl=7200) as (
            net,
            http,
        ):
            net.add_account("alice", wallet_address=ADDRESS)
            first = (await login(http, KEY)).json()["data"]
            # The access token expires; the refresh token renews the session.
            clock.advance(600)
            expired = await http.get("/v1/account/me", headers={"authorization": first["token"]})
            rotated = await http.post(
                "/v1/account/refresh-token", json={"refreshToken": first["refreshToken"]}
            )
            second = rotated.json()["data"]
            me = await http.get("/v1/account/me", headers={"authorization": second["token"]})
            reused = await http.post(
                "/v1/account/refresh-token", json={"refreshToken": first["refreshToken"]}
            )
            as_access = await http.get(
                "/v1/account/me", headers={"authorization": second["refreshToken"]}
            )
            head, _payload, signature = second["refreshToken"].split(".")
            forged = encode_jwt({"type": "refresh", "sub": "x", "exp": 10**12}, b"guess")
            tampered = await http.post(
                "/v1/account/refresh-token",
                json={"refreshToken": f"{head}.{forged.split('.')[1]}.{signature}"},
            )
            # Logout revokes the refresh token; the access token lives until it expires.
            logout = await http.post(
                "/v1/account/logout", headers={"authorization": second["token"]}
            )
            after_logout = await http.post(
                "/v1/account/refresh-token", json={"refreshToken": second["refreshToken"]}
            )
            unauthenticated_logout = await http.post("/v1/account/logout")
            # A refresh token past its expiry.
            third = (await login(http, KEY)).json()["data"]
            clock.advance(7200)
            too_late = await http.post(
                "/v1/account/refresh-token", json={"refreshToken": third["refreshToken"]}
            )
    assert_error(expired, 401)
    assert rotated.status_code == 200
    assert set(second) == {"token", "refreshToken"}
    assert second["refreshToken"] != first["refreshToken"]
    assert me.status_code == 200
    assert_error(reused, 401)
    assert_error(as_access, 401)
    assert_error(tampered, 401)
    assert logout.json() == {"status": "success"}
    assert_error(after_logout, 401)
    assert_error(unauthenticated_logout, 401)
    assert_error(too_late, 401)


async def test_python_api_sessions_keys_and_revocation() -> None:
    with trio.fail_after(TIMEOUT):
        async with network() as (net, http):
            record = net.add_account("carol", password="pw", balance={"spark": 3})
            assert isinstance(record, AccountRecord)
            assert record.wallet_address == wallet_from_password("carol", "pw").address
            key = net.create_api_key("CAROL")
            pair = net.issue_tokens(record)
            with_key = await http.get("/v1/account/me", headers={"api-key": key})
            with_token = await http.get("/v1/account/me", headers={"authorization": pair.token})
            assert net.revoke_refresh_tokens(record.id) == 1
            refreshed = await http.post(
                "/v1/account/refresh-token", json={"refreshToken": pair.refresh_token}
            )
            # An api-key header decides alone, even next to a valid token.
            both = await http.get(
                "/v1/account/me", headers={"api-key": "wrong", "authorization": pair.token}
            )
            assert net.balance("carol", "spark") == Decimal(3)
            assert net.balance("carol") == Decimal(0)
            with pytest.raises(DuplicateAccount):
                net.add_account("Carol", wallet_address=ADDRESS)
            with pytest.raises(ValueError, match="exactly one"):
                net.add_account("dan")
            with pytest.raises(KeyError):
                net.get_account("nobody")
            with pytest.raises(ValueError, match="below zero"):
                net.fund("carol", -1)
    assert with_key.json()["data"]["username"] == "carol"
    assert with_token.json()["data"]["id"] == record.id
    assert_error(refreshed, 401)
    assert_error(both, 401)


# -- the socket and billing -------------------------------------------------------------------


class RecordingWorker(SimulatedWorker):
    """A simulated worker that remembers every job it was given."""

    def __init__(self) -> None:
        super().__init__("recording-worker")
        self.ran: list[str] = []

    @override
    async def run(self, job: JobContext) -> None:
        self.ran.append(job.request.job_id)
        await super().run(job)


Socket = trio_websocket.WebSocketConnection


def socket_url(net: LocalNetwork, app_id: str) -> str:
    return f"{net.socket_url}?appId={app_id}&clientName=accounts-tests&clientType=artist"


async def recv(ws: Socket) -> ServerMessage:
    raw = await ws.get_message()
    assert isinstance(raw, bytes)
    message = decode_server_message(raw)
    assert not isinstance(message, UnknownMessage), message
    return message


async def send(ws: Socket, message: ClientMessage) -> None:
    await ws.send_message(encode_client_message(message).decode())


async def until_end(ws: Socket, job_id: str) -> LLMJobResult | LLMJobError:
    """Receive until ``job_id`` ends; its last frame."""
    while True:
        message = await recv(ws)
        if isinstance(message, LLMJobResult | LLMJobError) and message.job_id == job_id:
            return message


async def close_stream(ws: Socket) -> None:
    # trio-websocket leaves the TCP stream open when the server closes (see conftest.py).
    await trio.aclose_forcefully(ws._stream)  # pyright: ignore[reportPrivateUsage]


def job(job_id: str, **fields: Any) -> LLMJobRequest:
    return LLMJobRequest(
        job_id=job_id,
        model=DEFAULT_MODEL,
        messages=[ChatMessage(role="user", content="Tell me something")],
        **fields,
    )


@asynccontextmanager
async def socket_with(
    net: LocalNetwork, headers: list[tuple[bytes, bytes]], app_id: str = "acct-app"
) -> AsyncGenerator[tuple[Socket, Authenticated]]:
    async with trio_websocket.open_websocket_url(
        socket_url(net, app_id), extra_headers=headers, message_queue_size=1024
    ) as ws:
        try:
            first = await recv(ws)
            assert isinstance(first, Authenticated)
            assert isinstance(await recv(ws), SwarmLLMModels)
            yield ws, first
        finally:
            await close_stream(ws)


async def test_websocket_accepts_a_jwt_and_refuses_an_expired_one() -> None:
    clock = FakeClock()
    with trio.fail_after(TIMEOUT):
        async with network(clock=clock) as (net, _http):
            record = net.add_account("alice", wallet_address=ADDRESS, balance=12)
            pair = net.issue_tokens(record)
            auth = [(b"authorization", pair.token.encode())]
            async with socket_with(net, auth) as (_ws, authenticated):
                assert authenticated.username == "alice"
                assert authenticated.address == ADDRESS
                assert authenticated.id == record.id
                assert authenticated.tokens is not None
                assert authenticated.tokens["sogni"].settled == "12"
            clock.advance(3600)
            async with trio_websocket.open_websocket_url(
                socket_url(net, "late"), extra_headers=auth
            ) as ws:
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                await close_stream(ws)
    assert closed.value.reason is not None
    assert closed.value.reason.code == 4021
    assert net.handshakes[-1].headers["authorization"] == "<redacted>"


async def test_insufficient_balance_is_refused_before_any_worker_runs() -> None:
    worker = RecordingWorker()
    with trio.fail_after(TIMEOUT):
        async with network(workers=[worker]) as (net, _http):
            record = net.add_account("poor", wallet_address=ADDRESS, balance="0.01")
            key = net.create_api_key(record)
            async with socket_with(net, [(b"api-key", key.encode())]) as (ws, _auth):
                # max_tokens 8192 at 1 USD / million tokens and 100 sogni / USD: ~0.82 sogni.
                await send(ws, job("too-dear"))
                refused = await recv(ws)
                # Spark is a separate balance: 0, so refused as well.
                await send(ws, job("spark-job", max_tokens=5, token_type="spark"))
                refused_spark = await recv(ws)
                # A request small enough to be covered (~0.002 sogni) runs.
                await send(ws, job("cheap", max_tokens=5))
                last = await until_end(ws, "cheap")
    assert isinstance(refused, LLMJobError)
    assert refused.job_id == "too-dear"
    assert refused.error == "insufficient_balance"
    assert refused.error_message is not None
    assert "insufficient sogni balance" in refused.error_message.lower()
    assert isinstance(refused_spark, LLMJobError)
    assert refused_spark.error == "insufficient_balance"
    assert worker.ran == ["cheap"]
    assert isinstance(last, LLMJobResult)
    assert [r.job_id for r in net.job_records] == ["cheap"]


async def test_balance_update_after_a_job_carries_the_debited_amount() -> None:
    with trio.fail_after(TIMEOUT):
        async with network() as (net, http):
            record = net.add_account("payer", wallet_address=ADDRESS, balance=10)
            pair = net.issue_tokens(record)
            headers = [(b"authorization", pair.token.encode())]
            async with socket_with(net, headers) as (ws, _auth):
                await send(ws, job("billed-1", max_tokens=50))
                result = await until_end(ws, "billed-1")
                update = await recv(ws)
                funded_to = net.fund(record, "2.5")
                funded = await recv(ws)
            rest = await http.get("/v4/account/balance", headers={"authorization": pair.token})
            settled = net.balance(record)
    assert isinstance(result, LLMJobResult)
    assert result.cost is not None
    cost = Decimal(str(result.cost.cost_in_token))
    assert cost > 0
    assert isinstance(update, BalanceUpdate)
    assert update.sogni is not None
    assert Decimal(str(update.sogni.settled)) == Decimal(10) - cost
    assert Decimal(str(update.sogni.net)) == Decimal(10) - cost
    assert Decimal(str(update.sogni.debit)) == 0
    assert update.spark is not None
    assert settled == Decimal("12.5") - cost
    assert funded_to == Decimal("12.5") - cost
    assert isinstance(funded, BalanceUpdate)
    assert funded.sogni is not None
    assert Decimal(str(funded.sogni.settled)) == funded_to
    assert Decimal(rest.json()["data"]["sogni"]["settled"]) == funded_to


async def test_live_jobs_hold_their_estimate() -> None:
    release = trio.Event()

    class GatedWorker(SimulatedWorker):
        @override
        async def run(self, job: JobContext) -> None:
            await release.wait()
            await super().run(job)

    with trio.fail_after(TIMEOUT):
        async with network(workers=[GatedWorker("gated", capacity=4)]) as (net, http):
            # Each job (max_tokens 5000 plus the prompt) reserves a little over 0.5 sogni.
            record = net.add_account("holder", wallet_address=ADDRESS, balance=1)
            key = net.create_api_key(record)
            async with socket_with(net, [(b"api-key", key.encode())]) as (ws, _auth):
                await send(ws, job("held-1", max_tokens=5000))
                await net.wait_until(lambda: net.statistics().running_jobs == 1)
                during = await http.get("/v4/account/balance", headers={"api-key": key})
                await send(ws, job("held-2", max_tokens=5000))
                second = await until_end(ws, "held-2")
                release.set()
                first = await until_end(ws, "held-1")
    sogni = during.json()["data"]["sogni"]
    assert Decimal(sogni["settled"]) == 1
    assert Decimal(sogni["debit"]) > Decimal("0.5")
    assert Decimal(sogni["net"]) == 1 - Decimal(sogni["debit"])
    assert isinstance(second, LLMJobError)
    assert second.error == "insufficient_balance"
    assert isinstance(first, LLMJobResult)


def stall(request: LLMJobRequest) -> list[Step]:
    return [Stall()]


async def test_an_aborted_job_releases_its_hold_without_charge() -> None:
    with trio.fail_after(TIMEOUT):
        async with network(script=stall) as (net, http):
            record = net.add_account("quitter", wallet_address=ADDRESS, balance=1)
            key = net.create_api_key(record)
            async with socket_with(net, [(b"api-key", key.encode())]) as (ws, _auth):
                await send(ws, job("stalled", max_tokens=5000))
                await net.wait_until(lambda: net.statistics().running_jobs == 1)
                held = (await http.get("/v4/account/balance", headers={"api-key": key})).json()
                await send(ws, AbortJob(job_id="stalled", error="artistCanceled"))
                await net.wait_until(lambda: net.live_jobs == 0)
                after = (await http.get("/v4/account/balance", headers={"api-key": key})).json()
                assert net.balance(record) == 1
    assert Decimal(held["data"]["sogni"]["debit"]) > 0
    assert after["data"]["sogni"] == {"settled": "1", "credit": "0", "debit": "0", "net": "1"}


async def test_default_account_is_unmetered_unless_asked() -> None:
    with trio.fail_after(TIMEOUT):
        async with network() as (net, _http):
            async with socket_with(net, [(b"api-key", net.api_key.encode())]) as (ws, _auth):
                await send(ws, job("free"))
                assert isinstance(await until_end(ws, "free"), LLMJobResult)
            assert net.balance(net.account.id) == Decimal(net.account.sogni_balance)
        async with network(meter_default_account=True) as (net, _http):
            async with socket_with(net, [(b"api-key", net.api_key.encode())]) as (ws, _auth):
                await send(ws, job("metered"))
                assert isinstance(await until_end(ws, "metered"), LLMJobResult)
                assert isinstance(await recv(ws), BalanceUpdate)
            assert net.balance(net.account.id) < Decimal(net.account.sogni_balance)


async def test_authenticator_override_still_decides() -> None:
    from trio_sogni.localnet import Account

    custom = Account(id="custom", username="custom", wallet_address=ADDRESS)

    def authenticator(headers: Any) -> Account | None:
        return custom if headers.get("x-test") == "yes" else None

    with trio.fail_after(TIMEOUT):
        async with network(authenticator=authenticator) as (net, http):
            ok = await http.get("/v1/account/me", headers={"x-test": "yes"})
            key_refused = await http.get("/v1/account/me", headers={"api-key": net.api_key})
            balance = await http.get("/v4/account/balance", headers={"x-test": "yes"})
            logout = await http.post("/v1/account/logout", headers={"x-test": "yes"})
    assert ok.json()["data"]["id"] == "custom"
    assert_error(key_refused, 401)
    assert balance.json()["data"]["sogni"]["settled"] == custom.sogni_balance
    assert logout.status_code == 200


# -- persistence ------------------------------------------------------------------------------


async def test_accounts_balances_keys_and_sessions_persist(tmp_path: Path) -> None:
    database = tmp_path / "localnet.sqlite"
    with trio.fail_after(TIMEOUT):
        async with network(database=database, api_key="first-run-key") as (net, http):
            record = net.add_account("keeper", wallet_address=ADDRESS, balance=5)
            key = net.create_api_key(record)
            net.fund(record, 1, "spark")
            refresh = (await login(http, KEY)).json()["data"]["refreshToken"]
        async with network(database=database, api_key="second-run-key") as (net, http):
            assert net.get_account("keeper") == record
            assert net.balance("keeper") == 5
            assert net.balance("keeper", "spark") == 1
            with_key = await http.get("/v1/account/me", headers={"api-key": key})
            old_default_key = await http.get("/v1/account/me", headers={"api-key": "first-run-key"})
            rotated = await http.post("/v1/account/refresh-token", json={"refreshToken": refresh})
            logged_in = await login(http, KEY)
    assert with_key.json()["data"]["username"] == "keeper"
    assert old_default_key.status_code == 200
    assert rotated.status_code == 200
    assert logged_in.status_code == 200
    # Only digests of API keys are stored, never the keys or tokens themselves.
    dump = "\n".join(sqlite3.connect(database).iterdump())
    for secret in (key, "first-run-key", "second-run-key", refresh):
        assert secret not in dump
    assert hashlib.sha256(key.encode()).hexdigest() in dump


async def test_a_conflicting_default_account_is_refused(tmp_path: Path) -> None:
    from trio_sogni.localnet import Account

    database = tmp_path / "db.sqlite"
    async with network(database=database) as (net, _http):
        net.add_account("taken", wallet_address=ADDRESS)
    with pytest.raises(DuplicateAccount):
        async with network(database=database, account=Account(username="TAKEN")):
            pass  # pragma: no cover


# -- the CLI ----------------------------------------------------------------------------------


async def test_cli_user_option_creates_accounts_that_can_log_in(tmp_path: Path) -> None:
    database = str(tmp_path / "cli.sqlite")
    options = ["--database", database, "--user", "Alice:pa:ss:42", "--user", "bob:pw", "--testnet"]
    key = hashlib.pbkdf2_hmac("sha256", b"alicepa:ss", b"sogni-salt-value", 10_000, 32)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            assert set(info) == {"rest_url", "socket_url", "api_key"}
            async with httpx.AsyncClient(base_url=info["rest_url"]) as http:
                mainnet = await login(http, "0x" + key.hex())
                response = await login(http, "0x" + key.hex(), testnet=True)
                token = response.json()["data"]["token"]
                balance = await http.get("/v4/account/balance", headers={"authorization": token})
                me = await http.get("/v1/account/me", headers={"api-key": info["api_key"]})
            process.terminate()
        # A second run on the same database keeps both users (and does not re-create them).
        async with trio.open_nursery() as nursery:
            process, info = await start_localnet_cli(nursery, options)
            async with httpx.AsyncClient(base_url=info["rest_url"]) as http:
                again = await login(http, "0x" + key.hex(), testnet=True)
            process.terminate()
    assert_error(mainnet, 401)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["username"] == "Alice"
    assert balance.json()["data"]["sogni"]["settled"] == "42"
    assert me.status_code == 200
    assert again.status_code == 200


async def test_cli_user_with_another_password_is_a_clear_error(tmp_path: Path) -> None:
    database = str(tmp_path / "cli.sqlite")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            process, _ = await start_localnet_cli(
                nursery, ["--database", database, "--user", "zoe:one"]
            )
            process.terminate()
        args = [sys.executable, "-c", LOCALNET_CLI, "--database", database, "--user", "zoe:two"]
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"--user: user 'zoe' exists with another password" in result.stderr
    assert b"Traceback" not in result.stderr
    assert b"two" not in result.stderr.replace(b"zoe", b"")


def test_eth_account_is_imported_on_first_use_and_pulls_in_no_client_code() -> None:
    code = (
        "import sys, trio_sogni.localnet as ln\n"
        "print('eth_account' in sys.modules)\n"
        "ln.wallet_from_password('a', 'b')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('trio_sogni'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    before, ours = out.stdout.splitlines()
    assert before == "False"
    loaded = set(ours.split()) - {"trio_sogni"}
    assert all(
        m.startswith(("trio_sogni.localnet", "trio_sogni.protocol", "trio_sogni._groups"))
        for m in loaded
    )


def test_generated_api_keys_never_look_like_a_command_line_option() -> None:
    """About 1 in 64 ``token_urlsafe`` keys starts with ``-``, which ``--api-key KEY`` reads as
    an option; generated keys never do, and keep the same length and alphabet."""
    from trio_sogni.localnet._accounts._accounts import new_api_key

    keys = [new_api_key() for _ in range(5_000)]
    assert not any(key.startswith("-") for key in keys)
    assert {len(key) for key in keys} == {32}
    assert len(set(keys)) == len(keys)
