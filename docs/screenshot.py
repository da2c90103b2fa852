"""Makes docs/explorer.png, the README's picture of the explorer: signs up a fresh user on a
running service, explores a little through the page (as a person would: clicks and controls), and
takes a screenshot with Debian's chromium; then docs/explorer-deep.png, a deep view opened from
its link (a period-8007 minibrot at 3e29, rendered by perturbation).

    .venv/bin/python docs/screenshot.py [http://127.0.0.1:8888]
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

OUT = Path(__file__).with_name("explorer.png")
DEEP_OUT = Path(__file__).with_name("explorer-deep.png")
# the nucleus of a period-8007 minibrot beside the seahorse valley's classic point (Newton's method)
DEEP_LINK = ("/?kind=mandelbrot&x=-0.743643887037158704752191506114779778215256207948181289816884"
             "&y=0.131825904205311970493132056385140678972952279328918966209128&zoom=3e29&iter=40000"
             "&colours=viridis")


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
    cx, cy, zoom = (float(p[k]) for k in ("center_x", "center_y", "zoom"))  # decimal strings; shallow here
    s = 3.0 / zoom / p["width"]
    box = page.get_by_test_id("view").bounding_box()
    px, py = (x - cx) / s + p["width"] / 2, (cy - y) / s + p["height"] / 2
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
        next_render(page, lambda: page.goto(DEEP_LINK))
        expect(page.locator("#facts")).to_contain_text("perturbation")
        page.mouse.move(0, 0)
        page.screenshot(path=str(DEEP_OUT))
        browser.close()
    for out in (OUT, DEEP_OUT):
        print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
