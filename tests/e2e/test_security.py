"""What must never cross iris: spoofed identity headers, client credentials, iris keys and the
provider keys themselves."""

from __future__ import annotations

import json

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "hi"}]


def all_upstream_text(mock: h.MockProvider) -> str:
    return json.dumps(mock.api_requests())


def test_serve_headers_are_ignored_when_not_enabled(gateway: h.Gateway, mock: h.MockProvider) -> None:
    spoof = {
        "Tailscale-User-Login": "alice@example.com",
        "Tailscale-User-Name": "Alice Example",
        "Tailscale-App-Capabilities": '{"tailscale.com/cap/aperture":[{"role":"admin"},{"models":"**"}]}',
    }
    r = c.raw_post(gateway, "/v1/chat/completions", body={"model": "gpt-4o-mini", "messages": MSGS}, headers=spoof)
    assert r.status_code == 200, r.text
    rec = gateway.wait_usage(1)[0]
    assert rec["identity_source"] == "loopback"
    assert rec["login"] != "alice@example.com"
    (up,) = mock.api_requests()
    names = [n.lower() for n, _ in up["headers"]]
    assert not [n for n in names if n.startswith("tailscale-")], names

    # From bob's address the spoofed admin capabilities must not lift his missing role either.
    r = c.raw_post(gateway, "/v1/chat/completions", source=h.BOB, body={"model": "gpt-4o-mini", "messages": MSGS}, headers=spoof)
    assert r.status_code == 403, r.text
    assert len(mock.api_requests()) == 1


def test_provider_gets_its_own_key_never_the_clients(gateway: h.Gateway, mock: h.MockProvider, planted: h.Planted) -> None:
    c.openai_client(gateway, h.ALICE).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    c.anthropic_client(gateway, h.ALICE).messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MSGS)
    # the client secret in x-api-key too
    r = c.raw_post(
        gateway,
        "/v1/messages",
        source=h.ALICE,
        body={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MSGS},
        headers={"x-api-key": h.CLIENT_SECRET, "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 200, r.text
    reqs = mock.api_requests()
    assert len(reqs) == 3
    assert h.CLIENT_SECRET not in all_upstream_text(mock), "the client's credential reached the provider"
    for req in reqs:
        hdrs = [(n.lower(), v) for n, v in req["headers"]]
        auth = [v for n, v in hdrs if n == "authorization"]
        xkey = [v for n, v in hdrs if n == "x-api-key"]
        if req["path"] == "/v1/chat/completions":
            assert auth == [f"Bearer {planted.openai}"], hdrs
            assert xkey == []
        else:
            assert xkey == [planted.anthropic], hdrs
            assert auth == [], "anthropic gets x-api-key only"


def test_denied_requests_and_errors_leak_nothing(start_gateway, mock: h.MockProvider, planted: h.Planted) -> None:
    gw = start_gateway()
    # A mix of refusals and failures; raw_post/expect_status check every body for planted keys.
    cases = [
        (h.BOB, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS}, {}, 403),
        (h.ALICE, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": MSGS}, {}, 404),
        (h.LOOPBACK, "/v1/chat/completions", {"model": "dead-model", "messages": MSGS}, {}, 502),
        (h.LOOPBACK, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS}, {"x-mock-status": "401"}, 401),
        (h.LOOPBACK, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MSGS}, {"x-mock-status": "500"}, 500),
        (h.LOOPBACK, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS}, {"authorization": "Bearer iris_sk_notarealkey"}, 401),
    ]
    for src, path, body, headers, want in cases:
        r = c.raw_post(gw, path, source=src, body=body, headers=headers)
        assert r.status_code == want, f"{path} {headers}: {r.status_code} {r.text}"
    assert h.CLIENT_SECRET not in all_upstream_text(mock)
    assert "iris_sk_" not in all_upstream_text(mock), "an iris key reached the provider"
    # Only the two x-mock-status requests were forwarded.
    assert len(mock.api_requests()) == 2
    recs = gw.wait_usage(len(cases))
    assert len(recs) == len(cases)
    assert gw.stop() == 0
    assert gw.leaked_secrets() == []

