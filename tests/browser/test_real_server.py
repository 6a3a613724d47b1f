"""The dashboard in headless Chromium against the REAL binaries (no canned API).

Starts iris-mock-provider, iris-fake-tailscaled and `iris serve` through tests/e2e/harness.py,
produces usage with the official openai/anthropic SDKs through iris, then drives every page.
Identity goes the production way: Chromium connects from 127.0.0.1 and iris asks the (fake)
tailscaled's LocalAPI WhoIs about it.

- admin gateway: 127.0.0.1 is absent from the standard fixtures -> WhoIs 404 -> "(loopback)",
  which the harness config grants the admin role.
- user gateway: a second fake tailscaled whose fixtures map 127.0.0.1 to alice's WhoIs answer
  (CapMap role user), so the browser is alice@example.com.

Screenshots go to the same directory as the other browser tests (printed at the end).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

try:
    from selenium.webdriver.common.by import By
except ImportError:  # conftest reports the missing tier: every test skips (or fails in CI)
    By = None  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

try:  # the SDKs and httpx come with tests/e2e/requirements.txt (scripts/test installs both)
    import harness as h  # noqa: E402
    import clients  # noqa: E402, F401
    SDK_MISSING = None
except ImportError as e:
    h = None  # type: ignore[assignment]
    SDK_MISSING = f"{e} (pip install -r tests/e2e/requirements.txt)"

# the anthropic SDK warns that the mock's model names are deprecated: not our concern here
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ADMIN_LOGIN = "(loopback)"
ALICE = "alice@example.com"
CI_LOGIN = "tag:ci"  # a tagged node is shown by its tags
OTHER_LOOPBACK = "127.0.0.9"  # absent from every fixtures file here: "(loopback)", the admin
SESSION_ID = str(uuid.uuid4())
TOOL_NAME = "get_weather"
ALICE_MARK = "alice-only-question"


def _api(gw: h.Gateway, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """A call to iris's admin API from 127.0.0.1 (who that is depends on the gateway)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{gw.url}{path}", data=data, method=method,
                                 headers={"Accept": "application/json", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class _Target:
    """What ui.UI needs of a server: the base URL (and no request log: the real iris keeps none)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def requests(self, prefix: str = "/api/", method: str | None = None) -> list[dict[str, Any]]:
        return []


class RealWorld:
    """The mock provider, two fake tailscaleds and two gateways (admin view, alice's view)."""

    def __init__(self, base: Path) -> None:
        import clients as c

        self.c = c
        self.started: list[Any] = []
        self.mock = self._keep(h.MockProvider(base / "mock"))
        dead = f"http://127.0.0.1:{h.free_closed_port()}"
        self.config = h.config_text(self.mock.url, dead)
        ts_admin = self._keep(h.FakeTailscaled(base / "ts-admin", base / "ts-admin.sock"))
        fixtures = json.loads(h.FIXTURES.read_text())
        fixtures["127.0.0.1"] = fixtures["127.0.0.2"]
        user_fixtures = base / "whois-alice-at-127.0.0.1.json"
        user_fixtures.write_text(json.dumps(fixtures))
        ts_user = self._keep(h.FakeTailscaled(base / "ts-user", base / "ts-user.sock", fixtures=user_fixtures))
        self.admin = self._keep(h.Gateway(base / "gw-admin", self.config, ts_admin.socket_path, c.PLANTED, name="iris-admin"))
        self.user = self._keep(h.Gateway(base / "gw-user", self.config, ts_user.socket_path, c.PLANTED, name="iris-user"))
        self.sent_admin = self._seed_admin()
        self.sent_user = self._seed_user()

    def _keep(self, x: Any) -> Any:
        self.started.append(x)
        return x

    def _seed_admin(self) -> int:
        c = self.c
        gw = self.admin
        oa = c.openai_client(gw, h.LOOPBACK)
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from the admin"}])
        assert r.choices[0].message.content == h.mock_reply_text("gpt-4o-mini")
        an = c.anthropic_client(gw, h.LOOPBACK)
        tools = [{"name": TOOL_NAME, "description": "Weather for a city",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
        hdrs = {"x-claude-code-session-id": SESSION_ID}
        m1 = an.messages.create(model="claude-sonnet-4-5", max_tokens=64, tools=tools, extra_headers=hdrs,
                                messages=[{"role": "user", "content": "weather in Paris?"}])
        uses = [b for b in m1.content if b.type == "tool_use"]
        assert uses and uses[0].name == TOOL_NAME, m1.content
        m2 = an.messages.create(model="claude-sonnet-4-5", max_tokens=64, tools=tools, extra_headers=hdrs, messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in m1.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]},
        ])
        assert m2.content
        # other people, through the same gateway
        c.openai_client(gw, h.ALICE).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from alice"}])
        c.anthropic_client(gw, h.CI_NODE).messages.create(
            model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": "hello from ci"}])
        n = 5
        gw.wait_usage(n)
        return n

    def _seed_user(self) -> int:
        c = self.c
        gw = self.user
        c.openai_client(gw, h.LOOPBACK).chat.completions.create(  # 127.0.0.1 is alice here
            model="gpt-4o-mini", messages=[{"role": "user", "content": ALICE_MARK}])
        c.openai_client(gw, h.ALICE).chat.completions.create(  # alice from her own address too
            model="gpt-4o-mini", messages=[{"role": "user", "content": ALICE_MARK + " 2"}])
        c.anthropic_client(gw, h.CI_NODE).messages.create(
            model="claude-sonnet-4-5", max_tokens=32, messages=[{"role": "user", "content": "ci-only-question"}])
        c.openai_client(gw, OTHER_LOOPBACK).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "admin-only-question"}])
        gw.wait_usage(4)
        return 4

    def stop(self) -> None:
        errors = []
        for x in reversed(self.started):
            try:
                code = x.stop()
                if isinstance(x, h.Gateway) and code != 0:
                    errors.append(f"{x.proc.name} exited {code}; stderr tail:\n{x.proc.stderr_text()[-2000:]}")
            except AssertionError as e:
                errors.append(str(e))
        leaks = [s for gw in (self.admin, self.user) for s in gw.leaked_secrets()]
        assert not leaks, leaks
        assert not errors, errors


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealWorld]:
    from conftest import REQUIRE_ALL

    if SDK_MISSING:
        if REQUIRE_ALL:
            pytest.fail(f"browser tier (real server): {SDK_MISSING}", pytrace=False)
        pytest.skip(f"browser tier (real server): {SDK_MISSING}")
    missing = [str(p) for p in (h.IRIS, h.MOCK, h.FAKE_TAILSCALED) if not p.is_file()]
    if missing:
        pytest.fail("missing binaries: " + ", ".join(missing)
                    + " (run scripts/test, or: cargo build --release -p iris -p iris-testkit)", pytrace=False)
    w = RealWorld(tmp_path_factory.mktemp("real"))
    yield w
    w.stop()


def _make_ui(browser: Any, egress: Any, shots: Path, base: str) -> Iterator[Any]:
    from conftest import Console, page_request_urls
    from ui import UI

    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get_log("performance")
    egress.seen.clear()
    console = Console(browser)
    u = UI(browser, _Target(base), console, shots)
    yield u
    errors = console.errors()
    urls = page_request_urls(browser)
    foreign = [x for x in urls if not (x.startswith(base + "/") or x.startswith(("about:", "data:")))]
    assert not errors, f"browser console errors: {errors}"
    assert not foreign, f"requests that left the gateway: {foreign}"
    assert not egress.seen, f"Chromium tried to reach outside loopback: {egress.seen}"


@pytest.fixture
def admin_ui(browser: Any, egress: Any, shots: Path, world: RealWorld) -> Iterator[Any]:
    yield from _make_ui(browser, egress, shots, world.admin.url)


@pytest.fixture
def user_ui(browser: Any, egress: Any, shots: Path, world: RealWorld) -> Iterator[Any]:
    yield from _make_ui(browser, egress, shots, world.user.url)


def cards(ui: Any) -> dict[str, str]:
    return {c.find_element(By.CSS_SELECTOR, ".card-label").text.lower(): c.find_element(By.CSS_SELECTOR, ".card-value").text
            for c in ui.q("main .card")}


def config_text(ui: Any) -> str:
    return ui.d.execute_script("return document.getElementById('config-text').value")


def set_config_text(ui: Any, text: str) -> None:
    ui.d.execute_script(
        "const t = document.getElementById('config-text'); t.value = arguments[0];"
        "t.dispatchEvent(new Event('input', {bubbles: true}));", text)


def open_settings(ui: Any) -> None:
    ui.open("settings")
    ui.wait(lambda: "providers" in config_text(ui), what="config text loaded")
    ui.wait_idle()


# ---- admin -----------------------------------------------------------------------------------

def test_admin_every_page_renders_real_data(admin_ui, world):
    ui = admin_ui
    ui.open("overview?range=all")
    ui.wait_idle()
    assert "(loopback)" in ui.one("#whoami").text and "admin" in ui.one("#whoami").text
    shown = [a.text for a in ui.q("#nav a") if a.is_displayed()]
    assert {"Adoption", "Settings"} <= set(shown), shown
    ui.wait(lambda: cards(ui).get("requests") == str(world.sent_admin), what=f"requests card = {world.sent_admin}")
    main = ui.text("main")
    assert "gpt-4o-mini" in main and "claude-sonnet-4-5" in main
    ui.screenshot("real-admin-overview")

    ui.open("adoption?range=all")
    ui.wait_idle()
    main = ui.text("main")
    for who in (ADMIN_LOGIN, ALICE, CI_LOGIN):
        assert who in main, f"adoption lists {who}"
    assert "claude-haiku-4-5 1 1" in main and "gpt-4o-mini 2 2" in main, main
    ui.screenshot("real-admin-adoption")

    ui.open("logs?range=all")
    ui.wait_idle()
    link = ui.wait(lambda: next((a for a in ui.q("main tbody a.row-link") if SESSION_ID in (a.get_attribute("href") or "")), None),
                   what="the Claude Code session in the logs")
    ui.screenshot("real-admin-logs")
    link.click()
    ui.wait(lambda: ui.heading() == "Session", what="session page")
    ui.wait_idle()
    assert SESSION_ID in ui.text("main")
    rows = ui.table_rows()
    assert len(rows) == 2, rows
    assert any(TOOL_NAME in " ".join(r) for r in rows), rows
    ui.screenshot("real-admin-session")

    ui.d.find_element(By.CSS_SELECTOR, "main tbody a[href*='logs/requests/']").click()
    ui.wait(lambda: ui.heading() == "Request", what="request capture page")
    ui.wait_idle()
    main = ui.wait(lambda: (t := ui.text("main")) and "POST /v1/messages" in t and t, what="capture")
    assert TOOL_NAME in main
    assert "claude-sonnet-4-5" in main
    for key in world.c.PLANTED.values():
        assert key not in ui.d.page_source
    ui.screenshot("real-admin-capture")

    # an OpenAI capture shows the mock's reply text
    ui.open("logs?range=all")
    ui.wait_idle()
    ui.wait(lambda: ui.q("main tbody a.row-link"), what="log rows")
    ui.go("logs?range=all&tab=requests")
    ui.wait_idle()
    reply = h.mock_reply_text("gpt-4o-mini")
    req_link = ui.wait(lambda: next((a for a in ui.q("main tbody a[href*='logs/requests/']")), None), what="request links")
    hrefs = [a.get_attribute("href") for a in ui.q("main tbody a[href*='logs/requests/']")]
    found = False
    for href in hrefs:
        ui.d.get(href)
        ui.wait(lambda: ui.heading() == "Request", what="request page")
        ui.wait_idle()
        if reply in ui.text("main"):
            found = True
            ui.screenshot("real-admin-capture-openai")
            break
    assert req_link is not None and found, f"no capture shows {reply!r} among {hrefs}"

    ui.open("tools?range=all")
    ui.wait_idle()
    ui.wait(lambda: TOOL_NAME in ui.text("main"), what="tool name on the tools page")
    ui.screenshot("real-admin-tools")

    ui.open("models")
    ui.wait_idle()
    main = ui.text("main")
    for m in ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"):
        assert m in main, m
    ui.screenshot("real-admin-models")

    token = world.admin.keys_create(ALICE, note="browser-real-key")
    assert token
    ui.open("keys")
    ui.wait_idle()
    ui.wait(lambda: "browser-real-key" in ui.text("main"), what="the key made with the CLI")
    ui.screenshot("real-admin-keys")

    open_settings(ui)
    assert config_text(ui) == world.admin.config_path.read_text()
    ui.screenshot("real-admin-settings")


def test_admin_settings_save_takes_effect_and_stale_save_shows_409(admin_ui, world):
    ui = admin_ui
    gw = world.admin
    open_settings(ui)
    text = config_text(ui)
    assert '"dead": {' in text
    edited = text.replace('"dead": {', '"dead": {\n      "name": "Browser Edited Provider",', 1)
    set_config_text(ui, edited)
    ui.click_text("Save")
    ui.wait_text("the new config is live", "main .messages")
    ui.wait(lambda: gw.config_path.read_text() == edited, what="the file on disk changed")
    status, providers = _api(gw, "/api/providers")
    assert status == 200, providers
    assert "Browser Edited Provider" in json.dumps(providers), providers
    ui.screenshot("real-admin-settings-saved")

    # someone else saves meanwhile: the editor's hash is stale now
    ui.wait(lambda: config_text(ui) == edited, what="editor reloaded after save")
    status, cur = _api(gw, "/api/config")
    assert status == 200, cur
    other = cur["config"].replace("// iris end-to-end config", "// iris end-to-end config (edited over the API)", 1)
    assert other != cur["config"]
    status, res = _api(gw, "/api/config", "PUT", {"config": other, "hash": cur["hash"]})
    assert status == 200, res
    set_config_text(ui, edited.replace("Browser Edited Provider", "Second Browser Edit"))
    ui.console.allow("/api/config", "409")
    ui.click_text("Save")
    msg = ui.wait(lambda: next((m for m in ui.q("main .messages [role=alert]") if m.text), None), what="409 message")
    assert "the config changed since you loaded it" in msg.text, msg.text
    assert "someone saved in between" in msg.text, "iris's own 409 message is shown"
    ui.screenshot("real-admin-settings-409")
    assert gw.config_path.read_text() == other, "the stale save was refused"
    status, providers = _api(gw, "/api/providers")
    assert "Second Browser Edit" not in json.dumps(providers)


# ---- user ------------------------------------------------------------------------------------

def test_user_sees_only_her_data_and_no_admin_pages(user_ui, world):
    ui = user_ui
    ui.open("overview?range=all")
    ui.wait_idle()
    who = ui.one("#whoami").text
    assert ALICE in who and "user" in who, who
    shown = [a.text for a in ui.q("#nav a") if a.is_displayed()]
    assert "Adoption" not in shown and "Settings" not in shown, shown
    assert "Overview" in shown and "Logs" in shown
    ui.wait(lambda: cards(ui).get("requests") == "2", what="alice's 2 requests (of 4 in the store)")
    main = ui.text("main")
    assert "claude-sonnet-4-5" not in main, "the CI node's model is not in alice's overview"
    ui.screenshot("real-user-overview")

    ui.go("settings")
    alert = ui.visible("main [role=alert]")
    assert "Settings needs the admin role" in alert.text
    assert not ui.q("#config-text")
    assert "providers" not in ui.text("main")
    ui.screenshot("real-user-settings")
    ui.go("adoption")
    ui.wait(lambda: "Adoption needs the admin role" in ui.text("main"), what="adoption refused")

    ui.open("logs?range=all")
    ui.wait_idle()
    ui.go("logs?range=all&tab=requests")
    ui.wait_idle()
    ui.wait(lambda: ui.q("main tbody tr"), what="alice's log rows")
    main = ui.text("main")
    assert ALICE in main
    assert CI_LOGIN not in main and ADMIN_LOGIN not in main, main
    assert "claude-sonnet-4-5" not in main, main
    ui.screenshot("real-user-logs")

    # the API itself refuses others' data, not just the page
    status, _ = _api(world.user, "/api/config")
    assert status == 403
    status, body = _api(world.user, "/api/usage?login=tag:ci")
    if status != 403:  # or the API scopes her query to herself
        assert status == 200, body
        assert [g["key"] for g in body["groups"]] == [ALICE], body
        assert body["totals"]["requests"] == 2, body
