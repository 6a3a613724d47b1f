"""Process harness for the iris end-to-end suite.

Starts the release binaries (iris, iris-mock-provider, iris-fake-tailscaled) on loopback and on a
unix socket, parses their `listening:` lines, and wraps the iris CLI (`usage`, `keys`, `config
validate`). Every wait is bounded. Nothing here talks to anything but 127.0.0.0/8 and unix sockets.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

ROOT = Path(__file__).resolve().parents[2]
# The release binaries scripts/test builds (honouring CARGO_TARGET_DIR), or IRIS_BIN_DIR.
BIN_DIR = Path(
    os.environ.get("IRIS_BIN_DIR")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target").resolve() / "release"
)
IRIS = BIN_DIR / "iris"
MOCK = BIN_DIR / "iris-mock-provider"
FAKE_TAILSCALED = BIN_DIR / "iris-fake-tailscaled"
FIXTURES = ROOT / "crates" / "iris-testkit" / "fixtures" / "whois.json"

# Source addresses that make a client a given person (see fixtures/whois.json).
LOOPBACK = "127.0.0.1"  # absent from the fixtures: WhoIs 404 -> "(loopback)"
ALICE = "127.0.0.2"  # alice@example.com, group:ai-users, CapMap role user + openai/**
CI_NODE = "127.0.0.3"  # tagged [tag:prod, tag:ci], LoginName "tagged-devices"
BOB = "127.0.0.5"  # bob@example.com, no groups, CapMap null

# What clients send as their own credential: it must never reach a provider.
CLIENT_SECRET = "client-secret-xyz"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 30.0


def mock_reply_text(model: str, chunks: int = 5) -> str:
    """The mock's deterministic answer (iris_testkit::mock::reply_text)."""
    chunks = max(1, chunks)
    return f"mock reply to {model}: w1" + "".join(f" w{i}" for i in range(2, chunks + 1))


class Proc:
    """A child process whose stdout is read line by line on a thread and whose stderr goes to a
    file, so nothing can block on a full pipe."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_lines: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_listening(self, timeout: float = START_TIMEOUT, first_line: bool = False) -> str:
        """Returns what follows `listening: ` on stdout. With `first_line`, that must be the
        first line (the test-kit binaries print nothing else); iris may print a banner first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"{self.name} printed no 'listening:' line within {timeout}s; "
                    f"stdout:\n{self.stdout_text()}\nstderr:\n{self.stderr_text()}"
                ) from None
            if line is not None and line.startswith("listening: "):
                return line[len("listening: ") :]
            if line is None or first_line:
                self.kill()
                raise AssertionError(
                    f"{self.name}: expected 'listening: ...', got {line!r} "
                    f"(exit {self.proc.poll()}); stderr:\n{self.stderr_text()}"
                )

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait (bounded). Returns the exit code; kills on timeout and fails."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM; stderr:\n{self.stderr_text()}"
            ) from None
        self._reader.join(timeout=5)
        self._stderr.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if not self._stderr.closed:
            self._stderr.close()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self) -> str:
        return "\n".join(self.stdout_lines)


def free_closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockProvider:
    def __init__(self, log_dir: Path):
        self.proc = Proc("mock-provider", [str(MOCK), "--listen", "127.0.0.1:0"], log_dir)
        self.url = self.proc.wait_listening(first_line=True)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def requests(self) -> list[dict[str, Any]]:
        r = self.http.get("/__mock/requests")
        r.raise_for_status()
        return r.json()

    def api_requests(self) -> list[dict[str, Any]]:
        """Recorded requests to provider APIs (everything the gateway forwarded)."""
        return [r for r in self.requests() if not r["path"].startswith("/__mock/")]

    def reset(self) -> None:
        self.http.post("/__mock/reset").raise_for_status()

    def wait_requests(self, n: int, timeout: float = 10.0, pred: Callable[[dict], bool] | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            reqs = [r for r in self.api_requests() if pred is None or pred(r)]
            if len(reqs) >= n:
                return reqs
            if time.monotonic() > deadline:
                raise AssertionError(f"mock saw {len(reqs)} matching requests, wanted {n} within {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()


class FakeTailscaled:
    def __init__(self, log_dir: Path, socket_path: Path, fixtures: Path = FIXTURES):
        self.socket_path = socket_path
        self.proc = Proc(
            "fake-tailscaled",
            [str(FAKE_TAILSCALED), "--socket", str(socket_path), "--fixtures", str(fixtures)],
            log_dir,
        )
        got = self.proc.wait_listening(first_line=True)
        assert got == str(socket_path), got
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://local-tailscaled.sock",
            timeout=10,
        )

    def stats(self) -> dict[str, Any]:
        r = self.http.get("/__fake/stats")
        r.raise_for_status()
        return r.json()

    def whois_count(self) -> int:
        return int(self.stats()["whois_requests"])

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()


@dataclass
class Planted:
    """Provider keys iris gets through `${VAR}` macros. They must reach the mock in the right
    header and appear nowhere else."""

    openai: str = field(default_factory=lambda: f"sk-e2e-PLANTED-openai-{secrets.token_hex(12)}")
    anthropic: str = field(default_factory=lambda: f"sk-e2e-PLANTED-anthropic-{secrets.token_hex(12)}")

    def env(self) -> dict[str, str]:
        return {"E2E_OPENAI_KEY": self.openai, "E2E_ANTHROPIC_KEY": self.anthropic}

    def values(self) -> list[str]:
        return [self.openai, self.anthropic]


def config_text(
    mock_url: str,
    dead_url: str,
    *,
    max_body_bytes: int = 65536,
    first_byte: str = "2s",
    extra_grants: Iterable[str] = (),
    usage: dict[str, Any] | None = None,
) -> str:
    """The HuJSON config every gateway in the suite runs with (comments and trailing commas on
    purpose: the file format is HuJSON)."""
    grants = ",\n    ".join(
        [
            '{"src": ["(loopback)"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}, {"models": "**"}]}}',
            '{"src": ["group:ai-users"], "app": {"tailscale.com/cap/aperture": [{"models": "anthropic/claude-haiku-*"}]}}',
            '{"src": ["tag:ci"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "anthropic/**"}]}}',
            '// bob: models but no role -> 403\n    {"src": ["bob@example.com"], "app": {"tailscale.com/cap/aperture": [{"models": "**"}]}}',
            '// carol is not on the tailnet: she uses an iris key\n    {"src": ["carol@example.com"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "**"}]}}',
            *extra_grants,
        ]
    )
    # `usage`: the iris.usage section (flush_interval, queue_capacity, batch_size).
    usage_section = f'\n    "usage": {json.dumps(usage)},' if usage else ""
    return f"""// iris end-to-end config (generated by tests/e2e/harness.py)
{{
  "providers": {{
    "openai": {{
      "baseurl": "{mock_url}",
      "apikey": "${{E2E_OPENAI_KEY}}",
      "models": ["gpt-4o-mini", "text-embedding-3-small"],
      "compatibility": {{"openai_chat": true, "openai_responses": true}},
    }},
    "anthropic": {{
      "baseurl": "{mock_url}",
      "apikey": "${{E2E_ANTHROPIC_KEY}}",
      "authorization": "x-api-key",
      "models": ["claude-sonnet-4-5", "claude-haiku-4-5"],
      "compatibility": {{"anthropic_messages": true}},
    }},
    // nothing listens here: requests routed to it must fail with 502
    "dead": {{
      "baseurl": "{dead_url}",
      "apikey": "${{E2E_OPENAI_KEY}}",
      "models": ["dead-model"],
      "compatibility": {{"openai_chat": true}},
    }},
  }},
  "grants": [
    {grants},
  ],
  "iris": {{
    "identity": {{"serve_headers": false}},
    "timeouts": {{"first_byte": "{first_byte}"}},
    "limits": {{"max_body_bytes": {max_body_bytes}}},{usage_section}
  }},
}}
"""


class Gateway:
    """One `iris serve` with its own data directory."""

    def __init__(self, workdir: Path, config: str, tailscale_socket: Path, planted: Planted, name: str = "iris"):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "iris.hujson"
        self.config_path.write_text(config)
        self.planted = planted
        self.env = {**os.environ, **planted.env(), "RUST_LOG": os.environ.get("IRIS_E2E_RUST_LOG", "debug")}
        self.exit_code: int | None = None
        self.proc = Proc(
            name,
            [
                str(IRIS),
                "serve",
                "--config",
                str(self.config_path),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(self.data_dir),
                "--tailscale-socket",
                str(tailscale_socket),
            ],
            workdir / "logs",
            env=self.env,
        )
        self.url = self.proc.wait_listening()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        listening = [line for line in self.proc.stdout_lines if line.startswith("listening:")]
        assert len(listening) == 1, f"one 'listening:' line, got {listening}"

    # --- lifecycle -------------------------------------------------------------------------
    def stop(self) -> int:
        if self.exit_code is None:
            self.exit_code = self.proc.terminate()
        return self.exit_code

    def running(self) -> bool:
        return self.proc.proc.poll() is None

    def kill9(self) -> int:
        """SIGKILL: no drain, no flush. Returns the exit code (-9)."""
        self.proc.kill()
        self.exit_code = self.proc.proc.returncode
        return self.exit_code

    def health(self) -> dict[str, Any]:
        """GET /api/health as the loopback admin (includes store and usage details)."""
        with httpx.Client(transport=httpx.HTTPTransport(local_address=LOOPBACK), timeout=10) as c:
            r = c.get(f"{self.url}/api/health")
        r.raise_for_status()
        return r.json()

    def db_path(self) -> Path:
        return self.data_dir / "iris.db"

    # --- CLI wrappers ----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(IRIS), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"iris {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def usage(self, limit: int = 1000) -> list[dict[str, Any]]:
        """`iris usage --json`, newest first."""
        res = self.cli("usage", "--data-dir", str(self.data_dir), "--json", "--limit", str(limit))
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def wait_usage(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Polls until at least `n` records exist (usage is written in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.usage()
            if len(recs) >= n:
                return recs
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(recs)} usage records after {timeout}s, wanted {n}: {recs}")
            time.sleep(0.05)

    def keys_create(self, who: str, expires: str | None = None, note: str | None = None) -> str:
        args = ["keys", "create", "--data-dir", str(self.data_dir), "--for", who]
        if expires:
            args += ["--expires", expires]
        if note:
            args += ["--note", note]
        res = self.cli(*args)
        lines = res.stdout.splitlines()
        assert len(lines) == 1, f"keys create must print only the token, got {res.stdout!r}"
        token = lines[0].strip()
        assert token.startswith("iris_sk_"), token
        return token

    def keys_list(self) -> list[dict[str, Any]]:
        res = self.cli("keys", "list", "--data-dir", str(self.data_dir), "--json")
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def keys_revoke(self, key_id: str) -> None:
        self.cli("keys", "revoke", "--data-dir", str(self.data_dir), key_id)

    # --- secrets ---------------------------------------------------------------------------
    def leaked_secrets(self) -> list[str]:
        """Where a planted provider key shows up: files under the data dir, stdout, stderr."""
        found = []
        needles = [v.encode() for v in self.planted.values()]
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                for needle in needles:
                    if needle in data:
                        found.append(f"{path} contains {needle.decode()}")
        for name, text in (("stdout", self.proc.stdout_text()), ("stderr", self.proc.stderr_text())):
            for needle in self.planted.values():
                if needle in text:
                    found.append(f"iris {name} contains {needle}")
        return found


def httpx_module_of(sdk: Any) -> Any:
    """The httpx flavour an SDK is built on (httpx or httpx2), so custom transports match it."""
    base = sdk.DefaultHttpxClient.__mro__[1]
    return sys.modules[base.__module__.split(".")[0]]


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One request that got a complete answer: iris's request id, and when (time.monotonic())
    the client had read the whole body."""

    request_id: str
    done: float
    streaming: bool


class Load:
    """`clients` threads sending requests back to back (alternately a non-streaming OpenAI chat
    completion and a streaming Anthropic message) until stopped. Keeps every complete answer
    (status 200, whole body, as the mock sends it) and every failure. Loopback only."""

    def __init__(self, gw: Gateway, clients: int = 8):
        self.gw = gw
        self.clients = clients
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> "Load":
        self.started = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> "Load":
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.stopped = time.monotonic()
        alive = [t for t in self._threads if t.is_alive()]
        assert not alive, f"{len(alive)} load threads did not stop"
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_answers(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.count()} answers after {timeout}s, wanted {n}; failures: {self.failures[:5]}")
            time.sleep(0.02)

    def ids(self) -> set[str]:
        with self._lock:
            return {a.request_id for a in self.answers}

    def _run(self, i: int) -> None:
        n = 0
        with httpx.Client(transport=httpx.HTTPTransport(local_address=LOOPBACK), timeout=10) as c:
            while not self._stop.is_set():
                streaming = (i + n) % 2 == 1
                n += 1
                try:
                    rid = self._stream(c) if streaming else self._chat(c)
                except (httpx.HTTPError, AssertionError, ValueError) as e:
                    with self._lock:
                        self.failures.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.01)
                    continue
                done = time.monotonic()
                with self._lock:
                    self.answers.append(Answer(rid, done, streaming))

    def _chat(self, c: httpx.Client) -> str:
        r = c.post(
            f"{self.gw.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "load"}]},
            headers={"authorization": f"Bearer {CLIENT_SECRET}"},
        )
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:200]}"
        text = r.json()["choices"][0]["message"]["content"]
        assert text == mock_reply_text("gpt-4o-mini"), text
        return r.headers["x-iris-request-id"]

    def _stream(self, c: httpx.Client) -> str:
        body = {
            "model": "claude-haiku-4-5",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "load"}],
        }
        headers = {"x-api-key": CLIENT_SECRET, "anthropic-version": "2023-06-01"}
        with c.stream("POST", f"{self.gw.url}/v1/messages", json=body, headers=headers) as r:
            data = r.read().decode()
            assert r.status_code == 200, f"HTTP {r.status_code}: {data[:200]}"
            assert "event: message_stop" in data, f"stream cut: {data[-200:]!r}"
            return r.headers["x-iris-request-id"]


def stored_request_ids(db: Path) -> list[str]:
    """Every usage record's request id, read straight from the SQLite file (read-only).

    The records are in compressed blocks (iris-store's src/usage_log.rs): the magic `IUB1`,
    then each record as a little-endian u32 length and its fields, of which the first two are
    the id and the request id, each a u32 length and UTF-8 bytes.
    """
    import sqlite3
    import struct

    import zstandard

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        blocks = [row[0] for row in con.execute("SELECT data FROM usage_blocks ORDER BY id")]
    finally:
        con.close()
    ids = []
    for data in blocks:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        assert raw[:4] == b"IUB1", raw[:4]
        at = 4
        while at < len(raw):
            (length,) = struct.unpack_from("<I", raw, at)
            body = raw[at + 4 : at + 4 + length]
            at += 4 + length
            (id_len,) = struct.unpack_from("<I", body, 0)
            (rid_len,) = struct.unpack_from("<I", body, 4 + id_len)
            ids.append(body[8 + id_len : 8 + id_len + rid_len].decode())
    return ids


def integrity_check(db: Path) -> str:
    """SQLite's own verdict on the file ("ok" when sound)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return "\n".join(row[0] for row in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


class SourceProxy:
    """A TCP relay on 127.0.0.1 whose connections reach `target` from the loopback address
    `source`, so a tool that cannot choose its source address (schemathesis) is seen by iris as
    the fake tailscaled's peer at that address. Threads, one pair per connection; `close()` stops
    accepting and closes every relayed socket."""

    def __init__(self, target_url: str, source: str):
        assert source.startswith("127."), source
        host, port = target_url.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.source = source
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                upstream.bind((self.source, 0))
                upstream.settimeout(10)
                upstream.connect(self.target)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._open = self._open, []
        self.listener.close()
        for s in sockets:
            s.close()
