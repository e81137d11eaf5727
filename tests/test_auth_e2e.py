"""Every sign-in mode end to end: the trio_sogni client against localnet over loopback TCP."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from helpers import MODEL, local_network

import trio_sogni
from trio_sogni import AuthenticationError, InvalidRequestError, SogniClient
from trio_sogni._auth import derive_wallet
from trio_sogni.localnet import LocalNetwork

TIMEOUT = 20
PASSWORD = "correct horse battery staple"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Clock:
    """A wall clock both sides read, so token expiry can be moved without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def client(net: LocalNetwork, **kwargs: Any) -> Any:
    return trio_sogni.open_sogni_client(
        socket_endpoint=net.socket_url, rest_endpoint=net.rest_url, wall_clock=net.clock, **kwargs
    )


async def stream_text(sogni: SogniClient, text: str) -> str:
    async with sogni.chat.completions.stream(model=MODEL, messages=user(text)) as stream:
        async for _ in stream:
            pass
    return stream.content


async def test_username_and_password_login_streams_and_reads_the_account() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net:
            net.add_account("Alice", password=PASSWORD, balance=50)
            async with client(net, username="alice", password=PASSWORD) as sogni:
                assert sogni.account.auth_mode == "session"
                assert sogni.authenticated is not None
                assert await stream_text(sogni, "hi") == "Simulated reply to: hi"
                me = await sogni.account.me()
                assert me.username == "Alice"
                assert me.wallet_address == derive_wallet("alice", PASSWORD).address
                balance = await sogni.account.balance()
                assert balance.sogni is not None
                assert float(balance.sogni.settled) < 50  # the job was paid for
            # The socket upgrade carried the JWT, not an API key.
            assert "authorization" in net.handshakes[-1].headers
            assert "api-key" not in net.handshakes[-1].headers


async def test_wallet_login_and_testnet_domain() -> None:
    wallet = derive_wallet("bob", "pw")  # any key will do
    with trio.fail_after(TIMEOUT):
        async with local_network(testnet=True) as net:
            net.add_account("bob", wallet_address=wallet.address)
            async with client(net, wallet_private_key=wallet.key.hex(), testnet=True) as sogni:
                assert (await sogni.account.me()).username == "bob"
                assert sogni.eip712.domain["chainId"] == 84532
            # A mainnet-domain signature recovers another address: refused, clearly.
            with pytest.raises(AuthenticationError, match="login failed"):
                async with client(net, wallet_private_key=wallet):
                    pass


async def test_wrong_password_is_a_typed_error_without_secrets() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net:
            net.add_account("carol", password=PASSWORD)
            with pytest.raises(AuthenticationError) as info:
                async with client(net, username="carol", password="wrong password"):
                    pass
            assert "wrong password" not in str(info.value)
            assert "login failed" in str(info.value)


# A refresh while jobs stream is tested in virtual time: tests/test_virtual_time.py.


async def test_concurrent_refreshes_coalesce_into_one_request() -> None:
    clock = Clock()
    with trio.fail_after(TIMEOUT):
        async with local_network(clock=clock, access_token_ttl=600) as net:
            net.add_account("erin", password=PASSWORD)
            async with client(net, username="erin", password=PASSWORD) as sogni:
                before = sum(1 for r in net.http_requests if r.path == "/v1/account/refresh-token")
                clock.now += 595
                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(sogni.account.me)
                refreshes = [r for r in net.http_requests if r.path == "/v1/account/refresh-token"]
                assert len(refreshes) - before == 1


async def test_revoked_refresh_token_and_logout() -> None:
    clock = Clock()
    with trio.fail_after(TIMEOUT):
        async with local_network(clock=clock, access_token_ttl=600) as net:
            net.add_account("frank", password=PASSWORD)
            async with client(net, username="frank", password=PASSWORD) as sogni:
                net.revoke_refresh_tokens("frank")
                clock.now += 1000  # expired access token: a refresh is needed and refused
                with pytest.raises(AuthenticationError, match="HTTP 401"):
                    await sogni.account.me()
                with pytest.raises(AuthenticationError):  # never retried on its own
                    await sogni.account.me()
            async with client(net, username="frank", password=PASSWORD) as sogni:
                await sogni.account.logout()
                assert sogni.account.tokens is None
                with pytest.raises(AuthenticationError, match="logged out"):
                    await sogni.account.me()


async def test_create_account_then_sign_in_with_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net:
            async with client(net, api_key=net.api_key) as sogni:
                tokens = await sogni.account.create_account(
                    username="grace", email="grace@example.com", password=PASSWORD
                )
                with pytest.raises(AuthenticationError, match="signup failed"):
                    await sogni.account.create_account(
                        username="GRACE", email="g2@example.com", password="other"
                    )
            async with client(net, tokens=tokens) as fresh:
                assert (await fresh.account.me()).username == "grace"
            async with client(net, username="grace", password=PASSWORD) as again:
                assert (await again.account.me()).wallet_address == (
                    derive_wallet("grace", PASSWORD).address
                )


async def test_sign_in_arguments_are_checked_before_anything_is_sent() -> None:
    async with local_network() as net:
        cases: list[dict[str, Any]] = [
            {},
            {"api_key": net.api_key, "username": "a", "password": "b"},
            {"username": "a"},
            {"password": "b"},
            {"wallet_private_key": "0x1234"},
            {"tokens": {"token": "x"}},
        ]
        for kwargs in cases:
            with pytest.raises(InvalidRequestError):
                async with client(net, **kwargs):
                    pass
        assert list(net.http_requests) == []
        assert list(net.handshakes) == []


async def test_insufficient_balance_is_refused_before_any_worker_runs() -> None:
    ran: list[str] = []

    def script(request: Any) -> None:
        ran.append(request.job_id)

    with trio.fail_after(TIMEOUT):
        async with local_network(script=script) as net:
            net.add_account("hank", password=PASSWORD, balance=0)
            async with client(net, username="hank", password=PASSWORD) as sogni:
                with pytest.raises(trio_sogni.ChatJobError) as info:
                    await sogni.chat.completions.create(model=MODEL, messages=user("x"))
            assert info.value.error_type == "insufficient_balance"
            assert ran == []


async def test_no_secret_reaches_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    secrets: list[str] = [PASSWORD]
    seen: list[str] = []

    def collect(*values: object) -> None:
        seen.extend(repr(v) for v in values)
        seen.extend(str(v) for v in values)

    with trio.fail_after(TIMEOUT):
        async with local_network(clock=clock, access_token_ttl=600) as net:
            net.add_account("ivy", password=PASSWORD, balance=100)
            wallet = derive_wallet("ivy", PASSWORD)
            secrets += [wallet.key.hex(), net.api_key]
            async with client(net, username="ivy", password=PASSWORD) as sogni:
                tokens = sogni.account.tokens
                assert tokens is not None
                secrets += [tokens.token, tokens.refresh_token]
                await stream_text(sogni, "hello")
                clock.now += 595
                await sogni.account.me()  # refresh
                tokens = sogni.account.tokens
                assert tokens is not None
                secrets += [tokens.token, tokens.refresh_token]
                collect(sogni, sogni.account, sogni.eip712, sogni.rest, sogni.chat, tokens)
                await sogni.account.logout()
                try:
                    await sogni.account.me()
                except AuthenticationError as exc:
                    collect(exc)
            for kwargs in (
                {"username": "ivy", "password": PASSWORD + "x"},
                {"api_key": net.api_key + "x"},
                {"tokens": tokens},
            ):
                try:
                    async with client(net, **kwargs):
                        pass
                except (AuthenticationError, trio_sogni.ConnectError) as exc:
                    collect(exc, exc.__cause__, exc.__context__)
    text = caplog.text + "\n".join(seen)
    assert caplog.records  # logging was on and something was logged
    leaked = [s for s in secrets if s and s in text]
    assert leaked == []
