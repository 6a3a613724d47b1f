"""Graceful shutdown under load: SIGTERM lets every in-flight stream finish, iris exits 0, and
every request has exactly one usage record."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import clients as c
import harness as h

N = 20
CHUNKS = 20
DELAY_MS = 100  # each stream takes ~2 s
KNOBS = {"x-mock-chunks": str(CHUNKS), "x-mock-chunk-delay-ms": str(DELAY_MS)}
MSGS = [{"role": "user", "content": "stream slowly"}]


def _openai_stream(gw: h.Gateway, i: int) -> tuple[str, int | None]:
    client = c.openai_client(gw)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={**KNOBS, "x-e2e-stream": str(i)},
        )
    )
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    return text, chunks[-1].usage.completion_tokens if chunks[-1].usage else None


def _anthropic_stream(gw: h.Gateway, i: int) -> tuple[str, int | None]:
    client = c.anthropic_client(gw)
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=MSGS,
        extra_headers={**KNOBS, "x-e2e-stream": str(i)},
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    return text, final.usage.output_tokens


def test_sigterm_drains_in_flight_streams(start_gateway, mock: h.MockProvider) -> None:
    gw = start_gateway()
    with ThreadPoolExecutor(max_workers=N) as pool:
        futures = [
            pool.submit(_openai_stream if i % 2 == 0 else _anthropic_stream, gw, i) for i in range(N)
        ]
        mock.wait_requests(N, timeout=20, pred=lambda r: any(n == "x-e2e-stream" for n, _ in r["headers"]))
        time.sleep(0.3)  # a few chunks of each stream are out; the rest are ~1.5 s away
        assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()]
        t0 = time.monotonic()
        code = gw.stop()
        drained_after = time.monotonic() - t0
        results = [f.result(timeout=30) for f in futures]
    assert code == 0, gw.proc.stderr_text()[-3000:]
    assert drained_after >= 0.3, "iris exited before its streams could have finished"
    for i, (text, out_tokens) in enumerate(results):
        model = "gpt-4o-mini" if i % 2 == 0 else "claude-haiku-4-5"
        assert text == h.mock_reply_text(model, CHUNKS), f"stream {i} was cut: {text!r}"
        assert out_tokens == CHUNKS, f"stream {i}: usage {out_tokens}"
    recs = gw.usage()
    assert len(recs) == N, f"{len(recs)} usage records for {N} requests"
    assert all(r["status"] == 200 for r in recs), [r["status"] for r in recs]
    assert all(r["streaming"] is True for r in recs)
    assert all(r["output_tokens"] == CHUNKS for r in recs), [r["output_tokens"] for r in recs]
    assert sorted(r["model"] for r in recs) == sorted(["gpt-4o-mini", "claude-haiku-4-5"] * (N // 2))
