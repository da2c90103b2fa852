"""A real browser for the explorer: Debian's chromium (scripts/setup installs it) driven by
playwright through `executable_path`, since playwright's own browser download needs the internet.
Outside scripts/test, a machine without chromium skips these tests, naming why, unless
REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 60_000  # for a render on a loaded 2-core machine; the waits poll, they never sleep
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but there is no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium, or run scripts/test)")
    with sync_playwright() as playwright:
        # --no-sandbox: the suite may run as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Console(list[str]):
    """What the page logged as an error, and what it threw."""


@pytest.fixture
def page(browser: Browser, live_service: str) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(base_url=live_service, viewport={"width": 1000, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors = Console()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    yield page, errors
    context.close()
