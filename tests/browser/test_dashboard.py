"""The dashboard in headless Chromium against the canned API (fake_api.py).

Each test starts as the admin alice@example.com on a blank page; the `ui` fixture checks at the
end that the console had no unexpected errors and that nothing left 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from ui import query_of
except ImportError:  # conftest reports the missing tier: every test skips (or fails in CI)
    By = Keys = query_of = None  # type: ignore[assignment,misc]

import fake_api
from fake_api import ADMIN, USER

DAY = 86_400_000


def fmt_int(n: int) -> str:
    return f"{n:,}"


def set_config_text(ui, text: str) -> None:
    ui.d.execute_script(
        "const t = document.getElementById('config-text'); t.value = arguments[0];"
        "t.dispatchEvent(new Event('input', {bubbles: true}));", text)


def config_text(ui) -> str:
    return ui.d.execute_script("return document.getElementById('config-text').value")


def open_settings(ui) -> None:
    ui.open("settings")
    ui.wait(lambda: "providers" in config_text(ui), what="config text loaded")
    ui.wait_idle()


# ---- overview ---------------------------------------------------------------------------------

def test_overview_shows_totals_charts_sessions_and_activity(ui, server):
    ui.open("overview")
    ui.wait_idle()
    usage = next(e for e in ui.requests("/api/usage") if query_of(e).get("group_by") == "model")
    q = query_of(usage)
    expected = server.state.visible(q)
    cards = {c.find_element(By.CSS_SELECTOR, ".card-label").text.lower(): c.find_element(By.CSS_SELECTOR, ".card-value").text
             for c in ui.q("main .card")}
    assert cards["requests"] == fmt_int(len(expected))
    priced = [r.cost() for r in expected if r.cost() is not None]
    assert cards["cost"] == f"${sum(priced):,.2f}"
    unpriced = len(expected) - len(priced)
    assert f"{unpriced} requests unpriced" in ui.text("main .cards")

    ui.check_charts(4)
    tokens = ui.chart("Tokens by model")
    assert ui.axis_titles(tokens) == ["tokens", "model"]
    assert ui.legend(tokens) == ["input", "output", "cache read"]
    ticks = [t.text for t in tokens.find_elements(By.CSS_SELECTOR, "text.tick")]
    assert {"claude-sonnet-4-5", "gpt-4o-mini"} <= set(ticks), ticks
    cost = ui.chart("Cost by model")
    assert ui.axis_titles(cost) == ["cost (USD)", "model"]
    assert "no known price" in cost.text
    assert [t.text for t in cost.find_elements(By.CSS_SELECTOR, "text.value.missing")] == ["unpriced"]
    per_day = ui.chart("Tokens per day")
    assert ui.axis_titles(per_day) == ["day (UTC)", "tokens"]
    day_labels = [t.text for t in per_day.find_elements(By.CSS_SELECTOR, "text.tick") if not t.text[0].isdigit()]
    assert len(day_labels) == 8, f"7 days span 8 UTC dates: {day_labels}"
    assert ui.axis_titles(ui.chart("Cost per day")) == ["day (UTC)", "cost (USD)"]
    assert ui.q("main figure.chart svg[role=img][aria-label]"), "charts are labelled images"

    active = ui.q("main section[aria-label^='Active sessions'] tbody tr")
    assert len(active) == 3, "the three sessions with activity in the last 30 minutes"
    recent = ui.q("main section[aria-label='Recent activity'] tbody tr")
    assert len(recent) == 10
    newest = server.state.records[0]
    assert newest.who in recent[0].text and newest.model in recent[0].text
    ui.screenshot("overview")


def test_api_errors_are_shown_with_the_api_message(ui, server):
    server.state.fail["/api/usage"] = (503, {"error": {"message": "the store is unavailable; try again",
                                                       "type": "api_error", "code": "store_unavailable"}})
    ui.console.allow("/api/usage", "503")
    ui.open("overview")
    ui.wait_idle()
    alerts = [a.text for a in ui.q("main [role=alert]")]
    assert len(alerts) == 3, alerts  # totals, by model, per day
    assert all("the store is unavailable; try again" in a and "HTTP 503" in a for a in alerts), alerts
    assert len(ui.q("main section[aria-label='Recent activity'] tbody tr")) == 10, "the rest still renders"


def test_whoami_failure_is_explained(ui, server):
    server.state.fail["/api/whoami"] = (401, {"error": {"message": "no identity: not on the tailnet and no key",
                                                        "type": "authentication_error", "code": "unauthenticated"}})
    ui.console.allow("/api/whoami", "401")
    ui.open("overview")
    alert = ui.visible("main [role=alert]")
    assert "no identity: not on the tailnet and no key" in alert.text
    assert not ui.one("#nav").is_displayed()


def test_admins_see_a_banner_when_iris_is_degraded(ui, server):
    ui.open("overview")
    ui.wait_idle()
    ui.wait(lambda: ui.requests("/api/health"), what="health asked")
    assert not ui.one("#banner").is_displayed(), "no banner while healthy"
    server.state.health.update({
        "status": "degraded",
        "config": {"hash": "x", "loaded_at_ms": 0, "source": "file", "problems": [
            {"severity": "error", "path": "providers.openai.baseurl", "message": "baseurl must be an http:// or https:// URL"}]},
        "tailscaled": {"whois": True, "reachable": False},
    })
    ui.open("overview")
    banner = ui.visible("#banner")
    assert "iris is degraded" in banner.text
    assert "1 problem(s)" in banner.text and "providers.openai.baseurl" in banner.text
    assert "tailscaled is not reachable" in banner.text
    ui.wait_idle()
    ui.screenshot("overview-degraded")


def test_dark_color_scheme(ui, server):
    ui.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        ui.open("overview")
        ui.wait_idle()
        ui.check_charts(4)
        bg = ui.d.execute_script("return getComputedStyle(document.body).backgroundColor")
        fg = ui.d.execute_script("return getComputedStyle(document.querySelector('main h1')).color")
        lum = lambda c: sum(int(x) for x in c[c.index("(") + 1 : c.index(")")].split(",")[:3])  # noqa: E731
        assert lum(bg) < 150 < lum(fg), (bg, fg)
        ui.screenshot("overview-dark")
    finally:
        ui.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


# ---- navigation and roles --------------------------------------------------------------------

def test_navigation_links_path_routes_and_back(ui, server):
    ui.open("overview")
    ui.wait_idle()
    pages = [("Adoption", "Adoption"), ("Logs", "Logs"), ("Tool use", "Tool use"), ("Models", "Models"),
             ("Keys", "Keys"), ("Settings", "Settings"), ("Overview", "Overview")]
    for link, heading in pages:
        ui.d.find_element(By.LINK_TEXT, link).click()
        ui.wait(lambda: ui.heading() == heading, what=f"heading {heading}")
        current = ui.one("#nav a[aria-current=page]")
        assert current.text == link
        assert ui.d.title == f"{heading} · iris"
        ui.wait_idle()
    ui.d.back()
    ui.wait(lambda: ui.heading() == "Settings", what="back to Settings")
    ui.wait_idle()

    ui.open("/logs")
    ui.wait(lambda: ui.heading() == "Logs", what="path route /ui/logs")
    assert ui.d.execute_script("return location.hash") == "#/logs"
    ui.wait_idle()
    ui.open(f"/dashboard/{USER}")
    ui.wait(lambda: ui.heading() == f"Overview: {USER}", what="Aperture's /ui/dashboard/<login>")
    ui.wait_idle()
    usage = [query_of(e) for e in ui.requests("/api/usage")]
    assert usage[-1].get("login") == USER
    ui.open("no/such/page")
    ui.wait(lambda: ui.heading() == "Not found")


def test_user_role_sees_no_admin_pages(ui, server):
    server.state.reset(role="user")
    ui.open("overview")
    ui.wait_idle()
    shown = [a.text for a in ui.q("#nav a") if a.is_displayed()]
    assert shown == ["Overview", "Logs", "Tool use", "Models", "Keys"]
    header = ui.one("#whoami").text
    assert USER in header and "user" in header
    assert not ui.q("main input[name=login]"), "no user filter for non-admins"
    ui.screenshot("overview-user")

    before = len(ui.requests("/api/config"))
    ui.go("settings")
    alert = ui.visible("main [role=alert]")
    assert "Settings needs the admin role" in alert.text
    ui.go("adoption")
    ui.wait(lambda: "Adoption needs the admin role" in ui.text("main"))
    assert len(ui.requests("/api/config")) == before, "no admin API call was made"
    assert not ui.requests("/api/adoption")
    assert not ui.requests("/api/health"), "the health banner is for admins"
    assert not ui.one("#banner").is_displayed()

    ui.go("keys")
    ui.wait_idle()
    for_field = ui.one("#key-for")
    assert for_field.get_attribute("value") == USER
    assert for_field.get_attribute("readonly") is not None
    rows = ui.table_rows("main section[aria-label='Your keys']")
    assert len(rows) == 1 and USER in rows[0][1]

    ui.go("logs?range=all")
    ui.wait_idle()
    whos = {r[1] for r in ui.table_rows()}
    assert whos == {USER}


def test_no_role_gets_a_clear_page(ui, server):
    server.state.reset(role=None)
    ui.open("overview")
    ui.wait(lambda: ui.heading() == "No access")
    text = ui.text("main")
    assert "no grant gives this identity a role" in text
    assert "mallory@example.com" in text
    assert not ui.one("#nav").is_displayed()
    assert "no role" in ui.one("#whoami").text
    assert {e["path"] for e in ui.requests("/api/")} == {"/api/whoami"}
    ui.screenshot("no-access")


# ---- adoption ---------------------------------------------------------------------------------

def test_adoption_charts_tables_and_csv(ui, server):
    ui.open("adoption")
    ui.wait_idle()
    ui.check_charts(3)
    active = ui.chart("Active users per day")
    assert ui.axis_titles(active) == ["day (UTC)", "active users"]
    assert ui.legend(active) == ["active users"]
    assert len(active.find_elements(By.CSS_SELECTOR, "rect.bar")) >= 10
    users = ui.table_rows("main section[aria-label='Top users']")
    assert {u[0] for u in users} == {ADMIN, USER, "carol@example.com", "tag:ci"}
    carol = next(u for u in users if u[0] == "carol@example.com")
    assert carol[3] == "unpriced", "carol only used an unpriced model"
    models = ui.table_rows("main section[aria-label='Model popularity']")
    assert models[0][0] == "anthropic/claude-sonnet-4-5"
    ui.screenshot("adoption")

    csv = ui.one("main a[download]")
    assert csv.text == "Download CSV"
    href = csv.get_attribute("href")
    assert href.startswith(f"{server.base}/api/adoption.csv?") and "period=day" in href
    with urllib.request.urlopen(href, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/csv")
        body = resp.read().decode()
    assert body.splitlines()[0] == "who,requests,input_tokens,output_tokens,cost_usd"

    ui.d.find_element(By.CSS_SELECTOR, "main select[name=period] option[value=week]").click()
    ui.click_text("Apply")
    ui.wait(lambda: ui.q("main figure.chart figcaption") and ui.q("main figure.chart figcaption")[0].text == "Active users per week")
    ui.wait_idle()
    assert ui.axis_titles(ui.chart("Active users per week"))[0] == "week starting (UTC)"
    assert "period=week" in ui.one("main a[download]").get_attribute("href")
    assert query_of(ui.requests("/api/adoption")[-1])["period"] == "week"


# ---- logs --------------------------------------------------------------------------------------

def test_sessions_page_with_cursor_paging_and_filters(ui, server):
    ui.open("logs?range=all")
    ui.wait_idle()
    total = len(server.state.sessions(server.state.records))
    assert total > 25
    assert len(ui.table_rows()) == 25
    assert "Page 1" in ui.one("main .page-info").text
    ui.click_text("Older →")
    ui.wait(lambda: "Page 2" in ui.one("main .page-info").text and len(ui.table_rows()) == total - 25, what="page 2")
    assert query_of(ui.requests("/api/sessions")[-1])["cursor"] == "c25"
    assert not ui.one("main .pager button:last-child").is_enabled(), "no page after the last"
    ui.click_text("← Newer")
    ui.wait(lambda: "Page 1" in ui.one("main .page-info").text and len(ui.table_rows()) == 25, what="back to page 1")
    ui.screenshot("logs-sessions")

    login = ui.one("main input[name=login]")
    login.send_keys(USER)
    ui.d.find_element(By.CSS_SELECTOR, "main select[name=range] option[value='30d']").click()
    ui.click_text("Apply")
    ui.wait(lambda: ui.table_rows() and {r[1] for r in ui.table_rows()} == {USER}, what="filtered by user")
    q = query_of(ui.requests("/api/sessions")[-1])
    assert q["login"] == USER and int(q["since_ms"]) > server.state.now_ms - 31 * DAY
    assert "login=bob%40example.com" in ui.d.current_url or f"login={USER}" in ui.d.current_url

    model = ui.one("main input[name=model]")
    model.send_keys("claude-sonnet-4-5")
    ui.click_text("Apply")
    ui.wait_asked("/api/sessions", model="claude-sonnet-4-5")
    assert all("claude-sonnet-4-5" in r[4] for r in ui.table_rows())


def test_requests_tab_filters_by_status(ui, server):
    ui.open("logs?tab=requests&range=all")
    ui.wait_idle()
    assert len(ui.table_rows()) == 25
    ui.one("main input[name=status]").send_keys("502")
    ui.click_text("Apply")
    ui.wait(lambda: ui.table_rows() and all("502" in r[4] for r in ui.table_rows()), what="only 502s")
    n502 = sum(r.status == 502 for r in server.state.records)
    assert len(ui.table_rows()) == n502
    ui.screenshot("logs-requests")


def test_session_opens_to_requests_and_a_request_to_its_capture(ui, server):
    st = server.state
    session = next(s for s in st.sessions(st.records) if s["kind"] == "claude_code" and s["requests"] >= 3 and s["errors"] == 0)
    ui.open("logs?range=all")
    ui.wait_idle()
    link = ui.wait(lambda: next((a for a in ui.q("main tbody a.row-link")
                                 if session["id"] in a.get_attribute("href")), None) or _next_page(ui), what="session link")
    link.click()
    ui.wait(lambda: ui.heading() == "Session")
    ui.wait_idle()
    assert session["id"] in ui.text("main .cards")
    rows = ui.table_rows()
    assert len(rows) == session["requests"]
    with_tools = [r for r in rows if r[-1].strip()]
    assert with_tools, "tool calls are listed per request"
    ui.screenshot("session")

    record = next(r for r in sorted((r for r in st.records if r.session_id == session["id"]), key=lambda r: r.ts_ms) if r.tool_calls)
    ui.d.find_element(By.CSS_SELECTOR, f"main a[href*='{record.id}']").click()
    ui.wait(lambda: ui.heading() == "Request")
    ui.wait_idle()
    ui.wait_text("Reassembled answer")
    main = ui.text("main")
    assert "POST /v1/messages" in main
    assert "I'll look at the failing test first." in main
    assert "tool_use" in main
    for t in record.tool_calls:
        assert t["name"] in main
    headers = ui.table_rows("main section[aria-label='Request headers']")
    assert ["x-api-key", "[redacted]"] in headers
    body = ui.one("main section[aria-label='Request body'] pre.code").text
    assert body.startswith("{\n  \"model\": \"claude-sonnet-4-5\""), "JSON bodies are pretty-printed"
    assert "<img src=x onerror=" in body and "<script>document.title=" in body, "markup in a capture is shown as text"
    assert not ui.q("img[src=x]") and not ui.q("main script")
    assert ui.d.title == "Request · iris"
    sse = ui.one("main section[aria-label='Response body'] pre.code").text
    assert sse.startswith("event: message_start")
    ui.screenshot("capture")
    ui.click_text("← Session", "a")
    ui.wait(lambda: ui.heading() == "Session")
    ui.wait_idle()


def _next_page(ui):
    nxt = ui.q("main .pager button:last-child")
    if nxt and nxt[0].is_enabled():
        nxt[0].click()
    return None


def test_purged_capture_says_so(ui, server):
    failed = next(r for r in server.state.records if r.status == 502)
    ui.console.allow(f"/api/captures/{failed.id}", "404")
    ui.open(f"logs/requests/{failed.id}")
    alert = ui.visible("main [role=alert]")
    assert "no capture for request" in alert.text and "HTTP 404" in alert.text
    assert "purged by the retention policy or was never captured" in ui.text("main")


def test_times_are_shown_in_the_viewers_time_zone(ui, server):
    ui.d.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    ui.open("logs?tab=requests&range=all")
    ui.wait_idle()
    # ICU may report the zone by its old name
    assert ui.one("#tz").text in ("Times in Asia/Kolkata", "Times in Asia/Calcutta")
    newest = server.state.records[0]
    local = datetime.fromtimestamp(newest.ts_ms / 1000, ZoneInfo("Asia/Kolkata"))
    utc = datetime.fromtimestamp(newest.ts_ms / 1000, ZoneInfo("UTC"))
    shown = ui.table_rows()[0][0]
    assert local.strftime("%I:%M:%S %p") in shown, (shown, local)
    assert utc.strftime("%I:%M:%S") not in shown
    title = ui.one("main tbody time").get_attribute("title")
    assert ("(Asia/Kolkata)" in title or "(Asia/Calcutta)" in title) and str(local.year) in title


# ---- tool use ----------------------------------------------------------------------------------

def test_tool_use_histogram_totals_and_sessions(ui, server):
    ui.open("tools?range=30d")
    ui.wait_idle()
    ui.check_charts(2)
    hist = ui.chart("Tool calls per day")
    assert ui.axis_titles(hist) == ["day (UTC)", "tool calls"]
    legend = ui.legend(hist)
    tool_req = query_of(ui.requests("/api/tools")[-1])
    recs = server.state.visible(tool_req)
    counts: dict[str, int] = {}
    for r in recs:
        for t in r.tool_calls:
            counts[t["name"]] = counts.get(t["name"], 0) + 1
    top = sorted(counts, key=lambda k: -counts[k])[:7]
    assert legend[:7] == top and legend[-1] == "other tools", legend
    totals = ui.table_rows("main section[aria-label='Tools']")
    assert {r[0]: int(r[1]) for r in totals} == counts
    per_session = ui.table_rows("main section[aria-label='Per session']")
    assert len(per_session) == sum(1 for s in server.state.sessions(recs) if s["tools"])
    ui.screenshot("tools")

    ui.d.find_element(By.CSS_SELECTOR, "main select[name=bucket] option[value=hour]").click()
    ui.click_text("Apply")
    ui.wait(lambda: ui.q("main figure.chart figcaption") and ui.q("main figure.chart figcaption")[0].text == "Tool calls per hour")
    ui.wait_idle()
    assert ui.axis_titles(ui.chart("Tool calls per hour"))[0] == "hour (your time)"
    assert query_of(ui.requests("/api/tools")[-1])["bucket"] == "hour"


# ---- models ------------------------------------------------------------------------------------

def test_models_list_prices_and_test_button(ui, server):
    ui.open("models")
    ui.wait_idle()
    rows = ui.table_rows("main section[aria-label='Models you may use']")
    assert [r[0] for r in rows] == ["anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5",
                                    "openai/gpt-4o-mini", fake_api.FAILING_MODEL]
    sonnet = rows[0]
    assert sonnet[1] == "Anthropic" and "anthropic_messages" in sonnet[2]
    assert sonnet[3:7] == ["$3.00", "$15.00", "$0.300", "$3.75"]
    assert rows[3][3:7] == ["—", "—", "—", "—"], "unpriced shows no made-up price"
    providers = [p.text for p in ui.q("main article.provider h3")]
    assert providers == ["Anthropic (anthropic)", "OpenAI (openai)", "GPU box (selfhosted)"]

    ui.one("main button[aria-label='Test anthropic/claude-sonnet-4-5']").click()
    ok = ui.wait(lambda: next((c for c in ui.q("main .test-result") if "OK" in c.text), None), what="test result")
    assert "OK · 200 · 412 ms" in ok.text and "Hello! How can I help?" in ok.text
    ui.one(f"main button[aria-label='Test {fake_api.FAILING_MODEL}']").click()
    bad = ui.wait(lambda: next((c for c in ui.q("main .test-result") if "Failed" in c.text), None), what="failed test")
    assert "Failed · 502 · 1.50 s" in bad.text and "connection refused" in bad.text
    posts = ui.requests("/api/models/test", "POST")
    assert [p["body"] for p in posts] == [{"model": "anthropic/claude-sonnet-4-5"}, {"model": fake_api.FAILING_MODEL}]
    assert all(p["content_type"] == "application/json" for p in posts)
    ui.screenshot("models")


# ---- settings ----------------------------------------------------------------------------------

def test_settings_editor_validate_and_structured_view(ui, server):
    open_settings(ui)
    text = config_text(ui)
    assert text == fake_api.CONFIG_TEXT
    gutter = ui.one("main .gutter").get_attribute("textContent").split("\n")
    assert gutter == [str(i) for i in range(1, text.count("\n") + 2)], "one line number per line"
    grants = ui.table_rows("main section[aria-label^='Grants (read-only']")
    assert [g[1] for g in grants] == [ADMIN, "*", "tag:ci"], "HuJSON with comments and trailing commas parsed"
    assert [g[2] for g in grants] == ["admin", "user", "user"]
    mine = ui.table_rows("main section[aria-label='Grants that match you']")
    assert mine[0][:3] == ["grants[0]", ADMIN, "admin"]
    assert len(ui.q("main section[aria-label='Providers (running config)'] article.provider")) == 3

    ui.click_text("Validate")
    ui.wait_text("Valid: no problems.")
    bad = text.replace('"baseurl": "https://api.openai.com"', '"baseurl": "ftp://api.openai.com"').replace(
        '"grants": [', '"bogus": 1,\n  "grants": [')
    set_config_text(ui, bad)
    assert ui.one("main .dirty").is_displayed()
    gutter = ui.one("main .gutter").get_attribute("textContent").split("\n")
    assert len(gutter) == bad.count("\n") + 1
    ui.click_text("Validate")
    problems = ui.wait(lambda: ui.q("main .problems li"), what="problems")
    items = [p.text.lower() for p in problems]
    assert any("error" in p and "providers.openai.baseurl" in p and "ftp://" in p for p in items), items
    assert any("warning" in p and "bogus" in p and 'unknown config key "bogus"' in p for p in items), items
    post = ui.requests("/api/config/validate", "POST")[-1]
    assert post["content_type"] == "application/json" and post["body"] == {"config": bad}
    ui.screenshot("settings-validate")


def test_settings_save_conflict_shows_409(ui, server):
    open_settings(ui)
    ta = ui.one("#config-text")
    ta.send_keys(Keys.CONTROL, Keys.HOME)
    ta.send_keys("// tweak by alice\n")
    assert config_text(ui).startswith("// tweak by alice\n")
    server.someone_else_saves()
    ui.console.allow("/api/config", "409")
    ui.click_text("Save")
    msg = ui.wait(lambda: next((m for m in ui.q("main .messages [role=alert]") if m.text), None), what="409 message")
    assert "the config changed since you loaded it" in msg.text
    assert "someone saved in between" in msg.text, "the API's own message"
    put = ui.requests("/api/config", "PUT")[-1]
    assert put["body"]["hash"] == hashlib.sha256(fake_api.CONFIG_TEXT.encode()).hexdigest()
    assert put["content_type"] == "application/json"
    ui.screenshot("settings-409")

    ui.click_text("Reload")
    ui.click_text("Discard my edits and reload")
    ui.wait(lambda: "(edited by dave)" in config_text(ui), what="the other admin's version")
    assert not ui.one("main .dirty").is_displayed()


def test_settings_admin_lockout_is_refused_inline(ui, server):
    open_settings(ui)
    set_config_text(ui, config_text(ui).replace('[{"role": "admin"}, {"models": "**"}]', '[{"role": "user"}, {"models": "**"}]'))
    ui.console.allow("/api/config", "403")
    ui.click_text("Save")
    msg = ui.wait(lambda: next((m for m in ui.q("main .messages [role=alert]") if m.text), None), what="lockout message")
    assert "it would take your own admin role away" in msg.text
    assert f"take the admin role away from {ADMIN}" in msg.text and "grants[0]" in msg.text
    assert server.state.config == fake_api.CONFIG_TEXT, "nothing saved"
    ui.screenshot("settings-lockout")


def test_settings_invalid_save_lists_problems(ui, server):
    open_settings(ui)
    set_config_text(ui, config_text(ui).replace('"models": ["gpt-4o-mini"],', '"models": [],'))
    ui.console.allow("/api/config", "400")
    ui.click_text("Save")
    msg = ui.wait(lambda: next((m for m in ui.q("main .messages [role=alert]") if m.text), None), what="problems")
    assert "saving treats warnings as errors" in msg.text and "1 problem(s)" in msg.text
    items = [li.text for li in ui.q("main .problems li")]
    assert len(items) == 1 and "providers.openai.models" in items[0] and "models is required" in items[0]


def test_settings_save_history_and_rollback(ui, server):
    open_settings(ui)
    edited = config_text(ui).replace("// iris config", "// iris config, reviewed")
    set_config_text(ui, edited)
    ui.click_text("Save")
    ui.wait_text("the new config is live", "main .messages")
    assert server.state.config == edited
    new_hash = hashlib.sha256(edited.encode()).hexdigest()
    ui.wait(lambda: new_hash[:12] in ui.one("#config-meta").text, what="new hash shown")
    ui.wait(lambda: len(ui.table_rows("main section[aria-label='History']")) == 2, what="history has 2 versions")
    hist = ui.table_rows("main section[aria-label='History']")
    assert hist[0][0] == "2" and hist[0][2] == ADMIN and hist[0][-1] == "current"

    ui.one("main button[aria-label='Roll back to version 1']").click()
    ui.wait_text("Rolled back to version 1", "main .messages")
    assert server.state.config == fake_api.CONFIG_TEXT
    ui.wait(lambda: config_text(ui) == fake_api.CONFIG_TEXT, what="editor shows the rolled-back text")
    rb = ui.requests("/api/config/rollback", "POST")[-1]
    assert rb["body"] == {"id": 1, "hash": new_hash}
    ui.wait(lambda: len(ui.table_rows("main section[aria-label='History']")) == 3)


# ---- keys --------------------------------------------------------------------------------------

def test_key_creation_shows_the_token_once_and_revoke_works(ui, server):
    ui.open("keys")
    ui.wait_idle()
    assert len(ui.table_rows()) == 3
    for_field = ui.one("#key-for")
    for_field.clear()
    for_field.send_keys("tag:ci")
    ui.one("#key-note").send_keys("nightly eval runner")
    ui.click_text("Create key")
    panel = ui.visible("main .token-panel")
    token = server.state.created_tokens[-1]
    shown = ui.one("#new-token").get_attribute("value")
    assert shown == token and token.startswith("iris_sk_")
    assert "only time the token is shown" in panel.text
    post = ui.requests("/api/keys", "POST")[-1]
    assert post["content_type"] == "application/json"
    assert post["body"] == {"for": "tag:ci", "expires": "30d", "note": "nightly eval runner"}
    ui.click_text("Copy")
    ui.wait(lambda: ui.one("main .copy-note").text, what="copy feedback")
    ui.wait(lambda: len(ui.table_rows()) == 4, what="new key listed")
    kid = server.state.keys[-1]["id"]
    row = next(r for r in ui.table_rows() if r[0] == kid)
    assert row[1] == "tag:ci" and row[2] == "nightly eval runner" and row[6].startswith("active")
    assert f"by {ADMIN}" in row[3]
    ui.screenshot("keys-token")

    ui.click_text("Done, hide the token")
    ui.wait(lambda: not ui.q("main .token-panel"), what="panel gone")
    assert token not in ui.d.page_source
    ui.open("keys")
    ui.wait_idle()
    assert token not in ui.d.page_source, "the token is never shown again"

    ui.one(f"main button[aria-label='Revoke {kid}']").click()
    ui.one(f"main button[aria-label='Confirm revoking {kid}']").click()
    ui.wait(lambda: next((r for r in ui.table_rows() if r[0] == kid), [""] * 7)[6].startswith("revoked"), what="revoked")
    assert ui.requests(f"/api/keys/{kid}", "DELETE")


def test_key_creation_error_shows_api_message(ui, server):
    ui.open("keys")
    ui.wait_idle()
    field = ui.one("#key-for")
    field.clear()
    field.send_keys("not-a-subject")
    ui.console.allow("/api/keys", "400")
    ui.click_text("Create key")
    alert = ui.visible("main [role=alert]")
    assert "'not-a-subject' is neither a login nor tag:NAME" in alert.text
    assert not ui.q("main .token-panel")


# ---- accessibility and containment -------------------------------------------------------------

def test_keyboard_navigation_and_labels(ui, server):
    ui.open("overview")
    ui.wait_idle()
    body = ui.d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    active = ui.d.switch_to.active_element
    assert active.text == "Skip to content"
    active.send_keys(Keys.ENTER)
    assert ui.d.switch_to.active_element.get_attribute("id") == "main"
    # tab through the header into the navigation and open Logs with the keyboard
    ui.d.find_element(By.CSS_SELECTOR, ".brand").send_keys("")
    for _ in range(12):
        ui.d.switch_to.active_element.send_keys(Keys.TAB)
        if ui.d.switch_to.active_element.text == "Logs":
            break
    assert ui.d.switch_to.active_element.text == "Logs"
    ui.d.switch_to.active_element.send_keys(Keys.ENTER)
    ui.wait(lambda: ui.heading() == "Logs")
    ui.wait(lambda: ui.d.switch_to.active_element.tag_name == "h1", what="focus moves to the new page's heading")
    for route in ("overview", "adoption", "logs", "tools", "models", "keys", "settings"):
        ui.go(route)
        ui.wait_idle()
        ui.wait(lambda: ui.q("main h1"))
        assert not ui.unlabelled_controls(), f"{route}: controls without a label"
        assert ui.q("main h1"), route


def test_everything_stays_on_loopback(ui, server, egress):
    """A tour of every page; the fixture then checks the page's requests (CDP), the Host headers
    the server saw, and the proxy that catches anything Chromium sends elsewhere."""
    st = server.state
    rec = next(r for r in st.records if r.tool_calls)
    for route in ("overview", "adoption", "logs", "logs?tab=requests", f"logs/sessions/{rec.session_id}",
                  f"logs/requests/{rec.id}", "tools", "models", "keys", "settings"):
        ui.open(route)
        ui.wait_idle()
    paths = {e["path"] for e in ui.requests("/")}
    assert "/ui/js/app.js" in paths and "/ui/style.css" in paths and "/ui/favicon.svg" in paths
    assert all(p.startswith(("/ui/", "/api/")) for p in paths), paths


# ---- pure helpers, run in the page --------------------------------------------------------------

def run_module(ui, module: str, body: str):
    """Imports /ui/js/<module> in the page and runs body with it as `m`; returns the result."""
    return ui.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"import('/ui/js/{module}').then((m) => done(JSON.stringify((() => {{ {body} }})())))"
        ".catch((e) => done(JSON.stringify({error: String(e)})));")


def test_hujson_reader_keeps_strings_and_drops_comments_and_trailing_commas(ui, server):
    ui.open("overview")
    ui.wait_idle()
    cases = [
        ('{"a": 1,}', {"a": 1}),
        ('[1, 2, /* two */ ]', [1, 2]),
        ('{"url": "http://x//y", // comment\n "b": "/* not a comment */",\n}', {"url": "http://x//y", "b": "/* not a comment */"}),
        ('{"q": "say \\"hi\\", // still a string",}', {"q": 'say "hi", // still a string'}),
        ('// top\n{"list": [1,\n // c\n],}', {"list": [1]}),
        (fake_api.CONFIG_TEXT, json.loads(fake_api.hujson_to_json(fake_api.CONFIG_TEXT))),
    ]
    for text, expected in cases:
        got = json.loads(run_module(ui, "hujson.js", f"return m.parseHuJSON({json.dumps(text)});"))
        assert got == expected, text
    err = json.loads(run_module(ui, "hujson.js", "try { m.parseHuJSON('{\"a\": }'); return 'parsed'; } catch (e) { return e.name; }"))
    assert err == "SyntaxError"


def test_chart_ticks_are_round_and_cover_the_data(ui, server):
    ui.open("overview")
    ui.wait_idle()
    cases = [(0, False, [0, 1]), (4, True, [0, 1, 2, 3, 4]), (1, True, [0, 1]), (97, False, [0, 20, 40, 60, 80, 100]),
             (1234567, False, [0, 250000, 500000, 750000, 1000000, 1250000]), (0.042, False, [0, 0.01, 0.02, 0.03, 0.04, 0.05])]
    for top, integer, expected in cases:
        got = json.loads(run_module(ui, "charts.js", f"return m.niceTicks({top}, 5, {json.dumps(integer)});"))
        assert got == expected, (top, got)
