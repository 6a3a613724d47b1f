"""The admin API fuzzed against its own OpenAPI document with schemathesis.

The real `iris serve` (with the mock provider and the fake tailscaled behind it) is fuzzed twice:
as an admin (a loopback connection, `(loopback)` holds the admin role) and as a plain user (alice,
identified by WhoIs: the requests reach iris from her tailnet address through a relay). Every operation in /api/openapi.json gets positive and negative examples;
every answer must be free of server errors and must match the documented status codes, content
types and response schemas.

Determinism: a fixed seed, a bounded number of examples per operation, one worker, and no
stateful phase (so the run cannot chain a GET /api/config hash into a PUT that changes the config
the test depends on: a PUT with a generated hash is refused as stale). Mutations it can make
(keys created for generated subjects, revocations of unknown ids, model tests) touch nothing the
test relies on; the break-glass socket is never used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness as h

# The checks that make "no 500s, no schema violations" precise.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
SEED = 20261122
MAX_EXAMPLES = 25
RUN_TIMEOUT = 240


def schemathesis(gateway: h.Gateway | Via, out: Path, headers: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).parent / "st"
    assert st.is_file(), f"schemathesis is not installed in {sys.executable}'s environment (tests/e2e/requirements.txt)"
    argv = [
        str(st),
        "run",
        f"{gateway.url}/api/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(out),
    ]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    return subprocess.run(
        argv,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(out), "SCHEMATHESIS_TELEMETRY": "false"},
    )


def assert_clean(res: subprocess.CompletedProcess[str], gateway: h.Gateway) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"schemathesis found problems (exit {res.returncode}):\n{out[-12000:]}"
    # The run really exercised the API (a schema that failed to load also exits non-zero, but a
    # filter that matched nothing would not).
    assert "/api/config" in out and "/api/keys" in out, out[-4000:]
    assert gateway.running(), "iris died under the fuzzer"
    # The summary (shown with -s or on failure of a later assertion).
    print(out[out.find("SUMMARY") :][:3000])


def test_admin_api_as_admin(gateway: h.Gateway, tmp_path: Path) -> None:
    before = httpx_get(gateway, "/api/config").json()["hash"]
    res = schemathesis(gateway, tmp_path)
    assert_clean(res, gateway)
    # The fuzzer could not replace the config (every generated hash is stale).
    assert httpx_get(gateway, "/api/config").json()["hash"] == before
    assert httpx_get(gateway, "/api/health").json()["status"] == "ok"


def test_admin_api_as_a_plain_user(gateway: h.Gateway, tmp_path: Path) -> None:
    # alice, identified by WhoIs (her tailnet address, through a relay that connects from it):
    # role user, her own records and keys only. Revoking her own keys cannot lock her out.
    relay = h.SourceProxy(gateway.url, h.ALICE)
    try:
        as_alice = Via(relay.url)
        me = httpx_get(as_alice, "/api/whoami").json()
        assert (me["identity"]["login"], me["role"]) == ("alice@example.com", "user"), me
        res = schemathesis(as_alice, tmp_path)
        assert_clean(res, gateway)
        # Still a user, and the fuzzer's requests did not make her an admin.
        assert httpx_get(as_alice, "/api/config").status_code == 403
        assert httpx_get(as_alice, "/api/whoami").json()["role"] == "user"
    finally:
        relay.close()


class Via:
    """Where schemathesis sends its requests (a gateway, or a relay in front of it)."""

    def __init__(self, url: str):
        self.url = url


def httpx_get(gateway: h.Gateway | Via, path: str, headers: dict[str, str] | None = None):
    import httpx

    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        return c.get(path, headers=headers or {})
