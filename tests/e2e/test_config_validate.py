"""`iris config validate`: every problem is reported with its path; errors exit 1."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import harness as h

BAD = """// several problems at once
{
  "providers": {
    "openai": {
      // baseurl missing
      "basurl": "http://127.0.0.1:9",
      "models": ["gpt-4o-mini"],
    },
    "anthropic": {
      "baseurl": "not a url",
      "apikey": "${IRIS_E2E_SURELY_UNSET_VAR}",
      "models": ["claude-haiku-4-5"],
    },
  },
  "grants": [
    {"src": ["(loopback)"], "app": {"tailscale.com/cap/aperture": [{"role": "superuser"}, {"models": "**"}]}},
    {"src": ["(loopback)"], "app": {"tailscale.com/cap/aperture": [{"role": "admin"}]}},
  ],
  "iris": {
    "timeouts": {"first_byte": "soon"},
    "limits": {"max_body_bytes": 10},
  },
}
"""

# (severity, path regex, message regex): each must appear on its own line.
EXPECTED = [
    ("error", r"providers\.openai\.baseurl", r"missing"),
    ("warning", r"providers\.openai\.basurl", r"unknown"),
    ("error", r"providers\.anthropic\.baseurl", r"URL|url"),
    ("error", r"providers\.anthropic\.apikey", r"unsubstituted macros: \[IRIS_E2E_SURELY_UNSET_VAR\]"),
    ("error", r"grants\[0\]\.app\[\"tailscale\.com/cap/aperture\"\]\[0\]\.role", r"superuser"),
    ("error", r"iris\.timeouts\.first_byte", r"."),
    ("error", r"iris\.limits\.max_body_bytes", r"1024"),
]


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IRIS_E2E_SURELY_UNSET_VAR"}
    env.update(h.Planted().env())
    return subprocess.run(
        [str(h.IRIS), "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=h.CLI_TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_every_problem_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "bad.hujson"
    f.write_text(BAD)
    res = validate(f)
    assert res.returncode == 1, res
    lines = res.stdout.splitlines()
    missing = []
    for severity, path_re, msg_re in EXPECTED:
        pat = re.compile(rf"^{severity}: {path_re}: .*(?:{msg_re})")
        if not any(pat.search(line) for line in lines):
            missing.append(f"{severity}: {path_re}: /{msg_re}/")
    assert not missing, "missing lines:\n" + "\n".join(missing) + "\n--- output:\n" + res.stdout + res.stderr


def test_good_config_passes(tmp_path: Path) -> None:
    f = tmp_path / "good.hujson"
    f.write_text(h.config_text("http://127.0.0.1:9", "http://127.0.0.1:10"))
    res = validate(f)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [line for line in res.stdout.splitlines() if line.startswith("error:")], res.stdout


def test_syntax_error_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "broken.hujson"
    f.write_text('{"providers": {')
    res = validate(f)
    assert res.returncode == 1
    assert any(line.startswith("error:") for line in res.stdout.splitlines()), res.stdout + res.stderr
