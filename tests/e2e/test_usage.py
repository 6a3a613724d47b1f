"""Usage records: every call leaves one, its token numbers are what the provider said, and it
names the right person."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import clients as c
import harness as h

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
MSGS = [{"role": "user", "content": "count my tokens"}]
CACHED_SYSTEM = [{"type": "text", "text": "cached", "cache_control": {"type": "ephemeral"}}]


def _chat(gw: h.Gateway, src: str) -> None:
    c.openai_client(gw, src).chat.completions.create(model="gpt-4o-mini", messages=MSGS)


def _chat_stream(gw: h.Gateway, src: str) -> None:
    list(c.openai_client(gw, src).chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True))


def _chat_stream_usage(gw: h.Gateway, src: str) -> None:
    list(
        c.openai_client(gw, src).chat.completions.create(
            model="gpt-4o-mini",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},
            reasoning_effort="low",
            prompt_cache_key="k1",
        )
    )


def _responses(gw: h.Gateway, src: str) -> None:
    c.openai_client(gw, src).responses.create(model="gpt-4o-mini", input="hi", prompt_cache_key="k2")


def _responses_stream(gw: h.Gateway, src: str) -> None:
    list(
        c.openai_client(gw, src).responses.create(
            model="gpt-4o-mini", input="hi", stream=True, reasoning={"effort": "medium"}
        )
    )


def _embeddings(gw: h.Gateway, src: str) -> None:
    c.openai_client(gw, src).embeddings.create(model="text-embedding-3-small", input="embed me")


def _messages(gw: h.Gateway, src: str) -> None:
    c.anthropic_client(gw, src).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=MSGS)


def _messages_stream_cached(gw: h.Gateway, src: str) -> None:
    with c.anthropic_client(gw, src).messages.stream(
        model="claude-sonnet-4-5", max_tokens=50, messages=MSGS, system=CACHED_SYSTEM
    ) as s:
        s.until_done()


CALLS: list[tuple[str, Callable[[h.Gateway, str], None], str, str, str, bool]] = [
    # source, call, model, provider, api_family, streaming
    (h.ALICE, _chat, "gpt-4o-mini", "openai", "openai_chat", False),
    (h.ALICE, _chat_stream, "gpt-4o-mini", "openai", "openai_chat", True),
    (h.ALICE, _chat_stream_usage, "gpt-4o-mini", "openai", "openai_chat", True),
    (h.ALICE, _responses, "gpt-4o-mini", "openai", "openai_responses", False),
    (h.LOOPBACK, _responses_stream, "gpt-4o-mini", "openai", "openai_responses", True),
    (h.ALICE, _embeddings, "text-embedding-3-small", "openai", "openai_embeddings", False),
    (h.CI_NODE, _messages, "claude-sonnet-4-5", "anthropic", "anthropic_messages", False),
    (h.CI_NODE, _messages_stream_cached, "claude-sonnet-4-5", "anthropic", "anthropic_messages", True),
]


def test_each_record_carries_the_providers_token_numbers(gateway: h.Gateway, mock: h.MockProvider) -> None:
    for i, (src, call, model, provider, family, streaming) in enumerate(CALLS):
        call(gateway, src)
        recs = gateway.wait_usage(i + 1)
        assert len(recs) == i + 1, f"one record per call, got {len(recs)} after {i + 1} calls"
        rec = recs[0]  # newest first
        up = mock.api_requests()[-1]
        assert up["usage"] is not None, f"{family}: the mock sent no usage to iris ({up['body']})"
        for f in TOKEN_FIELDS:
            assert rec[f] == up["usage"][f], f"{family} streaming={streaming}: {f} {rec[f]} != {up['usage'][f]}"
        assert rec["model"] == model
        assert rec["provider"] == provider
        assert rec["api_family"] == family
        assert rec["streaming"] is streaming
        assert rec["status"] == 200
        assert not rec["error_class"], rec
        assert isinstance(rec["duration_ms"], int) and rec["duration_ms"] >= 0
        assert isinstance(rec["ttfb_ms"], int) and 0 <= rec["ttfb_ms"] <= rec["duration_ms"]
    # spot-check that the interesting fields were exercised at all
    recs = gateway.usage()
    assert any(r["reasoning_tokens"] > 0 for r in recs)
    assert any(r["cache_read_tokens"] > 0 for r in recs)
    assert any(r["cache_write_tokens"] > 0 for r in recs)


def _latest(gw: h.Gateway, n: int) -> dict[str, Any]:
    return gw.wait_usage(n)[0]


def test_identity_fields(gateway: h.Gateway) -> None:
    _chat(gateway, h.ALICE)
    alice = _latest(gateway, 1)
    assert alice["login"] == "alice@example.com"
    assert alice["identity_source"] == "whois"
    assert not alice["tags"]
    assert "alice-laptop" in (alice["node"] or "")

    _messages(gateway, h.CI_NODE)
    ci = _latest(gateway, 2)
    assert ci["identity_source"] == "whois"
    assert ci["tags"] == ["tag:ci", "tag:prod"], "tags sorted"
    assert ci["login"] != "tagged-devices", "a tagged node's synthetic profile is not a login"
    assert "ci-runner-7" in (ci["node"] or "")

    _chat(gateway, h.LOOPBACK)
    lo = _latest(gateway, 3)
    assert lo["identity_source"] == "loopback"
    assert lo["login"] not in ("alice@example.com", "tagged-devices")
    assert not lo["tags"]


def test_one_whois_per_connection(gateway: h.Gateway, tailscaled: h.FakeTailscaled) -> None:
    before = tailscaled.whois_count()
    with c.raw_client(h.ALICE) as cl:
        for _ in range(3):
            r = cl.get(f"{gateway.url}/v1/models")
            assert r.status_code == 200, r.text
    assert tailscaled.whois_count() == before + 1, "three requests on one connection: one WhoIs"
    with c.raw_client(h.ALICE) as cl:
        assert cl.get(f"{gateway.url}/v1/models").status_code == 200
    assert tailscaled.whois_count() == before + 2, "a new connection (new port) is looked up again"
    addr = tailscaled.stats()["whois_addrs"][-1]
    assert addr.startswith("127.0.0.2:") and addr.split(":")[1].isdigit(), f"WhoIs asked for IP:PORT, got {addr!r}"


def test_usage_cli_limit_and_order(gateway: h.Gateway) -> None:
    order = ("gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-5")
    for model in order:
        if model.startswith("claude"):
            c.anthropic_client(gateway).messages.create(model=model, max_tokens=5, messages=MSGS)
        else:
            c.openai_client(gateway).chat.completions.create(model=model, messages=MSGS)
    recs = gateway.wait_usage(3)
    assert [r["model"] for r in recs] == list(reversed(order)), "newest first"
    assert len(gateway.usage(limit=2)) == 2


def test_concurrent_async_clients_keep_their_identities(gateway: h.Gateway) -> None:
    """Interleaved streams from two people on the async SDKs: each record names its caller."""
    async def alice(i: int) -> str:
        client = c.async_openai_client(gateway, h.ALICE)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MSGS, stream=True, extra_headers={"x-mock-chunk-delay-ms": "20"}
        )
        text = "".join([(ch.choices[0].delta.content or "") async for ch in stream if ch.choices])
        await client.close()
        return text

    async def ci(i: int) -> str:
        client = c.async_anthropic_client(gateway, h.CI_NODE)
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=20, messages=MSGS, extra_headers={"x-mock-chunk-delay-ms": "20"}
        ) as s:
            text = "".join([t async for t in s.text_stream])
        await client.close()
        return text

    async def main() -> list[str]:
        return await asyncio.gather(*[f(i) for i in range(5) for f in (alice, ci)])

    texts = asyncio.run(main())
    assert texts == [h.mock_reply_text("gpt-4o-mini"), h.mock_reply_text("claude-haiku-4-5")] * 5
    recs = gateway.wait_usage(10)
    assert len(recs) == 10
    by_model = {(r["model"], r["login"] if r["model"] == "gpt-4o-mini" else tuple(r["tags"])) for r in recs}
    assert by_model == {("gpt-4o-mini", "alice@example.com"), ("claude-haiku-4-5", ("tag:ci", "tag:prod"))}
