"""A stand-in for the iris gateway for the dashboard's browser tests.

Serves crates/iris-ui/assets/ at /ui/ with the routing and headers the real server uses (a path
with no dot that names no file gets index.html; the CSP is read from crates/iris-ui/src/lib.rs)
and answers the admin API (/api/...) with canned but consistent data that follows
/work/helpers/API.md: one set of request records generates usage, sessions, tools, adoption and
captures, so totals on one page agree with another. Every request is logged for the tests.

Loopback only: the server binds 127.0.0.1 on an ephemeral port.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "crates" / "iris-ui" / "assets"
LIB_RS = ROOT / "crates" / "iris-ui" / "src" / "lib.rs"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}


def read_file_extensions() -> set[str]:
    m = re.search(r"pub const FILE_EXTENSIONS: &\[&str\] = &\[(.*?)\];", LIB_RS.read_text(), re.S)
    if not m:
        raise RuntimeError(f"no FILE_EXTENSIONS in {LIB_RS}")
    return set(re.findall(r'"([a-z0-9]+)"', m.group(1)))


def read_csp() -> str:
    m = re.search(r'pub const CSP: &str = "([^"]+)";', LIB_RS.read_text())
    if not m:
        raise RuntimeError(f"no CSP constant in {LIB_RS}")
    return m.group(1)


DAY = 86_400_000
HOUR = 3_600_000

ADMIN = "alice@example.com"
USER = "bob@example.com"
NOBODY = "mallory@example.com"

MODELS = [
    # provider, model, compatibility, prices (in, out, cache read, cache write) per Mtok or None
    ("anthropic", "claude-sonnet-4-5", ["anthropic_messages"], (3.0, 15.0, 0.3, 3.75)),
    ("anthropic", "claude-haiku-4-5", ["anthropic_messages"], (1.0, 5.0, 0.1, 1.25)),
    ("openai", "gpt-4o-mini", ["openai_chat", "openai_responses"], (0.15, 0.6, 0.075, None)),
    ("selfhosted", "llama-3.1-8b", ["openai_chat"], None),
]
FAILING_MODEL = "selfhosted/llama-3.1-8b"
TOOLS = ["Read", "Edit", "Bash", "Grep", "Glob", "WebSearch", "TodoWrite", "Write", "Task"]
XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'

CONFIG_TEXT = """// iris config (HuJSON: comments and trailing commas are fine)
{
  "providers": {
    "anthropic": {
      "baseurl": "https://api.anthropic.com",
      "apikey": "${ANTHROPIC_API_KEY}",
      "authorization": "x-api-key",
      "models": ["claude-sonnet-4-5", "claude-haiku-4-5"],
      "compatibility": {"anthropic_messages": true},
    },
    "openai": {
      "baseurl": "https://api.openai.com",
      "apikey": "${OPENAI_API_KEY}",
      "models": ["gpt-4o-mini"],
      "compatibility": {"openai_chat": true, "openai_responses": true},
    },
    /* a GPU box on the tailnet */
    "selfhosted": {
      "baseurl": "http://gpu-box:8000",
      "models": ["llama-3.1-8b"],
    },
  },
  "grants": [
    // the platform team administers iris
    {"src": ["alice@example.com"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}},
    {"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "anthropic/**"}]}},
    {"src": ["tag:ci"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "openai/gpt-4o-mini"}]}},
  ],
}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hujson_to_json(text: str) -> str:
    """Comments out, trailing commas out (strings kept), like the dashboard's own parser."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] not in "}]":
                out.append(",")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_config(text: str) -> list[dict[str, str]]:
    """A few of iris's checks, enough to give realistic problems."""
    if not text.strip():
        return [{"severity": "error", "path": "", "message": "the config is empty"}]
    try:
        cfg = json.loads(hujson_to_json(text))
    except json.JSONDecodeError as e:
        return [{"severity": "error", "path": "", "message": f"parse error at line {e.lineno}: {e.msg}"}]
    problems = []
    known = {"providers", "grants", "quotas", "hooks", "exporters", "auto_cost_basis", "database", "iris", "temp_grants"}
    for k in cfg:
        if k not in known:
            problems.append({"severity": "warning", "path": k, "message": f'unknown config key "{k}"'})
    for pid, p in (cfg.get("providers") or {}).items():
        url = str(p.get("baseurl", ""))
        if not url.startswith(("http://", "https://")):
            problems.append({"severity": "error", "path": f"providers.{pid}.baseurl",
                             "message": f"baseurl must be an http:// or https:// URL, not {url!r}"})
        if not p.get("models"):
            problems.append({"severity": "error", "path": f"providers.{pid}.models", "message": "models is required"})
    return problems


def admin_grant_index(text: str, login: str) -> int | None:
    try:
        cfg = json.loads(hujson_to_json(text))
    except json.JSONDecodeError:
        return None
    for i, g in enumerate(cfg.get("grants") or []):
        caps = (g.get("app") or {}).get("tailscale.com/cap/aperture") or []
        if (login in g.get("src", []) or "*" in g.get("src", [])) and any(c.get("role") == "admin" for c in caps):
            return i
    return None


@dataclass
class Record:
    id: str
    ts_ms: int
    login: str | None
    tags: list[str]
    provider: str
    model: str
    status: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    duration_ms: int
    streaming: bool
    session_id: str
    session_kind: str
    tool_calls: list[dict[str, str]] = field(default_factory=list)

    @property
    def who(self) -> str:
        return self.login or ",".join(self.tags) or "(loopback)"

    def cost(self) -> float | None:
        price = PRICES.get(f"{self.provider}/{self.model}")
        if price is None:
            return None
        pin, pout, pcr, pcw = price
        return (self.input_tokens * pin + self.output_tokens * pout
                + self.cache_read_tokens * (pcr or 0) + self.cache_write_tokens * (pcw or 0)) / 1e6

    def usage_record(self) -> dict[str, Any]:
        return {
            "id": self.id, "ts_ms": self.ts_ms, "request_id": self.id, "login": self.login,
            "display_name": None, "tags": self.tags, "node": f"{self.who.split('@')[0]}-laptop",
            "node_id": "nXYZ", "identity_source": "whois" if self.login else "key", "key_id": None,
            "api_family": "anthropic_messages" if self.provider == "anthropic" else "openai_chat",
            "method": "POST", "path": "/v1/messages" if self.provider == "anthropic" else "/v1/chat/completions",
            "requested_model": self.model, "provider": self.provider, "upstream_model": self.model,
            "streaming": self.streaming, "status": self.status,
            "error_class": None if self.status < 400 else "upstream_error",
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens, "usage_known": True, "ttfb_ms": self.duration_ms // 4,
            "duration_ms": self.duration_ms, "bytes_in": 2048, "bytes_out": 4096,
            "user_agent": "claude-cli/2.0.14" if self.session_kind == "claude_code" else "OpenAI/Python 2.3.0",
        }


PRICES = {f"{p}/{m}": price for p, m, _, price in MODELS}


def make_records(now_ms: int) -> list[Record]:
    """About 130 requests in 34 sessions over the last 14 days (newest a few minutes ago)."""
    rnd = random.Random(20261122)
    people = [(ADMIN, []), (USER, []), ("carol@example.com", []), (None, ["tag:ci"])]
    records: list[Record] = []
    n = 0
    for s in range(34):
        login, tags = people[s % len(people)]
        kind = ["claude_code", "codex", "fingerprint", "single"][s % 4]
        if tags:
            kind = "single"
        provider, model, _, _ = MODELS[(s * 7 + 1) % len(MODELS)] if kind != "claude_code" else MODELS[s % 2]
        # the newest sessions are active now; the rest spread over 14 days
        start = now_ms - (12 * 60_000 + s * 90_000 if s < 3 else rnd.randint(HOUR, 14 * DAY))
        count = 1 if kind == "single" else rnd.randint(2, 7)
        step = 60_000 if s < 3 else 90_000
        sid = f"sess_{s:02d}{'abcdef'[s % 6]}{rnd.randrange(16**6):06x}"
        for k in range(count):
            n += 1
            ts = min(start + k * rnd.randint(4_000, step), now_ms - 1000)
            tool_calls = []
            if kind in ("claude_code", "codex") and k < count - 1:
                for _ in range(rnd.randint(1, 3)):
                    t = TOOLS[rnd.randrange(len(TOOLS))]
                    tool_calls.append({"name": t, "arguments": json.dumps({"path": f"src/mod{k}.rs"} if t != "Bash" else {"command": "cargo test"})})
            status = 200 if (n % 23) else 502
            records.append(Record(
                id=f"0197a5c0-{n:04d}-7000-8000-{rnd.randrange(16**12):012x}",
                ts_ms=ts, login=login, tags=tags, provider=provider, model=model, status=status,
                input_tokens=rnd.randint(800, 40_000), output_tokens=rnd.randint(50, 4_000),
                cache_read_tokens=rnd.randint(0, 30_000) if provider == "anthropic" else 0,
                cache_write_tokens=rnd.randint(0, 5_000) if provider == "anthropic" else 0,
                reasoning_tokens=rnd.randint(0, 800) if model == "gpt-4o-mini" else 0,
                duration_ms=rnd.randint(300, 25_000), streaming=kind != "single",
                session_id=sid, session_kind=kind, tool_calls=tool_calls,
            ))
    records.sort(key=lambda r: r.ts_ms, reverse=True)
    return records


def day_key(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def floor_to(ms: int, bucket: int) -> int:
    return ms - ms % bucket


class State:
    """Everything the fake API knows; tests change it between and during tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now_ms = int(time.time() * 1000)
        self.records = make_records(self.now_ms)
        self.reset()

    def reset(self, role: str | None = "admin") -> None:
        with self.lock:
            self.role = role
            self.config = CONFIG_TEXT
            self.history = [{"id": 1, "hash": sha(CONFIG_TEXT), "saved_by": "(local-admin)",
                             "saved_at_ms": self.now_ms - 9 * DAY, "bytes": len(CONFIG_TEXT), "source": "local",
                             "text": CONFIG_TEXT}]
            self.keys = [
                {"id": "key_1a2b3c4d5e6f", "login": None, "tags": ["tag:ci"], "note": "GitHub Actions",
                 "created_ms": self.now_ms - 20 * DAY, "expires_ms": self.now_ms + 70 * DAY, "revoked_ms": None,
                 "last_used_ms": self.now_ms - 3 * HOUR, "created_by": ADMIN},
                {"id": "key_0f9e8d7c6b5a", "login": USER, "tags": [], "note": "laptop scripts",
                 "created_ms": self.now_ms - 5 * DAY, "expires_ms": None, "revoked_ms": None,
                 "last_used_ms": None, "created_by": USER},
                {"id": "key_77aa88bb99cc", "login": "carol@example.com", "tags": [], "note": "old",
                 "created_ms": self.now_ms - 40 * DAY, "expires_ms": None, "revoked_ms": self.now_ms - 30 * DAY,
                 "last_used_ms": self.now_ms - 31 * DAY, "created_by": ADMIN},
            ]
            self.created_tokens: list[str] = []
            self.fail: dict[str, tuple[int, dict[str, Any]]] = {}
            self.health: dict[str, Any] = {
                "status": "ok", "version": "0.1.0",
                "config": {"hash": sha(CONFIG_TEXT), "loaded_at_ms": self.now_ms - 9 * DAY, "source": "file", "problems": []},
                "store": {"ok": True}, "usage": {"queued": 0, "dropped": 0},
                "tailscaled": {"whois": True, "reachable": True}}
            self.log: list[dict[str, Any]] = []

    # -- identity -------------------------------------------------------------------------------

    def caller_login(self) -> str:
        return {"admin": ADMIN, "user": USER}.get(self.role or "", NOBODY)

    def whoami(self) -> dict[str, Any]:
        login = self.caller_login()
        identity = {"source": "whois", "login": login, "display_name": login.split("@")[0].title() + " Example",
                    "tags": [], "groups": [], "node_name": login.split("@")[0] + "-laptop", "node_id": "nAbC123",
                    "cap_grants": [], "key_id": None}
        if self.role == "admin":
            grants = [{"source": {"kind": "config", "index": 0}, "src": ADMIN, "role": "admin", "models": ["**"]},
                      {"source": {"kind": "config", "index": 1}, "src": "*", "role": "user", "models": ["anthropic/**"]}]
            models = [f"{p}/{m}" for p, m, _, _ in MODELS]
        elif self.role == "user":
            grants = [{"source": {"kind": "config", "index": 1}, "src": "*", "role": "user", "models": ["anthropic/**"]}]
            models = [f"{p}/{m}" for p, m, _, _ in MODELS if p == "anthropic"]
        else:
            grants, models = [], []
        if self.role is None:
            explain = ("no grant gives this identity a role, so every model request is refused with 403 \"access denied: "
                       "no role granted\"; an admin must add a grant with role \"user\" whose src matches it (its login, "
                       "a group:, a tag: it carries, or *)")
        else:
            explain = f"role {self.role}; {len(models)} model(s) available"
        return {"identity": identity, "role": self.role, "grants": grants, "rejected_tailnet_grants": [],
                "models": models, "explain": explain}

    def visible(self, q: dict[str, str]) -> list[Record]:
        """Records the caller may see, filtered like the API filters them."""
        out = []
        since = int(q["since_ms"]) if q.get("since_ms") else None
        until = int(q["until_ms"]) if q.get("until_ms") else None
        for r in self.records:
            if self.role != "admin" and r.login != self.caller_login():
                continue
            if since is not None and r.ts_ms < since:
                continue
            if until is not None and r.ts_ms >= until:
                continue
            if q.get("login") and r.who != q["login"]:
                continue
            if q.get("model") and q["model"] not in (r.model, f"{r.provider}/{r.model}"):
                continue
            if q.get("status") and str(r.status) != q["status"]:
                continue
            out.append(r)
        return out

    # -- aggregates -----------------------------------------------------------------------------

    @staticmethod
    def group(records: list[Record], key: str) -> dict[str, Any]:
        def empty(k: str) -> dict[str, Any]:
            return {"key": k, "requests": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                    "cache_write_tokens": 0, "reasoning_tokens": 0, "errors": 0, "cost_usd": None,
                    "unpriced_requests": 0}

        groups: dict[str, dict[str, Any]] = {}
        totals = empty("total")
        for r in records:
            k = {"user": r.who, "model": r.model, "provider": r.provider, "day": day_key(r.ts_ms)}[key]
            for g in (groups.setdefault(k, empty(k)), totals):
                g["requests"] += 1
                for f in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
                    g[f] += getattr(r, f)
                g["errors"] += r.status >= 400
                c = r.cost()
                if c is None:
                    g["unpriced_requests"] += 1
                else:
                    g["cost_usd"] = (g["cost_usd"] or 0.0) + c
        ordered = sorted(groups.values(), key=lambda g: g["key"]) if key == "day" else \
            sorted(groups.values(), key=lambda g: -g["requests"])
        return {"group_by": key, "groups": ordered, "totals": totals}

    def sessions(self, records: list[Record]) -> list[dict[str, Any]]:
        by: dict[str, list[Record]] = {}
        for r in records:
            by.setdefault(r.session_id, []).append(r)
        out = []
        for sid, rs in by.items():
            rs.sort(key=lambda r: r.ts_ms)
            tools: dict[str, int] = {}
            for r in rs:
                for t in r.tool_calls:
                    tools[t["name"]] = tools.get(t["name"], 0) + 1
            costs = [r.cost() for r in rs]
            out.append({
                "id": sid, "kind": rs[0].session_kind, "who": rs[0].who, "login": rs[0].login, "tags": rs[0].tags,
                "first_ms": rs[0].ts_ms, "last_ms": rs[-1].ts_ms, "duration_ms": rs[-1].ts_ms - rs[0].ts_ms + rs[-1].duration_ms,
                "requests": len(rs), "models": sorted({r.model for r in rs}),
                "input_tokens": sum(r.input_tokens for r in rs), "output_tokens": sum(r.output_tokens for r in rs),
                "cache_read_tokens": sum(r.cache_read_tokens for r in rs),
                "cache_write_tokens": sum(r.cache_write_tokens for r in rs),
                "reasoning_tokens": sum(r.reasoning_tokens for r in rs),
                "cost_usd": None if any(c is None for c in costs) else sum(costs),
                "tools": [{"name": k, "count": v} for k, v in sorted(tools.items(), key=lambda x: -x[1])],
                "errors": sum(r.status >= 400 for r in rs),
            })
        out.sort(key=lambda s: -s["last_ms"])
        return out

    def capture(self, r: Record) -> dict[str, Any]:
        tool_calls = [{"id": f"toolu_{i:02d}", "name": t["name"], "arguments": t["arguments"]} for i, t in enumerate(r.tool_calls)]
        req_body = json.dumps({
            "model": r.model, "max_tokens": 4096, "stream": r.streaming,
            "system": "You are Claude Code.",
            "messages": [{"role": "user", "content": f"Fix the failing test. Note: {XSS}"}],
            "tools": [{"name": t, "input_schema": {"type": "object"}} for t in TOOLS[:3]],
        })
        text = "I'll look at the failing test first." if tool_calls else "The test now passes: the off-by-one in mod2.rs is fixed."
        sse = "".join([
            'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":%d}}}\n\n' % r.input_tokens,
            'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":%s}}\n\n' % json.dumps(text),
            'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"%s"},"usage":{"output_tokens":%d}}\n\n'
            % ("tool_use" if tool_calls else "end_turn", r.output_tokens),
        ])
        return {
            "request_id": r.id, "method": "POST", "path": r.usage_record()["path"], "status": r.status,
            "request_headers": [["host", "ai.example.ts.net"], ["content-type", "application/json"],
                                ["user-agent", r.usage_record()["user_agent"]], ["x-api-key", "[redacted]"],
                                ["anthropic-version", "2023-06-01"]],
            "response_headers": [["content-type", "text/event-stream"], ["request-id", "req_011CUabc"]],
            "request_body": req_body, "response_body": sse, "request_truncated": False, "response_truncated": False,
            "reassembled": {"text": text, "thinking": "The user wants the test fixed. Read the file first.",
                            "tool_calls": tool_calls, "stop_reason": "tool_use" if tool_calls else "end_turn"},
            "raw_events_truncated": False,
        }


class Handler(BaseHTTPRequestHandler):
    server: "FakeServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, obj: Any) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")

    def error(self, status: int, code: str, message: str, **extra: Any) -> None:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                409: "conflict_error"}.get(status, "api_error" if status >= 500 else "invalid_request_error")
        self.json(status, {"error": {"message": message, "type": kind, "code": code, **extra}})

    def body_json(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw or b"null")

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        st = self.server.state
        entry = {"method": self.command, "path": url.path, "query": url.query, "host": self.headers.get("Host"),
                 "content_type": self.headers.get("Content-Type"), "origin": self.headers.get("Origin"),
                 "sec_fetch_site": self.headers.get("Sec-Fetch-Site"), "body": None}
        with st.lock:
            st.log.append(entry)
        if url.path == "/" or url.path == "/ui":
            self.send(308, b"", "text/plain", {"Location": "/ui/"})
        elif url.path.startswith("/ui/"):
            self.static(unquote(url.path[len("/ui/"):]))
        elif url.path.startswith("/api/"):
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if self.command in ("POST", "PUT", "DELETE"):
                # the real server's CSRF rule: JSON bodies, same origin
                if entry["sec_fetch_site"] not in (None, "same-origin", "none"):
                    return self.error(403, "forbidden", "cross-site request refused")
                origin = (entry["origin"] or "").split("://", 1)[-1]
                if entry["origin"] and origin.lower() != (entry["host"] or "").lower():
                    return self.error(403, "forbidden", "cross-origin request refused")
                if self.command != "DELETE" and "application/json" not in (entry["content_type"] or ""):
                    return self.error(415, "unsupported_media_type", "send the body as Content-Type: application/json")
            try:
                body = self.body_json() if self.command in ("POST", "PUT") else None
            except json.JSONDecodeError as e:
                return self.error(400, "bad_request", f"invalid JSON body: {e}")
            entry["body"] = body
            with st.lock:
                failure = st.fail.get(url.path)
            if failure:
                return self.json(*failure)
            self.api(url.path, q, body)
        else:
            self.error(404, "not_found", f"no route for {url.path}")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    def static(self, rel: str) -> None:
        target = (ASSETS / rel).resolve() if rel else ASSETS / "index.html"
        ok = target.is_file() and ASSETS.resolve() in target.parents
        if not ok:
            # the same rule as iris_ui::asset: a miss with a file extension is a 404, anything
            # else is a client-side route (dashboard/alice@example.com included)
            last = rel.rsplit("/", 1)[-1]
            if "." in last and last.rsplit(".", 1)[1].lower() in self.server.file_extensions:
                return self.error(404, "not_found", f"no asset {rel}")
            target = ASSETS / "index.html"
        headers = {
            "Content-Security-Policy": self.server.csp,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }
        self.send(200, target.read_bytes(), CONTENT_TYPES[target.suffix], headers)

    # -- the API --------------------------------------------------------------------------------

    def api(self, path: str, q: dict[str, str], body: Any) -> None:
        st = self.server.state
        role = st.role
        if path == "/api/whoami":
            return self.json(200, st.whoami())
        if path == "/api/health":
            if role == "admin":
                return self.json(200, st.health)
            return self.json(200, {"status": st.health["status"], "version": st.health["version"]})
        if role is None:
            return self.error(403, "forbidden", f"access denied: no role granted to {NOBODY} (GET /api/whoami explains what iris sees)")
        admin = role == "admin"
        admin_only = ("/api/config", "/api/config/validate", "/api/config/history", "/api/config/rollback",
                      "/api/adoption", "/api/adoption.csv")
        if path in admin_only and not admin:
            return self.error(403, "forbidden", f"this needs the admin role; {st.caller_login()} has role user")

        if path == "/api/usage":
            return self.json(200, st.group(st.visible(q), q.get("group_by", "user")))
        if path == "/api/logs":
            rs = st.visible(q)
            return self.json(200, self.page(rs, q, lambda r: r.usage_record(), "records", 50))
        if path == "/api/sessions":
            return self.json(200, self.page(st.sessions(st.visible(q)), q, lambda s: s, "sessions", 50))
        if path.startswith("/api/sessions/"):
            sid = unquote(path[len("/api/sessions/"):])
            rs = [r for r in st.visible({}) if r.session_id == sid]
            if not rs:
                return self.error(404, "not_found", f"no session {sid}")
            reqs = []
            for r in sorted(rs, key=lambda r: r.ts_ms):
                rec = r.usage_record()
                rec.update({"cost_usd": r.cost(), "session_id": sid, "tool_calls": r.tool_calls})
                reqs.append(rec)
            return self.json(200, {"session": st.sessions(rs)[0], "requests": reqs})
        if path.startswith("/api/captures/"):
            rid = unquote(path[len("/api/captures/"):])
            rs = [r for r in st.visible({}) if r.id == rid]
            if not rs or rs[0].status >= 500:
                return self.error(404, "not_found", f"no capture for request {rid}: purged by retention or never captured")
            return self.json(200, st.capture(rs[0]))
        if path == "/api/tools":
            return self.json(200, self.tools(st.visible(q), q.get("bucket", "day")))
        if path == "/api/adoption":
            return self.json(200, self.adoption(st.visible(q), q.get("period", "day")))
        if path == "/api/adoption.csv":
            rows = ["who,requests,input_tokens,output_tokens,cost_usd"]
            for who, g in sorted(((g["key"], g) for g in st.group(st.visible(q), "user")["groups"])):
                rows.append(f"{who},{g['requests']},{g['input_tokens']},{g['output_tokens']},{g['cost_usd'] if g['cost_usd'] is not None else ''}")
            return self.send(200, ("\n".join(rows) + "\n").encode(), "text/csv; charset=utf-8",
                             {"Content-Disposition": 'attachment; filename="iris-adoption.csv"'})
        if path == "/api/models" and self.command == "GET":
            allowed = set(st.whoami()["models"])
            return self.json(200, {"models": [
                {"id": m, "provider": p, "qualified": f"{p}/{m}", "compatibility": compat}
                for p, m, compat, _ in MODELS if f"{p}/{m}" in allowed]})
        if path == "/api/models/test" and self.command == "POST":
            model = (body or {}).get("model")
            if model not in st.whoami()["models"]:
                return self.error(404, "model_not_found", f"model {model!r} is not available to you")
            if model == FAILING_MODEL:
                return self.json(200, {"ok": False, "status": 502, "latency_ms": 1503, "text": None,
                                       "error": "upstream unreachable: connection refused (gpu-box:8000)"})
            return self.json(200, {"ok": True, "status": 200, "latency_ms": 412, "text": "Hello! How can I help?", "error": None})
        if path == "/api/providers":
            out = []
            for pid, name, desc in (("anthropic", "Anthropic", "Claude models"), ("openai", "OpenAI", "GPT models"),
                                    ("selfhosted", "GPU box", "vLLM on the tailnet")):
                ms = [m for p, m, _, _ in MODELS if p == pid]
                compat = sorted({c for p, _, cs, _ in MODELS if p == pid for c in cs})
                out.append({"id": pid, "name": name, "description": desc, "models": ms,
                            "compatibility": {c: True for c in compat}})
            return self.json(200, out)
        if path == "/api/prices":
            return self.json(200, {"models": [
                {"provider": p, "model": m, "input_per_mtok": pr[0] if pr else None, "output_per_mtok": pr[1] if pr else None,
                 "cache_read_per_mtok": pr[2] if pr else None, "cache_write_per_mtok": pr[3] if pr else None,
                 "source": "builtin" if pr else None, "as_of": "2026-11-01" if pr else None}
                for p, m, _, pr in MODELS]})
        if path == "/api/config" and self.command == "GET":
            return self.json(200, {"config": st.config, "exists": True, "hash": sha(st.config)})
        if path == "/api/config" and self.command == "PUT":
            return self.save(body.get("config", ""), body.get("hash", ""))
        if path == "/api/config/validate":
            problems = check_config((body or {}).get("config", ""))
            valid = not problems
            return self.json(200, {"valid": valid, "Valid": valid, "problems": problems})
        if path == "/api/config/history":
            return self.json(200, {"versions": [{k: v for k, v in h.items() if k != "text"} for h in reversed(st.history)]})
        if path == "/api/config/rollback":
            v = next((h for h in st.history if h["id"] == body.get("id")), None)
            if v is None:
                return self.error(404, "not_found", f"no config version {body.get('id')}")
            return self.save(v["text"], body.get("hash", ""), source="rollback")
        if path == "/api/keys" and self.command == "GET":
            keys = [k for k in st.keys if admin or k["login"] == st.caller_login()]
            return self.json(200, {"keys": keys})
        if path == "/api/keys" and self.command == "POST":
            subject = str((body or {}).get("for") or "")
            if not admin and subject != st.caller_login():
                return self.error(403, "forbidden", "non-admins may create keys only for themselves")
            if not (subject.startswith("tag:") or "@" in subject):
                return self.error(400, "bad_request", f"{subject!r} is neither a login nor tag:NAME")
            exp = (body or {}).get("expires")
            mult = {"d": DAY, "h": HOUR}
            expires_ms = None if not exp else int(time.time() * 1000) + int(exp[:-1]) * mult[exp[-1]]
            kid = "key_" + secrets.token_hex(6)
            token = "iris_sk_" + secrets.token_urlsafe(32)
            with st.lock:
                st.created_tokens.append(token)
                st.keys.append({"id": kid, "login": None if subject.startswith("tag:") else subject,
                                "tags": subject.split(",") if subject.startswith("tag:") else [],
                                "note": (body or {}).get("note"), "created_ms": int(time.time() * 1000),
                                "expires_ms": expires_ms, "revoked_ms": None, "last_used_ms": None,
                                "created_by": st.caller_login()})
            return self.json(201, {"id": kid, "token": token, "for": subject, "expires_ms": expires_ms})
        if path.startswith("/api/keys/") and self.command == "DELETE":
            kid = unquote(path[len("/api/keys/"):])
            k = next((k for k in st.keys if k["id"] == kid and (admin or k["login"] == st.caller_login())), None)
            if k is None:
                return self.error(404, "not_found", f"no key {kid}")
            k["revoked_ms"] = int(time.time() * 1000)
            return self.json(200, {"revoked": True})
        return self.error(404, "not_found", f"no API route {self.command} {path}")

    def page(self, items: list[Any], q: dict[str, str], conv: Any, name: str, default: int) -> dict[str, Any]:
        limit = max(1, min(int(q.get("limit") or default), 1000))
        start = int(q["cursor"].removeprefix("c")) if q.get("cursor") else 0
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        return {name: [conv(x) for x in chunk], "next_cursor": f"c{start + limit}" if more else None}

    def save(self, text: str, hash_: str, source: str = "api") -> None:
        st = self.server.state
        with st.lock:
            if hash_ != sha(st.config):
                return self.error(409, "conflict", "the config changed since it was read (someone saved in between): "
                                  "read it again, re-apply your change and save with the new hash")
            if not text.strip():
                return self.error(400, "bad_request", "refused: the config is empty")
            problems = check_config(text)
            if problems:
                return self.error(400, "invalid_config",
                                  f"refused: saving treats warnings as errors, and the config has {len(problems)} problem(s): "
                                  + "; ".join(f"{p['path']}: {p['message']}" for p in problems), problems=problems)
            if admin_grant_index(text, ADMIN) is None:
                return self.error(403, "admin_lockout",
                                  f"refused: this config would take the admin role away from {ADMIN} (who is saving it); "
                                  "the grant that gives it today is grants[0]. Keep a grant with role \"admin\" whose src "
                                  "matches you, or use the local break-glass admin (`iris config put --local`) on the gateway's host")
            st.config = text
            st.history.append({"id": len(st.history) + 1, "hash": sha(text), "saved_by": ADMIN,
                               "saved_at_ms": int(time.time() * 1000), "bytes": len(text), "source": source, "text": text})
        return self.json(200, {"success": True, "hash": sha(text)})

    def tools(self, records: list[Record], bucket: str) -> dict[str, Any]:
        size = HOUR if bucket == "hour" else DAY
        buckets: dict[int, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for r in records:
            for t in r.tool_calls:
                b = buckets.setdefault(floor_to(r.ts_ms, size), {})
                b[t["name"]] = b.get(t["name"], 0) + 1
                totals[t["name"]] = totals.get(t["name"], 0) + 1
        if buckets:
            lo, hi = min(buckets), max(buckets)
            for start in range(lo, hi + size, size):
                buckets.setdefault(start, {})
        by_session = [{"session_id": s["id"], "who": s["who"], "tools": s["tools"]}
                      for s in self.server.state.sessions(records) if s["tools"]]
        return {"buckets": [{"start_ms": k, "counts": v} for k, v in sorted(buckets.items())],
                "by_session": by_session,
                "totals": [{"name": k, "count": v} for k, v in sorted(totals.items(), key=lambda x: -x[1])]}

    def adoption(self, records: list[Record], period: str) -> dict[str, Any]:
        def start_of(ms: int) -> int:
            day = floor_to(ms, DAY)
            if period == "week":  # weeks start on Monday (1970-01-01 was a Thursday)
                return day - ((day // DAY + 3) % 7) * DAY
            return day

        active: dict[int, set[str]] = {}
        for r in records:
            active.setdefault(start_of(r.ts_ms), set()).add(r.who)
        users = self.server.state.group(records, "user")["groups"]
        models: dict[str, dict[str, Any]] = {}
        for r in records:
            m = models.setdefault(f"{r.provider}/{r.model}", {"model": f"{r.provider}/{r.model}", "requests": 0, "users": set()})
            m["requests"] += 1
            m["users"].add(r.who)
        return {
            "active": [{"period_start_ms": k, "users": len(v)} for k, v in sorted(active.items())],
            "top_users": [{"who": g["key"], "requests": g["requests"], "tokens": g["input_tokens"] + g["output_tokens"],
                           "cost_usd": g["cost_usd"]} for g in sorted(users, key=lambda g: -(g["input_tokens"] + g["output_tokens"]))],
            "models": sorted(({"model": m["model"], "requests": m["requests"], "users": len(m["users"])} for m in models.values()),
                             key=lambda m: -m["requests"]),
        }


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = State()
        self.csp = read_csp()
        self.file_extensions = read_file_extensions()
        self.thread = threading.Thread(target=self.serve_forever, name="fake-iris", daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "FakeServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def requests(self, path_prefix: str = "", method: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            return [copy.deepcopy(e) for e in self.state.log
                    if e["path"].startswith(path_prefix) and (method is None or e["method"] == method)]

    def someone_else_saves(self) -> None:
        """Another admin saves between our GET and PUT: our hash goes stale."""
        with self.state.lock:
            self.state.config = self.state.config.replace("// the platform team administers iris",
                                                          "// the platform team administers iris (edited by dave)")


# Hosts only Chromium's own updaters reach (its component and download redirector), never a
# page: a connection to one mid-test is the browser's background work (seen once in CI-like
# runs despite --disable-component-update), refused and reported, not charged to the test.
CHROMIUM_UPDATE_HOSTS = ("redirector.gvt1.com", "update.googleapis.com")


class EgressRecorder:
    """Chromium's proxy: anything it tries to reach outside loopback arrives here, is recorded
    and refused. Loopback itself bypasses the proxy, so the dashboard's own calls never do."""

    def __init__(self) -> None:
        import socket

        self.seen: list[str] = []
        self.startup: list[str] = []
        # Connections to CHROMIUM_UPDATE_HOSTS, kept apart from `seen`.
        self.updaters: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self.loop, name="egress-recorder", daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def loop(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    first = "(no request line)"
                parts = first.split()
                host = parts[1].rsplit(":", 1)[0] if len(parts) > 1 and parts[0] == "CONNECT" else ""
                (self.updaters if host in CHROMIUM_UPDATE_HOSTS else self.seen).append(first)
                try:
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


