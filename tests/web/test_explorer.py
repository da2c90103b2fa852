"""The web explorer in Chromium against the service: sign-up and sign-in, the first render,
click-to-zoom on docs/design.md's pixel mapping, the gallery, errors as sentences, a clean console."""

from __future__ import annotations

import math
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.scheduler.conftest import LONG
from tests.scheduler.test_reconciler import UNENDING
from tests.web.conftest import Console

PASSWORD = "correct-horse"


def new_name() -> str:
    return f"w{uuid.uuid4().hex[:10]}"


def token_of(page: Page) -> str:
    return page.evaluate("JSON.parse(localStorage.getItem('fractal-explorer.session')).token")


def job_of(page: Page, live_service: str, job_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    response = httpx.get(f"{live_service}/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def floats(params: dict[str, Any]) -> dict[str, Any]:
    """A shallow view's centre and zoom as floats (the page sends them as exact decimal strings)."""
    return {k: float(v) if k in ("center_x", "center_y", "zoom") else v for k, v in params.items()}


def shown_job(page: Page) -> str:
    """The id of the job whose image is in the view, once one is."""
    view = page.get_by_test_id("view")
    expect(view).to_be_visible()
    return view.get_attribute("data-job-id") or ""


def sign_up(page: Page, username: str, *, goto: bool = True) -> None:
    if goto:
        page.goto("/")
    page.get_by_test_id("username").fill(username)
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("sign-up").click()


def test_sign_up_first_render_click_to_zoom_and_gallery(
    page: tuple[Page, Console], live_service: str
) -> None:
    page, console = page
    sign_up(page, new_name())
    first_id = shown_job(page)  # an account without jobs starts with a first render
    first = job_of(page, live_service, first_id)
    assert first["status"] == "succeeded" and Decimal(first["params"]["zoom"]) == 1

    view = page.get_by_test_id("view")
    box = view.bounding_box()
    assert box is not None
    p = floats(first["params"])
    click_x, click_y = box["width"] * 0.3, box["height"] * 0.25
    view.click(position={"x": click_x, "y": click_y})
    expect(view).not_to_have_attribute("data-job-id", first_id)
    zoomed = job_of(page, live_service, shown_job(page))
    q = floats(zoomed["params"])

    assert q["zoom"] == 2 * p["zoom"]
    assert (q["kind"], q["width"], q["height"]) == (p["kind"], p["width"], p["height"])
    # the new centre is the centre of a pixel of the old view (docs/design.md's mapping, exactly) ...
    s = 3.0 / p["zoom"] / p["width"]
    px = (q["center_x"] - p["center_x"]) / s - 0.5 + p["width"] / 2
    py = (p["center_y"] - q["center_y"]) / s - 0.5 + p["height"] / 2
    assert px == pytest.approx(round(px), abs=1e-6) and py == pytest.approx(round(py), abs=1e-6)
    # ... the pixel that was clicked (within the browser's rounding of the click to a CSS pixel)
    assert abs(round(px) - math.floor(click_x * p["width"] / box["width"])) <= 1
    assert abs(round(py) - math.floor(click_y * p["height"] / box["height"])) <= 1

    gallery = page.get_by_test_id("gallery")
    items = gallery.locator("button.thumb")
    expect(items).to_have_count(2)
    expect(gallery.locator("img.picture")).to_have_count(2)
    for img in gallery.locator("img.picture").all():
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("i => i.naturalWidth") == p["width"]
    expect(items.first).to_have_class("thumb active")
    items.nth(1).click()  # the older one reopens its view
    expect(view).to_have_attribute("data-job-id", first_id)
    expect(page.get_by_text("1×", exact=True)).to_be_visible()
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert console == []


def test_sign_in_opens_the_newest_render(page: tuple[Page, Console], live_service: str) -> None:
    page, console = page
    username = new_name()
    with httpx.Client(base_url=live_service) as api:
        assert api.post("/auth/sign-up", json={"username": username, "password": PASSWORD}).status_code == 201
        token = api.post("/auth/sign-in", auth=(username, PASSWORD)).json()["access_token"]
        body = {"kind": "julia", "width": 160, "height": 120, "max_iter": 100, "colormap": "twilight"}
        job_id = api.post("/jobs", json=body, headers={"Authorization": f"Bearer {token}"}).json()["job_id"]
    page.goto("/")
    page.get_by_test_id("username").fill(username)
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("view")).to_have_attribute("data-job-id", job_id)
    expect(page.get_by_test_id("kind")).to_have_value("julia")
    expect(page.get_by_test_id("colormap")).to_have_value("twilight")
    page.reload()  # the session outlives a reload
    expect(page.get_by_test_id("view")).to_have_attribute("data-job-id", job_id)
    assert console == []


def test_errors_are_sentences_on_the_page(page: tuple[Page, Console]) -> None:
    page, console = page
    page.goto("/")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("error")).to_have_text("Enter a username and a password.")
    page.get_by_test_id("username").fill(new_name())
    page.get_by_test_id("password").fill("wrong-horse")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("error")).to_have_text("Wrong username or password.")
    # the browser itself logs the refused request; nothing else may be there
    assert [e for e in console if "status of 401" not in e] == []


def test_the_view_geometry_is_designs_pixel_mapping(page: tuple[Page, Console]) -> None:
    page, console = page
    page.goto("/")
    params = {"width": 640, "height": 480, "center_x": -0.75, "center_y": 0.1, "zoom": 8.0}
    got = page.evaluate(
        """async (params) => {
            const view = await import('/web/view.js');
            const corners = [[0, 0], [639, 479], [320, 240], [17, 401]];
            return {
                points: corners.map(([px, py]) => view.pixelPoint(params, px, py)),
                // a 640-pixel render shown 320 CSS pixels wide: (100.7, 50.2) is pixel (201, 100)
                hit: view.pixelAt(params, 100.7, 50.2, 320, 240),
                edge: view.pixelAt(params, 320, 240, 320, 240),
            };
        }""",
        params,
    )
    s = 3.0 / params["zoom"] / params["width"]
    for (px, py), point in zip([(0, 0), (639, 479), (320, 240), (17, 401)], got["points"], strict=True):
        assert point["x"] == params["center_x"] + (px + 0.5 - params["width"] / 2) * s
        assert point["y"] == params["center_y"] - (py + 0.5 - params["height"] / 2) * s
    assert got["hit"] == {"px": 201, "py": 100}
    assert got["edge"] == {"px": 639, "py": 479}  # the last pixel, not one past it
    assert console == []


def test_nothing_is_loaded_from_outside_the_service(page: tuple[Page, Console], live_service: str) -> None:
    page, console = page
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_service) else None)
    page.goto("/")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert outside == [] and console == []


def test_progress_and_cancellation_come_live(page: tuple[Page, Console], live_service: str) -> None:
    """With the runner's slots taken, a render waits: the page shows that and cancels it; a job
    cancelled elsewhere (the API) reaches the page through the event stream alone."""
    page, console = page
    sign_up(page, new_name())
    shown_job(page)
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    # two different renders (an equal one would follow the first and take no slot: the result cache)
    bodies = [{**LONG, "colormap": colours} for colours in ("fire", "ice")]
    slots = [httpx.post(f"{live_service}/jobs", json=b, headers=headers).json()["job_id"] for b in bodies]
    try:
        gallery = page.get_by_test_id("gallery")
        page.get_by_test_id("max-iter").fill("510")  # a new render: the shown one's view would be reused
        page.get_by_role("button", name="Render").click()
        # the scheduling fields, shown as the service sends them
        expect(page.get_by_test_id("progress")).to_have_text(re.compile(r"^queued · #\d+ in the queue"))
        waiting = gallery.locator("button.thumb").first
        expect(waiting).to_have_attribute("data-status", "queued")
        page.get_by_test_id("cancel").click()
        expect(waiting).to_have_attribute("data-status", "cancelled")
        expect(page.get_by_test_id("progress")).to_be_hidden()
        expect(page.get_by_test_id("error")).to_be_hidden()  # the user's own cancel is no error

        page.get_by_role("button", name="Render").click()
        expect(gallery.locator("button.thumb[data-status=queued]")).to_have_count(1)
        job_id = gallery.locator("button.thumb").first.get_attribute("data-job-id")
        assert httpx.post(f"{live_service}/jobs/{job_id}/cancel", headers=headers).status_code == 200
        expect(page.get_by_test_id("error")).to_have_text("The render was cancelled.")
        expect(gallery.locator("button.thumb").first).to_have_attribute("data-status", "cancelled")
    finally:
        for slot in slots:
            httpx.post(f"{live_service}/jobs/{slot}/cancel", headers=headers)
    assert console == []


def test_download_the_iteration_sentence_and_back_to_a_stored_view(
    page: tuple[Page, Console], live_service: str
) -> None:
    page, console = page
    sign_up(page, new_name())
    first_id = shown_job(page)
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    with page.expect_download() as caught:
        page.get_by_test_id("download").click()
    assert caught.value.suggested_filename == f"mandelbrot-{first_id}.png"
    png = httpx.get(f"{live_service}/jobs/{first_id}/result", headers=headers).content
    assert Path(caught.value.path()).read_bytes() == png

    thumbs = page.get_by_test_id("gallery").locator("button.thumb")
    expect(thumbs).to_have_count(1)
    page.get_by_test_id("max-iter").fill("5")
    page.get_by_role("button", name="Render").click()  # the page's sentence, not the browser's tooltip
    expect(page.get_by_test_id("error")).to_have_text(
        "Iterations must be a whole number from 10 to 100000, or empty for auto."
    )
    expect(thumbs).to_have_count(1)  # nothing was sent
    page.get_by_test_id("max-iter").fill("")

    view = page.get_by_test_id("view")
    view.click(position={"x": 40, "y": 30})
    expect(view).not_to_have_attribute("data-job-id", first_id)
    zoomed_id = shown_job(page)
    page.go_back()  # the stored render, at once: no new job
    expect(view).to_have_attribute("data-job-id", first_id)
    page.go_forward()
    expect(view).to_have_attribute("data-job-id", zoomed_id)
    expect(thumbs).to_have_count(2)
    assert console == []


def test_while_a_new_kind_waits_the_facts_name_it(page: tuple[Page, Console], live_service: str) -> None:
    page, console = page
    sign_up(page, new_name())
    shown_job(page)
    facts = page.locator("#facts")
    expect(facts).to_contain_text("Mandelbrot")
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    bodies = [{**UNENDING, "colormap": colours} for colours in ("fire", "ice")]  # both slots, for minutes
    slots = [httpx.post(f"{live_service}/jobs", json=b, headers=headers).json()["job_id"] for b in bodies]
    try:
        page.get_by_test_id("kind").select_option("julia")
        expect(page.get_by_test_id("progress")).to_contain_text("queued")
        expect(facts).to_contain_text("Julia")
        expect(facts).not_to_contain_text("Mandelbrot")
    finally:
        for slot in slots:
            httpx.post(f"{live_service}/jobs/{slot}/cancel", headers=headers)
    assert console == []


def test_an_arrays_task_bar_and_the_zoom_video_button(page: tuple[Page, Console], live_service: str) -> None:
    """With the slots taken, a split render waits: opened from the gallery, its progress has a
    task bar; "Zoom video to here" asks for a video from the whole set to the view shown."""
    page, console = page
    sign_up(page, new_name())
    shown = job_of(page, live_service, shown_job(page))
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    bodies = [{**LONG, "colormap": colours} for colours in ("fire", "ice")]  # two renders: both slots
    slots = [httpx.post(f"{live_service}/jobs", json=b, headers=headers).json()["job_id"] for b in bodies]
    waiting: list[str] = []
    try:
        split = httpx.post(f"{live_service}/jobs", json={"width": 64, "height": 64, "split": 4},
                           headers=headers).json()["job_id"]
        waiting.append(split)
        page.locator(f"button.thumb[data-job-id='{split}']").click()
        bar = page.get_by_test_id("task-bar")
        expect(bar).to_be_visible()
        expect(bar.locator(".task-part")).to_have_count(4)
        expect(page.get_by_test_id("progress")).to_contain_text("0 of 4 bands")

        page.locator(f"button.thumb[data-job-id='{shown['job_id']}']").click()
        page.get_by_test_id("zoom-video").click()
        gallery = page.get_by_test_id("gallery")
        expect(gallery.locator("button.thumb[data-status=queued]")).to_have_count(2)
        video = gallery.locator("button.thumb").first.get_attribute("data-job-id") or ""
        waiting.append(video)
        doc = job_of(page, live_service, video)
        assert float(doc["animation"]["zoom_to"]) >= float(shown["params"]["zoom"])
        assert float(doc["params"]["zoom"]) == 1
        assert doc["params"]["width"] % 2 == 0 and doc["params"]["height"] % 2 == 0
    finally:
        for job_id in [*waiting, *slots]:
            httpx.post(f"{live_service}/jobs/{job_id}/cancel", headers=headers)
    assert console == []
