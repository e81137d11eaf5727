"""OpenAIImagesBridgeWorker against a scripted OpenAI-compatible images upstream on loopback
(an in-test h11 server): generations and edits, b64_json and url answers, size and format
conversion, and upstream failures as typed render errors without the API key."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import trio
from imagesupstream import Reply, Seen, b64_answer, picture, upstream
from PIL import Image

from trio_sogni.localnet._media._bridge import (
    OpenAIImagesBridgeWorker,
    UpstreamFailure,
    multipart_body,
    upstream_request,
)
from trio_sogni.localnet._media._render import (
    MediaInput,
    MediaRenderError,
    MediaWorker,
    RenderRejected,
    RenderSpec,
)

KEY = "sk-test-secret-key-123"


def spec(**changes: Any) -> RenderSpec:
    fields: dict[str, Any] = {
        "media_type": "image",
        "model_id": "z_image_turbo_bf16",
        "prompt": "a lighthouse",
        "seed": 3,
        "steps": 8,
        "width": 64,
        "height": 48,
        "output_format": "png",
    }
    fields.update(changes)
    return RenderSpec(**fields)


class Steps:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    async def __call__(self, step: int, count: int) -> None:
        self.calls.append((step, count))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_a_generation_is_one_json_request_and_b64_json_comes_back_untouched() -> None:
    answer = picture((64, 48))
    async with upstream(lambda seen: b64_answer(answer)) as api:
        worker = OpenAIImagesBridgeWorker(api.url, "bridge", api_key=KEY, upstream_model="sd-turbo")
        steps = Steps()
        media = await worker.render(spec(), steps)
    assert media.data == answer  # same size and format: the upstream's bytes as they are
    assert (media.content_type, media.width, media.height, media.steps) == ("image/png", 64, 48, 8)
    assert steps.calls == [(8, 8)]
    [seen] = api.seen
    assert (seen.method, seen.target) == ("POST", "/v1/images/generations")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {
        "model": "sd-turbo",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "64x48",
        "response_format": "b64_json",
    }
    assert KEY not in repr(worker)
    served: MediaWorker = worker
    assert served.media_types == frozenset({"image"})


async def test_a_prompt_with_a_lone_surrogate_is_sent_as_valid_utf8() -> None:
    async with upstream(lambda seen: b64_answer(picture((64, 48)))) as api:
        await OpenAIImagesBridgeWorker(api.url).render(spec(prompt="a \ud800 b"), Steps())
    assert json.loads(api.seen[0].body)["prompt"] == "a ? b"


async def test_another_size_and_format_are_converted() -> None:
    async with upstream(lambda seen: b64_answer(picture((128, 128), "JPEG"))) as api:
        worker = OpenAIImagesBridgeWorker(api.url, extra={"quality": "low"}, response_format=None)
        media = await worker.render(spec(output_format="webp"), Steps())
    image = decode(media.data)
    assert (image.format, image.size) == ("WEBP", (64, 48))
    assert media.content_type == "image/webp"
    body = json.loads(api.seen[0].body)
    assert body["quality"] == "low"
    assert body["model"] == "z_image_turbo_bf16"
    assert "response_format" not in body
    assert "authorization" not in api.seen[0].headers


async def test_a_url_answer_is_fetched() -> None:
    image = picture((64, 48), "JPEG")

    def script(seen: Seen) -> Reply:
        if seen.target == "/files/out.jpg":
            return Reply(body=image, content_type="image/jpeg")
        return Reply(
            body=json.dumps(
                {"data": [{"url": f"http://127.0.0.1:{api.port}/files/out.jpg"}]}
            ).encode()
        )

    async with upstream(script) as api:
        media = await OpenAIImagesBridgeWorker(api.url, response_format="url").render(
            spec(output_format="jpg"), Steps()
        )
    assert media.data == image
    assert [s.target for s in api.seen] == ["/v1/images/generations", "/files/out.jpg"]
    assert json.loads(api.seen[0].body)["response_format"] == "url"


async def test_an_edit_is_a_multipart_request_with_the_input_image() -> None:
    source = picture((32, 32), "GIF")
    async with upstream(lambda seen: b64_answer(picture((64, 48)))) as api:
        worker = OpenAIImagesBridgeWorker(api.url, api_key=KEY)
        edit = spec(inputs={"contextImage1": MediaInput(data=source, content_type="image/gif")})
        await worker.render(edit, Steps())
    [seen] = api.seen
    assert seen.target == "/v1/images/edits"
    content_type = seen.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=")[1]
    parts = seen.body.split(f"--{boundary}".encode())
    assert parts[-1] == b"--\r\n"
    fields = {}
    for part in parts[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = (head, value[:-2])
    assert fields["prompt"][1] == b"a lighthouse"
    assert fields["size"][1] == b"64x48"
    assert fields["n"][1] == b"1"
    head, data = fields["image"]
    assert b'filename="image.png"' in head
    assert b"Content-Type: image/png" in head  # a GIF input goes up as PNG
    assert decode(data).size == (32, 32)


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (
            Reply(
                401,
                json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode(),
            ),
            "upstream_error",
            "upstream HTTP 401: Incorrect API key provided: <redacted>",
        ),
        (
            Reply(500, b"internal trouble", "text/plain"),
            "upstream_error",
            "upstream HTTP 500: internal trouble",
        ),
        (Reply(body=b"{not json"), "upstream_error", "has no image"),
        (Reply(body=b'{"data": []}'), "upstream_error", "has no image"),
        (Reply(body=b'{"data": [{"b64_json": "@@@"}]}'), "upstream_error", "not base64"),
        (
            Reply(body=b'{"data": [{"b64_json": "aGVsbG8="}]}'),
            "upstream_error",
            "not a decodable image",
        ),
        (
            Reply(body=b'{"data": [{"revised_prompt": "x"}]}'),
            "upstream_error",
            "neither b64_json nor url",
        ),
        (Reply(body=b"x" * 100, close_early=True), "upstream_error", "broke the HTTP exchange"),
    ],
)
async def test_upstream_failures_are_typed_render_errors_without_the_key(
    reply: Reply, code: str, message: str
) -> None:
    async with upstream(lambda seen: reply) as api:
        worker = OpenAIImagesBridgeWorker(api.url, api_key=KEY)
        steps = Steps()
        with pytest.raises(MediaRenderError) as caught:
            await worker.render(spec(), steps)
    assert caught.value.code == code
    assert message in caught.value.message
    assert KEY not in str(caught.value)
    assert steps.calls == []


async def test_a_stalled_upstream_times_out_and_an_absent_one_is_unreachable() -> None:
    async with upstream(lambda seen: Reply(stall=True)) as api:
        worker = OpenAIImagesBridgeWorker(api.url, timeout=0.2)
        with pytest.raises(MediaRenderError) as caught:
            await worker.render(spec(), Steps())
        assert caught.value.code == "upstream_timeout"
        port = api.port
    with pytest.raises(MediaRenderError) as unreachable:
        await OpenAIImagesBridgeWorker(f"http://127.0.0.1:{port}/v1").render(spec(), Steps())
    assert unreachable.value.code == "upstream_unreachable"


async def test_an_oversized_answer_is_refused() -> None:
    async with upstream(lambda seen: b64_answer(picture((64, 48)))) as api:
        worker = OpenAIImagesBridgeWorker(api.url, max_response_bytes=100)
        with pytest.raises(MediaRenderError, match="over 100 bytes"):
            await worker.render(spec(), Steps())


async def test_cancelling_a_render_closes_the_upstream_request() -> None:
    async with upstream(lambda seen: Reply(stall=True)) as api:
        worker = OpenAIImagesBridgeWorker(api.url)
        with trio.move_on_after(0.2) as scope:
            await worker.render(spec(), Steps())
        assert scope.cancelled_caught
        assert len(api.seen) == 1
        await api.hung_up.wait()  # the upstream saw the connection close


async def test_specs_it_cannot_serve_are_rejected_before_any_request() -> None:
    worker = OpenAIImagesBridgeWorker("http://127.0.0.1:9/v1", max_pixels=1000)
    with pytest.raises(RenderRejected, match="images only"):
        await worker.render(spec(media_type="audio", output_format="mp3"), Steps())
    with pytest.raises(RenderRejected, match="over 1000 pixels"):
        await worker.render(spec(), Steps())
    junk = MediaInput(data=b"junk", content_type="image/bmp")
    with pytest.raises(RenderRejected, match="cannot be decoded"):
        await OpenAIImagesBridgeWorker("http://127.0.0.1:9/v1").render(
            spec(inputs={"startingImage": junk}), Steps()
        )


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIImagesBridgeWorker("ftp://127.0.0.1/v1")
    with pytest.raises(ValueError, match="api_key"):
        OpenAIImagesBridgeWorker("http://user:pw@127.0.0.1/v1")
    with pytest.raises(ValueError, match="capacity"):
        OpenAIImagesBridgeWorker("http://127.0.0.1/v1", capacity=0)
    with pytest.raises(ValueError, match="timeouts"):
        OpenAIImagesBridgeWorker("http://127.0.0.1/v1", timeout=0)


async def test_upstream_request_refuses_other_schemes() -> None:
    with pytest.raises(UpstreamFailure, match="not http"):
        await upstream_request("GET", "file:///etc/passwd")


def test_multipart_body_layout() -> None:
    body = multipart_body({"a": "1"}, [("f", "x.png", "image/png", b"\x00\x01")], "B")
    assert body == (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x00\x01\r\n--B--\r\n"
    )
