"""iris keys: a key makes a request act as its owner (when WhoIs knows no one); revoked, expired
and unknown keys get 401; keys never reach the provider."""

from __future__ import annotations

import json
import time

import openai

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "key test"}]


def key_id_for(gw: h.Gateway, login: str) -> str:
    keys = [k for k in gw.keys_list() if k.get("login") == login]
    assert len(keys) == 1, gw.keys_list()
    return keys[0]["id"]


def test_key_acts_as_its_owner_then_revocation_refuses_it(gateway: h.Gateway, mock: h.MockProvider) -> None:
    token = gateway.keys_create("carol@example.com", expires="30d", note="e2e laptop")
    listed = gateway.keys_list()
    assert len(listed) == 1
    k = listed[0]
    assert k["login"] == "carol@example.com"
    assert k["revoked_ms"] is None
    assert k["expires_ms"] and k["expires_ms"] > time.time() * 1000
    assert token not in json.dumps(listed), "keys list must never show the token"

    # From 127.0.0.1 (WhoIs: unknown) the key decides who this is.
    client = c.openai_client(gateway, h.LOOPBACK, api_key=token)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    assert r.choices[0].message.content == h.mock_reply_text("gpt-4o-mini")
    rec = gateway.wait_usage(1)[0]
    assert rec["identity_source"] == "key"
    assert rec["login"] == "carol@example.com"

    # x-api-key works too (Claude Code with ANTHROPIC_API_KEY).
    r2 = c.raw_post(
        gateway,
        "/v1/messages",
        body={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MSGS},
        headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
    )
    assert r2.status_code == 200, r2.text
    assert gateway.wait_usage(2)[0]["login"] == "carol@example.com"
    assert "iris_sk_" not in json.dumps(mock.api_requests()), "an iris key reached the provider"
    assert any(k["last_used_ms"] for k in gateway.keys_list()), "last_used_ms is set after use"

    gateway.keys_revoke(key_id_for(gateway, "carol@example.com"))
    assert gateway.keys_list()[0]["revoked_ms"] is not None
    before = len(mock.api_requests())
    e = c.expect_status(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MSGS), 401)
    assert isinstance(e, openai.AuthenticationError)
    c.openai_error(e.response.text)
    r3 = c.raw_post(
        gateway,
        "/v1/messages",
        body={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MSGS},
        headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
    )
    assert r3.status_code == 401
    c.anthropic_error(r3.text)
    assert len(mock.api_requests()) == before, "a refused key's request reached the provider"


def test_expired_key_is_refused(gateway: h.Gateway, mock: h.MockProvider) -> None:
    token = gateway.keys_create("carol@example.com", expires="1s")
    time.sleep(1.5)
    client = c.openai_client(gateway, h.LOOPBACK, api_key=token)
    c.expect_status(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MSGS), 401)
    assert mock.api_requests() == []
    rec = gateway.wait_usage(1)[0]
    assert rec["status"] == 401


def test_unknown_iris_key_is_refused_but_placeholders_are_ignored(gateway: h.Gateway, mock: h.MockProvider) -> None:
    bogus = "iris_sk_" + "A" * 40
    client = c.openai_client(gateway, h.LOOPBACK, api_key=bogus)
    c.expect_status(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MSGS), 401)
    assert mock.api_requests() == []
    # Placeholders that are not iris keys are ignored: loopback stays loopback.
    for placeholder in ("not-needed", "sk-ant-placeholder", "x"):
        r = c.openai_client(gateway, h.LOOPBACK, api_key=placeholder).chat.completions.create(
            model="gpt-4o-mini", messages=MSGS
        )
        assert r.choices[0].message.content
    recs = gateway.wait_usage(4)
    assert [r["identity_source"] for r in recs[:3]] == ["loopback"] * 3


def test_whois_identity_wins_over_a_key(gateway: h.Gateway) -> None:
    """A tailnet peer that WhoIs knows is that peer, whatever key it carries."""
    token = gateway.keys_create("carol@example.com")
    client = c.openai_client(gateway, h.ALICE, api_key=token)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    rec = gateway.wait_usage(1)[0]
    assert rec["login"] == "alice@example.com"
    assert rec["identity_source"] == "whois"
