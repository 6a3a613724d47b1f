"""Grants: deny by default, roles required, model globs over provider/model, tags and groups."""

from __future__ import annotations

import anthropic
import openai
import pytest

import clients as c
import harness as h

MSGS = [{"role": "user", "content": "may I?"}]


def test_alice_openai_via_capmap_and_haiku_via_group_but_not_sonnet(gateway: h.Gateway, mock: h.MockProvider) -> None:
    oa = c.openai_client(gateway, h.ALICE)
    assert oa.chat.completions.create(model="gpt-4o-mini", messages=MSGS).choices[0].message.content
    an = c.anthropic_client(gateway, h.ALICE)
    m = an.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MSGS)
    assert m.content[0].text == h.mock_reply_text("claude-haiku-4-5")

    e = c.expect_status(lambda: an.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MSGS), 404)
    assert isinstance(e, anthropic.NotFoundError)
    c.anthropic_error(e.response.text)
    models_seen = [r["body"] for r in mock.api_requests()]
    assert not any("claude-sonnet-4-5" in b for b in models_seen), "a denied request reached the provider"
    recs = gateway.wait_usage(3)
    assert recs[0]["status"] == 404
    assert recs[0]["login"] == "alice@example.com"


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_bob_has_models_but_no_role(gateway: h.Gateway, mock: h.MockProvider, family: str) -> None:
    if family == "openai":
        client = c.openai_client(gateway, h.BOB)
        e = c.expect_status(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MSGS), 403)
        assert isinstance(e, openai.PermissionDeniedError)
        err = c.openai_error(e.response.text)
    else:
        an = c.anthropic_client(gateway, h.BOB)
        e = c.expect_status(lambda: an.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MSGS), 403)
        assert isinstance(e, anthropic.PermissionDeniedError)
        err = c.anthropic_error(e.response.text)
    assert "access denied: no role granted" in err["message"]
    assert mock.api_requests() == [], "a denied request reached the provider"
    rec = gateway.wait_usage(1)[0]
    assert rec["status"] == 403
    assert rec["login"] == "bob@example.com"
    assert rec["identity_source"] == "whois"


def test_bob_cannot_list_models(gateway: h.Gateway) -> None:
    r = c.raw_get(gateway, "/v1/models", source=h.BOB)
    assert r.status_code == 403
    assert "access denied: no role granted" in c.openai_error(r.text)["message"]


def test_multi_tag_node_matches_single_tag_grant(gateway: h.Gateway, mock: h.MockProvider) -> None:
    an = c.anthropic_client(gateway, h.CI_NODE)
    m = an.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MSGS)
    assert m.content[0].text == h.mock_reply_text("claude-sonnet-4-5")
    oa = c.openai_client(gateway, h.CI_NODE)
    e = c.expect_status(lambda: oa.chat.completions.create(model="gpt-4o-mini", messages=MSGS), 404)
    assert isinstance(e, openai.NotFoundError)
    c.openai_error(e.response.text)
    assert [r["path"] for r in mock.api_requests()] == ["/v1/messages"]


def test_unknown_model_is_404_in_each_dialect(gateway: h.Gateway, mock: h.MockProvider) -> None:
    oa = c.openai_client(gateway)
    e = c.expect_status(lambda: oa.chat.completions.create(model="gpt-nonexistent", messages=MSGS), 404)
    c.openai_error(e.response.text)
    an = c.anthropic_client(gateway)
    e = c.expect_status(lambda: an.messages.create(model="claude-nonexistent", max_tokens=5, messages=MSGS), 404)
    c.anthropic_error(e.response.text)
    assert mock.api_requests() == []
