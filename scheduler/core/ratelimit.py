"""A sliding-window rate limiter in memory, for sign-in attempts (per username and per client).

It slows password guessing down to `limit` attempts per window per key. State is per process: with
several replicas each one counts on its own, which still bounds guessing by a constant factor.
Memory stays bounded however many distinct keys arrive (an attacker can invent usernames freely):
keys whose window has emptied are dropped, and at most `max_keys` keys are tracked at all.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class Throttled(Exception):
    """Too many attempts: the next is allowed in `retry_after` seconds (the HTTP layer's 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:g} s")
        self.retry_after = retry_after


def throttle(*checks: tuple[RateLimiter, str]) -> None:
    """Count an attempt with each limiter for its key; raise Throttled when one refuses."""
    for limiter, key in checks:
        wait = limiter.hit(key)
        if wait is not None:
            raise Throttled(wait)


class RateLimiter:
    """At most `limit` attempts per key in any `window_seconds`; `limit <= 0` disables it.

    Only allowed attempts are recorded: a blocked attempt does not extend the block, so the
    Retry-After that `hit` returns is the truth and a client that honours it gets through.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._clock = clock
        # key -> timestamps of its allowed attempts in the window (oldest first, never empty).
        # Keys are ordered by their newest timestamp, oldest first, so the expired ones and the
        # least recently used ones are always at the front: pruning is amortised O(1) per hit.
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Record an attempt for `key`: None when allowed, else seconds until one is (>= 1, whole)."""
        if self.limit <= 0:
            return None
        with self._lock:
            now = self._clock()
            horizon = now - self.window
            self._prune(horizon)
            stamps = self._hits.get(key)
            if stamps is not None:
                while stamps and stamps[0] <= horizon:
                    stamps.popleft()
                if len(stamps) >= self.limit:
                    return float(max(1, math.ceil(stamps[0] - horizon)))
            else:
                stamps = self._hits[key] = deque()
            stamps.append(now)
            self._hits.move_to_end(key)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)  # the least recently allowed key
            return None

    def reset(self, key: str) -> None:
        """Forget `key`'s attempts (for tests and administration; sign-in success does not reset)."""
        with self._lock:
            self._hits.pop(key, None)

    def __len__(self) -> int:
        """How many keys are tracked now."""
        return len(self._hits)

    def _prune(self, horizon: float) -> None:
        """Drop the keys whose newest attempt has left the window (they are all at the front)."""
        while self._hits:
            key, stamps = next(iter(self._hits.items()))
            if stamps[-1] > horizon:
                break
            del self._hits[key]
