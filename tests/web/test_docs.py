"""`/docs` and `/redoc` in Chromium with every request outside the service refused: they render
the API from their own assets (no CDN), with a clean console."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.web.conftest import Console

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def offline(page: Page, live_service: str) -> list[str]:
    """Abort every request that leaves the service; the list of those tried."""
    outside: list[str] = []
    own = urlsplit(live_service).netloc

    def route(r: Route) -> None:
        if urlsplit(r.request.url).netloc in (own, "") or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return outside


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_the_api_docs_work_offline(
    page: tuple[Page, Console], live_service: str, path: str, rendered: str
) -> None:
    page, console = page
    outside = offline(page, live_service)
    page.goto(path)
    expect(page.locator(rendered).first).to_contain_text("fractal-scheduler")
    expect(page.get_by_text("/jobs/{job_id}/cancel").first).to_be_visible()
    # ReDoc asks its CDN for its own small logo and hides it when that fails: nothing else leaves
    assert set(outside) <= {REDOC_LOGO}
    assert [e for e in console if REDOC_LOGO not in e and "ERR_FAILED" not in e] == [], console


def test_docs_pages_name_only_local_assets(live_service: str) -> None:
    for path in ("/docs", "/redoc"):
        html = httpx.get(live_service + path).text
        assert "http://" not in html.replace(live_service, "") and "https://" not in html, path
    script = httpx.get(f"{live_service}/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
