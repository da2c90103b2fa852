"""The service's background loops, started together and stopped together.

Each part (dispatcher, reconciler, tracker, event feed, callback deliveries) exposes its endless
loops as coroutine functions; this is the one place that turns them into tasks and cancels them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

log = logging.getLogger(__name__)

LoopFn = Callable[[], Coroutine[Any, Any, None]]


class Loops:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, loops: Mapping[str, LoopFn]) -> None:
        """Run each loop as a task with its name (the name shows in task dumps and logs)."""
        for name, loop in loops.items():
            self._tasks.append(asyncio.create_task(loop(), name=name))

    async def stop(self) -> None:
        """Cancel every loop and wait for each to end; a loop that had died is logged."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, ended, strict=True):
            if isinstance(outcome, Exception):  # a loop never ends by itself: say so, keep stopping
                log.error("background loop %s had failed: %r", task.get_name(), outcome)
