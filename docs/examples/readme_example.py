import trio

import trio_sogni
from trio_sogni.localnet import open_local_network


async def main() -> None:
    async with (
        open_local_network() as net,
        trio_sogni.open_sogni_client(
            api_key=net.api_key, socket_endpoint=net.socket_url, rest_endpoint=net.rest_url
        ) as sogni,
    ):
        models = await sogni.chat.wait_for_models()
        async with await sogni.chat.completions.create(
            model=next(iter(models)),
            messages=[{"role": "user", "content": "Hello from Trio"}],
            stream=True,
        ) as stream:
            async for chunk in stream:
                print(chunk.content or "", end="", flush=True)
        print("\n", stream.final_result)


trio.run(main)
