"""Throughput per device class, learned from finished jobs: seconds = start-up + iterations / rate.

A job's wall time (started -> finished, as the runner saw it) is the fixed start-up cost
(process or pod start, OpenCL context and kernel build, storage upload) plus the render,
which scales with the work. `result.json` separates the two: `render_seconds` is the render,
the rest of the wall time is the start-up. Each is an exponentially weighted average over
recent jobs, so a new device type or a busier node is followed within a few jobs while one
odd job moves the figure by `WEIGHT` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DeviceClass = Literal["cpu", "gpu"]
CLASSES: tuple[DeviceClass, ...] = ("cpu", "gpu")
WEIGHT = 0.2  # share of the newest job in the averages: ~5 jobs of memory
# Priors until a class has finished a job: kernel.py measures 9.5 G iter/s (float32) on a
# 2-core EPYC and the whole render (colour, PNG) costs about half again; a mid-range GPU
# renders ~10x that. Start-up: ~0.9 s for a local process (submit_overhead.py), a few
# seconds for a pod.
PRIOR_RATE: dict[DeviceClass, float] = {"cpu": 5e9, "gpu": 5e10}
PRIOR_STARTUP: dict[DeviceClass, float] = {"cpu": 1.0, "gpu": 3.0}
MIN_RENDER_SECONDS = 1e-3  # below this the rate is noise (a 1-pixel render)


@dataclass
class ClassRate:
    rate: float  # iterations per second of render time
    startup: float  # seconds per job besides the render
    jobs: int = 0  # finished jobs learned from

    def seconds(self, iterations: float) -> float:
        return self.startup + iterations / self.rate


class Throughput:
    """What one job of a class costs, in seconds; updated by `learn` as jobs finish."""

    def __init__(self) -> None:
        self.classes = {c: ClassRate(PRIOR_RATE[c], PRIOR_STARTUP[c]) for c in CLASSES}

    def seconds(self, device_class: DeviceClass, iterations: float) -> float:
        return self.classes[device_class].seconds(iterations)

    def learn(self, device_class: DeviceClass, result: Mapping[str, Any], wall_seconds: float) -> bool:
        """Fold in one finished job's result.json and wall time; False if it tells nothing."""
        try:
            iterations = float(result["total_iterations"])
            render = float(result["render_seconds"])
        except (KeyError, TypeError, ValueError):
            return False
        if render < MIN_RENDER_SECONDS or iterations <= 0 or wall_seconds < render:
            return False
        c = self.classes[device_class]
        w = WEIGHT if c.jobs else 1.0  # the first job replaces the prior outright
        c.rate += w * (iterations / render - c.rate)
        c.startup += w * (wall_seconds - render - c.startup)
        c.jobs += 1
        return True
