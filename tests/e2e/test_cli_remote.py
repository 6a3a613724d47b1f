"""`iris unplug` end to end (SDK -> unplug -> iris -> mock, streaming, attributed to the key's
person) and the CLI against a running gateway (`--gateway`, `--local`)."""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import clients as c
import harness as h


def start_unplug(gw_url: str, key: str, workdir: Path) -> h.Proc:
    env = {**os.environ, "IRIS_KEY": key}
    return h.Proc("unplug", [str(h.IRIS), "unplug", "--gateway", gw_url, "--port", "0"], workdir / "unplug-logs", env=env)


def test_unplug_streams_and_attributes_to_the_keys_person(gateway: h.Gateway, mock: h.MockProvider, tmp_path: Path) -> None:
    token = gateway.keys_create("carol@example.com", expires="1h")
    up = start_unplug(gateway.url, token, tmp_path)
    try:
        local = up.wait_listening()
        assert local.startswith("http://127.0.0.1:"), local
        assert "carol@example.com" in up.stdout_text(), up.stdout_text()
        assert token not in up.stdout_text() and token not in up.stderr_text()
        # The client holds no key at all; unplug adds it.
        via = types.SimpleNamespace(url=local)
        client = c.openai_client(via, h.LOOPBACK, api_key="not-needed")
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "through unplug"}], stream=True
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert text == h.mock_reply_text("gpt-4o-mini")
        rec = gateway.wait_usage(1)[0]
        assert rec["identity_source"] == "key"
        assert rec["login"] == "carol@example.com"
        assert rec["streaming"] is True and rec["output_tokens"] == 5
        upstream = mock.wait_requests(1)[-1]
        assert "iris_sk_" not in str(upstream["headers"])
    finally:
        up.kill()


def test_unplug_says_clearly_when_the_gateway_is_unreachable_or_refuses(gateway: h.Gateway, dead_url: str, tmp_path: Path) -> None:
    token = gateway.keys_create("carol@example.com")
    res = subprocess.run(
        [str(h.IRIS), "unplug", "--gateway", dead_url, "--port", "0"],
        env={**os.environ, "IRIS_KEY": token}, capture_output=True, text=True, timeout=h.CLI_TIMEOUT,
    )
    assert res.returncode != 0
    low = res.stderr.lower()
    assert dead_url in res.stderr and ("unreachable" in low or "cannot reach" in low), res.stderr
    forged = "iris_sk_" + "A" * 43
    res = subprocess.run(
        [str(h.IRIS), "unplug", "--gateway", gateway.url, "--port", "0"],
        env={**os.environ, "IRIS_KEY": forged}, capture_output=True, text=True, timeout=h.CLI_TIMEOUT,
    )
    assert res.returncode != 0
    assert "refused the key" in res.stderr, res.stderr
    assert forged not in res.stderr + res.stdout


def test_cli_against_a_running_gateway(gateway: h.Gateway, tmp_path: Path) -> None:
    who = gateway.cli("whoami", "--gateway", gateway.url)
    assert "(loopback)" in who.stdout and "admin" in who.stdout, who.stdout
    got = gateway.cli("config", "get", "--gateway", gateway.url)
    assert got.stdout == gateway.config_path.read_text()
    hash_line = [ln for ln in got.stderr.splitlines() if ln.startswith("hash: ")][0]
    current = hash_line.split(": ", 1)[1]
    # A stale hash: refused with an actionable message, nothing changes.
    new = tmp_path / "new.hujson"
    new.write_text(got.stdout.replace('"max_body_bytes"', '"max_body_bytes"', 1) + "\n// edited\n")
    stale = gateway.cli("config", "put", str(new), "--hash", "0" * 64, "--gateway", gateway.url, check=False)
    assert stale.returncode != 0
    assert "config get" in stale.stderr, stale.stderr
    ok = gateway.cli("config", "put", str(new), "--hash", current, "--gateway", gateway.url, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert gateway.config_path.read_text().endswith("// edited\n")
    hist = gateway.cli("config", "history", "--gateway", gateway.url)
    assert len(hist.stdout.strip().splitlines()) == 2, hist.stdout
    # Break-glass over the local socket works as the local admin.
    who = gateway.cli("whoami", "--local", "--data-dir", str(gateway.data_dir))
    assert "local" in who.stdout, who.stdout
    # Remote logs through the API.
    logs = gateway.cli("usage", "--gateway", gateway.url, "--json")
    assert logs.returncode == 0


def test_keys_through_the_gateway_api(gateway: h.Gateway) -> None:
    made = gateway.cli("keys", "create", "--for", "carol@example.com", "--expires", "1h", "--gateway", gateway.url)
    token = made.stdout.strip()
    assert token.startswith("iris_sk_") and "\n" not in token
    listed = gateway.cli("keys", "list", "--json", "--gateway", gateway.url).stdout
    assert "carol@example.com" in listed and token not in listed
    client = c.openai_client(gateway, h.LOOPBACK, api_key=token)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "k"}])
    assert r.choices[0].message.content == h.mock_reply_text("gpt-4o-mini")
    key_id = [ln for ln in listed.splitlines() if "carol" in ln][0].split('"id":"')[1].split('"')[0]
    gateway.cli("keys", "revoke", key_id, "--gateway", gateway.url)
    import openai
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "k"}])
        raise AssertionError("a revoked key was accepted")
    except openai.AuthenticationError:
        pass
