"""Clients for the suite: the official SDKs and raw httpx, each bound to a loopback source address
(which is who the caller is, through the fake tailscaled's fixtures).

Every answer body the suite sees is checked for the planted provider keys on arrival.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import anthropic
import httpx
import openai

import harness as h

PLANTED = h.Planted()
SDK_TIMEOUT = 30.0


def assert_no_planted(text: str, where: str) -> None:
    for key in PLANTED.values():
        assert key not in text, f"a planted provider key leaked into {where}: {text[:500]}"


def _hx_client(sdk: Any, source: str, async_: bool = False) -> Any:
    hx = h.httpx_module_of(sdk)
    if async_:
        return sdk.DefaultAsyncHttpxClient(transport=hx.AsyncHTTPTransport(local_address=source))
    return sdk.DefaultHttpxClient(transport=hx.HTTPTransport(local_address=source))


def openai_client(gw: h.Gateway, source: str = h.LOOPBACK, api_key: str = h.CLIENT_SECRET) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1",
        api_key=api_key,
        http_client=_hx_client(openai, source),
        max_retries=0,
        timeout=SDK_TIMEOUT,
    )


def async_openai_client(
    gw: h.Gateway, source: str = h.LOOPBACK, api_key: str = h.CLIENT_SECRET
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gw.url}/v1",
        api_key=api_key,
        http_client=_hx_client(openai, source, async_=True),
        max_retries=0,
        timeout=SDK_TIMEOUT,
    )


def anthropic_client(
    gw: h.Gateway, source: str = h.LOOPBACK, api_key: str = h.CLIENT_SECRET
) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.url,
        api_key=api_key,
        http_client=_hx_client(anthropic, source),
        max_retries=0,
        timeout=SDK_TIMEOUT,
    )


def async_anthropic_client(
    gw: h.Gateway, source: str = h.LOOPBACK, api_key: str = h.CLIENT_SECRET
) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=gw.url,
        api_key=api_key,
        http_client=_hx_client(anthropic, source, async_=True),
        max_retries=0,
        timeout=SDK_TIMEOUT,
    )


def raw_client(source: str = h.LOOPBACK, timeout: float = SDK_TIMEOUT) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=timeout)


def raw_post(
    gw: h.Gateway,
    path: str,
    *,
    source: str = h.LOOPBACK,
    body: Any = None,
    content: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = SDK_TIMEOUT,
) -> httpx.Response:
    """POSTs JSON (`body`) or raw bytes (`content`) and checks the answer for planted keys."""
    hdrs = {"content-type": "application/json", **(headers or {})}
    if content is None:
        content = json.dumps(body)
    with raw_client(source, timeout) as c:
        r = c.post(f"{gw.url}{path}", content=content, headers=hdrs)
    assert_no_planted(r.text, f"the answer to POST {path}")
    return r


def raw_get(gw: h.Gateway, path: str, *, source: str = h.LOOPBACK, headers: dict[str, str] | None = None) -> httpx.Response:
    with raw_client(source) as c:
        r = c.get(f"{gw.url}{path}", headers=headers or {})
    assert_no_planted(r.text, f"the answer to GET {path}")
    return r


def expect_status(call: Callable[[], Any], status: int) -> Any:
    """Runs an SDK call that must fail with `status`; returns the SDK's exception."""
    try:
        call()
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        assert_no_planted(e.response.text, "an error body")
        assert e.status_code == status, f"wanted {status}, got {e.status_code}: {e.response.text}"
        return e
    raise AssertionError(f"the call succeeded; wanted HTTP {status}")


def openai_error(resp_text: str) -> dict[str, Any]:
    """Checks the OpenAI error shape and returns the inner `error` object."""
    body = json.loads(resp_text)
    assert isinstance(body.get("error"), dict), f"not an OpenAI error body: {resp_text}"
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], resp_text
    assert isinstance(err.get("type"), str) and err["type"], resp_text
    assert "code" in err, f"OpenAI errors carry a code field (may be null): {resp_text}"
    return err


def anthropic_error(resp_text: str) -> dict[str, Any]:
    """Checks the Anthropic error shape and returns the inner `error` object."""
    body = json.loads(resp_text)
    assert body.get("type") == "error", f"not an Anthropic error body: {resp_text}"
    err = body.get("error")
    assert isinstance(err, dict), resp_text
    assert isinstance(err.get("type"), str) and err["type"], resp_text
    assert isinstance(err.get("message"), str) and err["message"], resp_text
    return err


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in text.split("\n\n"):
        data = [line[len("data:") :].lstrip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            out.append("\n".join(data))
    return out
