"""Estimates and hosted completions through the trio_sogni client against localnet over TCP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
from helpers import MODEL, client_for, local_network

import trio_sogni
from trio_sogni import ChatJobError, InvalidRequestError, estimate_input_tokens

TIMEOUT = 20


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_estimate_matches_what_the_job_then_costs() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net, client_for(net) as sogni:
            await sogni.chat.wait_for_models()
            messages = user("Grüße 😀 " * 20)
            quote = await sogni.chat.estimate_cost(model=MODEL, messages=messages, max_tokens=50)
            assert quote.input_tokens == estimate_input_tokens(messages)
            assert quote.output_tokens == 50
            assert quote.cost_in_usd > 0
            assert quote.cost_in_token == quote.cost_in_sogni
            # The model default is used when max_tokens is not given.
            default = sogni.chat.models[MODEL].max_output_tokens
            assert default is not None
            by_default = await sogni.chat.estimate_cost(model=MODEL, messages=messages)
            assert by_default.output_tokens == default.default
            spark = await sogni.chat.estimate_cost(
                model=MODEL, messages=messages, max_tokens=50, token_type="spark"
            )
            assert spark.cost_in_token == spark.cost_in_spark
            with pytest.raises(InvalidRequestError):
                await sogni.chat.estimate_cost(model=MODEL, messages=[], max_tokens=5)
            with pytest.raises((ChatJobError, trio_sogni.APIStatusError)) as info:
                await sogni.chat.estimate_cost(model="no/such-model", messages=messages)
            assert (
                getattr(info.value, "status", None) == 404
                or getattr(info.value, "status_code", None) == 404
            )


async def test_a_model_id_with_a_slash_is_encoded_as_one_segment() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            local_network(models=["org/model-a"]) as net,
            client_for(net) as sogni,
        ):
            await sogni.chat.wait_for_models()
            quote = await sogni.chat.estimate_cost(
                model="org/model-a", messages=user("hi"), max_tokens=3
            )
            assert quote.output_tokens == 3
            record = [r for r in net.http_requests if "estimate" in r.path][-1]
            assert record.status == 200  # one segment: the router matched it to {model}
            assert record.path.endswith("/org%2Fmodel-a/8/3")


async def test_hosted_completion_and_billing() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net:
            net.add_account("hosted", password="pw", balance=100)
            async with trio_sogni.open_sogni_client(
                username="hosted",
                password="pw",
                socket_endpoint=net.socket_url,
                rest_endpoint=net.rest_url,
            ) as sogni:
                completion = await sogni.chat.hosted.create(
                    model=MODEL, messages=user("hi there"), max_tokens=50, billing_mode="tokens"
                )
                assert completion.content == "Simulated reply to: hi there"
                assert completion.choices[0].finish_reason == "stop"
                assert completion.usage is not None
                assert completion.usage.completion_tokens == 5  # one word per chunk
                body = net.http_requests[-1]
                assert body.path == "/v1/chat/completions"
                assert net.balance("hosted") < Decimal(100)
                with pytest.raises(InvalidRequestError):
                    await sogni.chat.hosted.create(
                        model=MODEL,
                        messages=user("x"),
                        stream=True,  # type: ignore[arg-type]
                    )
                with pytest.raises(ChatJobError) as info:
                    await sogni.chat.hosted.create(model="unknown-model", messages=user("x"))
                assert info.value.status == 404


async def test_hosted_composition_tool() -> None:
    with trio.fail_after(TIMEOUT):
        async with local_network() as net, client_for(net) as sogni:
            arguments = {
                "prompt": "a cat on a roof",
                "target_output": "image_prompt",
                "destination_model": "sdxl",
            }
            result = await sogni.chat.hosted.execute_tool("enhance_prompt", arguments)
            assert result.tool == "enhance_prompt"
            assert isinstance(result.result, dict)
            assert result.tool_call_id
            with pytest.raises(ChatJobError) as info:  # the server checks the arguments
                await sogni.chat.hosted.execute_tool("enhance_prompt", {"prompt": "x"})
            assert info.value.status == 400
            # any tool name is sent; the server decides (localnet runs no generate_image here)
            with pytest.raises(ChatJobError) as info:
                await sogni.chat.hosted.execute_tool("generate_image", {"prompt": "x"})
            assert info.value.status == 404
            assert "not supported by localnet" in str(info.value)
            with pytest.raises(InvalidRequestError):  # a request shape refused client-side
                await sogni.chat.hosted.execute_tool("", {"prompt": "x"})
