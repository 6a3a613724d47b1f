"""The official anthropic SDK through iris."""

from __future__ import annotations

import json

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "hello there"}]
SYSTEM_CACHED = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]


def upstream(mock: h.MockProvider, path: str) -> list[dict]:
    return [r for r in mock.api_requests() if r["path"] == path]


def test_messages_non_stream(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.anthropic_client(gateway, h.ALICE)
    m = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSGS, system=SYSTEM_CACHED)
    assert m.content[0].text == h.mock_reply_text("claude-haiku-4-5")
    (up,) = upstream(mock, "/v1/messages")
    assert m.usage.input_tokens == up["usage"]["input_tokens"]
    assert m.usage.output_tokens == up["usage"]["output_tokens"] == 5
    assert m.usage.cache_read_input_tokens == up["usage"]["cache_read_tokens"] == 100
    assert m.usage.cache_creation_input_tokens == up["usage"]["cache_write_tokens"] > 0
    rec = gateway.wait_usage(1)[0]
    assert rec["api_family"] == "anthropic_messages"
    assert rec["provider"] == "anthropic"
    assert rec["model"] == "claude-haiku-4-5"
    assert rec["input_tokens"] == up["usage"]["input_tokens"]
    assert rec["output_tokens"] == 5
    assert rec["cache_read_tokens"] == 100
    assert rec["cache_write_tokens"] == up["usage"]["cache_write_tokens"]


def test_messages_stream(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.anthropic_client(gateway, h.ALICE)
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=MSGS,
        system=SYSTEM_CACHED,
        extra_headers={"x-mock-chunks": "7"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == h.mock_reply_text("claude-haiku-4-5", 7)
    (up,) = upstream(mock, "/v1/messages")
    assert json.loads(up["body"])["stream"] is True
    assert final.usage.output_tokens == 7, "message_delta's count replaces message_start's"
    assert final.usage.input_tokens == up["usage"]["input_tokens"]
    assert final.usage.cache_read_input_tokens == 100
    rec = gateway.wait_usage(1)[0]
    assert rec["streaming"] is True
    assert rec["output_tokens"] == 7
    assert rec["input_tokens"] == up["usage"]["input_tokens"]
    assert rec["cache_read_tokens"] == 100
    assert rec["cache_write_tokens"] == up["usage"]["cache_write_tokens"]
    assert rec["ttfb_ms"] <= rec["duration_ms"]


def test_messages_raw_stream_wire_is_unchanged(gateway: h.Gateway) -> None:
    r = c.raw_post(
        gateway,
        "/v1/messages?beta=true",
        body={"model": "claude-haiku-4-5", "max_tokens": 10, "stream": True, "messages": MSGS},
        headers={"anthropic-version": "2023-06-01", "x-mock-chunks": "2"},
    )
    assert r.status_code == 200
    events = [line[len("event: ") :] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_query_string_and_anthropic_headers_are_forwarded(gateway: h.Gateway, mock: h.MockProvider) -> None:
    r = c.raw_post(
        gateway,
        "/v1/messages?beta=true",
        body={"model": "claude-haiku-4-5", "max_tokens": 10, "messages": MSGS},
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31,foo-bar"},
    )
    assert r.status_code == 200, r.text
    (up,) = upstream(mock, "/v1/messages")
    assert up["query"] == "beta=true"
    hdrs = dict(up["headers"])
    assert hdrs.get("anthropic-version") == "2023-06-01"
    assert hdrs.get("anthropic-beta") == "prompt-caching-2024-07-31,foo-bar"


def test_count_tokens(gateway: h.Gateway, mock: h.MockProvider) -> None:
    client = c.anthropic_client(gateway, h.ALICE)
    r = client.messages.count_tokens(model="claude-haiku-4-5", messages=MSGS)
    (up,) = upstream(mock, "/v1/messages/count_tokens")
    assert r.input_tokens == up["usage"]["input_tokens"]
    rec = gateway.wait_usage(1)[0]
    assert rec["api_family"] == "anthropic_count_tokens"
    assert rec["status"] == 200
    assert rec["output_tokens"] == 0


def test_models_list_in_anthropic_shape(gateway: h.Gateway) -> None:
    ids = [m.id for m in c.anthropic_client(gateway, h.CI_NODE).models.list()]
    assert set(ids) == {"claude-sonnet-4-5", "claude-haiku-4-5"}
    raw = c.raw_get(gateway, "/v1/models", source=h.CI_NODE, headers={"anthropic-version": "2023-06-01"}).json()
    assert set(raw) >= {"data", "has_more", "first_id", "last_id"}
    assert raw["has_more"] is False
    assert raw["first_id"] == raw["data"][0]["id"]
    assert raw["last_id"] == raw["data"][-1]["id"]
    assert all(m["type"] == "model" for m in raw["data"])
