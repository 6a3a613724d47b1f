"""The release binary's process: the allocator settings it is built with take effect, and the work
off the request path runs on threads of its own."""

from __future__ import annotations

import time
from pathlib import Path

import harness as h


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return names


def test_jemalloc_purges_from_one_background_thread(gateway: h.Gateway) -> None:
    # `_rjem_malloc_conf` in the binary: background purging (freed pages go back to the kernel
    # within about a second, see docs/performance.md) from a single jemalloc thread. Without the
    # exported options jemalloc starts no such thread, so this fails if the symbol is lost.
    pid = gateway.proc.proc.pid
    deadline = time.monotonic() + 10
    names = _thread_names(pid)
    while "jemalloc_bg_thd" not in names and time.monotonic() < deadline:
        time.sleep(0.1)
        names = _thread_names(pid)
    assert names.count("jemalloc_bg_thd") == 1, names


def test_background_work_has_threads_of_its_own(gateway: h.Gateway) -> None:
    # Enriching records and captures (`iris-observer`) and preparing the usage writer's batches
    # (`iris-store`) are milliseconds of CPU at a time; on a request runtime worker they would
    # hold up the requests queued behind it. Losing either thread would put that work back there.
    names = _thread_names(gateway.proc.proc.pid)
    assert names.count("iris-observer") == 1, names
    assert names.count("iris-store") == 1, names


def test_a_second_gateway_on_the_same_data_dir_exits_with_an_error_not_a_panic(
    gateway: h.Gateway,
) -> None:
    # Refused after the store and its write runtime exist: leaving `serve` early must shut that
    # runtime down cleanly (dropping a runtime inside another one panics).
    res = gateway.cli(
        "serve",
        "--config",
        str(gateway.config_path),
        "--data-dir",
        str(gateway.data_dir),
        "--listen",
        "127.0.0.1:0",
        check=False,
    )
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "already serving the data directory" in res.stderr, res.stderr
    assert "panicked" not in res.stderr, res.stderr


def test_a_listen_address_in_use_is_an_error_not_a_panic(gateway: h.Gateway, tmp_path: Path) -> None:
    port = gateway.url.rsplit(":", 1)[1]
    res = gateway.cli(
        "serve",
        "--config",
        str(gateway.config_path),
        "--data-dir",
        str(tmp_path / "other"),
        "--listen",
        f"127.0.0.1:{port}",
        check=False,
    )
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "cannot listen on" in res.stderr, res.stderr
    assert "panicked" not in res.stderr, res.stderr
