"""Makes docs/explorer.png, the README's picture of the explorer: signs up a fresh user on a
running service, explores a little through the page (as a person would: clicks and controls), and
takes a screenshot with Debian's chromium.

    .venv/bin/python docs/screenshot.py [http://127.0.0.1:8888]
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

OUT = Path(__file__).with_name("explorer.png")


def next_render(page: Page, action) -> None:  # noqa: ANN001 - a callable that starts a render
    view = page.get_by_test_id("view")
    before = view.get_attribute("data-job-id")
    action()
    expect(view).not_to_have_attribute("data-job-id", before or "")


def click_on(page: Page, x: float, y: float) -> None:
    """Click the view where the complex point (x, y) is (docs/design.md's mapping, inverted)."""
    job_id = page.get_by_test_id("view").get_attribute("data-job-id")
    p = page.evaluate(
        """async (id) => {
            const { token } = JSON.parse(localStorage.getItem('fractal-explorer.session'));
            const job = await fetch(`/jobs/${id}`, { headers: { Authorization: `Bearer ${token}` } });
            return (await job.json()).params;
        }""",
        job_id,
    )
    s = 3.0 / p["zoom"] / p["width"]
    box = page.get_by_test_id("view").bounding_box()
    px, py = (x - p["center_x"]) / s + p["width"] / 2, (p["center_y"] - y) / s + p["height"] / 2
    scale = box["width"] / p["width"]
    next_render(page, lambda: page.get_by_test_id("view").click(position={"x": px * scale, "y": py * scale}))


def main(base: str = "http://127.0.0.1:8888") -> None:
    expect.set_options(timeout=120_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(base_url=base, viewport={"width": 1180, "height": 800})
        page.goto("/")
        page.get_by_test_id("username").fill(f"demo{uuid.uuid4().hex[:6]}")
        page.get_by_test_id("password").fill("correct-horse")
        page.get_by_test_id("sign-up").click()
        view = page.get_by_test_id("view")
        expect(view).to_be_visible()
        next_render(page, lambda: page.get_by_test_id("colormap").select_option("twilight"))
        next_render(page, lambda: page.get_by_test_id("kind").select_option("julia"))
        next_render(page, lambda: page.get_by_test_id("kind").select_option("mandelbrot"))
        for _ in range(6):  # into the seahorse valley, a click at a time
            click_on(page, -0.743643887, 0.131825904)
        page.mouse.move(0, 0)
        page.screenshot(path=str(OUT))
        browser.close()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
