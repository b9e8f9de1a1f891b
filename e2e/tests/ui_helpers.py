"""MLflow's web UI in a real browser: Debian's Chromium driven by Playwright, one page at a time,
recording every failed request and console error (test_ui.py, test_ui_kubernetes.py)."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import STATE_DIR

CHROMIUM = os.environ.get("FERROFLOW_CHROMIUM", "/usr/bin/chromium")
# How long a page may take to show what the test waits for (the first load compiles the bundle;
# in CI's concurrent lanes the renderer shares 2 cores with real-node Pods and the Rust tests:
# the compare page, 3 s alone, once took over 30 s there).
PAGE_TIMEOUT_MS = 60_000
# The one request allowed to fail: the signed-in user, which exists only with MLflow's auth.
ALLOWED_FAILURE = re.compile(r"/ajax-api/2\.0/mlflow/users/current$")


@contextmanager
def chromium():
    """The browser, or a skip (a failure when CI is set) when Chromium or Playwright is missing."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        message = f"no Chromium at {CHROMIUM}: run e2e/setup/chromium.sh (or set FERROFLOW_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class UiPage:
    """One browser page on the server, recording every failed request and console error.

    `cookies` ({name: value}) are set for the server before the first page loads (MLflow's UI
    reads them once, at start)."""

    def __init__(self, browser, server, name: str, cookies: dict[str, str] | None = None):
        self.base = server.url
        self.problems: list[str] = []
        # Every answer: (status, method, URL).
        self.responses: list[tuple[int, str, str]] = []
        self.screenshot = STATE_DIR / "screenshots" / f"{server.impl}-{server.backend}" / f"{name}.png"
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        if cookies:
            self.context.add_cookies([{"name": key, "value": value, "url": self.base}
                                      for key, value in cookies.items()])
        self.page = self.context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("response", self._response)
        self.page.on("requestfailed", self._request_failed)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught error: {error}"))

    def _response(self, response):
        self.responses.append((response.status, response.request.method, response.url))
        path = response.url.split("?", 1)[0]
        if response.status >= 400 and not (response.status == 404 and ALLOWED_FAILURE.search(path)):
            self.problems.append(f"{response.status} {response.request.method} {response.url}")

    def _request_failed(self, request):
        # Navigating away cancels requests still in flight; that is not the server failing.
        if request.failure and "ERR_ABORTED" not in request.failure:
            self.problems.append(f"failed {request.method} {request.url}: {request.failure}")

    def _console(self, message):
        if message.type != "error":
            return
        source = message.location.get("url", "")
        # The browser logs the allowed 404 as a console error naming its URL.
        if ALLOWED_FAILURE.search(source.split("?", 1)[0]):
            return
        # The browser reports a resize that spilled into the next frame (charts laid out while
        # the machine is busy) as an error; it is a timing notice, not a fault of the page.
        if "ResizeObserver loop completed with undelivered notifications" in message.text:
            return
        self.problems.append(f"console error: {message.text} ({source})")

    def open(self, route: str):
        self.page.goto(f"{self.base}/#{route}")
        return self.page

    def keep_screenshot(self):
        self.screenshot.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(self.screenshot))

    def finish(self):
        """Keep the screenshot, then require a clean page."""
        self.keep_screenshot()
        self.context.close()
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def ui_pages():
    """Opens UiPages (`ui_pages(browser, server, name, cookies=…)`); closes what a failed test
    left open."""
    pages = []

    def open_page(browser, server, name: str, cookies: dict[str, str] | None = None) -> UiPage:
        page = UiPage(browser, server, name, cookies)
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        if page.context.pages:
            page.context.close()
