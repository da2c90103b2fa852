"""Throughput per class and method: start-up and rates learned from result.json and the wall time."""

from __future__ import annotations

from scheduler.admission.throughput import PRIOR_RATE, RELATIVE, Throughput


def done(iterations: float, seconds: float, precision: str = "float32") -> dict[str, object]:
    return {"total_iterations": iterations, "render_seconds": seconds, "precision": precision}


def test_prior_then_learned() -> None:
    t = Throughput()
    assert t.seconds("cpu", PRIOR_RATE["cpu"]) == t.classes["cpu"].startup + 1.0
    assert t.learn("cpu", done(2e9, 1.0), wall_seconds=1.5)
    assert t.seconds("cpu", 4e9) == 0.5 + 2.0
    assert t.learn("cpu", done(1e9, 1.0), wall_seconds=2.5)
    c = t.classes["cpu"]
    assert c.jobs == 2 and 1e9 < c.rate() < 2e9 and 0.5 < c.startup < 1.5
    assert t.classes["gpu"].jobs == 0  # classes learn separately


def test_each_method_learns_its_own_rate() -> None:
    t = Throughput()
    gpu = t.classes["gpu"]
    assert gpu.rate("perturbation") == PRIOR_RATE["gpu"] * RELATIVE["perturbation"]
    assert t.learn("gpu", done(8e9, 1.0, "float32"), wall_seconds=4.0)
    # not yet seen: priced from float32's learned rate by the priors' ratio
    assert gpu.rate("float64") == 8e9 * RELATIVE["float64"]
    assert t.learn("gpu", done(3e9, 1.0, "perturbation"), wall_seconds=4.0)
    assert (gpu.rate("float32"), gpu.rate("perturbation")) == (8e9, 3e9)
    assert t.seconds("gpu", 6e9, "perturbation") == 3.0 + 2.0
    assert not t.learn("gpu", done(3e9, 1.0, "float16"), wall_seconds=4.0)  # no such method


def test_useless_results_are_ignored() -> None:
    t = Throughput()
    assert not t.learn("gpu", {"total_iterations": 10}, wall_seconds=1.0)
    assert not t.learn("gpu", {"total_iterations": 1e6, "render_seconds": 0.0}, wall_seconds=1.0)
    assert not t.learn("gpu", {"total_iterations": "x", "render_seconds": 1.0}, wall_seconds=2.0)
    assert not t.learn("gpu", {"total_iterations": 1e9, "render_seconds": 2.0}, wall_seconds=1.0)
    assert t.classes["gpu"].jobs == 0
