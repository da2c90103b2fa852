"""Perturbation renders against an arbitrary-precision brute force, sample for sample.

The frames sit at minibrots (small copies of the set) found with Newton's method from seeds
near the Misiurewicz point c = i, where minibrots of period p lie at depths growing with p
(tests/job_image/brute.py iterates docs/design.md's mapping in exact fixed point: no
perturbation, no float64). The issue's bar: at least 99 % of samples exact and 99.9 % within
1 % of the brute force's count.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest

from job_image import device, job
from job_image.params import FractalParams
from job_image.perturbation import PerturbationKernel
from job_image.render import KernelShape
from job_image.settings import JobSettings

from .brute import brute_counts
from .nuclei import NUCLEI


def frame(period: int, zoom: str, width: int, height: int, max_iter: int, shift: str = "0",
          **extra: object) -> FractalParams:
    """The minibrot of `period` in a frame at `zoom`, its centre moved by `shift` frame widths."""
    re, im = (Decimal(v) for v in NUCLEI[period])
    with localcontext(prec=1000):  # exact sums: the default 28 digits would move the centre
        offset = Decimal(shift) * 3 / Decimal(zoom)
        x, y = str(re + offset), str(im + offset / 2)
    return FractalParams(kind="mandelbrot", width=width, height=height, center_x=x, center_y=y,
                         zoom=zoom, max_iter=max_iter, **extra)


FRAMES = {
    # the minibrot a tenth of the frame wide: float64 deltas, BLA
    "minibrot 1e14": frame(21, "1e14", 24, 16, 2000, precision="perturbation"),
    "minibrot 2e113": frame(153, "2e113", 24, 16, 3000),
    # spacing below float64's range: floatexp deltas
    "minibrot 3e303": frame(406, "3e303", 16, 10, 4000),
}
# The minibrot a third of a frame off the reference: its samples pass close to 0 where the
# reference does not, the case where a single reference glitches.
GLITCHY = frame(21, "1e14", 24, 16, 2000, shift="0.3", precision="perturbation")


def agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """Shares of samples exact and within 1 % of the brute force's count."""
    close = np.abs(got.astype(np.float64) - want) <= 0.01 * want
    return float(np.mean(got == want)), float(np.mean(close))


def render_counts(p: FractalParams, **kernel: object) -> tuple[np.ndarray, PerturbationKernel]:
    chosen = device.choose("cpu")
    k = PerturbationKernel(chosen, p.plan().deltas or "", **kernel)
    counts = np.vstack([band.counts.copy() for band in k.bands(p, band_samples=5 * p.width)])
    return counts, k


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_counts_are_those_of_the_exact_iteration(name: str) -> None:
    p = FRAMES[name]
    rendered = job.render(p, JobSettings.from_env(), keep_counts=True)
    want = brute_counts(p)
    assert 0 < (want == p.max_iter).mean() < 0.5 and want.min() < want.max()  # a minibrot and its edge
    exact, close = agreement(rendered.counts, want)
    assert exact >= 0.99 and close >= 0.999, f"{name}: {exact:.2%} exact, {close:.2%} within 1 %"
    assert rendered.precision == "perturbation" and rendered.total_iterations == int(want.sum())
    deep = rendered.deep
    assert deep["references"] == 1 and deep["reference_iterations"] == p.max_iter  # at a nucleus
    assert deep["bla_skipped_iterations"] > 0.5 * rendered.total_iterations  # BLA skips most
    assert deep["deltas"] == ("floatexp" if "303" in name else "float64")


def test_a_single_reference_glitches_without_correction_and_rebasing_fixes_it() -> None:
    want = brute_counts(GLITCHY)
    fixed, k = render_counts(GLITCHY)
    assert k.stats.glitched_samples == 0  # with correction the criterion is not even checked
    exact, close = agreement(fixed, want)
    assert exact >= 0.99 and close >= 0.999
    broken, k = render_counts(GLITCHY, correct=False)
    exact, close = agreement(broken, want)
    assert exact < 0.99 and close < 0.999  # the frame fails the bar
    assert k.stats.glitched_samples > 0  # and Pauldelbrot's criterion saw it
    wrong = int(np.count_nonzero(broken != want))
    assert k.stats.glitched_samples >= wrong / 2  # the flagged samples are where it went wrong


def test_bands_supersampling_and_bla_do_not_change_counts() -> None:
    p = frame(21, "2e14", 12, 8, 1500, supersample=2, precision="perturbation")
    whole, _ = render_counts(p)  # five sample rows per band
    assert whole.shape == (16, 24)
    want = brute_counts(p)
    exact, close = agreement(whole, want)
    assert exact >= 0.99 and close >= 0.999
    plain, k = render_counts(p, use_bla=False)
    assert k.stats.bla_skipped_iterations == 0
    assert agreement(plain, want)[0] >= 0.99 and np.count_nonzero(plain != whole) <= 2


@pytest.mark.parametrize("name", ["minibrot 1e14", "minibrot 3e303"])
def test_a_split_renders_band_is_those_rows_of_the_whole_frame(name: str) -> None:
    """A render array's task renders only its pixel rows [first, end) (both delta kinds)."""
    p = FRAMES[name]
    whole, _ = render_counts(p)
    k = PerturbationKernel(device.choose("cpu"), p.plan().deltas or "")
    first, end = 3, p.height - 2
    band = np.vstack([b.counts.copy() for b in k.bands(p, band_samples=5 * p.width, span=(first, end))])
    n = p.supersample
    assert np.array_equal(band, whole[first * n:end * n])


LAYOUTS = {"gpu": KernelShape(1, 1, tile=1), "vw2": KernelShape(2, 1, tile=64),
           "vw4x4": KernelShape(4, 4, tile=256)}


@pytest.mark.parametrize("shape", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_kernel_layout_counts_the_same(shape: KernelShape) -> None:
    """One sample per work-item (a GPU's layout), and lanes that share out tiles of samples
    shorter and longer than a row, all against the brute force."""
    p = FRAMES["minibrot 1e14"]
    counts, _ = render_counts(p, shape=shape)
    exact, close = agreement(counts, brute_counts(p))
    assert exact >= 0.99 and close >= 0.999, f"{exact:.2%} exact, {close:.2%} within 1 %"


@pytest.mark.parametrize("layout", ["default", "gpu"])
def test_floatexp_deltas_turn_double_and_back_exactly(layout: str) -> None:
    """Past 1e400 a sample near the minibrot starts with floatexp deltas, turns to double
    deltas once |dz| has grown, and goes back to floatexp where |dz| shrinks near the
    nucleus, every period: the counts stay those of the brute force."""
    p = frame(536, "1e402", 16, 10, 6000)
    want = brute_counts(p)
    assert 0 < (want == p.max_iter).mean() < 0.5
    counts, k = render_counts(p, shape=LAYOUTS.get(layout))
    assert k.deltas == "floatexp" and k.stats.returned_samples > 0
    exact, close = agreement(counts, want)
    assert exact >= 0.99 and close >= 0.999, f"{exact:.2%} exact, {close:.2%} within 1 %"
