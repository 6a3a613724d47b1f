"""Timeouts and errors: each has its status, its dialect, and a usage record."""

from __future__ import annotations

import time

import httpx
import pytest

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "err"}]
CHAT = ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS}, c.openai_error)
MESSAGES = ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MSGS}, c.anthropic_error)


@pytest.mark.parametrize("route", [CHAT, MESSAGES], ids=["openai", "anthropic"])
def test_upstream_hang_is_504_after_first_byte_timeout(gateway: h.Gateway, mock: h.MockProvider, route) -> None:
    path, body, check = route
    t0 = time.monotonic()
    r = c.raw_post(gateway, path, body=body, headers={"x-mock-hang": "1"}, timeout=15)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    check(r.text)
    assert 1.8 <= elapsed <= 5.0, f"first_byte is 2s; answered after {elapsed:.2f}s"
    assert len(mock.api_requests()) == 1
    rec = gateway.wait_usage(1)[0]
    assert rec["status"] == 504
    assert rec["error_class"]


@pytest.mark.parametrize("route", [CHAT, MESSAGES], ids=["openai", "anthropic"])
@pytest.mark.parametrize("status", [429, 500])
def test_upstream_error_passes_through_unchanged(gateway: h.Gateway, mock: h.MockProvider, route, status: int) -> None:
    path, body, _ = route
    hdrs = {"x-mock-status": str(status)}
    direct = httpx.post(f"{mock.url}{path}", json=body, headers=hdrs, timeout=10)
    r = c.raw_post(gateway, path, body=body, headers=hdrs)
    assert r.status_code == status == direct.status_code
    assert r.json() == direct.json(), "the provider's error body must pass through unchanged"
    if status == 429:
        assert r.headers.get("retry-after") == direct.headers.get("retry-after") == "1"
    rec = gateway.wait_usage(1)[0]
    assert rec["status"] == status
    assert rec["error_class"]


def test_unreachable_provider_is_502(gateway: h.Gateway) -> None:
    r = c.raw_post(gateway, "/v1/chat/completions", body={"model": "dead-model", "messages": MSGS})
    assert r.status_code == 502, r.text
    c.openai_error(r.text)
    rec = gateway.wait_usage(1)[0]
    assert rec["status"] == 502
    assert rec["provider"] == "dead"
    assert rec["error_class"]


@pytest.mark.parametrize("route", [CHAT, MESSAGES], ids=["openai", "anthropic"])
def test_bad_json_is_400_in_dialect(gateway: h.Gateway, mock: h.MockProvider, route) -> None:
    path, _, check = route
    r = c.raw_post(gateway, path, content=b'{"model": "gpt-4o-mini", "messages": [')
    assert r.status_code == 400, r.text
    check(r.text)
    assert mock.api_requests() == []
    assert gateway.wait_usage(1)[0]["status"] == 400


@pytest.mark.parametrize("route", [CHAT, MESSAGES], ids=["openai", "anthropic"])
def test_body_over_limit_is_413(gateway: h.Gateway, mock: h.MockProvider, route) -> None:
    path, body, check = route
    big = {**body, "messages": [{"role": "user", "content": "x" * 100_000}]}  # limit: 65536
    r = c.raw_post(gateway, path, body=big)
    assert r.status_code == 413, r.text
    check(r.text)
    assert mock.api_requests() == []
    # just under the limit still works
    ok = {**body, "messages": [{"role": "user", "content": "x" * 60_000}]}
    assert c.raw_post(gateway, path, body=ok).status_code == 200
    recs = gateway.wait_usage(2)
    assert [r["status"] for r in recs] == [200, 413]
