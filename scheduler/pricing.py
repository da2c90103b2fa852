"""Where submits are priced: the cost probe (admission/cost.py, ~10-250 ms of NumPy each) on its
own small thread pool, bounded per user and overall.

The probe is the only costly step of a submit, so it must not be one user's lever on everyone:
- its own pool, not asyncio's default one that every database call uses: probes waiting for a
  thread never delay a query;
- at most `per_user` submits of one user priced or waiting at once, `total` of all users:
  past either, PricingBusy (a 429 with Retry-After) at once, without probing;
- a probe not started yet is dropped when its caller is cancelled (the client went away), and a
  slot is given back only when its probe has really ended, so abandoned probes cannot pile up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from job_image.params import FractalParams
from scheduler.admission.cost import estimated_iterations

RETRY_AFTER = 1  # seconds: a probe takes a fraction of one


class PricingBusy(Exception):
    """Too many submits are being priced (str: whose); retry after `retry_after` seconds."""

    retry_after = RETRY_AFTER


class Pricer:
    def __init__(self, *, workers: int, per_user: int, total: int) -> None:
        self.per_user, self.total = per_user, total
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cost-probe")
        self._held: collections.Counter[str] = collections.Counter()  # priced or waiting, per user

    @property
    def in_flight(self) -> int:
        return self._held.total()

    async def estimate(self, owner: str, params: FractalParams) -> int:
        """`estimated_iterations(params)`, off the event loop; raises PricingBusy past a bound."""
        if self._held[owner] >= self.per_user:
            raise PricingBusy(f"you have {self._held[owner]} submits being priced")
        if self.in_flight >= self.total:
            raise PricingBusy(f"{self.in_flight} submits are being priced")
        self._held[owner] += 1
        loop = asyncio.get_running_loop()
        probe: Future[int] = self._pool.submit(estimated_iterations, params)
        # from the pool's thread when the probe ends, or at once when it is cancelled unstarted
        probe.add_done_callback(lambda _: _call_soon(loop, self._release, owner))
        return await asyncio.wrap_future(probe)  # cancelled: an unstarted probe is cancelled too

    def _release(self, owner: str) -> None:
        self._held[owner] -= 1
        if self._held[owner] <= 0:
            del self._held[owner]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[str], None], owner: str) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed (shutdown): nothing to release
        loop.call_soon_threadsafe(callback, owner)
