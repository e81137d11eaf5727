"""OpenAIBridgeWorker end to end: localnet forwarding to ``python -m llama_cpp.server`` (a
subprocess on a free loopback port) running the same SmolLM2 GGUF."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_sogni.localnet import LlamaCppWorker, OpenAIBridgeWorker

# Real inference: more than the default deadline (tests/deadline.py); each test also has its own.
pytestmark = pytest.mark.deadline(300)

MODEL = "smollm2-135m-instruct"
POEM = [{"role": "user", "content": "Write a long poem about the sea."}]


async def test_bridge_streams_the_upstream_model(
    llama_server: str, serve: Any, client: Any, llama: LlamaCppWorker
) -> None:
    with trio.fail_after(60):
        bridge = await OpenAIBridgeWorker.connect(llama_server)
        assert bridge.models == (MODEL,)
        async with serve(bridge) as net, client(net) as sogni:
            async with sogni.chat.completions.stream(
                model=MODEL, messages=POEM, max_tokens=24, temperature=0
            ) as stream:
                chunks = [chunk.content async for chunk in stream if chunk.content]
                bridged = await stream.wait()
            again = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=24, temperature=0
            )
            stopped = await sogni.chat.completions.create(
                model=MODEL,
                messages=POEM,
                max_tokens=24,
                temperature=0,
                top_k=1,
                top_p=0.9,
                min_p=0.05,
                repetition_penalty=1.0,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                stop=[bridged.content.split()[3]],
            )
        async with serve(llama) as net, client(net) as sogni:
            local = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=24, temperature=0
            )
    assert len(chunks) > 1
    assert bridged.finish_reason == "length"
    assert bridged.usage.completion_tokens == 24
    assert again.content == bridged.content
    # Same GGUF, same template, greedy: the answers start alike (llama_cpp.server's own sampler
    # defaults, e.g. repeat_penalty 1.1, make them drift apart later).
    assert bridged.content.split()[:4] == local.content.split()[:4]
    assert stopped.finish_reason == "stop"
    assert bridged.content.startswith(stopped.content)
    assert len(stopped.content) < len(bridged.content)


async def test_bridge_abort_frees_the_worker(llama_server: str, serve: Any, client: Any) -> None:
    counting = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
    with trio.fail_after(60):
        bridge = await OpenAIBridgeWorker.connect(llama_server)
        async with serve(bridge) as net, client(net) as sogni:
            received = 0
            async with sogni.chat.completions.stream(
                model=MODEL, messages=counting, max_tokens=1500, temperature=0
            ) as stream:
                async for chunk in stream:
                    received += bool(chunk.content)
                    if received >= 3:
                        break  # aborts the job: the bridge closes the upstream response
            await net.wait_until(lambda: any(r.outcome == "aborted" for r in net.job_records))
            started = trio.current_time()
            after = await sogni.chat.completions.create(
                model=MODEL, messages=POEM, max_tokens=8, temperature=0
            )
            waited = trio.current_time() - started
    assert after.usage.completion_tokens == 8
    # llama_cpp.server stops generating when the client goes away; the next job does not wait
    # for the 1500 tokens the aborted one asked for.
    assert waited < 5.0
