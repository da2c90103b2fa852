"""Deep zoom in Chromium: clicks to past 1e20 and a 1e100 link, each a real render (perturbation,
precision auto) that shows structure, with the page's console clean.

The views close in on c = i, a Misiurewicz point: the set has structure around it at every scale,
and its outside escapes after about log(1/d) / log(4 sqrt 2) iterations at a distance d (the
multiplier of its 2-cycle), ~30 at 1e20 and ~135 at 1e100, so a few hundred iterations and
small frames keep these renders cheap."""

from __future__ import annotations

import io
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx
from PIL import Image
from playwright.sync_api import Page, expect

from tests.web.conftest import Console
from tests.web.test_explorer import job_of, new_name, shown_job, sign_up, token_of
from tests.web.test_view_exact import exact, pixel_centre, query_of

ITERATIONS = "300"
TARGET = (Fraction(0), Fraction(1))  # c = i


def pixel_of(p: dict[str, Any], x: Fraction, y: Fraction) -> tuple[int, int]:
    """The pixel whose square holds (x, y) (docs/design.md's mapping, inverted exactly)."""
    s = Fraction(3) / Fraction(exact(p["zoom"])) / p["width"]
    col = math.floor((x - Fraction(exact(p["center_x"]))) / s + Fraction(p["width"], 2))
    row = math.floor((Fraction(exact(p["center_y"])) - y) / s + Fraction(p["height"], 2))
    return col, row


def colours(page: Page, live_service: str, job_id: str) -> int:
    """How many distinct colours the job's image has."""
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    png = httpx.get(f"{live_service}/jobs/{job_id}/result", headers=headers)
    assert png.status_code == 200, png.text
    return len(Image.open(io.BytesIO(png.content)).convert("RGB").getcolors(1 << 24) or [])


def used(page: Page, live_service: str, job_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    doc = httpx.get(f"{live_service}/jobs/{job_id}/result", params={"file": "result.json"}, headers=headers)
    assert doc.status_code == 200, doc.text
    return doc.json()


def test_clicks_zoom_past_1e20_each_landing_on_the_pixel_clicked(
    page: tuple[Page, Console], live_service: str
) -> None:
    page, console = page
    page.set_viewport_size({"width": 900, "height": 700})  # a small stage: small renders
    sign_up(page, new_name())
    job_id = shown_job(page)
    page.get_by_test_id("zoom-step").select_option("256")
    page.get_by_test_id("max-iter").fill(ITERATIONS)
    view = page.get_by_test_id("view")
    p = job_of(page, live_service, job_id)["params"]
    while exact(p["zoom"]) < Decimal("1e20"):
        col, row = pixel_of(p, *TARGET)
        box = view.bounding_box()
        assert box is not None and 0 <= col < p["width"] and 0 <= row < p["height"]
        scale = box["width"] / p["width"]
        view.click(position={"x": (col + 0.5) * scale, "y": (row + 0.5) * scale})
        expect(view).not_to_have_attribute("data-job-id", job_id)
        job_id = shown_job(page)
        q = job_of(page, live_service, job_id)["params"]
        assert (exact(q["center_x"]), exact(q["center_y"])) == pixel_centre(p, col, row)
        assert exact(q["zoom"]) == exact(p["zoom"]) * 256 and q["max_iter"] == int(ITERATIONS)
        p = q
    assert used(page, live_service, job_id)["precision"] == "perturbation"
    expect(page.locator("#facts")).to_contain_text("perturbation (auto)")
    assert colours(page, live_service, job_id) >= 8
    assert query_of(page)["zoom"] == p["zoom"]  # the address holds the view as sent
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert console == []


def test_a_1e100_link_renders_that_view(page: tuple[Page, Console], live_service: str) -> None:
    page, console = page
    page.set_viewport_size({"width": 900, "height": 700})
    y = "1." + "0" * 100 + "7"  # 7e-101 above i: i is in the frame
    page.goto(f"/?kind=mandelbrot&x=0&y={y}&zoom=1e100&iter={ITERATIONS}")
    sign_up(page, new_name(), goto=False)
    job_id = shown_job(page)
    p = job_of(page, live_service, job_id)["params"]
    assert (p["center_x"], p["center_y"], p["zoom"], p["precision"]) == ("0", y, "1e100", "auto")
    assert used(page, live_service, job_id)["precision"] == "perturbation"
    assert colours(page, live_service, job_id) >= 8
    facts = page.locator("#facts")
    expect(facts).to_contain_text("1.00e+100×")
    expect(facts).to_contain_text(f"{ITERATIONS}")
    expect(facts).to_contain_text("perturbation (auto)")
    assert console == []


def test_a_zoom_video_to_a_1e400_view_keeps_its_digits(page: tuple[Page, Console], live_service: str) -> None:
    page, console = page
    page.set_viewport_size({"width": 900, "height": 700})
    y = "1." + "0" * 400 + "7"
    page.goto(f"/?kind=mandelbrot&x=0&y={y}&zoom=1e400&iter={ITERATIONS}")
    sign_up(page, new_name(), goto=False)
    shown = shown_job(page)
    page.get_by_test_id("zoom-video").click()
    video = page.locator("#gallery button.thumb").first
    expect(video).not_to_have_attribute("data-job-id", shown)
    video_id = video.get_attribute("data-job-id") or ""
    try:
        doc = job_of(page, live_service, video_id)
        assert doc["animation"]["zoom_to"] == "1e400"  # not Number("1e400"): Infinity, sent as null
        assert (doc["params"]["center_y"], float(doc["params"]["zoom"])) == (y, 1)
    finally:
        headers = {"Authorization": f"Bearer {token_of(page)}"}
        httpx.post(f"{live_service}/jobs/{video_id}/cancel", headers=headers)
    assert console == []
