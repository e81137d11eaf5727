"""Vision inputs end to end: a real client on localnet's in-memory connections, in virtual time.

The image host is an ``httpx.MockTransport`` behind the client's own ``http_client`` (the
documented way to inject a transport): requests for ``localnet.in-memory`` go to localnet, every
other host to the mock, so no test touches the network. What the simulated worker was asked is
read from ``net.job_requests`` (the ``llmJobRequest`` frames localnet received) or recorded by
its script.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from helpers import IN_MEMORY_REST, IN_MEMORY_SOCKET, MODEL, InMemoryHTTP
from PIL import Image
from projectnet import media_net

import trio_sogni
from trio_sogni import InvalidRequestError, MediaContext, estimate_input_tokens, image_part
from trio_sogni.fanout import FanoutItem
from trio_sogni.localnet import LocalNetwork, Text, open_local_network
from trio_sogni.localnet._media._render import RenderSpec, SimulatedMediaWorker
from trio_sogni.localnet._workers._script import ToolCall as ScriptedCall
from trio_sogni.protocol import FunctionCall, ImageURLPart, LLMJobRequest, ToolCall

pytestmark = pytest.mark.usefixtures("autojump_clock")

SIGNED = "?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"


def png(size: tuple[int, int], color: tuple[int, int, int] = (220, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def user(*urls: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


def sent_images(request: LLMJobRequest) -> list[str]:
    return [
        part.image_url.url
        for message in request.messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, ImageURLPart)
    ]


def size_of(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return image.size


class ImageHost(httpx.AsyncBaseTransport):
    """localnet for its own host; the image files (a mock image host) for every other one."""

    def __init__(self, net: LocalNetwork) -> None:
        self._localnet = InMemoryHTTP(net)
        self._images = httpx.MockTransport(self._serve)
        self.files: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.hold = False

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.hold:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        data = self.files.get(f"{request.url.host}{request.url.path}")
        return httpx.Response(200, content=data) if data is not None else httpx.Response(404)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "localnet.in-memory":
            return await self._localnet.handle_async_request(request)
        return await self._images.handle_async_request(request)


@asynccontextmanager
async def vision_client(
    net: LocalNetwork, **kwargs: Any
) -> AsyncIterator[tuple[trio_sogni.SogniClient, ImageHost]]:
    async def open_stream(host: str, port: int, ssl_context: object) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        return net.connect_in_memory()

    host = ImageHost(net)
    async with (
        httpx.AsyncClient(transport=host) as http,
        trio_sogni.open_sogni_client(
            api_key=net.api_key,
            socket_endpoint=IN_MEMORY_SOCKET,
            rest_endpoint=IN_MEMORY_REST,
            open_stream=open_stream,
            http_client=http,
            **kwargs,
        ) as sogni,
    ):
        yield sogni, host


@asynccontextmanager
async def vision_net(
    **kwargs: Any,
) -> AsyncIterator[tuple[LocalNetwork, trio_sogni.SogniClient, ImageHost]]:
    client_options = {k: kwargs.pop(k) for k in ("resize_images",) if k in kwargs}
    kwargs.setdefault("models", [MODEL])
    async with (
        open_local_network(listen=False, **kwargs) as net,
        vision_client(net, **client_options) as (sogni, host),
    ):
        yield net, sogni, host


# --- completions ---------------------------------------------------------------------------------


async def test_a_trusted_url_reaches_the_worker_as_a_data_uri() -> None:
    cat = png((64, 48))
    async with vision_net() as (net, sogni, host):
        host.files["cdn.sogni.ai/cat.png"] = cat
        host.files["bucket.s3.us-west-2.amazonaws.com/dog.png"] = png((10, 10), (0, 0, 200))
        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=user(
                "https://cdn.sogni.ai/cat.png",
                f"https://bucket.s3.us-west-2.amazonaws.com/dog.png{SIGNED}",
                uri(png((3, 3))),
            ),
        )
        assert result.content
        (request,) = net.job_requests
        first, second, third = sent_images(request)
        assert first == uri(cat)
        assert second == uri(png((10, 10), (0, 0, 200)))
        assert third == uri(png((3, 3)))
        by_host = {r.url.host: r for r in host.requests}  # fetched concurrently: any order
        assert sorted(by_host) == ["bucket.s3.us-west-2.amazonaws.com", "cdn.sogni.ai"]
        assert len(host.requests) == 2
        signed = by_host["bucket.s3.us-west-2.amazonaws.com"].url.query
        assert signed == SIGNED[1:].encode()  # the signed URL is requested as given


async def test_an_oversized_image_is_resized_when_allowed() -> None:
    async with vision_net() as (net, sogni, _):
        await sogni.chat.completions.create(
            model=MODEL, messages=user(uri(png((2000, 1000)))), resize_images=True
        )
        (request,) = net.job_requests
        assert [size_of(url) for url in sent_images(request)] == [(1024, 512)]


async def test_an_oversized_image_is_refused_otherwise_and_nothing_is_sent() -> None:
    async with vision_net() as (net, sogni, host):
        host.files["cdn.sogni.ai/big.png"] = png((1000, 2000))
        for messages in (user(uri(png((2000, 1000)))), user("https://cdn.sogni.ai/big.png")):
            with pytest.raises(InvalidRequestError, match=r"x\d+ pixels.*resize_images=True"):
                await sogni.chat.completions.create(model=MODEL, messages=messages)
            with pytest.raises(InvalidRequestError, match="resize_images=True"):
                async with sogni.chat.completions.stream(model=MODEL, messages=messages):
                    pytest.fail("the stream must not start")  # pragma: no cover
        assert len(net.job_requests) == 0
        assert net.job_ids() == []


async def test_the_client_default_and_the_per_call_override() -> None:
    async with vision_net(resize_images=True) as (net, sogni, host):
        host.files["d7.cloudfront.net/wide.png"] = png((3000, 1500))
        await sogni.chat.completions.create(
            model=MODEL, messages=user("https://d7.cloudfront.net/wide.png")
        )
        assert [size_of(url) for url in sent_images(net.job_requests[-1])] == [(1024, 512)]
        with pytest.raises(InvalidRequestError, match="3000x1500 pixels"):
            await sogni.chat.completions.create(
                model=MODEL,
                messages=user("https://d7.cloudfront.net/wide.png"),
                resize_images=False,
            )
        assert len(net.job_requests) == 1


async def test_a_failed_or_untrusted_image_sends_nothing() -> None:
    async with vision_net() as (net, sogni, host):
        host.files["cdn.sogni.ai/ok.png"] = png((8, 8))
        with pytest.raises(InvalidRequestError, match=r"content\[2\]: cdn\.sogni\.ai .*HTTP 404"):
            await sogni.chat.completions.create(
                model=MODEL,
                messages=user(
                    "https://cdn.sogni.ai/ok.png", f"https://cdn.sogni.ai/gone.png{SIGNED}"
                ),
            )
        with pytest.raises(InvalidRequestError, match=r"'evil\.example' is not trusted") as caught:
            await sogni.chat.completions.create(
                model=MODEL, messages=user(f"https://evil.example/x.png{SIGNED}")
            )
        assert "s3cr3t" not in str(caught.value)
        with pytest.raises(InvalidRequestError, match="only https"):
            await sogni.chat.hosted.create(model=MODEL, messages=user("http://cdn.sogni.ai/ok.png"))
        assert len(net.job_requests) == 0
        assert {r.url.path for r in host.requests} <= {"/ok.png", "/gone.png"}


async def test_fetching_is_cancellable_and_then_nothing_is_sent() -> None:
    async with vision_net() as (net, sogni, host):
        host.hold = True
        with trio.move_on_after(5) as scope:
            await sogni.chat.completions.create(
                model=MODEL, messages=user("https://cdn.sogni.ai/slow.png")
            )
        assert scope.cancelled_caught
        assert len(host.requests) == 1
        assert len(net.job_requests) == 0


async def test_the_fetch_timeout_is_the_clients() -> None:
    async with (
        open_local_network(listen=False, models=[MODEL]) as net,
        vision_client(net, image_fetch_timeout=3) as (sogni, host),
    ):
        host.hold = True
        start = trio.current_time()
        with pytest.raises(trio_sogni.TransportError, match="more than 3 s"):
            await sogni.chat.completions.create(
                model=MODEL, messages=user("https://cdn.sogni.ai/slow.png")
            )
        assert trio.current_time() - start == pytest.approx(3, abs=0.1)
        assert len(net.job_requests) == 0


async def test_a_stream_scope_fetches_when_entered() -> None:
    async with vision_net() as (net, sogni, host):
        host.files["cdn.sogni.ai/a.png"] = png((20, 20))
        scope = sogni.chat.completions.stream(
            model=MODEL, messages=user("https://cdn.sogni.ai/a.png")
        )
        assert host.requests == []
        async with scope as stream:
            async for _ in stream:
                pass
        assert sent_images(net.job_requests[-1]) == [uri(png((20, 20)))]


async def test_hosted_completions_inline_and_resize_images_too() -> None:
    seen: list[LLMJobRequest] = []

    def script(request: LLMJobRequest) -> list[Any]:
        seen.append(request)
        return [Text("a red square")]

    async with vision_net(script=script) as (_net, sogni, host):
        host.files["cdn.sogni.ai/red.png"] = png((1500, 300))
        result = await sogni.chat.hosted.create(
            model=MODEL, messages=user("https://cdn.sogni.ai/red.png"), resize_images=True
        )
        assert result.content == "a red square"
        (request,) = seen
        assert [size_of(url) for url in sent_images(request)] == [(1024, 205)]


async def test_estimates_count_remote_images_without_fetching_them() -> None:
    async with vision_net() as (_net, sogni, host):
        messages = user(f"https://cdn.sogni.ai/a.png{SIGNED}", uri(png((4000, 10))))
        quote = await sogni.chat.estimate_cost(model=MODEL, messages=messages, max_tokens=10)
        assert quote.input_tokens == estimate_input_tokens(user("[image]", "[image]"))
        assert host.requests == []
        with pytest.raises(InvalidRequestError, match="not trusted"):
            await sogni.chat.estimate_cost(model=MODEL, messages=user("https://evil.example/a"))


async def test_image_part_round_trip() -> None:
    data = png((1600, 800))
    async with vision_net() as (net, sogni, _):
        part = image_part(data, detail="low", resize=True)
        await sogni.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": [part]}]
        )
        (request,) = net.job_requests
        assert sent_images(request) == [part["image_url"]["url"]]
        assert size_of(part["image_url"]["url"]) == (1024, 512)
        content = request.messages[0].content
        assert isinstance(content, list)
        assert isinstance(content[0], ImageURLPart)
        assert content[0].image_url.detail == "low"


def test_fanout_rows_accept_trusted_urls() -> None:
    row = {"messages": user("https://cdn.sogni.ai/a.png"), "resize_images": True}
    item = FanoutItem.from_row(0, row, default_model=MODEL)
    assert item.params == {"resize_images": True}
    with pytest.raises(InvalidRequestError, match="not trusted"):
        FanoutItem.from_row(1, {"messages": user("https://evil.example/a.png")}, MODEL)


def test_fanout_rows_with_resize_images_accept_large_inline_images() -> None:
    big = uri(png((2000, 1000)))
    with pytest.raises(InvalidRequestError, match=r"row 0: .*resize_images=True"):
        FanoutItem.from_row(0, {"messages": user(big)}, MODEL)
    item = FanoutItem.from_row(1, {"messages": user(big), "resize_images": True}, MODEL)
    assert item.params == {"resize_images": True}


# --- the media context ---------------------------------------------------------------------------


class RecordingWorker(SimulatedMediaWorker):
    """The SimulatedMediaWorker TEST DOUBLE, recording every spec it renders."""

    def __init__(self, name: str) -> None:
        super().__init__(name, seconds_per_step=0.1, encode_in_thread=False)
        self.specs: list[RenderSpec] = []

    async def render(self, spec: RenderSpec, on_step: Any) -> Any:  # type: ignore[override]
        self.specs.append(spec)
        return await super().render(spec, on_step)


EDIT = {"prompt": "make it blue", "width": 256, "height": 256, "seed": 7, "sourceImageIndex": -1}


def edit_call() -> ToolCall:
    return ToolCall(id="c1", function=FunctionCall(name="edit_image", arguments=json.dumps(EDIT)))


@asynccontextmanager
async def tools_net(
    **options: Any,
) -> AsyncIterator[tuple[trio_sogni.SogniClient, ImageHost, RecordingWorker]]:
    worker = RecordingWorker("sim-0")
    options.setdefault("models", [MODEL])
    async with media_net(worker, **options) as net, vision_client(net) as (sogni, host):
        yield sogni, host, worker


async def test_the_media_context_fetches_a_trusted_url_only_when_a_tool_uses_it() -> None:
    source = png((1500, 1000), (250, 10, 10))  # over 1024 px: media inputs take it as is
    async with tools_net() as (sogni, host, worker):
        host.files["cdn.sogni.ai/photo.png"] = source
        context = sogni.chat.media_context(user(f"https://cdn.sogni.ai/photo.png{SIGNED}"))
        assert context.counts()["image"] == (1, 0)
        assert host.requests == []
        result = await sogni.chat.tools.execute(edit_call(), media_context=context)
        assert result.success, result.error
        (spec,) = worker.specs
        assert spec.inputs["contextImage1"].data == source
        assert len(host.requests) == 1
        # the bytes are kept: a second use fetches nothing
        again = await sogni.chat.tools.execute(edit_call(), media_context=context)
        assert again.success, again.error
        assert len(host.requests) == 1
        assert worker.specs[1].inputs["contextImage1"].data == source


async def test_an_added_trusted_url_is_fetched_lazily_once_like_a_conversation_image() -> None:
    source = png((300, 200), (10, 10, 250))
    async with tools_net() as (sogni, host, worker):
        host.files["bucket.s3.us-west-2.amazonaws.com/in.png"] = source
        context = sogni.chat.media_context()
        context.add("image", f"https://bucket.s3.us-west-2.amazonaws.com/in.png{SIGNED}")
        assert context.counts()["image"] == (1, 0)
        assert host.requests == []
        for _ in range(2):
            result = await sogni.chat.tools.execute(edit_call(), media_context=context)
            assert result.success, result.error
        assert [spec.inputs["contextImage1"].data for spec in worker.specs] == [source, source]
        assert len(host.requests) == 1
        # without a fetcher, using it is an error result that does not show the signed query
        bare = MediaContext()
        bare.add("image", f"https://cdn.sogni.ai/x.png{SIGNED}")
        result = await sogni.chat.tools.execute(edit_call(), media_context=bare)
        assert not result.success
        assert "s3cr3t" not in (result.error or "")
        assert len(worker.specs) == 2


@pytest.mark.parametrize(
    ("kind", "media", "match"),
    [
        ("image", "https://evil.example/a.png", "not trusted"),
        ("image", "http://cdn.sogni.ai/a.png", "must be bytes, a data: URI"),
        ("image", "/etc/passwd", "must be bytes, a data: URI"),
        ("video", "https://cdn.sogni.ai/a.mp4", "only images may be https URLs"),
        ("audio", "https://cdn.sogni.ai/a.wav", "only images may be https URLs"),
    ],
)
def test_add_refuses_what_it_cannot_fetch(kind: Any, media: str, match: str) -> None:
    context = MediaContext()
    with pytest.raises(ValueError, match=match):
        context.add(kind, media)
    assert context.counts()[kind] == (0, 0)


async def test_a_context_that_cannot_fetch_gives_an_error_result() -> None:
    async with tools_net() as (sogni, host, worker):
        context = MediaContext.from_messages(user(f"https://cdn.sogni.ai/photo.png{SIGNED}"))
        result = await sogni.chat.tools.execute(edit_call(), media_context=context)
        assert not result.success
        assert "sogni.chat.media_context" in (result.error or "")
        assert "s3cr3t" not in (result.error or "")
        assert host.requests == []
        assert worker.specs == []


async def test_a_failed_lazy_fetch_is_an_error_result() -> None:
    async with tools_net() as (sogni, _host, worker):
        context = sogni.chat.media_context(user("https://cdn.sogni.ai/missing.png"))
        result = await sogni.chat.tools.execute(edit_call(), media_context=context)
        assert not result.success
        assert "HTTP 404" in (result.error or "")
        assert worker.specs == []


async def test_the_tool_loop_fetches_once_and_edits_the_original() -> None:
    def script(request: Any) -> Any:
        if request.messages[-1].role == "tool":
            return [Text("done")]
        return [ScriptedCall("edit_image", EDIT)]

    source = png((1500, 1000), (250, 10, 10))
    async with tools_net(script=script) as (sogni, host, worker):
        host.files["cdn.sogni.ai/photo.png"] = source
        result = await sogni.chat.completions.create(
            model=MODEL,
            messages=user("https://cdn.sogni.ai/photo.png"),
            auto_execute_tools=True,
            resize_images=True,
        )
        assert result.content == "done"
        assert len(host.requests) == 1
        (spec,) = worker.specs
        assert spec.inputs["contextImage1"].data == source  # the original, not the resized one


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"image_fetch_timeout": 0}, "image_fetch_timeout"),
        ({"image_fetch_timeout": float("inf")}, "image_fetch_timeout"),
        ({"resize_images": "yes"}, "resize_images"),
    ],
)
async def test_bad_client_options_are_refused(options: dict[str, Any], match: str) -> None:
    async with open_local_network(listen=False, models=[MODEL]) as net:
        with pytest.raises(InvalidRequestError, match=match):
            async with vision_client(net, **options):
                pytest.fail("the client must not open")  # pragma: no cover
