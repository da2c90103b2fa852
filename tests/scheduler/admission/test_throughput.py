"""Throughput per class: start-up and rate learned from result.json and the wall time."""

from __future__ import annotations

from scheduler.admission.throughput import PRIOR_RATE, Throughput


def test_prior_then_learned() -> None:
    t = Throughput()
    assert t.seconds("cpu", PRIOR_RATE["cpu"]) == t.classes["cpu"].startup + 1.0
    assert t.learn("cpu", {"total_iterations": 2e9, "render_seconds": 1.0}, wall_seconds=1.5)
    assert t.seconds("cpu", 4e9) == 0.5 + 2.0
    assert t.learn("cpu", {"total_iterations": 1e9, "render_seconds": 1.0}, wall_seconds=2.5)
    c = t.classes["cpu"]
    assert c.jobs == 2 and 1e9 < c.rate < 2e9 and 0.5 < c.startup < 1.5
    assert t.classes["gpu"].jobs == 0  # classes learn separately


def test_useless_results_are_ignored() -> None:
    t = Throughput()
    assert not t.learn("gpu", {"total_iterations": 10}, wall_seconds=1.0)
    assert not t.learn("gpu", {"total_iterations": 1e6, "render_seconds": 0.0}, wall_seconds=1.0)
    assert not t.learn("gpu", {"total_iterations": "x", "render_seconds": 1.0}, wall_seconds=2.0)
    assert not t.learn("gpu", {"total_iterations": 1e9, "render_seconds": 2.0}, wall_seconds=1.0)
    assert t.classes["gpu"].jobs == 0
