"""Exponential backoff, the one implementation every retry loop uses (the job's storage calls,
and in the API: the dispatcher, the watches, the Kubernetes sweep, callbacks).

It lives in `job_image` because the job image holds `job_image` alone; the API imports it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """`first` seconds after the first failure, doubling after each further one, at most `cap`;
    `reset()` after a success. `jitter` adds up to that fraction at random, so many clients
    failing together do not retry together."""

    first: float
    cap: float
    jitter: float = 0.0
    failures: int = 0

    def next(self) -> float:
        """Count one more failure; the delay to wait before the next try."""
        delay = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return delay + random.uniform(0, delay * self.jitter) if self.jitter else delay

    def reset(self) -> None:
        self.failures = 0
