"""``modelbank fake-upstream`` against the official ``openai`` SDK: shapes, deterministic
usage, failures, key checks and client-cancel detection (issue 14, item 5).

One uvicorn server in a thread serves the app for the module; each test sets the live
``app.config`` and starts from fresh stats.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st

from modelbank.gateway.fake_upstream import (
    FakeUpstream,
    FakeUpstreamConfig,
    chat_prompt_tokens,
    completion_text,
    create_app,
    fingerprint,
    prompt_text_for,
)

KEY = "sk-fake-test-0001"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeUpstream]]:
    app = create_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not uv.started:
        assert time.monotonic() < deadline, "fake upstream did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", app
    uv.should_exit = True
    thread.join(5)
    sock.close()


@pytest.fixture
def fake(server: tuple[str, FakeUpstream]) -> Iterator[tuple[str, FakeUpstream]]:
    url, app = server
    app.config = FakeUpstreamConfig()
    httpx.post(f"{url}/_fake/reset").raise_for_status()
    yield url, app


def client(url: str, key: str = KEY, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout)


def stats(url: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{url}/_fake/stats").json()
    return answer


def wait_for(url: str, check: str, expected: int) -> dict[str, object]:
    """Poll the stats until ``check`` (``streams.cancelled`` …) reaches ``expected``."""
    deadline = time.monotonic() + 10  # generous: the machine may be shared
    while True:
        current = stats(url)
        value: object = current
        for part in check.split("."):
            assert isinstance(value, dict)
            value = value.get(part, 0)
        if value == expected or time.monotonic() > deadline:
            assert value == expected, current
            return current
        time.sleep(0.02)


# --- the usage rule (pure) -------------------------------------------------------------------


@given(st.integers(min_value=6, max_value=50_000))
def test_prompt_text_for_hits_the_count_exactly(tokens: int) -> None:
    messages = [{"role": "user", "content": prompt_text_for(tokens)}]
    assert chat_prompt_tokens(messages) == tokens


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_prompt_tokens_rule(contents: list[str]) -> None:
    messages = [{"role": "user", "content": c} for c in contents]
    total_bytes = sum(len(c.encode()) for c in contents)
    assert chat_prompt_tokens(messages) == -(-total_bytes // 4) + 3 * len(contents) + 3
    # A BPE token covers at least one byte: the JSON request is never shorter than the count.
    assert chat_prompt_tokens(messages) <= len(json.dumps({"messages": messages}).encode())


# --- endpoints through the official SDK ------------------------------------------------------


def test_chat_usage_follows_the_documented_rule(fake: tuple[str, FakeUpstream]) -> None:
    url, _ = fake
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "héllo wörld"},  # 13 UTF-8 bytes
    ]
    answer = client(url).chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        max_tokens=7,
    )
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == -(-(8 + 13) // 4) + 3 * 2 + 3 == 15
    assert answer.usage.completion_tokens == 7
    assert answer.usage.total_tokens == 22
    assert answer.usage.prompt_tokens_details is None
    assert answer.choices[0].message.content == completion_text(7)
    assert answer.model == "gpt-4o-mini"
    default = client(url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert default.usage is not None and default.usage.completion_tokens == 16


def test_stream_with_include_usage(fake: tuple[str, FakeUpstream]) -> None:
    url, _ = fake
    prompt = prompt_text_for(1234)
    stream = client(url).chat.completions.create(
        model="fake-chat",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Fake-Cached-Tokens": "1000"},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion_text(20)
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (1234, 20)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 1000
    assert len({c.id for c in chunks}) == 1
    assert stats(url)["streams"] == {"completed": 1, "cancelled": 0}
    # Without include_usage: no usage chunk; the raw body ends with [DONE].
    raw = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"X-Fake-Completion-Tokens": "3", "X-Fake-Prompt-Tokens": "99"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in e for e in events)
    assert len(events) == 1 + 3 + 1 + 1  # role, 3 tokens, stop, [DONE]


def test_embeddings_float_and_base64(fake: tuple[str, FakeUpstream]) -> None:
    url, _ = fake
    sdk = client(url)
    answer = sdk.embeddings.create(model="text-embedding-3-small", input=["abcde", "xy"])
    assert [d.index for d in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) == 16  # the SDK asked for base64 and decoded it
    assert answer.usage.prompt_tokens == 2 + 1
    floats = sdk.embeddings.create(
        model="e", input="abcd" * 10, encoding_format="float", dimensions=64
    )
    assert len(floats.data[0].embedding) == 64
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 10
    raw = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": "e", "input": [[1, 2, 3]], "encoding_format": "base64", "dimensions": 4},
    ).json()
    assert len(struct.unpack("<4f", base64.b64decode(raw["data"][0]["embedding"]))) == 4
    assert raw["usage"]["prompt_tokens"] == 3


def test_images_b64_and_url(fake: tuple[str, FakeUpstream]) -> None:
    url, _ = fake
    sdk = client(url)
    b64 = sdk.images.generate(model="dall-e-3", prompt="a cat", n=3, response_format="b64_json")
    assert b64.data is not None and len(b64.data) == 3
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")
    urls = sdk.images.generate(model="dall-e-3", prompt="a cat", n=2)
    assert urls.data is not None and len(urls.data) == 2
    image = httpx.get(urls.data[0].url or "")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_models_listed(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    assert [m.id for m in client(url).models.list()] == ["fake-chat", "fake-embed", "fake-image"]
    app.config = FakeUpstreamConfig(models=("up-a", "up-b"))
    assert [m.id for m in client(url).models.list()] == ["up-a", "up-b"]
    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client(url).chat.completions.create(
            model="other", messages=[{"role": "user", "content": "x"}]
        )


def test_wrong_and_revoked_keys_get_401_and_stats_hold_fingerprints_only(
    fake: tuple[str, FakeUpstream],
) -> None:
    url, app = fake
    app.config = FakeUpstreamConfig(api_keys=frozenset({KEY}), revoked_keys=frozenset({"sk-old"}))
    assert client(url).models.list().data
    for key, message in (("sk-wrong", "Incorrect API key"), ("sk-old", "revoked")):
        with pytest.raises(openai.AuthenticationError, match=message) as caught:
            client(url, key=key).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        assert caught.value.code == "invalid_api_key"
        assert key not in str(caught.value)
    current = stats(url)
    assert current["errors"] == {"401": 2}
    assert current["keys"] == {
        fingerprint(KEY): 1,
        fingerprint("sk-wrong"): 1,
        fingerprint("sk-old"): 1,
    }
    text = httpx.get(f"{url}/_fake/stats").text
    assert KEY not in text and "sk-wrong" not in text and "sk-old" not in text


# --- failures --------------------------------------------------------------------------------


def chat_once(url: str, timeout: float = 5.0, **kwargs: Any) -> Any:
    """One chat through the SDK (``stream=True`` gives the stream)."""
    return client(url, timeout=timeout).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], **kwargs
    )


def test_each_error_kind(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    app.config = FakeUpstreamConfig(error_rate=1, error_kind="500")
    with pytest.raises(openai.InternalServerError):
        chat_once(url)
    for kind, error in (("429", openai.RateLimitError), ("reset", openai.APIConnectionError)):
        with pytest.raises(error):
            chat_once(url, extra_headers={"X-Fake-Error": kind})
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        chat_once(url, extra_headers={"X-Fake-Error": "timeout"}, timeout=0.3)
    assert time.monotonic() - started < 2
    wait_for(url, "hangs_abandoned", 1)
    assert chat_once(url, extra_headers={"X-Fake-Error": "none"})
    # midstream: half the tokens arrive, then the connection drops without [DONE].
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in chat_once(
            url, stream=True, max_tokens=10, extra_headers={"X-Fake-Error": "midstream"}
        ):
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == completion_text(5)
    assert stats(url)["errors"] == {"500": 1, "429": 1, "reset": 1, "timeout": 1, "midstream": 1}


def test_error_rate_is_the_seeded_draw(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    app.config = FakeUpstreamConfig(error_rate=0.25, seed=7)
    httpx.post(f"{url}/_fake/reset").raise_for_status()  # draws restart from the seed
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    with httpx.Client(base_url=url) as http:
        statuses = [http.post("/v1/chat/completions", json=body).status_code for _ in range(400)]
    rng = random.Random(7)
    expected = [500 if rng.random() < 0.25 else 200 for _ in range(400)]
    assert statuses == expected
    assert 0.18 < statuses.count(500) / 400 < 0.32
    assert stats(url)["errors"] == {"500": statuses.count(500)}


def test_latency_and_ttft(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    app.config = FakeUpstreamConfig(latency_ms=80)
    started = time.monotonic()
    chat_once(url, max_tokens=1)
    assert time.monotonic() - started >= 0.08
    started = time.monotonic()
    stream = chat_once(
        url,
        stream=True,
        max_tokens=8,
        extra_headers={
            "X-Fake-Latency-Ms": "0",
            "X-Fake-Ttft-Ms": "120",
            "X-Fake-Tokens-Per-S": "20",
        },
    )
    arrivals = [
        time.monotonic() - started
        for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(arrivals) == 8
    assert arrivals[0] >= 0.12  # the first token waits ttft_ms
    assert arrivals[-1] >= 0.12 + 7 / 20  # then one token per 1/20 s (lower bounds only:
    # a loaded machine may deliver late, never early)


def test_client_cancel_is_seen(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    app.config = FakeUpstreamConfig(tokens_per_s=50)
    with client(url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=1000, stream=True
    ) as stream:
        for n, _ in enumerate(stream):
            if n == 2:
                break
    current = wait_for(url, "streams.cancelled", 1)
    assert current["streams"] == {"completed": 0, "cancelled": 1}
    assert current["in_flight"] == 0


def test_config_and_reset_over_http(fake: tuple[str, FakeUpstream]) -> None:
    url, app = fake
    answer = httpx.post(
        f"{url}/_fake/config", json={"error_rate": 1, "error_kind": "429", "api_keys": [KEY]}
    )
    assert answer.status_code == 200 and answer.json()["api_keys"] == 1
    assert app.config.error_kind == "429"
    with pytest.raises(openai.RateLimitError):
        chat_once(url)
    bad = httpx.post(f"{url}/_fake/config", json={"error_rate": 3})
    assert bad.status_code == 400 and "error_rate" in bad.json()["error"]["message"]
    assert httpx.post(f"{url}/_fake/config", json={"nope": 1}).status_code == 400
    assert stats(url)["requests"] == {"chat.completions": 1}
    httpx.post(f"{url}/_fake/reset").raise_for_status()
    assert stats(url)["requests"] == {}


def test_bad_requests_are_openai_400s(fake: tuple[str, FakeUpstream]) -> None:
    url, _ = fake
    with pytest.raises(openai.BadRequestError, match="messages"):
        client(url).chat.completions.create(model="m", messages=[])
    raw = httpx.post(f"{url}/v1/chat/completions", content=b"{nope")
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.post(
        f"{url}/v1/embeddings", json={"model": "e", "input": "x"}, headers={"X-Fake-Error": "boom"}
    )
    assert raw.status_code == 400
    assert httpx.get(f"{url}/v1/nothing").status_code == 404


# --- the command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "1.5"], "error_rate must be between 0 and 1"),
        (["--error-kind", "boom"], "error_kind must be one of 500, 429, timeout, reset"),
        (["--latency-ms", "-1"], "latency_ms must be a number ≥ 0"),
        (["--port", "70000"], "--port must be 1…65535"),
    ],
)
def test_command_refuses_bad_values_in_one_line(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from modelbank.cli.app import app

    result = CliRunner().invoke(app, ["fake-upstream", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
