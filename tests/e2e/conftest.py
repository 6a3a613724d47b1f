"""Fixtures for the iris end-to-end suite.

Session-wide: one mock provider and one fake tailscaled (socket in a temp dir). Per test: a fresh
`iris serve` with its own data directory, started from the config template in harness.py, so
usage records and keys never bleed between tests. Teardown sends SIGTERM, requires exit code 0,
and requires that no planted provider key appears in the data directory or iris's output.

The binaries are built by scripts/test (`cargo build --release -p iris -p iris-testkit`); set
IRIS_BIN_DIR to use others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

import clients
import harness as h


@pytest.fixture(scope="session", autouse=True)
def binaries() -> None:
    missing = [str(p) for p in (h.IRIS, h.MOCK, h.FAKE_TAILSCALED) if not p.is_file()]
    if missing:
        pytest.fail(
            "missing binaries: " + ", ".join(missing)
            + " (run scripts/test, or: cargo build --release -p iris -p iris-testkit)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def planted() -> h.Planted:
    return clients.PLANTED


@pytest.fixture(scope="session")
def mock(session_dir: Path) -> Iterator[h.MockProvider]:
    m = h.MockProvider(session_dir / "mock")
    yield m
    m.stop()


@pytest.fixture(scope="session")
def tailscaled(session_dir: Path) -> Iterator[h.FakeTailscaled]:
    t = h.FakeTailscaled(session_dir / "tailscaled", session_dir / "tailscaled.sock")
    yield t
    t.stop()


@pytest.fixture(scope="session")
def dead_url() -> str:
    return f"http://127.0.0.1:{h.free_closed_port()}"


@pytest.fixture
def start_gateway(
    tmp_path: Path, mock: h.MockProvider, tailscaled: h.FakeTailscaled, planted: h.Planted, dead_url: str
) -> Iterator[Callable[..., h.Gateway]]:
    """Starts `iris serve` (config_text keyword arguments change the config); all are stopped,
    checked for exit 0 and scanned for leaked provider keys at teardown."""
    started: list[h.Gateway] = []

    def start(**config_kwargs: object) -> h.Gateway:
        gw = h.Gateway(
            tmp_path / f"gw{len(started)}",
            h.config_text(mock.url, dead_url, **config_kwargs),  # type: ignore[arg-type]
            tailscaled.socket_path,
            planted,
        )
        started.append(gw)
        return gw

    mock.reset()
    yield start
    problems: list[str] = []
    for gw in started:
        try:
            code = gw.stop()
        except AssertionError as e:
            problems.append(str(e))
            continue
        if code != 0:
            problems.append(f"iris exited {code} after SIGTERM; stderr tail:\n{gw.proc.stderr_text()[-3000:]}")
        problems += gw.leaked_secrets()
    assert not problems, "\n".join(problems)


@pytest.fixture
def gateway(start_gateway: Callable[..., h.Gateway]) -> h.Gateway:
    return start_gateway()
