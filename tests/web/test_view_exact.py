"""The explorer's exact view maths and its address: the page's decimal arithmetic (scheduler/web/
decimal.js, view.js) against Python's Fraction and Decimal, and the view in the URL (a reload, a
link and the back button return to it)."""

from __future__ import annotations

import math
from decimal import Context, Decimal, localcontext
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Console
from tests.web.test_explorer import job_of, new_name, shown_job, sign_up

GUARD_DIGITS = 10  # view.js: digits written below the pixel spacing
EXACT = Context(prec=100_000)  # wide enough that no sum below rounds


def exact(value: Any) -> Decimal:
    """A job document's coordinate (a JSON number or a decimal string) as the decimal it reads as."""
    return Decimal(str(value))


def pixel_centre(p: dict[str, Any], px: int, py: int) -> tuple[Decimal, Decimal]:
    """docs/design.md's sample point of pixel (px, py): x = cx + (px + 0.5 - w/2) * 3 / zoom / w,
    its offset rounded half to even to 10^e, e = GUARD_DIGITS below the spacing's leading digit
    bound (the page's rule, derived here from Fraction, not from the page)."""
    zoom, w, h = exact(p["zoom"]), p["width"], p["height"]
    e = -(max(zoom.adjusted() + 1, 0) + len(str(w)) + GUARD_DIGITS)

    def offset(q: int, n: int) -> Decimal:
        value = Fraction(3 * (2 * q + 1 - n)) / (2 * Fraction(zoom) * w)
        return Decimal(round(value * Fraction(10) ** -e)).scaleb(e, EXACT)  # round(): half to even

    with localcontext(EXACT):
        return exact(p["center_x"]) + offset(px, w), exact(p["center_y"]) - offset(py, h)


def run_view(page: Page, script: str, arg: Any) -> Any:
    return page.evaluate(f"async (arg) => {{ const view = await import('/web/view.js'); {script} }}", arg)


CASES = [
    ({"center_x": -0.5, "center_y": 0.0, "zoom": 1, "width": 640, "height": 480},
     [(0, 0), (639, 479), (17, 401)]),
    ({"center_x": -0.75, "center_y": 0.1, "zoom": 8.0, "width": 961, "height": 721}, [(480, 360), (3, 700)]),
    ({"center_x": "-1.7400623825793398670", "center_y": "0.0281762108500905", "zoom": "6.5536e13",
      "width": 333, "height": 250}, [(0, 249), (166, 125)]),
    ({"center_x": "0." + "3" * 60, "center_y": "1." + "0" * 98 + "7", "zoom": "1e100",
      "width": 800, "height": 600}, [(0, 0), (799, 599), (400, 300), (123, 456)]),
    ({"center_x": "-1.2e-250", "center_y": "-0.6", "zoom": "2.5e400", "width": 77, "height": 58}, [(76, 0)]),
]


@pytest.mark.parametrize(("params", "pixels"), CASES)
def test_a_click_lands_exactly_on_the_pixel_clicked(
    page: tuple[Page, Console], params: dict[str, Any], pixels: list[tuple[int, int]]
) -> None:
    page, console = page
    page.goto("/")
    got = run_view(page, "return arg.pixels.map(([px, py]) => view.zoomedAt(arg.params, px, py, 256));",
                   {"params": params, "pixels": pixels})
    zoom = exact(params["zoom"]) * 256
    spacing = Fraction(3) / Fraction(exact(params["zoom"])) / params["width"]
    for (px, py), new in zip(pixels, got, strict=True):
        x, y = pixel_centre(params, px, py)
        assert (exact(new["center_x"]), exact(new["center_y"])) == (x, y)
        assert exact(new["zoom"]) == zoom
        # and that point is the pixel's sample point to a 10^-GUARD_DIGITS of a pixel
        true_x = Fraction(exact(params["center_x"])) + (px + Fraction(1 - params["width"], 2)) * spacing
        assert abs(Fraction(x) - true_x) / spacing < Fraction(1, 10**GUARD_DIGITS)
    assert console == []


def test_decimals_round_trip_and_zoom_steps_stay_exact(page: tuple[Page, Console]) -> None:
    page, console = page
    page.goto("/")
    texts = ["-0.75", "1e100", "2.5E-7", "-1.2300e-3", "123456789012345678901234", "0.1", "-0", "7e1000"]
    got = page.evaluate(
        """async (texts) => {
            const { Decimal } = await import('/web/decimal.js');
            const view = await import('/web/view.js');
            let zoom = "1e100";
            for (const f of [256, 256, 16, 4, 2, 0.5, 0.0625]) zoom = view.scaledZoom(zoom, f);
            return { texts: texts.map((t) => Decimal.of(t).toString()), zoom,
                     bad: ["", "abc", "1e", "--1", "0x10", "1e999999"].map((t) => {
                         try { Decimal.of(t); return null; } catch (err) { return err.name; } }) };
        }""",
        texts,
    )
    assert [Decimal(t) for t in got["texts"]] == [Decimal(t) for t in texts]
    assert Decimal(got["zoom"]) == Decimal("1e100") * 256 * 256 * 16 * 4 * 2 / 2 / 16
    assert got["bad"] == ["TypeError"] * 6
    assert console == []


def test_iterations_follow_the_rule_unless_set(page: tuple[Page, Console]) -> None:
    page, console = page
    page.goto("/")
    zooms = ["1", "999", "1e13", "6.5536e20", "1e100", "1e1000"]
    got = run_view(page, "return arg.map((z) => view.autoIterations(z));", zooms)
    # 500 at zoom 1, 250 more per power of ten, at most MAX_ITER's default
    assert got == [min(100_000, 500 + 250 * max(0, math.floor(Decimal(z).log10()))) for z in zooms]
    assert console == []


def query_of(page: Page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_the_view_lives_in_the_address(page: tuple[Page, Console], live_service: str) -> None:
    """A zoom puts the view in the URL; a reload shows the same job again, Back the view before,
    and the link, opened elsewhere, renders that view; the facts name precision, zoom and
    iterations."""
    page, console = page
    sign_up(page, new_name())
    first_id = shown_job(page)
    first = job_of(page, live_service, first_id)["params"]
    assert query_of(page)["zoom"] == "1"
    page.get_by_test_id("zoom-step").select_option("16")
    view = page.get_by_test_id("view")
    box = view.bounding_box()
    assert box is not None
    view.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.5})
    expect(view).not_to_have_attribute("data-job-id", first_id)
    second_id = shown_job(page)
    second = job_of(page, live_service, second_id)["params"]
    assert exact(second["zoom"]) == 16 and second["max_iter"] == 500 + 250 * 1  # auto: 16x is 10^1.2
    address = query_of(page)
    assert (exact(address["x"]), exact(address["y"]), address["zoom"]) == (
        exact(second["center_x"]), exact(second["center_y"]), "16")
    assert "iter" not in address  # the rule's iterations stay implicit
    facts = page.locator("#facts")
    expect(facts).to_contain_text("16×")
    expect(facts).to_contain_text("750 (auto)")
    expect(facts).to_contain_text("Precision")

    page.reload()  # the same view, the same job: nothing is rendered again
    expect(view).to_have_attribute("data-job-id", second_id)
    page.go_back()
    expect(view).to_have_attribute("data-job-id", first_id)
    assert exact(query_of(page)["zoom"]) == exact(first["zoom"])
    page.go_forward()
    expect(view).to_have_attribute("data-job-id", second_id)

    # the link with iterations set, in another user's page: a new render of exactly that view
    link = f"/?kind=mandelbrot&x={address['x']}&y={address['y']}&zoom=16&iter=120&colours=ice"
    page.get_by_role("button", name="Sign out").click()
    page.goto(link)
    sign_up(page, new_name(), goto=False)
    linked = job_of(page, live_service, shown_job(page))["params"]
    assert (exact(linked["center_x"]), exact(linked["center_y"]), exact(linked["zoom"])) == (
        exact(address["x"]), exact(address["y"]), 16)
    assert (linked["max_iter"], linked["colormap"]) == (120, "ice")
    expect(page.get_by_test_id("max-iter")).to_have_value("120")
    assert query_of(page)["iter"] == "120"
    assert console == []


def test_a_malformed_address_is_a_sentence(page: tuple[Page, Console]) -> None:
    page, console = page
    page.goto("/?zoom=lots")
    sign_up(page, new_name(), goto=False)
    expect(page.get_by_test_id("error")).to_have_text(
        'The address names no view: "lots" is not a decimal number.')
    assert console == []
