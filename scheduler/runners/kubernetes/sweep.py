"""The sweep: every few seconds, every tracked job is decided again with the time now, which
enforces the pending deadline, reads the events of a Job still without a pod, and retries what
failed (a progress or end report, an orphan's delete). An error is logged and the loop goes on,
backing off while errors repeat: one bad object must not end deadline enforcement for all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from job_image.backoff import Backoff

log = logging.getLogger(__name__)


def period(pending_deadline: float) -> float:
    """A tenth of the pending deadline (it is enforced within 10 %), between 0.2 and 5 s."""
    return min(5.0, max(0.2, pending_deadline / 10))


async def sweep(
    job_ids: Callable[[], list[str]], one: Callable[[str], None], every: float, cap: float
) -> None:
    """Forever: `one(job_id)` for each of `job_ids()`, every `every` seconds."""
    backoff = Backoff(every * 2, max(every, cap))
    delay = every
    while True:
        await asyncio.sleep(delay)
        failed = False
        for job_id in job_ids():
            try:
                one(job_id)
            except Exception:  # noqa: BLE001 - see the module's docstring
                failed = True
                log.exception("sweep failed for job %s", job_id)
        if not failed:
            backoff.reset()
        delay = backoff.next() if failed else every
