"""Browser tier: the iris dashboard (crates/iris-ui/assets) in headless Chromium.

Needs Debian's `chromium` and `chromium-driver` and PyPI's `selenium` (see requirements.txt).
When one is missing the tier prints `SKIPPED: browser tier: <reason>` and every test skips,
unless IRIS_REQUIRE_ALL_TIERS=1, which turns the skip into a failure.

The dashboard runs against fake_api.FakeServer (static assets + canned admin API on 127.0.0.1).
Chromium starts with the flags that keep it off the network (tooling.md) and a proxy that records
anything it would send outside loopback. Every test checks, when it ends, that the console had no
errors (other than the HTTP errors the test itself provokes) and that no request left 127.0.0.1.

Screenshots go to $IRIS_SCREENSHOT_DIR (default: a pytest temp dir, printed at the end).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fake_api  # noqa: E402

REQUIRE_ALL = os.environ.get("IRIS_REQUIRE_ALL_TIERS") == "1"


def find_browser() -> tuple[str | None, str | None, str | None]:
    """(chromium, chromedriver, reason-if-unavailable)."""
    chromium = os.environ.get("IRIS_CHROMIUM") or next(
        (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
    driver = os.environ.get("IRIS_CHROMEDRIVER") or next(
        (p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and Path(p).is_file()), None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return chromium, driver, "selenium is not installed (pip install -r tests/browser/requirements.txt)"
    if not chromium or not Path(chromium).is_file():
        return chromium, driver, f"chromium not found{f' at {chromium}' if chromium else ''} (apt-get install -y chromium chromium-driver)"
    if not driver or not Path(driver).is_file():
        return chromium, driver, f"chromedriver not found{f' at {driver}' if driver else ''} (apt-get install -y chromium-driver)"
    return chromium, driver, None


CHROMIUM, CHROMEDRIVER, UNAVAILABLE = find_browser()


def pytest_report_header(config: pytest.Config) -> list[str]:
    if UNAVAILABLE:
        verb = "FAILED" if REQUIRE_ALL else "SKIPPED"
        return [f"{verb}: browser tier: {UNAVAILABLE}"]
    return [f"browser tier: {CHROMIUM} with {CHROMEDRIVER}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if UNAVAILABLE:
        # printed where a log reader finds it even with -q
        print(f"\n{'FAILED' if REQUIRE_ALL else 'SKIPPED'}: browser tier: {UNAVAILABLE}", file=sys.__stdout__, flush=True)


@pytest.fixture(scope="session", autouse=True)
def _tier_available() -> None:
    if UNAVAILABLE:
        if REQUIRE_ALL:
            pytest.fail(f"browser tier: {UNAVAILABLE} (IRIS_REQUIRE_ALL_TIERS=1 makes this a failure)", pytrace=False)
        pytest.skip(f"browser tier: {UNAVAILABLE}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if UPDATER_EGRESS:
        print(f"\nbrowser tier: Chromium's updaters, refused by the egress proxy: {UPDATER_EGRESS}",
              file=sys.__stdout__, flush=True)
    if STARTUP_EGRESS:
        print(f"\nbrowser tier: Chromium's own start-up connections, refused by the egress proxy: {STARTUP_EGRESS}",
              file=sys.__stdout__, flush=True)
    if SCREENSHOTS.get("dir"):
        print(f"\nbrowser tier screenshots: {SCREENSHOTS['dir']}", file=sys.__stdout__, flush=True)


SCREENSHOTS: dict[str, str] = {}
STARTUP_EGRESS: list[str] = []
# Connections of the whole session to Chromium's update hosts, reported at its end.
UPDATER_EGRESS: list[str] = []


@pytest.fixture(scope="session")
def server() -> Iterator[fake_api.FakeServer]:
    s = fake_api.FakeServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def egress() -> Iterator[fake_api.EgressRecorder]:
    e = fake_api.EgressRecorder()
    yield e
    UPDATER_EGRESS.extend(e.updaters)
    e.stop()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ["IRIS_SCREENSHOT_DIR"]) if os.environ.get("IRIS_SCREENSHOT_DIR") else tmp_path_factory.mktemp("screenshots")
    d.mkdir(parents=True, exist_ok=True)
    SCREENSHOTS["dir"] = str(d)
    return d


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser(egress: fake_api.EgressRecorder) -> Iterator[Any]:
    # Selenium Manager would look for drivers and send usage stats: keep it offline.
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="iris-chromium-")
    dead = f"http://127.0.0.1:{closed_port()}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
        "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US",
        # browser features that phone home on their own (seen here through the egress proxy):
        # autofill asks a Google server about every form, sign-in lists Google accounts
        "--disable-features=AutofillServerCommunication,OptimizationHints,Translate,MediaRouter,"
        "DialMediaRouteProvider,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"
        "NetworkTimeServiceQuerying,PreconnectToSearch",
        "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--no-pings",
        "--metrics-recording-only", "--password-store=basic", "--use-mock-keychain", "--disable-breakpad",
        # services that check in even so (the component updater after a minute despite
        # --disable-component-update; sign-in lists Google accounts at start and retries):
        # point them at a closed loopback port
        f"--component-updater=url-source={dead}/",
        f"--gaia-url={dead}/", f"--google-apis-url={dead}/", f"--lso-url={dead}/",
        f"--user-data-dir={profile}", f"--proxy-server=http://{egress.address}",
    ):
        opts.add_argument(flag)
    # no preconnects (Debian's build preconnects to its default search engine at start)
    opts.add_experimental_option("prefs", {"net.network_prediction_options": 2})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    # Debian's Chromium still opens one connection to its default search engine as it starts,
    # before any page is loaded; the recording proxy refuses it. Let that pass before tests.
    driver.get("about:blank")
    time.sleep(1.5)
    egress.startup = list(egress.seen)
    STARTUP_EGRESS.extend(egress.startup)
    egress.seen.clear()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Console:
    """Collects browser console entries; `allow` names substrings of expected errors."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.allowed: list[str] = []

    def allow(self, *fragments: str) -> None:
        self.allowed.extend(fragments)

    def errors(self) -> list[str]:
        out = []
        for e in self.driver.get_log("browser"):
            if e.get("level") in ("SEVERE", "ERROR") and not any(a in e.get("message", "") for a in self.allowed):
                out.append(e.get("message", ""))
        return out


def page_request_urls(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


@pytest.fixture
def ui(browser: Any, server: fake_api.FakeServer, egress: fake_api.EgressRecorder, shots: Path) -> Iterator["UI"]:
    """A fresh admin session on a blank page; checks console and egress when the test ends."""
    from ui import UI

    server.state.reset(role="admin")
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get_log("performance")
    egress.seen.clear()
    console = Console(browser)
    u = UI(browser, server, console, shots)
    yield u
    errors = console.errors()
    urls = page_request_urls(browser)
    foreign = [x for x in urls if not (x.startswith(server.base + "/") or x.startswith(("about:", "data:")))]
    hosts = {e["host"] for e in server.requests()}
    assert not errors, f"browser console errors: {errors}"
    assert not foreign, f"requests that left the gateway: {foreign}"
    assert not egress.seen, f"Chromium tried to reach outside loopback: {egress.seen}"
    assert hosts <= {server.base.removeprefix("http://")}, f"unexpected Host headers: {hosts}"
