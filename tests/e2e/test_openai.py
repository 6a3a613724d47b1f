"""The official openai SDK through iris: content arrives unchanged, usage is right, lists are
filtered by grants."""

from __future__ import annotations

import base64
import json
import struct

import httpx

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "say something"}]


def one_upstream(mock: h.MockProvider, path: str) -> dict:
    reqs = [r for r in mock.api_requests() if r["path"] == path]
    assert len(reqs) == 1, f"wanted exactly one upstream {path}, mock saw {[r['path'] for r in mock.api_requests()]}"
    return reqs[0]


def test_chat_non_stream(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert r.choices[0].message.content == h.mock_reply_text("gpt-4o-mini")
    assert r.choices[0].finish_reason == "stop"
    up = one_upstream(mock, "/v1/chat/completions")
    assert json.loads(up["body"])["messages"] == MSGS
    assert r.usage is not None
    assert r.usage.prompt_tokens == up["usage"]["input_tokens"]
    assert r.usage.completion_tokens == up["usage"]["output_tokens"] == 5
    rec = gateway.wait_usage(1)[0]
    assert rec["input_tokens"] == up["usage"]["input_tokens"]
    assert rec["output_tokens"] == 5
    assert rec["streaming"] is False
    assert rec["api_family"] == "openai_chat"


def test_chat_stream_without_include_usage_hides_the_usage_chunk(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True))
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    assert text == h.mock_reply_text("gpt-4o-mini")
    assert all(ch.choices for ch in chunks), "the client did not ask for the choices=[] usage chunk"
    assert all(ch.usage is None for ch in chunks), "the client did not ask for usage"

    # iris asked upstream for usage anyway, to account the request.
    up = one_upstream(mock, "/v1/chat/completions")
    assert json.loads(up["body"]).get("stream_options", {}).get("include_usage") is True
    assert up["usage"] is not None
    rec = gateway.wait_usage(1)[0]
    assert rec["streaming"] is True
    assert rec["input_tokens"] == up["usage"]["input_tokens"]
    assert rec["output_tokens"] == 5


def test_chat_stream_raw_wire_ends_with_done_and_no_usage(gateway: h.Gateway) -> None:
    r = c.raw_post(
        gateway,
        "/v1/chat/completions",
        body={"model": "gpt-4o-mini", "messages": MSGS, "stream": True},
        headers={"x-mock-chunks": "3"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = c.sse_data(r.text)
    assert data[-1] == "[DONE]"
    payloads = [json.loads(d) for d in data[:-1]]
    assert all(p["choices"] for p in payloads), r.text
    assert all(not p.get("usage") for p in payloads), r.text
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads)
    assert text == h.mock_reply_text("gpt-4o-mini", 3)


def test_chat_stream_with_include_usage_shows_it(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    up = one_upstream(mock, "/v1/chat/completions")
    assert last.usage.prompt_tokens == up["usage"]["input_tokens"]
    assert last.usage.completion_tokens == up["usage"]["output_tokens"]
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    assert text == h.mock_reply_text("gpt-4o-mini")
    rec = gateway.wait_usage(1)[0]
    assert rec["output_tokens"] == up["usage"]["output_tokens"]


def test_responses_non_stream(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    r = client.responses.create(model="gpt-4o-mini", input="hello", reasoning={"effort": "low"})
    assert r.output_text == h.mock_reply_text("gpt-4o-mini")
    up = one_upstream(mock, "/v1/responses")
    assert r.usage is not None
    assert r.usage.input_tokens == up["usage"]["input_tokens"]
    assert r.usage.output_tokens_details.reasoning_tokens == up["usage"]["reasoning_tokens"] > 0
    rec = gateway.wait_usage(1)[0]
    assert rec["api_family"] == "openai_responses"
    assert rec["reasoning_tokens"] == up["usage"]["reasoning_tokens"]
    assert rec["output_tokens"] == up["usage"]["output_tokens"]


def test_responses_stream(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    events = list(
        client.responses.create(model="gpt-4o-mini", input="hello", stream=True, prompt_cache_key="session-1")
    )
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == h.mock_reply_text("gpt-4o-mini")
    done = events[-1].response
    assert done.output_text == deltas
    up = one_upstream(mock, "/v1/responses")
    assert done.usage.input_tokens == up["usage"]["input_tokens"]
    assert done.usage.input_tokens_details.cached_tokens == up["usage"]["cache_read_tokens"] > 0
    rec = gateway.wait_usage(1)[0]
    assert rec["streaming"] is True
    assert rec["cache_read_tokens"] == up["usage"]["cache_read_tokens"]
    assert rec["input_tokens"] == up["usage"]["input_tokens"]
    assert rec["output_tokens"] == up["usage"]["output_tokens"]


def test_embeddings_base64_round_trip(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.openai_client(gateway, h.ALICE)
    inputs = ["alpha", "beta gamma"]
    r = client.embeddings.create(model="text-embedding-3-small", input=inputs)
    up = one_upstream(mock, "/v1/embeddings")
    assert json.loads(up["body"]).get("encoding_format") == "base64", "the SDK's default must pass through"

    # The same vectors, asked from the mock directly as floats.
    direct = httpx.post(
        f"{mock.url}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": inputs, "encoding_format": "float"},
        timeout=10,
    ).json()
    # and the raw base64 through iris, decoded by hand (little-endian f32)
    raw = c.raw_post(gateway, "/v1/embeddings", body={"model": "text-embedding-3-small", "input": inputs, "encoding_format": "base64"}).json()
    for i in range(len(inputs)):
        want = direct["data"][i]["embedding"]
        assert r.data[i].embedding == want
        b = base64.b64decode(raw["data"][i]["embedding"])
        assert list(struct.unpack(f"<{len(b) // 4}f", b)) == want
    recs = gateway.wait_usage(2)
    assert recs[-1]["api_family"] == "openai_embeddings"
    assert recs[-1]["input_tokens"] == up["usage"]["input_tokens"]
    assert recs[-1]["output_tokens"] == 0


ALL_MODELS = {"gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5", "claude-haiku-4-5", "dead-model"}


def test_models_list_shows_only_granted_models(gateway: h.Gateway) -> None:
    def ids(source: str) -> set[str]:
        return {m.id for m in c.openai_client(gateway, source).models.list()}

    assert ids(h.LOOPBACK) == ALL_MODELS
    # alice: openai/** from her CapMap, anthropic/claude-haiku-* from group:ai-users
    assert ids(h.ALICE) == {"gpt-4o-mini", "text-embedding-3-small", "claude-haiku-4-5"}
    # the [tag:prod, tag:ci] node matches the tag:ci grant: anthropic/**
    assert ids(h.CI_NODE) == {"claude-sonnet-4-5", "claude-haiku-4-5"}
    raw = c.raw_get(gateway, "/v1/models", source=h.ALICE).json()
    assert raw["object"] == "list"
    assert all(m["object"] == "model" for m in raw["data"])
