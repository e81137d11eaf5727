"""localnet prices: the price table, the estimate endpoint, and quote == settlement."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from helpers import start_localnet_cli

from trio_sogni.localnet import (
    LocalNetwork,
    ModelPrice,
    ModelSpec,
    Pricing,
    parse_prices,
)
from trio_sogni.localnet._hosted._prices import load_prices
from trio_sogni.protocol import LLMJobRequest, LLMJobResult

from .conftest import Wire

SLASH_MODEL = "org/qwen-7b"
PRICES = Pricing(
    input_usd_per_million_tokens=Decimal("0.5"),
    output_usd_per_million_tokens=Decimal("1.5"),
    models={
        SLASH_MODEL: ModelPrice(
            input_usd_per_million_tokens=Decimal("0.2"),
            output_usd_per_million_tokens=Decimal("0.6"),
        )
    },
    usd_per_sogni=Decimal("0.03"),
    usd_per_spark=Decimal("0.01"),
)


def estimate_url(token_type: str, model: str, inputs: int | str, outputs: int | str) -> str:
    from urllib.parse import quote

    return f"/api/v1/job-llm/estimate/{token_type}/{quote(model, safe='')}/{inputs}/{outputs}"


def decimal_json(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal, parse_int=Decimal)


# -- the table ----------------------------------------------------------------------------------


def test_flat_price_stays_compatible() -> None:
    pricing = Pricing(usd_per_million_tokens=Decimal(2))
    cost = pricing.cost(1_000_000, 500_000, "spark")
    assert cost.cost_in_usd == "3"
    assert cost.cost_in_token == cost.cost_in_spark == "300"
    assert pricing.estimate(10, 20, "sogni") == "0.006"


def test_per_model_prices_and_rates_are_exact_decimals() -> None:
    quote = PRICES.quote(3, 7, "sogni", model=SLASH_MODEL)
    assert quote.usd == Decimal("0.0000048")  # (3 * 0.2 + 7 * 0.6) / 1e6
    assert quote.sogni == Decimal("0.00016")  # / 0.03
    assert quote.spark == Decimal("0.00048")
    assert quote.token == quote.sogni
    assert hash(PRICES) == hash(PRICES)  # still usable as a key, as before per-model prices
    other = PRICES.quote(1_000_000, 1_000_000, "spark", model="unknown")
    assert (other.usd, other.token) == (Decimal(2), Decimal(200))


def test_rates_that_do_not_divide_exactly_round_to_12_places() -> None:
    quote = Pricing(usd_per_sogni=Decimal("0.03")).quote(1, 0, "sogni")
    assert quote.sogni == Decimal("0.000033333333")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"usd_per_million_tokens": Decimal(-1)},
        {"input_usd_per_million_tokens": Decimal("NaN")},
        {"usd_per_sogni": Decimal(0)},
        {"models": {"m": "1"}},
    ],
)
def test_bad_prices_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Pricing(**kwargs)


def test_parse_prices_reads_every_key_as_decimal() -> None:
    pricing = parse_prices(
        '{"default": {"input": 0.5, "output": "1.5"}, "models": {"org/qwen-7b": '
        '{"input": 0.2, "output": 0.6}}, "usdPerSogni": 0.03, "usdPerSpark": "0.01"}'
    )
    assert pricing.quote(3, 7, "sogni", model=SLASH_MODEL) == PRICES.quote(
        3, 7, "sogni", model=SLASH_MODEL
    )
    assert pricing.quote(5, 5, "spark") == PRICES.quote(5, 5, "spark")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[]", "prices: expected an object"),
        ('{"defaults": {}}', "unknown key 'defaults'"),
        ('{"default": {"input": 1}}', "missing 'output'"),
        ('{"models": {"m": {"input": true, "output": 1}}}', "prices.models['m'].input"),
        ('{"usdPerSogni": -1}', "usd_per_sogni"),
        ("{", "not valid JSON"),
    ],
)
def test_parse_prices_errors_say_where(text: str, where: str) -> None:
    with pytest.raises(ValueError, match=re.escape(where)):
        parse_prices(text)


def test_load_prices_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"default": {"input": "4", "output": "4"}}')
    assert load_prices(path).quote(250_000, 0, "sogni").usd == Decimal(1)


# -- the endpoint -------------------------------------------------------------------------------


async def test_estimate_endpoint_quotes_a_model_id_with_a_slash() -> None:
    from trio_sogni.localnet import open_local_network

    async with (
        open_local_network(models=[SLASH_MODEL, "plain"], pricing=PRICES) as net,
        httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": net.api_key}) as http,
    ):
        response = await http.get(estimate_url("sogni", SLASH_MODEL, 3, 7))
        assert response.status_code == 200, response.text
        body = decimal_json(response)
        assert set(body) == {"request", "quote"}
        assert body["request"]["model"] == SLASH_MODEL
        assert body["request"]["inputTokens"] == 3
        assert body["request"]["maxOutputTokens"] == 7
        assert body["request"]["tokenType"] == "sogni"
        assert isinstance(body["request"]["time"], Decimal)
        assert body["quote"] == {
            "costInUSD": Decimal("0.0000048"),
            "costInSogni": Decimal("0.00016"),
            "costInSpark": Decimal("0.00048"),
            "costInToken": Decimal("0.00016"),
            "inputTokens": 3,
            "outputTokens": 7,
        }
        # Values are JSON numbers, not strings.
        assert '"costInUSD":0.0000048' in response.text
        spark = decimal_json(await http.get(estimate_url("spark", "plain", 1_000_000, 0)))
        assert spark["quote"]["costInToken"] == Decimal(50)  # 0.5 USD / 0.01
        assert (
            '"costInSpark":50,' in (await http.get(estimate_url("spark", "plain", 10**6, 0))).text
        )


async def test_estimate_endpoint_errors(net: LocalNetwork) -> None:
    model = next(iter(net.models))
    async with httpx.AsyncClient(base_url=net.rest_url) as http:
        auth = {"api-key": net.api_key}
        unauthenticated = await http.get(estimate_url("sogni", model, 1, 1))
        assert unauthenticated.status_code == 401
        wrong_key = await http.get(estimate_url("sogni", model, 1, 1), headers={"api-key": "x"})
        assert wrong_key.status_code == 401
        for path, status in [
            (estimate_url("bitcoin", model, 1, 1), 400),
            (estimate_url("sogni", model, -1, 1), 400),
            (estimate_url("sogni", model, 1, "1.5"), 400),
            (estimate_url("sogni", model, "ten", 1), 400),
            (estimate_url("sogni", model, 1, 10**9), 400),
            (estimate_url("sogni", "no/such-model", 1, 1), 404),
        ]:
            response = await http.get(path, headers=auth)
            assert response.status_code == status, path
            body = response.json()
            assert body["status"] == "error"
            assert body["errorCode"] == status
            assert isinstance(body["message"], str)


async def test_quote_equals_settlement_and_debit(
    wire_for: Callable[[LocalNetwork], Wire], make_request: Callable[..., LLMJobRequest]
) -> None:
    """A job whose usage is (in, out) settles at exactly quote(in, out), and that is debited."""
    from trio_sogni.localnet import open_local_network

    async with open_local_network(models=[SLASH_MODEL], pricing=PRICES) as net:
        net.add_account("payer", password="pw", balance=1000)
        key = net.create_api_key("payer")
        wire = wire_for(net)
        before = net.balance("payer")
        async with wire.connect(api_key=key) as ws:
            await wire.send(ws, make_request("job-1", "price me", model=SLASH_MODEL, max_tokens=50))
            frames = await wire.collect(ws, "job-1")
        result = frames[-1]
        assert isinstance(result, LLMJobResult)
        assert result.usage is not None
        assert result.cost is not None
        used_in, used_out = result.usage.prompt_tokens, result.usage.completion_tokens
        assert used_out > 0
        async with httpx.AsyncClient(base_url=net.rest_url, headers={"api-key": key}) as http:
            response = await http.get(estimate_url("sogni", SLASH_MODEL, used_in, used_out))
        quote = decimal_json(response)["quote"]
        cost = result.cost
        assert Decimal(str(cost.cost_in_usd)) == quote["costInUSD"]
        assert Decimal(str(cost.cost_in_sogni)) == quote["costInSogni"]
        assert Decimal(str(cost.cost_in_spark)) == quote["costInSpark"]
        assert Decimal(str(cost.cost_in_token)) == quote["costInToken"]
        assert (cost.input_tokens, cost.output_tokens) == (used_in, used_out)
        assert before - net.balance("payer") == quote["costInToken"]
        assert quote["costInToken"] > 0


async def test_reservation_uses_the_model_price(
    wire_for: Callable[[LocalNetwork], Wire], make_request: Callable[..., LLMJobRequest]
) -> None:
    """The hold (``estimatedCost``) is quote(prompt, max_tokens) of the job's model."""
    from trio_sogni.localnet import open_local_network
    from trio_sogni.protocol import JobState

    expensive = Pricing(
        models={
            "dear": ModelPrice(
                input_usd_per_million_tokens=Decimal(1000),
                output_usd_per_million_tokens=Decimal(1000),
            )
        }
    )
    async with open_local_network(
        models=[ModelSpec(name="dear"), ModelSpec(name="cheap")], pricing=expensive
    ) as net:
        net.add_account("payer", password="pw", balance=1)
        key = net.create_api_key("payer")
        wire = wire_for(net)
        async with wire.connect(api_key=key) as ws:
            await wire.send(ws, make_request("cheap-1", "hi", model="cheap", max_tokens=100))
            frames = await wire.collect(ws, "cheap-1")
            pending = frames[0]
            assert isinstance(pending, JobState)
            assert pending.estimated_cost == expensive.estimate(
                frames[-1].usage.prompt_tokens,  # type: ignore[union-attr]
                100,
                "sogni",
                model="cheap",
            )
            await wire.send(ws, make_request("dear-1", "hi", model="dear", max_tokens=100))
            refused = await wire.collect(ws, "dear-1")
        assert [type(f).__name__ for f in refused] == ["LLMJobError"]
        assert refused[0].error == "insufficient_balance"  # type: ignore[union-attr]


async def test_cli_prices_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "default": {"input": "3", "output": "5"},
                "models": {SLASH_MODEL: {"input": "0.2", "output": "0.6"}},
                "usdPerSogni": "0.5",
            }
        )
    )
    async with trio.open_nursery() as nursery:
        process, info = await start_localnet_cli(
            nursery, ["--model", SLASH_MODEL, "--model", "other", "--prices", str(path)]
        )
        try:
            async with httpx.AsyncClient(
                base_url=info["rest_url"], headers={"api-key": info["api_key"]}
            ) as http:
                slash = decimal_json(await http.get(estimate_url("sogni", SLASH_MODEL, 10, 10)))
                other = decimal_json(await http.get(estimate_url("spark", "other", 10**6, 20_000)))
        finally:
            process.terminate()
    assert slash["quote"]["costInUSD"] == Decimal("0.000008")
    assert slash["quote"]["costInSogni"] == Decimal("0.000016")
    assert other["quote"]["costInUSD"] == Decimal("3.1")  # 3 + 0.02 * 5
    assert other["quote"]["costInToken"] == Decimal(310)  # spark keeps its default 100 per USD


async def test_cli_rejects_a_bad_prices_file(tmp_path: Path) -> None:
    import sys

    from helpers import LOCALNET_CLI

    path = tmp_path / "prices.json"
    path.write_text('{"default": {"input": -1, "output": 1}}')
    result = await trio.run_process(
        [sys.executable, "-c", LOCALNET_CLI, "--prices", str(path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == b""
    assert b"--prices: prices.default" in result.stderr
    assert b"Traceback" not in result.stderr
