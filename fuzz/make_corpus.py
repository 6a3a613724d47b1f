#!/usr/bin/env python3
"""Regenerate the fixture seeds of fuzz/corpus/<target>/ from the repository's own fixtures.

Writes only files named `fixture-*` (hand-written seeds are named `hand-*` and left alone), so
running it again after a fixture changed refreshes the seeds. The seed layouts follow each
target's input format (see the target's doc comment and fuzz/src/lib.rs `Split`):

- split targets: `flags, 0` (no cuts) then the fixture;
- capture_decode: `flags, selectors..., cap (u16 LE, >> 4)` then the encoded fixture.

Usage: python3 fuzz/make_corpus.py   (from anywhere; needs only Python 3, and the `zstd` tool for
the zstd seeds, which are skipped without it)
"""

import gzip
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
PROVIDERS = ROOT / "crates/iris-providers/tests/fixtures"
CAPTURE = ROOT / "crates/iris-capture/tests/fixtures"
WHOIS = ROOT / "crates/iris-testkit/fixtures/whois.json"
CONFIG = ROOT / "crates/iris-config/src/default_config.hujson"
# Recorded client requests (the same files are copied into iris-capture's fixtures).
REQUESTS = CAPTURE / "client-requests"


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"fixture-{name}").write_bytes(data)


def split_seed(flags: int, body: bytes) -> bytes:
    return bytes([flags, 0]) + body


def clean() -> None:
    for f in CORPUS.glob("*/fixture-*"):
        f.unlink()


def main() -> None:
    clean()
    write("config", "default.hujson", CONFIG.read_bytes())

    # Usage extraction. flags bit 0: stream; openai_chat bits 1-2: chat/completions/embeddings.
    chat_streams = sorted(PROVIDERS.glob("openai_chat_stream_*.sse")) + sorted(
        CAPTURE.glob("openai_chat_stream_*.sse")
    )
    for f in chat_streams:
        write("sse_usage_openai_chat", f.name, split_seed(1, f.read_bytes()))
        write("include_usage_filter", f.name, split_seed(0, f.read_bytes()))
    for f in [PROVIDERS / "openai_chat.json", CAPTURE / "openai_chat_text.json", CAPTURE / "openai_chat_tools.json"]:
        write("sse_usage_openai_chat", f.name, split_seed(0, f.read_bytes()))
    emb = PROVIDERS / "openai_embeddings_base64.json"
    write("sse_usage_openai_chat", emb.name, split_seed(2 << 1, emb.read_bytes()))

    for f in sorted(PROVIDERS.glob("responses_stream_*.sse")) + [CAPTURE / "openai_responses_stream_tools.sse"]:
        write("sse_usage_openai_responses", f.name, split_seed(1, f.read_bytes()))
    for f in [PROVIDERS / "responses.json", CAPTURE / "openai_responses_tools.json"]:
        write("sse_usage_openai_responses", f.name, split_seed(0, f.read_bytes()))

    for f in sorted(PROVIDERS.glob("anthropic_stream_*.sse")) + sorted(CAPTURE.glob("anthropic_stream_*.sse")):
        write("sse_usage_anthropic", f.name, split_seed(1, f.read_bytes()))
    for f in [PROVIDERS / "anthropic_message.json", CAPTURE / "anthropic_message_tools.json", CAPTURE / "anthropic_error_body.json"]:
        write("sse_usage_anthropic", f.name, split_seed(0, f.read_bytes()))

    # Reassembly: flags bit 0 stream, bits 1-2 the dialect (anthropic, chat, completions, responses).
    dialect = {"anthropic": 0, "openai_chat": 1, "openai_responses": 3}
    for f in sorted(CAPTURE.glob("*.sse")) + sorted(CAPTURE.glob("*.json")):
        d = next((v for k, v in dialect.items() if f.name.startswith(k)), None)
        if d is None:
            continue
        stream = 1 if f.suffix == ".sse" else 0
        write("capture_reassemble", f.name, split_seed(stream | d << 1, f.read_bytes()))

    # Request bodies as the clients sent them (the peek and session detection read them), plus
    # one with a model name after 0xFF.
    for f in sorted(REQUESTS.glob("*.json")):
        body = json.dumps(json.loads(f.read_text())["body"], separators=(",", ":")).encode()
        for target in ("peek_model", "session_key"):
            write(target, f.name, body)
    write(
        "peek_model",
        "stream-options.json",
        b'{"model":"anthropic/claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}'
        + b"\xff"
        + b"claude-sonnet-4-5",
    )

    # Session detection: chats whose openings exercise the fingerprint (system and developer
    # messages, parts, escapes, a key given twice).
    write(
        "session_key",
        "chat-opening.json",
        b'{"model":"m","messages":[{"role":"developer","content":" be\\n brief\\u2003"},'
        b'{"role":"system","content":[{"type":"text","text":"a"},"b",{"type":"image_url","image_url":{"url":"u"}}]},'
        b'{"role":7},"x",{"role":"user","role":"user","content":"caf\\u00e9 \\ud83d\\ude00\\t end"},'
        b'{"role":"user","content":"later"}],"messages":[{"role":"user","content":"last wins"}]}',
    )
    write(
        "session_key",
        "codex-anthropic.bin",
        b'\xff\x03{"metadata":{"user_id":"{\\"session_id\\":\\"s-1\\"}"},"prompt_cache_key":"pk"}',
    )

    # WhoIs answers of the fake tailscaled, one file each.
    for addr, answer in json.loads(WHOIS.read_text()).items():
        write("whois_decode", addr.replace(":", "_") + ".json", json.dumps(answer, indent=1).encode())

    # Encoded bodies: flags = complete | n << 1; selectors index CODINGS in capture_decode.rs.
    plain = (CAPTURE / "openai_chat_stream_tools.sse").read_bytes()
    cap = struct.pack("<H", 0xFFFF)  # >> 4: 4 KiB - 1

    def coded(name: str, selectors: list, body: bytes, complete: int = 1) -> None:
        write("capture_decode", name, bytes([complete | len(selectors) << 1, *selectors]) + cap + body)

    coded("gzip", [0], gzip.compress(plain, mtime=0))
    coded("x-gzip-cut", [1], gzip.compress(plain, mtime=0)[:200], complete=0)
    coded("deflate-zlib", [2], zlib.compress(plain))
    raw = zlib.compressobj(wbits=-15)
    coded("deflate-raw", [2], raw.compress(plain) + raw.flush())
    coded("gzip-identity-gzip", [0, 5, 0], gzip.compress(gzip.compress(plain, mtime=0), mtime=0))
    coded("identity", [5], plain)
    if shutil.which("zstd"):
        z = subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout
        coded("zstd", [4], z)
        coded("gzip-zstd", [0, 4], subprocess.run(["zstd", "-q", "-c"], input=gzip.compress(plain, mtime=0), capture_output=True, check=True).stdout)


if __name__ == "__main__":
    main()
