"""Throughput per device class and method, learned from finished jobs: seconds = start-up +
iterations / rate.

A job's wall time (started -> finished, as the runner saw it) is the fixed start-up cost
(process or pod start, OpenCL context and kernel build, storage upload) plus the render,
which scales with the work. `result.json` separates the two: `render_seconds` is the render,
the rest of the wall time is the start-up. Each is an exponentially weighted average over
recent jobs, so a new device type or a busier node is followed within a few jobs while one
odd job moves the figure by `WEIGHT` only.

The rate is learned per method as well (result.json's `precision`: float32, float64 or
perturbation), since one iteration costs each a different time: float64 runs at half float32's
SIMD width on CPUs and far slower on consumer GPUs, and perturbation's iterations are counted
brute-force-equivalent (those its approximations skip included), so its rate is its own. A method
a class has not run yet is priced from one it has, by the `RELATIVE` priors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DeviceClass = Literal["cpu", "gpu"]
CLASSES: tuple[DeviceClass, ...] = ("cpu", "gpu")
Method = Literal["float32", "float64", "perturbation"]
METHODS: tuple[Method, ...] = ("float32", "float64", "perturbation")
WEIGHT = 0.2  # share of the newest job in the averages: ~5 jobs of memory
# Priors until a class has finished a job: kernel.py measures 9.5 G iter/s (float32) on a
# 2-core EPYC and the whole render (colour, PNG) costs about half again; a mid-range GPU
# renders ~10x that. Start-up: ~0.9 s for a local process (submit_overhead.py), a few
# seconds for a pod.
PRIOR_RATE: dict[DeviceClass, float] = {"cpu": 5e9, "gpu": 5e10}
PRIOR_STARTUP: dict[DeviceClass, float] = {"cpu": 1.0, "gpu": 3.0}
# Each method's rate against float32's until it is learned: float64 at half the SIMD width;
# perturbation at about float64's cost per iteration plus its reference orbit, less what its
# approximations skip (benchmarks/estimates.py prints the measured figures).
RELATIVE: dict[Method, float] = {"float32": 1.0, "float64": 0.5, "perturbation": 0.5}
MIN_RENDER_SECONDS = 1e-3  # below this the rate is noise (a 1-pixel render)


@dataclass
class ClassRate:
    prior: float  # float32 iterations per second until a job is learned
    startup: float  # seconds per job besides the render
    rates: dict[Method, float] = field(default_factory=dict)  # learned iterations/s of render time
    jobs: int = 0  # finished jobs learned from

    def rate(self, method: Method = "float32") -> float:
        """Iterations per second of render time: learned, else scaled from a learned method."""
        if method in self.rates:
            return self.rates[method]
        for seen, rate in self.rates.items():
            return rate * RELATIVE[method] / RELATIVE[seen]
        return self.prior * RELATIVE[method]

    def seconds(self, iterations: float, method: Method = "float32") -> float:
        return self.startup + iterations / self.rate(method)


class Throughput:
    """What one job of a class costs, in seconds; updated by `learn` as jobs finish."""

    def __init__(self) -> None:
        self.classes = {c: ClassRate(PRIOR_RATE[c], PRIOR_STARTUP[c]) for c in CLASSES}

    def seconds(self, device_class: DeviceClass, iterations: float, method: Method = "float32") -> float:
        return self.classes[device_class].seconds(iterations, method)

    def learn(self, device_class: DeviceClass, result: Mapping[str, Any], wall_seconds: float) -> bool:
        """Fold in one finished job's result.json and wall time; False if it tells nothing."""
        try:
            iterations = float(result["total_iterations"])
            render = float(result["render_seconds"])
        except (KeyError, TypeError, ValueError):
            return False
        if render < MIN_RENDER_SECONDS or iterations <= 0 or wall_seconds < render:
            return False
        method = result.get("precision", "float32")  # a document without one: the old default
        if method not in METHODS:
            return False
        c = self.classes[device_class]
        rate = iterations / render
        seen = c.rates.get(method)  # a method's first job replaces its prior outright
        c.rates[method] = rate if seen is None else seen + WEIGHT * (rate - seen)
        c.startup += (WEIGHT if c.jobs else 1.0) * (wall_seconds - render - c.startup)
        c.jobs += 1
        return True
