"""A small driver for the dashboard: navigation, waits, and checks shared by the tests."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

TIMEOUT = 10.0


def query_of(entry: dict) -> dict[str, str]:
    """The query string of a request the fake server recorded, last value per key."""
    return {k: v[-1] for k, v in parse_qs(entry["query"]).items()}


class UI:
    def __init__(self, driver: Any, server: Any, console: Any, shots: Path) -> None:
        self.d = driver
        self.server = server
        self.console = console
        self.shots = shots

    # -- navigation ---------------------------------------------------------------------------

    def open(self, route: str = "") -> None:
        """Loads /ui/ fresh at #/route (or a plain path below /ui/ when route starts with '/')."""
        url = f"{self.server.base}/ui{route}" if route.startswith("/") else f"{self.server.base}/ui/#/{route}"
        self.d.get("about:blank")
        self.d.get(url)
        self.wait(lambda: self.d.execute_script("return document.readyState") == "complete")

    def go(self, route: str) -> None:
        """Client-side navigation (no reload)."""
        self.d.execute_script("location.hash = arguments[0]", f"#/{route}")

    # -- waiting ------------------------------------------------------------------------------

    def wait(self, cond: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
        end = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < end:
            try:
                v = cond()
                if v:
                    return v
            except (StaleElementReferenceException, WebDriverException) as e:
                last_err = e
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_err})" if last_err else "")
                             + f"\npage text:\n{self.text()[:3000]}")

    def q(self, css: str, root: Any = None) -> list[WebElement]:
        return (root or self.d).find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str, root: Any = None) -> WebElement:
        return self.wait(lambda: next(iter(self.q(css, root)), None), what=f"element {css}")

    def visible(self, css: str) -> WebElement:
        return self.wait(lambda: next((e for e in self.q(css) if e.is_displayed()), None), what=f"visible {css}")

    def wait_text(self, text: str, css: str = "main") -> WebElement:
        return self.wait(lambda: next((e for e in self.q(css) if text in e.text), None), what=f"{text!r} in {css}")

    def wait_idle(self) -> None:
        """Until no 'Loading…' placeholder is left in main."""
        self.wait(lambda: self.q("main h1") and not self.q("main .loading"), what="all sections loaded")

    def heading(self) -> str:
        return self.one("main h1").text

    def text(self, css: str = "body") -> str:
        try:
            return "\n".join(e.text for e in self.q(css))
        except WebDriverException:
            return ""

    def click_text(self, text: str, css: str = "button") -> None:
        el = self.wait(lambda: next((e for e in self.q(css) if e.text.strip() == text and e.is_displayed() and e.is_enabled()), None),
                       what=f"{css} {text!r}")
        el.click()

    def requests(self, prefix: str = "/api/", method: str | None = None) -> list[dict[str, Any]]:
        return self.server.requests(prefix, method)

    def wait_asked(self, prefix: str, **query: str) -> dict[str, str]:
        """Until the page's latest request to `prefix` carries `query`, then until it has loaded.

        A click on Apply starts the fetch a moment later; `wait_idle` alone can pass before the
        page has even shown its loading placeholder."""
        def latest() -> dict[str, str] | None:
            asked = self.requests(prefix)
            if not asked:
                return None
            q = query_of(asked[-1])
            return q if all(q.get(k) == v for k, v in query.items()) else None
        q = self.wait(latest, what=f"a request to {prefix} with {query}")
        self.wait_idle()
        return q

    # -- checks -------------------------------------------------------------------------------

    def check_charts(self, min_count: int) -> list[WebElement]:
        """Every chart on the page has axes, tick labels, two axis titles, a legend and bars."""
        figs = self.wait(lambda: len(self.q("main figure.chart")) >= min_count and self.q("main figure.chart"),
                         what=f"{min_count} charts")
        for f in figs:
            title = f.find_element(By.CSS_SELECTOR, "figcaption").text
            assert len(f.find_elements(By.CSS_SELECTOR, "svg line.axis")) >= 2, f"{title}: axes"
            ticks = [t.text for t in f.find_elements(By.CSS_SELECTOR, "svg text.tick") if t.text]
            assert len(ticks) >= 3, f"{title}: tick labels {ticks}"
            axis_titles = [t.text for t in f.find_elements(By.CSS_SELECTOR, "svg text.axis-title")]
            assert len(axis_titles) == 2 and all(axis_titles), f"{title}: axis titles {axis_titles}"
            legend = [t.text for t in f.find_elements(By.CSS_SELECTOR, "svg g.legend text")]
            assert legend and all(legend), f"{title}: legend {legend}"
            assert f.find_elements(By.CSS_SELECTOR, "svg rect.bar"), f"{title}: no bars"
        return figs

    def chart(self, title: str) -> WebElement:
        return self.wait(lambda: next((f for f in self.q("main figure.chart")
                                       if f.find_element(By.CSS_SELECTOR, "figcaption").text == title), None),
                         what=f"chart {title!r}")

    def axis_titles(self, fig: WebElement) -> list[str]:
        return [t.text for t in fig.find_elements(By.CSS_SELECTOR, "svg text.axis-title")]

    def legend(self, fig: WebElement) -> list[str]:
        return [t.text for t in fig.find_elements(By.CSS_SELECTOR, "svg g.legend text")]

    def table_rows(self, root_css: str = "main") -> list[list[str]]:
        rows = []
        for tr in self.q(f"{root_css} table tbody tr"):
            rows.append([td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")])
        return rows

    def unlabelled_controls(self) -> list[str]:
        return self.d.execute_script("""
            return [...document.querySelectorAll('main input, main select, main textarea, main button')]
              .filter(e => e.offsetParent !== null)
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
              .map(e => e.outerHTML.slice(0, 120));
        """)

    def screenshot(self, name: str) -> Path:
        """A full-page PNG (beyond the viewport) into the screenshot directory."""
        metrics = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1},
        })
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
